//! `overrides`: per-service settings matched by registry and service name. Each entry
//! is checked whole here, and one that matches no configured registry is refused, as a
//! typo would otherwise be silently ignored.

use std::collections::{BTreeMap, BTreeSet};

use registry_sync_catalog::Protocol;
use registry_sync_istio::{Location, RESERVED_LABEL_PREFIX, Resolution};
use registry_sync_translate::names::{is_dns1123_subdomain, is_label_key, is_label_value};
use registry_sync_translate::{EndpointMode, Glob, Override, PortOverride};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::registry::{RawEndpointMode, RawLocation, check_export_to};
use super::selection::{Checked, glob};
use super::{RegistryConfig, is_dns_label};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOverride {
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    registry: Option<Spanned<String>>,
    service: Spanned<String>,
    #[serde(default)]
    ports: Vec<RawPortOverride>,
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
    #[serde(default)]
    location: Option<RawLocation>,
    #[serde(default)]
    resolution: Option<Spanned<String>>,
    #[serde(default)]
    endpoints: Option<RawEndpointMode>,
    #[serde(default)]
    export_to: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    labels: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    use_waypoint: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPortOverride {
    port: Spanned<u16>,
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    protocol: Option<Spanned<String>>,
    #[serde(default)]
    target_port: Option<Spanned<u16>>,
}

fn port_override(raw: &RawPortOverride, key: &str) -> Checked<PortOverride> {
    let at = |line: u64, field: &str, message: String| (line, format!("{key}.{field}"), message);
    if raw.port.value == 0 {
        return Err(at(raw.port.referenced.line(), "port", "must be 1-65535".into()));
    }
    let name = match &raw.name {
        Some(name) if !is_dns_label(name.value.trim()) => {
            return Err(at(
                name.referenced.line(),
                "name",
                format!(
                    "{:?} is not a port name Istio takes (lowercase letters, digits and '-', at most 63)",
                    name.value
                ),
            ));
        }
        name => name.as_ref().map(|n| n.value.trim().to_string()),
    };
    let protocol = match &raw.protocol {
        Some(p) => Some(Protocol::parse(&p.value).ok_or_else(|| {
            at(
                p.referenced.line(),
                "protocol",
                format!(
                    "{:?} is not a protocol; use HTTP, HTTPS, HTTP2, GRPC, TLS, TCP or MONGO",
                    p.value
                ),
            )
        })?),
        None => None,
    };
    if let Some(target) = &raw.target_port
        && target.value == 0
    {
        return Err(at(
            target.referenced.line(),
            "target_port",
            "must be 1-65535".into(),
        ));
    }
    Ok(PortOverride {
        number: raw.port.value,
        name,
        protocol,
        target_port: raw.target_port.as_ref().map(|t| t.value),
    })
}

fn labels(raw: &RawOverride, key: &str) -> Checked<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (name, value) in &raw.labels {
        let line = value.referenced.line();
        let at = format!("{key}.labels.{name}");
        if !is_label_key(name) || name.starts_with(RESERVED_LABEL_PREFIX) {
            return Err((
                line,
                at,
                format!(
                    "{name:?} is not a label key registry-sync may set (a valid key outside {RESERVED_LABEL_PREFIX})"
                ),
            ));
        }
        if !is_label_value(&value.value) {
            return Err((
                line,
                at,
                "is not a label value (at most 63 letters, digits, '-', '_' or '.')".into(),
            ));
        }
        out.insert(name.clone(), value.value.clone());
    }
    if let Some(waypoint) = &raw.use_waypoint {
        if !is_dns_label(waypoint.value.trim()) {
            return Err((
                waypoint.referenced.line(),
                format!("{key}.use_waypoint"),
                format!("{:?} is not a Kubernetes name", waypoint.value),
            ));
        }
        out.insert(
            "istio.io/use-waypoint".to_string(),
            waypoint.value.trim().to_string(),
        );
    }
    Ok(out)
}

