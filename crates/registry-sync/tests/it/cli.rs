//! End-to-end: configuration errors, `--help` and `check`, through the real binary.

use crate::support;

use support::*;

// ---------------------------------------------------------------------------------
// config and help

#[test]
fn an_unknown_config_key_is_an_error_naming_the_key_and_its_line() {
    let ws = Workspace::with_services(&services(8080, true));
    ws.write_config(&FILES_SINK_CONFIG.replace("    path: services.yaml", "    pathh: services.yaml"));
    let out = ws.cmd("once");
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("pathh"), "{out}");
    assert!(out.stderr.contains("line 4"), "{out}");
    assert!(out.stderr.contains(support::CONFIG_FILE), "{out}");
    assert!(!ws.out_dir().exists());
}

#[test]
fn a_bad_host_template_is_an_error_naming_the_registry_hosts_key() {
    let ws = Workspace::with_services(&services(8080, true));
    ws.write_config(&FILES_SINK_CONFIG.replace(
        "    namespace: mesh\n",
        "    namespace: mesh\n    hosts: \"{svc}.legacy\"\n",
    ));
    let out = ws.cmd("render");
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("registries[0].hosts"), "{out}");
    assert!(out.stderr.contains("line 6"), "{out}");
    assert_eq!(out.stdout, "");
}

#[test]
fn a_missing_config_file_is_an_error_naming_its_path() {
    let ws = Workspace::new();
    for command in ["run", "once", "plan", "render", "check"] {
        let out = ws.cmd(command);
        assert_eq!(out.code(), Some(1), "{command}: {out}");
        assert!(
            out.stderr.contains(&ws.config_path().display().to_string()),
            "{command}: {out}"
        );
    }
}

#[test]
fn the_config_path_can_come_from_the_environment() {
    let ws = Workspace::with_services(&services(8080, true));
    let output = support::command(ws.path())
        .arg("check")
        .env("REGISTRY_SYNC_CONFIG", ws.config_path())
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("registry legacy (file): ok"), "{stdout}");
}

#[test]
fn help_exits_0_and_names_every_subcommand() {
    let ws = Workspace::new();
    let out = registry_sync(ws.path(), ["--help"]);
    assert_eq!(out.code(), Some(0), "{out}");
    for command in ["run", "once", "plan", "render", "check", "explain"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "--help does not list `{command}`:\n{out}"
        );
        let sub = registry_sync(ws.path(), [command, "--help"]);
        assert_eq!(sub.code(), Some(0), "{command} --help: {sub}");
        assert!(sub.stdout.contains("--config"), "{command} --help: {sub}");
    }
}

// ---------------------------------------------------------------------------------
// check

#[test]
fn check_exits_0_and_counts_services_and_instances() {
    let ws = Workspace::with_services(&services(8080, true));
    let out = ws.cmd("check");
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .contains("registry legacy (file): ok, 3 services, 4 instances"),
        "{out}"
    );
    assert!(!ws.out_dir().exists(), "check created the output directory");
}

#[test]
fn check_exits_1_and_names_the_registry_whose_file_is_missing() {
    let ws = Workspace::new();
    ws.write_config(&FILES_SINK_CONFIG.replace("name: legacy", "name: ghost"));
    let out = ws.cmd("check");
    assert_eq!(out.code(), Some(1), "{out}");
    let report = format!("{}{}", out.stdout, out.stderr);
    assert!(
        lines_with(&report, &["ghost", "services.yaml"])
            .iter()
            .any(|l| l.contains("FAILED")),
        "{out}"
    );
}

#[test]
fn a_newline_in_registry_data_cannot_forge_a_log_line() {
    // A YAML double-quoted string carries the newline into the service's name, which
    // the warning about its bad instance names.
    let ws = Workspace::with_services(
        "services:\n  - name: \"orders\\n2099-01-01T00:00:00Z ERROR forged line\"\n    instances:\n      - address: 10.0.0.300\n        ports: {http: 8080}\n",
    );
    let out = ws.cmd("once");
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stderr.contains("WARN"),
        "the instance is refused with a warning:\n{out}"
    );
    assert!(
        out.stderr.contains("\\n2099-01-01T00:00:00Z ERROR forged line"),
        "the newline is escaped inside its event:\n{out}"
    );
    assert!(
        !out.stderr.lines().any(|line| line.starts_with("2099-01-01")),
        "a registry string started a log line of its own:\n{out}"
    );
}
