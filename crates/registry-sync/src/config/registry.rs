//! One entry of `registries`: the keys every kind shares (name, kind, namespace,
//! hosts, endpoints, location, sidecar) are read here; every other key belongs to the
//! kind, whose own module in the sources crate checks it
//! (`registry_sync_sources::registry`). This module names no kind.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use registry_sync_istio::Location;
use registry_sync_sources::registry::{self, Context};
use registry_sync_translate::{
    EndpointMode, HostTemplate, RegistrySettings, SecretKeys, Selection, VipRange,
};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;

use super::selection::{RawSelect, namespace_rule};
use super::{ConfigError, RegistryConfig, is_dns_label};

/// The longest `drain_delay`: an hour is far beyond any connection drain, and every
/// deadline computed from it stays far inside the clock's range.
pub const MAX_DRAIN_DELAY: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(Clone, Copy, Debug)]
pub(crate) enum RawEndpointMode {
    Inline,
    WorkloadEntry,
    Auto,
}

/// Read by hand so that a list under `endpoints` (a registry's addresses, written where
/// the endpoint mode goes) is told where they belong.
impl<'de> Deserialize<'de> for RawEndpointMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const WHAT: &str = "`endpoints` is the endpoint mode: inline, workload-entry or auto; a registry's addresses or URLs go in `address`";
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(mode) => match mode.trim() {
                "inline" => Ok(RawEndpointMode::Inline),
                "workload-entry" => Ok(RawEndpointMode::WorkloadEntry),
                "auto" => Ok(RawEndpointMode::Auto),
                // Not a secret's place: the mode is one of three words.
                other => Err(de::Error::custom(format!(
                    "unknown endpoint mode `{other}`; {WHAT}"
                ))),
            },
            _ => Err(de::Error::custom(WHAT)),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RawLocation {
    MeshInternal,
    MeshExternal,
}

/// The ranges istiod hands out ServiceEntry addresses from by default (its IP
/// auto-allocation, IPv4 and IPv6).
pub const ISTIO_VIP_RANGES: [&str; 2] = ["240.240.0.0/16", "2001:2::/48"];

/// Declares the keys every registry entry takes, whatever its kind, once: the list
/// ([`COMMON_KEYS`]), the raw entry's fields and their reading all come from it. Every
/// key not declared here belongs to the kind's block, with the line it was written on.
macro_rules! common_keys {
    ($( $key:ident : $ty:ty = $default:tt ),* $(,)?) => {
        /// The keys every registry entry takes, whatever its kind.
        pub const COMMON_KEYS: &[&str] = &[$(stringify!($key)),*];

        pub(super) struct RawRegistry {
            $( $key: common_keys!(@field $ty, $default), )*
            /// The kind's keys, as written, and the line of each.
            block: serde_json::Map<String, serde_json::Value>,
            lines: BTreeMap<String, u64>,
        }

        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = RawRegistry;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a registry: name, kind, namespace and the kind's keys")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRegistry, A::Error> {
                $( let mut $key: Option<$ty> = None; )*
                let mut block = serde_json::Map::new();
                let mut lines = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        $( stringify!($key) => $key = Some(map.next_value()?), )*
                        _ => {
                            let value: Spanned<serde_json::Value> = map.next_value()?;
                            lines.insert(key.clone(), value.referenced.line());
                            block.insert(key, value.value);
                        }
                    }
                }
                Ok(RawRegistry {
                    $( $key: common_keys!(@take $key, $default), )*
                    block,
                    lines,
                })
            }
        }
    };
    // `optional`: absent is `None`; `required`: absent is an error; otherwise the value
    // given is the default. A key written as null is an error in every case.
    (@field $ty:ty, optional) => { Option<$ty> };
    (@field $ty:ty, $default:tt) => { $ty };
    (@take $key:ident, optional) => { $key };
    (@take $key:ident, required) => {
        $key.ok_or_else(|| de::Error::missing_field(stringify!($key)))?
    };
    (@take $key:ident, $default:tt) => { $key.unwrap_or($default) };
}

common_keys! {
    name: Spanned<String> = required,
    kind: Spanned<String> = required,
    namespace: Spanned<String> = required,
    hosts: Spanned<String> = optional,
    endpoints: RawEndpointMode = optional,
    location: RawLocation = optional,
    sidecar: bool = false,
    export_to: Spanned<Vec<String>> = optional,
    use_waypoint: Spanned<String> = optional,
    use_waypoint_namespace: Spanned<String> = optional,
    ingress_use_waypoint: bool = false,
    select: RawSelect = optional,
    namespace_from: Spanned<String> = optional,
    allowed_namespaces: Spanned<Vec<String>> = optional,
    provenance: bool = false,
    vip_range: Spanned<String> = optional,
    vip_range_shared_with_istio: bool = false,
    health: Spanned<String> = optional,
    drain_delay: Spanned<String> = optional,
}

impl<'de> Deserialize<'de> for RawRegistry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EntryVisitor)
    }
}

struct EntryVisitor;

impl RawRegistry {
    pub(super) fn name_line(&self) -> u64 {
        self.name.referenced.line()
    }

