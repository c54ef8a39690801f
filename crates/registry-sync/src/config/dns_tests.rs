//! Config tests for the `dns` kind.

use std::time::Duration;

use super::super::{Config, SourceConfig};

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(std::path::Path::new("/etc/registry-sync/sync.yaml"), text).map_err(|e| e.to_string())
}

#[test]
fn a_dns_registry_takes_names_and_defaults_to_the_system_resolver_and_5s_to_300s() {
    let config = parse(
        "registries:\n  - {name: legacy-dns, kind: dns, names: [_http._tcp.billing.example], namespace: mesh}\n",
    )
    .unwrap();
    let r = &config.registries[0];
    let SourceConfig::Dns(dns) = &r.source else {
        panic!("{:?}", r.source)
    };
    assert_eq!(dns.nameserver, None);
    assert_eq!(dns.names[0].service(), "billing.example");
    assert_eq!(
        (dns.min_refresh, dns.max_refresh),
        (Duration::from_secs(5), Duration::from_secs(300))
    );
    assert_eq!(r.settings.hosts.as_str(), "{service}");
}

#[test]
fn a_nameserver_without_port_uses_53_and_refresh_bounds_are_read() {
    let config = parse(
        "registries:\n  - {name: d, kind: dns, nameserver: \"10.0.0.53\", names: [_tcp.a.example], min_refresh: 500ms, max_refresh: 2m, namespace: mesh}\n",
    )
    .unwrap();
    let SourceConfig::Dns(dns) = &config.registries[0].source else {
        panic!()
    };
    assert_eq!(dns.nameserver, Some("10.0.0.53:53".parse().unwrap()));
    assert_eq!(
        (dns.min_refresh, dns.max_refresh),
        (Duration::from_millis(500), Duration::from_secs(120))
    );
}

#[test]
fn bad_dns_settings_are_refused_naming_the_key() {
    for (text, key, message) in [
        ("names: [billing.example]", "names", "_service._proto.domain"),
        ("names: []", "names", "at least one"),
        (
            "nameserver: dns.local, names: [_tcp.a.example]",
            "nameserver",
            "IP address",
        ),
        (
            "names: [_tcp.a.example], min_refresh: 10m, max_refresh: 1m",
            "min_refresh",
            "longer than",
        ),
        (
            "names: [_tcp.a.example], max_refresh: 0s",
            "max_refresh",
            "duration",
        ),
        (
            "names: [_http._tcp.a.example, _grpc._tcp.a.example]",
            "names",
            "one SRV name per service",
        ),
        ("names: [_tcp.a.example], prefix: /x", "prefix", "does not apply"),
        ("nameserver: \"127.0.0.1\"", "names", "is required"),
    ] {
        let error = parse(&format!(
            "registries:\n  - {{name: d, kind: dns, namespace: mesh, {text}}}\n"
        ))
        .expect_err(text);
        assert!(
            error.contains(&format!("registries[0].{key}")) && error.contains(message),
            "{text}: {error}"
        );
    }
}
