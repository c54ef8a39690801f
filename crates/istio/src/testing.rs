//! Fixture builders for tests and benches (the `testing` feature), written once instead
//! of in every crate that needs an object to hold or apply.

use std::sync::Arc;

use crate::{
    Endpoint, IstioObject, LiteMap, Location, ObjectMeta, Resolution, ServiceEntrySpec, ServicePort, Spec,
};

/// A STATIC ServiceEntry `<namespace>/<name>` for `<name>.legacy`, port `http-8080`
/// (HTTP, 8080), one endpoint per address of `addresses`, with `labels`.
pub fn service_entry_labelled(
    namespace: &str,
    name: &str,
    addresses: &[&str],
    labels: LiteMap<String, String>,
) -> IstioObject {
    IstioObject::new(
        ObjectMeta {
            name: name.into(),
            namespace: namespace.into(),
            labels,
            annotations: LiteMap::new(),
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
                    ports: Arc::new(LiteMap::from_iter([("http-8080".to_string(), 8080)])),
                    ..Default::default()
                })
                .collect(),
            workload_selector: None,
            export_to: Vec::new(),
        }),
    )
}

/// [`service_entry_labelled`] without labels.
pub fn service_entry(namespace: &str, name: &str, addresses: &[&str]) -> IstioObject {
    service_entry_labelled(namespace, name, addresses, LiteMap::new())
}
