//! Small helpers for registries that store JSON (etcd values, Curator nodes).

use registry_sync_catalog::{Metadata, Refusal, parse_port};
use serde_json::Value;

/// Registry metadata from a JSON object: strings as they are, anything else as its
/// JSON text (`3`, `true`, `{"a":1}`), so no value is lost and none is misread.
/// Anything but an object gives no metadata.
pub(crate) fn metadata(value: Option<&Value>) -> Metadata {
    let Some(Value::Object(map)) = value else {
        return Metadata::new();
    };
    map.iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (key.clone(), text)
        })
        .collect()
}

/// A short description of a JSON value for reasons: its type and, for scalars, itself.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.len() <= 64 => format!("the text {s:?}"),
        Value::String(_) => "a long text".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// A port from a JSON number or a numeric string.
pub(crate) fn port(value: &Value) -> Result<u16, Refusal> {
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(n) => parse_port(n).map_err(|e| Refusal::port(e.to_string())),
            None => Err(Refusal::port(format!(
                "port {n} is not a whole number from 1 to 65535"
            ))),
        },
        Value::String(s) => match s.trim().parse::<i64>() {
            Ok(n) => parse_port(n).map_err(|e| Refusal::port(e.to_string())),
            Err(_) => Err(Refusal::port(format!("port {s:?} is not a number"))),
        },
        other => Err(Refusal::port(format!(
            "the port must be a number, found {}",
            describe(other)
        ))),
    }
}

#[cfg(feature = "etcd")]
/// A weight from a JSON number or a numeric string: 0 (no traffic) to 4294967295.
pub(crate) fn weight(value: &Value) -> Result<u32, Refusal> {
    let parsed = match value {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim().parse::<u32>().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| {
        Refusal::malformed(format!(
            "the weight must be a whole number from 0 to {}, found {}",
            u32::MAX,
            describe(value)
        ))
    })
}

/// Health from a JSON boolean or the text `true` / `false`.
pub(crate) fn healthy(value: &Value) -> Result<bool, Refusal> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(Refusal::malformed(format!(
            "health must be true or false, found {}",
            describe(other)
        ))),
    }
}

/// Splits `host:port` or `[v6]:port`. A bare IPv6 address (several colons, no
/// brackets) has no port.
pub(crate) fn split_host_port(raw: &str) -> Option<(&str, &str)> {
    let raw = raw.trim();
    if let Some(rest) = raw.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((host, port));
    }
    let (host, port) = raw.rsplit_once(':')?;
    if host.contains(':') {
        return None;
    }
    Some((host, port))
}

#[cfg(feature = "etcd")]
/// An address that must carry a port: `10.0.0.1:8080`, `[2001:db8::1]:80`, `host:80`.
pub(crate) fn address_with_port(raw: &str) -> Result<(registry_sync_catalog::Address, u16), Refusal> {
    let Some((host, port)) = split_host_port(raw) else {
        return Err(Refusal::port(format!(
            "address {raw:?} has no port; expected host:port"
        )));
    };
    let address = registry_sync_catalog::Address::parse(host).map_err(|e| Refusal::address(e.to_string()))?;
    let port = port
        .parse::<i64>()
        .map_err(|_| Refusal::port(format!("port {port:?} in address {raw:?} is not a number")))
        .and_then(|n| parse_port(n).map_err(|e| Refusal::port(e.to_string())))?;
    Ok((address, port))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn metadata_keeps_strings_and_writes_other_values_as_json() {
        let value = json!({"version": "v1", "weight": 3, "canary": true, "nested": {"a": 1}});
        let meta = metadata(Some(&value));
        assert_eq!(meta.get("version").map(String::as_str), Some("v1"));
        assert_eq!(meta.get("weight").map(String::as_str), Some("3"));
        assert_eq!(meta.get("canary").map(String::as_str), Some("true"));
        assert_eq!(meta.get("nested").map(String::as_str), Some("{\"a\":1}"));
        assert!(metadata(Some(&json!("text"))).is_empty());
        assert!(metadata(None).is_empty());
    }

    #[cfg(feature = "etcd")]
    #[test]
    fn host_and_port_split_for_ipv4_ipv6_and_names() {
        assert_eq!(split_host_port("10.0.0.1:80"), Some(("10.0.0.1", "80")));
        assert_eq!(split_host_port("[2001:db8::1]:80"), Some(("2001:db8::1", "80")));
        assert_eq!(split_host_port("svc.example:80"), Some(("svc.example", "80")));
        assert_eq!(split_host_port("2001:db8::1"), None);
        assert_eq!(split_host_port("10.0.0.1"), None);
        assert!(address_with_port("10.0.0.1:0").is_err());
        assert!(address_with_port("10.0.0.1:65536").is_err());
        assert!(address_with_port("10.0.0.300:80").is_err());
        assert_eq!(address_with_port("[::1]:80").unwrap().1, 80);
    }

    #[cfg(feature = "etcd")]
    #[test]
    fn ports_weights_and_health_accept_numbers_or_text_and_refuse_the_rest() {
        assert_eq!(port(&json!(8080)), Ok(8080));
        assert_eq!(port(&json!("8080")), Ok(8080));
        assert!(port(&json!(0)).is_err());
        assert!(port(&json!(1.5)).is_err());
        assert!(port(&json!(null)).is_err());
        assert_eq!(weight(&json!(0)), Ok(0));
        assert_eq!(weight(&json!("7")), Ok(7));
        assert!(weight(&json!(-1)).is_err());
        assert_eq!(healthy(&json!(false)), Ok(false));
        assert_eq!(healthy(&json!("TRUE")), Ok(true));
        assert!(healthy(&json!("up")).is_err());
    }
}
