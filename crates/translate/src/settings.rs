use std::collections::BTreeMap;

use registry_sync_istio::Location;

use crate::HostTemplate;

/// How endpoints of a service are published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EndpointMode {
    /// Inside the ServiceEntry: one object per service.
    Inline,
    /// One WorkloadEntry per instance, selected by the ServiceEntry's `workloadSelector`.
    WorkloadEntry,
    /// Inline up to [`crate::AUTO_INLINE_LIMIT`] endpoints, WorkloadEntries above.
    #[default]
    Auto,
}

/// Per-registry translation settings (from the registry's config block).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrySettings {
    pub hosts: HostTemplate,
    /// Kubernetes namespace of the generated objects.
    pub namespace: String,
    pub endpoints: EndpointMode,
    pub location: Location,
    /// Every instance of this registry runs an Istio sidecar, so its endpoints carry
    /// `security.istio.io/tlsMode: istio` and receive mTLS.
    pub sidecar: bool,
}

/// Everything translation needs besides the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// This installation's identity, stamped on every object.
    pub instance: String,
    /// Keyed by registry name. A registry of the catalog without settings is ignored.
    pub registries: BTreeMap<String, RegistrySettings>,
}
