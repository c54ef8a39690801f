//! The mapping controls of the config: selection, namespace mapping, per-service
//! overrides and provenance, one rule per test, through the full translation and the
//! incremental index alike.

use std::collections::BTreeMap;
use std::time::Duration;

use registry_sync_catalog::{Protocol, RegistrySnapshot, ServiceKey, SkipKind};
use registry_sync_index::{Event, Index};
use registry_sync_istio::{HeldObject, INSTANCE_LABEL};
use registry_sync_istio::{Kind, Location, ORIGIN_NAMESPACE_ANNOTATION, PROVENANCE_KIND_LABEL, Resolution};
use registry_sync_plan::Owner;
use registry_sync_translate::Translation;
use registry_sync_translate::testing::*;
use registry_sync_translate::{
    EndpointMode, Glob, NamespaceRule, NamespaceTemplate, OVERRIDES_ANNOTATION, Override, PortOverride,
    Selection, Settings, VipRange, translate,
};

use crate::Feed;

fn globs(patterns: &[&str]) -> Vec<Glob> {
    patterns.iter().map(|p| Glob::new(p).unwrap()).collect()
}

fn with_select(select: Selection) -> Settings {
    let mut settings = settings();
    settings.registries.get_mut("legacy").unwrap().select = select;
    settings
}

fn hosts(t: &registry_sync_translate::Translation) -> Vec<String> {
    service_entries(t)
        .iter()
        .flat_map(|se| se.hosts.clone())
        .collect()
}

fn rule(name: &str, service: &str) -> Override {
    Override {
        name: name.into(),
        registry: Glob::new("*").unwrap(),
        service: Glob::new(service).unwrap(),
        ports: Vec::new(),
        aliases: Vec::new(),
        location: None,
        resolution: None,
        endpoints: None,
        export_to: None,
        labels: BTreeMap::new(),
    }
}

fn with_overrides(overrides: Vec<Override>) -> Settings {
    Settings {
        overrides,
        ..settings()
    }
}

fn estate() -> Vec<registry_sync_catalog::Service> {
    vec![
        svc("payments", vec![inst("10.0.0.1", &[("http", 8080)])]),
        svc("payments-canary", vec![inst("10.0.0.2", &[("http", 8080)])]),
        svc("orders", vec![inst("10.0.0.3", &[("http", 8080)])]),
    ]
}

#[test]
fn services_outside_the_selection_produce_nothing_and_no_problem() {
    let select = Selection {
        include: globs(&["pay*"]),
        exclude: globs(&["*-canary"]),
        ..Selection::default()
    };
    let t = translate(&catalog(vec![("legacy", estate())]), &with_select(select));
    assert_eq!(hosts(&t), ["payments.legacy"]);
    assert!(t.skipped.is_empty() && t.notes.is_empty(), "{:?}", t.skipped);
}

#[test]
fn an_instance_filter_drops_instances_and_keeps_the_service() {
    let select = Selection {
        instance_metadata: vec![("env".into(), Glob::new("prod").unwrap())],
        ..Selection::default()
    };
    let t = translate(
        &catalog(vec![(
            "legacy",
            vec![svc(
                "orders",
                vec![
                    with_labels(inst("10.0.0.1", &[("http", 8080)]), &[("env", "prod")]),
                    with_labels(inst("10.0.0.2", &[("http", 8080)]), &[("env", "staging")]),
                ],
            )],
        )]),
        &with_select(select),
    );
    let addresses: Vec<_> = only_entry(&t)
        .endpoints
        .iter()
        .map(|e| e.address.clone())
        .collect();
    assert_eq!(addresses, ["10.0.0.1"]);
}

