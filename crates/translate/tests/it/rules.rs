//! Every mapping rule of the design, one test each.

use registry_sync_catalog::{Placement, Protocol};
use registry_sync_istio::{
    CONTENT_HASH_ANNOTATION, INSTANCE_LABEL, Kind, Location, MANAGED_BY_LABEL, REGISTRY_LABEL, Resolution,
    SERVICE_LABEL, TLS_MODE_LABEL,
};
use registry_sync_translate::testing::*;
use registry_sync_translate::{AUTO_INLINE_LIMIT, EndpointMode, translate};

#[test]
fn one_service_becomes_one_labelled_service_entry_with_inline_endpoints() {
    let t = run(vec![svc(
        "orders",
        vec![
            inst("10.1.0.1", &[("http", 8080)]),
            inst("10.1.0.2", &[("http", 8080)]),
        ],
    )]);
    assert_eq!(t.objects.len(), 1);
    let object = &t.objects[0];
    assert_eq!(object.kind, Kind::ServiceEntry);
    assert_eq!(object.metadata.name, "legacy.orders");
    assert_eq!(object.metadata.namespace, "mesh");
    assert_eq!(
        object.metadata.labels.get(MANAGED_BY_LABEL).unwrap(),
        "registry-sync"
    );
    assert_eq!(object.metadata.labels.get(REGISTRY_LABEL).unwrap(), "legacy");
    assert_eq!(object.metadata.labels.get(INSTANCE_LABEL).unwrap(), "default");
    assert_eq!(
        object
            .metadata
            .annotations
            .get(CONTENT_HASH_ANNOTATION)
            .unwrap()
            .len(),
        16
    );
    let se = only_entry(&t);
    assert_eq!(se.hosts, ["orders.legacy"]);
    assert_eq!(se.location, Location::MeshInternal);
    assert_eq!(se.resolution, Resolution::Static);
    assert_eq!(ports_of(se), [(8080, "http-8080", "HTTP")]);
    let addresses: Vec<_> = se.endpoints.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(addresses, ["10.1.0.1", "10.1.0.2"]);
    assert_eq!(se.endpoints[0].ports.get("http-8080").copied(), Some(8080));
    assert!(t.skipped.is_empty(), "{:?}", t.skipped);
}

#[test]
fn protocol_metadata_wins_over_the_port_name_for_a_single_port_instance() {
    let t = run(vec![svc(
        "a",
        vec![with_labels(
            inst("10.0.0.1", &[("http", 9000)]),
            &[("protocol", "grpc")],
        )],
    )]);
    assert_eq!(ports_of(only_entry(&t)), [(9000, "grpc-9000", "GRPC")]);
}

#[test]
fn port_name_prefix_follows_istio_naming_and_unknown_names_fall_back_to_tcp() {
    let t = run(vec![svc(
        "a",
        vec![inst(
            "10.0.0.1",
            &[
                ("http2-api", 81),
                ("web", 82),
                ("mongo", 27017),
                ("tls-x", 443),
                ("httpx", 83),
            ],
        )],
    )]);
    assert_eq!(
        ports_of(only_entry(&t)),
        [
            (81, "http2-81", "HTTP2"),
            (82, "tcp-82", "TCP"),
            (83, "tcp-83", "TCP"),
            (443, "tls-443", "TLS"),
            (27017, "mongo-27017", "MONGO")
        ]
    );
}

#[test]
fn protocol_metadata_is_ignored_when_an_instance_has_several_ports() {
    let t = run(vec![svc(
        "a",
        vec![with_labels(
            inst("10.0.0.1", &[("grpc", 9090), ("metrics", 9100)]),
            &[("protocol", "http")],
        )],
    )]);
    assert_eq!(
        ports_of(only_entry(&t)),
        [(9090, "grpc-9090", "GRPC"), (9100, "tcp-9100", "TCP")]
    );
}

