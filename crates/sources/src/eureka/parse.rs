//! Eureka's JSON, read item by item: a bad instance is skipped with a reason.

use std::collections::BTreeMap;

use registry_sync_catalog::{Address, Instance, InstancePort, Metadata, Protocol, Refusal, SkipKind};
use serde_json::Value;

use super::{EurekaConfig, InstanceAddress};
use crate::json;
use crate::state::Item;

/// One instance of an answer, parsed.
#[derive(Debug)]
pub(super) struct Entry {
    pub app: String,
    pub id: String,
    pub status: String,
    /// `ADDED`, `MODIFIED`, `DELETED` in a delta; empty in a full fetch.
    pub action: String,
    pub item: Item,
}

/// An `{"applications": ...}` answer.
#[derive(Debug)]
pub(super) struct Applications {
    pub hashcode: Option<String>,
    pub instances: Vec<Entry>,
}

/// Eureka writes a list of one as the item itself, and an empty list not at all.
fn items(value: Option<&Value>) -> Vec<&Value> {
    match value {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(one) => vec![one],
    }
}

pub(super) fn applications(
    registry: &str,
    body: &[u8],
    config: &EurekaConfig,
) -> Result<Applications, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let Some(apps) = value.get("applications").filter(|a| a.is_object()) else {
        return Err(format!(
            "expected {{\"applications\": {{...}}}}, found {}",
            json::describe(&value)
        ));
    };
    let hashcode = apps
        .get("apps__hashcode")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut instances = Vec::new();
    for (n, app) in items(apps.get("application")).into_iter().enumerate() {
        let Some(name) = app.get("name").and_then(Value::as_str).filter(|s| !s.is_empty()) else {
            tracing::debug!(registry, "application #{n} has no name; ignored");
            continue;
        };
        for (m, raw) in items(app.get("instance")).into_iter().enumerate() {
            let text = |key: &str| {
                raw.get(key)
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
            };
            let id = text("instanceId")
                .or_else(|| text("hostName"))
                .map_or_else(|| format!("#{m}"), str::to_string);
            let status = text("status").unwrap_or("UNKNOWN").to_ascii_uppercase();
            let item = instance(&id, raw, &status, config)
                .map_err(|refusal| refusal.skipped(registry, name, Some(&id)));
            instances.push(Entry {
                app: name.to_string(),
                id,
                status,
                action: text("actionType").unwrap_or_default().to_ascii_uppercase(),
                item,
            });
        }
    }
    Ok(Applications { hashcode, instances })
}

/// `{"$": 8080, "@enabled": "true"}`: the port when enabled, `None` when disabled.
fn port(value: Option<&Value>, name: &str) -> Result<Option<u16>, Refusal> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let enabled = match value.get("@enabled") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.trim().eq_ignore_ascii_case("true"),
        _ => false,
    };
    if !enabled {
        return Ok(None);
    }
    let number = value
        .get("$")
        .ok_or_else(|| Refusal::port(format!("`{name}` has no \"$\" number")))?;
    json::port(number)
        .map(Some)
        .map_err(|e| e.within(format!("`{name}`")))
}

fn instance(id: &str, raw: &Value, status: &str, config: &EurekaConfig) -> Result<Instance, Refusal> {
    let field = match config.instance_address {
        InstanceAddress::Ip => "ipAddr",
        InstanceAddress::Hostname => "hostName",
    };
    let raw_address = raw
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| Refusal::address(format!("the instance has no `{field}`")))?;
    let address = Address::parse(raw_address).map_err(|e| Refusal::address(e.to_string()))?;
    let mut ports = Vec::new();
    if let Some(number) = port(raw.get("port"), "port")? {
        ports.push(InstancePort {
            name: "http".into(),
            number,
            protocol_hint: Some(Protocol::Http),
        });
    }
    if let Some(number) = port(raw.get("securePort"), "securePort")? {
        ports.push(InstancePort {
            name: "https".into(),
            number,
            protocol_hint: Some(Protocol::Https),
        });
    }
    if ports.is_empty() {
        return Err(Refusal::new(
            SkipKind::PortNotPublished,
            "neither `port` nor `securePort` is enabled",
        ));
    }
    // Eureka's serializer marks an empty map with a `@class` key.
    let labels: Metadata = json::metadata(raw.get("metadata"))
        .into_iter()
        .filter(|(k, _)| !k.starts_with('@'))
        .collect();
    Ok(Instance {
        id: id.to_string(),
        address,
        ports,
        healthy: config.health.iter().any(|h| h == status),
        weight: None,
        placement: None,
        labels,
    })
}

