use registry_sync_istio::Location;
use registry_sync_translate::EndpointMode;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/registry-sync/sync.yaml"), text)
}

fn error(text: &str) -> String {
    parse(text).expect_err("config should be refused").to_string()
}

const GOOD: &str = "\
registries:
  - name: legacy
    kind: file
    path: services.yaml
    hosts: \"{service}.{namespace}.legacy\"
    endpoints: workload-entry
    namespace: mesh-external
    location: mesh-external
    sidecar: true
sinks:
  files:
    dir: out
  stdout: true
";

#[test]
fn a_full_config_parses_with_paths_relative_to_the_config_file() {
    let config = parse(GOOD).unwrap();
    assert_eq!(config.instance, "default");
    let r = &config.registries[0];
    assert_eq!(r.name, "legacy");
    assert_eq!(
        r.source,
        SourceConfig::File(Box::new(registry_sync_sources::file::FileConfig {
            path: "/etc/registry-sync/services.yaml".into()
        }))
    );
    assert_eq!(r.settings.namespace, "mesh-external");
    assert_eq!(r.settings.endpoints, EndpointMode::WorkloadEntry);
    assert_eq!(r.settings.location, Location::MeshExternal);
    assert!(r.settings.sidecar);
    assert_eq!(r.settings.hosts.as_str(), "{service}.{namespace}.legacy");
    assert_eq!(
        config.sinks.files.as_deref(),
        Some(Path::new("/etc/registry-sync/out"))
    );
    assert!(config.sinks.stdout);
}

#[test]
fn defaults_apply_when_optional_keys_are_left_out() {
    let config = parse("registries:\n  - {name: a, kind: file, path: s.yaml, namespace: mesh}\n").unwrap();
    let r = &config.registries[0];
    assert_eq!(r.settings.endpoints, EndpointMode::Auto);
    assert_eq!(r.settings.location, Location::MeshInternal);
    assert_eq!(r.settings.hosts.as_str(), "{service}.{namespace}.{registry}");
    assert!(!r.settings.sidecar);
    assert!(config.sinks.is_empty());
}

#[test]
fn an_unknown_key_is_refused_naming_the_key_and_line() {
    let message = error("registries:\n  - name: a\n    kind: file\n    pathh: s.yaml\n    namespace: mesh\n");
    assert!(message.contains("pathh"), "{message}");
    assert!(message.contains("line 4"), "{message}");
}

#[test]
fn a_wrong_type_is_refused_naming_the_line() {
    let message = error(
        "registries:\n  - name: a\n    kind: file\n    path: s.yaml\n    namespace: mesh\n    sidecar: maybe\n",
    );
    assert!(message.contains("line 6"), "{message}");
}

#[test]
fn a_missing_field_is_refused_naming_it() {
    let message = error("registries:\n  - name: a\n    kind: file\n    path: s.yaml\n");
    assert!(message.contains("namespace"), "{message}");
}

#[test]
fn an_unknown_kind_or_endpoint_mode_is_refused() {
    let message = error("registries:\n  - {name: a, kind: nope, path: s.yaml, namespace: mesh}\n");
    assert!(message.contains("nope"), "{message}");
    let message =
        error("registries:\n  - {name: a, kind: file, path: s.yaml, namespace: mesh, endpoints: many}\n");
    assert!(message.contains("many"), "{message}");
}

#[test]
fn a_bad_host_template_is_refused_naming_key_line_and_reason() {
    let message = error(
        "registries:\n  - name: a\n    kind: file\n    path: s.yaml\n    namespace: mesh\n    hosts: \"{svc}.x\"\n",
    );
    assert!(message.contains("line 6"), "{message}");
    assert!(message.contains("registries[0].hosts"), "{message}");
    assert!(message.contains("{svc}"), "{message}");
}

