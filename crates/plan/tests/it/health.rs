//! Health kept in status: the plan sets a WorkloadEntry's `Healthy` condition without
//! rewriting it, and the mass-change guard counts a flip to unhealthy as a lost endpoint.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use registry_sync_istio::{
    Endpoint, HEALTH_CHECKS_ANNOTATION, HeldObject, INSTANCE_LABEL, IstioObject, LiteMap, MANAGED_BY_LABEL,
    MANAGED_BY_VALUE, ObjectKey, ObjectMeta, REGISTRY_LABEL, Spec,
};
use registry_sync_plan::{DeleteScope, MassChangeGuard, Owner, StatusChange, plan};

fn entry(n: usize, healthy: bool) -> IstioObject {
    IstioObject::new(
        ObjectMeta {
            name: format!("consul.orders.{n}"),
            namespace: "mesh".into(),
            labels: [
                (MANAGED_BY_LABEL, MANAGED_BY_VALUE),
                (INSTANCE_LABEL, "prod"),
                (REGISTRY_LABEL, "consul"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            annotations: LiteMap::from_iter([(HEALTH_CHECKS_ANNOTATION.to_string(), "true".to_string())]),
        },
        Spec::WorkloadEntry(Endpoint {
            address: format!("10.0.0.{n}"),
            ..Default::default()
        }),
    )
    .with_health(healthy)
}

fn desired(objects: &[IstioObject]) -> registry_sync_istio::Desired {
    objects
        .iter()
        .map(|o| (o.key(), std::sync::Arc::new(o.clone())))
        .collect()
}

/// What the Kubernetes sink holds once the object and its condition are written.
fn held(objects: &[IstioObject]) -> BTreeMap<ObjectKey, HeldObject> {
    objects
        .iter()
        .map(|o| {
            let mut held = HeldObject::written(o);
            held.healthy = o.health;
            (o.key(), held)
        })
        .collect()
}

fn scope() -> DeleteScope {
    let consul = || ["consul".to_string()].into_iter().collect();
    DeleteScope {
        complete: consul(),
        delivered: consul(),
        configured: consul(),
        prune_orphans: false,
        unknown: Default::default(),
    }
}

#[test]
fn a_new_entry_is_created_and_then_given_its_condition() {
    let want = [entry(1, true)];
    let plan = plan(&desired(&want), &BTreeMap::new(), &Owner::new("prod"), &scope());
    assert_eq!(plan.creates.len(), 1);
    assert_eq!(
        plan.status,
        [StatusChange {
            key: want[0].key(),
            healthy: true
        }]
    );
    assert!(
        plan.render_diff()
            .contains("h WorkloadEntry mesh/consul.orders.1 (status: Healthy=True)")
    );
}

#[test]
fn a_flip_is_a_status_change_alone_and_no_flip_is_nothing() {
    let before = [entry(1, true), entry(2, true)];
    let after = [entry(1, true), entry(2, false)];
    let held = held(&before);
    let flip = plan(&desired(&after), &held, &Owner::new("prod"), &scope());
    assert!(flip.creates.is_empty() && flip.updates.is_empty() && flip.deletes.is_empty());
    assert_eq!(flip.unchanged, 2);
    assert_eq!(
        flip.status,
        [StatusChange {
            key: after[1].key(),
            healthy: false
        }]
    );
    assert!(plan(&desired(&before), &held, &Owner::new("prod"), &scope()).is_empty());
}

#[test]
fn every_entry_turning_unhealthy_at_once_is_held_and_a_few_are_not() {
    let before: Vec<IstioObject> = (1..=10).map(|n| entry(n, true)).collect();
    let held = held(&before);
    let now = Instant::now();

    let all_down: Vec<IstioObject> = (1..=10).map(|n| entry(n, false)).collect();
    let mut guard = MassChangeGuard::new(50, Duration::from_secs(300));
    let mut down = plan(&desired(&all_down), &held, &Owner::new("prod"), &scope());
    guard.hold(&mut down, &held, &Owner::new("prod"), now);
    assert!(down.status.is_empty(), "{:?}", down.status);
    assert_eq!(down.held_back.len(), 1);
    assert_eq!(down.held_back[0].after.endpoints, 0);
    assert_eq!(down.held_back[0].peak.endpoints, 10);

    let two_down: Vec<IstioObject> = (1..=10).map(|n| entry(n, n > 2)).collect();
    let mut guard = MassChangeGuard::new(50, Duration::from_secs(300));
    let mut some = plan(&desired(&two_down), &held, &Owner::new("prod"), &scope());
    guard.hold(&mut some, &held, &Owner::new("prod"), now);
    assert_eq!(some.status.len(), 2);
    assert!(some.held_back.is_empty());
}
