//! What istiod's memory store does with one decoded resource before it stores it: the
//! revision filter of `mcpToPilot`, then the spec validation of `schema.ValidateConfig`
//! (the subset of `ValidateServiceEntry` / `ValidateWorkloadEntry` that generated objects
//! can meet). Written against the wire messages, apart from the sink's own pre-check
//! (`crate::validate`), so a test can hold the two verdicts side by side.

use std::collections::BTreeSet;
use std::net::IpAddr;

use prost::Message;

use super::Profile;
use crate::proto::{self, ServiceEntry, WorkloadEntry};

/// `istio.networking.v1alpha3.ServiceEntry.Resolution`.
const NONE: i32 = 0;
const STATIC: i32 = 1;
const DNS: i32 = 2;
const DNS_ROUND_ROBIN: i32 = 3;
const DYNAMIC_DNS: i32 = 4;

/// The label istiod compares with its own `REVISION`.
pub const REVISION_LABEL: &str = "istio.io/rev";

/// Whether an istiod of `revision` keeps an object with these labels at all: one labelled
/// for another revision is skipped without a word; one without the label is everyone's.
pub fn in_revision(labels: &std::collections::BTreeMap<String, String>, revision: &str) -> bool {
    match labels.get(REVISION_LABEL) {
        Some(wanted) => revision.is_empty() || wanted == revision,
        None => true,
    }
}

/// Why istiod's store would refuse `body` for the collection of `type_url`, if it would.
/// `schema.ValidateConfig` checks the spec alone: the object's own labels and
/// annotations are stored whatever they are.
pub fn refusal(profile: Profile, type_url: &str, body: &prost_types::Any) -> Option<String> {
    if type_url.ends_with("/ServiceEntry") {
        if body.type_url != proto::SERVICE_ENTRY_BODY {
            return Some(format!(
                "body {} is not a ServiceEntry of v1alpha3",
                body.type_url
            ));
        }
        let Ok(entry) = ServiceEntry::decode(body.value.as_slice()) else {
            return Some("the ServiceEntry does not decode".into());
        };
        service_entry(profile, &entry)
    } else if type_url.ends_with("/WorkloadEntry") {
        if body.type_url != proto::WORKLOAD_ENTRY_BODY {
            return Some(format!(
                "body {} is not a WorkloadEntry of v1alpha3",
                body.type_url
            ));
        }
        let Ok(entry) = WorkloadEntry::decode(body.value.as_slice()) else {
            return Some("the WorkloadEntry does not decode".into());
        };
        workload_entry(&entry)
    } else {
        None
    }
}