#[test]
fn file_registries_need_a_path() {
    let message = error("registries:\n  - {name: a, kind: file, namespace: mesh}\n");
    assert!(message.contains("registries[0].path"), "{message}");
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn the_instance_id_must_be_a_dns_label_wherever_it_is_set() {
    let registry = "registries:\n  - {name: a, kind: file, path: s.yaml, namespace: mesh}\n";
    let message = error(&format!("instance: Prod_East\n{registry}"));
    assert!(message.contains("line 1: `instance`"), "{message}");
    assert!(message.contains("\"Prod_East\" must be a DNS label"), "{message}");
    let message = error(&format!(
        "{registry}sinks:\n  kubernetes:\n    instance: Prod_East\n"
    ));
    assert!(
        message.contains("line 5: `sinks.kubernetes.instance`"),
        "{message}"
    );
    assert!(message.contains("\"Prod_East\" must be a DNS label"), "{message}");
}

#[test]
fn registry_names_must_be_unique_dns_labels() {
    let message = error("registries:\n  - {name: Legacy_1, kind: file, path: s.yaml, namespace: mesh}\n");
    assert!(
        message.contains("registries[0].name") && message.contains("DNS label"),
        "{message}"
    );
    let message = error(
        "registries:\n  - {name: a, kind: file, path: s.yaml, namespace: mesh}\n  - {name: a, kind: file, path: t.yaml, namespace: mesh}\n",
    );
    assert!(
        message.contains("registries[1].name") && message.contains("line 3"),
        "{message}"
    );
}

#[test]
fn namespace_and_instance_must_be_valid_names() {
    let message = error("registries:\n  - {name: a, kind: file, path: s.yaml, namespace: Mesh}\n");
    assert!(message.contains("registries[0].namespace"), "{message}");
    let message = error(
        "instance: \"prod east\"\nregistries:\n  - {name: a, kind: file, path: s.yaml, namespace: mesh}\n",
    );
    assert!(
        message.contains("`instance`") && message.contains("line 1"),
        "{message}"
    );
}

#[test]
fn an_empty_registry_list_is_refused() {
    assert!(error("registries: []\n").contains("at least one registry"));
}

#[test]
fn broken_yaml_is_refused_with_its_location() {
    let message = error("registries:\n  - name: [a\n");
    assert!(message.contains("line"), "{message}");
}

#[test]
fn a_syntax_error_never_echoes_the_values_of_the_file() {
    // A token under a mistyped key, and a password where a flag belongs.
    for text in [
        "registries:\n  - name: a\n    kind: file\n    path: s.yaml\n    namespace: mesh\n    tokn: \"s3cr3t-t0ken\"\n",
        "registries:\n  - name: a\n    kind: file\n    path: s.yaml\n    namespace: mesh\n    sidecar: s3cr3t-t0ken\n",
        "registries:\n  - name: a\n    kind: file\n    path: s.yaml\n    namespace: [s3cr3t-t0ken\n",
        "instance: {s3cr3t-t0ken: 1}\n",
    ] {
        let message = error(text);
        assert!(!message.contains("s3cr3t"), "{message}");
        assert!(message.contains("line"), "{message}");
    }
    let message = error(
        "registries:\n  - name: a\n    kind: file\n    path: s.yaml\n    namespace: mesh\n    tokn: x\n",
    );
    assert!(
        message.contains("registries[0].tokn`"),
        "the key is named: {message}"
    );
}

#[test]
fn a_registry_address_with_credentials_is_refused_without_echoing_them() {
    let message = error(
        "registries:\n  - name: c\n    kind: consul\n    address: http://admin:hunter2@127.0.0.1:8500\n    namespace: mesh\n",
    );
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.contains("credentials"), "{message}");
    assert!(message.contains("line 4"), "{message}");
    assert!(registry_sync_sources::config::has_userinfo(
        "zk-user:pw@10.0.0.1:2181"
    ));
    assert!(!registry_sync_sources::config::has_userinfo(
        "http://127.0.0.1:8500/path@x"
    ));
}

