use registry_sync_catalog::{Address, RegistrySnapshot, Skipped};

use super::{Unusable, parse};

fn snapshot(yaml: &str) -> RegistrySnapshot {
    match parse("files", yaml.as_bytes()) {
        Ok(snapshot) => snapshot,
        Err(e) => panic!("expected a snapshot, got {e:?}"),
    }
}

fn unusable(yaml: &str) -> Unusable {
    match parse("files", yaml.as_bytes()) {
        Ok(snapshot) => panic!("expected the file to be refused, got {snapshot:?}"),
        Err(e) => e,
    }
}

fn instance_ids(snapshot: &RegistrySnapshot, service: usize) -> Vec<&str> {
    snapshot.services()[service]
        .instances
        .iter()
        .map(|i| i.id.as_str())
        .collect()
}

/// Parses a service with one good instance and one bad one, and returns the one skip.
fn skip_of_bad_sibling(bad_instance: &str) -> Skipped {
    let yaml = format!(
        "services:\n  - name: orders\n    instances:\n      - {{address: 10.1.0.1, ports: {{http: 8080}}}}\n      - {bad_instance}\n"
    );
    let snapshot = snapshot(&yaml);
    assert_eq!(
        instance_ids(&snapshot, 0),
        ["10.1.0.1:8080"],
        "the good sibling survives"
    );
    assert_eq!(snapshot.skipped.len(), 1, "{:?}", snapshot.skipped);
    let skipped = snapshot.skipped[0].clone();
    assert_eq!(skipped.registry, "files");
    assert_eq!(skipped.service, "orders");
    assert!(skipped.reason.starts_with("line 5: "), "{}", skipped.reason);
    skipped
}

#[test]
fn a_full_valid_file_becomes_services_with_defaults_filled_in() {
    let snapshot = snapshot(
        r#"
services:
  - name: payments
    instances: []
  - name: orders
    namespace: shop
    labels: {team: checkout, tier: 2}
    instances:
      - address: 10.1.0.2
        ports: {http: 8080, grpc: 9090, admin: 8080}
      - address: Orders-1.Example.com
        id: orders-1
        ports: {http: 8080}
        healthy: false
        weight: 3
        locality: eu-west-1/eu-west-1a
        network: net1
        service_account: orders
        labels: {version: 1.10, canary: true, protocol: http, empty: }
      - address: "2001:db8::1"
        ports: {http: 8080}
"#,
    );
    let names: Vec<_> = snapshot.services().iter().map(|s| s.key().to_string()).collect();
    assert_eq!(names, ["payments", "shop/orders"]);
    assert!(snapshot.skipped.is_empty(), "{:?}", snapshot.skipped);
    let orders = &snapshot.services()[1];
    assert_eq!(
        orders.labels,
        [
            ("team".to_string(), "checkout".to_string()),
            ("tier".to_string(), "2".to_string())
        ]
        .into_iter()
        .collect::<registry_sync_catalog::Metadata>()
    );
    assert_eq!(
        instance_ids(&snapshot, 1),
        ["10.1.0.2:8080,9090", "[2001:db8::1]:8080", "orders-1"]
    );

    let defaulted = &orders.instances[0];
    assert!(defaulted.healthy, "healthy defaults to true");
    assert_eq!(defaulted.weight, None);
    let ports: Vec<_> = defaulted
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.number))
        .collect();
    assert_eq!(
        ports,
        [("admin", 8080), ("grpc", 9090), ("http", 8080)],
        "ports sorted by name"
    );

    let full = &orders.instances[2];
    assert_eq!(full.address, Address::Hostname("orders-1.example.com".into()));
    assert!(!full.healthy);
    assert_eq!(full.weight, Some(3));
    assert_eq!(full.locality(), Some("eu-west-1/eu-west-1a"));
    assert_eq!(full.network(), Some("net1"));
    assert_eq!(full.service_account(), Some("orders"));
    assert_eq!(
        full.labels.get("version").unwrap(),
        "1.10",
        "numbers are kept as written, not as 1.1"
    );
    assert_eq!(full.labels.get("canary").unwrap(), "true");
    assert_eq!(full.labels.get("empty").unwrap(), "");
}

#[test]
fn an_invalid_ipv4_address_skips_only_that_instance() {
    let skipped = skip_of_bad_sibling("{address: 10.1.0.300, ports: {http: 8080}}");
    assert_eq!(skipped.instance.as_deref(), Some("10.1.0.300"));
    assert!(
        skipped.reason.contains("not a valid IPv4 address"),
        "{}",
        skipped.reason
    );
}

