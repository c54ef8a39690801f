//! Objects on both sides of istiod's validation, each with what it shows: the sink's
//! pre-check, the test client's checks and the real istiod (in the binary's tests) are
//! each held against the same lists.

use std::sync::Arc;
use std::time::SystemTime;

use prost::Message;
use registry_sync_istio::{
    Endpoint, IstioObject, LiteMap, ObjectMeta, Resolution, ServiceEntrySpec, ServicePort, Spec,
    WorkloadSelector,
};

use super::fixtures::service_entry;
use super::{Profile, istiod_refusal};
use crate::convert::resource;
use crate::proto;

/// The test client's verdict (istiod's checks as [`istiod_refusal`] writes them) on
/// `object` as the sink would encode it: why istiod of `profile` would drop it, if it
/// would.
pub fn istiod_verdict(profile: Profile, object: &IstioObject) -> Option<String> {
    let any = resource(object, SystemTime::now());
    let resource = proto::Resource::decode(any.value.as_slice()).expect("the sink's own encoding decodes");
    let type_url = match object.spec {
        Spec::ServiceEntry(_) => profile.service_entry().to_string(),
        Spec::WorkloadEntry(_) => profile.service_entry().replace("ServiceEntry", "WorkloadEntry"),
    };
    istiod_refusal(
        profile,
        &type_url,
        resource.body.as_ref().expect("the sink encodes a body"),
    )
}

/// The fixture entry `mesh/orders` with `edit` made to it.
pub fn edited(edit: impl FnOnce(&mut ServiceEntrySpec, &mut ObjectMeta)) -> IstioObject {
    let mut object = (*service_entry("orders", &["10.0.0.1", "10.0.0.2"])).clone();
    let Spec::ServiceEntry(spec) = &mut object.spec else {
        unreachable!()
    };
    edit(spec, &mut object.metadata);
    IstioObject::new(object.metadata.clone(), object.spec.clone())
}

/// Objects istiod's validation refuses, each with what is wrong with it.
pub fn refused() -> Vec<(&'static str, IstioObject)> {
    vec![
        ("no hosts", edited(|s, _| s.hosts.clear())),
        ("the host *", edited(|s, _| s.hosts = vec!["*".into()])),
        (
            "a host with a space",
            edited(|s, _| s.hosts = vec!["orders legacy".into()]),
        ),
        (
            "a port name used twice",
            edited(|s, _| {
                let again = s.ports[0].clone();
                s.ports.push(ServicePort {
                    number: 9090,
                    ..again
                });
            }),
        ),
        (
            "an uppercase port name",
            edited(|s, _| s.ports[0].name = "HTTP-8080".into()),
        ),
        ("port number 0", edited(|s, _| s.ports[0].number = 0)),
        (
            "an unknown protocol",
            edited(|s, _| s.ports[0].protocol = "QUIC".into()),
        ),
        (
            "a STATIC endpoint with a host name",
            edited(|s, _| s.endpoints[0].address = "orders-1.example.com".into()),
        ),
        (
            "a DNS endpoint that is no host name",
            edited(|s, _| {
                s.resolution = Resolution::Dns;
                s.endpoints[0].address = "orders_1!".into();
            }),
        ),
        (
            "an endpoint without address or network",
            edited(|s, _| s.endpoints[0].address.clear()),
        ),
        (
            "an endpoint label key with a space",
            edited(|s, _| {
                s.endpoints[0].labels =
                    Arc::new(LiteMap::from_iter([("bad key".to_string(), "v".to_string())]));
            }),
        ),
        (
            "an endpoint port the entry lacks",
            edited(|s, _| {
                s.endpoints[0].ports = Arc::new(LiteMap::from_iter([("grpc".to_string(), 9000)]));
            }),
        ),
        (
            "both a selector and endpoints",
            edited(|s, _| {
                s.workload_selector = Some(WorkloadSelector {
                    labels: [("app".to_string(), "orders".to_string())].into(),
                });
            }),
        ),
        (
            "DNS without endpoints and a wildcard host",
            edited(|s, _| {
                s.resolution = Resolution::Dns;
                s.endpoints.clear();
                s.hosts = vec!["*.orders.legacy".into()];
            }),
        ),
        (
            "exportTo with `*` and more",
            edited(|s, _| s.export_to = vec!["*".into(), ".".into()]),
        ),
        (
            "an address that is a host name",
            edited(|s, _| s.addresses = vec!["orders.legacy".into()]),
        ),
        (
            "exportTo naming a namespace twice",
            edited(|s, _| s.export_to = vec!["mesh".into(), "mesh".into()]),
        ),
    ]
}

/// Objects istiod stores, each with what it is.
pub fn stored() -> Vec<(&'static str, IstioObject)> {
    vec![
        ("a STATIC entry", edited(|_, _| {})),
        (
            // istiod validates the spec alone; the object's own labels are not checked.
            "an entry whose own label value has a slash",
            edited(|_, m| {
                m.labels.insert("app".into(), "a/b".into());
            }),
        ),
        (
            "an entry with an allocated virtual IP",
            edited(|s, _| s.addresses = vec!["240.240.0.7".into()]),
        ),
        (
            "an entry exported to its namespace and istio-system",
            edited(|s, _| s.export_to = vec![".".into(), "istio-system".into()]),
        ),
        (
            "a DNS entry with host-name endpoints",
            edited(|s, _| {
                s.resolution = Resolution::Dns;
                s.endpoints[0].address = "orders-1.example.com".into();
            }),
        ),
        (
            "a DNS entry without endpoints",
            edited(|s, _| {
                s.resolution = Resolution::Dns;
                s.endpoints.clear();
            }),
        ),
        (
            "an endpoint on another network with no address",
            edited(|s, _| {
                s.endpoints[0].address.clear();
                s.endpoints[0].network = Some("west".into());
            }),
        ),
        (
            "a workload entry",
            IstioObject::new(
                ObjectMeta {
                    name: "orders-10-0-0-1".into(),
                    namespace: "mesh".into(),
                    labels: LiteMap::from_iter([("app".to_string(), "orders".to_string())]),
                    annotations: LiteMap::new(),
                },
                Spec::WorkloadEntry(Endpoint {
                    address: "10.0.0.1".into(),
                    ports: Arc::new(LiteMap::from_iter([("http-8080".to_string(), 8080)])),
                    ..Default::default()
                }),
            ),
        ),
    ]
}
