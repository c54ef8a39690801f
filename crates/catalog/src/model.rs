use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::Address;

/// Registry metadata: a map sorted by key, kept in one flat allocation because an
/// estate has one per instance and most hold a handful of entries (a `BTreeMap` node
/// would cost ~0.5 KiB each).
pub type Metadata = litemap::LiteMap<String, String>;

/// What a port speaks, as Istio names it. `None` where a model carries
/// `Option<Protocol>` means "the registry did not say"; translation then falls back to
/// TCP, because a wrong HTTP guess breaks a non-HTTP port while TCP is always safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Http,
    Https,
    Http2,
    Grpc,
    Tls,
    Tcp,
    Mongo,
}

impl Protocol {
    /// Parses a protocol name as Istio spells it, case-insensitively.
    pub fn parse(name: &str) -> Option<Protocol> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "https" => Protocol::Https,
            "http2" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "tls" => Protocol::Tls,
            "tcp" => Protocol::Tcp,
            "mongo" => Protocol::Mongo,
            _ => return None,
        })
    }

    /// Istio's port-naming convention: `<protocol>` or `<protocol>-<suffix>`.
    pub fn from_port_name(port_name: &str) -> Option<Protocol> {
        let prefix = port_name.split('-').next().unwrap_or_default();
        Protocol::parse(prefix)
    }

    /// The upper-case form the ServiceEntry `protocol` field takes.
    pub fn as_istio(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
            Protocol::Http2 => "HTTP2",
            Protocol::Grpc => "GRPC",
            Protocol::Tls => "TLS",
            Protocol::Tcp => "TCP",
            Protocol::Mongo => "MONGO",
        }
    }

    /// The lower-case form used in generated port names (`http-8080`).
    pub fn as_port_prefix(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::Tls => "tls",
            Protocol::Tcp => "tcp",
            Protocol::Mongo => "mongo",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("port {0} is out of range: must be 1-65535")]
    OutOfRange(i64),
    #[error("port {0:?} is not a number")]
    NotANumber(String),
}

/// Validates a port number as a registry hands it over (any integer type, or text).
pub fn parse_port(raw: impl TryInto<i64> + Copy + fmt::Display) -> Result<u16, PortError> {
    let value: i64 = raw
        .try_into()
        .map_err(|_| PortError::NotANumber(raw.to_string()))?;
    match u16::try_from(value) {
        Ok(0) | Err(_) => Err(PortError::OutOfRange(value)),
        Ok(port) => Ok(port),
    }
}

/// The map with no spare capacity. A map collected from an iterator keeps room for
/// four entries however few it has; an estate holds one per instance, mostly with one
/// or two entries, so the spare room would be a third of its memory.
pub fn compact<K: Ord, V>(map: litemap::LiteMap<K, V>) -> litemap::LiteMap<K, V> {
    let mut entries = map.into_tuple_vec();
    entries.shrink_to_fit();
    litemap::LiteMap::from_sorted_store_unchecked(entries)
}

/// One port an instance listens on. `name` is the logical port: instances of one
/// service that use the same name share one ServiceEntry port even when their numbers
/// differ.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstancePort {
    pub name: String,
    pub number: u16,
    /// What the registry's protocol-level knowledge says (a Dubbo URL scheme, Eureka's
    /// secure port), weaker than a `protocol` metadata key or the port name's prefix.
    pub protocol_hint: Option<Protocol>,
}

/// One running copy of a service, as the registry reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Instance {
    /// Stable within its service; used in logs and WorkloadEntry names.
    pub id: String,
    pub address: Address,
    /// Sorted by name, names unique.
    pub ports: Vec<InstancePort>,
    pub healthy: bool,
    pub weight: Option<u32>,
    /// Out of line: an estate holds one instance per endpoint, and most registries set
    /// none of it. Made with [`Placement::boxed`], which keeps "none of it" as `None`.
    pub placement: Option<Box<Placement>>,
    /// Registry metadata, unsanitised: translation decides what survives as a label.
    pub labels: Metadata,
}

/// Where an instance runs and as whom, as far as the registry says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Placement {
    /// `region/zone/subzone`.
    pub locality: Option<String>,
    pub network: Option<String>,
    pub service_account: Option<String>,
}

