//! An object as istiod reads it from an MCP source: the `istio.mcp.v1alpha1.Resource`
//! envelope around the `v1alpha3` message, named `namespace/name`, versioned by the
//! object's content hash (the same in every process and replica, so a restart or a
//! second replica changes nothing in istiod) and stamped with when it was first served.

use prost::Message;
use prost_types::{Any, Timestamp};
use registry_sync_istio::{self as istio, Endpoint, IstioObject, Kind, Spec};

use crate::proto;

/// The resource istiod stores for `object`. `create_time` decides, among ServiceEntries
/// of one host, which one istiod keeps (the oldest), so it is the first time this
/// process served the object, never left unset (istiod would read 1970 and prefer ours
/// over every CRD of that host).
pub fn resource(object: &IstioObject, create_time: std::time::SystemTime) -> Any {
    let meta = &object.metadata;
    let body = match &object.spec {
        Spec::ServiceEntry(spec) => Any {
            type_url: proto::SERVICE_ENTRY_BODY.to_string(),
            value: service_entry(spec).encode_to_vec(),
        },
        Spec::WorkloadEntry(endpoint) => Any {
            type_url: proto::WORKLOAD_ENTRY_BODY.to_string(),
            value: workload_entry(endpoint).encode_to_vec(),
        },
    };
    let resource = proto::Resource {
        metadata: Some(proto::Metadata {
            name: format!("{}/{}", meta.namespace, meta.name),
            create_time: Some(Timestamp::from(create_time)),
            version: object.content_hash().to_string(),
            labels: meta.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            annotations: meta
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }),
        body: Some(body),
    };
    Any {
        type_url: proto::RESOURCE_TYPE.to_string(),
        value: resource.encode_to_vec(),
    }
}

fn service_entry(spec: &istio::ServiceEntrySpec) -> proto::ServiceEntry {
    proto::ServiceEntry {
        hosts: spec.hosts.clone(),
        addresses: spec.addresses.clone(),
        ports: spec
            .ports
            .iter()
            .map(|p| proto::ServicePort {
                number: p.number,
                protocol: p.protocol.clone(),
                name: p.name.clone(),
                target_port: 0,
            })
            .collect(),
        location: match spec.location {
            istio::Location::MeshExternal => proto::Location::MeshExternal,
            istio::Location::MeshInternal => proto::Location::MeshInternal,
        } as i32,
        resolution: match spec.resolution {
            istio::Resolution::Static => proto::Resolution::Static,
            istio::Resolution::Dns => proto::Resolution::Dns,
        } as i32,
        endpoints: spec.endpoints.iter().map(workload_entry).collect(),
        export_to: spec.export_to.clone(),
        subject_alt_names: Vec::new(),
        workload_selector: spec.workload_selector.as_ref().map(|s| proto::WorkloadSelector {
            labels: s.labels.clone(),
        }),
    }
}

fn workload_entry(endpoint: &Endpoint) -> proto::WorkloadEntry {
    proto::WorkloadEntry {
        address: endpoint.address.clone(),
        ports: endpoint.ports.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        labels: endpoint
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        network: endpoint.network.as_deref().unwrap_or_default().to_string(),
        locality: endpoint.locality.as_deref().unwrap_or_default().to_string(),
        weight: endpoint.weight.unwrap_or(0),
        service_account: endpoint
            .service_account
            .as_deref()
            .unwrap_or_default()
            .to_string(),
    }
}

/// Which of our kinds a requested type URL names, if any. istiod asks by group, version
/// and kind (`networking.istio.io/v1/ServiceEntry` from 1.24, `v1alpha3` before); every
/// version of the API carries the same message, so all are served, each answered under
/// the exact URL it was asked by.
pub fn served_kind(type_url: &str) -> Option<Kind> {
    let (group_version, kind) = type_url.rsplit_once('/')?;
    let (group, version) = group_version.split_once('/')?;
    if group != "networking.istio.io" || !matches!(version, "v1alpha3" | "v1beta1" | "v1") {
        return None;
    }
    match kind {
        "ServiceEntry" => Some(Kind::ServiceEntry),
        "WorkloadEntry" => Some(Kind::WorkloadEntry),
        _ => None,
    }
}

