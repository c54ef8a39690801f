//! Config tests for the `nacos` kind.

use std::path::PathBuf;
use std::time::Duration;

use registry_sync_sources::nacos::{DEFAULT_INTERVAL, NacosConfig};
use registry_sync_sources::secret::SecretSource;

use crate::config::{Config, SourceConfig};

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(std::path::Path::new("/etc/registry-sync/sync.yaml"), text).map_err(|e| e.to_string())
}

fn nacos(text: &str) -> NacosConfig {
    let config = parse(text).unwrap();
    match &config.registries[0].source {
        SourceConfig::Nacos(nacos) => (**nacos).clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_nacos_registry_defaults_to_every_group_of_public_every_ten_seconds() {
    let config =
        parse("registries:\n  - {name: nacos, kind: nacos, address: \"127.0.0.1:8848\", namespace: mesh}\n")
            .unwrap();
    let r = &config.registries[0];
    assert_eq!(r.settings.hosts.as_str(), "{service}.{namespace}.nacos");
    let SourceConfig::Nacos(nacos) = &r.source else {
        panic!("{:?}", r.source)
    };
    assert_eq!(**nacos, NacosConfig::new("127.0.0.1:8848"));
    assert_eq!(nacos.namespace_id, "public");
    assert!(nacos.groups.is_empty() && nacos.services.is_empty() && nacos.credentials.is_none());
    assert_eq!(nacos.interval, DEFAULT_INTERVAL);
}

#[test]
fn every_nacos_key_is_read_and_the_password_file_resolves_against_the_config() {
    let nacos = nacos(
        "registries:
  - name: nacos
    kind: nacos
    address: [\"10.0.0.1:8848\", \"10.0.0.2:8848\"]
    namespace_id: prod
    groups: [DEFAULT_GROUP, SHOP]
    services: [orders]
    username: sync
    password_file: secrets/nacos
    interval: 30s
    namespace: mesh
",
    );
    assert_eq!(nacos.addresses, ["10.0.0.1:8848", "10.0.0.2:8848"]);
    assert_eq!(nacos.namespace_id, "prod");
    assert_eq!(nacos.groups, ["DEFAULT_GROUP", "SHOP"]);
    assert_eq!(nacos.services, ["orders"]);
    assert_eq!(nacos.interval, Duration::from_secs(30));
    let credentials = nacos.credentials.unwrap();
    assert_eq!(credentials.username, "sync");
    assert_eq!(
        credentials.password,
        SecretSource::File(PathBuf::from("/etc/registry-sync/secrets/nacos"))
    );
}

#[test]
fn bad_nacos_keys_are_refused_naming_the_key_and_line() {
    let cases = [
        (
            "address: \"http://127.0.0.1:8848\"",
            "line 4: `registries[0].address`",
            "without http://",
        ),
        ("address: \"127.0.0.1\"", "`registries[0].address`", "host:port"),
        ("address: \"127.0.0.1:65000\"", "`registries[0].address`", "64535"),
        (
            "address: \"127.0.0.1:8848\"\n    groups: []",
            "line 5: `registries[0].groups`",
            "at least one",
        ),
        (
            "address: \"127.0.0.1:8848\"\n    groups: [\"A@@B\"]",
            "line 5: `registries[0].groups`",
            "@@",
        ),
        (
            "address: \"127.0.0.1:8848\"\n    interval: 10ms",
            "line 5: `registries[0].interval`",
            "duration",
        ),
        (
            "address: \"127.0.0.1:8848\"\n    namespace_id: \"\"",
            "line 5: `registries[0].namespace_id`",
            "must not be empty",
        ),
        (
            "address: \"127.0.0.1:8848\"\n    username: sync",
            "line 5: `registries[0].username`",
            "needs a password",
        ),
        (
            "address: \"127.0.0.1:8848\"\n    prefix: /services",
            "line 5: `registries[0].prefix`",
            "does not apply to a registry of kind `nacos`",
        ),
        ("namespace_id: prod", "`registries[0].address`", "is required"),
    ];
    for (keys, place, message) in cases {
        let text =
            format!("registries:\n  - name: nacos\n    kind: nacos\n    {keys}\n    namespace: mesh\n");
        let error = parse(&text).expect_err(&text);
        assert!(
            error.contains(place) && error.contains(message),
            "{keys}: {error}"
        );
    }
}

#[test]
fn nacos_keys_on_another_kind_are_refused() {
    let error = parse(
        "registries:\n  - name: kv\n    kind: etcd\n    address: [\"http://127.0.0.1:2379\"]\n    prefix: /s\n    groups: [SHOP]\n    namespace: mesh\n",
    )
    .unwrap_err();
    assert!(
        error.contains("`registries[0].groups`") && error.contains("kind `etcd`"),
        "{error}"
    );
}
