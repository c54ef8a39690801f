//! Translation: the catalog in, Istio objects out — a pure function.
//!
//! ```text
//!  Catalog ──group by (namespace, host)──▶ HostGroup ──translate_group──▶ ServiceEntry
//!                                                                      └▶ WorkloadEntry*
//! ```
//!
//! Services are first assigned a host from their registry's template. All services that
//! land on the same host in the same Kubernetes namespace form one group and become one
//! ServiceEntry (Istio refuses two entries with one host in a namespace, and a service
//! registered in two registries during a migration should show up once). Each group is
//! translated independently, so a change in one service only needs its group redone.
//!
//! No I/O, no clock, no randomness: the same catalog and settings always give the same
//! objects, byte for byte. What cannot be published is reported in
//! [`Translation::skipped`] with the registry, service, instance and reason.

#![forbid(unsafe_code)]

mod explain;
mod group;
pub mod names;
mod namespaces;
mod overrides;
mod select;
mod settings;
mod template;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod vips;

use std::collections::BTreeMap;

use registry_sync_catalog::{Catalog, Service, Skipped};
use registry_sync_istio::IstioObject;

pub use explain::{Explanation, Found, GroupInputs, InstanceFate, Lookup, MAX_FATES, Unplaced};
pub use group::{AUTO_INLINE_LIMIT, AUTO_INLINE_MAX_BYTES, INLINE_ENDPOINT_LIMIT, RESERVED_PORTS};
pub use namespaces::{Chosen, Fallback, NamespaceRule, NamespaceTemplate, NamespaceTemplateError};
pub use overrides::{OVERRIDES_ANNOTATION, Override, PortOverride};
pub use select::{Glob, GlobError, MetadataMatch, Selection};
pub use settings::{DEFAULT_SECRET_KEYS, EndpointMode, RegistrySettings, SecretKeys, Settings};
pub use template::{HostError, HostTemplate, TemplateError};
pub use vips::{Allocator, VipRange, VipRangeError};

/// One ServiceEntry's worth of input: the namespace and host it is published under.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    pub namespace: String,
    pub host: String,
}

/// A service of one registry that contributes to a host group.
#[derive(Clone, Copy, Debug)]
pub struct Contributor<'a> {
    pub registry: &'a str,
    pub settings: &'a RegistrySettings,
    pub service: &'a Service,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Translation {
    /// Sorted by kind, namespace and name.
    pub objects: Vec<IstioObject>,
    /// Services, instances and ports that could not be published, with the reason.
    pub skipped: Vec<Skipped>,
    /// Lesser repairs worth a debug line: labels dropped, protocols defaulted.
    pub notes: Vec<Skipped>,
}

/// The group a service joins: `Ok(None)` when the registry's `select` leaves it out,
/// `Err` when it has no valid host.
pub fn group_of(
    registry: &str,
    settings: &RegistrySettings,
    service: &Service,
) -> Result<Option<GroupKey>, Skipped> {
    if settings.select.rejects(service).is_some() {
        return Ok(None);
    }
    settings
        .hosts
        .render(registry, service.namespace.as_deref(), &service.name)
        .map(|host| {
            Some(GroupKey {
                namespace: settings.namespace_for(registry, service).namespace,
                host,
            })
        })
        .map_err(|e| Skipped {
            registry: registry.to_string(),
            service: service.key().to_string(),
            instance: None,
            kind: registry_sync_catalog::SkipKind::InvalidHost,
            reason: e.to_string(),
        })
}

/// Assigns every selected service of every configured registry to its host group.
/// Contributors within a group are in (registry, service) order, so the first is stable
/// and decides the group's name and per-registry settings.
pub fn group_catalog<'a>(
    catalog: &'a Catalog,
    settings: &'a Settings,
    skipped: &mut Vec<Skipped>,
) -> BTreeMap<GroupKey, Vec<Contributor<'a>>> {
    let mut groups: BTreeMap<GroupKey, Vec<Contributor<'a>>> = BTreeMap::new();
    for (registry, snapshot) in catalog.registries() {
        let Some(registry_settings) = settings.registries.get(registry) else {
            continue;
        };
        for service in snapshot.services() {
            match group_of(registry, registry_settings, service) {
                Ok(Some(key)) => groups.entry(key).or_default().push(Contributor {
                    registry,
                    settings: registry_settings,
                    service,
                }),
                Ok(None) => {}
                Err(skip) => skipped.push(skip),
            }
        }
    }
    groups
}

/// The IP addresses of a service's instances: what no virtual IP may ever be.
pub fn instance_ips(service: &Service) -> impl Iterator<Item = std::net::IpAddr> + '_ {
    service.instances.iter().filter_map(|i| match i.address {
        registry_sync_catalog::Address::Ip(ip) => Some(ip),
        _ => None,
    })
}

/// Translates the whole catalog.
pub fn translate(catalog: &Catalog, settings: &Settings) -> Translation {
    let mut out = Translation::default();
    let groups = group_catalog(catalog, settings, &mut out.skipped);
    let mut vips = Allocator::default();
    // No entry's address is any instance's, as the incremental index has it.
    if settings.registries.values().any(|r| r.vip_range.is_some()) {
        for (registry, snapshot) in catalog.registries() {
            if !settings.registries.contains_key(registry) {
                continue;
            }
            for ip in snapshot.services().iter().flat_map(|s| instance_ips(s)) {
                vips.take(ip);
            }
        }
    }
    for (key, contributors) in &groups {
        let group = group::translate_group(key, contributors, settings, &mut vips);
        out.objects.extend(group.objects);
        out.skipped.extend(group.skipped);
        out.notes.extend(group.notes);
    }
    out.objects.sort_by_key(IstioObject::key);
    out
}

/// Translates one host group; [`translate`] is this applied to every group.
pub fn translate_group(
    key: &GroupKey,
    contributors: &[Contributor<'_>],
    settings: &Settings,
    vips: &mut Allocator,
) -> Translation {
    let mut out = group::translate_group(key, contributors, settings, vips);
    out.objects.sort_by_key(IstioObject::key);
    out
}
