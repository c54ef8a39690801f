//! End-to-end: the mapping controls of the config (`select`, `namespace_from`,
//! `overrides`, `provenance`) through `render`, `plan` and `once`.

use crate::support;

use support::*;

/// Every control at once: a registry with a selection, namespaces chosen by metadata,
/// provenance and waypoints, and overrides of ports, hosts, location, resolution,
/// endpoint mode, visibility and labels.
const CONFIG: &str = "\
registries:
  - name: legacy
    kind: file
    path: services.yaml
    namespace: mesh
    provenance: true
    select:
      services:
        exclude: [\"*-canary\"]
      instances:
        exclude_metadata: {draining: \"yes\"}
    namespace_from: \"{meta:k8s-namespace}\"
    allowed_namespaces: [payments]
  - name: shop
    kind: file
    path: shop.yaml
    namespace: shop
    vip_range: 240.241.0.0/16
    endpoints: workload-entry
    health: status
overrides:
  - name: payments-grpc
    service: payments
    ports:
      - {port: 8080, protocol: GRPC, name: grpc-api, target_port: 18080}
    hosts: [payments.internal]
    export_to: [\".\"]
    labels: {team: payments}
    use_waypoint: payments-wp
  - name: reports-external
    service: reports
    location: mesh-external
    resolution: dns
    endpoints: workload-entry
";

/// The second registry: TCP services that get addresses, health kept in status.
const SHOP: &str = "\
services:
  - name: db
    instances:
      - {address: 10.0.5.1, ports: {tcp: 5432}}
      - {address: 10.0.5.2, ports: {tcp: 5432}, healthy: false}
  - name: cache
    instances:
      - {address: 10.0.6.1, ports: {tcp: 6379}}
";

const SERVICES: &str = "\
services:
  - name: payments
    instances:
      - {address: 10.0.1.1, ports: {http: 8080}, labels: {k8s-namespace: payments, version: v1}}
      - {address: 10.0.1.2, ports: {http: 8080}, labels: {k8s-namespace: payments, version: v2}}
      - {address: 10.0.1.3, ports: {http: 8080}, labels: {k8s-namespace: payments, draining: \"yes\"}}
  - name: payments-canary
    instances:
      - {address: 10.0.2.1, ports: {http: 8080}}
  - name: orders
    namespace: shop
    instances:
      - {address: 10.0.3.1, ports: {http: 8080}, labels: {k8s-namespace: kube-system}}
  - name: reports
    instances:
      - {address: 10.0.4.1, ports: {tcp: 9000}}
";

fn workspace(config: &str, services: &str) -> Workspace {
    let ws = Workspace::new();
    ws.write_config(config);
    ws.write_services(services);
    ws.write("shop.yaml", SHOP);
    ws
}

fn find<'a>(objects: &'a [Object], kind: &str, name: &str) -> &'a Object {
    objects
        .iter()
        .find(|o| o.kind == kind && o.metadata.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {objects:#?}"))
}

#[test]
fn render_on_an_estate_exercising_every_control_shows_the_documented_result() {
    let ws = workspace(CONFIG, SERVICES);
    let out = ws.cmd("render");
    assert_eq!(out.code(), Some(0), "{out}");
    let objects = parse_objects(&out.stdout);

    // select: the canary service is left out, without a warning.
    assert!(!out.stdout.contains("payments-canary"), "{out}");
    assert!(!out.stderr.contains("payments-canary"), "{out}");

    // namespace_from: payments asked for an allowed namespace; orders for one that is not.
    let payments = find(&objects, "ServiceEntry", "legacy.payments");
    assert_eq!(payments.metadata.namespace, "payments");
    let orders = find(&objects, "ServiceEntry", "legacy.shop.orders");
    assert_eq!(orders.metadata.namespace, "mesh");
    assert!(
        out.stderr
            .contains("\"kube-system\", which is not in allowed_namespaces"),
        "the refused namespace is reported: {out}"
    );

    // overrides on payments: the port, an alias, visibility, labels, the waypoint.
    let port = &payments.service_ports()[0];
    assert_eq!(
        (port.number, port.name.as_str(), port.protocol.as_str()),
        (8080, "grpc-api", "GRPC")
    );
    assert_eq!(payments.spec.hosts, ["payments.legacy", "payments.internal"]);
    assert_eq!(payments.spec.export_to, ["."]);
    assert_eq!(payments.metadata.labels["team"], "payments");
    assert_eq!(payments.metadata.labels["istio.io/use-waypoint"], "payments-wp");
    assert_eq!(
        payments.metadata.annotations["registry-sync.io/overrides"],
        "payments-grpc"
    );
    // The instance filter left the draining instance out; subsets can select by version.
    let endpoints: Vec<(&str, u32, Option<&String>)> = payments
        .spec
        .endpoints
        .iter()
        .map(|e| (e.address.as_str(), e.ports["grpc-api"], e.labels.get("version")))
        .collect();
    assert_eq!(
        endpoints,
        [
            ("10.0.1.1", 18080, Some(&"v1".to_string())),
            ("10.0.1.2", 18080, Some(&"v2".to_string()))
        ]
    );

    // overrides on reports: location, resolution and WorkloadEntries beside the entry.
    let reports = find(&objects, "ServiceEntry", "legacy.reports");
    assert_eq!(reports.spec.location.as_deref(), Some("MESH_EXTERNAL"));
    assert_eq!(reports.spec.resolution.as_deref(), Some("DNS"));
    assert!(reports.spec.endpoints.is_empty() && reports.spec.workload_selector.is_some());
    let entry = find(&objects, "WorkloadEntry", "legacy.reports.10-0-4-1-9000-65c6b598");
    assert_eq!(entry.metadata.namespace, reports.metadata.namespace);

    // vip_range: each TCP entry of shop has its own address from the range.
    let db = find(&objects, "ServiceEntry", "shop.db");
    let cache = find(&objects, "ServiceEntry", "shop.cache");
    for entry in [db, cache] {
        assert_eq!(entry.spec.addresses.len(), 1, "{entry:?}");
        assert!(entry.spec.addresses[0].starts_with("240.241."), "{entry:?}");
    }
    assert_ne!(db.spec.addresses, cache.spec.addresses);
    assert!(payments.spec.addresses.is_empty(), "legacy has no range");

    // health: status: the unhealthy instance of db stays, as an entry with health checks.
    let db_entries: Vec<&Object> = objects
        .iter()
        .filter(|o| {
            o.kind == "WorkloadEntry"
                && o.metadata
                    .labels
                    .get("registry-sync.io/service")
                    .is_some_and(|s| s == "shop.db")
        })
        .collect();
    assert_eq!(db_entries.len(), 2, "{db_entries:?}");
    for entry in db_entries {
        assert_eq!(
            entry.metadata.annotations["proxy.istio.io/health-checks-enabled"],
            "true"
        );
    }

    // provenance on every object of legacy; the origin namespace where it has one.
    for object in objects
        .iter()
        .filter(|o| o.metadata.labels["registry-sync.io/registry"] == "legacy")
    {
        assert_eq!(
            object.metadata.labels["registry-sync.io/registry-kind"], "file",
            "{object:?}"
        );
    }
    assert_eq!(
        orders.metadata.annotations["registry-sync.io/origin-namespace"],
        "shop"
    );

    // Byte for byte the same on a second run, and as recorded.
    let again = ws.cmd("render");
    assert_eq!(again.stdout, out.stdout);
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn plan_names_the_override_behind_an_update_and_the_filter_behind_a_delete() {
    let plain = FILES_SINK_CONFIG;
    let ws = workspace(plain, SERVICES);
    let once = ws.cmd("once");
    assert_eq!(once.code(), Some(0), "{once}");

    let narrowed = plain.replace(
        "    namespace: mesh\n",
        "    namespace: mesh\n    select: {services: {exclude: [\"*-canary\"]}}\n",
    ) + "overrides:\n  - {name: reports-external, service: reports, location: mesh-external}\n";
    ws.write_config(&narrowed);
    let out = ws.cmd("plan");
    assert_eq!(out.code(), Some(2), "{out}");
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| ["+ ", "~ ", "- ", "! "].iter().any(|p| l.starts_with(p)))
        .collect();
    assert_eq!(
        lines,
        [
            "- ServiceEntry mesh/legacy.payments-canary (delete; legacy:payments-canary is not selected: its name matches select.services.exclude \"*-canary\")",
            "~ ServiceEntry mesh/legacy.reports (update; overrides: reports-external)",
        ],
        "{out}"
    );
}

#[test]
fn a_filter_change_that_would_remove_most_of_a_registry_is_held_back() {
    let many: String = std::iter::once("services:\n".to_string())
        .chain((0..10).map(|n| {
            format!(
                "  - name: svc-{n}\n    instances:\n      - {{address: 10.0.0.{n}, ports: {{http: 8080}}}}\n"
            )
        }))
        .collect();
    let ws = workspace(FILES_SINK_CONFIG, &many);
    assert_eq!(ws.cmd("once").code(), Some(0));
    let before = ws.out_files();
    assert_eq!(before.len(), 10);

    ws.write_config(&FILES_SINK_CONFIG.replace(
        "    namespace: mesh\n",
        "    namespace: mesh\n    select: {services: {include: [svc-0]}}\n",
    ));
    let out = ws.cmd("once");
    assert_eq!(out.code(), Some(3), "held back: {out}");
    assert_eq!(ws.out_files(), before, "nothing was deleted");
    let plan = ws.cmd("plan");
    assert!(plan.stdout.contains("held back"), "{plan}");
}

#[test]
fn a_bad_control_stops_the_program_naming_the_key_and_line() {
    let ws = workspace(
        &CONFIG.replace("exclude: [\"*-canary\"]", "exclude: [\"[canary]\"]"),
        SERVICES,
    );
    let out = ws.cmd("render");
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains("line 9: `registries[0].select.services.exclude[0]`: pattern \"[canary]\""),
        "{out}"
    );
    assert!(out.stdout.is_empty(), "{out}");
}

fn one_service(name: &str) -> String {
    format!("  - name: {name}\n    instances:\n      - {{address: 10.0.9.1, ports: {{tcp: 5432}}}}\n")
}

fn vip_in(ws: &Workspace, name: &str) -> String {
    let object = parse_object(&ws.service_entry_file(&format!("legacy.{name}")));
    object.spec.addresses.first().cloned().unwrap_or_default()
}

#[test]
fn an_allocated_address_is_read_back_and_kept_when_a_newcomer_hashes_onto_it() {
    // A /30 holds two addresses: find a service that, alone, gets the address `zeta`
    // gets alone. Translated from scratch together, it would take that address (it
    // sorts first); read back from the sink, `zeta` keeps it.
    let config = FILES_SINK_CONFIG.replace(
        "    namespace: mesh\n",
        "    namespace: mesh\n    vip_range: 240.241.7.0/30\n",
    );
    let alone = |name: &str| {
        let ws = workspace(&config, &format!("services:\n{}", one_service(name)));
        assert_eq!(ws.cmd("once").code(), Some(0));
        vip_in(&ws, name)
    };
    let zeta = alone("zeta");
    assert!(zeta.starts_with("240.241.7."), "{zeta}");
    let rival = (0..20)
        .map(|n| format!("a{n}"))
        .find(|name| alone(name) == zeta)
        .expect("one of 20 names shares zeta's first choice in a range of two");

    let ws = workspace(&config, &format!("services:\n{}", one_service("zeta")));
    assert_eq!(ws.cmd("once").code(), Some(0));
    ws.write_services(&format!(
        "services:\n{}{}",
        one_service("zeta"),
        one_service(&rival)
    ));
    let out = ws.cmd("once");
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(vip_in(&ws, "zeta"), zeta, "the address zeta had is kept");
    let other = vip_in(&ws, &rival);
    assert!(other.starts_with("240.241.7.") && other != zeta, "{other}");

    // render knows no sink: from scratch, the rival would have taken it.
    let rendered = ws.cmd("render");
    let objects = parse_objects(&rendered.stdout);
    let rendered_rival = find(&objects, "ServiceEntry", &format!("legacy.{rival}"));
    assert_eq!(rendered_rival.spec.addresses, [zeta]);
}