#[test]
fn the_index_says_why_a_service_is_not_selected_and_drops_its_objects_when_the_filter_changes() {
    let snapshot = RegistrySnapshot::new("legacy", estate(), vec![]);
    let mut index = Index::new(settings());
    index.update("legacy", &snapshot);
    assert_eq!(index.desired().len(), 3);

    let mut narrowed = Index::new(with_select(Selection {
        exclude: globs(&["*-canary"]),
        ..Selection::default()
    }));
    narrowed.update("legacy", &snapshot);
    assert_eq!(narrowed.desired().len(), 2);
    let key = ServiceKey {
        namespace: None,
        name: "payments-canary".into(),
    };
    let why = narrowed.unselected("legacy", &key).unwrap();
    assert!(why.contains("select.services.exclude \"*-canary\""), "{why}");
    assert_eq!(
        narrowed.unselected(
            "legacy",
            &ServiceKey {
                namespace: None,
                name: "orders".into()
            }
        ),
        None
    );
    assert_eq!(narrowed.problems().count(), 0);
}

fn mapped(allowed: &[&str]) -> Settings {
    let mut settings = settings();
    let registry = settings.registries.get_mut("legacy").unwrap();
    registry.endpoints = EndpointMode::WorkloadEntry;
    registry.namespace_rule = Some(NamespaceRule {
        template: NamespaceTemplate::parse("{meta:k8s-namespace}").unwrap(),
        allowed: allowed.iter().map(|a| a.to_string()).collect(),
    });
    settings
}

fn asking(name: &str, namespace: &str) -> registry_sync_catalog::Service {
    svc(
        name,
        vec![with_labels(
            inst("10.0.0.1", &[("http", 8080)]),
            &[("k8s-namespace", namespace)],
        )],
    )
}

#[test]
fn a_service_lands_in_the_namespace_its_metadata_names_with_its_workload_entries() {
    let t = translate(
        &catalog(vec![("legacy", vec![asking("payments", "payments")])]),
        &mapped(&["payments"]),
    );
    assert_eq!(t.objects.len(), 2);
    for object in &t.objects {
        assert_eq!(object.metadata.namespace, "payments", "{:?}", object.kind);
    }
    assert!(t.skipped.is_empty(), "{:?}", t.skipped);
}

#[test]
fn a_namespace_not_allowed_goes_to_the_default_with_a_problem_and_a_missing_one_with_a_note() {
    let t = translate(
        &catalog(vec![(
            "legacy",
            vec![
                asking("payments", "kube-system"),
                svc("orders", vec![inst("10.0.0.2", &[("http", 8080)])]),
            ],
        )]),
        &mapped(&["payments"]),
    );
    assert!(t.objects.iter().all(|o| o.metadata.namespace == "mesh"));
    assert_eq!(t.skipped.len(), 1, "{:?}", t.skipped);
    assert_eq!(t.skipped[0].service, "payments");
    assert_eq!(t.skipped[0].kind, SkipKind::Adjusted);
    assert!(
        t.skipped[0]
            .reason
            .contains("\"kube-system\", which is not in allowed_namespaces")
    );
    assert!(
        t.notes
            .iter()
            .any(|n| n.service == "orders" && n.reason.contains("no metadata key \"k8s-namespace\""))
    );
}

#[test]
fn port_overrides_rename_reprotocol_and_retarget_a_port() {
    let mut payments = rule("payments-ports", "payments");
    payments.ports = vec![PortOverride {
        number: 8080,
        name: Some("grpc-api".into()),
        protocol: Some(Protocol::Grpc),
        target_port: Some(18080),
    }];
    let t = translate(
        &catalog(vec![("legacy", estate())]),
        &with_overrides(vec![payments]),
    );
    let entries = service_entries(&t);
    let by_host = |host: &str| *entries.iter().find(|se| se.hosts[0] == host).unwrap();
    let se = by_host("payments.legacy");
    assert_eq!(ports_of(se), [(8080, "grpc-api", "GRPC")]);
    assert_eq!(se.endpoints[0].ports.get("grpc-api").copied(), Some(18080));
    assert_eq!(ports_of(by_host("orders.legacy")), [(8080, "http-8080", "HTTP")]);
    let object = t
        .objects
        .iter()
        .find(|o| o.metadata.name == "legacy.payments")
        .unwrap();
    assert_eq!(
        object.metadata.annotations.get(OVERRIDES_ANNOTATION).unwrap(),
        "payments-ports"
    );
}

