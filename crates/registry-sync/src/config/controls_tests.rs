//! `select`, `namespace_from` / `allowed_namespaces`, `provenance` and `overrides`.

use std::path::Path;

use registry_sync_catalog::Protocol;
use registry_sync_istio::{Location, Resolution};
use registry_sync_translate::EndpointMode;

use crate::config::{Config, ConfigError};

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/registry-sync/sync.yaml"), text)
}

fn error(text: &str) -> String {
    parse(text).expect_err("config should be refused").to_string()
}

const REGISTRY: &str = "\
registries:
  - name: legacy
    kind: file
    path: services.yaml
    namespace: mesh
";

fn with(extra: &str) -> String {
    format!("{REGISTRY}{extra}")
}

#[test]
fn select_namespace_mapping_and_provenance_are_read() {
    let config = parse(&with(
        "    select:
      services:
        include: [\"pay*\", \"shop/orders\"]
        exclude: [\"*-canary\"]
        metadata: {mesh: \"on\"}
      instances:
        metadata: {env: prod}
        exclude_metadata: {canary: \"true\"}
    namespace_from: \"{meta:k8s-namespace}\"
    allowed_namespaces: [payments, orders]
    provenance: true
",
    ))
    .unwrap();
    let settings = &config.registries[0].settings;
    let select = &settings.select;
    let patterns: Vec<&str> = select.include.iter().map(|g| g.as_str()).collect();
    assert_eq!(patterns, ["pay*", "shop/orders"]);
    assert_eq!(select.exclude[0].as_str(), "*-canary");
    assert_eq!(select.service_metadata[0].0, "mesh");
    assert_eq!(select.instance_metadata[0].1.as_str(), "prod");
    assert_eq!(select.instance_exclude_metadata[0].0, "canary");
    let rule = settings.namespace_rule.as_ref().unwrap();
    assert_eq!(rule.template.as_str(), "{meta:k8s-namespace}");
    let allowed: Vec<&str> = rule.allowed.iter().map(String::as_str).collect();
    assert_eq!(
        allowed,
        ["mesh", "orders", "payments"],
        "the default namespace is always allowed"
    );
    assert_eq!(settings.provenance.as_deref(), Some("file"));
    let watched: Vec<String> = config.namespaces().into_iter().collect();
    assert_eq!(watched, ["mesh", "orders", "payments"]);
}

#[test]
fn bad_selections_and_namespace_rules_name_their_key_and_line() {
    for (extra, expected) in [
        (
            "    select: {services: {include: [\"a[b]\"]}}\n",
            "line 6: `registries[0].select.services.include[0]`: pattern \"a[b]\": '[' is not allowed",
        ),
        (
            "    select: {instances: {metadata: {env: \"\"}}}\n",
            "line 6: `registries[0].select.instances.metadata.env`: a pattern cannot be empty",
        ),
        ("    select: {service: {}}\n", "unknown field `service`"),
        (
            "    namespace_from: \"{meta:ns}\"\n",
            "line 6: `registries[0].allowed_namespaces`: is required with `namespace_from`",
        ),
        (
            "    allowed_namespaces: [a]\n",
            "`registries[0].namespace_from`: is required with `allowed_namespaces`",
        ),
        (
            "    namespace_from: \"{labels}\"\n    allowed_namespaces: [a]\n",
            "line 6: `registries[0].namespace_from`: namespace template \"{labels}\": unknown placeholder",
        ),
        (
            "    namespace_from: \"{namespace}\"\n    allowed_namespaces: [\"team-*\"]\n",
            "line 7: `registries[0].allowed_namespaces`: \"team-*\" is not a namespace name (patterns are not allowed",
        ),
    ] {
        let message = error(&with(extra));
        assert!(message.contains(expected), "{extra}: {message}");
    }
}

#[test]
fn overrides_are_read_in_order_with_every_field() {
    let config = parse(&with(
        "overrides:
  - name: payments-grpc
    registry: \"leg*\"
    service: \"payments\"
    ports:
      - {port: 8080, name: grpc-api, protocol: grpc, target_port: 18080}
    hosts: [Payments.Internal]
    location: mesh-external
    resolution: dns
    endpoints: workload-entry
    export_to: [\".\"]
    labels: {team: payments}
    use_waypoint: payments-waypoint
  - service: \"*\"
",
    ))
    .unwrap();
    let rule = &config.overrides[0];
    assert_eq!(rule.name, "payments-grpc");
    assert_eq!(rule.registry.as_str(), "leg*");
    assert_eq!(rule.service.as_str(), "payments");
    let port = &rule.ports[0];
    assert_eq!(
        (port.number, port.name.as_deref(), port.protocol, port.target_port),
        (8080, Some("grpc-api"), Some(Protocol::Grpc), Some(18080))
    );
    assert_eq!(rule.aliases, ["payments.internal"]);
    assert_eq!(rule.location, Some(Location::MeshExternal));
    assert_eq!(rule.resolution, Some(Resolution::Dns));
    assert_eq!(rule.endpoints, Some(EndpointMode::WorkloadEntry));
    assert_eq!(rule.export_to.as_deref(), Some(&[".".to_string()][..]));
    assert_eq!(rule.labels["team"], "payments");
    assert_eq!(rule.labels["istio.io/use-waypoint"], "payments-waypoint");
    assert_eq!(config.overrides[1].name, "overrides[1]");
    assert_eq!(config.translate_settings().overrides.len(), 2);
}

#[test]
fn bad_overrides_name_their_key_and_line() {
    for (extra, expected) in [
        (
            "overrides:\n  - {service: a, registry: \"consul-*\"}\n",
            "line 7: `overrides[0].registry`: \"consul-*\" matches no configured registry",
        ),
        ("overrides:\n  - {registry: legacy}\n", "missing field `service`"),
        (
            "overrides:\n  - service: a\n    ports: [{port: 80, protocol: soap}]\n",
            "line 8: `overrides[0].ports[0].protocol`: \"soap\" is not a protocol",
        ),
        (
            "overrides:\n  - service: a\n    ports: [{port: 80}, {port: 80}]\n",
            "`overrides[0].ports[1].port`: port 80 is listed twice",
        ),
        (
            "overrides:\n  - service: a\n    ports: [{port: 80, name: HTTP_API}]\n",
            "`overrides[0].ports[0].name`: \"HTTP_API\" is not a port name",
        ),
        (
            "overrides:\n  - service: a\n    ports: [{port: 80, target_port: 0}]\n",
            "`overrides[0].ports[0].target_port`: must be 1-65535",
        ),
        (
            "overrides:\n  - service: a\n    hosts: [\"bad host\"]\n",
            "line 8: `overrides[0].hosts[0]`: \"bad host\" is not a host name",
        ),
        (
            "overrides:\n  - service: a\n    resolution: none\n",
            "line 8: `overrides[0].resolution`: \"none\" is not a resolution",
        ),
        (
            "overrides:\n  - service: a\n    labels: {registry-sync.io/registry: x}\n",
            "`overrides[0].labels.registry-sync.io/registry`: \"registry-sync.io/registry\" is not a label key registry-sync may set",
        ),
        (
            "overrides:\n  - service: a\n    export_to: [\"*\", \".\"]\n",
            "`overrides[0].export_to`: `*` already exports to every namespace",
        ),
        (
            "overrides:\n  - {name: x, service: a}\n  - {name: x, service: b}\n",
            "line 8: `overrides[1].name`: \"x\" names two overrides",
        ),
        (
            "overrides:\n  - {service: a, colour: red}\n",
            "unknown field `colour`",
        ),
    ] {
        let message = error(&with(extra));
        assert!(message.contains(expected), "{extra}: {message}");
    }
}

#[test]
fn a_vip_range_istiod_allocates_from_too_is_taken_only_when_the_user_says_so() {
    let shared = "    vip_range: 240.240.0.0/16\n    vip_range_shared_with_istio: true\n";
    let config = parse(&with(shared)).unwrap();
    assert_eq!(
        config.registries[0].settings.vip_range.as_ref().unwrap().as_str(),
        "240.240.0.0/16"
    );
}

#[test]
fn a_vip_range_is_read_and_a_bad_one_names_its_line() {
    let config = parse(&with("    vip_range: 240.241.0.0/16\n")).unwrap();
    let range = config.registries[0].settings.vip_range.as_ref().unwrap();
    assert_eq!(range.as_str(), "240.241.0.0/16");
    for (range, expected) in [
        ("0.0.0.0/0", "is too wide"),
        ("10.0.0.0/33", "is not a CIDR range"),
        ("127.0.0.0/8", "loopback"),
        ("240.240.0.1/16", "host bits set"),
        (
            "240.240.0.0/16",
            "overlaps 240.240.0.0/16, where istiod allocates",
        ),
        ("240.0.0.0/8", "overlaps 240.240.0.0/16"),
        ("2001:2::/64", "overlaps 2001:2::/48"),
    ] {
        let message = error(&with(&format!("    vip_range: \"{range}\"\n")));
        assert!(
            message.contains("line 6: `registries[0].vip_range`") && message.contains(expected),
            "{range}: {message}"
        );
    }
}

#[test]
fn health_in_status_needs_workload_entries_and_the_kubernetes_sink_alone() {
    let health = "    endpoints: workload-entry\n    health: status\n";
    let message = error(&with("    health: status\n"));
    assert!(
        message.contains("line 6: `registries[0].health`: `status` keeps health in each WorkloadEntry's status, so it needs `endpoints: workload-entry`"),
        "{message}"
    );
    let message = error(&with("    health: sometimes\n"));
    assert!(message.contains("is `endpoints`"), "{message}");
    let message = error(&with(&format!("{health}sinks:\n  files: {{dir: out}}\n")));
    assert!(
        message.contains("line 7: `registries[0].health`")
            && message.contains(
                "the files sink would publish registry \"legacy\"'s unhealthy instances as serving"
            ),
        "{message}"
    );
    #[cfg(feature = "kubernetes")]
    {
        let config = parse(&format!(
            "instance: prod\n{}{health}sinks:\n  kubernetes: {{}}\n",
            REGISTRY
        ))
        .unwrap();
        assert!(config.registries[0].settings.health_in_status);
    }
    let plain = parse(REGISTRY).unwrap();
    assert!(!plain.registries[0].settings.health_in_status);
}

#[test]
fn a_drain_delay_needs_health_in_status_and_a_duration() {
    let message = error(&with("    drain_delay: 30s\n"));
    assert!(
        message.contains("line 6: `registries[0].drain_delay`: needs `health: status`"),
        "{message}"
    );
    let health = "    endpoints: workload-entry\n    health: status\n";
    let message = error(&with(&format!("{health}    drain_delay: soon\n")));
    assert!(
        message.contains("line 8: `registries[0].drain_delay`: is not a duration"),
        "{message}"
    );
    for huge in ["61m", "18446744073709551615s"] {
        let message = error(&with(&format!("{health}    drain_delay: {huge}\n")));
        assert!(
            message.contains("line 8: `registries[0].drain_delay`: is longer than 3600s"),
            "{huge}: {message}"
        );
    }
    let config = parse(&with(&format!("{health}    drain_delay: 30s\n"))).unwrap();
    assert_eq!(
        config.registries[0].settings.drain_delay,
        Some(std::time::Duration::from_secs(30))
    );
}
