use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use litemap::LiteMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{API_VERSION, CONTENT_HASH_ANNOTATION, SPEC_HASH_ANNOTATION};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    ServiceEntry,
    WorkloadEntry,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
        }
    }

    /// The resource name in API paths.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::ServiceEntry => "serviceentries",
            Kind::WorkloadEntry => "workloadentries",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies an object in a sink. Orders by kind, namespace, name — the order
/// `render` prints in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Labels and annotations are flat sorted vectors: a handful each, on every object of
/// an estate (a map's first node would hold room for eleven).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub name: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "LiteMap::is_empty")]
    pub labels: LiteMap<String, String>,
    #[serde(default, skip_serializing_if = "LiteMap::is_empty")]
    pub annotations: LiteMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    MeshInternal,
    MeshExternal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    Static,
    Dns,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    pub number: u32,
    pub protocol: String,
    pub name: String,
}

/// An endpoint inline in a ServiceEntry and the spec of a WorkloadEntry have the same
/// shape in Istio's API (`WorkloadEntry`), so one type serves both.
///
/// An estate holds one endpoint per instance, so its layout is kept small: the maps are
/// flat sorted vectors behind an `Arc`, so that the endpoints of one service, which
/// mostly carry the same ports and one of a few label sets, share one copy of each
/// (see [`SharedMaps`]); the optional texts are boxed strings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub address: String,
    #[serde(default, skip_serializing_if = "is_empty_map")]
    pub ports: Arc<LiteMap<String, u32>>,
    #[serde(default, skip_serializing_if = "is_empty_map")]
    pub labels: Arc<LiteMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<Box<str>>,
}

fn is_empty_map<K, V>(map: &Arc<LiteMap<K, V>>) -> bool {
    map.is_empty()
}

/// Hands out one `Arc` per distinct map among those it is given, so that equal port
/// maps and label sets of a service's endpoints are stored once. It looks only at the
/// last few distinct maps: endpoints of one service repeat a handful of label sets
/// (versions, zones), and a set unique to its endpoint is simply not shared.
#[derive(Debug)]
pub struct SharedMaps<K, V> {
    recent: Vec<Arc<LiteMap<K, V>>>,
}

impl<K, V> Default for SharedMaps<K, V> {
    fn default() -> Self {
        SharedMaps { recent: Vec::new() }
    }
}

impl<K: Ord + PartialEq, V: PartialEq> SharedMaps<K, V> {
    const RECENT: usize = 8;

    pub fn share(&mut self, map: LiteMap<K, V>) -> Arc<LiteMap<K, V>> {
        if let Some(found) = self.recent.iter().find(|known| ***known == map) {
            return Arc::clone(found);
        }
        let shared = Arc::new(map);
        if self.recent.len() == Self::RECENT {
            self.recent.remove(0);
        }
        self.recent.push(Arc::clone(&shared));
        shared
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadSelector {
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    pub hosts: Vec<String>,
    /// Virtual IPs (one per entry, from a registry's `vip_range`); empty: none, and
    /// istiod may allocate one itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    pub location: Location,
    pub resolution: Resolution,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// The namespaces that see the service (`.`: its own, `*`: all); empty: the mesh's
    /// default (`meshConfig.defaultServiceExportTo`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Spec {
    ServiceEntry(ServiceEntrySpec),
    WorkloadEntry(Endpoint),
}

/// A complete object as a sink writes it: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IstioObject {
    api_version: &'static str,
    pub kind: Kind,
    pub metadata: ObjectMeta,
    pub spec: Spec,
    /// With health checks on (the WorkloadEntries of a registry with `health: status`):
    /// whether the instance serves. It is written as the `Healthy` condition of the
    /// object's status, not into the object, so a flip costs one status patch and no
    /// rewrite; it is outside the content hash for the same reason.
    #[serde(skip)]
    pub health: Option<bool>,
}

impl IstioObject {
    /// Builds the object and stamps its content hash, so every object that leaves
    /// translation carries the hash the plan compares.
    pub fn new(metadata: ObjectMeta, spec: Spec) -> IstioObject {
        let kind = match spec {
            Spec::ServiceEntry(_) => Kind::ServiceEntry,
            Spec::WorkloadEntry(_) => Kind::WorkloadEntry,
        };
        let mut object = IstioObject {
            api_version: API_VERSION,
            kind,
            metadata,
            spec,
            health: None,
        };
        object
            .metadata
            .annotations
            .insert(SPEC_HASH_ANNOTATION.to_string(), spec_hash(&object.spec));
        let hash = object.compute_hash();
        object
            .metadata
            .annotations
            .insert(CONTENT_HASH_ANNOTATION.to_string(), hash);
        object
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            kind: self.kind,
            namespace: self.metadata.namespace.clone(),
            name: self.metadata.name.clone(),
        }
    }