#[test]
fn the_guard_window_and_secret_keys_are_configurable() {
    let config = parse(
        "registries:\n  - {name: a, kind: file, path: s.yaml, namespace: mesh}\nsafety:\n  window: 10m\n  secret_keys: [sessionid]\n",
    )
    .unwrap();
    assert_eq!(config.safety.guard_window, std::time::Duration::from_secs(600));
    let keys = &config.registries[0].settings.secret_keys;
    assert!(keys.matches("SessionId"));
    assert!(!keys.matches("token"), "the list replaces the built-in one");
    let message = error(
        "registries:\n  - {name: a, kind: file, path: s.yaml, namespace: mesh}\nsafety:\n  window: soon\n",
    );
    assert!(message.contains("safety.window"), "{message}");
    assert_eq!(parse(GOOD).unwrap().safety.guard_window, DEFAULT_GUARD_WINDOW);
}

#[test]
fn the_mcp_sink_listens_where_sinks_mcp_listen_says_and_a_bad_address_names_the_key() {
    let config = parse(
        "registries:\n  - {name: a, kind: file, path: s.yaml, namespace: mesh}\nsinks:\n  mcp: {listen: \"0.0.0.0:15010\"}\n",
    )
    .unwrap();
    let mcp = config.sinks.mcp.as_ref().unwrap();
    assert_eq!(mcp.listen, "0.0.0.0:15010".parse().unwrap());
    assert_eq!(mcp.tls, None);
    assert!(!config.sinks.is_empty());
    let message = error(
        "registries:\n  - {name: a, kind: file, path: s.yaml, namespace: mesh}\nsinks:\n  mcp:\n    listen: istiod\n",
    );
    assert!(
        message.contains("sinks.mcp.listen")
            && message.contains("line 5")
            && message.contains("address:port"),
        "{message}"
    );
    let message = error(
        "registries:\n  - {name: a, kind: file, path: s.yaml, namespace: mesh}\nsinks:\n  mcp: {listen: \"0.0.0.0:15010\", port: 1}\n",
    );
    assert!(message.contains("unknown field `port`"), "{message}");
}

#[test]
fn the_mcp_sinks_certificate_and_key_go_together_relative_to_the_config_file() {
    let config = parse(
        "registries:\n  - {name: a, kind: file, path: s.yaml, namespace: mesh}\nsinks:\n  mcp: {listen: \"0.0.0.0:15010\", cert_file: tls/server.pem, key_file: tls/server.key}\n",
    )
    .unwrap();
    let tls = config.sinks.mcp.unwrap().tls.unwrap();
    assert_eq!(tls.cert_file, Path::new("/etc/registry-sync/tls/server.pem"));
    assert_eq!(tls.key_file, Path::new("/etc/registry-sync/tls/server.key"));
    let message = error(
        "registries:\n  - {name: a, kind: file, path: s.yaml, namespace: mesh}\nsinks:\n  mcp: {listen: \"0.0.0.0:15010\", cert_file: server.pem}\n",
    );
    assert!(message.contains("go together"), "{message}");
}

#[test]
fn export_to_is_a_registry_key_checked_as_istio_does() {
    let entry = |export_to: &str| {
        format!(
            "registries:\n  - name: a\n    kind: file\n    path: s.yaml\n    namespace: mesh\n    export_to: {export_to}\n"
        )
    };
    let config = parse(&entry("[\".\", istio-system]")).unwrap();
    assert_eq!(config.registries[0].settings.export_to, [".", "istio-system"]);
    assert!(parse(GOOD).unwrap().registries[0].settings.export_to.is_empty());
    for (bad, why) in [
        ("[\"*\", \".\"]", "list it alone"),
        ("[mesh, mesh]", "twice"),
        ("[Mesh_1]", "not `.`, `*` or a namespace name"),
        ("[]", "at least one"),
    ] {
        let message = error(&entry(bad));
        assert!(
            message.contains("line 6: `registries[0].export_to`") && message.contains(why),
            "{bad}: {message}"
        );
    }
}

