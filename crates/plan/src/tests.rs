use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use registry_sync_istio::{
    Endpoint, HeldObject, INSTANCE_LABEL, IstioObject, Kind, Location, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    ObjectKey, ObjectMeta, REGISTRY_LABEL, Resolution, ServiceEntrySpec, Spec,
};

use super::*;

const US: &str = "prod-a";

fn owner() -> Owner {
    Owner::new(US)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ours(registry: &str) -> BTreeMap<String, String> {
    labels(&[
        (MANAGED_BY_LABEL, MANAGED_BY_VALUE),
        (INSTANCE_LABEL, US),
        (REGISTRY_LABEL, registry),
    ])
}

fn service_entry(name: &str, address: &str) -> IstioObject {
    IstioObject::new(
        ObjectMeta {
            name: name.into(),
            namespace: "mesh".into(),
            labels: ours("consul"),
            ..Default::default()
        },
        Spec::ServiceEntry(ServiceEntrySpec {
            hosts: vec![format!("{name}.example")],
            location: Location::MeshInternal,
            resolution: Resolution::Static,
            ports: vec![],
            endpoints: vec![Endpoint {
                address: address.into(),
                ..Default::default()
            }],
            workload_selector: None,
        }),
    )
}

fn key(kind: Kind, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: "mesh".into(),
        name: name.into(),
    }
}

fn held_as_written(object: &IstioObject) -> HeldObject {
    HeldObject {
        key: object.key(),
        labels: object.metadata.labels.clone(),
        content_hash: Some(object.content_hash().to_string()),
    }
}

fn held(key: ObjectKey, labels: BTreeMap<String, String>, hash: Option<&str>) -> HeldObject {
    HeldObject {
        key,
        labels,
        content_hash: hash.map(str::to_string),
    }
}

fn desired(objects: impl IntoIterator<Item = IstioObject>) -> registry_sync_istio::Desired {
    objects
        .into_iter()
        .map(|o| (o.key(), std::sync::Arc::new(o)))
        .collect()
}

fn holding(objects: impl IntoIterator<Item = HeldObject>) -> BTreeMap<ObjectKey, HeldObject> {
    objects.into_iter().map(|h| (h.key.clone(), h)).collect()
}

fn scope(complete: &[&str], configured: &[&str]) -> DeleteScope {
    DeleteScope {
        complete: complete.iter().map(|s| s.to_string()).collect(),
        configured: configured.iter().map(|s| s.to_string()).collect(),
        mass_delete_guard: None,
    }
}

fn all_complete() -> DeleteScope {
    scope(&["consul"], &["consul"])
}

#[test]
fn owner_owns_only_objects_with_both_our_manager_and_our_instance() {
    let k = key(Kind::ServiceEntry, "a");
    let o = owner();
    assert!(o.owns(&held(k.clone(), ours("consul"), None)));
    assert!(!o.owns(&held(
        k.clone(),
        labels(&[(MANAGED_BY_LABEL, MANAGED_BY_VALUE)]),
        None
    )));
    assert!(!o.owns(&held(k.clone(), labels(&[(INSTANCE_LABEL, US)]), None)));
    assert!(!o.owns(&held(
        k.clone(),
        labels(&[(MANAGED_BY_LABEL, MANAGED_BY_VALUE), (INSTANCE_LABEL, "prod-b")]),
        None
    )));
    assert!(!o.owns(&held(
        k,
        labels(&[(MANAGED_BY_LABEL, "helm"), (INSTANCE_LABEL, US)]),
        None
    )));
}

#[test]
fn desired_object_that_is_not_held_is_created() {
    let a = service_entry("a", "10.0.0.1");
    let plan = plan(&desired([a.clone()]), &BTreeMap::new(), &owner(), &all_complete());
    assert_eq!(plan.creates, vec![Arc::new(a)]);
    assert_eq!(plan.writes(), 1);
}

