//! Validation of one service or instance at a time.
//!
//! Every problem is collected with its line rather than stopping at the first, so an
//! operator fixes an item in one pass; an item with any problem is skipped whole,
//! because a half-understood instance is worse than a missing one.

use std::collections::BTreeMap;

use registry_sync_catalog::{
    Address, Instance, InstancePort, Placement, RegistrySnapshot, Service, ServiceKey, SkipKind, Skipped,
    parse_port,
};

use super::node::{Node, SNode, line, scalar_text};

const SERVICE_KEYS: &[&str] = &["name", "namespace", "labels", "instances"];
const INSTANCE_KEYS: &[&str] = &[
    "address",
    "id",
    "ports",
    "healthy",
    "weight",
    "locality",
    "network",
    "service_account",
    "labels",
];

/// Collects the services of one file and the items it refused.
pub(super) struct Items<'s> {
    registry: &'s str,
    /// The file's text, to quote scalars as they are written.
    source: &'s str,
    services: Vec<Service>,
    skipped: Vec<Skipped>,
}

/// Problems found in one item, each already prefixed with its line; the first one
/// of a kind other than malformed input gives the item's kind.
#[derive(Default)]
struct Problems {
    texts: Vec<String>,
    kind: Option<SkipKind>,
}

impl Problems {
    fn new() -> Problems {
        Problems::default()
    }

    /// A part of the item that does not parse.
    fn push(&mut self, text: String) {
        self.texts.push(text);
    }

    /// A problem of a known kind (an address, a port).
    fn push_kind(&mut self, kind: SkipKind, text: String) {
        self.kind.get_or_insert(kind);
        self.texts.push(text);
    }

    fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    fn one(text: String) -> Problems {
        Problems {
            texts: vec![text],
            kind: None,
        }
    }
}

impl<'s> Items<'s> {
    pub(super) fn new(registry: &'s str, source: &'s str) -> Self {
        Items {
            registry,
            source,
            services: Vec::new(),
            skipped: Vec::new(),
        }
    }

    pub(super) fn into_snapshot(self) -> RegistrySnapshot {
        RegistrySnapshot::new(self.registry, self.services, self.skipped)
    }

    pub(super) fn service(&mut self, index: usize, node: &SNode) {
        let mut problems = Problems::new();
        let Node::Map(entries) = &node.value else {
            self.skip(
                format!("#{index}"),
                None,
                Problems::one(format!(
                    "line {}: a service must be a mapping with `name` and `instances`, found {}",
                    line(node),
                    node.value.kind()
                )),
            );
            return;
        };
        let fields = self.fields(entries, SERVICE_KEYS, &mut problems);
        let name = match fields.get("name") {
            None => {
                problems.push(format!("line {}: the service has no `name`", line(node)));
                None
            }
            Some(n) => self.required_text(n, "name", &mut problems),
        };
        let namespace = fields
            .get("namespace")
            .filter(|n| !matches!(n.value, Node::Null))
            .and_then(|n| self.required_text(n, "namespace", &mut problems));
        let labels = fields
            .get("labels")
            .map(|n| self.labels(n, "labels", &mut problems))
            .unwrap_or_default();
        let instance_nodes: &[SNode] = match fields.get("instances").map(|n| (n, &n.value)) {
            None | Some((_, Node::Null)) => &[],
            Some((_, Node::Seq(items))) => items,
            Some((n, other)) => {
                problems.push(format!(
                    "line {}: `instances` must be a list, found {}",
                    line(n),
                    other.kind()
                ));
                &[]
            }
        };
        let key = match &name {
            Some(name) => ServiceKey {
                namespace: namespace.clone(),
                name: name.clone(),
            }
            .to_string(),
            None => format!("#{index}"),
        };
        let Some(name) = name.filter(|_| problems.is_empty()) else {
            self.skip(key, None, problems);
            return;
        };
        let mut instances = Vec::with_capacity(instance_nodes.len());
        for (i, instance_node) in instance_nodes.iter().enumerate() {
            match self.instance(i, instance_node) {
                Ok(instance) => instances.push(instance),
                Err((id, problems)) => self.skip(key.clone(), Some(id), problems),
            }
        }
        self.services.push(Service {
            name,
            namespace,
            labels: labels.into_iter().collect(),
            instances,
        });
    }

