//! Consul's JSON answers, read item by item: a bad instance is skipped with a reason,
//! never a reason to drop the service.

use std::collections::BTreeMap;

use registry_sync_catalog::{Address, Instance, InstancePort, Metadata, Refusal};
use serde_json::{Map, Value};

use super::CheckStatus;
use crate::json;
use crate::state::Item;

/// The name of the one logical port of a Consul service instance.
pub const PORT_NAME: &str = "default";

/// Service kinds that are Consul Connect infrastructure, not services of the mesh.
const INFRASTRUCTURE_KINDS: &[&str] = &[
    "connect-proxy",
    "mesh-gateway",
    "ingress-gateway",
    "terminating-gateway",
    "api-gateway",
];

/// What decides which instances are healthy and which are taken at all.
#[derive(Clone, Debug)]
pub(super) struct Filter {
    pub health: Vec<CheckStatus>,
    pub tags: Vec<String>,
}

/// A health answer as the watch uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Parsed {
    /// The instances, by `<node>/<service id>`.
    Items(BTreeMap<String, Item>),
    /// Every instance is a proxy or gateway: not a service to publish.
    Infrastructure,
}

/// `/v1/catalog/services`: `{"name": ["tag", ...], ...}`; `null` tags are no tags.
pub(super) fn catalog(body: &[u8]) -> Result<BTreeMap<String, Vec<String>>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let Value::Object(map) = value else {
        return Err(format!(
            "expected an object of services, found {}",
            json::describe(&value)
        ));
    };
    Ok(map
        .into_iter()
        .map(|(name, tags)| {
            let tags = match tags {
                Value::Array(tags) => tags
                    .into_iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            (name, tags)
        })
        .collect())
}

/// Each service check's status, by `(node, check id)`, with the service it belongs to.
pub(super) type CheckStates = BTreeMap<(String, String), (String, String)>;

/// `/v1/health/state/any`: every check. Node checks (no `ServiceName`) are left out:
/// they change the health of every service on the node, which a node check's
/// `serfHealth` entry in each service's own health answer already carries.
pub(super) fn check_states(body: &[u8]) -> Result<CheckStates, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let Value::Array(checks) = value else {
        return Err(format!(
            "expected a list of checks, found {}",
            json::describe(&value)
        ));
    };
    let text = |check: &Value, key: &str| {
        check
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Ok(checks
        .iter()
        .filter(|c| !text(c, "ServiceName").is_empty())
        .map(|c| {
            (
                (text(c, "Node"), text(c, "CheckID")),
                (text(c, "ServiceName"), text(c, "Status")),
            )
        })
        .collect())
}

/// The services whose checks differ between two answers: added, removed or changed.
pub(super) fn changed_services(
    before: &CheckStates,
    after: &CheckStates,
) -> std::collections::BTreeSet<String> {
    let mut changed = std::collections::BTreeSet::new();
    for (key, now) in after {
        if before.get(key) != Some(now) {
            changed.insert(now.0.clone());
        }
    }
    for (key, was) in before {
        if !after.contains_key(key) {
            changed.insert(was.0.clone());
        }
    }
    changed
}

/// `/v1/health/service/<name>`: a list of `{Node, Service, Checks}` entries.
pub(super) fn health(registry: &str, service: &str, body: &[u8], filter: &Filter) -> Result<Parsed, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let Value::Array(entries) = value else {
        return Err(format!(
            "expected a list of instances, found {}",
            json::describe(&value)
        ));
    };
    let mut items = BTreeMap::new();
    let mut infrastructure = 0;
    for (n, entry) in entries.iter().enumerate() {
        let skip = |instance: &str, refusal: Refusal| refusal.skipped(registry, service, Some(instance));
        let Some((key, node, svc)) = identify(entry) else {
            let key = format!("#{n}");
            let refusal = Refusal::malformed("the health entry has no Node.Node or no Service.ID");
            items.insert(key.clone(), Err(skip(&key, refusal)));
            continue;
        };
        let kind = svc.get("Kind").and_then(Value::as_str).unwrap_or_default();
        if INFRASTRUCTURE_KINDS.contains(&kind) {
            infrastructure += 1;
            continue;
        }
        let tags = strings(svc.get("Tags"));
        if !filter.tags.iter().all(|t| tags.contains(t)) {
            continue;
        }
        let item = instance(&key, node, svc, &tags, entry.get("Checks"), filter).map_err(|r| skip(&key, r));
        items.insert(key, item);
    }
    if items.is_empty() && infrastructure > 0 {
        return Ok(Parsed::Infrastructure);
    }
    Ok(Parsed::Items(items))
}

/// A JSON object.
type Object = Map<String, Value>;