impl Placement {
    /// `None` when the registry said nothing of it, so that equal instances compare equal.
    pub fn boxed(
        locality: Option<String>,
        network: Option<String>,
        service_account: Option<String>,
    ) -> Option<Box<Placement>> {
        let placement = Placement {
            locality,
            network,
            service_account,
        };
        (placement != Placement::default()).then(|| Box::new(placement))
    }
}

impl Instance {
    pub fn locality(&self) -> Option<&str> {
        self.placement.as_ref()?.locality.as_deref()
    }

    pub fn network(&self) -> Option<&str> {
        self.placement.as_ref()?.network.as_deref()
    }

    pub fn service_account(&self) -> Option<&str> {
        self.placement.as_ref()?.service_account.as_deref()
    }
}

/// Identifies a service within one registry: registries such as Nacos or Consul
/// Enterprise scope names by a namespace or group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Service {
    pub name: String,
    pub namespace: Option<String>,
    pub labels: Metadata,
    pub instances: Vec<Instance>,
}

impl Service {
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Puts instances in id order and each instance's ports in name order, which is
    /// what snapshots compare and what [`RegistrySnapshot::from_shared`] expects. A
    /// second instance with the same id, or a second port with the same name, is
    /// dropped: the registry itself is inconsistent there, and the reason for an
    /// instance is returned so the operator can find it.
    pub fn canonicalize(&mut self, registry: &str) -> Vec<Skipped> {
        let mut skipped = Vec::new();
        self.instances.sort_by(|a, b| a.id.cmp(&b.id));
        let mut instances: Vec<Instance> = Vec::with_capacity(self.instances.len());
        for mut instance in std::mem::take(&mut self.instances) {
            if instances.last().is_some_and(|prev| prev.id == instance.id) {
                skipped.push(Skipped {
                    registry: registry.to_string(),
                    service: self.key().to_string(),
                    instance: Some(instance.id.clone()),
                    kind: SkipKind::Duplicate,
                    reason: "another instance of this service has the same id; this one is ignored".into(),
                });
                continue;
            }
            instance.ports.sort();
            instance.ports.dedup_by(|a, b| a.name == b.name);
            instance.ports.shrink_to_fit();
            instance.labels = compact(std::mem::take(&mut instance.labels));
            instances.push(instance);
        }
        instances.shrink_to_fit();
        self.instances = instances;
        self.labels = compact(std::mem::take(&mut self.labels));
        skipped
    }
}

/// What was wrong with a skipped item, in few enough kinds for a metric label; the
/// reason says the rest in words. Set where the item is refused, by the code that knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipKind {
    /// The record does not parse: bad JSON or YAML, an unknown key, a value of the
    /// wrong type, a URL or name that does not decode.
    Malformed,
    /// An address that is neither an IP nor a valid host name.
    InvalidAddress,
    /// A port number out of range or not a number.
    InvalidPort,
    /// A port Istio's sidecar keeps for itself.
    ReservedPort,
    /// The host template gives a name that is not a valid host.
    InvalidHost,
    /// The registry lists the service or the instance twice.
    Duplicate,
    /// A port left out of the ServiceEntry (not declared by every serving instance, or
    /// its number taken), or an instance with no port at all.
    PortNotPublished,
    /// Kept, with something dropped or changed (a label, a protocol): a note.
    Adjusted,
}

impl SkipKind {
    pub fn metric_label(self) -> &'static str {
        match self {
            SkipKind::Malformed => "malformed",
            SkipKind::InvalidAddress => "invalid_address",
            SkipKind::InvalidPort => "invalid_port",
            SkipKind::ReservedPort => "reserved_port",
            SkipKind::InvalidHost => "invalid_host",
            SkipKind::Duplicate => "duplicate",
            SkipKind::PortNotPublished => "port_not_published",
            SkipKind::Adjusted => "adjusted",
        }
    }
}

/// Why a record cannot become an instance, before it is placed in its registry and
/// service: what parsers return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: SkipKind,
    pub reason: String,
}

/// The longest reason a refusal carries: parsers quote what they refuse (an address, a
/// port), and a registry value can be of any length.
pub const MAX_REASON_LEN: usize = 300;
/// The longest instance name a refusal shows.
pub const MAX_INSTANCE_LEN: usize = 120;