#[test]
fn entry_overrides_set_aliases_location_resolution_mode_visibility_and_labels() {
    let mut first = rule("external", "pay*");
    first.location = Some(Location::MeshExternal);
    first.export_to = Some(vec!["*".into()]);
    first.labels = [("team".to_string(), "payments".to_string())].into();
    let mut second = rule("payments", "payments");
    second.aliases = vec!["payments.internal".into()];
    second.resolution = Some(Resolution::Dns);
    second.endpoints = Some(EndpointMode::WorkloadEntry);
    second.export_to = Some(vec![".".into()]);
    let t = translate(
        &catalog(vec![("legacy", estate())]),
        &with_overrides(vec![first, second]),
    );
    let entry = t
        .objects
        .iter()
        .find(|o| o.metadata.name == "legacy.payments")
        .unwrap();
    let registry_sync_istio::Spec::ServiceEntry(se) = &entry.spec else {
        panic!()
    };
    assert_eq!(se.hosts, ["payments.legacy", "payments.internal"]);
    assert_eq!(se.location, Location::MeshExternal);
    assert_eq!(se.resolution, Resolution::Dns);
    assert_eq!(se.export_to, ["."], "the later rule wins");
    assert!(se.endpoints.is_empty() && se.workload_selector.is_some());
    assert_eq!(entry.metadata.labels.get("team").unwrap(), "payments");
    assert_eq!(
        entry.metadata.annotations.get(OVERRIDES_ANNOTATION).unwrap(),
        "external,payments"
    );
    assert_eq!(
        t.objects.iter().filter(|o| o.kind == Kind::WorkloadEntry).count(),
        1
    );
    let canary = t
        .objects
        .iter()
        .find(|o| o.metadata.name == "legacy.payments-canary")
        .unwrap();
    assert_eq!(
        canary.metadata.annotations.get(OVERRIDES_ANNOTATION).unwrap(),
        "external"
    );
    let orders = t
        .objects
        .iter()
        .find(|o| o.metadata.name == "legacy.orders")
        .unwrap();
    assert!(orders.metadata.annotations.get(OVERRIDES_ANNOTATION).is_none());
}

#[test]
fn static_resolution_is_not_forced_on_host_name_endpoints() {
    let mut force = rule("static", "db");
    force.resolution = Some(Resolution::Static);
    let t = translate(
        &catalog(vec![(
            "legacy",
            vec![svc("db", vec![inst("db.example.com", &[("tcp", 5432)])])],
        )]),
        &with_overrides(vec![force]),
    );
    assert_eq!(only_entry(&t).resolution, Resolution::Dns);
    assert!(
        t.skipped[0].reason.contains("resolution STATIC"),
        "{:?}",
        t.skipped
    );
}

#[test]
fn a_port_name_another_port_has_is_not_taken() {
    let mut clash = rule("clash", "a");
    clash.ports = vec![PortOverride {
        number: 8080,
        name: Some("http-9090".into()),
        protocol: None,
        target_port: None,
    }];
    let t = translate(
        &catalog(vec![(
            "legacy",
            vec![svc(
                "a",
                vec![inst("10.0.0.1", &[("http", 8080), ("http-admin", 9090)])],
            )],
        )]),
        &with_overrides(vec![clash]),
    );
    assert_eq!(
        ports_of(only_entry(&t)),
        [(8080, "http-8080", "HTTP"), (9090, "http-9090", "HTTP")]
    );
    assert!(
        t.skipped
            .iter()
            .any(|s| s.reason.contains("another port of the entry has"))
    );
}

