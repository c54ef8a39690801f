//! Registries as the index keeps them: a service that could not be read, and
//! registries added, edited and removed while running.

use std::time::Duration;

use registry_sync_catalog::{RegistrySnapshot, ServiceKey};
use registry_sync_index::{Index, Since};
use registry_sync_translate::EndpointMode;
use registry_sync_translate::testing::*;

use crate::Feed;

#[test]
fn a_service_its_registry_could_not_read_keeps_its_objects_in_the_index() {
    let settings = settings_for(&[("legacy", EndpointMode::Auto)]);
    let mut index = Index::new(settings);
    let both = vec![
        svc("orders", vec![inst("10.0.0.1", &[("http", 80)])]),
        svc("payments", vec![inst("10.0.0.2", &[("http", 80)])]),
    ];
    index.update("legacy", &RegistrySnapshot::new("legacy", both, vec![]));
    assert_eq!(index.desired().len(), 2);

    // payments could not be read: absent from the view, but marked unknown.
    let partial = RegistrySnapshot::new(
        "legacy",
        vec![svc("orders", vec![inst("10.0.0.1", &[("http", 80)])])],
        vec![],
    )
    .with_unknown([ServiceKey {
        namespace: None,
        name: "payments".into(),
    }]);
    let changes = index.update("legacy", &partial);
    assert!(changes.changed.is_empty(), "{changes:?}");
    assert_eq!(index.desired().len(), 2, "payments is kept as last known");

    // Read again and gone for real: now it leaves.
    let gone = RegistrySnapshot::new(
        "legacy",
        vec![svc("orders", vec![inst("10.0.0.1", &[("http", 80)])])],
        vec![],
    );
    index.update("legacy", &gone);
    assert_eq!(index.desired().len(), 1);
}

fn view(services: Vec<registry_sync_catalog::Service>, registry: &str) -> RegistrySnapshot {
    RegistrySnapshot::new(registry, services, vec![])
}

fn names(index: &Index) -> Vec<String> {
    index
        .desired()
        .values()
        .map(|o| o.metadata.name.clone())
        .collect()
}

fn orders(address: &str) -> registry_sync_catalog::Service {
    svc("orders", vec![inst(address, &[("http", 80)])])
}

#[test]
fn a_registry_added_while_running_syncs_without_touching_the_others() {
    let settings = settings_for(&[("one", EndpointMode::Inline)]);
    let two = settings.registries["one"].clone();
    let mut index = Index::new(settings);
    index.update("one", &view(vec![orders("10.0.0.1")], "one"));
    let before = index.version();
    let added = index.configure("two", two, Duration::ZERO);
    assert!(added.changed.is_empty(), "nothing to write before its first view");
    assert!(!index.all_complete(), "the new registry has not answered yet");
    assert!(!index.scope().complete.contains("two"), "it protects nothing yet");
    let billing = svc("billing", vec![inst("10.0.0.2", &[("http", 80)])]);
    let update = index.update("two", &view(vec![billing], "two"));
    assert!(index.all_complete());
    let changed: Vec<String> = update.changed.iter().map(|k| k.name.clone()).collect();
    assert_eq!(changed, ["two.billing"], "only the new registry's object");
    assert_eq!(
        index.changed_since(before),
        Since::Keys(update.changed.into_iter().collect())
    );
    assert_eq!(names(&index), ["one.orders", "two.billing"]);
}

#[test]
fn a_registry_removed_while_running_takes_its_objects_and_lets_plans_delete_its_leftovers() {
    let mut index = Index::new(settings_for(&[
        ("one", EndpointMode::Inline),
        ("two", EndpointMode::Inline),
    ]));
    index.update("one", &view(vec![orders("10.0.0.1")], "one"));
    let billing = svc("billing", vec![inst("10.0.0.2", &[("http", 80)])]);
    // `two` serves orders too: the two registries share its entry.
    index.update("two", &view(vec![billing, orders("10.0.0.3")], "two"));
    assert_eq!(index.desired().values().next().unwrap().endpoint_count(), 1 + 1);
    let epoch = index.epoch();

    let removed = index.remove("two", Duration::ZERO);
    let changed: Vec<String> = removed.changed.iter().map(|k| k.name.clone()).collect();
    assert_eq!(
        changed,
        ["one.orders", "two.billing"],
        "its own deleted, the shared one rewritten"
    );
    assert_eq!(names(&index), ["one.orders"]);
    assert_eq!(index.desired().values().next().unwrap().endpoint_count(), 1);
    assert!(
        removed.widened && index.epoch() > epoch,
        "writers plan everything once"
    );
    let scope = index.scope();
    assert!(
        scope.complete.contains("two") && scope.configured.contains("two"),
        "what of it a sink holds may be deleted: {scope:?}"
    );
    assert!(index.all_complete(), "a removed registry is waited for no more");
    assert!(
        index.remove("two", Duration::ZERO).changed.is_empty(),
        "removing it again does nothing"
    );
    // Events still queued from its source change nothing.
    let late = index.update("two", &view(vec![orders("10.0.0.9")], "two"));
    assert!(late.changed.is_empty());
    assert_eq!(names(&index), ["one.orders"]);
}

#[test]
fn an_edited_registry_moves_its_services_under_the_new_settings() {
    let settings = settings_for(&[("one", EndpointMode::Inline)]);
    let mut edited = settings.registries["one"].clone();
    let mut index = Index::new(settings);
    index.update("one", &view(vec![orders("10.0.0.1")], "one"));
    edited.endpoints = EndpointMode::WorkloadEntry;
    let update = index.configure("one", edited, Duration::ZERO);
    assert!(!update.changed.is_empty());
    let kinds: Vec<String> = index.desired().keys().map(|k| format!("{:?}", k.kind)).collect();
    assert_eq!(
        kinds,
        ["ServiceEntry", "WorkloadEntry"],
        "its instances now as WorkloadEntries"
    );
    assert!(index.all_complete(), "an edit keeps what the registry said");
}
