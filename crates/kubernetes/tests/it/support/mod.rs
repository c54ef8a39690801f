//! Objects and scopes the Kubernetes sink tests share.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;

use registry_sync_istio::{
    Desired, Endpoint, INSTANCE_LABEL, IstioObject, Location, MANAGED_BY_LABEL, MANAGED_BY_VALUE, ObjectMeta,
    REGISTRY_LABEL, Resolution, ServiceEntrySpec, ServicePort, Spec,
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
    IstioObject::new(
        ObjectMeta {
            name: name.into(),
            namespace: NS.into(),
            labels,
            annotations: Default::default(),
        },
        Spec::ServiceEntry(ServiceEntrySpec {
            addresses: Vec::new(),
            hosts: vec![format!("{name}.legacy")],
            location: Location::MeshInternal,
            resolution: Resolution::Static,
            ports: vec![ServicePort {
                number: 8080,
                protocol: "HTTP".into(),
                name: "http-8080".into(),
            }],
            endpoints: addresses
                .iter()
                .map(|a| Endpoint {
                    address: a.to_string(),
                    ports: std::sync::Arc::new([("http-8080".to_string(), 8080)].into_iter().collect()),
                    ..Default::default()
                })
                .collect(),
            workload_selector: None,
            export_to: Vec::new(),
        }),
    )
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