#[test]
fn an_override_for_another_registry_does_not_apply() {
    let mut other = rule("other", "payments");
    other.registry = Glob::new("consul-*").unwrap();
    other.location = Some(Location::MeshExternal);
    let t = translate(&catalog(vec![("legacy", estate())]), &with_overrides(vec![other]));
    assert!(
        service_entries(&t)
            .iter()
            .all(|se| se.location == Location::MeshInternal)
    );
}

#[test]
fn provenance_names_the_kind_on_every_object_and_the_origin_namespace() {
    let mut settings = settings();
    let registry = settings.registries.get_mut("legacy").unwrap();
    registry.provenance = Some("nacos".into());
    registry.endpoints = EndpointMode::WorkloadEntry;
    let mut service = svc("orders", vec![inst("10.0.0.1", &[("http", 8080)])]);
    service.namespace = Some("Shop_Group".into());
    let t = translate(&catalog(vec![("legacy", vec![service])]), &settings);
    assert_eq!(t.objects.len(), 2);
    for object in &t.objects {
        assert_eq!(
            object.metadata.labels.get(PROVENANCE_KIND_LABEL).unwrap(),
            "nacos"
        );
        assert_eq!(
            object
                .metadata
                .annotations
                .get(ORIGIN_NAMESPACE_ANNOTATION)
                .unwrap(),
            "Shop_Group"
        );
    }
    let plain = run(vec![svc("orders", vec![inst("10.0.0.1", &[("http", 8080)])])]);
    assert!(
        plain.objects[0]
            .metadata
            .labels
            .get(PROVENANCE_KIND_LABEL)
            .is_none()
    );
}

#[test]
fn the_index_gives_what_the_full_translation_gives_with_every_control_on() {
    let mut settings = mapped(&["payments"]);
    let registry = settings.registries.get_mut("legacy").unwrap();
    registry.select.exclude = globs(&["*-canary"]);
    registry.provenance = Some("consul".into());
    let mut port = rule("port", "*");
    port.ports = vec![PortOverride {
        number: 8080,
        name: None,
        protocol: Some(Protocol::Http2),
        target_port: None,
    }];
    settings.overrides = vec![port];
    let mut services = estate();
    services.push(asking("billing", "payments"));
    let full = translate(&catalog(vec![("legacy", services.clone())]), &settings);
    let mut index = Index::new(settings);
    index.update("legacy", &RegistrySnapshot::new("legacy", services, vec![]));
    let incremental: Vec<_> = index.desired().values().map(|o| (**o).clone()).collect();
    assert_eq!(incremental, full.objects);
    assert!(full.objects.iter().any(|o| o.metadata.namespace == "payments"));
}

fn with_vips(range: &str) -> Settings {
    let mut settings = settings();
    settings.registries.get_mut("legacy").unwrap().vip_range = Some(VipRange::parse(range).unwrap());
    settings
}

fn vip_of(t: &registry_sync_translate::Translation, host: &str) -> Option<String> {
    service_entries(t)
        .into_iter()
        .find(|se| se.hosts[0] == host)
        .and_then(|se| se.addresses.first().cloned())
}

#[test]
fn every_entry_of_a_registry_with_a_vip_range_gets_its_own_address_from_it() {
    let range = VipRange::parse("240.240.0.0/16").unwrap();
    let t = translate(&catalog(vec![("legacy", estate())]), &with_vips("240.240.0.0/16"));
    let addresses: std::collections::BTreeSet<String> = service_entries(&t)
        .iter()
        .map(|se| {
            assert_eq!(se.addresses.len(), 1, "{se:?}");
            se.addresses[0].clone()
        })
        .collect();
    assert_eq!(addresses.len(), 3, "distinct: {addresses:?}");
    assert!(addresses.iter().all(|a| range.contains(a.parse().unwrap())));
    assert!(
        service_entries(&run(estate()))
            .iter()
            .all(|se| se.addresses.is_empty())
    );
}

