//! The ports of a host group: which logical ports the ServiceEntry publishes, under
//! which number, protocol and name, across the instances and registries of the group.

use std::collections::{BTreeMap, BTreeSet};

use registry_sync_catalog::{Protocol, SkipKind};
use registry_sync_istio::ServicePort;

use super::{Candidate, skip};
use crate::Contributor;
use crate::Translation;
use crate::overrides::PortOverride;

/// Metadata key whose value names the port protocol, the convention shared by Consul
/// service meta, Nacos and Eureka metadata.
const PROTOCOL_KEY: &str = "protocol";

/// A ServiceEntry port and the logical port it stands for.
pub(super) struct LogicalPort {
    pub(super) logical: String,
    pub(super) port: ServicePort,
    /// Set by an override: the port every endpoint receives this traffic on.
    pub(super) target: Option<u16>,
    /// Where the protocol came from, for `explain`.
    pub(super) why: &'static str,
}

/// The protocol one instance gives a logical port: the `protocol` metadata key (only
/// for a single-port instance — with several ports it cannot say which one it means),
/// then the port name's prefix, then the registry's own hint.
fn instance_protocol(candidate: &Candidate<'_>, logical: &str) -> Option<Protocol> {
    protocol_and_source(candidate, logical).0
}

/// [`instance_protocol`], and where it came from, in words for `explain`.
fn protocol_and_source(candidate: &Candidate<'_>, logical: &str) -> (Option<Protocol>, &'static str) {
    let instance = candidate.instance;
    let Some(port) = candidate.port(logical) else {
        return (None, "the instance does not declare the port");
    };
    if instance.ports.len() == 1 {
        let meta = instance
            .labels
            .get(PROTOCOL_KEY)
            .or_else(|| candidate.contributor.service.labels.get(PROTOCOL_KEY));
        if let Some(protocol) = meta.and_then(|m| Protocol::parse(m)) {
            return (Some(protocol), "the `protocol` metadata key");
        }
    }
    match (Protocol::from_port_name(&port.name), port.protocol_hint) {
        (Some(protocol), _) => (Some(protocol), "the port name's prefix"),
        (None, Some(hint)) => (Some(hint), "what the registry says of the port"),
        (None, None) => (None, "nothing says; TCP is safe for every protocol"),
    }
}