    pub(super) fn health_line(&self) -> Option<u64> {
        self.health.as_ref().map(|h| h.referenced.line())
    }
}

pub(super) struct Entry<'a> {
    pub index: usize,
    pub base: &'a Path,
    pub secret_keys: &'a SecretKeys,
    pub invalid: &'a dyn Fn(u64, String, String) -> ConfigError,
}

impl Entry<'_> {
    fn error(&self, line: u64, field: &str, message: impl Into<String>) -> ConfigError {
        (self.invalid)(
            line,
            format!("registries[{}].{field}", self.index),
            message.into(),
        )
    }

    /// Ambient: `istio.io/use-waypoint` (with its namespace) routes the ServiceEntries
    /// through a waypoint; `istio.io/ingress-use-waypoint` makes ingress gateways use it.
    fn waypoint_labels(
        &self,
        r: &RawRegistry,
        kind_line: u64,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut labels = BTreeMap::new();
        let name = |value: &Spanned<String>, key: &str| {
            let text = value.value.trim();
            if is_dns_label(text) {
                Ok(text.to_string())
            } else {
                Err(self.error(
                    value.referenced.line(),
                    key,
                    format!(
                        "{text:?} is not a Kubernetes name (lowercase letters, digits and '-', at most 63)"
                    ),
                ))
            }
        };
        if let Some(waypoint) = &r.use_waypoint {
            labels.insert(
                "istio.io/use-waypoint".to_string(),
                name(waypoint, "use_waypoint")?,
            );
        }
        if let Some(namespace) = &r.use_waypoint_namespace {
            if r.use_waypoint.is_none() {
                return Err(self.error(
                    namespace.referenced.line(),
                    "use_waypoint_namespace",
                    "needs `use_waypoint`, the waypoint's name",
                ));
            }
            labels.insert(
                "istio.io/use-waypoint-namespace".to_string(),
                name(namespace, "use_waypoint_namespace")?,
            );
        }
        if r.ingress_use_waypoint {
            if r.use_waypoint.is_none() {
                return Err(self.error(
                    kind_line,
                    "ingress_use_waypoint",
                    "needs `use_waypoint`, the waypoint's name",
                ));
            }
            labels.insert("istio.io/ingress-use-waypoint".to_string(), "true".to_string());
        }
        Ok(labels)
    }

    pub(super) fn check(&self, r: RawRegistry) -> Result<RegistryConfig, ConfigError> {
        let name = r.name.value.clone();
        if !is_dns_label(&name) {
            return Err(self.error(
                r.name.referenced.line(),
                "name",
                format!("{name:?} must be a DNS label (lowercase letters, digits and '-', at most 63)"),
            ));
        }
        if !is_dns_label(&r.namespace.value) {
            return Err(self.error(
                r.namespace.referenced.line(),
                "namespace",
                format!("{:?} is not a valid Kubernetes namespace name", r.namespace.value),
            ));
        }
        let kind = r.kind.value.trim();
        let kind_line = r.kind.referenced.line();
        if !registry::KINDS.contains(&kind) {
            return Err(self.error(
                kind_line,
                "kind",
                format!(
                    "{kind:?} is not a registry kind; use one of {}",
                    registry::KINDS.join(", ")
                ),
            ));
        }
        let extra_labels = self.waypoint_labels(&r, kind_line)?;
        let located = |(line, key, message): (u64, String, String)| self.error(line, &key, message);
        let select = match &r.select {
            Some(select) => select.check().map_err(located)?,
            None => Selection::default(),
        };
        let namespace_rule = namespace_rule(
            r.namespace_from.as_ref(),
            r.allowed_namespaces.as_ref(),
            &r.namespace.value,
            kind_line,
        )
        .map_err(located)?;
        let health_in_status = match &r.health {
            None => false,
            Some(health) => match health.value.trim() {
                "endpoints" => false,
                "status" if matches!(r.endpoints, Some(RawEndpointMode::WorkloadEntry)) => true,
                "status" => {
                    return Err(self.error(
                        health.referenced.line(),
                        "health",
                        "`status` keeps health in each WorkloadEntry's status, so it needs `endpoints: workload-entry`",
                    ));
                }
                _ => {
                    return Err(self.error(
                        health.referenced.line(),
                        "health",
                        "is `endpoints` (unhealthy instances leave the endpoints, the default) or `status` (they stay, marked unhealthy in their WorkloadEntry's status)",
                    ));
                }
            },
        };
        let drain_delay = match &r.drain_delay {
            None => None,
            Some(delay) if !health_in_status => {
                return Err(self.error(
                    delay.referenced.line(),
                    "drain_delay",
                    "needs `health: status`: the entry of a departed instance drains as unhealthy, which only status can say",
                ));
            }
            Some(delay) => {
                let parsed =
                    registry_sync_sources::config::parse_duration(&delay.value).ok_or_else(|| {
                        self.error(
                            delay.referenced.line(),
                            "drain_delay",
                            "is not a duration: write it as `30s`, `2m` or `500ms`",
                        )
                    })?;
                if parsed > MAX_DRAIN_DELAY {
                    return Err(self.error(
                        delay.referenced.line(),
                        "drain_delay",
                        format!(
                            "is longer than {}s: a drain lets connections in flight finish, and an instance the registry no longer lists must not be kept for longer",
                            MAX_DRAIN_DELAY.as_secs()
                        ),
                    ));
                }
                Some(parsed)
            }
        };
        let vip_range = match &r.vip_range {
            Some(range) => {
                let parsed = VipRange::parse(&range.value)
                    .map_err(|e| self.error(range.referenced.line(), "vip_range", e.to_string()))?;
                if let Some(istio) = ISTIO_VIP_RANGES
                    .iter()
                    .find(|istio| !r.vip_range_shared_with_istio && parsed.overlaps(istio))
                {
                    return Err(self.error(
                        range.referenced.line(),
                        "vip_range",
                        format!(
                            "overlaps {istio}, where istiod allocates addresses for ServiceEntries itself: the same address could go to two services; choose another range (240.241.0.0/16, say), or, if istiod's allocation is off, set `vip_range_shared_with_istio: true`"
                        ),
                    ));
                }
                Some(parsed)
            }
            None => None,
        };
        let cx = Context { base: self.base };
        let source = match registry::configure(kind, serde_json::Value::Object(r.block), &cx) {
            None => {
                return Err(self.error(
                    kind_line,
                    "kind",
                    format!("this build of registry-sync does not include the `{kind}` registry (Cargo feature `{kind}`)"),
                ));
            }
            Some(Err(e)) => {
                let line = r.lines.get(&e.key).copied().unwrap_or(kind_line);
                return Err(self.error(line, &e.key, with_owner(kind, &e.key, e.message)));
            }
            Some(Ok(source)) => source,
        };
        let export_to = match &r.export_to {
            None => Vec::new(),
            Some(list) => {
                check_export_to(&list.value)
                    .map_err(|m| self.error(list.referenced.line(), "export_to", m))?;
                list.value.iter().map(|v| v.trim().to_string()).collect()
            }
        };
        let hosts = match &r.hosts {
            Some(h) => HostTemplate::parse(&h.value)
                .map_err(|e| self.error(h.referenced.line(), "hosts", e.to_string()))?,
            None => HostTemplate::parse(source.default_hosts()).expect("built-in templates are valid"),
        };
        Ok(RegistryConfig {
            name,
            source,
            settings: RegistrySettings {
                hosts,
                namespace: r.namespace.value,
                endpoints: match r.endpoints {
                    Some(RawEndpointMode::Inline) => EndpointMode::Inline,
                    Some(RawEndpointMode::WorkloadEntry) => EndpointMode::WorkloadEntry,
                    Some(RawEndpointMode::Auto) | None => EndpointMode::Auto,
                },
                location: match r.location {
                    Some(RawLocation::MeshExternal) => Location::MeshExternal,
                    Some(RawLocation::MeshInternal) | None => Location::MeshInternal,
                },
                sidecar: r.sidecar,
                secret_keys: self.secret_keys.clone(),
                export_to,
                extra_labels,
                select,
                namespace_rule,
                provenance: r.provenance.then(|| kind.to_string()),
                vip_range,
                health_in_status,
                drain_delay,
            },
        })
    }
}