/// The one type istiod asks for first and that is not Istio config: answered with an
/// empty list (a non-empty one istiod would read as its mesh config, and never ACK).
pub const MESH_CONFIG: &str = "core/v1alpha1/MeshConfig";

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use registry_sync_istio::{LiteMap, ObjectMeta, ServiceEntrySpec, ServicePort};

    use super::*;

    fn entry(addresses: &[&str]) -> IstioObject {
        IstioObject::new(
            ObjectMeta {
                name: "legacy.orders".into(),
                namespace: "mesh".into(),
                labels: LiteMap::from_iter([("registry-sync.io/registry".to_string(), "legacy".to_string())]),
                annotations: LiteMap::from_iter([(
                    "registry-sync.io/sources".to_string(),
                    "legacy:orders".to_string(),
                )]),
            },
            Spec::ServiceEntry(ServiceEntrySpec {
                addresses: Vec::new(),
                hosts: vec!["orders.legacy".into()],
                location: istio::Location::MeshInternal,
                resolution: istio::Resolution::Static,
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
                        labels: Arc::new(LiteMap::from_iter([("version".to_string(), "v1".to_string())])),
                        locality: Some("eu/west".into()),
                        ..Default::default()
                    })
                    .collect(),
                workload_selector: None,
                export_to: Vec::new(),
            }),
        )
    }

    fn open(any: &Any) -> (proto::Metadata, Any) {
        assert_eq!(any.type_url, proto::RESOURCE_TYPE);
        let resource = proto::Resource::decode(any.value.as_slice()).unwrap();
        (resource.metadata.unwrap(), resource.body.unwrap())
    }

    #[test]
    fn an_entry_travels_in_the_mcp_envelope_named_namespace_slash_name_with_its_v1alpha3_body() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        let (meta, body) = open(&resource(&entry(&["10.0.0.1", "10.0.0.2"]), at));
        assert_eq!(meta.name, "mesh/legacy.orders");
        assert_eq!(meta.create_time, Some(Timestamp::from(at)));
        assert!(!meta.version.is_empty());
        assert_eq!(meta.labels["registry-sync.io/registry"], "legacy");
        assert_eq!(meta.annotations["registry-sync.io/sources"], "legacy:orders");
        assert!(!meta.annotations.contains_key("ResourceVersion"));
        assert_eq!(body.type_url, proto::SERVICE_ENTRY_BODY);
        let se = proto::ServiceEntry::decode(body.value.as_slice()).unwrap();
        assert_eq!(se.hosts, ["orders.legacy"]);
        assert_eq!(se.location, proto::Location::MeshInternal as i32);
        assert_eq!(se.resolution, proto::Resolution::Static as i32);
        assert_eq!(se.ports[0].name, "http-8080");
        assert_eq!(se.endpoints.len(), 2);
        assert_eq!(se.endpoints[1].address, "10.0.0.2");
        assert_eq!(se.endpoints[1].ports["http-8080"], 8080);
        assert_eq!(se.endpoints[1].locality, "eu/west");
    }

    #[test]
    fn the_version_and_the_bytes_follow_the_content_alone() {
        let at = SystemTime::now();
        let one = resource(&entry(&["10.0.0.1"]), at);
        let again = resource(&entry(&["10.0.0.1"]), at);
        assert_eq!(one, again, "encoding is deterministic");
        let (meta, _) = open(&one);
        let (later, _) = open(&resource(&entry(&["10.0.0.1"]), at + Duration::from_secs(60)));
        assert_eq!(
            meta.version, later.version,
            "the first-served time is not content"
        );
        let (changed, _) = open(&resource(&entry(&["10.0.0.9"]), at));
        assert_ne!(meta.version, changed.version);
    }
}
