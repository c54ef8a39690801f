//! How etcd keys and values become services and instances.
//!
//! Keys are `<prefix>/<service>/<id>`: the first segment after the prefix names the
//! service, the rest (which may contain `/`) is the instance id, unique per key. The
//! value is decoded by the configured [`ValueFormat`]. Every key becomes exactly one
//! item — an instance or the reason it was refused — so a bad key never hides a good
//! one and a deleted key always removes what it added.

use registry_sync_catalog::{Instance, InstancePort, Metadata, Refusal, SkipKind, Skipped};
use serde_json::Value;

use super::{FieldPath, JsonFields, ValueFormat};
use crate::json;
use crate::state::Item;

/// The logical port name of an etcd instance, which declares exactly one port. It
/// implies no protocol: the instance's `protocol` metadata names it, else TCP, the
/// safe default.
pub const PORT_NAME: &str = "default";

/// Metadata keys of the naming/endpoints format that set instance fields instead of
/// becoming labels.
const WEIGHT_KEY: &str = "weight";
const HEALTHY_KEY: &str = "healthy";

/// Where a key belongs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyPlace {
    Instance {
        service: String,
        id: String,
    },
    /// Under the prefix but not of the form `<service>/<id>`, with the reason.
    Refused(Skipped),
}

pub(crate) struct Layout {
    registry: String,
    /// The prefix with exactly one trailing `/`.
    dir: String,
    format: ValueFormat,
}

impl Layout {
    pub(crate) fn new(registry: &str, prefix: &str, format: ValueFormat) -> Layout {
        Layout {
            registry: registry.to_string(),
            dir: format!("{}/", prefix.trim_end_matches('/')),
            format,
        }
    }

    /// The key range watched and listed: everything under `<prefix>/`.
    pub(crate) fn dir(&self) -> &str {
        &self.dir
    }

    pub(crate) fn place(&self, key: &[u8]) -> KeyPlace {
        let refuse = |service: String, reason: String| {
            KeyPlace::Refused(Skipped {
                registry: self.registry.clone(),
                service,
                instance: Some(String::from_utf8_lossy(key).into_owned()),
                kind: SkipKind::Malformed,
                reason,
            })
        };
        let Ok(text) = std::str::from_utf8(key) else {
            return refuse("?".into(), "the key is not UTF-8 text".into());
        };
        let rest = text.strip_prefix(&self.dir).unwrap_or(text);
        match rest.split_once('/') {
            Some((service, id)) if !service.is_empty() && !id.is_empty() => KeyPlace::Instance {
                service: service.to_string(),
                id: id.to_string(),
            },
            _ => refuse(
                rest.split('/').next().unwrap_or_default().to_string(),
                format!(
                    "the key is not of the form {}<service>/<instance id>; it is ignored",
                    self.dir
                ),
            ),
        }
    }

    /// Decodes one value into an instance, or the reason it cannot be one.
    pub(crate) fn item(&self, service: &str, id: &str, value: &[u8]) -> Item {
        let refuse = |refusal: Refusal| refusal.skipped(&self.registry, service, Some(id));
        let value: Value = serde_json::from_slice(value)
            .map_err(|e| refuse(Refusal::malformed(format!("the value is not valid JSON: {e}"))))?;
        if !value.is_object() {
            return Err(refuse(Refusal::malformed(format!(
                "the value must be a JSON object, found {}",
                json::describe(&value)
            ))));
        }
        let fields = match &self.format {
            ValueFormat::NamingEndpoints => naming_endpoint(&value),
            ValueFormat::Json(fields) => json_fields(fields, &value),
        }
        .map_err(refuse)?;
        Ok(Instance {
            id: id.to_string(),
            address: fields.address,
            ports: vec![InstancePort {
                name: PORT_NAME.to_string(),
                number: fields.port,
                protocol_hint: None,
            }],
            healthy: fields.healthy,
            weight: fields.weight,
            placement: None,
            labels: fields.labels,
        })
    }
}

struct Fields {
    address: registry_sync_catalog::Address,
    port: u16,
    healthy: bool,
    weight: Option<u32>,
    labels: Metadata,
}