fn identify(entry: &Value) -> Option<(String, &Object, &Object)> {
    let node = entry.get("Node")?.as_object()?;
    let svc = entry.get("Service")?.as_object()?;
    let node_name = node.get("Node")?.as_str().filter(|s| !s.is_empty())?;
    let id = svc.get("ID")?.as_str().filter(|s| !s.is_empty())?;
    Some((format!("{node_name}/{id}"), node, svc))
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn instance(
    id: &str,
    node: &Map<String, Value>,
    svc: &Map<String, Value>,
    tags: &[String],
    checks: Option<&Value>,
    filter: &Filter,
) -> Result<Instance, Refusal> {
    let text = |map: &Map<String, Value>, key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let raw_address = text(svc, "Address")
        .or_else(|| text(node, "Address"))
        .ok_or_else(|| Refusal::address("neither the service nor its node has an address"))?;
    let address = Address::parse(&raw_address).map_err(|e| Refusal::address(e.to_string()))?;
    let port = json::port(svc.get("Port").unwrap_or(&Value::Null))?;

    let mut labels: Metadata = json::metadata(svc.get("Meta"));
    for tag in tags {
        if let Some((key, value)) = tag.split_once('=').or_else(|| tag.split_once('|')) {
            let key = key.trim();
            if !key.is_empty() && !labels.contains_key(key) {
                labels.insert(key.to_string(), value.trim().to_string());
            }
        }
    }

    let status = aggregate(checks).map_err(Refusal::malformed)?;
    let weights = svc.get("Weights");
    let weight = match status {
        CheckStatus::Warning => weights.and_then(|w| w.get("Warning")),
        _ => weights.and_then(|w| w.get("Passing")),
    };
    let weight = match weight {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .and_then(|w| u32::try_from(w).ok())
                .ok_or_else(|| {
                    Refusal::malformed(format!(
                        "the weight must be a whole number from 0 to {}, found {}",
                        u32::MAX,
                        json::describe(value)
                    ))
                })?,
        ),
    };
    Ok(Instance {
        id: id.to_string(),
        address,
        ports: vec![InstancePort {
            name: PORT_NAME.to_string(),
            number: port,
            protocol_hint: None,
        }],
        healthy: filter.health.contains(&status),
        weight,
        placement: None,
        labels,
    })
}

