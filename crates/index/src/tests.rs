use std::sync::Arc;
use std::time::Duration;

use registry_sync_catalog::Service;
use registry_sync_translate::{EndpointMode, HostTemplate, RegistrySettings};

use super::*;

fn settings(registries: &[&str]) -> Settings {
    Settings {
        instance: "default".into(),
        registries: registries
            .iter()
            .map(|name| {
                let settings = RegistrySettings {
                    endpoints: EndpointMode::Inline,
                    ..RegistrySettings::new(HostTemplate::parse("{service}.legacy").unwrap(), "mesh")
                };
                (name.to_string(), settings)
            })
            .collect(),
        overrides: Vec::new(),
    }
}

fn index(registries: &[&str]) -> Index {
    Index::new(settings(registries))
}

fn view(index: &mut Index, registry: &str, snapshot: &RegistrySnapshot) -> Update {
    index.apply(registry, Event::View(snapshot), Duration::ZERO)
}

fn changed(index: &mut Index, registry: &str, delta: &RegistryDelta) -> Update {
    index.apply(registry, Event::Changed(delta), Duration::ZERO)
}

fn service(name: &str, ips: &[&str]) -> Service {
    registry_sync_catalog::testing::service_at(name, ips)
}

fn names(since: Since) -> Vec<String> {
    match since {
        Since::Keys(keys) => keys.into_iter().map(|k| k.name).collect(),
        Since::Everything => vec!["*".into()],
    }
}

#[test]
fn a_delta_records_only_the_objects_it_changed() {
    let mut index = index(&["legacy"]);
    let services = (0..100)
        .map(|i| service(&format!("svc-{i}"), &["10.0.0.1"]))
        .collect();
    let update = view(
        &mut index,
        "legacy",
        &RegistrySnapshot::new("legacy", services, vec![]),
    );
    assert_eq!(
        (update.changed.len(), update.services, update.instances),
        (100, 100, 100)
    );
    let after_snapshot = index.version();
    let update = changed(
        &mut index,
        "legacy",
        &RegistryDelta {
            upserts: vec![Arc::new(service("svc-7", &["10.0.0.1", "10.0.0.2"]))],
            removed: vec![ServiceKey {
                namespace: None,
                name: "svc-8".into(),
            }],
            ..Default::default()
        },
    );
    assert_eq!(
        (update.changed.len(), update.services, update.instances),
        (2, 99, 100)
    );
    assert!(!update.widened, "the registry was complete already");
    assert_eq!(
        names(index.changed_since(after_snapshot)),
        ["legacy.svc-7", "legacy.svc-8"]
    );
    assert_eq!(index.desired().len(), 99);
}

#[test]
fn an_unchanged_service_in_a_delta_records_nothing() {
    let mut index = index(&["legacy"]);
    view(
        &mut index,
        "legacy",
        &RegistrySnapshot::new("legacy", vec![service("a", &["10.0.0.1"])], vec![]),
    );
    let version = index.version();
    let update = changed(
        &mut index,
        "legacy",
        &RegistryDelta {
            upserts: vec![Arc::new(service("a", &["10.0.0.1"]))],
            ..Default::default()
        },
    );
    assert!(update.changed.is_empty());
    assert_eq!(index.version(), version);
}

#[test]
fn readiness_waits_for_every_registry_and_a_failure_keeps_the_state() {
    let mut index = index(&["one", "two"]);
    view(
        &mut index,
        "one",
        &RegistrySnapshot::new("one", vec![service("a", &["10.0.0.1"])], vec![]),
    );
    assert_eq!(index.ready_version(), None, "two has not answered");
    index.apply("two", Event::Failed, Duration::ZERO);
    assert!(!index.all_complete());
    let update = view(
        &mut index,
        "two",
        &RegistrySnapshot::new("two", vec![service("b", &["10.0.0.2"])], vec![]),
    );
    assert!(update.widened, "two completing lets its leftovers go");
    assert_eq!(index.ready_version(), Some(index.version()));
    let epoch = index.epoch();
    index.apply("one", Event::Failed, Duration::ZERO);
    assert_eq!(index.desired().len(), 2, "a failing registry keeps its objects");
    assert!(!index.scope().complete.contains("one"));
    assert!(index.scope().delivered.contains("one"));
    view(
        &mut index,
        "one",
        &RegistrySnapshot::new("one", vec![service("a", &["10.0.0.1"])], vec![]),
    );
    assert_eq!(
        index.epoch(),
        epoch + 1,
        "complete again: writers plan everything"
    );
}

#[test]
fn a_service_readable_again_widens_the_scope() {
    let mut index = index(&["legacy"]);
    let unknown = ServiceKey {
        namespace: None,
        name: "b".into(),
    };
    let snapshot = RegistrySnapshot::new("legacy", vec![service("a", &["10.0.0.1"])], vec![])
        .with_unknown([unknown.clone()]);
    view(&mut index, "legacy", &snapshot);
    assert!(index.scope().unknown.contains("legacy:b"));
    let epoch = index.epoch();
    let update = changed(&mut index, "legacy", &RegistryDelta::default());
    assert!(update.widened);
    assert_eq!(index.epoch(), epoch + 1);
    assert!(index.scope().unknown.is_empty());
}

#[test]
fn a_refused_item_is_reported_once() {
    let mut index = index(&["legacy"]);
    let refused = Skipped {
        registry: "legacy".into(),
        service: "a".into(),
        instance: Some("x".into()),
        kind: registry_sync_catalog::SkipKind::InvalidPort,
        reason: "port 0".into(),
    };
    let snapshot = RegistrySnapshot::new("legacy", vec![service("a", &["10.0.0.1"])], vec![refused.clone()]);
    assert_eq!(
        view(&mut index, "legacy", &snapshot).new_problems,
        std::slice::from_ref(&refused)
    );
    let again = RegistryDelta {
        skipped: Some(vec![refused]),
        upserts: vec![Arc::new(service("a", &["10.0.0.9"]))],
        ..Default::default()
    };
    assert!(changed(&mut index, "legacy", &again).new_problems.is_empty());
}

#[test]
fn compaction_keeps_only_what_a_writer_may_still_ask_about() {
    let mut index = index(&["legacy"]);
    for round in 0..10 {
        let services = (0..10)
            .map(|i| service(&format!("r{round}-{i}"), &["10.0.0.1"]))
            .collect();
        view(
            &mut index,
            "legacy",
            &RegistrySnapshot::new("legacy", services, vec![]),
        );
        index.compact(index.version());
    }
    assert_eq!(index.desired().len(), 10);
    assert_eq!(index.log_len(), 0, "every writer planned past every change");
}