/// `text` cut to at most `max` bytes (on a character boundary), marked with `…` when cut.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A registry's raw name for a refused record, fit to show in logs, metrics and the
/// status page: a name that is a URL (a Dubbo provider node, a Eureka or etcd value)
/// can carry credentials in its user part or its parameters (Dubbo's `token`), so both
/// go, in plain and percent-encoded form, and the rest is bounded.
pub fn public_instance(raw: &str) -> String {
    let lower = raw.to_ascii_lowercase();
    // Parameters, plain or encoded (`%3F`), and in a URL its fragment (elsewhere `#` is
    // an ordinary separator: Nacos ids are `ip#port#cluster#service`).
    let url = lower.contains("://") || lower.contains("%3a%2f%2f");
    let marks: &[&str] = if url {
        &["?", "%3f", "#", "%23"]
    } else {
        &["?", "%3f"]
    };
    let cut = marks
        .iter()
        .filter_map(|mark| lower.find(mark))
        .min()
        .unwrap_or(raw.len());
    let mut shown = raw[..cut].to_string();
    if cut < raw.len() {
        shown.push_str("?…");
    }
    // A user part: `scheme://user:pw@host`, plain or encoded (`%3A%2F%2F`, `%2F`, `%40`).
    for (scheme_end, slash, at) in [("://", "/", "@"), ("%3a%2f%2f", "%2f", "%40")] {
        let lowered = shown.to_ascii_lowercase();
        let Some(start) = lowered.find(scheme_end).map(|i| i + scheme_end.len()) else {
            continue;
        };
        let authority_end = lowered[start..].find(slash).map_or(lowered.len(), |i| start + i);
        if let Some(user_end) = lowered[start..authority_end].rfind(at) {
            shown.replace_range(start..start + user_end + at.len(), "…@");
        }
    }
    bounded(&shown, MAX_INSTANCE_LEN)
}

impl Refusal {
    pub fn new(kind: SkipKind, reason: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            reason: bounded(&reason.into(), MAX_REASON_LEN),
        }
    }

    pub fn malformed(reason: impl Into<String>) -> Refusal {
        Refusal::new(SkipKind::Malformed, reason)
    }

    pub fn address(reason: impl Into<String>) -> Refusal {
        Refusal::new(SkipKind::InvalidAddress, reason)
    }

    pub fn port(reason: impl Into<String>) -> Refusal {
        Refusal::new(SkipKind::InvalidPort, reason)
    }

    /// The same refusal, its reason prefixed with where it was found
    /// (`Metadata.weight: …`).
    pub fn within(self, place: impl fmt::Display) -> Refusal {
        Refusal {
            kind: self.kind,
            reason: format!("{place}: {}", self.reason),
        }
    }

    /// The item refused for this reason, in `registry`'s `service`. `instance` is the
    /// registry's raw name for the record: only its public part is kept (see
    /// [`public_instance`]).
    pub fn skipped(self, registry: &str, service: &str, instance: Option<&str>) -> Skipped {
        Skipped {
            registry: registry.to_string(),
            service: bounded(service, MAX_INSTANCE_LEN),
            instance: instance.map(public_instance),
            kind: self.kind,
            reason: bounded(&self.reason, MAX_REASON_LEN),
        }
    }
}