    /// The registry services it was made from, from its sources annotation.
    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.metadata
            .annotations
            .get(crate::SOURCES_ANNOTATION)
            .map(|v| split_sources(v))
            .into_iter()
            .flatten()
    }

    /// The object with its health kept in status (see [`IstioObject::health`]).
    pub fn with_health(mut self, healthy: bool) -> IstioObject {
        self.health = Some(healthy);
        self
    }

    /// Endpoints it carries: inline endpoints of a ServiceEntry, 1 for a WorkloadEntry
    /// (0 when its status says it is unhealthy: it receives no traffic).
    pub fn endpoint_count(&self) -> usize {
        match &self.spec {
            Spec::ServiceEntry(spec) => spec.endpoints.len(),
            Spec::WorkloadEntry(_) => usize::from(self.health != Some(false)),
        }
    }

    /// A ServiceEntry's first host and first address.
    pub fn vip(&self) -> Option<(String, String)> {
        match &self.spec {
            Spec::ServiceEntry(spec) => Some((spec.hosts.first()?.clone(), spec.addresses.first()?.clone())),
            Spec::WorkloadEntry(_) => None,
        }
    }

    /// The content hash stamped by [`IstioObject::new`].
    pub fn content_hash(&self) -> &str {
        self.metadata
            .annotations
            .get(CONTENT_HASH_ANNOTATION)
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// SHA-256 over the labels, the other annotations and the spec in their canonical
    /// JSON form, cut to 16 hex digits (64 bits: collisions are out of reach for any
    /// estate, and the annotation stays short).
    fn compute_hash(&self) -> String {
        #[derive(Serialize)]
        struct Hashed<'a> {
            labels: &'a LiteMap<String, String>,
            annotations: BTreeMap<&'a str, &'a str>,
            spec: &'a Spec,
        }
        let annotations = self
            .metadata
            .annotations
            .iter()
            .filter(|(k, _)| k.as_str() != CONTENT_HASH_ANNOTATION)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let hashed = Hashed {
            labels: &self.metadata.labels,
            annotations,
            spec: &self.spec,
        };
        short_sha256(&hashed)
    }
}

/// The spec's hash, as stamped in [`SPEC_HASH_ANNOTATION`].
pub(crate) fn spec_hash(spec: &Spec) -> String {
    short_sha256(spec)
}

/// SHA-256 of the canonical JSON form, as 16 hex digits.
fn short_sha256(value: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(value).expect("plain data always serializes to JSON");
    let digest = Sha256::digest(&bytes);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The registry part of one `registry:service` entry of
/// [`SOURCES_ANNOTATION`](crate::SOURCES_ANNOTATION). Registry names never contain `:`
/// (the config refuses them), service names may.
pub fn registry_of_source(source: &str) -> &str {
    source.split_once(':').map_or(source, |(registry, _)| registry)
}

/// The entries of a [`SOURCES_ANNOTATION`](crate::SOURCES_ANNOTATION) value.
pub fn split_sources(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(endpoint_address: &str) -> IstioObject {
        IstioObject::new(
            ObjectMeta {
                name: "a".into(),
                namespace: "ns".into(),
                ..Default::default()
            },
            Spec::ServiceEntry(ServiceEntrySpec {
                addresses: Vec::new(),
                hosts: vec!["a.example".into()],
                location: Location::MeshInternal,
                resolution: Resolution::Static,
                ports: vec![ServicePort {
                    number: 80,
                    protocol: "HTTP".into(),
                    name: "http-80".into(),
                }],
                endpoints: vec![Endpoint {
                    address: endpoint_address.into(),
                    ..Default::default()
                }],
                workload_selector: None,
                export_to: Vec::new(),
            }),
        )
    }

    #[test]
    fn content_hash_changes_with_the_spec_and_only_then() {
        assert_eq!(entry("10.0.0.1").content_hash(), entry("10.0.0.1").content_hash());
        assert_ne!(entry("10.0.0.1").content_hash(), entry("10.0.0.2").content_hash());
        assert_eq!(entry("10.0.0.1").content_hash().len(), 16);
    }

    #[test]
    fn content_hash_covers_labels() {
        let a = entry("10.0.0.1");
        let mut meta = a.metadata.clone();
        meta.labels.insert("x".into(), "y".into());
        let b = IstioObject::new(meta, a.spec.clone());
        assert_ne!(a.content_hash(), b.content_hash());
    }
}