#[test]
fn an_address_that_is_no_host_name_skips_only_that_instance() {
    let skipped = skip_of_bad_sibling("{address: 'not a host!', id: broken, ports: {http: 8080}}");
    assert_eq!(skipped.instance.as_deref(), Some("broken"));
    assert!(
        skipped
            .reason
            .contains("\"not a host!\" is neither an IP address nor a valid host name")
    );
}

#[test]
fn port_zero_skips_only_that_instance() {
    let skipped = skip_of_bad_sibling("{address: 10.1.0.2, ports: {http: 0}}");
    assert_eq!(skipped.instance.as_deref(), Some("10.1.0.2"));
    assert!(
        skipped
            .reason
            .contains("ports.http: port 0 is out of range: must be 1-65535"),
        "{}",
        skipped.reason
    );
}

#[test]
fn a_port_above_65535_skips_only_that_instance() {
    let skipped = skip_of_bad_sibling("{address: 10.1.0.2, ports: {http: 8080, grpc: 70000}}");
    assert!(
        skipped.reason.contains("ports.grpc: port 70000 is out of range"),
        "{}",
        skipped.reason
    );
}

#[test]
fn a_misspelt_key_skips_the_instance_instead_of_being_ignored() {
    let skipped = skip_of_bad_sibling("{adress: 10.1.0.2, ports: {http: 8080}}");
    assert_eq!(skipped.instance.as_deref(), Some("#1"));
    assert!(
        skipped
            .reason
            .contains("unknown key \"adress\"; known keys are address, id"),
        "{}",
        skipped.reason
    );
    assert!(
        skipped.reason.contains("the instance has no `address`"),
        "{}",
        skipped.reason
    );
}

#[test]
fn a_negative_weight_skips_only_that_instance() {
    let skipped = skip_of_bad_sibling("{address: 10.1.0.2, ports: {http: 8080}, weight: -1}");
    assert!(
        skipped
            .reason
            .contains("`weight` must be a whole number from 1 to 4294967295, found a whole number \"-1\"")
    );
}

#[test]
fn wrong_types_and_missing_ports_skip_only_that_instance() {
    for bad in [
        "{address: 10.1.0.2, ports: {http: '8080'}}",
        "{address: 10.1.0.2, ports: {http: 8080.5}}",
        "{address: 10.1.0.2, ports: [8080]}",
        "{address: 10.1.0.2, ports: {}}",
        "{address: 10.1.0.2}",
        "{address: 10.1.0.2, ports: {'': 8080}}",
        "{address: 10.1.0.2, ports: {http: 8080}, healthy: yes}",
        "{address: 10.1.0.2, ports: {http: 8080}, weight: 0}",
        "{address: 10.1.0.2, ports: {http: 8080}, weight: 4294967296}",
        "{address: 10.1.0.2, ports: {http: 8080}, weight: .inf}",
        "{address: 10.1.0.2, ports: {http: 8080}, labels: {a: [1]}}",
        "{address: 10.1.0.2, ports: {http: 8080}, labels: [a]}",
        "{address: [10.1.0.2], ports: {http: 8080}}",
        "{address: 10.1.0.2, ports: {http: 8080}, id: ''}",
        "{address: 10.1.0.2, address: 10.1.0.3, ports: {http: 8080}}",
        "{address: 10.1.0.2, ports: {http: 8080, http: 8081}}",
        "just text",
    ] {
        let skipped = skip_of_bad_sibling(bad);
        assert!(
            skipped.reason.len() > "line 5: ".len(),
            "{bad}: {}",
            skipped.reason
        );
    }
}

#[test]
fn several_problems_in_one_instance_are_reported_together() {
    let skipped = skip_of_bad_sibling("{address: 10.1.0.300, ports: {http: 0}, weight: -1}");
    assert_eq!(
        skipped.reason.matches("line 5: ").count(),
        3,
        "{}",
        skipped.reason
    );
}

#[test]
fn a_service_without_a_name_is_skipped_by_its_index() {
    let snapshot = snapshot(
        "services:\n  - name: a\n    instances: []\n  - instances: [{address: 10.1.0.1, ports: {http: 1}}]\n",
    );
    assert_eq!(snapshot.services().len(), 1);
    assert_eq!(snapshot.skipped.len(), 1);
    let skipped = &snapshot.skipped[0];
    assert_eq!(
        (skipped.service.as_str(), skipped.instance.as_deref()),
        ("#1", None)
    );
    assert_eq!(skipped.reason, "line 4: the service has no `name`");
}

