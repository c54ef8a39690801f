//! The resources the stand-in serves and what it needs to know about each.

use kube::core::{ApiResource, GroupVersionKind};

/// A resource type served by the stand-in. All of them are namespaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// `networking.istio.io/v1` `ServiceEntry` (`serviceentries`).
    ServiceEntry,
    /// `networking.istio.io/v1` `WorkloadEntry` (`workloadentries`).
    WorkloadEntry,
    /// `coordination.k8s.io/v1` `Lease` (`leases`).
    Lease,
}

impl Resource {
    /// Every served resource.
    pub const ALL: [Resource; 3] = [Resource::ServiceEntry, Resource::WorkloadEntry, Resource::Lease];

    /// API group, e.g. `networking.istio.io`.
    pub fn group(self) -> &'static str {
        match self {
            Resource::ServiceEntry | Resource::WorkloadEntry => "networking.istio.io",
            Resource::Lease => "coordination.k8s.io",
        }
    }

    /// API version within the group: always `v1`.
    pub fn version(self) -> &'static str {
        "v1"
    }

    /// `group/version`, as written in `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            Resource::ServiceEntry | Resource::WorkloadEntry => "networking.istio.io/v1",
            Resource::Lease => "coordination.k8s.io/v1",
        }
    }

    /// The kind, e.g. `ServiceEntry`.
    pub fn kind(self) -> &'static str {
        match self {
            Resource::ServiceEntry => "ServiceEntry",
            Resource::WorkloadEntry => "WorkloadEntry",
            Resource::Lease => "Lease",
        }
    }

    /// The plural used in paths, e.g. `serviceentries`.
    pub fn plural(self) -> &'static str {
        match self {
            Resource::ServiceEntry => "serviceentries",
            Resource::WorkloadEntry => "workloadentries",
            Resource::Lease => "leases",
        }
    }

    /// The singular name, e.g. `serviceentry`.
    pub fn singular(self) -> &'static str {
        match self {
            Resource::ServiceEntry => "serviceentry",
            Resource::WorkloadEntry => "workloadentry",
            Resource::Lease => "lease",
        }
    }

    /// The kind of a list, e.g. `ServiceEntryList`.
    pub fn list_kind(self) -> String {
        format!("{}List", self.kind())
    }

    /// `plural.group`, as in error messages: `serviceentries.networking.istio.io`.
    pub fn qualified_plural(self) -> String {
        format!("{}.{}", self.plural(), self.group())
    }

    /// `Kind.group`, as in validation error messages: `ServiceEntry.networking.istio.io`.
    pub(crate) fn qualified_kind(self) -> String {
        format!("{}.{}", self.kind(), self.group())
    }

    /// A kube-rs [`ApiResource`] for use with `Api::<DynamicObject>`.
    pub fn api_resource(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group(), self.version(), self.kind()),
            self.plural(),
        )
    }

    /// Custom resources (the Istio kinds) have a `status` subresource: writes to the main
    /// resource keep the stored status. Leases have no status.
    pub(crate) fn has_status_subresource(self) -> bool {
        !matches!(self, Resource::Lease)
    }

    /// Custom resources refuse an update without `metadata.resourceVersion`; built-in
    /// types such as Lease allow an unconditional update.
    pub(crate) fn allows_unconditional_update(self) -> bool {
        matches!(self, Resource::Lease)
    }

    /// The API server answers a delete of a custom resource with the deleted object, and of
    /// a Lease with a `Status`.
    pub(crate) fn delete_returns_object(self) -> bool {
        !matches!(self, Resource::Lease)
    }

    /// Strategic merge patch is refused (415) for custom resources.
    pub(crate) fn accepts_strategic_merge(self) -> bool {
        matches!(self, Resource::Lease)
    }

    pub(crate) fn short_names(self) -> &'static [&'static str] {
        match self {
            Resource::ServiceEntry => &["se"],
            Resource::WorkloadEntry => &["we"],
            Resource::Lease => &[],
        }
    }

    pub(crate) fn from_path(group: &str, version: &str, plural: &str) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|r| r.group() == group && r.version() == version && r.plural() == plural)
    }

    pub(crate) fn in_group_version(group: &str, version: &str) -> Vec<Resource> {
        Resource::ALL
            .into_iter()
            .filter(|r| r.group() == group && r.version() == version)
            .collect()
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.plural())
    }
}