    fn instance(&self, index: usize, node: &SNode) -> Result<Instance, (String, Problems)> {
        let mut problems = Problems::new();
        let Node::Map(entries) = &node.value else {
            let why = format!(
                "line {}: an instance must be a mapping with `address` and `ports`, found {}",
                line(node),
                node.value.kind()
            );
            return Err((format!("#{index}"), Problems::one(why)));
        };
        let fields = self.fields(entries, INSTANCE_KEYS, &mut problems);
        let id = fields
            .get("id")
            .and_then(|n| self.required_text(n, "id", &mut problems));
        let raw_address = fields.get("address").and_then(|n| scalar_text(self.source, n));
        let ident = id
            .clone()
            .or_else(|| raw_address.clone())
            .unwrap_or_else(|| format!("#{index}"));

        let address = match fields.get("address") {
            None => {
                problems.push(format!("line {}: the instance has no `address`", line(node)));
                None
            }
            Some(n) => {
                self.required_text(n, "address", &mut problems)
                    .and_then(|raw| match Address::parse(&raw) {
                        Ok(address) => Some(address),
                        Err(e) => {
                            problems.push_kind(SkipKind::InvalidAddress, format!("line {}: {e}", line(n)));
                            None
                        }
                    })
            }
        };
        let ports = match fields.get("ports") {
            None => {
                problems.push_kind(SkipKind::PortNotPublished, format!(
                    "line {}: the instance has no `ports`; give at least one, e.g. `ports: {{http: 8080}}`",
                    line(node)
                ));
                Vec::new()
            }
            Some(n) => self.ports(n, &mut problems),
        };
        let healthy = match fields.get("healthy").map(|n| (n, &n.value)) {
            None | Some((_, Node::Null)) => true,
            Some((_, Node::Bool(b))) => *b,
            Some((n, _)) => {
                problems.push(format!(
                    "line {}: `healthy` must be true or false, found {}",
                    line(n),
                    self.describe(n)
                ));
                true
            }
        };
        let weight = fields.get("weight").and_then(|n| self.weight(n, &mut problems));
        let mut optional = |key: &str| {
            fields
                .get(key)
                .and_then(|n| self.optional_text(n, key, &mut problems))
                .filter(|s| !s.trim().is_empty())
        };
        let locality = optional("locality");
        let network = optional("network");
        let service_account = optional("service_account");
        let labels = fields
            .get("labels")
            .map(|n| self.labels(n, "labels", &mut problems))
            .unwrap_or_default();

        match address {
            Some(address) if problems.is_empty() => Ok(Instance {
                id: id.unwrap_or_else(|| default_id(&address, &ports)),
                address,
                ports,
                healthy,
                weight,
                placement: Placement::boxed(locality, network, service_account),
                labels: labels.into_iter().collect(),
            }),
            _ => Err((ident, problems)),
        }
    }

    fn ports(&self, node: &SNode, problems: &mut Problems) -> Vec<InstancePort> {
        let Node::Map(entries) = &node.value else {
            problems.push(format!(
                "line {}: `ports` must map port names to numbers, e.g. `{{http: 8080}}`, found {}",
                line(node),
                node.value.kind()
            ));
            return Vec::new();
        };
        if entries.is_empty() {
            problems.push(format!(
                "line {}: `ports` is empty; give at least one port",
                line(node)
            ));
        }
        let mut ports: BTreeMap<String, u16> = BTreeMap::new();
        for (key, value) in entries {
            let Some(name) = scalar_text(self.source, key) else {
                problems.push(format!(
                    "line {}: a port name must be text, found {}",
                    line(key),
                    key.value.kind()
                ));
                continue;
            };
            if name.trim().is_empty() {
                problems.push(format!("line {}: a port name is empty", line(key)));
                continue;
            }
            let number = match &value.value {
                Node::Int(n) => parse_port(*n),
                Node::UInt(n) => parse_port(*n),
                _ => {
                    problems.push_kind(
                        SkipKind::InvalidPort,
                        format!(
                            "line {}: ports.{name}: must be a whole number from 1 to 65535, found {}",
                            line(value),
                            self.describe(value)
                        ),
                    );
                    continue;
                }
            };
            match number {
                Err(e) => problems.push_kind(
                    SkipKind::InvalidPort,
                    format!("line {}: ports.{name}: {e}", line(value)),
                ),
                Ok(_) if ports.contains_key(&name) => {
                    problems.push_kind(
                        SkipKind::Duplicate,
                        format!("line {}: the port name {name:?} appears twice", line(key)),
                    );
                }
                Ok(number) => {
                    ports.insert(name, number);
                }
            }
        }
        ports
            .into_iter()
            .map(|(name, number)| InstancePort {
                name,
                number,
                protocol_hint: None,
            })
            .collect()
    }

    fn weight(&self, node: &SNode, problems: &mut Problems) -> Option<u32> {
        let weight = match &node.value {
            Node::Null => return None,
            Node::Int(n) => u32::try_from(*n).ok(),
            Node::UInt(n) => u32::try_from(*n).ok(),
            _ => None,
        };
        match weight {
            Some(w) if w > 0 => Some(w),
            _ => {
                problems.push(format!(
                    "line {}: `weight` must be a whole number from 1 to {}, found {}",
                    line(node),
                    u32::MAX,
                    self.describe(node)
                ));
                None
            }
        }
    }

