//! End-to-end: `explain` tells, for one service or host, the records behind it, each
//! rule that shaped it, every instance's fate, its objects and their diff against the
//! sink.

use crate::support;

use support::*;

const CONFIG: &str = "\
registries:
  - name: legacy
    kind: file
    path: services.yaml
    hosts: \"{service}.shop\"
    namespace: mesh
  - name: vms
    kind: file
    path: vms.yaml
    hosts: \"{service}.shop\"
    namespace: mesh
overrides:
  - name: payments-grpc
    service: payments
    ports: [{port: 8443, protocol: GRPC, name: grpc-api}]
sinks:
  files:
    dir: out
";

const LEGACY: &str = "\
services:
  - name: billing
    instances:
      - {address: 10.0.0.1, ports: {http: 8080}}
  - name: payments
    instances:
      - {address: 10.0.1.1, ports: {https: 8443}}
      - {address: 10.0.1.2, ports: {https: 8443, admin: 15000}}
      - {address: 10.0.1.300, ports: {https: 8443}}
      - {address: 10.0.1.4, ports: {https: 8443}, healthy: false}
";

const VMS: &str = "\
services:
  - name: billing
    instances:
      - {address: 10.9.0.1, ports: {http: 8080}}
";

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write_config(CONFIG);
    ws.write_services(LEGACY);
    ws.write("vms.yaml", VMS);
    ws
}

fn explain(ws: &Workspace, query: &str) -> Output {
    registry_sync(
        ws.path(),
        [
            std::ffi::OsStr::new("explain"),
            std::ffi::OsStr::new("--config"),
            ws.config_path().as_os_str(),
            std::ffi::OsStr::new(query),
        ],
    )
}

fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in:\n{text}"));
    let rest = &text[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

#[test]
fn a_merged_host_names_every_contributor_and_which_one_decides() {
    let ws = workspace();
    let out = explain(&ws, "billing.shop");
    assert_eq!(out.code(), Some(0), "{out}");
    let records = section(&out.stdout, "## registry records");
    assert!(records.contains("legacy:billing (1 instances)"), "{out}");
    assert!(records.contains("vms:billing (1 instances)"), "{out}");
    let rules = section(&out.stdout, "## rules");
    assert!(
        rules.contains(
            "- merged: legacy:billing, vms:billing share the host; legacy:billing (the first) decides"
        ),
        "{out}"
    );
    assert!(
        rules.contains(
            "- host billing.shop: the template \"{service}.shop\" of registry \"vms\" for service billing"
        ),
        "{out}"
    );
    let instances = section(&out.stdout, "## instances");
    assert!(
        instances.contains("legacy:billing 10.0.0.1:8080 (10.0.0.1): published"),
        "{out}"
    );
    assert!(
        instances.contains("vms:billing 10.9.0.1:8080 (10.9.0.1): published"),
        "{out}"
    );
    let objects = parse_objects(section(&out.stdout, "## objects"));
    assert_eq!(objects.len(), 1);
    assert_eq!(
        objects[0].spec.endpoints.len(),
        2,
        "one entry for both registries"
    );
    assert_eq!(
        section(&out.stdout, "## against sink files")
            .trim_end()
            .lines()
            .last(),
        Some("1 to create, 0 to update, 0 to delete, 0 unchanged, 0 conflicts"),
        "{out}"
    );
    // Searching by the service name finds the same host.
    assert_eq!(explain(&ws, "billing").stdout, out.stdout);
}

#[test]
fn skipped_and_unpublished_instances_each_say_why() {
    let ws = workspace();
    let out = explain(&ws, "payments");
    assert_eq!(out.code(), Some(0), "{out}");
    let instances = section(&out.stdout, "## instances");
    for (line, why) in [
        ("10.0.1.1", "published"),
        (
            "10.0.1.2",
            "not published: port 15000 (\"admin\") is reserved by Istio's sidecar",
        ),
        ("10.0.1.4", "not published: unhealthy in the registry"),
        ("10.0.1.300", "not an instance: line "),
    ] {
        assert!(
            instances.lines().any(|l| l.contains(line) && l.contains(why)),
            "{line}: {why}:\n{out}"
        );
    }
}

#[test]
fn an_override_is_named_with_what_it_changed_and_the_diff_follows_the_sink() {
    let ws = workspace();
    let out = explain(&ws, "payments.shop");
    let rules = section(&out.stdout, "## rules");
    assert!(rules.contains("- overrides: payments-grpc"), "{out}");
    assert!(
        rules.contains("- port 8443 grpc-api GRPC: the protocol from an override"),
        "{out}"
    );
    let objects = parse_objects(section(&out.stdout, "## objects"));
    assert_eq!(
        objects[0].metadata.annotations["registry-sync.io/overrides"],
        "payments-grpc"
    );

    assert_eq!(ws.cmd("once").code(), Some(0));
    let synced = explain(&ws, "payments.shop");
    assert!(
        section(&synced.stdout, "## against sink files")
            .contains("0 to create, 0 to update, 0 to delete, 1 unchanged"),
        "{synced}"
    );
}

#[test]
fn a_service_left_out_by_select_says_so_and_an_unknown_name_fails() {
    let ws = workspace();
    ws.write_config(&CONFIG.replacen(
        "    namespace: mesh\n",
        "    namespace: mesh\n    select: {services: {exclude: [billing]}}\n",
        1,
    ));
    let out = explain(&ws, "billing");
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .contains("# legacy:billing makes no objects: not selected: its name matches select.services.exclude \"billing\""),
        "{out}"
    );
    let missing = explain(&ws, "no-such-service");
    assert_eq!(missing.code(), Some(1), "{missing}");
    assert!(
        missing.stdout.contains("nothing named \"no-such-service\""),
        "{missing}"
    );
}
