//! Input generators for the parsers' property tests: whatever a registry sends, a parser
//! returns an item or a reason, and never panics. Bounded by proptest's case count (256
//! per property), so they run in every `cargo test`.

use proptest::prelude::*;
use serde_json::Value;

/// Any JSON value: deep, wide, with the types registries confuse (numbers as strings,
/// objects where lists belong, huge and negative numbers, non-ASCII text).
pub(crate) fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,24}".prop_map(Value::String),
        prop_oneof!["[0-9]{1,6}", "10\\.0\\.[0-9]{1,3}\\.[0-9]{1,3}", "-?[0-9]{1,25}"]
            .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Object keys: the ones registries use, mostly, so generated documents reach deep.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "Node", "Service", "Checks", "Address", "Port", "ID", "Meta", "Tags", "Weights", "Passing",
            "Warning", "Status", "ServiceName", "CheckID", "Kind", "TaggedAddresses", "applications",
            "application", "instance", "name", "instanceId", "ipAddr", "port", "securePort", "$",
            "@enabled", "status", "metadata", "dataCenterInfo", "hostName", "count", "serviceList",
            "doms", "accessToken", "tokenTtl", "address", "payload", "sslPort", "serviceType", "id",
            "Addr", "Metadata", "services", "ports", "healthy", "weight", "AWS_INSTANCE_IPV4",
        ])
        .prop_map(str::to_string),
        1 => ".{0,12}",
    ]
}

/// Any bytes, and documents that are almost JSON.
pub(crate) fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json().prop_map(|v| v.to_string().into_bytes()),
        json().prop_map(|v| {
            let mut text = v.to_string().into_bytes();
            text.truncate(text.len() / 2);
            text
        }),
    ]
}
