//! Properties that must hold for any desired and held state: applying a plan reaches a
//! fixed point, and objects we do not own are never written.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use registry_sync_istio::{
    Endpoint, HeldObject, INSTANCE_LABEL, IstioObject, Kind, Location, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    ObjectKey, ObjectMeta, REGISTRY_LABEL, Resolution, SOURCES_ANNOTATION, ServiceEntrySpec, Spec,
};
use registry_sync_plan::{DeleteScope, Owner, Plan, plan, plan_keys};

const US: &str = "prod-a";
const REGISTRIES: [&str; 3] = ["consul", "nacos", "removed"];

#[derive(Clone, Debug)]
struct Slot {
    kind: Kind,
    name: u8,
    /// The endpoint address's last octet, when the object is desired.
    desired: Option<(u8, usize)>,
    held: Option<HeldSlot>,
}

#[derive(Clone, Debug)]
struct HeldSlot {
    /// 0: ours, 1: another installation, 2: ours without instance label, 3: a user's.
    ownership: u8,
    /// Index into REGISTRIES, or none.
    registry: Option<usize>,
    /// 0: the desired hash, 1: another hash, 2: no hash.
    hash: u8,
}

fn slot() -> impl Strategy<Value = Slot> {
    let held =
        (0u8..4, proptest::option::of(0usize..3), 0u8..3).prop_map(|(ownership, registry, hash)| HeldSlot {
            ownership,
            registry,
            hash,
        });
    (
        prop_oneof![Just(Kind::ServiceEntry), Just(Kind::WorkloadEntry)],
        0u8..12,
        proptest::option::of((any::<u8>(), 0usize..2)),
        proptest::option::of(held),
    )
        .prop_map(|(kind, name, desired, held)| Slot {
            kind,
            name,
            desired,
            held,
        })
}

fn object(kind: Kind, name: &str, octet: u8, registry: &str) -> IstioObject {
    let labels = [
        (MANAGED_BY_LABEL, MANAGED_BY_VALUE),
        (INSTANCE_LABEL, US),
        (REGISTRY_LABEL, registry),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let meta = ObjectMeta {
        name: name.into(),
        namespace: "mesh".into(),
        labels,
        annotations: [(SOURCES_ANNOTATION.to_string(), format!("{registry}:{name}"))]
            .into_iter()
            .collect(),
    };
    let endpoint = Endpoint {
        address: format!("10.0.0.{octet}"),
        ..Default::default()
    };
    let spec = match kind {
        Kind::WorkloadEntry => Spec::WorkloadEntry(endpoint),
        Kind::ServiceEntry => Spec::ServiceEntry(ServiceEntrySpec {
            addresses: Vec::new(),
            hosts: vec![format!("{name}.example")],
            location: Location::MeshInternal,
            resolution: Resolution::Static,
            ports: vec![],
            endpoints: vec![endpoint],
            workload_selector: None,
            export_to: Vec::new(),
        }),
    };
    IstioObject::new(meta, spec)
}

type State = (registry_sync_istio::Desired, BTreeMap<ObjectKey, HeldObject>);

fn build(slots: &[Slot]) -> State {
    let mut desired = BTreeMap::new();
    let mut held = BTreeMap::new();
    for slot in slots {
        let name = format!("n{}", slot.name);
        let key = ObjectKey {
            kind: slot.kind,
            namespace: "mesh".into(),
            name: name.clone(),
        };
        let want = slot
            .desired
            .map(|(octet, r)| object(slot.kind, &name, octet, REGISTRIES[r]));
        if let Some(want) = &want {
            desired.insert(key.clone(), std::sync::Arc::new(want.clone()));
        }
        if let Some(h) = &slot.held {
            let mut labels = BTreeMap::new();
            match h.ownership {
                0 => {
                    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string());
                    labels.insert(INSTANCE_LABEL.to_string(), US.to_string());
                }
                1 => {
                    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string());
                    labels.insert(INSTANCE_LABEL.to_string(), "prod-b".to_string());
                }
                2 => {
                    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string());
                }
                _ => {
                    labels.insert("team".to_string(), "payments".to_string());
                }
            }
            if let Some(r) = h.registry {
                labels.insert(REGISTRY_LABEL.to_string(), REGISTRIES[r].to_string());
            }
            let content_hash = match (h.hash, &want) {
                (0, Some(want)) => Some(want.content_hash().to_string()),
                (0 | 1, _) => Some("ffffffffffffffff".to_string()),
                _ => None,
            };
            held.insert(
                key.clone(),
                HeldObject {
                    vip: None,
                    healthy: None,
                    key,
                    labels: labels.into_iter().collect(),
                    content_hash,
                    sources: h
                        .registry
                        .map(|r| format!("{}:{name}", REGISTRIES[r]))
                        .into_iter()
                        .collect(),
                    endpoints: 1,
                },
            );
        }
    }
    (desired, held)
}