#[test]
fn the_waypoint_keys_become_the_ambient_labels_and_need_a_waypoint_name() {
    let entry = |keys: &str| {
        format!("registries:\n  - name: a\n    kind: file\n    path: s.yaml\n    namespace: mesh\n{keys}")
    };
    let config = parse(&entry(
        "    use_waypoint: shared\n    use_waypoint_namespace: istio-waypoints\n    ingress_use_waypoint: true\n",
    ))
    .unwrap();
    let labels = &config.registries[0].settings.extra_labels;
    assert_eq!(
        labels.get("istio.io/use-waypoint").map(String::as_str),
        Some("shared")
    );
    assert_eq!(
        labels.get("istio.io/use-waypoint-namespace").map(String::as_str),
        Some("istio-waypoints")
    );
    assert_eq!(
        labels.get("istio.io/ingress-use-waypoint").map(String::as_str),
        Some("true")
    );
    assert!(
        parse(GOOD).unwrap().registries[0]
            .settings
            .extra_labels
            .is_empty()
    );

    let message = error(&entry("    use_waypoint: Shared_1\n"));
    assert!(
        message.contains("line 6: `registries[0].use_waypoint`"),
        "{message}"
    );
    let message = error(&entry("    use_waypoint_namespace: istio-waypoints\n"));
    assert!(
        message.contains("`registries[0].use_waypoint_namespace`: needs `use_waypoint`"),
        "{message}"
    );
    let message = error(&entry("    ingress_use_waypoint: true\n"));
    assert!(
        message.contains("`registries[0].ingress_use_waypoint`: needs `use_waypoint`"),
        "{message}"
    );
}

#[test]
fn a_refused_key_keeps_the_whole_of_our_message_and_none_of_the_values() {
    let text = GOOD.replace(
        "endpoints: workload-entry",
        "endpoints: [\"http://admin:s3cret@etcd:2379\"]",
    );
    let message = error(&text);
    assert!(
        message.contains("a registry's addresses or URLs go in `address`"),
        "{message}"
    );
    assert!(
        !message.contains("s3cret") && !message.contains("etcd:2379"),
        "{message}"
    );
}

#[test]
fn the_mcp_sinks_state_wait_limits_and_client_ca_are_read_and_checked() {
    let head = "registries:\n  - {name: a, kind: file, path: s.yaml, namespace: mesh}\nsinks:\n  mcp: ";
    let config = parse(&format!(
        "{head}{{listen: \"0.0.0.0:15010\", cert_file: s.pem, key_file: s.key, client_ca_file: ca.pem, state_dir: state, initial_wait: 30s, max_streams: 8}}\n"
    ))
    .unwrap();
    let mcp = config.sinks.mcp.unwrap();
    assert_eq!(
        mcp.state_dir.as_deref(),
        Some(Path::new("/etc/registry-sync/state"))
    );
    assert_eq!(mcp.initial_wait, std::time::Duration::from_secs(30));
    assert_eq!(mcp.max_streams, 8);
    assert_eq!(
        mcp.tls.unwrap().client_ca_file.as_deref(),
        Some(Path::new("/etc/registry-sync/ca.pem"))
    );
    for (bad, key) in [
        ("client_ca_file: ca.pem", "sinks.mcp.client_ca_file"),
        ("initial_wait: 0s", "sinks.mcp.initial_wait"),
        ("initial_wait: soon", "sinks.mcp.initial_wait"),
        ("max_streams: 0", "sinks.mcp.max_streams"),
        ("state_dir: \"\"", "sinks.mcp.state_dir"),
    ] {
        let message = error(&format!("{head}{{listen: \"0.0.0.0:15010\", {bad}}}\n"));
        assert!(message.contains(key), "{bad}: {message}");
    }
}
