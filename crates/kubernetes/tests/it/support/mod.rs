//! Objects and scopes the Kubernetes sink tests share.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;

use registry_sync_istio::{
    Desired, INSTANCE_LABEL, IstioObject, MANAGED_BY_LABEL, MANAGED_BY_VALUE, REGISTRY_LABEL,
};
use registry_sync_plan::DeleteScope;

pub const NS: &str = "mesh";

pub fn entry(name: &str, addresses: &[&str]) -> IstioObject {
    let labels: registry_sync_istio::LiteMap<String, String> = [
        (MANAGED_BY_LABEL, MANAGED_BY_VALUE),
        (REGISTRY_LABEL, "legacy"),
        (INSTANCE_LABEL, "default"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    registry_sync_istio::testing::service_entry_labelled(NS, name, addresses, labels)
}

pub fn desired(objects: &[IstioObject]) -> Desired {
    objects.iter().map(|o| (o.key(), Arc::new(o.clone()))).collect()
}

pub fn scope() -> DeleteScope {
    DeleteScope {
        complete: BTreeSet::from(["legacy".to_string()]),
        delivered: BTreeSet::from(["legacy".to_string()]),
        configured: BTreeSet::from(["legacy".to_string()]),
        prune_orphans: false,
        unknown: Default::default(),
    }
}