/// An item a stage refused, with enough context for an operator to find it in the
/// registry: which registry, which service, which instance, what kind of problem and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Skipped {
    pub registry: String,
    pub service: String,
    pub instance: Option<String>,
    pub kind: SkipKind,
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "registry {:?}, service {:?}", self.registry, self.service)?;
        if let Some(instance) = &self.instance {
            write!(f, ", instance {instance:?}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// A complete view of one registry at one moment. Sources emit whole snapshots; the
/// catalog keeps the last one per registry, so a registry that fails keeps its last
/// known state instead of losing its services.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistrySnapshot {
    /// Sorted by [`ServiceKey`], keys unique.
    services: Vec<Arc<Service>>,
    /// Items the source refused while building this snapshot.
    pub skipped: Vec<Skipped>,
    /// Services the registry has but whose state could not be read this time (one
    /// query failing, one DNS name timing out). The view is complete for every other
    /// service; for these, consumers keep what they knew and delete nothing — so one
    /// failing item neither stalls its registry nor loses its own objects.
    pub unknown: Vec<ServiceKey>,
}

impl RegistrySnapshot {
    /// Sorts services and their instances into canonical order. A second service with
    /// the same key, or a second instance with the same id, is refused with a reason
    /// rather than silently merged, since the registry itself is inconsistent there.
    pub fn new(registry: &str, services: Vec<Service>, mut skipped: Vec<Skipped>) -> RegistrySnapshot {
        let mut by_key: BTreeMap<ServiceKey, Service> = BTreeMap::new();
        for mut service in services {
            let key = service.key();
            if by_key.contains_key(&key) {
                skipped.push(Skipped {
                    registry: registry.to_string(),
                    service: key.to_string(),
                    instance: None,
                    kind: SkipKind::Duplicate,
                    reason: "the service is listed twice; the later listing is ignored".into(),
                });
                continue;
            }
            skipped.extend(service.canonicalize(registry));
            by_key.insert(key, service);
        }
        RegistrySnapshot {
            services: by_key.into_values().map(Arc::new).collect(),
            skipped,
            unknown: Vec::new(),
        }
    }

    /// Marks services whose state could not be read (see [`RegistrySnapshot::unknown`]).
    pub fn with_unknown(mut self, unknown: impl IntoIterator<Item = ServiceKey>) -> RegistrySnapshot {
        self.unknown.extend(unknown);
        self.unknown.sort();
        self.unknown.dedup();
        self
    }

    /// Builds a snapshot from services a source keeps between snapshots. A watching
    /// source that rebuilds only the services that changed and hands the others over
    /// as the same `Arc`s lets the consumer skip comparing them (pointer equality).
    /// Each service must already be in canonical order ([`Service::canonicalize`]).
    pub fn from_shared(
        registry: &str,
        services: Vec<Arc<Service>>,
        mut skipped: Vec<Skipped>,
    ) -> RegistrySnapshot {
        let mut services = services;
        services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut unique: Vec<Arc<Service>> = Vec::with_capacity(services.len());
        for service in services {
            if unique
                .last()
                .is_some_and(|prev| prev.name == service.name && prev.namespace == service.namespace)
            {
                skipped.push(Skipped {
                    registry: registry.to_string(),
                    service: service.key().to_string(),
                    instance: None,
                    kind: SkipKind::Duplicate,
                    reason: "the service is listed twice; the later listing is ignored".into(),
                });
                continue;
            }
            unique.push(service);
        }
        RegistrySnapshot {
            services: unique,
            skipped,
            unknown: Vec::new(),
        }
    }

    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    pub fn instance_count(&self) -> usize {
        self.services.iter().map(|s| s.instances.len()).sum()
    }
}

/// What changed in a registry since the view its source sent before: the services
/// added or changed (whole, each already canonical), the services gone, the full set of
/// services that could not be read now, and the source's refused items when they
/// changed. A watching source knows which services an event touched, so the consumer
/// works on those alone instead of comparing every service of a large registry again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryDelta {
    /// Added or changed services, sorted by [`ServiceKey`], keys unique.
    pub upserts: Vec<Arc<Service>>,
    /// Services no longer in the registry.
    pub removed: Vec<ServiceKey>,
    /// Every service unreadable now (see [`RegistrySnapshot::unknown`]); small, so it
    /// travels whole.
    pub unknown: Vec<ServiceKey>,
    /// Every item the source refuses now, when that list changed; `None`: as before.
    pub skipped: Option<Vec<Skipped>>,
}

impl RegistryDelta {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removed.is_empty() && self.skipped.is_none()
    }
}

impl RegistrySnapshot {
    /// Folds a delta into this view, as a consumer that keeps whole views does.
    pub fn apply(&mut self, delta: &RegistryDelta) {
        let mut by_key: BTreeMap<ServiceKey, Arc<Service>> = std::mem::take(&mut self.services)
            .into_iter()
            .map(|s| (s.key(), s))
            .collect();
        for key in &delta.removed {
            by_key.remove(key);
        }
        for service in &delta.upserts {
            by_key.insert(service.key(), Arc::clone(service));
        }
        self.services = by_key.into_values().collect();
        self.unknown = delta.unknown.clone();
        if let Some(skipped) = &delta.skipped {
            self.skipped = skipped.clone();
        }
    }
}

/// The last known snapshot of every registry, keyed by registry name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    registries: BTreeMap<String, Arc<RegistrySnapshot>>,
}

