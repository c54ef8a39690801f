//! Config tests for the `cloudmap` kind.

use std::time::Duration;

use super::super::{Config, SourceConfig};

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(std::path::Path::new("/etc/registry-sync/sync.yaml"), text).map_err(|e| e.to_string())
}

fn error(text: &str) -> String {
    parse(text).expect_err("the config should be refused")
}

#[test]
fn a_cloudmap_registry_takes_region_namespaces_and_endpoint_and_defaults_hosts_and_interval() {
    let config = parse(
        "registries:\n  - {name: aws, kind: cloudmap, region: us-east-1, namespaces: [demo.local], endpoint: \"http://127.0.0.1:5000/\", namespace: mesh}\n",
    )
    .unwrap();
    let r = &config.registries[0];
    let SourceConfig::CloudMap(cloudmap) = &r.source else {
        panic!("{:?}", r.source)
    };
    assert_eq!(cloudmap.region.as_deref(), Some("us-east-1"));
    assert_eq!(cloudmap.namespaces, ["demo.local"]);
    assert!(cloudmap.services.is_empty());
    assert_eq!(cloudmap.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
    assert_eq!(cloudmap.interval, Duration::from_secs(5));
    assert_eq!(r.settings.hosts.as_str(), "{service}.{namespace}");
    assert_eq!(
        r.settings.namespace, "mesh",
        "`namespace` stays the Kubernetes namespace"
    );
}

#[test]
fn everything_is_optional_and_services_and_interval_are_read() {
    let config = parse(
        "registries:\n  - {name: aws, kind: cloudmap, services: [orders, payments], interval: 30s, hosts: \"{service}.aws\", namespace: mesh}\n",
    )
    .unwrap();
    let SourceConfig::CloudMap(cloudmap) = &config.registries[0].source else {
        panic!()
    };
    assert_eq!(cloudmap.region, None, "the region comes from the AWS chain");
    assert!(cloudmap.namespaces.is_empty() && cloudmap.endpoint.is_none());
    assert_eq!(cloudmap.services, ["orders", "payments"]);
    assert_eq!(cloudmap.interval, Duration::from_secs(30));
    assert_eq!(config.registries[0].settings.hosts.as_str(), "{service}.aws");
}

#[test]
fn bad_values_are_refused_naming_the_key_and_line() {
    for (text, expected) in [
        (
            "registries:\n  - name: aws\n    kind: cloudmap\n    region: US East\n    namespace: mesh\n",
            "line 4: `registries[0].region`: \"US East\" is not an AWS region name",
        ),
        (
            "registries:\n  - name: aws\n    kind: cloudmap\n    namespace: mesh\n    endpoint: 127.0.0.1:5000\n",
            "line 5: `registries[0].endpoint`: \"127.0.0.1:5000\" must be a URL",
        ),
        (
            "registries:\n  - name: aws\n    kind: cloudmap\n    namespace: mesh\n    endpoint: http://h:1/path\n",
            "`registries[0].endpoint`",
        ),
        (
            "registries:\n  - name: aws\n    kind: cloudmap\n    namespace: mesh\n    interval: 10ms\n",
            "line 5: `registries[0].interval`: \"10ms\" must be a duration from 100ms",
        ),
        (
            "registries:\n  - name: aws\n    kind: cloudmap\n    namespace: mesh\n    namespaces: []\n",
            "line 5: `registries[0].namespaces`: must list at least one value",
        ),
        (
            "registries:\n  - name: aws\n    kind: cloudmap\n    namespace: mesh\n    address: http://x\n",
            "line 5: `registries[0].address`: does not apply to a registry of kind `cloudmap`; its keys are region, namespaces, services, endpoint, interval",
        ),
    ] {
        let message = error(text);
        assert!(message.contains(expected), "{text}\n→ {message}");
    }
}

#[test]
fn cloudmap_keys_are_refused_on_other_kinds() {
    let message = error(
        "registries:\n  - name: kv\n    kind: etcd\n    address: http://127.0.0.1:2379\n    prefix: /s\n    region: us-east-1\n    namespace: mesh\n",
    );
    assert!(
        message.contains("line 6: `registries[0].region`: does not apply to a registry of kind `etcd`"),
        "{message}"
    );
}