fn check_one(index: usize, raw: &RawOverride, registries: &[RegistryConfig]) -> Checked<Override> {
    let key = format!("overrides[{index}]");
    let line = raw.service.referenced.line();
    let name = match &raw.name {
        Some(name) if !is_dns1123_subdomain(name.value.trim()) => {
            return Err((
                name.referenced.line(),
                format!("{key}.name"),
                format!(
                    "{:?} is not a name (lowercase letters, digits, '-' and '.')",
                    name.value
                ),
            ));
        }
        Some(name) => name.value.trim().to_string(),
        None => key.clone(),
    };
    let registry = match &raw.registry {
        Some(pattern) => glob(pattern, &format!("{key}.registry"))?,
        None => Glob::new("*").expect("a valid pattern"),
    };
    if !registries.iter().any(|r| registry.matches(&r.name)) {
        return Err((
            raw.registry.as_ref().map_or(line, |r| r.referenced.line()),
            format!("{key}.registry"),
            format!("{:?} matches no configured registry", registry.as_str()),
        ));
    }
    let service = glob(&raw.service, &format!("{key}.service"))?;
    let mut ports = Vec::new();
    let mut numbers = BTreeSet::new();
    for (i, port) in raw.ports.iter().enumerate() {
        let checked = port_override(port, &format!("{key}.ports[{i}]"))?;
        if !numbers.insert(checked.number) {
            return Err((
                port.port.referenced.line(),
                format!("{key}.ports[{i}].port"),
                format!("port {} is listed twice", checked.number),
            ));
        }
        ports.push(checked);
    }
    let mut aliases = Vec::new();
    for (i, host) in raw.hosts.iter().enumerate() {
        let value = host.value.trim().to_ascii_lowercase();
        if !is_dns1123_subdomain(&value) || value.len() > 253 {
            return Err((
                host.referenced.line(),
                format!("{key}.hosts[{i}]"),
                format!("{:?} is not a host name", host.value),
            ));
        }
        aliases.push(value);
    }
    let resolution = match &raw.resolution {
        None => None,
        Some(r) => Some(match r.value.trim().to_ascii_lowercase().as_str() {
            "static" => Resolution::Static,
            "dns" => Resolution::Dns,
            _ => {
                return Err((
                    r.referenced.line(),
                    format!("{key}.resolution"),
                    format!("{:?} is not a resolution; use static or dns", r.value),
                ));
            }
        }),
    };
    let export_to = match &raw.export_to {
        None => None,
        Some(list) => {
            check_export_to(&list.value)
                .map_err(|m| (list.referenced.line(), format!("{key}.export_to"), m))?;
            Some(list.value.iter().map(|v| v.trim().to_string()).collect())
        }
    };
    Ok(Override {
        name,
        registry,
        service,
        ports,
        aliases,
        location: raw.location.map(|l| match l {
            RawLocation::MeshExternal => Location::MeshExternal,
            RawLocation::MeshInternal => Location::MeshInternal,
        }),
        resolution,
        endpoints: raw.endpoints.map(|m| match m {
            RawEndpointMode::Inline => EndpointMode::Inline,
            RawEndpointMode::WorkloadEntry => EndpointMode::WorkloadEntry,
            RawEndpointMode::Auto => EndpointMode::Auto,
        }),
        export_to,
        labels: labels(raw, &key)?,
    })
}

/// The checked `overrides`; names are unique, as plans refer to rules by them.
pub(crate) fn check(raw: &[RawOverride], registries: &[RegistryConfig]) -> Checked<Vec<Override>> {
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (index, entry) in raw.iter().enumerate() {
        let checked = check_one(index, entry, registries)?;
        if !names.insert(checked.name.clone()) {
            let line = entry
                .name
                .as_ref()
                .map_or(entry.service.referenced.line(), |n| n.referenced.line());
            return Err((
                line,
                format!("overrides[{index}].name"),
                format!("{:?} names two overrides", checked.name),
            ));
        }
        out.push(checked);
    }
    Ok(out)
}
