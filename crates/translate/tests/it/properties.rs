//! Invariants that must hold for any catalog: whatever registries send, the objects are
//! ones the API server and Istio accept.

use std::collections::BTreeSet;

use proptest::prelude::*;
use registry_sync_catalog::{Address, Instance, InstancePort, Service};
use registry_sync_istio::{Kind, Spec};
use registry_sync_translate::names::{is_dns1123_subdomain, is_label_key, is_label_value};
use registry_sync_translate::testing::*;
use registry_sync_translate::{EndpointMode, RESERVED_PORTS, translate};

fn arb_instance() -> impl Strategy<Value = Instance> {
    (
        prop_oneof![
            (1u8..=254, 1u8..=254).prop_map(|(a, b)| format!("10.0.{a}.{b}")),
            "[a-z]{1,8}\\.example".prop_map(|s| s),
        ],
        proptest::collection::btree_map(
            prop_oneof![
                Just("http".to_string()),
                Just("grpc".to_string()),
                Just("web".to_string()),
                "[a-z]{1,4}"
            ],
            prop_oneof![1u16..=65535, Just(15001u16), Just(8080u16)],
            0..3,
        ),
        any::<bool>(),
        proptest::option::of(0u32..5),
        proptest::collection::btree_map(".{0,12}", ".{0,70}", 0..4),
    )
        .prop_map(|(address, ports, healthy, weight, labels)| Instance {
            id: address.clone(),
            address: Address::parse(&address).unwrap(),
            ports: ports
                .into_iter()
                .map(|(name, number)| InstancePort {
                    name,
                    number,
                    protocol_hint: None,
                })
                .collect(),
            healthy,
            weight,
            placement: None,
            labels: labels.into_iter().collect(),
        })
}

fn arb_service() -> impl Strategy<Value = Service> {
    (
        ".{1,20}",
        proptest::option::of("[a-zA-Z]{1,6}"),
        proptest::collection::vec(arb_instance(), 0..6),
    )
        .prop_map(|(name, namespace, instances)| Service {
            name,
            namespace,
            labels: Default::default(),
            instances,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_translation_is_acceptable_to_the_api_server_and_istio(
        a in proptest::collection::vec(arb_service(), 0..6),
        b in proptest::collection::vec(arb_service(), 0..6),
        we in any::<bool>(),
    ) {
        let mode = if we { EndpointMode::WorkloadEntry } else { EndpointMode::Auto };
        let catalog = catalog(vec![("one", a), ("two", b)]);
        let t = translate(&catalog, &settings_for(&[("one", mode), ("two", EndpointMode::Auto)]));

        let mut keys = BTreeSet::new();
        let mut hosts = BTreeSet::new();
        for object in &t.objects {
            prop_assert!(is_dns1123_subdomain(&object.metadata.name), "name {:?}", object.metadata.name);
            prop_assert!(keys.insert(object.key()), "duplicate {}", object.key());
            for (k, v) in &object.metadata.labels {
                prop_assert!(is_label_key(k) && is_label_value(v), "label {:?}={:?}", k, v);
            }
            let endpoints = match &object.spec {
                Spec::ServiceEntry(se) => {
                    prop_assert_eq!(object.kind, Kind::ServiceEntry);
                    prop_assert!(hosts.insert((object.metadata.namespace.clone(), se.hosts[0].clone())));
                    let numbers: BTreeSet<u32> = se.ports.iter().map(|p| p.number).collect();
                    prop_assert_eq!(numbers.len(), se.ports.len(), "port numbers unique");
                    for p in &se.ports {
                        prop_assert!(!RESERVED_PORTS.contains(&(p.number as u16)));
                        prop_assert!(p.number >= 1 && p.number <= 65535);
                    }
                    prop_assert!(se.endpoints.len() <= 4096);
                    prop_assert!(se.endpoints.is_empty() || se.workload_selector.is_none());
                    for e in &se.endpoints {
                        let names: BTreeSet<&String> = e.ports.keys().collect();
                        let expected: BTreeSet<&String> = se.ports.iter().map(|p| &p.name).collect();
                        prop_assert_eq!(names, expected, "every endpoint maps every port");
                    }
                    se.endpoints.clone()
                }
                Spec::WorkloadEntry(we) => vec![we.clone()],
            };
            for e in endpoints {
                prop_assert!(e.labels.len() <= 256);
                for (k, v) in e.labels.iter() {
                    prop_assert!(is_label_key(k) && is_label_value(v), "endpoint label {:?}={:?}", k, v);
                }
                prop_assert_ne!(e.weight, Some(0));
            }
        }
        prop_assert_eq!(&t, &translate(&catalog, &settings_for(&[("one", mode), ("two", EndpointMode::Auto)])));
    }
}