#[test]
fn held_object_with_the_desired_hash_is_unchanged_and_not_written() {
    let a = service_entry("a", "10.0.0.1");
    let plan = plan(
        &desired([a.clone()]),
        &holding([held_as_written(&a)]),
        &owner(),
        &all_complete(),
    );
    assert!(plan.is_empty(), "{plan:?}");
    assert_eq!(plan.unchanged, 1);
}

#[test]
fn owned_object_with_another_hash_is_updated() {
    let old = service_entry("a", "10.0.0.1");
    let new = service_entry("a", "10.0.0.2");
    let plan = plan(
        &desired([new.clone()]),
        &holding([held_as_written(&old)]),
        &owner(),
        &all_complete(),
    );
    assert_eq!(plan.updates, vec![Arc::new(new)]);
    assert_eq!(plan.unchanged, 0);
}

#[test]
fn owned_object_without_a_hash_is_updated() {
    let a = service_entry("a", "10.0.0.1");
    let bare = held(a.key(), ours("consul"), None);
    let plan = plan(&desired([a.clone()]), &holding([bare]), &owner(), &all_complete());
    assert_eq!(plan.updates, vec![Arc::new(a)]);
}

#[test]
fn held_object_of_another_instance_is_a_conflict_not_an_update() {
    let a = service_entry("a", "10.0.0.1");
    let theirs = held(
        a.key(),
        labels(&[(MANAGED_BY_LABEL, MANAGED_BY_VALUE), (INSTANCE_LABEL, "prod-b")]),
        Some("0000000000000000"),
    );
    let plan = plan(
        &desired([a.clone()]),
        &holding([theirs]),
        &owner(),
        &all_complete(),
    );
    assert!(plan.is_empty(), "{plan:?}");
    assert_eq!(plan.conflicts.len(), 1);
    assert_eq!(plan.conflicts[0].key, a.key());
    assert!(
        plan.conflicts[0].reason.contains("prod-b"),
        "{}",
        plan.conflicts[0].reason
    );
}

#[test]
fn users_object_carrying_our_hash_is_still_a_conflict_not_unchanged() {
    let a = service_entry("a", "10.0.0.1");
    let copy = held(a.key(), labels(&[("team", "payments")]), Some(a.content_hash()));
    let plan = plan(&desired([a]), &holding([copy]), &owner(), &all_complete());
    assert_eq!(plan.unchanged, 0);
    assert_eq!(plan.conflicts.len(), 1);
    assert!(
        plan.conflicts[0].reason.contains("not created by registry-sync"),
        "{}",
        plan.conflicts[0].reason
    );
}

#[test]
fn undesired_owned_object_of_a_complete_registry_is_deleted() {
    let gone = held(key(Kind::WorkloadEntry, "gone"), ours("consul"), Some("1"));
    let plan = plan(
        &BTreeMap::new(),
        &holding([gone.clone()]),
        &owner(),
        &all_complete(),
    );
    assert_eq!(plan.deletes, vec![gone.key]);
    assert!(plan.kept.is_empty());
}

#[test]
fn undesired_owned_object_of_a_registry_without_a_complete_view_is_kept() {
    let gone = held(key(Kind::WorkloadEntry, "gone"), ours("consul"), Some("1"));
    let plan = plan(
        &BTreeMap::new(),
        &holding([gone.clone()]),
        &owner(),
        &scope(&[], &["consul"]),
    );
    assert!(plan.is_empty(), "{plan:?}");
    assert_eq!(
        plan.kept,
        vec![Kept {
            key: gone.key,
            registry: "consul".into()
        }]
    );
}

#[test]
fn undesired_owned_object_of_a_registry_removed_from_the_config_is_deleted() {
    let gone = held(key(Kind::ServiceEntry, "gone"), ours("eureka"), Some("1"));
    let plan = plan(
        &BTreeMap::new(),
        &holding([gone.clone()]),
        &owner(),
        &scope(&[], &["consul"]),
    );
    assert_eq!(plan.deletes, vec![gone.key]);
}