fn service_entry(profile: Profile, entry: &ServiceEntry) -> Option<String> {
    if entry.hosts.is_empty() {
        return Some("service entry must have at least one host".into());
    }
    for host in &entry.hosts {
        if host == "*" || !is_wildcard_domain(host) {
            return Some(format!("invalid host {host}"));
        }
    }
    for address in &entry.addresses {
        let is_cidr = address
            .split_once('/')
            .is_some_and(|(ip, bits)| ip.parse::<IpAddr>().is_ok() && bits.parse::<u8>().is_ok());
        if address.parse::<IpAddr>().is_err() && !is_cidr {
            return Some(format!("invalid address {address}"));
        }
        if is_cidr && !matches!(entry.resolution, NONE | STATIC) {
            return Some("CIDR addresses are allowed only for NONE/STATIC resolution types".into());
        }
    }
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for port in &entry.ports {
        if !is_dns1123_label(&port.name) {
            return Some(format!("invalid port name {:?}", port.name));
        }
        if !names.insert(port.name.as_str()) {
            return Some(format!("port names must be unique: {}", port.name));
        }
        if port.number == 0 || port.number > 65535 || !numbers.insert(port.number) {
            return Some(format!("port numbers must be valid and unique: {}", port.number));
        }
        if !port.protocol.is_empty() && !is_protocol(&port.protocol) {
            return Some(format!("unsupported protocol {}", port.protocol));
        }
    }
    let mut exported = BTreeSet::new();
    for namespace in &entry.export_to {
        if namespace != "." && namespace != "*" && !is_dns1123_label(namespace) {
            return Some(format!("invalid exportTo value {namespace:?}"));
        }
        if !exported.insert(namespace.as_str()) {
            return Some(format!("duplicate exportTo value {namespace:?}"));
        }
    }
    if exported.contains("*") && exported.len() > 1 {
        return Some("exportTo '*' must not be combined with other values".into());
    }
    if entry.workload_selector.is_some() && !entry.endpoints.is_empty() {
        return Some("only one of WorkloadSelector or Endpoints is allowed".into());
    }
    match entry.resolution {
        NONE if !entry.endpoints.is_empty() => {
            return Some("no endpoints should be provided for resolution type none".into());
        }
        NONE => {}
        STATIC => {
            for endpoint in &entry.endpoints {
                let address = &endpoint.address;
                // Unset with a network: a warning only (the network's gateway serves it).
                if !address.is_empty()
                    && !address.starts_with("unix://")
                    && address.parse::<IpAddr>().is_err()
                {
                    return Some(format!("endpoint address {address:?} is not a valid IP address"));
                }
            }
        }
        DNS | DNS_ROUND_ROBIN => {
            if entry.resolution == DNS_ROUND_ROBIN && entry.endpoints.len() > 1 {
                return Some("there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN".into());
            }
            if entry.endpoints.is_empty()
                && entry.workload_selector.is_none()
                && let Some(host) = entry.hosts.iter().find(|h| h.starts_with("*."))
            {
                return Some(format!("hosts must be FQDN if no endpoints are provided: {host}"));
            }
            for endpoint in &entry.endpoints {
                let address = &endpoint.address;
                if !address.is_empty() && address.parse::<IpAddr>().is_err() && !is_fqdn(address) {
                    return Some(format!(
                        "endpoint address {address:?} is not a valid FQDN or IP address"
                    ));
                }
            }
        }
        DYNAMIC_DNS if matches!(profile, Profile::Istio130) => {}
        other => return Some(format!("unknown resolution {other}")),
    }
    for endpoint in &entry.endpoints {
        if let Some(why) = workload_entry(endpoint) {
            return Some(why);
        }
        if let Some(port) = endpoint.ports.keys().find(|p| !names.contains(p.as_str())) {
            return Some(format!(
                "endpoint port {port} is not defined by the service entry"
            ));
        }
    }
    None
}

fn workload_entry(entry: &WorkloadEntry) -> Option<String> {
    let address = &entry.address;
    if address.is_empty() {
        if entry.network.is_empty() {
            return Some("address is required".into());
        }
    } else if !address.starts_with("unix://") && address.parse::<IpAddr>().is_err() && !is_fqdn(address) {
        return Some(format!(
            "endpoint address {address:?} is not a valid FQDN or IP address"
        ));
    }
    if let Some(bad) = entry
        .labels
        .iter()
        .find(|(k, v)| !is_label_key(k) || !is_label_value(v))
    {
        return Some(format!("invalid label {bad:?}"));
    }
    if let Some(port) = entry.ports.keys().find(|p| !is_dns1123_label(p)) {
        return Some(format!("invalid port name {port:?}"));
    }
    None
}

fn is_protocol(protocol: &str) -> bool {
    [
        "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "MYSQL", "REDIS", "TCP", "TLS", "UDP",
    ]
    .contains(&protocol.to_ascii_uppercase().as_str())
}

fn is_dns1123_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

fn is_fqdn(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty() && name.len() <= 255 && name.split('.').all(is_dns1123_label)
}

fn is_wildcard_domain(host: &str) -> bool {
    is_fqdn(host.strip_prefix("*.").unwrap_or(host))
}

fn is_label_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

fn is_label_key(key: &str) -> bool {
    match key.rsplit_once('/') {
        Some((prefix, name)) => is_fqdn(prefix) && prefix.len() <= 253 && is_label_name(name),
        None => is_label_name(key),
    }
}

fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_label_name(value)
}
