//! The Curator layout: `/<root>/<service>/<id>` holding a JSON `ServiceInstance`, as
//! written by Apache Curator's service discovery and by Spring Cloud Zookeeper:
//!
//! ```json
//! {"name":"orders","id":"0f6c…","address":"10.0.0.1","port":8080,"sslPort":null,
//!  "payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance",
//!             "id":"orders","name":"orders","metadata":{"instance_status":"UP","version":"v1"}},
//!  "registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":{…},"enabled":true}
//! ```
//!
//! Ports: a Spring Cloud instance (its payload's `@class` is Spring's) runs a web
//! server, so `port` is the logical port `http` and `sslPort` is `https`. For plain
//! Curator nothing says what `port` speaks, so it is the logical port `default`
//! (TCP unless a `protocol` label says otherwise) and `sslPort` is `https`.
//! Metadata: the payload's `metadata` object, or else the payload object itself.
//! Health: `enabled: false`, or a Spring `instance_status` other than `UP`, takes the
//! instance out of service.

use registry_sync_catalog::{Address, Instance, InstancePort, Metadata, Refusal, SkipKind};
use serde_json::Value;

use crate::json;
use crate::state::Item;

/// The logical port names this layout uses.
pub const SPRING_PORT: &str = "http";
pub const PLAIN_PORT: &str = "default";
pub const SSL_PORT: &str = "https";

/// Spring Cloud Zookeeper's payload class.
const SPRING_PAYLOAD: &str = "org.springframework.cloud";
/// Spring's status key; anything but `UP` (e.g. `OUT_OF_SERVICE`) receives no traffic.
const SPRING_STATUS: &str = "instance_status";

/// One instance node. `id` is the node's name, unique within the service.
pub(super) fn item(registry: &str, service: &str, id: &str, data: &[u8]) -> Item {
    let refuse = |refusal: Refusal| refusal.skipped(registry, service, Some(id));
    let value: Value = serde_json::from_slice(data).map_err(|e| {
        refuse(Refusal::malformed(format!(
            "the node's data is not valid JSON: {e}"
        )))
    })?;
    instance(id, &value).map_err(refuse)
}