#[test]
fn undesired_owned_object_without_a_registry_label_is_deleted() {
    let mut l = ours("consul");
    l.remove(REGISTRY_LABEL);
    let gone = held(key(Kind::ServiceEntry, "gone"), l, Some("1"));
    let plan = plan(
        &BTreeMap::new(),
        &holding([gone.clone()]),
        &owner(),
        &scope(&[], &["consul"]),
    );
    assert_eq!(plan.deletes, vec![gone.key]);
}

#[test]
fn undesired_objects_we_do_not_own_are_left_alone() {
    let users = held(key(Kind::ServiceEntry, "users"), labels(&[]), None);
    let other_instance = held(
        key(Kind::ServiceEntry, "other"),
        labels(&[
            (MANAGED_BY_LABEL, MANAGED_BY_VALUE),
            (INSTANCE_LABEL, "prod-b"),
            (REGISTRY_LABEL, "consul"),
        ]),
        Some("1"),
    );
    let plan = plan(
        &BTreeMap::new(),
        &holding([users, other_instance]),
        &owner(),
        &all_complete(),
    );
    assert_eq!(plan, Plan::default());
}

#[test]
fn every_output_list_is_sorted_by_key() {
    let names = ["m", "c", "x", "a", "q"];
    let want = desired(names.iter().map(|n| service_entry(n, "10.0.0.1")));
    let mut have: Vec<HeldObject> = names
        .iter()
        .map(|n| held(key(Kind::ServiceEntry, n), ours("consul"), None))
        .collect();
    have.extend(
        names
            .iter()
            .map(|n| held(key(Kind::WorkloadEntry, n), ours("consul"), None)),
    );
    have.extend(
        names
            .iter()
            .map(|n| held(key(Kind::ServiceEntry, &format!("{n}-user")), labels(&[]), None)),
    );
    let want: BTreeMap<_, _> = want
        .into_iter()
        .chain(names.iter().map(|n| {
            let o = service_entry(&format!("{n}-user"), "10.0.0.1");
            (o.key(), Arc::new(o))
        }))
        .chain(names.iter().map(|n| {
            let o = service_entry(&format!("{n}-new"), "10.0.0.1");
            (o.key(), Arc::new(o))
        }))
        .collect();
    let plan = plan(&want, &holding(have), &owner(), &all_complete());
    let sorted = |keys: Vec<ObjectKey>| {
        let mut s = keys.clone();
        s.sort();
        assert_eq!(keys, s);
        assert_eq!(keys.len(), names.len());
    };
    sorted(plan.creates.iter().map(|o| o.key()).collect());
    sorted(plan.updates.iter().map(|o| o.key()).collect());
    sorted(plan.deletes.clone());
    sorted(plan.conflicts.iter().map(|c| c.key.clone()).collect());
}

#[test]
fn plan_keys_plans_only_the_keys_it_is_given_even_when_repeated() {
    let a = service_entry("a", "10.0.0.1");
    let b = service_entry("b", "10.0.0.1");
    let gone = held(key(Kind::ServiceEntry, "gone"), ours("consul"), Some("1"));
    let want = desired([a.clone(), b]);
    let have = holding([gone.clone()]);
    let only = [
        a.key(),
        gone.key.clone(),
        a.key(),
        key(Kind::ServiceEntry, "nowhere"),
    ];
    let plan = plan_keys(only.iter(), &want, &have, &owner(), &all_complete());
    assert_eq!(plan.creates, vec![Arc::new(a)]);
    assert_eq!(plan.deletes, vec![gone.key]);
    assert_eq!(plan.unchanged, 0);
}

#[test]
fn plan_is_plan_keys_over_every_desired_and_held_key() {
    let a = service_entry("a", "10.0.0.1");
    let b = service_entry("b", "10.0.0.1");
    let want = desired([a.clone(), b.clone()]);
    let have = holding([
        held_as_written(&b),
        held(key(Kind::ServiceEntry, "c"), ours("consul"), None),
        held(key(Kind::WorkloadEntry, "d"), ours("nacos"), None),
    ]);
    let all: BTreeSet<&ObjectKey> = want.keys().chain(have.keys()).collect();
    let s = scope(&["consul"], &["consul", "nacos"]);
    assert_eq!(
        plan(&want, &have, &owner(), &s),
        plan_keys(all, &want, &have, &owner(), &s)
    );
}