/// `exportTo` as Istio validates it: `.` (the objects' own namespace), `*` (every
/// namespace) or namespace names, none twice, and `*` alone.
pub(crate) fn check_export_to(values: &[String]) -> Result<(), String> {
    if values.is_empty() {
        return Err(
            "must list at least one namespace, `.` (the objects' own) or `*` (all); leave it out for the mesh's default"
                .into(),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for value in values {
        let value = value.trim();
        if value != "." && value != "*" && !is_dns_label(value) {
            return Err(format!("{value:?} is not `.`, `*` or a namespace name"));
        }
        if !seen.insert(value) {
            return Err(format!("{value:?} is listed twice"));
        }
    }
    if seen.contains("*") && seen.len() > 1 {
        return Err("`*` already exports to every namespace; list it alone".into());
    }
    Ok(())
}

/// A key of another kind: says whose it is.
fn with_owner(kind: &str, key: &str, message: String) -> String {
    if !message.contains("does not apply") {
        return message;
    }
    let owners: Vec<&str> = registry::KINDS
        .iter()
        .copied()
        .filter(|k| *k != kind && registry::keys(k).is_some_and(|keys| keys.contains(&key)))
        .collect();
    match owners.as_slice() {
        [] => message,
        owners => format!("{message} (`{key}` is a key of {})", owners.join(", ")),
    }
}

#[cfg(all(test, feature = "etcd", feature = "zookeeper"))]
#[path = "registries_tests.rs"]
mod tests;

#[cfg(all(test, feature = "dns"))]
#[path = "dns_tests.rs"]
mod dns_tests;

#[cfg(all(test, feature = "cloudmap"))]
#[path = "cloudmap_tests.rs"]
mod cloudmap_tests;

#[cfg(all(test, feature = "nacos"))]
#[path = "nacos_tests.rs"]
mod nacos_tests;