/// etcd's own `naming/endpoints` value: `{"Addr":"10.0.0.1:8080","Metadata":{…}}`
/// (older clients also wrote `"Op":0`, which is ignored).
fn naming_endpoint(value: &Value) -> Result<Fields, Refusal> {
    let addr = match value.get("Addr") {
        Some(Value::String(addr)) => addr,
        Some(other) => {
            return Err(Refusal::malformed(format!(
                "`Addr` must be text, found {}",
                json::describe(other)
            )));
        }
        None => return Err(Refusal::malformed("the value has no `Addr`")),
    };
    let (address, port) = json::address_with_port(addr)?;
    let mut labels = json::metadata(value.get("Metadata"));
    let metadata = value.get("Metadata");
    let weight = match metadata.and_then(|m| m.get(WEIGHT_KEY)) {
        Some(w) => Some(json::weight(w).map_err(|e| e.within("Metadata.weight"))?),
        None => None,
    };
    let healthy = match metadata.and_then(|m| m.get(HEALTHY_KEY)) {
        Some(h) => json::healthy(h).map_err(|e| e.within("Metadata.healthy"))?,
        None => true,
    };
    labels.remove(WEIGHT_KEY);
    labels.remove(HEALTHY_KEY);
    Ok(Fields {
        address,
        port,
        healthy,
        weight,
        labels,
    })
}

fn lookup<'v>(value: &'v Value, path: &FieldPath) -> Option<&'v Value> {
    path.segments()
        .iter()
        .try_fold(value, |v, segment| v.get(segment.as_str()))
        .filter(|v| !v.is_null())
}

