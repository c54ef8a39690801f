use std::collections::BTreeMap;
use std::sync::Arc;

use registry_sync_istio::Location;

use crate::{HostTemplate, NamespaceRule, Override, Selection};

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
    /// Metadata keys that are never published as labels.
    pub secret_keys: SecretKeys,
    /// The ServiceEntries' `exportTo`; empty: the mesh's default.
    pub export_to: Vec<String>,
    /// Labels every ServiceEntry of the registry carries, set by the config (the ambient
    /// waypoint labels); they win over registry metadata of the same key.
    pub extra_labels: std::collections::BTreeMap<String, String>,
    /// Which services and instances are published.
    pub select: Selection,
    /// Per-service namespaces; `None`: every object goes to `namespace`.
    pub namespace_rule: Option<NamespaceRule>,
    /// The registry's kind, stamped on its objects with where each came from (see
    /// [`registry_sync_istio::PROVENANCE_KIND_LABEL`]); `None`: no provenance, the
    /// default, because turning it on rewrites every object once.
    pub provenance: Option<String>,
    /// Where ServiceEntries of this registry take a virtual IP from; `None`: they get
    /// none (istiod may allocate one for Kubernetes objects).
    pub vip_range: Option<crate::VipRange>,
    /// `health: status`: unhealthy instances stay as WorkloadEntries whose status says
    /// so, instead of leaving (and coming back) as objects.
    pub health_in_status: bool,
    /// With health in status: how long the WorkloadEntry of an instance the registry
    /// stopped listing stays (unhealthy) before it is deleted, so an instance that
    /// re-registers within it costs two status patches instead of a delete and a create.
    pub drain_delay: Option<std::time::Duration>,
}

impl RegistrySettings {
    /// The defaults of a registry entry that sets nothing but its hosts and namespace.
    pub fn new(hosts: HostTemplate, namespace: impl Into<String>) -> RegistrySettings {
        RegistrySettings {
            hosts,
            namespace: namespace.into(),
            endpoints: EndpointMode::default(),
            location: Location::MeshInternal,
            sidecar: false,
            secret_keys: SecretKeys::default(),
            export_to: Vec::new(),
            extra_labels: BTreeMap::new(),
            select: Selection::default(),
            namespace_rule: None,
            provenance: None,
            vip_range: None,
            health_in_status: false,
            drain_delay: None,
        }
    }

    /// The namespace a service's objects go to, and why not the template's when a rule
    /// was set but not followed.
    pub fn namespace_for(&self, registry: &str, service: &registry_sync_catalog::Service) -> crate::Chosen {
        match &self.namespace_rule {
            Some(rule) => rule.choose(registry, &self.namespace, service),
            None => crate::Chosen {
                namespace: self.namespace.clone(),
                fallback: None,
            },
        }
    }
}

/// Metadata keys that carry secrets and must never become labels: labels are readable by
/// anyone who may list ServiceEntries, and end up in istiod's and every proxy's config.
/// A key matches when, lowercased and with everything but letters and digits removed,
/// it contains one of the patterns (so `access-key`, `AccessKey` and `access_key_id`
/// all match `accesskey`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretKeys(Arc<[String]>);

/// Dubbo's `token`, passwords (`pass`, `pwd`), secrets, credentials, AWS-style access
/// keys, API and private keys, bearer tokens and JWTs, anything of authentication or
/// sessions (`auth` also covers `oauth` and `authorization`), cookies and database DSNs
/// (which carry their password). A harmless key that merely contains one of these
/// (`bypass`) loses its label: a label too few costs far less than a secret published.
pub const DEFAULT_SECRET_KEYS: [&str; 16] = [
    "token",
    "password",
    "passwd",
    "pass",
    "pwd",
    "secret",
    "credential",
    "accesskey",
    "apikey",
    "privatekey",
    "jwt",
    "bearer",
    "auth",
    "session",
    "cookie",
    "dsn",
];

/// A value that carries credentials whatever its key: a URL with `user:password@` (or
/// `token@`) before its host, as in `postgres://app:hunter2@db:5432/orders`.
pub fn carries_userinfo(value: &str) -> bool {
    let authority = match value.split_once("://") {
        Some((_, rest)) => rest,
        None => value,
    };
    let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
    match authority.rsplit_once('@') {
        // Without a scheme, only `user:password@host` is taken for credentials: a
        // plain `team@example.com` is an address, not a secret.
        Some((userinfo, _)) => value.contains("://") || userinfo.contains(':'),
        None => false,
    }
}

impl Default for SecretKeys {
    fn default() -> Self {
        SecretKeys::new(DEFAULT_SECRET_KEYS)
    }
}

fn normalize(key: &str) -> String {
    key.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

impl SecretKeys {
    pub fn new<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> SecretKeys {
        SecretKeys(
            patterns
                .into_iter()
                .map(|p| normalize(p.as_ref()))
                .filter(|p| !p.is_empty())
                .collect(),
        )
    }

    pub fn matches(&self, key: &str) -> bool {
        let key = normalize(key);
        self.0.iter().any(|pattern| key.contains(pattern.as_str()))
    }
}

/// Everything translation needs besides the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// This installation's identity, stamped on every object.
    pub instance: String,
    /// Keyed by registry name. A registry of the catalog without settings is ignored.
    pub registries: BTreeMap<String, RegistrySettings>,
    /// The config's `overrides`, in its order.
    pub overrides: Vec<Override>,
}