impl Catalog {
    /// Replaces a registry's view. Returns `false` when nothing changed, which lets the
    /// caller skip translation and planning entirely.
    pub fn update(&mut self, registry: &str, snapshot: RegistrySnapshot) -> bool {
        if self.registries.get(registry).is_some_and(|old| **old == snapshot) {
            return false;
        }
        self.registries.insert(registry.to_string(), Arc::new(snapshot));
        true
    }

    pub fn get(&self, registry: &str) -> Option<&RegistrySnapshot> {
        self.registries.get(registry).map(|s| &**s)
    }

    pub fn registries(&self) -> impl Iterator<Item = (&str, &RegistrySnapshot)> {
        self.registries
            .iter()
            .map(|(name, snap)| (name.as_str(), &**snap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str) -> Instance {
        Instance {
            id: id.into(),
            address: Address::parse("10.0.0.1").unwrap(),
            ports: vec![],
            healthy: true,
            weight: None,
            placement: None,
            labels: Metadata::new(),
        }
    }

    fn service(name: &str, ids: &[&str]) -> Service {
        Service {
            name: name.into(),
            namespace: None,
            labels: Metadata::new(),
            instances: ids.iter().map(|id| instance(id)).collect(),
        }
    }

    #[test]
    fn port_numbers_outside_1_to_65535_are_refused() {
        assert_eq!(parse_port(8080u32), Ok(8080));
        assert_eq!(parse_port(65535i64), Ok(65535));
        assert_eq!(parse_port(0u8), Err(PortError::OutOfRange(0)));
        assert_eq!(parse_port(65536u32), Err(PortError::OutOfRange(65536)));
        assert_eq!(parse_port(-1i32), Err(PortError::OutOfRange(-1)));
        assert!(matches!(parse_port(u64::MAX), Err(PortError::NotANumber(_))));
    }

    #[test]
    fn protocol_follows_istio_port_naming() {
        assert_eq!(Protocol::from_port_name("http"), Some(Protocol::Http));
        assert_eq!(Protocol::from_port_name("grpc-api"), Some(Protocol::Grpc));
        assert_eq!(Protocol::from_port_name("HTTP2-x"), Some(Protocol::Http2));
        assert_eq!(Protocol::from_port_name("httpx"), None);
        assert_eq!(Protocol::from_port_name("web"), None);
        assert_eq!(Protocol::from_port_name(""), None);
    }

    #[test]
    fn snapshot_sorts_services_and_refuses_duplicates_with_reasons() {
        let snap = RegistrySnapshot::new(
            "r",
            vec![
                service("b", &["2", "1", "1"]),
                service("a", &[]),
                service("b", &["9"]),
            ],
            vec![],
        );
        let names: Vec<_> = snap.services().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let ids: Vec<_> = snap.services()[1]
            .instances
            .iter()
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(ids, ["1", "2"]);
        assert_eq!(snap.skipped.len(), 2);
        assert!(snap.skipped.iter().any(|s| s.reason.contains("listed twice")));
        assert!(snap.skipped.iter().any(|s| s.instance.as_deref() == Some("1")));
    }

    #[test]
    fn shared_snapshots_keep_the_services_they_are_given_in_key_order() {
        let a = Arc::new(service("a", &["1"]));
        let b = Arc::new(service("b", &["1"]));
        let snap = RegistrySnapshot::from_shared(
            "r",
            vec![b.clone(), a.clone(), Arc::new(service("a", &[]))],
            vec![],
        );
        assert!(Arc::ptr_eq(&snap.services()[0], &a) && Arc::ptr_eq(&snap.services()[1], &b));
        assert_eq!(snap.skipped.len(), 1);
    }

    #[test]
    fn catalog_update_reports_whether_anything_changed() {
        let mut catalog = Catalog::default();
        assert!(catalog.update(
            "r",
            RegistrySnapshot::new("r", vec![service("a", &["1"])], vec![])
        ));
        assert!(!catalog.update(
            "r",
            RegistrySnapshot::new("r", vec![service("a", &["1"])], vec![])
        ));
        assert!(catalog.update(
            "r",
            RegistrySnapshot::new("r", vec![service("a", &["2"])], vec![])
        ));
        assert_eq!(catalog.get("r").unwrap().instance_count(), 1);
    }
}