#[test]
fn a_service_with_an_unknown_key_is_skipped_with_its_instances() {
    let snapshot = snapshot(
        "services:\n  - name: a\n    instance: [{address: 10.1.0.1, ports: {http: 1}}]\n  - name: b\n",
    );
    let names: Vec<_> = snapshot.services().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["b"]);
    assert_eq!(snapshot.skipped[0].service, "a");
    assert!(
        snapshot.skipped[0]
            .reason
            .starts_with("line 3: unknown key \"instance\"")
    );
}

#[test]
fn instances_are_located_by_line_even_through_aliases() {
    let snapshot = snapshot(
        "services:\n  - name: a\n    instances: &shared\n      - {address: 10.1.0.1, ports: {http: 0}}\n  - name: b\n    instances: *shared\n",
    );
    let lines: Vec<_> = snapshot
        .skipped
        .iter()
        .map(|s| (s.service.as_str(), &s.reason[..7]))
        .collect();
    assert_eq!(lines, [("a", "line 4:"), ("b", "line 6:")]);
}

#[test]
fn yaml_that_does_not_parse_is_refused_with_its_line() {
    let yaml = "services:\n  - name: a\n    instances: [\n  - bad: {x\n";
    let Unusable::Yaml {
        line,
        column,
        message,
    } = unusable(yaml)
    else {
        panic!("expected a YAML error")
    };
    assert_eq!((line, column), (Some(4), Some(3)));
    assert!(!message.is_empty() && !message.contains("line"), "{message}");
}

#[test]
fn a_wrong_top_level_is_refused_with_its_line() {
    for (yaml, expected_line) in [
        ("servces: []\n", 1),
        ("services: []\nextra: 1\n", 2),
        ("services: 5\n", 1),
        ("services:\n", 1),
        ("- name: a\n", 1),
        ("# nothing but a comment\nsomething: 1\n", 2),
        ("services: []\nservices: []\n", 2),
        ("services: []\n---\nservices: []\n", 3),
        ("# a comment\n\n- name: a\n", 3),
        ("{}\n", 1),
    ] {
        match unusable(yaml) {
            Unusable::Yaml { line, .. } => assert_eq!(line, Some(expected_line), "{yaml:?}"),
            other => panic!("{yaml:?}: {other:?}"),
        }
    }
}

#[test]
fn an_empty_file_is_refused_rather_than_read_as_no_services() {
    for yaml in ["", "  \n\n", "\u{feff}"] {
        assert_eq!(unusable(yaml), Unusable::Empty);
    }
    assert!(snapshot("services: []\n").services().is_empty());
}

#[test]
fn a_file_that_is_not_utf8_is_refused_with_its_line() {
    assert_eq!(
        parse("files", b"services:\n  - name: \xff\n"),
        Err(Unusable::NotUtf8 { line: 2 })
    );
}

#[test]
fn scalars_that_yaml_would_reinterpret_keep_the_operators_spelling() {
    let snapshot = snapshot(
        "services:\n  - name: 2024\n    labels: {a: yes, b: 007, c: 1_000, d: 0x1F, e: 1e3, f: True, g: ~}\n",
    );
    let service = &snapshot.services()[0];
    assert_eq!(service.name, "2024");
    let values: Vec<_> = service.labels.values().map(String::as_str).collect();
    assert_eq!(values, ["yes", "007", "1_000", "0x1F", "1e3", "True", ""]);
}

#[test]
fn arbitrary_bytes_never_panic() {
    let samples: [&[u8]; 8] = [
        b"services: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        b"services: &a [*a]",
        b"services:\n  - !!binary aGVsbG8=\n",
        b"services:\n  - {name: a, instances: [{address: !!binary aGVsbG8=, ports: {http: 1}}]}\n",
        b"services:\n  - {name: a, instances: [{address: 1.2.3.4, ports: {? [a]: 1}}]}\n",
        b"services:\n  - {name: a, labels: {? {x: 1} : y}}\n",
        b"\x00\x01\x02",
        b"services:\n  - name: a\n    instances:\n      - address: 10.0.0.1\n        ports: {http: 99999999999999999999999999}\n",
    ];
    for bytes in samples {
        let _ = parse("files", bytes);
    }
}

proptest::proptest! {
    #[test]
    fn service_files_of_any_content_never_panic(body in crate::arbitrary::bytes(), text in "(services:\n)?( {0,4}[-a-z_]{0,10}:? ?[\\[{]?[a-z0-9.:]{0,12}[\\]}]?\n){0,12}") {
        let _ = parse("files", &body);
        let _ = parse("files", text.as_bytes());
    }
}