#[test]
fn a_full_range_publishes_without_an_address_and_says_so() {
    // A /30 has two usable addresses for three services.
    let t = translate(&catalog(vec![("legacy", estate())]), &with_vips("240.240.7.0/30"));
    let without: Vec<_> = service_entries(&t)
        .into_iter()
        .filter(|se| se.addresses.is_empty())
        .collect();
    assert_eq!(without.len(), 1);
    assert!(
        t.skipped.iter().any(|s| s.reason.contains("has no free address")),
        "{:?}",
        t.skipped
    );
}

#[test]
fn the_index_keeps_seeded_addresses_and_frees_those_of_hosts_that_go() {
    let snapshot = RegistrySnapshot::new("legacy", estate(), vec![]);
    let fresh = {
        let mut index = Index::new(with_vips("240.240.0.0/16"));
        index.update("legacy", &snapshot);
        let full = translate(&catalog(vec![("legacy", estate())]), &with_vips("240.240.0.0/16"));
        let incremental: Vec<_> = index.desired().values().map(|o| (**o).clone()).collect();
        assert_eq!(incremental, full.objects);
        full
    };
    let mut index = Index::new(with_vips("240.240.0.0/16"));
    let held = held_entry(&fresh, "orders.legacy", "240.240.200.1", "default");
    index.seed_vips([&held], &Owner::new("default"));
    index.update("legacy", &snapshot);
    let seeded = translate_from(&index);
    assert_eq!(vip_of(&seeded, "orders.legacy").as_deref(), Some("240.240.200.1"));
    assert_eq!(
        vip_of(&seeded, "payments.legacy"),
        vip_of(&fresh, "payments.legacy"),
        "the others are where the hash puts them"
    );

    // orders leaves; a newcomer whose hash lands anywhere never gets a held address.
    let mut next = estate();
    next.retain(|s| s.name != "orders");
    index.update("legacy", &RegistrySnapshot::new("legacy", next, vec![]));
    assert_eq!(vip_of(&translate_from(&index), "orders.legacy"), None);
}

/// The ServiceEntry of `host` in `translation` as a sink holds it, with `address` and
/// written by `instance`.
fn held_entry(translation: &Translation, host: &str, address: &str, instance: &str) -> HeldObject {
    let object = translation
        .objects
        .iter()
        .find(|o| o.kind == Kind::ServiceEntry && o.vip().is_some_and(|(h, _)| h == host))
        .expect("the entry of the host");
    let mut held = HeldObject::written(object);
    held.vip = Some((host.to_string(), address.to_string()));
    held.labels
        .insert(INSTANCE_LABEL.to_string(), instance.to_string());
    held
}

fn translate_from(index: &Index) -> registry_sync_translate::Translation {
    registry_sync_translate::Translation {
        objects: index.desired().values().map(|o| (**o).clone()).collect(),
        ..Default::default()
    }
}

fn health_in_status() -> Settings {
    let mut settings = settings();
    let registry = settings.registries.get_mut("legacy").unwrap();
    registry.endpoints = EndpointMode::WorkloadEntry;
    registry.health_in_status = true;
    settings
}

fn orders(second_healthy: bool) -> Vec<registry_sync_catalog::Service> {
    let second = inst("10.0.0.2", &[("http", 8080)]);
    vec![svc(
        "orders",
        vec![
            inst("10.0.0.1", &[("http", 8080)]),
            if second_healthy { second } else { unhealthy(second) },
        ],
    )]
}

#[test]
fn with_health_in_status_an_unhealthy_instance_stays_as_an_entry_marked_unhealthy() {
    let t = translate(&catalog(vec![("legacy", orders(false))]), &health_in_status());
    let entries = workload_entries(&t);
    assert_eq!(entries.len(), 2);
    for (object, endpoint) in &entries {
        assert_eq!(
            object
                .metadata
                .annotations
                .get(registry_sync_istio::HEALTH_CHECKS_ANNOTATION)
                .map(String::as_str),
            Some("true")
        );
        assert_eq!(
            object.health,
            Some(endpoint.address == "10.0.0.1"),
            "{}",
            endpoint.address
        );
    }
    // Without it, the unhealthy instance leaves.
    let mut plain = health_in_status();
    plain.registries.get_mut("legacy").unwrap().health_in_status = false;
    let t = translate(&catalog(vec![("legacy", orders(false))]), &plain);
    assert_eq!(workload_entries(&t).len(), 1);
    assert!(workload_entries(&t)[0].0.health.is_none());
}