/// Eureka's reconcile hash: instances counted per status, by status name,
/// `STATUS_count_` each, e.g. `DOWN_1_UP_3_`.
pub(super) fn hashcode<'a>(statuses: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for status in statuses {
        *counts.entry(status).or_default() += 1;
    }
    counts
        .iter()
        .map(|(status, count)| format!("{status}_{count}_"))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    proptest::proptest! {
        #[test]
        fn eureka_answers_of_any_shape_never_panic(body in crate::arbitrary::bytes(), app in crate::arbitrary::json(), instance in crate::arbitrary::json()) {
            let _ = applications("e", &body, &config());
            let shaped = json!({"applications": {"apps__hashcode": "UP_1_", "application": [app, {"name": "A", "instance": instance}]}});
            let _ = applications("e", shaped.to_string().as_bytes(), &config());
        }
    }

    fn config() -> EurekaConfig {
        EurekaConfig::new("http://127.0.0.1:8761/eureka")
    }

    #[test]
    fn the_reconcile_hash_counts_statuses_in_name_order() {
        assert_eq!(hashcode(["UP", "DOWN", "UP", "UP"].into_iter()), "DOWN_1_UP_3_");
        assert_eq!(hashcode(std::iter::empty()), "");
    }

    #[test]
    fn a_single_application_and_instance_may_be_objects_instead_of_lists() {
        let body = json!({"applications": {"apps__hashcode": "UP_1_", "application": {"name": "ORDERS",
            "instance": {"instanceId": "o1", "ipAddr": "10.0.0.1", "hostName": "o1.local", "status": "UP",
                "port": {"$": 8080, "@enabled": "true"}, "securePort": {"$": "8443", "@enabled": "true"},
                "metadata": {"@class": "java.util.Collections$EmptyMap", "zone": "a"}}}}});
        let apps = applications("e", body.to_string().as_bytes(), &config()).unwrap();
        assert_eq!(apps.hashcode.as_deref(), Some("UP_1_"));
        let instance = apps.instances[0].item.as_ref().unwrap();
        let ports: Vec<_> = instance
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.number))
            .collect();
        assert_eq!(ports, [("http", 8080), ("https", 8443)]);
        assert_eq!(instance.labels.iter().count(), 1);
        assert!(instance.healthy);
    }

    #[test]
    fn bad_instances_are_skipped_with_reasons_and_other_statuses_are_unhealthy() {
        let body = json!({"applications": {"application": [{"name": "A", "instance": [
            {"instanceId": "zero", "ipAddr": "10.0.0.1", "status": "UP", "port": {"$": 0, "@enabled": "true"}},
            {"instanceId": "none", "ipAddr": "10.0.0.1", "status": "UP", "port": {"$": 80, "@enabled": "false"}},
            {"instanceId": "bad-ip", "ipAddr": "1.2.3", "status": "UP", "port": {"$": 80, "@enabled": "true"}},
            {"instanceId": "down", "ipAddr": "10.0.0.2", "status": "OUT_OF_SERVICE", "port": {"$": 80, "@enabled": true}},
        ]}]}});
        let apps = applications("e", body.to_string().as_bytes(), &config()).unwrap();
        let ok: Vec<_> = apps
            .instances
            .iter()
            .map(|i| (i.id.as_str(), i.item.is_ok()))
            .collect();
        assert_eq!(
            ok,
            [
                ("zero", false),
                ("none", false),
                ("bad-ip", false),
                ("down", true)
            ]
        );
        assert!(!apps.instances[3].item.as_ref().unwrap().healthy);
        assert!(applications("e", b"<xml/>", &config()).is_err());
        assert!(applications("e", b"{\"applications\": 3}", &config()).is_err());
    }
}
