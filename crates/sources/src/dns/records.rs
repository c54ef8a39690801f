//! From SRV records and the addresses of their targets to instances: pure, so every
//! rule (priority, weight 0, target `.`, a target without address) is tested without
//! a DNS server.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use registry_sync_catalog::{Address, Instance, InstancePort, Metadata, Refusal, parse_port};

use super::SrvName;
use crate::state::Item;

/// One SRV record, its target lowercased without the trailing dot (`""` for `.`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SrvRecord {
    pub(super) priority: u16,
    pub(super) weight: u16,
    pub(super) port: u16,
    pub(super) target: String,
}

/// What looking a target up found: its addresses, or why it has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum TargetAddresses {
    Found(Vec<IpAddr>),
    Missing(String),
}

/// The records that are published: those of the lowest priority, without the "not
/// available" target `.`.
pub(super) fn published(records: &[SrvRecord]) -> Vec<&SrvRecord> {
    let usable = || records.iter().filter(|r| !r.target.is_empty());
    let Some(lowest) = usable().map(|r| r.priority).min() else {
        return Vec::new();
    };
    usable().filter(|r| r.priority == lowest).collect()
}

/// The service's items, by instance id: one instance per address of each published
/// target, or why a target was left out.
pub(super) fn items(
    registry: &str,
    name: &SrvName,
    records: &[SrvRecord],
    targets: &HashMap<String, TargetAddresses>,
) -> BTreeMap<String, Item> {
    let mut items = BTreeMap::new();
    for record in published(records) {
        let key = format!("{}:{}", record.target, record.port);
        let skip = |refusal: Refusal| refusal.skipped(registry, name.service(), Some(&key));
        let port = match parse_port(record.port) {
            Ok(port) => port,
            Err(error) => {
                items.insert(
                    key.clone(),
                    Err(skip(Refusal::port(format!(
                        "the SRV record of {}: {error}",
                        name.name()
                    )))),
                );
                continue;
            }
        };
        let addresses = match targets.get(&record.target) {
            Some(TargetAddresses::Found(addresses)) => addresses,
            Some(TargetAddresses::Missing(reason)) => {
                items.insert(key.clone(), Err(skip(Refusal::address(reason.clone()))));
                continue;
            }
            None => {
                items.insert(
                    key.clone(),
                    Err(skip(Refusal::address("the target was not looked up"))),
                );
                continue;
            }
        };
        for ip in addresses {
            let id = format!("{key}/{ip}");
            let item = match Address::parse(&ip.to_string()) {
                Ok(address) => Ok(Instance {
                    id: id.clone(),
                    address,
                    ports: vec![InstancePort {
                        name: name.port_name().to_string(),
                        number: port,
                        protocol_hint: None,
                    }],
                    healthy: true,
                    // RFC 2782: weight 0 is a very small share, not none.
                    weight: Some(u32::from(record.weight.max(1))),
                    placement: None,
                    labels: Metadata::new(),
                }),
                Err(error) => Err(Refusal::address(format!(
                    "target {} resolves to an unusable address: {error}",
                    record.target
                ))
                .skipped(registry, name.service(), Some(&id))),
            };
            items.insert(id, item);
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    fn found(ips: &[&str]) -> TargetAddresses {
        TargetAddresses::Found(ips.iter().map(|ip| ip.parse().unwrap()).collect())
    }

    fn name() -> SrvName {
        SrvName::parse("_http._tcp.billing.example").unwrap()
    }

    #[test]
    fn each_address_of_each_target_is_one_instance_with_the_srv_port_and_weight() {
        let records = [srv(10, 5, 8080, "a.example"), srv(10, 0, 8081, "b.example")];
        let targets = HashMap::from([
            ("a.example".to_string(), found(&["10.0.0.1"])),
            ("b.example".to_string(), found(&["10.0.0.2", "fd00::2"])),
        ]);
        let items = items("dns", &name(), &records, &targets);
        let summary: Vec<(String, u16, Option<u32>)> = items
            .values()
            .map(|i| {
                let i = i.as_ref().unwrap();
                (i.id.clone(), i.ports[0].number, i.weight)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("a.example:8080/10.0.0.1".to_string(), 8080, Some(5)),
                ("b.example:8081/10.0.0.2".to_string(), 8081, Some(1)),
                ("b.example:8081/fd00::2".to_string(), 8081, Some(1)),
            ],
            "weight 0 becomes 1"
        );
        let first = items.values().next().unwrap().as_ref().unwrap();
        assert_eq!(first.ports[0].name, "http");
    }

    #[test]
    fn only_the_lowest_priority_is_published() {
        let records = [
            srv(20, 1, 80, "backup.example"),
            srv(10, 1, 80, "main.example"),
            srv(0, 0, 0, ""),
        ];
        let targets: Vec<&str> = published(&records).iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, ["main.example"], "the `.` target never counts");
    }

    #[test]
    fn a_dot_target_means_a_service_without_instances() {
        let items = items("dns", &name(), &[srv(0, 0, 0, "")], &HashMap::new());
        assert!(items.is_empty());
    }

    #[test]
    fn a_target_without_address_and_a_port_0_are_skipped_with_their_reasons() {
        let records = [srv(1, 1, 80, "gone.example"), srv(1, 1, 0, "a.example")];
        let targets = HashMap::from([
            (
                "gone.example".to_string(),
                TargetAddresses::Missing("no such name".into()),
            ),
            ("a.example".to_string(), found(&["10.0.0.1"])),
        ]);
        let items = items("dns", &name(), &records, &targets);
        let reasons: Vec<String> = items
            .values()
            .map(|i| i.as_ref().unwrap_err().to_string())
            .collect();
        assert_eq!(reasons.len(), 2);
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("a.example:0") && r.contains("out of range")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("gone.example:80") && r.contains("no such name")),
            "{reasons:?}"
        );
    }

    #[test]
    fn unusable_addresses_are_skipped_not_published() {
        let records = [srv(1, 1, 80, "a.example")];
        let targets = HashMap::from([("a.example".to_string(), found(&["0.0.0.0", "10.0.0.1"]))]);
        let items = items("dns", &name(), &records, &targets);
        assert!(items["a.example:80/0.0.0.0"].is_err());
        assert!(items["a.example:80/10.0.0.1"].is_ok());
    }
}