#[test]
fn a_registry_hint_applies_when_neither_metadata_nor_name_say() {
    let t = run(vec![svc(
        "a",
        vec![hinted(inst("10.0.0.1", &[("secure", 8443)]), Protocol::Https)],
    )]);
    assert_eq!(ports_of(only_entry(&t)), [(8443, "https-8443", "HTTPS")]);
}

#[test]
fn metadata_that_names_a_secret_never_becomes_a_label() {
    let t = run(vec![svc(
        "a",
        vec![with_labels(
            inst("10.0.0.1", &[("dubbo", 20880)]),
            &[
                ("token", "3f9a-secret"),
                ("db.Password", "hunter2"),
                ("aws_access_key_id", "AKIAEXAMPLE"),
                ("client-secret", "s"),
                ("db_pwd", "pw1"),
                ("smtp-pass", "pw2"),
                ("jwt", "eyJhbGciOi"),
                ("bearer", "b1"),
                ("x-auth", "a1"),
                ("session_id", "s1"),
                ("orders-dsn", "d1"),
                ("database", "postgres://app:hunter3@db:5432/orders"),
                ("cache", "redis-user:hunter4@cache"),
                ("owner", "team@example.com"),
                ("version", "1.0.0"),
            ],
        )],
    )]);
    let endpoint = &only_entry(&t).endpoints[0];
    let keys: Vec<&str> = endpoint.labels.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["owner", "version"]);
    let dropped = |why: &str| t.notes.iter().filter(|n| n.reason.contains(why)).count();
    assert_eq!(dropped("names a secret"), 11);
    assert_eq!(dropped("carries credentials"), 2);
    let everything = format!("{:?}", t);
    for secret in ["hunter2", "hunter3", "hunter4", "pw1", "eyJhbGciOi"] {
        assert!(!everything.contains(secret), "{secret} published");
    }
}

#[test]
fn instances_that_disagree_on_a_protocol_get_tcp() {
    let t = run(vec![svc(
        "a",
        vec![
            with_labels(inst("10.0.0.1", &[("api", 8080)]), &[("protocol", "http")]),
            with_labels(inst("10.0.0.2", &[("api", 8080)]), &[("protocol", "grpc")]),
        ],
    )]);
    assert_eq!(ports_of(only_entry(&t)), [(8080, "tcp-8080", "TCP")]);
    assert!(t.notes.iter().any(|n| n.reason.contains("disagree")));
}

#[test]
fn an_instance_with_a_reserved_istio_port_is_skipped_with_registry_service_instance_and_reason() {
    let t = run(vec![svc(
        "orders",
        vec![
            inst("10.0.0.1", &[("http", 8080)]),
            inst("10.0.0.2", &[("admin", 15000)]),
        ],
    )]);
    let se = only_entry(&t);
    assert_eq!(se.endpoints.len(), 1);
    assert_eq!(t.skipped.len(), 1);
    let skip = &t.skipped[0];
    assert_eq!(
        (skip.registry.as_str(), skip.service.as_str()),
        ("legacy", "orders")
    );
    assert_eq!(skip.instance.as_deref(), Some("10.0.0.2:15000"));
    assert_eq!(skip.kind, registry_sync_catalog::SkipKind::ReservedPort);
    assert!(
        skip.reason.contains("15000") && skip.reason.contains("reserved"),
        "{}",
        skip.reason
    );
    assert!(se.ports.iter().all(|p| p.number != 15000));
}

#[test]
fn unhealthy_and_zero_weight_instances_are_not_endpoints() {
    let mut zero = inst("10.0.0.3", &[("http", 80)]);
    zero.weight = Some(0);
    let t = run(vec![svc(
        "a",
        vec![
            inst("10.0.0.1", &[("http", 80)]),
            unhealthy(inst("10.0.0.2", &[("http", 80)])),
            zero,
        ],
    )]);
    let se = only_entry(&t);
    assert_eq!(
        se.endpoints
            .iter()
            .map(|e| e.address.as_str())
            .collect::<Vec<_>>(),
        ["10.0.0.1"]
    );
}

