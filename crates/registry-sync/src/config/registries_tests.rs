//! Config tests for the `etcd` and `zookeeper` kinds.

use std::path::PathBuf;
use std::time::Duration;

use registry_sync_sources::etcd::{FieldPath, ValueFormat};
use registry_sync_sources::secret::SecretSource;
use registry_sync_sources::zookeeper::ZkLayout;

use super::super::{Config, SourceConfig};

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(std::path::Path::new("/etc/registry-sync/sync.yaml"), text).map_err(|e| e.to_string())
}

fn error(text: &str) -> String {
    parse(text).expect_err("the config should be refused")
}

#[test]
fn an_etcd_registry_takes_endpoints_prefix_and_defaults_to_naming_endpoints() {
    let config = parse(
        "registries:\n  - {name: kv, kind: etcd, address: [\"http://127.0.0.1:2379\", \"http://127.0.0.2:2379\"], prefix: /services, namespace: mesh}\n",
    )
    .unwrap();
    let r = &config.registries[0];
    let SourceConfig::Etcd(etcd) = &r.source else {
        panic!("{:?}", r.source)
    };
    assert_eq!(etcd.endpoints, ["http://127.0.0.1:2379", "http://127.0.0.2:2379"]);
    assert_eq!(etcd.prefix, "/services");
    assert_eq!(etcd.format, ValueFormat::NamingEndpoints);
    assert!(etcd.credentials.is_none() && etcd.tls.is_none());
    assert_eq!(r.settings.hosts.as_str(), "{service}.{registry}");
}

#[test]
fn an_etcd_json_layout_with_credentials_and_tls_resolves_paths_against_the_config() {
    let config = parse(
        "registries:
  - name: kv
    kind: etcd
    address: https://etcd-1:2379,https://etcd-2:2379
    prefix: /apps
    value_format: json
    address_field: endpoint.host
    port_field: endpoint.port
    username: sync
    password_file: secrets/etcd
    ca_file: tls/ca.pem
    cert_file: tls/client.pem
    key_file: tls/client-key.pem
    namespace: mesh
",
    )
    .unwrap();
    let SourceConfig::Etcd(etcd) = &config.registries[0].source else {
        panic!()
    };
    assert_eq!(etcd.endpoints.len(), 2);
    let ValueFormat::Json(fields) = &etcd.format else {
        panic!("{:?}", etcd.format)
    };
    assert_eq!(fields.address, FieldPath::parse("endpoint.host").unwrap());
    assert_eq!(fields.metadata, FieldPath::parse("metadata").unwrap());
    let credentials = etcd.credentials.as_ref().unwrap();
    assert_eq!(
        credentials.password,
        SecretSource::File("/etc/registry-sync/secrets/etcd".into())
    );
    let tls = etcd.tls.as_ref().unwrap();
    assert_eq!(tls.ca_file, PathBuf::from("/etc/registry-sync/tls/ca.pem"));
    assert!(tls.client.is_some());
}

#[test]
fn etcd_mistakes_are_refused_naming_the_key_and_line() {
    let base = "registries:\n  - {name: kv, kind: etcd, namespace: mesh, ";
    let cases = [
        ("prefix: /s}", "registries[0].address`: is required"),
        ("address: \"127.0.0.1:2379\", prefix: /s}", "must be a URL"),
        ("address: \"http://a:1\"}", "registries[0].prefix`: is required"),
        (
            "address: \"http://a:1\", prefix: /s, value_format: yaml}",
            "not a value format",
        ),
        (
            "address: \"http://a:1\", prefix: /s, port_field: p}",
            "only with `value_format: json`",
        ),
        ("address: \"https://a:1\", prefix: /s}", "need `ca_file`"),
        (
            "address: \"http://a:1\", prefix: /s, ca_file: ca.pem}",
            "need https://",
        ),
        (
            "address: \"http://a:1\", prefix: /s, username: u}",
            "needs a password",
        ),
        (
            "address: \"http://a:1\", prefix: /s, password_env: P}",
            "`registries[0].username`",
        ),
        (
            "address: \"http://a:1\", prefix: /s, layout: dubbo}",
            "`registries[0].layout`: does not apply",
        ),
        (
            "address: \"http://a:1\", prefix: /s, path: x}",
            "`registries[0].path`: does not apply",
        ),
    ];
    for (rest, needle) in cases {
        let message = error(&format!("{base}{rest}\n"));
        assert!(message.contains(needle), "{rest}: {message}");
        assert!(message.contains("line 2"), "{rest}: {message}");
    }
}