/// What a sink does with a plan, reduced to its effect on what it holds.
fn simulate_apply(held: &mut BTreeMap<ObjectKey, HeldObject>, plan: &Plan) {
    for object in plan.creates.iter().chain(&plan.updates) {
        let written = HeldObject::written(object);
        held.insert(object.key(), written);
    }
    for key in &plan.deletes {
        held.remove(key);
    }
}

/// `heard`: registries heard from since start beside the complete ones (a registry
/// failing now was complete before).
fn delete_scope(complete: &BTreeSet<usize>, heard: &BTreeSet<usize>) -> DeleteScope {
    DeleteScope {
        complete: complete.iter().map(|&i| REGISTRIES[i].to_string()).collect(),
        delivered: complete
            .iter()
            .chain(heard)
            .map(|&i| REGISTRIES[i].to_string())
            .collect(),
        configured: ["consul", "nacos"].iter().map(|s| s.to_string()).collect(),
        prune_orphans: false,
        unknown: Default::default(),
    }
}

proptest! {
    #[test]
    fn applying_a_plan_and_planning_again_writes_nothing(
        slots in proptest::collection::vec(slot(), 0..40),
        complete in proptest::collection::btree_set(0usize..2, 0..=2),
        heard in proptest::collection::btree_set(0usize..2, 0..=2),
    ) {
        let (desired, mut held) = build(&slots);
        let owner = Owner::new(US);
        let scope = delete_scope(&complete, &heard);
        let first = plan(&desired, &held, &owner, &scope);
        simulate_apply(&mut held, &first);
        let second = plan(&desired, &held, &owner, &scope);
        prop_assert!(second.is_empty(), "second plan still writes:\n{}", second.render_diff());
        prop_assert_eq!(second.conflicts, first.conflicts);
        prop_assert_eq!(second.kept, first.kept);
    }

    #[test]
    fn objects_we_do_not_own_are_never_updated_or_deleted(
        slots in proptest::collection::vec(slot(), 0..40),
        complete in proptest::collection::btree_set(0usize..2, 0..=2),
        heard in proptest::collection::btree_set(0usize..2, 0..=2),
    ) {
        let (desired, held) = build(&slots);
        let owner = Owner::new(US);
        let first = plan(&desired, &held, &owner, &delete_scope(&complete, &heard));
        for key in first.updates.iter().map(|o| o.key()).chain(first.deletes.iter().cloned()) {
            prop_assert!(owner.owns(&held[&key]), "{key} is not ours but the plan writes it");
        }
        for object in &first.creates {
            prop_assert!(!held.contains_key(&object.key()));
        }
        for conflict in &first.conflicts {
            prop_assert!(!owner.owns(&held[&conflict.key]));
        }
        let kept_desired = first.kept.iter().filter(|k| desired.contains_key(&k.key)).count();
        let accounted =
            first.creates.len() + first.updates.len() + first.unchanged + first.conflicts.len() + kept_desired;
        prop_assert_eq!(accounted, desired.len());
    }

    #[test]
    fn planning_every_key_one_at_a_time_adds_up_to_the_full_plan(
        slots in proptest::collection::vec(slot(), 0..40),
        complete in proptest::collection::btree_set(0usize..2, 0..=2),
        heard in proptest::collection::btree_set(0usize..2, 0..=2),
    ) {
        let (desired, held) = build(&slots);
        let owner = Owner::new(US);
        let scope = delete_scope(&complete, &heard);
        let full = plan(&desired, &held, &owner, &scope);
        let mut pieces = Plan::default();
        for key in desired.keys().chain(held.keys()).collect::<BTreeSet<_>>() {
            let one = plan_keys([key], &desired, &held, &owner, &scope);
            pieces.creates.extend(one.creates);
            pieces.updates.extend(one.updates);
            pieces.deletes.extend(one.deletes);
            pieces.unchanged += one.unchanged;
            pieces.conflicts.extend(one.conflicts);
            pieces.kept.extend(one.kept);
            pieces.orphans.extend(one.orphans);
        }
        prop_assert_eq!(pieces, full);
    }
}
