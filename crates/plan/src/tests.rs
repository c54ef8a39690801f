use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use registry_sync_istio::{
    Endpoint, HeldObject, INSTANCE_LABEL, IstioObject, Kind, Location, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    ObjectKey, ObjectMeta, REGISTRY_LABEL, Resolution, ServiceEntrySpec, Spec,
};

use std::time::{Duration, Instant};

use super::*;

const US: &str = "prod-a";

fn owner() -> Owner {
    Owner::new(US)
}

use registry_sync_istio::LiteMap;

fn labels(pairs: &[(&str, &str)]) -> LiteMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ours(registry: &str) -> LiteMap<String, String> {
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
            addresses: Vec::new(),
            hosts: vec![format!("{name}.example")],
            location: Location::MeshInternal,
            resolution: Resolution::Static,
            ports: vec![],
            endpoints: vec![Endpoint {
                address: address.into(),
                ..Default::default()
            }],
            workload_selector: None,
            export_to: Vec::new(),
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
    HeldObject::written(object)
}

fn held(key: ObjectKey, labels: LiteMap<String, String>, hash: Option<&str>) -> HeldObject {
    HeldObject {
        vip: None,
        healthy: None,
        key,
        labels,
        content_hash: hash.map(str::to_string),
        sources: Vec::new(),
        endpoints: 1,
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
        delivered: configured.iter().map(|s| s.to_string()).collect(),
        configured: configured.iter().map(|s| s.to_string()).collect(),
        prune_orphans: false,
        unknown: Default::default(),
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
fn an_object_of_a_registry_removed_from_the_config_is_an_orphan_listed_not_deleted() {
    let gone = held(key(Kind::ServiceEntry, "gone"), ours("eureka"), Some("1"));
    let plan = plan(
        &BTreeMap::new(),
        &holding([gone.clone()]),
        &owner(),
        &scope(&["consul"], &["consul"]),
    );
    assert!(plan.deletes.is_empty(), "{plan:?}");
    assert_eq!(
        plan.orphans,
        vec![Orphan {
            key: gone.key.clone(),
            registry: "eureka".into()
        }]
    );
    assert!(
        plan.render_diff()
            .contains("? orphan ServiceEntry mesh/gone (registry \"eureka\"")
    );
}

#[test]
fn a_prune_deletes_orphans() {
    let gone = held(key(Kind::ServiceEntry, "gone"), ours("eureka"), Some("1"));
    let plan = plan(
        &BTreeMap::new(),
        &holding([gone.clone()]),
        &owner(),
        &DeleteScope {
            prune_orphans: true,
            ..scope(&["consul"], &["consul"])
        },
    );
    assert_eq!(plan.deletes, vec![gone.key]);
    assert!(plan.orphans.is_empty());
}

#[test]
fn an_owned_object_without_a_registry_label_is_an_orphan() {
    let mut l = ours("consul");
    l.remove(REGISTRY_LABEL);
    let gone = held(key(Kind::ServiceEntry, "gone"), l, Some("1"));
    let plan = plan(
        &BTreeMap::new(),
        &holding([gone.clone()]),
        &owner(),
        &scope(&["consul"], &["consul"]),
    );
    assert!(plan.deletes.is_empty());
    assert_eq!(plan.orphans.len(), 1);
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

fn held_many(registry: &str, n: usize) -> BTreeMap<ObjectKey, HeldObject> {
    holding((0..n).map(|i| {
        held(
            key(Kind::ServiceEntry, &format!("{registry}-{i}")),
            ours(registry),
            Some("h"),
        )
    }))
}

fn guard() -> MassChangeGuard {
    MassChangeGuard::new(50, Duration::from_secs(300))
}

fn guarded_plan(
    guard: &mut MassChangeGuard,
    want: &registry_sync_istio::Desired,
    held: &BTreeMap<ObjectKey, HeldObject>,
    now: Instant,
) -> Plan {
    let mut plan = plan(want, held, &owner(), &all_complete());
    guard.hold(&mut plan, held, &owner(), now);
    plan
}

/// What the sink holds after `plan` is applied.
pub(crate) fn applied(
    held: &BTreeMap<ObjectKey, HeldObject>,
    plan: &Plan,
) -> BTreeMap<ObjectKey, HeldObject> {
    let mut held = held.clone();
    for object in plan.creates.iter().chain(&plan.updates) {
        held.insert(object.key(), HeldObject::written(object));
    }
    for key in &plan.deletes {
        held.remove(key);
    }
    held
}

fn consul_entries(range: std::ops::Range<usize>, endpoints: usize) -> Vec<IstioObject> {
    range
        .map(|i| {
            let mut o = service_entry(&format!("consul-{i}"), "10.0.0.1");
            if let Spec::ServiceEntry(spec) = &mut o.spec {
                spec.endpoints = (0..endpoints)
                    .map(|n| Endpoint {
                        address: format!("10.0.0.{n}"),
                        ..Default::default()
                    })
                    .collect();
            }
            IstioObject::new(o.metadata.clone(), o.spec.clone())
        })
        .collect()
}

#[test]
fn deleting_more_than_the_allowed_share_of_a_registry_is_held_back() {
    let held = held_many("consul", 10);
    let plan = guarded_plan(&mut guard(), &desired([]), &held, Instant::now());
    assert!(plan.deletes.is_empty(), "{plan:?}");
    assert_eq!(plan.held_back.len(), 1);
    assert_eq!(plan.held_back[0].registry, "consul");
    assert_eq!(plan.held_back[0].keys.len(), 10);
    assert_eq!(plan.held_back[0].peak.objects, 10);
    assert_eq!(plan.held_back[0].after.objects, 0);
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
    let plan = guarded_plan(&mut guard(), &desired(keep), &held, Instant::now());
    assert_eq!(plan.deletes.len(), 5, "exactly half may go");
    assert!(plan.held_back.is_empty());
}

#[test]
fn a_single_deletion_is_never_held_back() {
    let held = held_many("consul", 1);
    let plan = guarded_plan(&mut guard(), &desired([]), &held, Instant::now());
    assert_eq!(plan.deletes.len(), 1);
}

#[test]
fn without_a_guard_a_mass_deletion_goes_ahead() {
    let held = held_many("consul", 10);
    let plan = plan(&desired([]), &held, &owner(), &all_complete());
    assert_eq!(plan.deletes.len(), 10);
    assert!(plan.held_back.is_empty());
}

#[test]
fn a_registry_eroding_over_several_passes_is_held_once_the_window_has_lost_too_much() {
    let mut guard = guard();
    let start = Instant::now();
    let mut held = holding(consul_entries(0..20, 1).iter().map(HeldObject::written));
    let mut left = 20;
    let mut passes = 0;
    loop {
        left -= 3;
        passes += 1;
        let want = desired(consul_entries(0..left, 1));
        let plan = guarded_plan(&mut guard, &want, &held, start + Duration::from_secs(passes * 10));
        if !plan.held_back.is_empty() {
            assert_eq!(
                plan.held_back[0].peak.objects, 20,
                "judged against the window's peak"
            );
            break;
        }
        assert!(left >= 10, "erosion to {left} of 20 went ahead");
        held = applied(&held, &plan);
    }
    assert_eq!(held.len(), 11, "passes 20 → 17 → 14 → 11 went ahead, 8 was held");
}

#[test]
fn erosion_slower_than_the_window_goes_ahead() {
    let mut guard = guard();
    let start = Instant::now();
    let mut held = holding(consul_entries(0..20, 1).iter().map(HeldObject::written));
    for (pass, left) in [16usize, 13, 10, 8, 6, 5].into_iter().enumerate() {
        let want = desired(consul_entries(0..left, 1));
        let now = start + Duration::from_secs(pass as u64 * 301);
        let plan = guarded_plan(&mut guard, &want, &held, now);
        assert!(plan.held_back.is_empty(), "pass to {left}: {plan:?}");
        held = applied(&held, &plan);
    }
    assert_eq!(held.len(), 5);
}

#[test]
fn every_instance_turning_unhealthy_at_once_is_held_though_no_object_is_deleted() {
    let held = holding(consul_entries(0..4, 5).iter().map(HeldObject::written));
    let emptied = desired(consul_entries(0..4, 0));
    let plan = guarded_plan(&mut guard(), &emptied, &held, Instant::now());
    assert!(plan.updates.is_empty(), "{plan:?}");
    assert_eq!(plan.held_back.len(), 1);
    assert_eq!(plan.held_back[0].keys.len(), 4);
    assert_eq!(
        (
            plan.held_back[0].peak.endpoints,
            plan.held_back[0].after.endpoints
        ),
        (20, 0)
    );
    assert!(
        plan.render_diff().contains("0 of its 20 endpoints"),
        "{}",
        plan.render_diff()
    );
}

#[test]
fn growing_updates_and_creates_go_ahead_while_a_registrys_losses_are_held() {
    let held = holding(consul_entries(0..4, 5).iter().map(HeldObject::written));
    let mut want = consul_entries(0..4, 0);
    want.extend(consul_entries(4..5, 5));
    let plan = guarded_plan(&mut guard(), &desired(want), &held, Instant::now());
    assert_eq!(plan.creates.len(), 1);
    assert!(plan.updates.is_empty());
    assert_eq!(plan.held_back.len(), 1);
}

fn merged_entry(name: &str, sources: &str, addresses: &[&str]) -> IstioObject {
    let mut o = service_entry(name, "10.0.0.1");
    o.metadata
        .annotations
        .insert(registry_sync_istio::SOURCES_ANNOTATION.into(), sources.into());
    if let Spec::ServiceEntry(spec) = &mut o.spec {
        spec.endpoints = addresses
            .iter()
            .map(|a| Endpoint {
                address: a.to_string(),
                ..Default::default()
            })
            .collect();
    }
    IstioObject::new(o.metadata.clone(), o.spec.clone())
}

fn waiting_for_nacos() -> DeleteScope {
    DeleteScope {
        complete: ["consul".to_string()].into(),
        delivered: ["consul".to_string()].into(),
        configured: ["consul".to_string(), "nacos".to_string()].into(),
        prune_orphans: false,
        unknown: Default::default(),
    }
}

#[test]
fn a_merged_object_is_not_rewritten_until_every_contributor_has_been_heard_from() {
    let both = merged_entry("orders", "consul:orders,nacos:orders", &["10.0.0.1", "10.0.0.2"]);
    let consul_only = merged_entry("orders", "consul:orders", &["10.0.0.1"]);
    let have = holding([held_as_written(&both)]);
    let plan = plan(&desired([consul_only]), &have, &owner(), &waiting_for_nacos());
    assert!(plan.is_empty(), "{plan:?}");
    assert_eq!(
        plan.kept,
        vec![Kept {
            key: both.key(),
            registry: "nacos".into()
        }]
    );
}

#[test]
fn a_merged_host_is_not_created_under_another_name_while_its_first_contributor_is_unheard() {
    // Merged under nacos's name; consul alone would name it differently.
    let mut both = merged_entry("nacos-orders", "consul:orders,nacos:orders", &["10.0.0.1"]);
    both.metadata.labels = ours("nacos");
    let both = IstioObject::new(both.metadata.clone(), both.spec.clone());
    let consul_only = merged_entry("consul-orders", "consul:orders", &["10.0.0.1"]);
    let have = holding([held_as_written(&both)]);
    let plan = plan(
        &desired([consul_only.clone()]),
        &have,
        &owner(),
        &waiting_for_nacos(),
    );
    assert!(plan.creates.is_empty(), "{plan:?}");
    assert!(plan.deletes.is_empty(), "{plan:?}");
    assert!(
        plan.kept
            .iter()
            .any(|k| k.key == consul_only.key() && k.registry == "nacos")
    );
}

#[test]
fn once_every_contributor_is_heard_from_the_merged_object_is_written() {
    let both = merged_entry("orders", "consul:orders,nacos:orders", &["10.0.0.1", "10.0.0.2"]);
    let consul_only = merged_entry("orders", "consul:orders", &["10.0.0.1"]);
    let have = holding([held_as_written(&both)]);
    let heard = scope(&["consul", "nacos"], &["consul", "nacos"]);
    let plan = plan(&desired([consul_only]), &have, &owner(), &heard);
    assert_eq!(plan.updates.len(), 1);
}

#[test]
fn objects_of_registries_that_were_heard_from_are_written_while_another_is_unheard() {
    let other = merged_entry("payments", "consul:payments", &["10.0.0.9"]);
    let plan = plan(
        &desired([other]),
        &BTreeMap::new(),
        &owner(),
        &waiting_for_nacos(),
    );
    assert_eq!(plan.creates.len(), 1);
}

#[test]
fn a_small_service_scaling_down_goes_ahead() {
    let held = holding(consul_entries(0..1, 3).iter().map(HeldObject::written));
    let plan = guarded_plan(
        &mut guard(),
        &desired(consul_entries(0..1, 1)),
        &held,
        Instant::now(),
    );
    assert_eq!(
        plan.updates.len(),
        1,
        "3 → 1 endpoints is below the endpoint floor"
    );
    assert!(plan.held_back.is_empty());
}

#[test]
fn objects_of_a_service_its_registry_could_not_read_are_left_as_held() {
    let orders = merged_entry("orders", "consul:orders", &["10.0.0.1"]);
    let payments = merged_entry("payments", "consul:payments", &["10.0.0.2"]);
    let have = holding([held_as_written(&orders), held_as_written(&payments)]);
    let scope = DeleteScope {
        unknown: ["consul:orders".to_string()].into(),
        ..all_complete()
    };
    // orders is missing from the view (not read), payments was removed for real.
    let plan = plan(&desired([]), &have, &owner(), &scope);
    assert_eq!(plan.deletes, vec![payments.key()]);
    assert_eq!(
        plan.kept,
        vec![Kept {
            key: orders.key(),
            registry: "consul".into()
        }]
    );
    // A changed orders is not written either while it cannot be read.
    let changed = merged_entry("orders", "consul:orders", &["10.0.0.7"]);
    let plan = plan_keys([&orders.key()], &desired([changed]), &have, &owner(), &scope);
    assert!(plan.is_empty(), "{plan:?}");
}

#[test]
fn a_held_erosion_stays_held_in_a_new_process_and_after_the_window() {
    let mut guard = guard();
    let start = Instant::now();
    let wall = std::time::SystemTime::now();
    let mut held = holding(consul_entries(0..20, 1).iter().map(HeldObject::written));
    for (pass, left) in [11usize, 8].into_iter().enumerate() {
        let want = desired(consul_entries(0..left, 1));
        let plan = guarded_plan(&mut guard, &want, &held, start + Duration::from_secs(pass as u64));
        held = applied(&held, &plan);
    }
    assert_eq!(held.len(), 11, "20 → 11 went ahead, → 8 was held");
    assert!(guard.holds_something());
    assert_eq!(guard.take_changed(), (true, true));
    let memory = guard.memory(start + Duration::from_secs(2), wall + Duration::from_secs(2));

    // Another process, a minute later by both clocks, and then ten minutes later: the
    // hold outlasts the process and the window.
    let later = Instant::now() + Duration::from_secs(60);
    let mut restarted = self::guard();
    restarted.restore(&memory, later, wall + Duration::from_secs(62));
    let want = desired(consul_entries(0..8, 1));
    for after in [0, 600] {
        let plan = guarded_plan(&mut restarted, &want, &held, later + Duration::from_secs(after));
        assert_eq!(plan.held_back.len(), 1, "{after}s later: {plan:?}");
        assert_eq!(plan.held_back[0].peak.objects, 20);
        assert!(plan.deletes.is_empty());
    }

    // The registry recovers: nothing is taken away, the hold ends, and what follows is
    // judged against the window again.
    let plan = guarded_plan(
        &mut restarted,
        &desired(consul_entries(0..11, 1)),
        &held,
        later + Duration::from_secs(601),
    );
    assert!(plan.is_empty() && plan.held_back.is_empty(), "{plan:?}");
    assert!(!restarted.holds_something());
    let plan = guarded_plan(
        &mut restarted,
        &desired(consul_entries(0..10, 1)),
        &held,
        later + Duration::from_secs(602),
    );
    assert_eq!(plan.deletes.len(), 1, "{plan:?}");
}

#[test]
fn a_damaged_memory_costs_its_lines_and_nothing_else() {
    let mut guard = guard();
    let now = Instant::now();
    let wall = std::time::SystemTime::now();
    guard.restore("something else\nconsul\theld\t1\t20\t20\n", now, wall);
    assert!(!guard.holds_something(), "an unknown format is ignored whole");
    let memory =
        "registry-sync mass-change guard v1\nconsul\theld\t1\t20\t20\nbroken line\nconsul\tseen\tx\t1\t1\n";
    guard.restore(memory, now, wall);
    assert!(guard.holds_something());
}