#[test]
fn a_health_flip_changes_no_object_content_but_is_reported_as_a_change() {
    let healthy = translate(&catalog(vec![("legacy", orders(true))]), &health_in_status());
    let flipped = translate(&catalog(vec![("legacy", orders(false))]), &health_in_status());
    let hashes = |t: &registry_sync_translate::Translation| -> Vec<String> {
        t.objects.iter().map(|o| o.content_hash().to_string()).collect()
    };
    assert_eq!(
        hashes(&healthy),
        hashes(&flipped),
        "the objects are written alike"
    );

    let mut index = Index::new(health_in_status());
    index.update("legacy", &RegistrySnapshot::new("legacy", orders(true), vec![]));
    let changes = index.update("legacy", &RegistrySnapshot::new("legacy", orders(false), vec![]));
    assert_eq!(changes.changed.len(), 1, "{:?}", changes.changed);
    assert_eq!(changes.changed.iter().next().unwrap().kind, Kind::WorkloadEntry);
}

#[test]
fn an_override_to_inline_endpoints_drops_unhealthy_instances_as_before() {
    let mut inline = rule("inline", "orders");
    inline.endpoints = Some(EndpointMode::Inline);
    let settings = Settings {
        overrides: vec![inline],
        ..health_in_status()
    };
    let t = translate(&catalog(vec![("legacy", orders(false))]), &settings);
    assert_eq!(only_entry(&t).endpoints.len(), 1);
    assert!(workload_entries(&t).is_empty());
}

#[test]
fn a_departed_instance_drains_unhealthy_until_its_delay_is_over_unless_it_returns() {
    let mut settings = health_in_status();
    settings.registries.get_mut("legacy").unwrap().drain_delay = Some(Duration::from_secs(10));
    let mut index = Index::new(settings);
    let both = RegistrySnapshot::new("legacy", orders(true), vec![]);
    let mut one = orders(true);
    one[0].instances.pop();
    let one = RegistrySnapshot::new("legacy", one, vec![]);
    let entries = |index: &Index| -> Vec<(String, Option<bool>)> {
        index
            .desired()
            .values()
            .filter(|o| o.kind == Kind::WorkloadEntry)
            .map(|o| (o.metadata.name.clone(), o.health))
            .collect()
    };
    index.update("legacy", &both);
    let healthy = entries(&index);
    assert!(healthy.iter().all(|(_, h)| *h == Some(true)));

    let changes = index.apply("legacy", Event::View(&one), Duration::from_secs(1));
    assert_eq!(changes.changed.len(), 1, "the departed entry's health changes");
    let draining = entries(&index);
    assert_eq!(draining.len(), 2, "it stays");
    assert_eq!(draining.iter().filter(|(_, h)| *h == Some(false)).count(), 1);
    assert_eq!(index.next_drain_deadline(), Some(Duration::from_secs(11)));
    assert!(index.expire(Duration::from_secs(5)).changed.is_empty());

    // Back within the delay: healthy, no longer draining.
    index.apply("legacy", Event::View(&both), Duration::from_secs(6));
    assert_eq!(entries(&index), healthy);
    assert_eq!(index.next_drain_deadline(), None);

    // Gone again: a new delay from now, then deleted.
    index.apply("legacy", Event::View(&one), Duration::from_secs(7));
    assert_eq!(index.next_drain_deadline(), Some(Duration::from_secs(17)));
    let changes = index.expire(Duration::from_secs(17));
    assert_eq!(changes.changed.len(), 1);
    assert_eq!(entries(&index).len(), 1);
    assert_eq!(index.next_drain_deadline(), None);
}

