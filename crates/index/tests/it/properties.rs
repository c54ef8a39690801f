//! The incremental index against the pure translation: whatever registries send, in
//! whatever order, the index holds exactly what translating everything would make.

use std::collections::BTreeSet;

use proptest::prelude::*;
use registry_sync_catalog::Service;
use registry_sync_translate::testing::*;
use registry_sync_translate::{EndpointMode, translate};

use crate::Feed;

fn arb_familiar_service() -> impl Strategy<Value = Service> {
    (
        prop_oneof![
            Just("orders"),
            Just("billing"),
            Just("Orders"),
            Just("x".repeat(70).leak() as &str)
        ],
        proptest::option::of(prop_oneof![Just("shop"), Just("ops")]),
        proptest::collection::vec(
            (1u8..=254, 1u16..=3)
                .prop_map(|(host, port)| inst(&format!("10.0.1.{host}"), &[("http", 8000 + port)])),
            0..4,
        ),
    )
        .prop_map(|(name, namespace, instances)| Service {
            name: name.to_string(),
            namespace: namespace.map(str::to_string),
            labels: Default::default(),
            instances,
        })
}

fn arb_registry_updates() -> impl Strategy<Value = Vec<(bool, Vec<Service>)>> {
    proptest::collection::vec(
        (
            any::<bool>(),
            proptest::collection::vec(arb_familiar_service(), 0..5),
        ),
        1..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn the_incremental_index_always_equals_a_full_translation(updates in arb_registry_updates()) {
        use registry_sync_catalog::{Catalog, RegistrySnapshot};
        use registry_sync_index::Index;

        let settings = settings_for(&[("one", EndpointMode::Auto), ("two", EndpointMode::WorkloadEntry)]);
        let mut catalog = Catalog::default();
        let mut index = Index::new(settings.clone());
        let mut previous = index.desired().clone();
        for (first, services) in updates {
            let registry = if first { "one" } else { "two" };
            let snapshot = RegistrySnapshot::new(registry, services, vec![]);
            catalog.update(registry, snapshot.clone());
            let changes = index.update(registry, &snapshot);
            let full = translate(&catalog, &settings);
            let incremental: Vec<_> = index.desired().values().map(|o| (**o).clone()).collect();
            prop_assert_eq!(&incremental, &full.objects);
            // The reported changes are exactly the keys whose object differs.
            let mut differing = BTreeSet::new();
            for key in previous.keys().chain(index.desired().keys()) {
                if previous.get(key) != index.desired().get(key) {
                    differing.insert(key.clone());
                }
            }
            prop_assert_eq!(&changes.changed, &differing);
            let mut problems: Vec<_> = index.problems().cloned().collect();
            problems.sort();
            let mut expected = full.skipped.clone();
            expected.sort();
            prop_assert_eq!(problems, expected);
            previous = index.desired().clone();
        }
    }

    #[test]
    fn an_index_fed_deltas_equals_one_fed_whole_snapshots(updates in arb_registry_updates()) {
        use std::collections::BTreeMap;

        use registry_sync_catalog::{RegistryDelta, RegistrySnapshot};
        use registry_sync_index::Index;

        let settings = settings_for(&[("one", EndpointMode::Auto), ("two", EndpointMode::WorkloadEntry)]);
        let mut whole = Index::new(settings.clone());
        let mut fed_deltas = Index::new(settings);
        let mut last: BTreeMap<&str, RegistrySnapshot> = BTreeMap::new();
        for (first, services) in updates {
            let registry = if first { "one" } else { "two" };
            let snapshot = RegistrySnapshot::new(registry, services, vec![]);
            let before = last.remove(registry).unwrap_or_default();
            let delta = RegistryDelta {
                upserts: snapshot
                    .services()
                    .iter()
                    .filter(|s| !before.services().contains(s))
                    .cloned()
                    .collect(),
                removed: before
                    .services()
                    .iter()
                    .map(|s| s.key())
                    .filter(|k| !snapshot.services().iter().any(|s| s.key() == *k))
                    .collect(),
                unknown: vec![],
                skipped: None,
            };
            let expected = whole.update(registry, &snapshot);
            let changes = fed_deltas.apply_delta(registry, &delta);
            prop_assert_eq!(whole.desired(), fed_deltas.desired());
            prop_assert_eq!(&changes.changed, &expected.changed);
            last.insert(registry, snapshot);
        }
    }
}