#[test]
fn a_password_never_appears_in_a_config_error() {
    let message = error(
        "registries:\n  - {name: kv, kind: etcd, namespace: mesh, address: \"http://a:1\", prefix: /s, password_env: HUNTER2_VAR, password_file: hunter2}\n",
    );
    assert!(message.contains("not both"), "{message}");
    assert!(!message.contains("hunter2\""), "{message}");
}

#[test]
fn a_dubbo_registry_defaults_its_root_and_uses_the_interface_as_host() {
    let config = parse(
        "registries:\n  - {name: dubbo, kind: zookeeper, address: \"127.0.0.1:2181\", layout: dubbo, namespace: mesh}\n",
    )
    .unwrap();
    let r = &config.registries[0];
    let SourceConfig::Zookeeper(zk) = &r.source else {
        panic!()
    };
    assert_eq!((zk.layout, zk.root.as_str()), (ZkLayout::Dubbo, "/dubbo"));
    assert_eq!(zk.session_timeout, Duration::from_secs(10));
    assert_eq!(r.settings.hosts.as_str(), "{service}");
}

#[test]
fn a_curator_registry_takes_an_ensemble_chroot_credentials_and_session_timeout() {
    let config = parse(
        "registries:
  - name: spring
    kind: zookeeper
    address: h1:2181,h2:2181
    layout: curator
    chroot: /prod
    username: sync
    password_env: ZK_PASSWORD
    session_timeout: 2500ms
    namespace: mesh
",
    )
    .unwrap();
    let r = &config.registries[0];
    let SourceConfig::Zookeeper(zk) = &r.source else {
        panic!()
    };
    assert_eq!(zk.address, "h1:2181,h2:2181");
    assert_eq!(
        (zk.root.as_str(), zk.chroot.as_deref()),
        ("/services", Some("/prod"))
    );
    assert_eq!(zk.session_timeout, Duration::from_millis(2500));
    assert_eq!(
        zk.credentials.as_ref().unwrap().password,
        SecretSource::Env("ZK_PASSWORD".into())
    );
    assert_eq!(r.settings.hosts.as_str(), "{service}.{registry}");
}

#[test]
fn zookeeper_mistakes_are_refused_naming_the_key_and_line() {
    let base = "registries:\n  - {name: zk, kind: zookeeper, namespace: mesh, ";
    let cases = [
        ("layout: dubbo}", "`registries[0].address`: is required"),
        ("address: \"a:1\"}", "`registries[0].layout`: is required"),
        ("address: \"a:1\", layout: eureka}", "not a layout"),
        (
            "address: \"a:1/chroot\", layout: dubbo}",
            "put a chroot path in `chroot`",
        ),
        ("address: \"a:1\", layout: dubbo, root: dubbo}", "absolute path"),
        (
            "address: \"a:1\", layout: dubbo, session_timeout: 10}",
            "duration",
        ),
        (
            "address: \"a:1\", layout: dubbo, session_timeout: 1h}",
            "duration",
        ),
        (
            "address: \"a:1\", layout: dubbo, prefix: /x}",
            "`registries[0].prefix`: does not apply",
        ),
    ];
    for (rest, needle) in cases {
        let message = error(&format!("{base}{rest}\n"));
        assert!(message.contains(needle), "{rest}: {message}");
        assert!(message.contains("line 2"), "{rest}: {message}");
    }
}

#[test]
fn a_file_registry_refuses_keys_of_other_kinds() {
    let message =
        error("registries:\n  - {name: f, kind: file, path: s.yaml, namespace: mesh, prefix: /x}\n");
    assert!(
        message.contains("`registries[0].prefix`: does not apply to a registry of kind `file`"),
        "{message}"
    );
}