#[test]
fn a_service_without_healthy_instances_keeps_its_entry_and_ports_without_endpoints() {
    let t = run(vec![svc("a", vec![unhealthy(inst("10.0.0.1", &[("http", 80)]))])]);
    let se = only_entry(&t);
    assert!(se.endpoints.is_empty());
    assert!(se.workload_selector.is_none());
    assert_eq!(ports_of(se), [(80, "http-80", "HTTP")]);
    assert_eq!(se.resolution, Resolution::Static);
}

#[test]
fn differing_port_numbers_share_one_service_port_and_each_endpoint_maps_its_own() {
    let t = run(vec![svc(
        "a",
        vec![
            inst("10.0.0.1", &[("http", 8081)]),
            inst("10.0.0.2", &[("http", 8080)]),
            inst("10.0.0.3", &[("http", 8081)]),
        ],
    )]);
    let se = only_entry(&t);
    assert_eq!(
        ports_of(se),
        [(8081, "http-8081", "HTTP")],
        "the most common number is the service port"
    );
    let mapped: Vec<_> = se
        .endpoints
        .iter()
        .map(|e| {
            (
                e.address.as_str(),
                e.ports.get("http-8081").copied().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        mapped,
        [("10.0.0.1", 8081), ("10.0.0.2", 8080), ("10.0.0.3", 8081)]
    );
}

#[test]
fn a_port_some_serving_instances_lack_is_not_published() {
    let t = run(vec![svc(
        "a",
        vec![
            inst("10.0.0.1", &[("http", 8080), ("https", 8443)]),
            inst("10.0.0.2", &[("http", 8080)]),
        ],
    )]);
    let se = only_entry(&t);
    assert_eq!(ports_of(se), [(8080, "http-8080", "HTTP")]);
    assert!(se.endpoints.iter().all(|e| e.ports.len() == 1));
    assert!(
        t.skipped
            .iter()
            .any(|s| s.reason.contains("\"https\" not published")),
        "{:?}",
        t.skipped
    );
}

#[test]
fn two_logical_ports_with_one_number_publish_only_the_first() {
    let t = run(vec![
        svc(
            "a",
            vec![
                inst("10.0.0.1", &[("http", 8080)]),
                inst("10.0.0.2", &[("http", 8080)]),
            ],
        ),
        svc("b", vec![inst("10.0.0.3", &[("grpc", 8080), ("http", 8080)])]),
    ]);
    let b = service_entries(&t)
        .into_iter()
        .find(|se| se.hosts[0] == "b.legacy")
        .unwrap();
    assert_eq!(ports_of(b), [(8080, "grpc-8080", "GRPC")]);
    assert!(t.skipped.iter().any(|s| s.reason.contains("already used")));
}

#[test]
fn any_hostname_address_makes_resolution_dns() {
    let t = run(vec![svc(
        "a",
        vec![
            inst("10.0.0.1", &[("http", 80)]),
            inst("vm-1.example.com", &[("http", 80)]),
        ],
    )]);
    let se = only_entry(&t);
    assert_eq!(se.resolution, Resolution::Dns);
    assert!(se.endpoints.iter().any(|e| e.address == "vm-1.example.com"));
}

fn many(n: usize) -> Vec<registry_sync_catalog::Instance> {
    (0..n)
        .map(|i| inst(&format!("10.0.{}.{}", i / 250, i % 250 + 1), &[("http", 8080)]))
        .collect()
}

#[test]
fn auto_keeps_endpoints_inline_up_to_the_limit() {
    let t = run(vec![svc("a", many(AUTO_INLINE_LIMIT))]);
    assert_eq!(only_entry(&t).endpoints.len(), AUTO_INLINE_LIMIT);
    assert!(workload_entries(&t).is_empty());
}

#[test]
fn auto_switches_to_workload_entries_above_the_limit() {
    let t = run(vec![svc("a", many(AUTO_INLINE_LIMIT + 1))]);
    let se = only_entry(&t);
    assert!(se.endpoints.is_empty());
    let selector = &se.workload_selector.as_ref().unwrap().labels;
    assert_eq!(selector[SERVICE_LABEL], "legacy.a");
    let wes = workload_entries(&t);
    assert_eq!(wes.len(), AUTO_INLINE_LIMIT + 1);
    for (object, spec) in wes {
        assert_eq!(object.metadata.namespace, "mesh");
        assert_eq!(
            spec.labels.get(SERVICE_LABEL).map(String::as_str),
            Some("legacy.a"),
            "selected by the entry"
        );
        assert_eq!(
            object.metadata.labels.get(MANAGED_BY_LABEL).unwrap(),
            "registry-sync"
        );
        assert_eq!(spec.ports.get("http-8080").copied(), Some(8080));
    }
}

#[test]
fn inline_mode_beyond_what_the_api_server_accepts_falls_back_to_workload_entries() {
    let catalog = catalog(vec![("legacy", vec![svc("a", many(4097))])]);
    let t = translate(&catalog, &settings_for(&[("legacy", EndpointMode::Inline)]));
    assert!(only_entry(&t).endpoints.is_empty());
    assert_eq!(workload_entries(&t).len(), 4097);
    assert!(t.skipped.iter().any(|s| s.reason.contains("do not fit inline")));
}

#[test]
fn workload_entry_mode_makes_one_entry_per_serving_instance() {
    let catalog = catalog(vec![(
        "legacy",
        vec![svc(
            "a",
            vec![
                inst("10.0.0.1", &[("http", 80)]),
                unhealthy(inst("10.0.0.2", &[("http", 80)])),
            ],
        )],
    )]);
    let t = translate(
        &catalog,
        &settings_for(&[("legacy", EndpointMode::WorkloadEntry)]),
    );
    let wes = workload_entries(&t);
    assert_eq!(wes.len(), 1);
    assert_eq!(wes[0].1.address, "10.0.0.1");
    assert!(
        wes[0].0.metadata.name.starts_with("legacy.a.10-0-0-1-80-"),
        "{}",
        wes[0].0.metadata.name
    );
}

#[test]
fn services_with_one_host_in_two_registries_merge_into_one_entry() {
    let catalog = catalog(vec![
        (
            "consul",
            vec![svc(
                "orders",
                vec![
                    inst("10.0.0.1", &[("http", 80)]),
                    inst("10.0.0.2", &[("http", 80)]),
                ],
            )],
        ),
        (
            "legacy",
            vec![svc(
                "orders",
                vec![
                    inst("10.0.0.2", &[("http", 80)]),
                    inst("10.0.0.3", &[("http", 80)]),
                ],
            )],
        ),
    ]);
    let mut settings = settings_for(&[("consul", EndpointMode::Auto), ("legacy", EndpointMode::Auto)]);
    settings.registries.get_mut("consul").unwrap().hosts =
        registry_sync_translate::HostTemplate::parse("{service}.legacy").unwrap();
    let t = translate(&catalog, &settings);
    let se = only_entry(&t);
    let addresses: Vec<_> = se.endpoints.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(
        addresses,
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
        "the shared instance appears once"
    );
    assert_eq!(
        t.objects[0].metadata.name, "consul.orders",
        "named after the first registry"
    );
    assert_eq!(
        t.objects[0]
            .metadata
            .annotations
            .get("registry-sync.io/sources")
            .unwrap(),
        "consul:orders,legacy:orders"
    );
}

#[test]
fn merged_registries_that_name_one_port_differently_publish_it_once_for_every_endpoint() {
    let catalog = catalog(vec![
        (
            "consul",
            vec![svc("orders", vec![inst("10.0.0.1", &[("default", 8080)])])],
        ),
        (
            "legacy",
            vec![svc("orders", vec![inst("10.0.0.2", &[("http", 8080)])])],
        ),
    ]);
    let mut settings = settings_for(&[("consul", EndpointMode::Auto), ("legacy", EndpointMode::Auto)]);
    settings.registries.get_mut("consul").unwrap().hosts =
        registry_sync_translate::HostTemplate::parse("{service}.legacy").unwrap();
    let t = translate(&catalog, &settings);
    let se = only_entry(&t);
    assert_eq!(ports_of(se), [(8080, "http-8080", "HTTP")], "{:?}", t.skipped);
    assert_eq!(se.endpoints.len(), 2);
    for endpoint in &se.endpoints {
        assert_eq!(
            endpoint.ports.get("http-8080").copied(),
            Some(8080),
            "{endpoint:?}"
        );
    }
    assert!(t.skipped.is_empty(), "{:?}", t.skipped);
}

#[test]
fn merged_registries_with_different_port_numbers_keep_them_apart() {
    let catalog = catalog(vec![
        (
            "consul",
            vec![svc("orders", vec![inst("10.0.0.1", &[("default", 8080)])])],
        ),
        (
            "legacy",
            vec![svc("orders", vec![inst("10.0.0.2", &[("http", 9090)])])],
        ),
    ]);
    let mut settings = settings_for(&[("consul", EndpointMode::Auto), ("legacy", EndpointMode::Auto)]);
    settings.registries.get_mut("consul").unwrap().hosts =
        registry_sync_translate::HostTemplate::parse("{service}.legacy").unwrap();
    let t = translate(&catalog, &settings);
    // Neither port is served by every instance: publishing one would misroute.
    assert!(ports_of(only_entry(&t)).is_empty());
    assert_eq!(t.skipped.len(), 2, "{:?}", t.skipped);
}

#[test]
fn a_service_whose_host_cannot_be_made_valid_is_skipped_and_others_sync() {
    let long = "x".repeat(64);
    let t = run(vec![
        svc(&long, vec![inst("10.0.0.1", &[("http", 80)])]),
        svc("ok", vec![inst("10.0.0.1", &[("http", 80)])]),
    ]);
    assert_eq!(only_entry(&t).hosts, ["ok.legacy"]);
    assert_eq!(t.skipped.len(), 1);
    assert_eq!(t.skipped[0].service, long);
    assert!(
        t.skipped[0].reason.contains("longer than 63"),
        "{}",
        t.skipped[0].reason
    );
}

#[test]
fn instance_metadata_becomes_sanitised_endpoint_labels() {
    let t = run(vec![svc(
        "a",
        vec![with_labels(
            inst("10.0.0.1", &[("http", 80)]),
            &[
                ("version", "v1"),
                ("build info", "2024 05"),
                ("huge", &"x".repeat(100)),
                ("registry-sync.io/service", "spoof"),
            ],
        )],
    )]);
    let labels = &only_entry(&t).endpoints[0].labels;
    assert_eq!(labels.get("version").map(String::as_str), Some("v1"));
    assert_eq!(labels.get("build_info").map(String::as_str), Some("2024_05"));
    assert!(!labels.contains_key("huge") && !labels.contains_key(SERVICE_LABEL));
    assert_eq!(t.notes.len(), 2, "{:?}", t.notes);
}

#[test]
fn only_sidecar_registries_mark_endpoints_for_mtls() {
    let catalog = catalog(vec![(
        "legacy",
        vec![svc("a", vec![inst("10.0.0.1", &[("http", 80)])])],
    )]);
    let mut settings = settings();
    assert!(
        !only_entry(&translate(&catalog, &settings)).endpoints[0]
            .labels
            .contains_key(TLS_MODE_LABEL)
    );
    settings.registries.get_mut("legacy").unwrap().sidecar = true;
    let t = translate(&catalog, &settings);
    assert_eq!(
        only_entry(&t).endpoints[0]
            .labels
            .get(TLS_MODE_LABEL)
            .map(String::as_str),
        Some("istio")
    );
}

#[test]
fn weight_locality_network_and_service_account_are_carried() {
    let mut i = inst("10.0.0.1", &[("http", 80)]);
    i.weight = Some(3);
    i.placement = Placement::boxed(
        Some("eu-west-1/eu-west-1a".into()),
        Some("net-1".into()),
        Some("orders".into()),
    );
    let mut bad = inst("10.0.0.2", &[("http", 80)]);
    bad.placement = Placement::boxed(Some("a/b/c/d".into()), None, Some("Not Valid".into()));
    let t = run(vec![svc("a", vec![i, bad])]);
    let e = &only_entry(&t).endpoints;
    assert_eq!(e[0].weight, Some(3));
    assert_eq!(e[0].locality.as_deref(), Some("eu-west-1/eu-west-1a"));
    assert_eq!(e[0].network.as_deref(), Some("net-1"));
    assert_eq!(e[0].service_account.as_deref(), Some("orders"));
    assert_eq!(
        (e[1].locality.as_deref(), e[1].service_account.as_deref()),
        (None, None),
        "invalid values dropped, endpoint kept"
    );
}

#[test]
fn location_comes_from_the_registry_settings() {
    let catalog = catalog(vec![(
        "legacy",
        vec![svc("a", vec![inst("10.0.0.1", &[("http", 80)])])],
    )]);
    let mut settings = settings();
    settings.registries.get_mut("legacy").unwrap().location = Location::MeshExternal;
    assert_eq!(
        only_entry(&translate(&catalog, &settings)).location,
        Location::MeshExternal
    );
}

#[test]
fn registries_without_settings_are_ignored() {
    let catalog = catalog(vec![(
        "other",
        vec![svc("a", vec![inst("10.0.0.1", &[("http", 80)])])],
    )]);
    assert!(translate(&catalog, &settings()).objects.is_empty());
}

#[test]
fn input_order_does_not_change_the_output() {
    let a = vec![
        svc(
            "b",
            vec![
                inst("10.0.0.2", &[("http", 80)]),
                inst("10.0.0.1", &[("http", 80)]),
            ],
        ),
        svc("a", many(3)),
    ];
    let mut b = a.clone();
    b.reverse();
    for s in &mut b {
        s.instances.reverse();
    }
    let (ta, tb) = (run(a), run(b));
    assert_eq!(ta, tb);
    assert_eq!(
        registry_sync_istio::render_documents(&ta.objects).unwrap(),
        registry_sync_istio::render_documents(&tb.objects).unwrap()
    );
}

#[test]
fn a_registrys_export_to_is_the_service_entrys_and_a_merged_host_takes_its_first_registrys() {
    let mut settings = settings_for(&[("a-legacy", EndpointMode::Auto), ("b-legacy", EndpointMode::Auto)]);
    settings.registries.get_mut("a-legacy").unwrap().export_to = vec![".".into(), "istio-system".into()];
    settings.registries.get_mut("b-legacy").unwrap().export_to = vec!["*".into()];
    let orders = || svc("orders", vec![inst("10.0.0.1", &[("http", 8080)])]);
    let merged = translate(
        &catalog(vec![("a-legacy", vec![orders()]), ("b-legacy", vec![orders()])]),
        &settings,
    );
    assert_eq!(only_entry(&merged).export_to, [".", "istio-system"]);

    let alone = translate(&catalog(vec![("b-legacy", vec![orders()])]), &settings);
    assert_eq!(only_entry(&alone).export_to, ["*"]);
    let unset = run(vec![orders()]);
    assert!(
        only_entry(&unset).export_to.is_empty(),
        "the mesh's default applies"
    );
}

#[test]
fn a_registrys_extra_labels_are_on_its_service_entries_and_win_over_registry_metadata() {
    let mut settings = settings();
    settings.registries.get_mut("legacy").unwrap().extra_labels =
        [("istio.io/use-waypoint".to_string(), "shared".to_string())].into();
    let mut orders = svc("orders", vec![inst("10.0.0.1", &[("http", 8080)])]);
    orders
        .labels
        .insert("istio.io/use-waypoint".into(), "from-the-registry".into());
    let t = translate(&catalog(vec![("legacy", vec![orders])]), &settings);
    let se = t
        .objects
        .iter()
        .find(|o| matches!(o.spec, registry_sync_istio::Spec::ServiceEntry(_)))
        .unwrap();
    assert_eq!(
        se.metadata
            .labels
            .get("istio.io/use-waypoint")
            .map(String::as_str),
        Some("shared")
    );
}
