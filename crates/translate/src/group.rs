//! One host group → one ServiceEntry (plus WorkloadEntries in that mode).

use std::collections::BTreeMap;
use std::sync::Arc;

use litemap::LiteMap;
use registry_sync_catalog::{Address, Instance, InstancePort, Metadata, SkipKind, Skipped, compact};
use registry_sync_istio::{
    Endpoint, HEALTH_CHECKS_ANNOTATION, INSTANCE_LABEL, IstioObject, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    ORIGIN_NAMESPACE_ANNOTATION, ObjectMeta, PROVENANCE_KIND_LABEL, REGISTRY_LABEL, RESERVED_LABEL_PREFIX,
    Resolution, SERVICE_LABEL, SOURCES_ANNOTATION, ServiceEntrySpec, SharedMaps, Spec, TLS_MODE_LABEL,
    WorkloadSelector,
};

mod ports;

use self::ports::{LogicalPort, merge_port_names, service_ports};
use crate::names::{LabelDrop, is_dns1123_subdomain, label_value_for_name, object_name, sanitize_labels};
use crate::overrides::{Effective, OVERRIDES_ANNOTATION};
use crate::vips::Allocator;
use crate::{Contributor, EndpointMode, Fallback, GroupKey, Settings, Translation};

/// Ports Istio's sidecar listens on itself. A ServiceEntry port among them makes every
/// proxy in the mesh reject its configuration.
pub const RESERVED_PORTS: [u16; 9] = [15000, 15001, 15004, 15006, 15008, 15020, 15021, 15053, 15090];

/// The CRD refuses more inline endpoints than this.
pub const INLINE_ENDPOINT_LIMIT: usize = 4096;

/// `auto` keeps endpoints inline up to this many. Inline, every instance change
/// rewrites the whole ServiceEntry: at 128 endpoints that is still a small object
/// (tens of KiB) written at most once per change, while above it per-instance
/// WorkloadEntries make a change cost one small write instead of one large one. It is
/// also far below the CRD's 4096 and etcd's ~1.5 MiB object limit.
pub const AUTO_INLINE_LIMIT: usize = 128;

/// `auto` also switches to WorkloadEntries when the inline endpoints would exceed this
/// estimated size (label-heavy endpoints), keeping well clear of etcd's limit.
pub const AUTO_INLINE_MAX_BYTES: usize = 512 * 1024;

/// Even in `inline` mode, larger objects go to WorkloadEntries: the API server would
/// refuse them and the endpoints would be lost.
const INLINE_MAX_BYTES: usize = 1024 * 1024;

/// Istio's limit on endpoint / WorkloadEntry labels.
const MAX_ENDPOINT_LABELS: usize = 256;

/// An instance that passed validation, with where it came from.
struct Candidate<'a> {
    contributor: &'a Contributor<'a>,
    /// The contributor's position in the group.
    source: usize,
    instance: &'a Instance,
    /// Healthy with a non-zero weight: it receives traffic.
    serving: bool,
    /// Port name → the logical port it joins, where another registry of the group names
    /// the same port differently (see [`merge_port_names`]).
    aliases: BTreeMap<String, String>,
}

impl Candidate<'_> {
    /// The logical port an instance port belongs to.
    fn logical<'s>(&'s self, port: &'s InstancePort) -> &'s str {
        self.aliases
            .get(&port.name)
            .map_or(port.name.as_str(), String::as_str)
    }

    fn port(&self, logical: &str) -> Option<&InstancePort> {
        self.instance.ports.iter().find(|p| self.logical(p) == logical)
    }

    fn declares(&self, logical: &str) -> bool {
        self.port(logical).is_some()
    }
}

fn skip(c: &Contributor<'_>, instance: Option<&Instance>, kind: SkipKind, reason: String) -> Skipped {
    Skipped {
        registry: c.registry.to_string(),
        service: c.service.key().to_string(),
        instance: instance.map(|i| i.id.clone()),
        kind,
        reason,
    }
}

/// The rules a translation followed, in words, when `explain` asks for them; nothing
/// is formatted otherwise, so translating the estate costs no more for it.
#[derive(Default)]
pub(crate) struct Trace(Option<Vec<String>>);

impl Trace {
    pub(crate) fn on() -> Trace {
        Trace(Some(Vec::new()))
    }

    fn say(&mut self, line: impl FnOnce() -> String) {
        if let Some(lines) = &mut self.0 {
            lines.push(line());
        }
    }