    /// String-to-string metadata. Numbers and booleans are kept as written; an empty
    /// value (`key:`) is the empty string, which labels allow.
    fn labels(&self, node: &SNode, what: &str, problems: &mut Problems) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        let entries = match &node.value {
            Node::Null => return labels,
            Node::Map(entries) => entries,
            other => {
                problems.push(format!(
                    "line {}: `{what}` must map names to text, found {}",
                    line(node),
                    other.kind()
                ));
                return labels;
            }
        };
        for (key, value) in entries {
            let Some(name) = scalar_text(self.source, key) else {
                problems.push(format!(
                    "line {}: a key in `{what}` must be text, found {}",
                    line(key),
                    key.value.kind()
                ));
                continue;
            };
            let text = match &value.value {
                Node::Null => Some(String::new()),
                _ => scalar_text(self.source, value),
            };
            match text {
                None => problems.push(format!(
                    "line {}: {what}.{name}: must be text, found {}",
                    line(value),
                    value.value.kind()
                )),
                Some(_) if labels.contains_key(&name) => {
                    problems.push(format!("line {}: {what}.{name} appears twice", line(key)));
                }
                Some(text) => {
                    labels.insert(name, text);
                }
            }
        }
        labels
    }

    /// Looks up the known keys of a mapping. Unknown and repeated keys are problems:
    /// a typo such as `adress` must never quietly produce an instance without the
    /// field the operator meant to set.
    fn fields<'n>(
        &self,
        entries: &'n [(SNode, SNode)],
        known: &[&'static str],
        problems: &mut Problems,
    ) -> BTreeMap<&'static str, &'n SNode> {
        let mut fields = BTreeMap::new();
        for (key, value) in entries {
            let name = scalar_text(self.source, key).unwrap_or_else(|| key.value.kind().to_string());
            match known.iter().find(|k| **k == name) {
                Some(k) if fields.contains_key(k) => {
                    problems.push(format!("line {}: the key `{k}` appears twice", line(key)));
                }
                Some(k) => {
                    fields.insert(*k, value);
                }
                None => problems.push(format!(
                    "line {}: unknown key {name:?}; known keys are {}",
                    line(key),
                    known.join(", ")
                )),
            }
        }
        fields
    }

    /// Text that must be present. Numbers and booleans count as text, because
    /// `id: 0123` or `name: 2024` are names to the operator who wrote them.
    fn required_text(&self, node: &SNode, what: &str, problems: &mut Problems) -> Option<String> {
        if let Node::Null = node.value {
            problems.push(format!("line {}: `{what}` is empty", line(node)));
            return None;
        }
        let text = self.optional_text(node, what, problems)?;
        if text.trim().is_empty() {
            problems.push(format!("line {}: `{what}` is empty", line(node)));
            return None;
        }
        Some(text)
    }

    fn optional_text(&self, node: &SNode, what: &str, problems: &mut Problems) -> Option<String> {
        match &node.value {
            Node::Null => None,
            _ => {
                let text = scalar_text(self.source, node);
                if text.is_none() {
                    problems.push(format!(
                        "line {}: `{what}` must be text, found {}",
                        line(node),
                        node.value.kind()
                    ));
                }
                text
            }
        }
    }

    /// "text \"8080\"" or "a list": what a reason shows of an unexpected value.
    fn describe(&self, node: &SNode) -> String {
        match scalar_text(self.source, node) {
            Some(text) => format!("{} {text:?}", node.value.kind()),
            None => node.value.kind().to_string(),
        }
    }

    fn skip(&mut self, service: String, instance: Option<String>, problems: Problems) {
        self.skipped.push(Skipped {
            registry: self.registry.to_string(),
            service,
            instance,
            kind: problems.kind.unwrap_or(SkipKind::Malformed),
            reason: problems.texts.join("; "),
        });
    }
}

/// `<address>:<port numbers, sorted and joined by ','>`, with IPv6 in brackets so the
/// last colon always separates the ports. Stable as long as the instance's address
/// and ports are, which is what WorkloadEntry names need.
fn default_id(address: &Address, ports: &[InstancePort]) -> String {
    let mut numbers: Vec<u16> = ports.iter().map(|p| p.number).collect();
    numbers.sort_unstable();
    numbers.dedup();
    let numbers: Vec<String> = numbers.iter().map(u16::to_string).collect();
    match address {
        Address::Ip(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{}", numbers.join(",")),
        other => format!("{other}:{}", numbers.join(",")),
    }
}
