//! Per-service overrides from the config: what registry metadata cannot say, or says
//! wrong, set by hand for the services a rule matches.
//!
//! Every rule that matches a host group applies, in the config's order; for each field
//! the last rule that sets it wins. The ServiceEntry names the rules that shaped it in
//! its [`OVERRIDES_ANNOTATION`], so `plan` and `explain` can say why it looks as it does.

use std::collections::BTreeMap;

use registry_sync_catalog::Protocol;
use registry_sync_istio::{Location, Resolution};

use crate::{Contributor, EndpointMode, Glob};

/// The names of the override rules that shaped a ServiceEntry, comma-separated.
pub const OVERRIDES_ANNOTATION: &str = "registry-sync.io/overrides";

/// One published port, as an override reshapes it. Matched by the ServiceEntry port's
/// number (the number clients dial).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortOverride {
    pub number: u16,
    pub name: Option<String>,
    pub protocol: Option<Protocol>,
    /// The port the instances receive this traffic on, written as every endpoint's port
    /// for it (which Istio prefers over the entry's `targetPort`).
    pub target_port: Option<u16>,
}

/// One entry of `overrides`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    /// Its name in plans and annotations (`overrides[N]` when the config gives none).
    pub name: String,
    /// Registry names; `*` all.
    pub registry: Glob,
    /// Service names, or `namespace/name` (see [`Glob::matches_service`]).
    pub service: Glob,
    pub ports: Vec<PortOverride>,
    /// Hosts added after the template's, for clients that use another name.
    pub aliases: Vec<String>,
    pub location: Option<Location>,
    pub resolution: Option<Resolution>,
    pub endpoints: Option<EndpointMode>,
    pub export_to: Option<Vec<String>>,
    /// Labels added to the ServiceEntry; they win over registry metadata and the
    /// registry's own config labels.
    pub labels: BTreeMap<String, String>,
}

impl Override {
    fn matches(&self, c: &Contributor<'_>) -> bool {
        self.registry.matches(c.registry) && self.service.matches_service(c.service)
    }
}

/// What the matching rules of one group come to.
#[derive(Debug, Default)]
pub(crate) struct Effective<'a> {
    pub names: Vec<&'a str>,
    pub ports: BTreeMap<u16, PortOverride>,
    pub aliases: Vec<String>,
    pub location: Option<Location>,
    pub resolution: Option<Resolution>,
    pub endpoints: Option<EndpointMode>,
    pub export_to: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
}

impl<'a> Effective<'a> {
    /// The rules that match any contributor of the group.
    pub fn of(rules: &'a [Override], contributors: &[Contributor<'_>]) -> Effective<'a> {
        let mut out = Effective::default();
        for rule in rules.iter().filter(|r| contributors.iter().any(|c| r.matches(c))) {
            out.names.push(&rule.name);
            for port in &rule.ports {
                let merged = out.ports.entry(port.number).or_insert(PortOverride {
                    number: port.number,
                    name: None,
                    protocol: None,
                    target_port: None,
                });
                merged.name = port.name.clone().or(merged.name.take());
                merged.protocol = port.protocol.or(merged.protocol);
                merged.target_port = port.target_port.or(merged.target_port);
            }
            for alias in &rule.aliases {
                if !out.aliases.contains(alias) {
                    out.aliases.push(alias.clone());
                }
            }
            out.location = rule.location.or(out.location);
            out.resolution = rule.resolution.or(out.resolution);
            out.endpoints = rule.endpoints.or(out.endpoints);
            if rule.export_to.is_some() {
                out.export_to = rule.export_to.clone();
            }
            out.labels
                .extend(rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out
    }
}
