//! istiod's checks on an object it reads from an MCP source (its memory store runs the
//! same spec validation as for CRDs), made before sending: istiod drops an object that
//! fails them without a word to the server, so here it is refused, reported and kept
//! out of the served set instead (an update that fails leaves the last good version
//! served, as istiod itself would).

use std::collections::BTreeSet;
use std::net::IpAddr;

use registry_sync_istio::{Endpoint, IstioObject, Resolution, ServiceEntrySpec, Spec};
use registry_sync_translate::names::{is_dns1123_subdomain, is_label_key, is_label_value};

/// Annotations istiod gives a meaning on MCP objects: `ResourceVersion` replaces the
/// version, and health checks make an MCP WorkloadEntry unhealthy for good (it never has
/// the status condition they read).
const FORBIDDEN_ANNOTATIONS: [&str; 2] = ["ResourceVersion", "proxy.istio.io/health-checks-enabled"];

/// Why istiod would drop `object`, if it would.
pub fn refusal(object: &IstioObject) -> Option<String> {
    let meta = &object.metadata;
    if meta.namespace.is_empty()
        || meta.namespace.contains('/')
        || meta.name.is_empty()
        || meta.name.contains('/')
    {
        return Some(format!(
            "its MCP name {:?} is not namespace/name",
            format!("{}/{}", meta.namespace, meta.name)
        ));
    }
    if let Some(key) = FORBIDDEN_ANNOTATIONS
        .iter()
        .find(|k| meta.annotations.get(**k).is_some())
    {
        return Some(format!(
            "it carries the annotation {key:?}, which istiod reads specially on MCP objects"
        ));
    }
    // The object's own labels are not checked: istiod's store validates the spec alone
    // (a real istiod stores an entry labelled `app: a/b`; the binary's istiod tests
    // show it), while the endpoints' labels inside the spec are checked below.
    match &object.spec {
        Spec::ServiceEntry(spec) => service_entry(spec),
        Spec::WorkloadEntry(endpoint) => workload_entry(endpoint),
    }
}

fn is_host(host: &str) -> bool {
    let bare = host.strip_prefix("*.").unwrap_or(host);
    host != "*" && is_dns1123_subdomain(bare)
}

/// A DNS-1123 label: what port names and namespaces must be.
fn is_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// An IP or CIDR, as istiod checks it. (Translation never makes `0.0.0.0` or a short
/// prefix: `vip_range` refuses ranges that hold them.)
fn is_vip(address: &str) -> bool {
    let (ip, prefix) = match address.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix)),
        None => (address, None),
    };
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    let width = if ip.is_ipv4() { 32 } else { 128 };
    prefix.is_none_or(|p| p.parse::<u32>().is_ok_and(|p| p <= width))
}

const PROTOCOLS: [&str; 11] = [
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "MYSQL", "REDIS", "TCP", "TLS", "UDP",
];

fn service_entry(spec: &ServiceEntrySpec) -> Option<String> {
    if spec.hosts.is_empty() {
        return Some("it has no host".into());
    }
    if let Some(host) = spec.hosts.iter().find(|h| !is_host(h)) {
        return Some(format!("host {host:?} is not a valid host name"));
    }
    if let Some(address) = spec.addresses.iter().find(|a| !is_vip(a)) {
        return Some(format!("address {address:?} is not an IP address or CIDR range"));
    }
    if spec.resolution == Resolution::Dns && spec.addresses.iter().any(|a| a.contains('/')) {
        return Some("a CIDR address needs resolution STATIC".into());
    }
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for port in &spec.ports {
        if !is_port_name(&port.name) || !names.insert(port.name.as_str()) {
            return Some(format!("port name {:?} is invalid or used twice", port.name));
        }
        if !(1..=65535).contains(&port.number) || !numbers.insert(port.number) {
            return Some(format!("port number {} is invalid or used twice", port.number));
        }
        if !port.protocol.is_empty() && !PROTOCOLS.contains(&port.protocol.to_ascii_uppercase().as_str()) {
            return Some(format!(
                "port {:?} has the unknown protocol {:?}",
                port.name, port.protocol
            ));
        }
    }
    let mut exported = BTreeSet::new();
    for namespace in &spec.export_to {
        if namespace != "." && namespace != "*" && !is_port_name(namespace) {
            return Some(format!("exportTo {namespace:?} is not `.`, `*` or a namespace"));
        }
        if !exported.insert(namespace.as_str()) {
            return Some(format!("exportTo lists {namespace:?} twice"));
        }
    }
    if exported.contains("*") && exported.len() > 1 {
        return Some("exportTo lists `*` with other namespaces".into());
    }
    if spec.workload_selector.is_some() && !spec.endpoints.is_empty() {
        return Some("it has both a workload selector and endpoints".into());
    }
    for endpoint in &spec.endpoints {
        let is_ip = endpoint.address.parse::<IpAddr>().is_ok();
        // An endpoint on another network may leave its address to that network's
        // gateway (istiod warns, and keeps it); `workload_entry` below checks the pair.
        let unset = endpoint.address.is_empty();
        match spec.resolution {
            _ if unset => {}
            Resolution::Static if !is_ip && !endpoint.address.starts_with("unix://") => {
                return Some(format!(
                    "endpoint {:?} is not an IP, which STATIC resolution requires",
                    endpoint.address
                ));
            }
            Resolution::Dns if !is_ip && !is_dns1123_subdomain(&endpoint.address) => {
                return Some(format!(
                    "endpoint {:?} is neither an IP nor a host name",
                    endpoint.address
                ));
            }
            _ => {}
        }
        if let Some(port) = endpoint.ports.keys().find(|p| !names.contains(p.as_str())) {
            return Some(format!(
                "endpoint {:?} names the port {port:?}, which the entry does not have",
                endpoint.address
            ));
        }
        if let Some(why) = workload_entry(endpoint) {
            return Some(why);
        }
    }
    if spec.endpoints.is_empty()
        && spec.workload_selector.is_none()
        && spec.resolution == Resolution::Dns
        && let Some(host) = spec.hosts.iter().find(|h| h.starts_with("*."))
    {
        return Some(format!(
            "DNS resolution without endpoints needs exact hosts, not {host:?}"
        ));
    }
    None
}