/// A JSON object with configurable field paths.
fn json_fields(fields: &JsonFields, value: &Value) -> Result<Fields, Refusal> {
    let raw_address = match lookup(value, &fields.address) {
        Some(Value::String(address)) => address,
        Some(other) => {
            return Err(Refusal::malformed(format!(
                "`{}` must be text, found {}",
                fields.address,
                json::describe(other)
            )));
        }
        None => {
            return Err(Refusal::malformed(format!(
                "the value has no `{}`",
                fields.address
            )));
        }
    };
    let (address, port) = match lookup(value, &fields.port) {
        Some(port) => {
            let port = json::port(port).map_err(|e| e.within(format!("`{}`", fields.port)))?;
            let address = registry_sync_catalog::Address::parse(raw_address)
                .map_err(|e| Refusal::address(format!("`{}`: {e}", fields.address)))?;
            (address, port)
        }
        None => json::address_with_port(raw_address).map_err(|e| Refusal {
            kind: e.kind,
            reason: format!(
                "`{}`: {} (or give the port in `{}`)",
                fields.address, e.reason, fields.port
            ),
        })?,
    };
    let healthy = match lookup(value, &fields.healthy) {
        Some(h) => json::healthy(h).map_err(|e| e.within(format!("`{}`", fields.healthy)))?,
        None => true,
    };
    let weight = match lookup(value, &fields.weight) {
        Some(w) => Some(json::weight(w).map_err(|e| e.within(format!("`{}`", fields.weight)))?),
        None => None,
    };
    Ok(Fields {
        address,
        port,
        healthy,
        weight,
        labels: json::metadata(lookup(value, &fields.metadata)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn etcd_keys_and_values_of_any_shape_never_panic(key in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), value in crate::arbitrary::bytes()) {
            for layout in [naming(), Layout::new("kv", "/services/", ValueFormat::Json(JsonFields::default()))] {
                let _ = layout.place(&key);
                let _ = layout.item("orders", "1", &value);
            }
        }
    }

    fn naming() -> Layout {
        Layout::new("kv", "/services/", ValueFormat::NamingEndpoints)
    }

    fn reason(item: Item) -> String {
        item.expect_err("the item should be refused").reason
    }

    #[test]
    fn keys_split_into_service_and_an_id_that_may_contain_slashes() {
        let layout = naming();
        assert_eq!(layout.dir(), "/services/");
        assert_eq!(
            layout.place(b"/services/orders/10.0.0.1:80"),
            KeyPlace::Instance {
                service: "orders".into(),
                id: "10.0.0.1:80".into()
            }
        );
        assert_eq!(
            layout.place(b"/services/orders/zone-a/1"),
            KeyPlace::Instance {
                service: "orders".into(),
                id: "zone-a/1".into()
            }
        );
        for bad in [
            &b"/services/orders"[..],
            b"/services/orders/",
            b"/services//1",
            b"/services/\xff/1",
        ] {
            assert!(matches!(layout.place(bad), KeyPlace::Refused(_)), "{bad:?}");
        }
    }

    #[test]
    fn a_naming_endpoint_value_gives_address_port_labels_weight_and_health() {
        let value = br#"{"Addr":"10.0.0.1:8080","Metadata":{"version":"v1","protocol":"grpc","weight":5,"healthy":false,"zone":3}}"#;
        let instance = naming().item("orders", "1", value).unwrap();
        assert_eq!(instance.address.to_string(), "10.0.0.1");
        assert_eq!(instance.ports[0].number, 8080);
        assert_eq!(instance.ports[0].name, PORT_NAME);
        assert_eq!(instance.weight, Some(5));
        assert!(!instance.healthy);
        let labels: Vec<_> = instance.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(labels, ["protocol=grpc", "version=v1", "zone=3"]);
    }

    #[test]
    fn old_clients_op_field_and_missing_metadata_are_accepted() {
        let instance = naming()
            .item(
                "orders",
                "1",
                br#"{"Op":0,"Addr":"[2001:db8::1]:9000","Metadata":null}"#,
            )
            .unwrap();
        assert_eq!(instance.address.to_string(), "2001:db8::1");
        assert!(instance.healthy && instance.labels.is_empty());
    }

    #[test]
    fn bad_values_are_refused_with_a_reason_naming_registry_service_and_key() {
        let layout = naming();
        let skipped = layout.item("orders", "k1", b"not json").unwrap_err();
        assert_eq!(
            (skipped.registry.as_str(), skipped.service.as_str()),
            ("kv", "orders")
        );
        assert_eq!(skipped.instance.as_deref(), Some("k1"));
        assert!(skipped.reason.contains("not valid JSON"), "{}", skipped.reason);
        assert_eq!(skipped.kind, SkipKind::Malformed);
        let kind = |value: &[u8]| layout.item("o", "1", value).expect_err("refused").kind;
        assert_eq!(kind(br#"{"Addr":"10.0.0.1:0"}"#), SkipKind::InvalidPort);
        assert_eq!(kind(br#"{"Addr":"999.0.0.1:80"}"#), SkipKind::InvalidAddress);
        assert_eq!(
            kind(br#"{"Addr":"10.0.0.1:80","Metadata":{"weight":"x"}}"#),
            SkipKind::Malformed
        );
        assert!(reason(layout.item("o", "1", br#"{"Addr":"10.0.0.1"}"#)).contains("no port"));
        assert!(reason(layout.item("o", "1", br#"{"Addr":"10.0.0.1:0"}"#)).contains("out of range"));
        assert!(reason(layout.item("o", "1", br#"{"Addr":"10.0.0.1:65536"}"#)).contains("out of range"));
        assert!(reason(layout.item("o", "1", br#"{"Addr":"999.0.0.1:80"}"#)).contains("999.0.0.1"));
        assert!(reason(layout.item("o", "1", br#"{"Metadata":{}}"#)).contains("no `Addr`"));
        assert!(reason(layout.item("o", "1", br#"[1]"#)).contains("JSON object"));
        assert!(
            reason(layout.item("o", "1", br#"{"Addr":"10.0.0.1:80","Metadata":{"weight":"x"}}"#))
                .contains("Metadata.weight")
        );
    }

    #[test]
    fn the_json_format_reads_configured_field_paths() {
        let fields = JsonFields {
            address: FieldPath::parse("endpoint.host").unwrap(),
            port: FieldPath::parse("endpoint.port").unwrap(),
            metadata: FieldPath::parse("tags").unwrap(),
            healthy: FieldPath::parse("up").unwrap(),
            weight: FieldPath::parse("w").unwrap(),
        };
        let layout = Layout::new("kv", "/apps", ValueFormat::Json(fields));
        let instance = layout
            .item(
                "orders",
                "1",
                br#"{"endpoint":{"host":"orders-1.example.com","port":"8443"},"tags":{"protocol":"https"},"up":true,"w":2}"#,
            )
            .unwrap();
        assert_eq!(instance.address.to_string(), "orders-1.example.com");
        assert_eq!(instance.ports[0].number, 8443);
        assert_eq!(instance.weight, Some(2));
        assert_eq!(instance.labels.get("protocol").map(String::as_str), Some("https"));
        let refused = reason(layout.item("orders", "1", br#"{"endpoint":{"host":"10.0.0.1","port":0}}"#));
        assert!(refused.contains("endpoint.port"), "{refused}");
    }

    #[test]
    fn the_default_json_fields_take_the_port_from_the_address_when_no_port_field_is_set() {
        let layout = Layout::new("kv", "/apps", ValueFormat::Json(JsonFields::default()));
        let instance = layout
            .item("orders", "1", br#"{"address":"10.0.0.1:8080","healthy":"false"}"#)
            .unwrap();
        assert_eq!(instance.ports[0].number, 8080);
        assert!(!instance.healthy);
        assert!(reason(layout.item("orders", "1", br#"{"address":"10.0.0.1"}"#)).contains("`port`"));
    }
}