/// The worst status of the node's and the service's checks; no checks is passing, as
/// in Consul. An unknown status is refused rather than guessed.
fn aggregate(checks: Option<&Value>) -> Result<CheckStatus, String> {
    let mut worst = CheckStatus::Passing;
    let Some(Value::Array(checks)) = checks else {
        return Ok(worst);
    };
    for check in checks {
        let raw = check.get("Status").and_then(Value::as_str).unwrap_or_default();
        let status = CheckStatus::parse(raw)
            .ok_or_else(|| format!("check status {raw:?} is not passing, warning or critical"))?;
        worst = worst.max(status);
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    proptest::proptest! {
        #[test]
        fn consul_answers_of_any_shape_never_panic(body in crate::arbitrary::bytes(), entries in proptest::collection::vec(crate::arbitrary::json(), 0..4)) {
            let _ = catalog(&body);
            let _ = check_states(&body);
            let _ = health("c", "web", &body, &filter());
            let shaped: Vec<Value> = entries
                .into_iter()
                .map(|v| serde_json::json!({"Node": v.clone(), "Service": v.clone(), "Checks": [v]}))
                .collect();
            let _ = health("c", "web", Value::Array(shaped).to_string().as_bytes(), &filter());
        }
    }

    fn filter() -> Filter {
        Filter {
            health: vec![CheckStatus::Passing],
            tags: Vec::new(),
        }
    }

    fn entry(service: Value, checks: &[&str]) -> Value {
        let checks: Vec<Value> = checks.iter().map(|s| json!({"Status": s})).collect();
        json!({"Node": {"Node": "n1", "Address": "10.0.0.9"}, "Service": service, "Checks": checks})
    }

    fn items(body: Value, filter: &Filter) -> BTreeMap<String, Item> {
        match health("c", "web", body.to_string().as_bytes(), filter).unwrap() {
            Parsed::Items(items) => items,
            Parsed::Infrastructure => panic!("not infrastructure"),
        }
    }

    #[test]
    fn an_instance_takes_meta_and_tags_as_labels_and_falls_back_to_the_node_address() {
        let svc = json!({"ID": "web-1", "Service": "web", "Port": 8080, "Address": "",
            "Tags": ["version=v2", "zone|a", "plain", "protocol=tcp"],
            "Meta": {"protocol": "http"}, "Weights": {"Passing": 3, "Warning": 1}});
        let items = items(json!([entry(svc, &["passing"])]), &filter());
        let instance = items["n1/web-1"].as_ref().unwrap();
        assert_eq!(instance.address, Address::parse("10.0.0.9").unwrap());
        assert_eq!(instance.ports[0].number, 8080);
        assert_eq!(instance.weight, Some(3));
        assert!(instance.healthy);
        let labels: Vec<_> = instance.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(labels, ["protocol=http", "version=v2", "zone=a"]);
    }

    #[test]
    fn the_worst_check_decides_health_and_warning_can_be_allowed() {
        let svc =
            json!({"ID": "w", "Port": 80, "Address": "10.0.0.1", "Weights": {"Passing": 3, "Warning": 1}});
        let body = json!([entry(svc, &["passing", "warning"])]);
        assert!(!items(body.clone(), &filter())["n1/w"].as_ref().unwrap().healthy);
        let lenient = Filter {
            health: vec![CheckStatus::Passing, CheckStatus::Warning],
            tags: Vec::new(),
        };
        let instance = items(body, &lenient).remove("n1/w").unwrap().unwrap();
        assert!(instance.healthy);
        assert_eq!(
            instance.weight,
            Some(1),
            "an instance in warning takes Weights.Warning"
        );
    }

    #[test]
    fn bad_instances_are_skipped_one_by_one_with_reasons() {
        let body = json!([
            entry(json!({"ID": "zero", "Port": 0, "Address": "10.0.0.1"}), &[]),
            entry(json!({"ID": "bad-ip", "Port": 80, "Address": "300.1.1.1"}), &[]),
            entry(
                json!({"ID": "bad-check", "Port": 80, "Address": "10.0.0.1"}),
                &["maybe"]
            ),
            json!({"Node": 3}),
            entry(json!({"ID": "good", "Port": 80, "Address": "10.0.0.1"}), &[]),
        ]);
        let items = items(body, &filter());
        let refused: Vec<_> = items
            .iter()
            .filter(|(_, i)| i.is_err())
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(refused, ["#3", "n1/bad-check", "n1/bad-ip", "n1/zero"]);
        assert!(items["n1/good"].is_ok());
    }

    #[test]
    fn check_states_name_the_services_whose_checks_came_went_or_changed() {
        let before = check_states(
            br#"[{"Node":"n1","CheckID":"serfHealth","ServiceName":"","Status":"passing"},
                {"Node":"n1","CheckID":"c-a","ServiceName":"a","Status":"passing"},
                {"Node":"n1","CheckID":"c-b","ServiceName":"b","Status":"passing"},
                {"Node":"n1","CheckID":"c-c","ServiceName":"c","Status":"passing"}]"#,
        )
        .unwrap();
        assert_eq!(before.len(), 3, "node checks are left out");
        let after = check_states(
            br#"[{"Node":"n1","CheckID":"c-a","ServiceName":"a","Status":"critical"},
                {"Node":"n1","CheckID":"c-c","ServiceName":"c","Status":"passing"},
                {"Node":"n2","CheckID":"c-d","ServiceName":"d","Status":"passing"}]"#,
        )
        .unwrap();
        let changed: Vec<String> = changed_services(&before, &after).into_iter().collect();
        assert_eq!(changed, ["a", "b", "d"]);
        assert!(check_states(b"{}").is_err());
    }

    #[test]
    fn proxies_and_gateways_are_left_out_and_a_service_of_only_them_is_infrastructure() {
        let proxy = entry(
            json!({"ID": "p", "Kind": "connect-proxy", "Port": 21000, "Address": "10.0.0.1"}),
            &[],
        );
        let parsed = health(
            "c",
            "web-sidecar-proxy",
            json!([proxy]).to_string().as_bytes(),
            &filter(),
        );
        assert_eq!(parsed, Ok(Parsed::Infrastructure));
        assert_eq!(
            health("c", "gone", b"[]", &filter()),
            Ok(Parsed::Items(BTreeMap::new()))
        );
    }

    #[test]
    fn required_tags_select_instances_and_answers_that_are_not_json_are_errors() {
        let only = Filter {
            health: vec![CheckStatus::Passing],
            tags: vec!["mesh".into()],
        };
        let body = json!([
            entry(
                json!({"ID": "a", "Port": 80, "Address": "10.0.0.1", "Tags": ["mesh"]}),
                &[]
            ),
            entry(json!({"ID": "b", "Port": 80, "Address": "10.0.0.2"}), &[]),
        ]);
        assert_eq!(items(body, &only).keys().collect::<Vec<_>>(), ["n1/a"]);
        assert!(health("c", "web", b"{not json", &filter()).is_err());
        assert!(catalog(b"[1]").is_err());
        assert_eq!(catalog(br#"{"web": null}"#).unwrap()["web"], Vec::<String>::new());
    }
}