#[test]
fn diff_lists_each_change_by_key_then_a_summary() {
    let create = service_entry("legacy.orders", "10.0.0.1");
    let update = service_entry("x", "10.0.0.2");
    let same = service_entry("s", "10.0.0.1");
    let want = desired([create, update, same.clone(), service_entry("z", "10.0.0.1")]);
    let have = holding([
        held(key(Kind::ServiceEntry, "x"), ours("consul"), Some("old")),
        held_as_written(&same),
        held(key(Kind::ServiceEntry, "z"), labels(&[]), None),
        held(key(Kind::WorkloadEntry, "y"), ours("consul"), None),
        held(key(Kind::WorkloadEntry, "k"), ours("nacos"), None),
    ]);
    let plan = plan(&want, &have, &owner(), &scope(&["consul"], &["consul", "nacos"]));
    let text = plan.render_diff();
    let expected = format!(
        "+ ServiceEntry mesh/legacy.orders (create)\n\
         ~ ServiceEntry mesh/x (update)\n\
         ! ServiceEntry mesh/z (conflict: {})\n\
         = kept WorkloadEntry mesh/k (registry \"nacos\" has not delivered a complete view)\n\
         - WorkloadEntry mesh/y (delete)\n\
         1 to create, 1 to update, 1 to delete, 1 unchanged, 1 conflicts, 1 kept\n",
        plan.conflicts[0].reason
    );
    assert_eq!(text, expected);
}

#[test]
fn diff_of_an_empty_plan_is_only_the_summary() {
    assert_eq!(
        Plan::default().render_diff(),
        "0 to create, 0 to update, 0 to delete, 0 unchanged, 0 conflicts\n"
    );
}

fn guarded(max_percent: u32) -> DeleteScope {
    DeleteScope {
        mass_delete_guard: Some(max_percent),
        ..all_complete()
    }
}

fn held_many(registry: &str, n: usize) -> BTreeMap<ObjectKey, HeldObject> {
    holding((0..n).map(|i| {
        held(
            key(Kind::ServiceEntry, &format!("{registry}-{i}")),
            ours(registry),
            Some("h"),
        )
    }))
}

#[test]
fn deleting_more_than_the_allowed_share_of_a_registry_is_held_back() {
    let held = held_many("consul", 10);
    let plan = plan(&desired([]), &held, &owner(), &guarded(50));
    assert!(plan.deletes.is_empty(), "{plan:?}");
    assert_eq!(plan.held_back.len(), 1);
    assert_eq!(plan.held_back[0].registry, "consul");
    assert_eq!((plan.held_back[0].keys.len(), plan.held_back[0].owned), (10, 10));
    assert!(plan.is_empty(), "held-back deletions are not writes");
    assert!(plan.render_diff().contains("held back"), "{}", plan.render_diff());
}

#[test]
fn deleting_up_to_the_allowed_share_goes_ahead() {
    let held = held_many("consul", 10);
    let keep: Vec<IstioObject> = (0..5)
        .map(|i| {
            let mut o = service_entry(&format!("consul-{i}"), "10.0.0.1");
            o.metadata.labels = ours("consul");
            o
        })
        .collect();
    let plan = plan(&desired(keep), &held, &owner(), &guarded(50));
    assert_eq!(plan.deletes.len(), 5, "exactly half may go");
    assert!(plan.held_back.is_empty());
}

#[test]
fn a_single_deletion_is_never_held_back() {
    let held = held_many("consul", 1);
    let plan = plan(&desired([]), &held, &owner(), &guarded(50));
    assert_eq!(plan.deletes.len(), 1);
}

#[test]
fn without_a_guard_a_mass_deletion_goes_ahead() {
    let held = held_many("consul", 10);
    let plan = plan(&desired([]), &held, &owner(), &all_complete());
    assert_eq!(plan.deletes.len(), 10);
    assert!(plan.held_back.is_empty());
}