/// `payments` with instances 10.0.0.1 (asking for `first`) and 10.0.0.2 (asking for
/// `second`); `None`: the instance carries no namespace.
fn payments_asking(instances: &[Option<&str>]) -> RegistrySnapshot {
    let instances = instances
        .iter()
        .enumerate()
        .map(|(n, namespace)| {
            let instance = inst(&format!("10.0.0.{}", n + 1), &[("http", 8080)]);
            match namespace {
                Some(ns) => with_labels(instance, &[("k8s-namespace", ns)]),
                None => instance,
            }
        })
        .collect();
    RegistrySnapshot::new("legacy", vec![svc("payments", instances)], vec![])
}

fn namespaces_of(index: &Index) -> Vec<String> {
    let mut namespaces: Vec<String> = index
        .desired()
        .keys()
        .filter(|k| k.kind == Kind::ServiceEntry)
        .map(|k| k.namespace.clone())
        .collect();
    namespaces.dedup();
    namespaces
}

#[test]
fn instance_churn_never_moves_a_service_its_metadata_placed_and_a_new_agreed_namespace_does() {
    let mut index = Index::new(mapped(&["payments", "billing"]));
    index.update("legacy", &payments_asking(&[Some("payments"), None]));
    assert_eq!(namespaces_of(&index), ["payments"]);

    // The instance that named the namespace leaves: the service stays, and says why.
    let changes = index.update("legacy", &payments_asking(&[None]));
    assert_eq!(namespaces_of(&index), ["payments"]);
    assert!(
        changes
            .moves
            .iter()
            .any(|m| m.contains("stays in namespace \"payments\"")),
        "{:?}",
        changes.moves
    );
    let found = index.explain("payments");
    assert!(
        found.groups[0].rules[0].contains("the last decision stands"),
        "{:?}",
        found.groups[0].rules
    );
    // Instances that disagree, or name a namespace not allowed, do not move it either.
    index.update("legacy", &payments_asking(&[Some("payments"), Some("billing")]));
    assert_eq!(namespaces_of(&index), ["payments"]);
    index.update("legacy", &payments_asking(&[Some("kube-system")]));
    assert_eq!(namespaces_of(&index), ["payments"]);

    // Every instance names another allowed namespace: a decision, and a move that says so.
    let changes = index.update("legacy", &payments_asking(&[Some("billing")]));
    assert_eq!(namespaces_of(&index), ["billing"]);
    assert!(
        changes
            .moves
            .iter()
            .any(|m| m.contains("moves from namespace \"payments\" to \"billing\"")),
        "{:?}",
        changes.moves
    );
}

#[test]
fn a_service_selected_by_an_instances_metadata_stays_selected_when_that_instance_leaves() {
    let mut settings = with_select(Selection {
        service_metadata: vec![("mesh".into(), Glob::new("on").unwrap())],
        ..Selection::default()
    });
    settings.registries.get_mut("legacy").unwrap().endpoints = EndpointMode::Inline;
    let mut index = Index::new(settings);
    let both = svc(
        "orders",
        vec![
            with_labels(inst("10.0.0.1", &[("http", 8080)]), &[("mesh", "on")]),
            inst("10.0.0.2", &[("http", 8080)]),
        ],
    );
    index.update("legacy", &RegistrySnapshot::new("legacy", vec![both], vec![]));
    assert_eq!(index.desired().len(), 1);
    let rest = svc("orders", vec![inst("10.0.0.2", &[("http", 8080)])]);
    let changes = index.update("legacy", &RegistrySnapshot::new("legacy", vec![rest], vec![]));
    assert_eq!(index.desired().len(), 1, "the entry stays");
    assert!(
        changes.moves.iter().any(|m| m.contains("stays selected")),
        "{:?}",
        changes.moves
    );
    // The service leaving the registry still takes its entry with it.
    index.update("legacy", &RegistrySnapshot::new("legacy", vec![], vec![]));
    assert!(index.desired().is_empty());
}

