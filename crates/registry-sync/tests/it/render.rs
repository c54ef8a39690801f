//! End-to-end: `render` prints every object of the estate as YAML, following the
//! mapping rules, deterministically.

use crate::support;

use support::*;

// ---------------------------------------------------------------------------------
// render

#[test]
fn render_prints_the_quickstart_as_yaml_documents_sorted_by_kind_namespace_and_name() {
    let out = render_quickstart();
    assert_eq!(out.code(), Some(0), "{out}");

    // stdout is nothing but YAML documents: every document is an object, logs are elsewhere.
    let documents: Vec<&str> = out
        .stdout
        .split("---\n")
        .filter(|doc| !doc.trim().is_empty())
        .collect();
    assert!(!documents.is_empty(), "{out}");
    for doc in &documents {
        assert!(
            doc.starts_with("apiVersion: "),
            "a document that is not an object:\n{doc}"
        );
    }
    let objects = parse_objects(&out.stdout);
    assert_eq!(objects.len(), documents.len(), "{out}");
    assert!(
        out.stderr.contains("WARN"),
        "the quick-start's skipped instances are warned about on stderr:\n{out}"
    );
    assert!(
        !out.stdout.contains("WARN") && !out.stdout.contains("skipped"),
        "{out}"
    );

    let order: Vec<(String, String, String)> = objects
        .iter()
        .map(|o| {
            (
                o.kind.clone(),
                o.metadata.namespace.clone(),
                o.metadata.name.clone(),
            )
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        order, sorted,
        "objects are sorted by kind, namespace, name and listed once"
    );
    assert_eq!(
        names(&objects),
        [
            "ServiceEntry mesh-external/legacy.batch",
            "ServiceEntry mesh-external/legacy.billing",
            "ServiceEntry mesh-external/legacy.reports",
            "ServiceEntry mesh-external/legacy.shop.inventory",
            "ServiceEntry mesh-external/legacy.shop.orders",
            "ServiceEntry mesh-external/legacy.shop.payments",
            "ServiceEntry mesh-external/vms.ledger",
            "WorkloadEntry mesh-external/vms.ledger.10-2-1-1-7070-c685d31b",
            "WorkloadEntry mesh-external/vms.ledger.10-2-1-2-7070-750e4e9d",
        ]
    );
    for object in &objects {
        assert_eq!(object.api_version, "networking.istio.io/v1");
        assert_eq!(
            object
                .metadata
                .labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("registry-sync"),
            "{} carries the managed-by label",
            object.metadata.name
        );
        let hash = &object.metadata.annotations["registry-sync.io/content-hash"];
        assert!(
            hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "content hash {hash:?} is 16 hex digits"
        );
    }

    insta::assert_snapshot!(out.stdout);
}

#[test]
fn render_of_the_quickstart_follows_the_mapping_rules() {
    let out = render_quickstart();
    assert_eq!(out.code(), Some(0), "{out}");
    let objects = parse_objects(&out.stdout);

    // Bad instances are skipped one by one: payments keeps exactly its one good endpoint.
    let payments = find(&objects, "ServiceEntry", "legacy.shop.payments");
    let addresses: Vec<&str> = payments
        .spec
        .endpoints
        .iter()
        .map(|e| e.address.as_str())
        .collect();
    assert_eq!(addresses, ["10.1.2.1"]);
    // A port Istio's sidecar reserves never reaches any object.
    assert!(!out.stdout.contains("15000"), "{}", out.stdout);

    // One host name among the endpoints makes resolution DNS; all IPs make it STATIC.
    let reports = find(&objects, "ServiceEntry", "legacy.reports");
    assert_eq!(reports.spec.resolution.as_deref(), Some("DNS"));
    let ports: Vec<(&str, u32)> = reports
        .service_ports()
        .iter()
        .map(|p| (p.name.as_str(), p.number))
        .collect();
    assert_eq!(ports, [("http-8080", 8080), ("tcp-9000", 9000)]);
    assert_eq!(payments.spec.resolution.as_deref(), Some("STATIC"));

    // Unhealthy instances are not endpoints; each endpoint keeps its own port number.
    let orders = find(&objects, "ServiceEntry", "legacy.shop.orders");
    let endpoints: Vec<(&str, u32)> = orders
        .spec
        .endpoints
        .iter()
        .map(|e| (e.address.as_str(), e.ports["http-8080"]))
        .collect();
    assert_eq!(endpoints, [("10.1.0.1", 8080), ("10.1.0.2", 8081)]);

    // No healthy instance: the entry stays, with its port and without endpoints.
    let batch = find(&objects, "ServiceEntry", "legacy.batch");
    assert!(batch.spec.endpoints.is_empty());
    assert_eq!(batch.service_ports().len(), 1);

    // Two registries on one host: one entry, the shared endpoint once, mTLS only for the VM.
    let billing = find(&objects, "ServiceEntry", "legacy.billing");
    assert_eq!(
        billing.metadata.annotations["registry-sync.io/sources"],
        "legacy:billing,vms:billing"
    );
    let billing_endpoints: Vec<&str> = billing
        .spec
        .endpoints
        .iter()
        .map(|e| e.address.as_str())
        .collect();
    assert_eq!(billing_endpoints, ["10.1.4.1", "10.2.0.1"]);
    assert_eq!(
        billing.spec.endpoints[1]
            .labels
            .get("security.istio.io/tlsMode")
            .map(String::as_str),
        Some("istio")
    );
    assert!(
        !billing.spec.endpoints[0]
            .labels
            .contains_key("security.istio.io/tlsMode")
    );

    // workload-entry mode: the entry selects its WorkloadEntries by the service label.
    let ledger = find(&objects, "ServiceEntry", "vms.ledger");
    assert!(ledger.spec.endpoints.is_empty());
    let selector = &ledger
        .spec
        .workload_selector
        .as_ref()
        .expect("a workloadSelector")
        .labels;
    assert_eq!(
        selector.get("registry-sync.io/service").map(String::as_str),
        Some("vms.ledger")
    );
    let entries: Vec<&Object> = objects.iter().filter(|o| o.kind == "WorkloadEntry").collect();
    let mut addresses: Vec<&str> = entries.iter().filter_map(|o| o.spec.address.as_deref()).collect();
    addresses.sort();
    assert_eq!(addresses, ["10.2.1.1", "10.2.1.2"]);
    for entry in entries {
        assert_eq!(
            entry
                .metadata
                .labels
                .get("registry-sync.io/service")
                .map(String::as_str),
            Some("vms.ledger"),
            "{} is labelled with its service",
            entry.metadata.name
        );
        for (key, value) in selector {
            assert_eq!(
                entry.spec.labels.get(key),
                Some(value),
                "the selector picks {}",
                entry.metadata.name
            );
        }
    }
}

#[test]
fn render_twice_gives_byte_identical_output() {
    let first = render_quickstart();
    let second = render_quickstart();
    assert_eq!(first.code(), Some(0), "{first}");
    assert_eq!(second.code(), Some(0), "{second}");
    assert!(!first.stdout.is_empty());
    assert!(
        first.stdout == second.stdout,
        "two renders differ:\n{first}\n{second}"
    );
}

#[test]
fn render_does_not_depend_on_the_order_of_services_instances_and_ports_in_the_file() {
    let forward = "\
services:
  - name: alpha
    labels: {team: a, tier: web}
    instances:
      - address: 10.0.0.1
        ports: {http: 8080, grpc-admin: 9090}
        labels: {version: v1, zone: a}
        weight: 2
      - address: 10.0.0.2
        ports: {http: 8080, grpc-admin: 9090}
        labels: {version: v2, zone: b}
  - name: beta
    instances:
      - address: beta-1.example.com
        ports: {tcp: 7000}
      - address: 10.0.1.1
        ports: {tcp: 7000}
";
    let backward = "\
services:
  - name: beta
    instances:
      - address: 10.0.1.1
        ports: {tcp: 7000}
      - address: beta-1.example.com
        ports: {tcp: 7000}
  - name: alpha
    labels: {tier: web, team: a}
    instances:
      - address: 10.0.0.2
        ports: {grpc-admin: 9090, http: 8080}
        labels: {zone: b, version: v2}
      - weight: 2
        labels: {zone: a, version: v1}
        ports: {grpc-admin: 9090, http: 8080}
        address: 10.0.0.1
";
    let one = Workspace::with_services(forward);
    let other = Workspace::with_services(backward);
    let a = one.cmd("render");
    let b = other.cmd("render");
    assert_eq!(a.code(), Some(0), "{a}");
    assert_eq!(b.code(), Some(0), "{b}");
    assert_eq!(parse_objects(&a.stdout).len(), 2, "{a}");
    assert!(
        a.stdout == b.stdout,
        "the same estate in another order renders differently:\n{a}\n{b}"
    );
}

#[test]
fn render_exits_1_and_prints_no_partial_estate_when_a_registry_cannot_be_read() {
    let ws = Workspace::new();
    ws.write_config(
        "\
registries:
  - name: legacy
    kind: file
    path: services.yaml
    namespace: mesh
  - name: gone
    kind: file
    path: missing.yaml
    namespace: mesh
",
    );
    ws.write_services(&services(8080, true));
    let out = ws.cmd("render");
    assert_eq!(out.code(), Some(1), "{out}");
    assert_eq!(out.stdout, "", "{out}");
    assert!(
        out.stderr.contains("gone") && out.stderr.contains("missing.yaml"),
        "{out}"
    );
}
