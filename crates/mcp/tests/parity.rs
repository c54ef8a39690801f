//! The sink's pre-check (`validate::refusal`) against istiod's own verdict on the wire
//! form (the test client's checks, written from istiod's validation apart from the
//! sink's): every object the sink refuses would be dropped by istiod, and everything the
//! sink serves would be stored.

use std::sync::Arc;
use std::time::SystemTime;

use prost::Message;
use registry_sync_istio::{Endpoint, IstioObject, LiteMap, Resolution, ServicePort, Spec, WorkloadSelector};
use registry_sync_mcp::convert::resource;
use registry_sync_mcp::proto;
use registry_sync_mcp::testing::fixtures::service_entry;
use registry_sync_mcp::testing::{Profile, istiod_refusal};
use registry_sync_mcp::validate::refusal;

const PROFILES: [Profile; 3] = [Profile::Istio120, Profile::Istio124, Profile::Istio130];

/// istiod's verdict on the object as the sink would encode it.
fn istiod_verdict(profile: Profile, object: &IstioObject) -> Option<String> {
    let any = resource(object, SystemTime::now());
    let resource = proto::Resource::decode(any.value.as_slice()).unwrap();
    let type_url = match object.spec {
        Spec::ServiceEntry(_) => profile.service_entry().to_string(),
        Spec::WorkloadEntry(_) => profile.service_entry().replace("ServiceEntry", "WorkloadEntry"),
    };
    istiod_refusal(
        profile,
        &type_url,
        resource.metadata.as_ref().unwrap(),
        resource.body.as_ref().unwrap(),
    )
}

fn edited(
    edit: impl FnOnce(&mut registry_sync_istio::ServiceEntrySpec, &mut registry_sync_istio::ObjectMeta),
) -> IstioObject {
    let mut object = (*service_entry("orders", &["10.0.0.1", "10.0.0.2"])).clone();
    let Spec::ServiceEntry(spec) = &mut object.spec else {
        unreachable!()
    };
    edit(spec, &mut object.metadata);
    IstioObject::new(object.metadata.clone(), object.spec.clone())
}

#[test]
fn every_object_the_sink_refuses_istiod_would_drop_and_every_one_it_serves_istiod_stores() {
    let refused: Vec<(&str, IstioObject)> = vec![
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
        (
            "an object label value with a slash",
            edited(|_, m| {
                m.labels.insert("app".into(), "a/b".into());
            }),
        ),
    ];
    for profile in PROFILES {
        for (why, object) in &refused {
            assert!(refusal(object).is_some(), "{profile:?}: the sink serves {why}");
            assert!(
                istiod_verdict(profile, object).is_some(),
                "{profile:?}: the sink refuses {why}, which istiod would store"
            );
        }
    }

    let served: Vec<(&str, IstioObject)> = vec![
        ("a STATIC entry", edited(|_, _| {})),
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
                registry_sync_istio::ObjectMeta {
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
    ];
    for profile in PROFILES {
        for (what, object) in &served {
            assert_eq!(refusal(object), None, "{profile:?}: the sink refuses {what}");
            assert_eq!(
                istiod_verdict(profile, object),
                None,
                "{profile:?}: istiod drops {what}"
            );
        }
    }
}

#[test]
fn no_resolution_the_sink_encodes_is_one_an_older_istiod_does_not_know() {
    // DYNAMIC_DNS (4) is unknown before 1.30; DNS_ROUND_ROBIN (3) allows one endpoint.
    for resolution in [Resolution::Static, Resolution::Dns] {
        let object = edited(|s, _| s.resolution = resolution);
        let any = resource(&object, SystemTime::now());
        let body = proto::Resource::decode(any.value.as_slice())
            .unwrap()
            .body
            .unwrap();
        let entry = proto::ServiceEntry::decode(body.value.as_slice()).unwrap();
        assert!(
            matches!(entry.resolution, 1 | 2),
            "{resolution:?} → {}",
            entry.resolution
        );
    }
    // The client's check itself: a DYNAMIC_DNS entry is dropped by a 1.24 istiod.
    let object = edited(|_, _| {});
    let mut resource =
        proto::Resource::decode(resource(&object, SystemTime::now()).value.as_slice()).unwrap();
    let body = resource.body.as_mut().unwrap();
    let mut entry = proto::ServiceEntry::decode(body.value.as_slice()).unwrap();
    entry.resolution = 4;
    entry.endpoints.clear();
    body.value = entry.encode_to_vec();
    let verdict = istiod_refusal(
        Profile::Istio124,
        Profile::Istio124.service_entry(),
        resource.metadata.as_ref().unwrap(),
        resource.body.as_ref().unwrap(),
    );
    assert!(verdict.is_some_and(|v| v.contains("unknown resolution")));
}