#[test]
fn no_entry_gets_an_address_an_instance_of_any_service_has() {
    let orders = |address: &str| svc("orders", vec![inst(address, &[("http", 8080)])]);
    let mut index = Index::new(with_vips("240.240.7.0/30"));
    index.update(
        "legacy",
        &RegistrySnapshot::new("legacy", vec![orders("10.0.0.1")], vec![]),
    );
    let first = vip_of(&translate_from(&index), "orders.legacy").expect("an address");
    // Another service's instance (even one `select` would leave out) takes that
    // address: the entry moves off it.
    let squatter = svc("squatter", vec![inst(&first, &[("http", 8080)])]);
    let changes = index.update(
        "legacy",
        &RegistrySnapshot::new("legacy", vec![orders("10.0.0.1"), squatter.clone()], vec![]),
    );
    let now = translate_from(&index);
    let moved = vip_of(&now, "orders.legacy").expect("an address");
    assert_ne!(moved, first, "{changes:?}");
    assert_ne!(vip_of(&now, "squatter.legacy").as_deref(), Some(first.as_str()));
    // The full translation agrees.
    let full = translate(
        &catalog(vec![("legacy", vec![orders("10.0.0.1"), squatter])]),
        &with_vips("240.240.7.0/30"),
    );
    assert_ne!(vip_of(&full, "orders.legacy").as_deref(), Some(first.as_str()));

    // Addresses of objects someone else wrote are never handed out either.
    let mut index = Index::new(with_vips("240.240.7.0/30"));
    let theirs = held_entry(&full, "orders.legacy", &first, "another-installation");
    index.seed_vips([&theirs], &Owner::new("default"));
    index.update(
        "legacy",
        &RegistrySnapshot::new("legacy", vec![orders("10.0.0.1")], vec![]),
    );
    assert_ne!(vip_of(&translate_from(&index), "orders.legacy"), Some(first));
}

#[test]
fn a_replica_that_takes_over_takes_the_addresses_the_sink_holds_over_its_own_order() {
    let one = |name: &str| svc(name, vec![inst("10.0.0.1", &[("http", 8080)])]);
    let vips = |index: &Index| -> Vec<(String, String)> {
        index.desired().values().filter_map(|o| o.vip()).collect()
    };
    // Two services that hash onto the same place of a /30 get each other's address
    // when they arrive in the other order: find such a pair.
    let fed = |first: &str, second: &str| {
        let mut index = Index::new(with_vips("240.240.7.0/30"));
        index.update(
            "legacy",
            &RegistrySnapshot::new("legacy", vec![one(first)], vec![]),
        );
        index.update(
            "legacy",
            &RegistrySnapshot::new("legacy", vec![one(first), one(second)], vec![]),
        );
        index
    };
    let (a, b) = (0..20)
        .flat_map(|i| (0..20).map(move |j| (format!("s{i}"), format!("s{j}"))))
        .find(|(a, b)| a != b && vips(&fed(a, b)) != vips(&fed(b, a)))
        .expect("two names that collide");
    let leader = fed(&a, &b);
    let mut standby = fed(&b, &a);
    assert_ne!(vips(&leader), vips(&standby));
    let written = vips(&leader);
    let held: Vec<HeldObject> = leader
        .desired()
        .values()
        .map(|o| HeldObject::written(o))
        .collect();
    let owner = Owner::new("default");
    let changes = standby.adopt_vips(&held, &owner, Duration::ZERO);
    assert_eq!(vips(&standby), written, "the standby takes what the leader wrote");
    assert!(!changes.changed.is_empty());
    // Taking them again changes nothing.
    assert!(
        standby
            .adopt_vips(&held, &owner, Duration::ZERO)
            .changed
            .is_empty()
    );
}