/// Registries name the same port differently: Consul, Nacos and etcd call a service's
/// one port `default`, Eureka `http`, Dubbo by its protocol. Within one registry a name
/// is the logical port (instances may differ in its number); across the registries of a
/// merged group, a port of a later registry that has another registry's number and a
/// compatible protocol (equal, or unknown on one side) joins that registry's port, so
/// the merged entry publishes one port every instance serves instead of none.
pub(super) fn merge_port_names(candidates: &mut [Candidate<'_>]) {
    let Some(last) = candidates.iter().map(|c| c.source).max() else {
        return;
    };
    if candidates.iter().all(|c| c.source == last) {
        return;
    }
    // (number, protocol, logical name, source) of every port seen so far.
    let mut known: Vec<(u16, Option<Protocol>, String, usize)> = Vec::new();
    let mut aliases: Vec<BTreeMap<String, String>> = vec![BTreeMap::new(); last + 1];
    for (source, own_aliases) in aliases.iter_mut().enumerate() {
        let own: Vec<&Candidate<'_>> = candidates.iter().filter(|c| c.source == source).collect();
        let names: BTreeSet<&str> = own
            .iter()
            .flat_map(|c| c.instance.ports.iter().map(|p| p.name.as_str()))
            .collect();
        for &name in &names {
            let mut numbers = Vec::new();
            let mut protocols: BTreeSet<Option<Protocol>> = BTreeSet::new();
            for c in &own {
                if let Some(p) = c.instance.ports.iter().find(|p| p.name == name) {
                    numbers.push(p.number);
                    protocols.insert(instance_protocol(c, name));
                }
            }
            let number = majority_number(numbers.into_iter());
            let protocol = match protocols.len() {
                1 => protocols.into_iter().next().flatten(),
                _ => None,
            };
            let joins = known.iter().find(|(n, p, logical, from)| {
                *from != source
                    && *n == number
                    && logical != name
                    && (p.is_none() || protocol.is_none() || *p == protocol)
                    && !names.contains(logical.as_str())
            });
            match joins {
                Some((_, _, logical, _)) => {
                    own_aliases.insert(name.to_string(), logical.clone());
                }
                None => known.push((number, protocol, name.to_string(), source)),
            }
        }
    }
    for c in candidates.iter_mut() {
        c.aliases = aliases[c.source].clone();
    }
}

/// The number most instances use for a port, which is what clients dial; ties go to the
/// lowest.
fn majority_number(numbers: impl Iterator<Item = u16>) -> u16 {
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for number in numbers {
        *counts.entry(number).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(number, _)| number)
        .unwrap_or_default()
}

/// One ServiceEntry port per logical port that every serving instance declares.
///
/// Istio sends a port's traffic to an endpoint that has no number for it on the port's
/// own number, so publishing a port that some serving instance lacks would send traffic
/// where nothing listens. Such ports are left out and reported. With no serving
/// instance there is no such risk, and the union of all ports is published so the
/// entry keeps its shape.
pub(super) fn service_ports(
    candidates: &[Candidate<'_>],
    primary: &Contributor<'_>,
    overrides: &BTreeMap<u16, PortOverride>,
    out: &mut Translation,
) -> Vec<LogicalPort> {
    let serving: Vec<&Candidate<'_>> = candidates.iter().filter(|c| c.serving).collect();
    let basis: Vec<&Candidate<'_>> = if serving.is_empty() {
        candidates.iter().collect()
    } else {
        serving
    };

    let mut union: BTreeSet<&str> = BTreeSet::new();
    for c in &basis {
        union.extend(c.instance.ports.iter().map(|p| c.logical(p)));
    }
    let mut logical: Vec<&str> = Vec::new();
    for name in union {
        let lacking: Vec<&Candidate<'_>> = basis
            .iter()
            .copied()
            .filter(|c| c.serving && !c.declares(name))
            .collect();
        if let Some(first) = lacking.first() {
            out.skipped.push(skip(
                primary,
                None,
                SkipKind::PortNotPublished,
                format!(
                    "port {name:?} not published: {} serving instance(s), e.g. {:?} of {:?}, do not declare it, and Istio would send its traffic to them anyway",
                    lacking.len(),
                    first.instance.id,
                    first.contributor.registry,
                ),
            ));
        } else {
            logical.push(name);
        }
    }

    let mut used_numbers: BTreeMap<u32, String> = BTreeMap::new();
    let mut ports = Vec::new();
    for name in logical {
        let users: Vec<&Candidate<'_>> = basis.iter().copied().filter(|c| c.declares(name)).collect();
        let number = u32::from(majority_number(
            users.iter().filter_map(|c| c.port(name)).map(|p| p.number),
        ));
        let mut protocols: BTreeSet<Option<Protocol>> =
            users.iter().map(|c| instance_protocol(c, name)).collect();
        // Across registries, one that says nothing of a port's protocol (Consul's
        // `default`) has no opinion; instances of one registry that disagree do.
        let sources: BTreeSet<usize> = users.iter().map(|c| c.source).collect();
        if sources.len() > 1 && protocols.len() > 1 {
            protocols.remove(&None);
        }
        let mut why = users
            .first()
            .map_or("nothing says; TCP is safe for every protocol", |c| {
                protocol_and_source(c, name).1
            });
        let protocol = match protocols.iter().next() {
            Some(Some(p)) if protocols.len() == 1 => *p,
            Some(None) if protocols.len() == 1 => Protocol::Tcp,
            _ => {
                why = "instances disagree; TCP is safe for every protocol";
                out.notes.push(skip(
                    primary,
                    None,
                    SkipKind::Adjusted,
                    format!(
                        "port {name:?}: instances disagree on the protocol ({protocols:?}); published as TCP"
                    ),
                ));
                Protocol::Tcp
            }
        };
        if let Some(other) = used_numbers.get(&number) {
            out.skipped.push(skip(
                primary,
                None,
                SkipKind::PortNotPublished,
                format!("port {name:?} not published: its number {number} is already used by port {other:?}"),
            ));
            continue;
        }
        used_numbers.insert(number, name.to_string());
        let wanted = u16::try_from(number).ok().and_then(|n| overrides.get(&n));
        if wanted.and_then(|o| o.protocol).is_some() {
            why = "an override";
        }
        let protocol = wanted.and_then(|o| o.protocol).unwrap_or(protocol);
        ports.push(LogicalPort {
            logical: name.to_string(),
            port: ServicePort {
                number,
                protocol: protocol.as_istio().to_string(),
                name: format!("{}-{number}", protocol.as_port_prefix()),
            },
            target: wanted.and_then(|o| o.target_port),
            why,
        });
    }
    ports.sort_by_key(|p| p.port.number);
    rename_ports(&mut ports, overrides, primary, out);
    ports
}

/// Port names an override gives, where they stay unique within the entry (Istio
/// refuses two ports of one name).
fn rename_ports(
    ports: &mut [LogicalPort],
    overrides: &BTreeMap<u16, PortOverride>,
    primary: &Contributor<'_>,
    out: &mut Translation,
) {
    for at in 0..ports.len() {
        let number = ports[at].port.number;
        let Some(name) = u16::try_from(number)
            .ok()
            .and_then(|n| overrides.get(&n))
            .and_then(|o| o.name.as_ref())
        else {
            continue;
        };
        if ports
            .iter()
            .any(|p| p.port.name == *name && p.port.number != number)
        {
            out.skipped.push(skip(
                primary,
                None,
                SkipKind::Adjusted,
                format!("an override names port {number} {name:?}, which another port of the entry has; kept {:?}", ports[at].port.name),
            ));
            continue;
        }
        ports[at].port.name = name.clone();
    }
}
