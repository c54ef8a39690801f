use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use registry_sync_istio::{
    Endpoint, HeldObject, INSTANCE_LABEL, IstioObject, LiteMap, Location, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    ObjectKey, ObjectMeta, REGISTRY_LABEL, Resolution, SOURCES_ANNOTATION, ServiceEntrySpec, Spec,
};

use super::*;
use crate::tests::applied;
use crate::{DeleteScope, MassChangeGuard, plan};

const US: &str = "prod-a";

fn ours() -> LiteMap<String, String> {
    [
        (MANAGED_BY_LABEL, MANAGED_BY_VALUE),
        (INSTANCE_LABEL, US),
        (REGISTRY_LABEL, "consul"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Our metadata for an object made from `consul:<service>`.
fn meta(namespace: &str, name: &str, service: &str) -> ObjectMeta {
    ObjectMeta {
        name: name.into(),
        namespace: namespace.into(),
        labels: ours(),
        annotations: [(SOURCES_ANNOTATION.to_string(), format!("consul:{service}"))]
            .into_iter()
            .collect(),
    }
}

/// A ServiceEntry of `consul:<service>` in `namespace` with `endpoints` endpoints.
fn entry(namespace: &str, name: &str, service: &str, endpoints: usize) -> IstioObject {
    IstioObject::new(
        meta(namespace, name, service),
        Spec::ServiceEntry(ServiceEntrySpec {
            addresses: Vec::new(),
            hosts: vec![format!("{service}.example")],
            location: Location::MeshInternal,
            resolution: Resolution::Static,
            ports: vec![],
            endpoints: (0..endpoints)
                .map(|n| Endpoint {
                    address: format!("10.0.0.{n}"),
                    ..Default::default()
                })
                .collect(),
            workload_selector: None,
            export_to: Vec::new(),
        }),
    )
}

fn workload(namespace: &str, name: &str, service: &str, address: &str) -> IstioObject {
    IstioObject::new(
        meta(namespace, name, service),
        Spec::WorkloadEntry(Endpoint {
            address: address.into(),
            ..Default::default()
        }),
    )
}

fn desired(objects: impl IntoIterator<Item = IstioObject>) -> Desired {
    objects
        .into_iter()
        .map(|o| (o.key(), std::sync::Arc::new(o)))
        .collect()
}

fn holding<'a>(objects: impl IntoIterator<Item = &'a IstioObject>) -> BTreeMap<ObjectKey, HeldObject> {
    objects
        .into_iter()
        .map(|o| (o.key(), HeldObject::written(o)))
        .collect()
}

fn scope() -> DeleteScope {
    let consul: std::collections::BTreeSet<String> = ["consul".to_string()].into();
    DeleteScope {
        complete: consul.clone(),
        delivered: consul.clone(),
        configured: consul,
        prune_orphans: false,
        unknown: Default::default(),
    }
}

/// The successors lookup as the index answers it: desired objects by source.
fn by_source(want: &Desired) -> impl Fn(&str) -> Vec<ObjectKey> + '_ {
    move |source: &str| {
        want.values()
            .filter(|o| o.sources().any(|s| s == source))
            .map(|o| o.key())
            .collect()
    }
}

fn planned(want: &Desired, held: &BTreeMap<ObjectKey, HeldObject>) -> Plan {
    let owner = Owner::new(US);
    let mut plan = plan(want, held, &owner, &scope());
    hold_replacements(&mut plan, want, held, &owner, &by_source(want));
    plan
}

fn moved(count: usize) -> (Vec<IstioObject>, Vec<IstioObject>) {
    let old = (0..count)
        .map(|i| entry("mesh", &format!("s{i}"), &format!("s{i}"), 2))
        .collect();
    let new = (0..count)
        .map(|i| entry("team-a", &format!("s{i}"), &format!("s{i}"), 2))
        .collect();
    (old, new)
}

#[test]
fn a_moved_object_is_deleted_only_in_the_pass_after_its_successor_lands() {
    let (old, new) = moved(1);
    let want = desired(new.clone());
    let held = holding(&old);
    let first = planned(&want, &held);
    assert_eq!(first.creates.len(), 1);
    assert!(first.deletes.is_empty(), "{first:?}");
    assert_eq!(first.replacements.len(), 1);
    assert_eq!(first.replacements[0].key, old[0].key());
    assert_eq!(first.replacements[0].successor, new[0].key());
    assert_eq!(first.replacements[0].state, Successor::Written);
    assert!(
        first.render_diff().contains(&format!("= waits {}", old[0].key())),
        "{}",
        first.render_diff()
    );
    let second = planned(&want, &applied(&held, &first));
    assert_eq!(second.deletes, [old[0].key()]);
    assert_eq!(second.replaced, [old[0].key()]);
    assert!(second.replacements.is_empty());
}

#[test]
fn a_successor_whose_name_a_users_object_holds_keeps_the_old_object() {
    let (old, new) = moved(1);
    let want = desired(new.clone());
    let mut held = holding(&old);
    let mut users = HeldObject::written(&new[0]);
    users.labels = LiteMap::new();
    held.insert(new[0].key(), users);
    let plan = planned(&want, &held);
    assert!(plan.deletes.is_empty() && plan.creates.is_empty(), "{plan:?}");
    assert_eq!(plan.conflicts.len(), 1);
    assert!(matches!(plan.replacements[0].state, Successor::Conflict(_)));
    assert_eq!(plan.blocked_replacements().count(), 1);
    assert!(
        plan.render_diff().contains("cannot be written"),
        "{}",
        plan.render_diff()
    );
}

#[test]
fn a_successor_left_out_of_the_plan_keeps_the_old_object() {
    let (old, new) = moved(1);
    let want = desired(new);
    let held = holding(&old);
    let mut plan = plan(&want, &held, &Owner::new(US), &scope());
    // The writer leaves a refused (quarantined) create out of the plan.
    plan.creates.clear();
    hold_replacements(&mut plan, &want, &held, &Owner::new(US), &by_source(&want));
    assert!(plan.deletes.is_empty(), "{plan:?}");
    assert_eq!(plan.replacements[0].state, Successor::Missing);
}

#[test]
fn an_object_whose_service_is_gone_is_deleted_at_once() {
    let old = [
        entry("mesh", "gone", "gone", 2),
        entry("mesh", "stays", "stays", 2),
    ];
    let want = desired([old[1].clone()]);
    let plan = planned(&want, &holding(&old));
    assert_eq!(plan.deletes, [old[0].key()]);
    assert!(plan.replacements.is_empty() && plan.replaced.is_empty());
}

#[test]
fn an_entry_handing_its_endpoints_to_workload_entries_empties_only_once_they_are_written() {
    let inline = entry("mesh", "orders", "orders", 3);
    let selecting = entry("mesh", "orders", "orders", 0);
    let workloads: Vec<IstioObject> = (0..3)
        .map(|n| workload("mesh", &format!("orders-{n}"), "orders", &format!("10.0.0.{n}")))
        .collect();
    let want = desired(workloads.iter().cloned().chain([selecting.clone()]));
    let held = holding([&inline]);
    let first = planned(&want, &held);
    assert_eq!(first.creates.len(), 3);
    assert!(
        first.updates.is_empty(),
        "the entry keeps its endpoints: {first:?}"
    );
    assert_eq!(first.replacements[0].key, inline.key());
    let second = planned(&want, &applied(&held, &first));
    assert_eq!(second.updates.len(), 1);
    assert_eq!(second.replaced, [inline.key()]);
}

#[test]
fn workload_entries_folded_back_inline_go_only_once_the_entry_carries_their_endpoints() {
    let selecting = entry("mesh", "orders", "orders", 0);
    let workloads: Vec<IstioObject> = (0..3)
        .map(|n| workload("mesh", &format!("orders-{n}"), "orders", &format!("10.0.0.{n}")))
        .collect();
    let inline = entry("mesh", "orders", "orders", 3);
    let held = holding(workloads.iter().chain([&selecting]));
    let want = desired([inline.clone()]);
    let first = planned(&want, &held);
    assert_eq!(first.updates.len(), 1, "the entry grows at once");
    assert!(first.deletes.is_empty());
    assert_eq!(first.replacements.len(), 3);
    let second = planned(&want, &applied(&held, &first));
    assert_eq!(second.deletes.len(), 3);
}

#[test]
fn a_guard_counts_what_is_written_not_what_is_planned() {
    let owner = Owner::new(US);
    let mut guard = MassChangeGuard::new(50, Duration::from_secs(300));
    let start = Instant::now();
    // A whole registry moves: nothing is deleted before the new objects exist, and the
    // hand-over is then no mass deletion.
    let (old, new) = moved(10);
    let want = desired(new);
    let mut held = holding(&old);
    for pass in 0..2 {
        let mut plan = plan(&want, &held, &owner, &scope());
        hold_replacements(&mut plan, &want, &held, &owner, &by_source(&want));
        guard.hold(&mut plan, &held, &owner, start + Duration::from_secs(pass));
        assert!(plan.held_back.is_empty(), "pass {pass}: {plan:?}");
        held = applied(&held, &plan);
    }
    assert_eq!(held.len(), 10);
    assert!(held.keys().all(|k| k.namespace == "team-a"));

    // Ten services vanish while ten unrelated ones appear: the creates are not counted
    // as landed, so the loss is held.
    let old: Vec<IstioObject> = (0..10)
        .map(|i| entry("mesh", &format!("a{i}"), &format!("a{i}"), 1))
        .collect();
    let new: Vec<IstioObject> = (0..10)
        .map(|i| entry("mesh", &format!("b{i}"), &format!("b{i}"), 1))
        .collect();
    let want = desired(new);
    let held = holding(&old);
    let mut plan = plan(&want, &held, &owner, &scope());
    hold_replacements(&mut plan, &want, &held, &owner, &by_source(&want));
    MassChangeGuard::new(50, Duration::from_secs(300)).hold(&mut plan, &held, &owner, start);
    assert_eq!(plan.creates.len(), 10);
    assert!(plan.deletes.is_empty(), "{plan:?}");
    assert_eq!(plan.held_back[0].after.objects, 0);
}