    pub(crate) fn lines(self) -> Vec<String> {
        self.0.unwrap_or_default()
    }
}

pub(crate) fn translate_group(
    key: &GroupKey,
    contributors: &[Contributor<'_>],
    settings: &Settings,
    vips: &mut Allocator,
) -> Translation {
    translate_group_traced(key, contributors, settings, vips, &mut Trace::default())
}

pub(crate) fn translate_group_traced(
    key: &GroupKey,
    contributors: &[Contributor<'_>],
    settings: &Settings,
    vips: &mut Allocator,
    trace: &mut Trace,
) -> Translation {
    let instance_id = settings.instance.as_str();
    let mut out = Translation::default();
    let Some(primary) = contributors.first() else {
        return out;
    };
    let rules = Effective::of(&settings.overrides, contributors);
    trace_placement(key, contributors, trace);
    if !rules.names.is_empty() {
        trace.say(|| {
            format!(
                "overrides: {} (in the config's order; the last to set a field wins)",
                rules.names.join(", ")
            )
        });
    }
    report_namespace_fallbacks(contributors, &mut out);
    let mut candidates = validate_instances(contributors, &mut out);
    merge_port_names(&mut candidates);
    let ports = service_ports(&candidates, primary, &rules.ports, &mut out);
    for p in &ports {
        trace.say(|| {
            let target = p
                .target
                .map_or(String::new(), |t| format!(", received on {t} (an override)"));
            format!(
                "port {} {} {}: the protocol from {}{target}",
                p.port.number, p.port.name, p.port.protocol, p.why
            )
        });
    }
    // Health in status needs an object per instance to carry it.
    let health_in_status = primary.settings.health_in_status
        && rules.endpoints.unwrap_or(primary.settings.endpoints) == EndpointMode::WorkloadEntry;
    let endpoints = endpoints(&candidates, &ports, health_in_status, &mut out);

    let se_name = object_name(&identity_parts(primary, None));
    let mode = endpoint_mode(primary, rules.endpoints, &endpoints, &mut out);
    trace.say(|| {
        let configured = rules.endpoints.unwrap_or(primary.settings.endpoints);
        let by = if rules.endpoints.is_some() { " (an override)" } else { "" };
        let why = match (configured, mode) {
            (EndpointMode::Auto, EndpointMode::Inline) => {
                format!(
                    "auto{by}: inline, as {AUTO_INLINE_LIMIT} endpoints or fewer (and {} KiB) stay inline",
                    AUTO_INLINE_MAX_BYTES / 1024
                )
            }
            (EndpointMode::Auto, _) => {
                format!(
                    "auto{by}: WorkloadEntries, as more than {AUTO_INLINE_LIMIT} endpoints (or {} KiB) go out of line",
                    AUTO_INLINE_MAX_BYTES / 1024
                )
            }
            (EndpointMode::Inline, EndpointMode::WorkloadEntry) => {
                format!("inline{by} asked, WorkloadEntries published: too large for one object")
            }
            (_, mode) => format!("{mode:?}{by}, as configured"),
        };
        format!("endpoints: {} published; {why}", endpoints.len())
    });
    if health_in_status {
        trace.say(|| {
            "health: kept in each WorkloadEntry's status (health: status); unhealthy instances stay".into()
        });
    }
    let resolution = resolution(primary, rules.resolution, &endpoints, &mut out);
    trace.say(|| {
        let why = match (rules.resolution, resolution) {
            (Some(_), _) => "an override",
            (None, Resolution::Static) => "every endpoint is an IP address",
            (None, Resolution::Dns) => "some endpoints are host names",
        };
        let name = match resolution {
            Resolution::Static => "STATIC",
            Resolution::Dns => "DNS",
        };
        format!("resolution {name}: {why}")
    });

    let mut se_labels = service_labels(contributors, &mut out);
    se_labels.extend(
        primary
            .settings
            .extra_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    se_labels.extend(rules.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    se_labels.extend(own_labels(primary, instance_id));
    let sources = contributors.iter().map(source_of).collect::<Vec<_>>().join(",");
    let mut annotations = vec![(SOURCES_ANNOTATION.to_string(), sources)];
    if !rules.names.is_empty() {
        annotations.push((OVERRIDES_ANNOTATION.to_string(), rules.names.join(",")));
    }
    annotations.extend(origin_annotation(primary));
    let se_meta = ObjectMeta {
        name: se_name.clone(),
        namespace: key.namespace.clone(),
        labels: compact(se_labels.into_iter().collect()),
        annotations: annotations.into_iter().collect(),
    };
    let mut hosts = vec![key.host.clone()];
    hosts.extend(rules.aliases.iter().filter(|a| **a != key.host).cloned());
    if hosts.len() > 1 {
        trace.say(|| format!("hosts: {} (aliases from an override)", hosts.join(", ")));
    }
    let mut spec = ServiceEntrySpec {
        hosts,
        addresses: vip(key, primary, &endpoints, vips, &mut out),
        location: rules.location.unwrap_or(primary.settings.location),
        resolution,
        ports: ports.iter().map(|p| p.port.clone()).collect(),
        endpoints: Vec::new(),
        workload_selector: None,
        // The first registry of a merged host decides, as for the location.
        export_to: rules
            .export_to
            .clone()
            .unwrap_or_else(|| primary.settings.export_to.clone()),
    };

    trace.say(|| match (&spec.addresses[..], &primary.settings.vip_range) {
        ([address, ..], Some(range)) => format!("address {address}: from vip_range {}", range.as_str()),
        (_, Some(range)) => format!("no address: vip_range {} is full", range.as_str()),
        (_, None) => "no address: the registry has no vip_range".into(),
    });

    match mode {
        EndpointMode::Inline | EndpointMode::Auto => {
            spec.endpoints = endpoints.into_iter().map(|(_, e)| e).collect();
        }
        EndpointMode::WorkloadEntry => {
            let selector = label_value_for_name(&se_name);
            spec.workload_selector = Some(WorkloadSelector {
                labels: [(SERVICE_LABEL.to_string(), selector.clone())].into(),
            });
            for (candidate, mut endpoint) in endpoints {
                let c = candidate.contributor;
                Arc::make_mut(&mut endpoint.labels).insert(SERVICE_LABEL.to_string(), selector.clone());
                let mut labels = own_labels(c, instance_id);
                labels.insert(SERVICE_LABEL.to_string(), selector.clone());
                // Its source, like the entry's: while a merged entry waits for a registry,
                // the WorkloadEntries of its other registries must wait with it.
                let mut annotations = vec![(SOURCES_ANNOTATION.to_string(), source_of(c))];
                annotations.extend(origin_annotation(c));
                if health_in_status {
                    annotations.push((HEALTH_CHECKS_ANNOTATION.to_string(), "true".to_string()));
                }
                let meta = ObjectMeta {
                    name: object_name(&identity_parts(c, Some(&candidate.instance.id))),
                    namespace: key.namespace.clone(),
                    labels: compact(labels.into_iter().collect()),
                    annotations: annotations.into_iter().collect(),
                };
                let object = IstioObject::new(meta, Spec::WorkloadEntry(endpoint));
                out.objects.push(match health_in_status {
                    true => object.with_health(candidate.serving),
                    false => object,
                });
            }
        }
    }
    out.objects
        .push(IstioObject::new(se_meta, Spec::ServiceEntry(spec)));
    out
}

/// Where each contributor's service lands, and why: its host and its namespace.
fn trace_placement(key: &GroupKey, contributors: &[Contributor<'_>], trace: &mut Trace) {
    for c in contributors {
        trace.say(|| {
            format!(
                "host {}: the template {:?} of registry {:?} for service {}",
                key.host,
                c.settings.hosts.as_str(),
                c.registry,
                c.service.key()
            )
        });
        trace.say(|| {
            let why = match (
                c.settings.namespace_for(c.registry, c.service).fallback,
                &c.settings.namespace_rule,
            ) {
                (Some(Fallback::NotAllowed(why) | Fallback::Unnamed(why)), _) => why,
                (None, Some(rule)) => format!("namespace_from {:?}", rule.template.as_str()),
                (None, None) => format!("the namespace of registry {:?}", c.registry),
            };
            format!("namespace {}: {why}", key.namespace)
        });
        let left_out = c
            .service
            .instances
            .iter()
            .filter(|i| !c.settings.select.selects_instance(i))
            .count();
        if left_out > 0 {
            trace.say(|| {
                format!(
                    "select.instances of {:?} left out {left_out} instance(s) of {}",
                    c.registry,
                    c.service.key()
                )
            });
        }
    }
    if contributors.len() > 1 {
        trace.say(|| {
            let all: Vec<String> = contributors.iter().map(source_of).collect();
            format!(
                "merged: {} share the host; {} (the first) decides the name, location and exportTo",
                all.join(", "),
                source_of(&contributors[0])
            )
        });
    }
}

/// One entry of the sources annotation.
fn source_of(c: &Contributor<'_>) -> String {
    format!("{}:{}", c.registry, c.service.key())
}

/// (registry, namespace?, service[, instance]) — what identifies an object's origin.
fn identity_parts<'a>(c: &'a Contributor<'a>, instance: Option<&'a str>) -> Vec<&'a str> {
    let mut parts = vec![c.registry];
    parts.extend(c.service.namespace.as_deref());
    parts.push(&c.service.name);
    parts.extend(instance);
    parts
}

fn own_labels(c: &Contributor<'_>, instance_id: &str) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = [
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (REGISTRY_LABEL.to_string(), c.registry.to_string()),
        (INSTANCE_LABEL.to_string(), instance_id.to_string()),
    ]
    .into();
    if let Some(kind) = &c.settings.provenance {
        labels.insert(PROVENANCE_KIND_LABEL.to_string(), kind.clone());
    }
    labels
}

/// With provenance on, the registry-side namespace or group the service came from
/// (an annotation: it may hold characters a label value may not).
fn origin_annotation(c: &Contributor<'_>) -> Option<(String, String)> {
    c.settings.provenance.as_ref()?;
    let namespace = c.service.namespace.as_deref()?;
    Some((ORIGIN_NAMESPACE_ANNOTATION.to_string(), namespace.to_string()))
}

/// A service that asked for a namespace it did not get says so: a problem when the
/// namespace is not allowed, a note when the service names none.
fn report_namespace_fallbacks(contributors: &[Contributor<'_>], out: &mut Translation) {
    for c in contributors {
        match c.settings.namespace_for(c.registry, c.service).fallback {
            Some(Fallback::NotAllowed(why)) => out.skipped.push(skip(c, None, SkipKind::Adjusted, why)),
            Some(Fallback::Unnamed(why)) => out.notes.push(skip(c, None, SkipKind::Adjusted, why)),
            None => {}
        }
    }
}

/// The entry's virtual IP from the primary registry's `vip_range`, never one of its own
/// endpoints' addresses; none without a range (and a range that is full says so).
fn vip(
    key: &GroupKey,
    primary: &Contributor<'_>,
    endpoints: &[(&Candidate<'_>, Endpoint)],
    vips: &mut Allocator,
    out: &mut Translation,
) -> Vec<String> {
    let Some(range) = &primary.settings.vip_range else {
        vips.release(&key.namespace, &key.host);
        return Vec::new();
    };
    let own: Vec<std::net::IpAddr> = endpoints
        .iter()
        .filter_map(|(c, _)| match &c.instance.address {
            Address::Ip(ip) => Some(*ip),
            _ => None,
        })
        .collect();
    match vips.assign(range, &key.namespace, &key.host, &own) {
        Some(address) => vec![address.to_string()],
        None => {
            out.skipped.push(skip(
                primary,
                None,
                SkipKind::Adjusted,
                format!(
                    "vip_range {} has no free address; published without one (a wider range fixes this)",
                    range.as_str()
                ),
            ));
            Vec::new()
        }
    }
}

/// STATIC when every endpoint is an IP, DNS otherwise; an override may ask for either,
/// but STATIC with host-name endpoints is refused by Istio, so that request is not
/// followed.
fn resolution(
    primary: &Contributor<'_>,
    wanted: Option<Resolution>,
    endpoints: &[(&Candidate<'_>, Endpoint)],
    out: &mut Translation,
) -> Resolution {
    let all_ip = endpoints.iter().all(|(c, _)| c.instance.address.is_ip());
    match wanted {
        Some(Resolution::Static) if !all_ip => {
            out.skipped.push(skip(
                primary,
                None,
                SkipKind::Adjusted,
                "an override asks for resolution STATIC, but some endpoints are host names, which Istio refuses with STATIC; published with DNS".into(),
            ));
            Resolution::Dns
        }
        Some(wanted) => wanted,
        None if all_ip => Resolution::Static,
        None => Resolution::Dns,
    }
}

/// Metadata less the keys that name secrets (Dubbo's `token`, a `password`), which are
/// never published: labels are readable by anyone who may list entries.
fn without_secrets<'m>(
    c: &Contributor<'_>,
    metadata: &'m Metadata,
    drops: &mut Vec<LabelDrop>,
) -> Vec<(&'m String, &'m String)> {
    metadata
        .iter()
        .filter(|(key, value)| {
            if c.settings.secret_keys.matches(key) {
                drops.push(LabelDrop::Secret((*key).clone()));
                false
            } else if crate::settings::carries_userinfo(value) {
                drops.push(LabelDrop::Credentials((*key).clone()));
                false
            } else {
                true
            }
        })
        .collect()
}

fn is_reserved_label(key: &str) -> bool {
    key.starts_with(RESERVED_LABEL_PREFIX) || key == MANAGED_BY_LABEL
}

fn note_drops(
    out: &mut Translation,
    c: &Contributor<'_>,
    instance: Option<&Instance>,
    drops: Vec<LabelDrop>,
) {
    out.notes.extend(
        drops
            .into_iter()
            .map(|d| skip(c, instance, SkipKind::Adjusted, d.to_string())),
    );
}

/// Instances that can be published at all: every port outside Istio's reserved range
/// and at least one port. Others are skipped whole — an instance with a reserved port
/// is misregistered, and one without ports would receive traffic on numbers it never
/// declared.
fn validate_instances<'a>(contributors: &'a [Contributor<'a>], out: &mut Translation) -> Vec<Candidate<'a>> {
    let mut candidates = Vec::new();
    for (source, c) in contributors.iter().enumerate() {
        for instance in c
            .service
            .instances
            .iter()
            .filter(|i| c.settings.select.selects_instance(i))
        {
            if let Some(port) = instance.ports.iter().find(|p| RESERVED_PORTS.contains(&p.number)) {
                out.skipped.push(skip(
                    c,
                    Some(instance),
                    SkipKind::ReservedPort,
                    format!(
                        "port {} ({:?}) is reserved by Istio's sidecar",
                        port.number, port.name
                    ),
                ));
                continue;
            }
            if instance.ports.is_empty() {
                out.skipped.push(skip(
                    c,
                    Some(instance),
                    SkipKind::PortNotPublished,
                    "the instance declares no port".into(),
                ));
                continue;
            }
            let serving = instance.healthy && instance.weight != Some(0);
            candidates.push(Candidate {
                contributor: c,
                source,
                instance,
                serving,
                aliases: BTreeMap::new(),
            });
        }
    }
    candidates
}

/// Where an endpoint sends traffic: two endpoints alike in this are one.
type EndpointIdentity = (Address, Arc<LiteMap<String, u32>>);

/// Endpoints of the serving instances (of every instance, when health is kept in
/// status), sorted by address, duplicates (the same address and ports from two
/// registries during a migration) kept once, a serving one first.
fn endpoints<'a>(
    candidates: &'a [Candidate<'a>],
    ports: &[LogicalPort],
    with_unhealthy: bool,
    out: &mut Translation,
) -> Vec<(&'a Candidate<'a>, Endpoint)> {
    let mut by_identity: BTreeMap<EndpointIdentity, (&Candidate<'_>, Endpoint)> = BTreeMap::new();
    let mut shared_ports = SharedMaps::default();
    let mut shared_labels = SharedMaps::default();
    for candidate in candidates.iter().filter(|c| c.serving || with_unhealthy) {
        let c = candidate.contributor;
        let instance = candidate.instance;
        let port_map = shared_ports.share(compact(
            ports
                .iter()
                .filter_map(|lp| {
                    let own = candidate.port(&lp.logical)?;
                    Some((lp.port.name.clone(), u32::from(lp.target.unwrap_or(own.number))))
                })
                .collect(),
        ));
        let mut secrets = Vec::new();
        let public = without_secrets(c, &instance.labels, &mut secrets);
        let (mut labels, drops) = sanitize_labels(public, is_reserved_label);
        note_drops(out, c, Some(instance), secrets);
        note_drops(out, c, Some(instance), drops);
        if c.settings.sidecar {
            labels.insert(TLS_MODE_LABEL.to_string(), "istio".to_string());
        }
        if labels.len() > MAX_ENDPOINT_LABELS {
            let extra: Vec<String> = labels.keys().skip(MAX_ENDPOINT_LABELS).cloned().collect();
            for key in &extra {
                labels.remove(key);
            }
            out.notes.push(skip(
                c,
                Some(instance),
                SkipKind::Adjusted,
                format!(
                    "{} labels dropped: Istio allows at most {MAX_ENDPOINT_LABELS}",
                    extra.len()
                ),
            ));
        }
        let endpoint = Endpoint {
            address: instance.address.to_string(),
            ports: Arc::clone(&port_map),
            labels: shared_labels.share(compact(labels.into_iter().collect())),
            network: checked_text(out, candidate, "network", instance.network(), |_| true),
            locality: checked_text(out, candidate, "locality", instance.locality(), |l| {
                l.split('/').count() <= 3
            }),
            weight: instance.weight,
            service_account: checked_text(
                out,
                candidate,
                "service account",
                instance.service_account(),
                is_dns1123_subdomain,
            ),
        };
        let slot = by_identity.entry((instance.address.clone(), port_map));
        match slot {
            std::collections::btree_map::Entry::Vacant(vacant) => {
                vacant.insert((candidate, endpoint));
            }
            std::collections::btree_map::Entry::Occupied(mut taken)
                if !taken.get().0.serving && candidate.serving =>
            {
                taken.insert((candidate, endpoint));
            }
            std::collections::btree_map::Entry::Occupied(_) => {}
        }
    }
    by_identity.into_values().collect()
}

/// Keeps an optional text field when it is sane (at most 2048 bytes, the CRD's limit,
/// and passing `valid`); otherwise drops it with a note rather than losing the endpoint.
fn checked_text(
    out: &mut Translation,
    candidate: &Candidate<'_>,
    what: &str,
    value: Option<&str>,
    valid: impl Fn(&str) -> bool,
) -> Option<Box<str>> {
    let value = value.map(str::trim).filter(|v| !v.is_empty())?;
    if value.len() <= 2048 && valid(value) {
        return Some(value.into());
    }
    out.notes.push(skip(
        candidate.contributor,
        Some(candidate.instance),
        SkipKind::Adjusted,
        format!(
            "{what} {:?} dropped: not a valid value",
            value.chars().take(64).collect::<String>()
        ),
    ));
    None
}

/// A rough serialized size, enough to keep objects far from etcd's limit.
fn estimated_size(endpoint: &Endpoint) -> usize {
    64 + endpoint.address.len()
        + endpoint.ports.keys().map(|k| k.len() + 16).sum::<usize>()
        + endpoint
            .labels
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum::<usize>()
        + endpoint.locality.as_deref().map_or(0, str::len)
        + endpoint.network.as_deref().map_or(0, str::len)
}

/// Inline or WorkloadEntries for this group. The `Auto` result is resolved here:
/// the returned mode is `Inline` or `WorkloadEntry`.
fn endpoint_mode(
    primary: &Contributor<'_>,
    wanted: Option<EndpointMode>,
    endpoints: &[(&Candidate<'_>, Endpoint)],
    out: &mut Translation,
) -> EndpointMode {
    let count = endpoints.len();
    let size: usize = endpoints.iter().map(|(_, e)| estimated_size(e)).sum();
    match wanted.unwrap_or(primary.settings.endpoints) {
        EndpointMode::WorkloadEntry => EndpointMode::WorkloadEntry,
        EndpointMode::Auto if count > AUTO_INLINE_LIMIT || size > AUTO_INLINE_MAX_BYTES => {
            EndpointMode::WorkloadEntry
        }
        EndpointMode::Auto => EndpointMode::Inline,
        EndpointMode::Inline if count > INLINE_ENDPOINT_LIMIT || size > INLINE_MAX_BYTES => {
            out.skipped.push(skip(
                primary,
                None,
                SkipKind::Adjusted,
                format!(
                    "{count} endpoints (~{} KiB) do not fit inline (the API server refuses more than {INLINE_ENDPOINT_LIMIT} or about 1.5 MiB); published as WorkloadEntries instead",
                    size / 1024
                ),
            ));
            EndpointMode::WorkloadEntry
        }
        EndpointMode::Inline => EndpointMode::Inline,
    }
}

/// Service metadata of all contributors as labels of the ServiceEntry (the first
/// contributor wins a shared key).
fn service_labels(contributors: &[Contributor<'_>], out: &mut Translation) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for c in contributors {
        let mut secrets = Vec::new();
        let public = without_secrets(c, &c.service.labels, &mut secrets);
        let (own, drops) = sanitize_labels(public, |k| is_reserved_label(k) || k == TLS_MODE_LABEL);
        note_drops(out, c, None, secrets);
        note_drops(out, c, None, drops);
        for (k, v) in own {
            labels.entry(k).or_insert(v);
        }
    }
    labels
}