fn workload_entry(endpoint: &Endpoint) -> Option<String> {
    if endpoint.address.is_empty() && endpoint.network.is_none() {
        return Some("an endpoint has neither an address nor a network".into());
    }
    if let Some((key, value)) = endpoint
        .labels
        .iter()
        .find(|(k, v)| !is_label_key(k) || !is_label_value(v))
    {
        return Some(format!(
            "endpoint {:?} has the invalid label {key:?}={value:?}",
            endpoint.address
        ));
    }
    if let Some(port) = endpoint.ports.keys().find(|p| !is_port_name(p)) {
        return Some(format!(
            "endpoint {:?} has the invalid port name {port:?}",
            endpoint.address
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use registry_sync_istio::{LiteMap, Location, ObjectMeta, ServicePort, WorkloadSelector};

    use super::*;

    fn entry(edit: impl FnOnce(&mut ServiceEntrySpec, &mut ObjectMeta)) -> IstioObject {
        let mut meta = ObjectMeta {
            name: "legacy.orders".into(),
            namespace: "mesh".into(),
            labels: LiteMap::from_iter([("registry-sync.io/registry".to_string(), "legacy".to_string())]),
            annotations: LiteMap::new(),
        };
        let mut spec = ServiceEntrySpec {
            addresses: Vec::new(),
            hosts: vec!["orders.legacy".into()],
            location: Location::MeshInternal,
            resolution: Resolution::Static,
            ports: vec![ServicePort {
                number: 8080,
                protocol: "HTTP".into(),
                name: "http-8080".into(),
            }],
            endpoints: vec![Endpoint {
                address: "10.0.0.1".into(),
                ports: Arc::new(LiteMap::from_iter([("http-8080".to_string(), 8080)])),
                ..Default::default()
            }],
            workload_selector: None,
            export_to: Vec::new(),
        };
        edit(&mut spec, &mut meta);
        IstioObject::new(meta, Spec::ServiceEntry(spec))
    }

    #[test]
    fn what_translation_makes_passes() {
        assert_eq!(refusal(&entry(|_, _| {})), None);
        let vip = entry(|spec, _| spec.addresses = vec!["240.240.0.7".into()]);
        assert_eq!(refusal(&vip), None);
        let dns = entry(|spec, _| {
            spec.resolution = Resolution::Dns;
            spec.endpoints[0].address = "orders-1.example.com".into();
        });
        assert_eq!(refusal(&dns), None);
    }

    #[test]
    fn each_object_istiod_would_drop_is_refused_with_the_reason() {
        let cases: Vec<(&str, IstioObject)> = vec![
            ("no host", entry(|s, _| s.hosts.clear())),
            ("not a valid host", entry(|s, _| s.hosts = vec!["*".into()])),
            (
                "used twice",
                entry(|s, _| {
                    let again = s.ports[0].clone();
                    s.ports.push(ServicePort {
                        number: 9090,
                        ..again
                    });
                }),
            ),
            (
                "invalid or used twice",
                entry(|s, _| s.ports[0].name = "HTTP".into()),
            ),
            (
                "STATIC resolution",
                entry(|s, _| s.endpoints[0].address = "orders-1.example.com".into()),
            ),
            (
                "does not have",
                entry(|s, _| s.endpoints[0].ports = Arc::new(LiteMap::from_iter([("grpc".to_string(), 1)]))),
            ),
            (
                "both a workload selector and endpoints",
                entry(|s, _| {
                    s.workload_selector = Some(WorkloadSelector {
                        labels: [("app".to_string(), "orders".to_string())].into(),
                    })
                }),
            ),
            (
                "invalid label",
                entry(|s, _| {
                    s.endpoints[0].labels =
                        Arc::new(LiteMap::from_iter([("bad key!".to_string(), "v".to_string())]))
                }),
            ),
            ("namespace/name", entry(|_, m| m.namespace.clear())),
            (
                "ResourceVersion",
                entry(|_, m| {
                    m.annotations.insert("ResourceVersion".into(), "1".into());
                }),
            ),
            (
                "unknown protocol",
                entry(|s, _| s.ports[0].protocol = "QUIC".into()),
            ),
            (
                "not an IP address or CIDR",
                entry(|s, _| s.addresses = vec!["240.240.0.0/33".into()]),
            ),
            (
                "not an IP address or CIDR",
                entry(|s, _| s.addresses = vec!["orders.legacy".into()]),
            ),
        ];
        for (why, object) in cases {
            let refused = refusal(&object).unwrap_or_else(|| panic!("not refused: {why}"));
            assert!(refused.contains(why), "{why}: {refused}");
        }
    }
}