fn instance(id: &str, value: &Value) -> Result<Instance, Refusal> {
    if !value.is_object() {
        return Err(Refusal::malformed(format!(
            "the node's data must be a JSON ServiceInstance object, found {}",
            json::describe(value)
        )));
    }
    let address = match value.get("address") {
        Some(Value::String(address)) => {
            Address::parse(address).map_err(|e| Refusal::address(e.to_string()))?
        }
        Some(other) if !other.is_null() => {
            return Err(Refusal::malformed(format!(
                "`address` must be text, found {}",
                json::describe(other)
            )));
        }
        _ => return Err(Refusal::address("the instance has no `address`")),
    };
    let payload = value.get("payload").filter(|p| !p.is_null());
    let spring = payload
        .and_then(|p| p.get("@class"))
        .and_then(Value::as_str)
        .is_some_and(|class| class.starts_with(SPRING_PAYLOAD));
    let mut ports = Vec::new();
    let plain_name = if spring { SPRING_PORT } else { PLAIN_PORT };
    for (field, name) in [("port", plain_name), ("sslPort", SSL_PORT)] {
        match value.get(field) {
            None | Some(Value::Null) => {}
            Some(raw) => ports.push(InstancePort {
                name: name.to_string(),
                number: json::port(raw).map_err(|e| e.within(format!("`{field}`")))?,
                protocol_hint: None,
            }),
        }
    }
    if ports.is_empty() {
        return Err(Refusal::new(
            SkipKind::PortNotPublished,
            "the instance has neither `port` nor `sslPort`",
        ));
    }
    let metadata = match payload.and_then(|p| p.get("metadata")) {
        Some(m @ Value::Object(_)) => json::metadata(Some(m)),
        _ => {
            let mut labels = json::metadata(payload);
            labels.remove("@class");
            labels
        }
    };
    let mut healthy = match value.get("enabled") {
        None | Some(Value::Null) => true,
        Some(enabled) => json::healthy(enabled).map_err(|e| e.within("`enabled`"))?,
    };
    if spring
        && metadata
            .get(SPRING_STATUS)
            .is_some_and(|s| !s.eq_ignore_ascii_case("UP"))
    {
        healthy = false;
    }
    Ok(Instance {
        id: id.to_string(),
        address,
        ports,
        healthy,
        weight: None,
        placement: None,
        labels: metadata.into_iter().collect::<Metadata>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn curator_payloads_of_any_shape_never_panic(data in crate::arbitrary::bytes(), id in ".{0,20}") {
            let _ = item("zk", "orders", &id, &data);
        }
    }

    const SPRING: &str = r#"{"name":"orders","id":"a1","address":"10.0.0.1","port":8080,"sslPort":8443,
        "payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance",
                   "id":"orders","name":"orders","metadata":{"instance_status":"UP","version":"v1"}},
        "registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC",
        "uriSpec":{"parts":[{"value":"scheme","variable":true}]}}"#;

    #[test]
    fn a_spring_cloud_instance_has_http_and_https_ports_and_its_metadata_as_labels() {
        let instance = item("zk", "orders", "a1", SPRING.as_bytes()).unwrap();
        assert_eq!(instance.address.to_string(), "10.0.0.1");
        let ports: Vec<_> = instance
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.number))
            .collect();
        assert_eq!(ports, [("http", 8080), ("https", 8443)]);
        assert!(instance.healthy);
        assert_eq!(instance.labels.get("version").map(String::as_str), Some("v1"));
        assert!(!instance.labels.contains_key("@class"));
    }

    #[test]
    fn spring_out_of_service_and_disabled_instances_are_not_healthy() {
        let out = SPRING.replace("\"UP\"", "\"OUT_OF_SERVICE\"");
        assert!(!item("zk", "orders", "a1", out.as_bytes()).unwrap().healthy);
        let disabled = r#"{"address":"10.0.0.1","port":80,"enabled":false}"#;
        assert!(!item("zk", "orders", "a1", disabled.as_bytes()).unwrap().healthy);
    }

    #[test]
    fn a_plain_curator_instance_names_its_port_default_and_takes_payload_fields_as_labels() {
        let plain = r#"{"name":"orders","id":"a1","address":"orders-1.example.com","port":9000,"sslPort":null,
            "payload":{"zone":"a","shards":3},"serviceType":"DYNAMIC"}"#;
        let instance = item("zk", "orders", "a1", plain.as_bytes()).unwrap();
        assert_eq!(instance.ports.len(), 1);
        assert_eq!(instance.ports[0].name, PLAIN_PORT);
        assert_eq!(instance.labels.get("shards").map(String::as_str), Some("3"));
    }

    #[test]
    fn bad_instances_are_refused_with_a_reason() {
        let reason = |data: &str| item("zk", "orders", "a1", data.as_bytes()).unwrap_err().reason;
        assert!(reason("{").contains("not valid JSON"));
        assert!(reason("[]").contains("ServiceInstance object"));
        assert!(reason(r#"{"port":80}"#).contains("no `address`"));
        assert!(reason(r#"{"address":"10.0.0.1"}"#).contains("neither"));
        assert!(reason(r#"{"address":"10.0.0.1","port":0}"#).contains("out of range"));
        assert!(reason(r#"{"address":"10.0.0.1","port":65536}"#).contains("out of range"));
        assert!(reason(r#"{"address":"not an address","port":80}"#).contains("not an address"));
        let skipped = item("zk", "orders", "a1", b"{").unwrap_err();
        assert_eq!(
            (
                skipped.registry.as_str(),
                skipped.service.as_str(),
                skipped.instance.as_deref()
            ),
            ("zk", "orders", Some("a1"))
        );
    }
}
