//! Istio `networking.istio.io/v1` ServiceEntry and WorkloadEntry as registry-sync
//! writes them.
//!
//! Only the fields registry-sync owns are modelled, and every optional field is left out
//! of the serialized form when unset: server-side apply claims exactly the fields sent,
//! and a YAML file lists exactly what matters. Maps are `BTreeMap`s and lists are built
//! sorted, so the same object always serializes to the same bytes — which is what makes
//! the content hash in [`CONTENT_HASH_ANNOTATION`] a reliable "did anything change".

#![forbid(unsafe_code)]

mod object;
mod yaml;

/// The map type of labels, annotations and endpoint fields.
pub use litemap::LiteMap;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub use object::{
    Endpoint, IstioObject, Kind, Location, ObjectKey, ObjectMeta, Resolution, ServiceEntrySpec, ServicePort,
    SharedMaps, Spec, WorkloadSelector, registry_of_source, split_sources,
};
/// Desired objects by key. Shared, because the same object sits in the index, in
/// every sink's plan and in the sink's write queue; cloning it would cost its size each time.
pub type Desired = std::collections::BTreeMap<ObjectKey, std::sync::Arc<IstioObject>>;

pub use yaml::{HeldObject, RenderError, held_from_json, parse_held, render_documents, render_object};

pub const API_GROUP: &str = "networking.istio.io";
pub const API_VERSION: &str = "networking.istio.io/v1";

/// Marks every object registry-sync creates; the only objects it will ever change.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "registry-sync";
/// Names the registry an object came from (the first one, for a merged entry).
pub const REGISTRY_LABEL: &str = "registry-sync.io/registry";
/// Names the installation, so two installations never touch each other's objects.
pub const INSTANCE_LABEL: &str = "registry-sync.io/instance";
/// Ties WorkloadEntries to their ServiceEntry's `workloadSelector`.
pub const SERVICE_LABEL: &str = "registry-sync.io/service";
/// Hash of the object's labels and spec; equal hashes mean no write is needed.
pub const CONTENT_HASH_ANNOTATION: &str = "registry-sync.io/content-hash";
/// Hash of the spec alone. Reading an object back, registry-sync recomputes it from the
/// spec it finds: a mismatch means someone edited the spec by hand, and the object is
/// written back. Labels and annotations others add are not covered, so a controller
/// that adds its own tracking label does not cause a rewrite on every pass.
pub const SPEC_HASH_ANNOTATION: &str = "registry-sync.io/spec-hash";
/// With provenance on: the kind of registry an object came from (`consul`, `nacos`, ...).
pub const PROVENANCE_KIND_LABEL: &str = "registry-sync.io/registry-kind";
/// With provenance on: the registry-side namespace or group of the service.
pub const ORIGIN_NAMESPACE_ANNOTATION: &str = "registry-sync.io/origin-namespace";
/// Istio's annotation that makes a WorkloadEntry's health its status's `Healthy`
/// condition (absent or not `True`: no traffic).
pub const HEALTH_CHECKS_ANNOTATION: &str = "proxy.istio.io/health-checks-enabled";
/// The condition type istiod reads for a WorkloadEntry with health checks enabled.
pub const HEALTHY_CONDITION: &str = "Healthy";
/// The registry services an object was made from (`registry:namespace/service`, comma separated).
pub const SOURCES_ANNOTATION: &str = "registry-sync.io/sources";
/// The label key prefix registry-sync reserves for itself; registry metadata never
/// overrides a key under it.
pub const RESERVED_LABEL_PREFIX: &str = "registry-sync.io/";
/// Istio's label that tells the mesh an endpoint runs a sidecar and accepts mTLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
