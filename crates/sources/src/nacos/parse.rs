//! What Nacos hands over, mapped item by item to the catalog: a bad instance is skipped
//! with a reason, never a reason to drop its service. No I/O here.

use nacos_sdk::api::naming::ServiceInstance;
use registry_sync_catalog::{Address, Instance, InstancePort, Metadata, Refusal, parse_port};
use serde_json::Value;

use crate::state::Item;

/// The name of the one logical port of a Nacos instance.
pub const PORT_NAME: &str = "default";
/// The group Nacos puts a service in when none is given.
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";
/// The label that carries an instance's Nacos cluster (`clusterName`).
pub const CLUSTER_LABEL: &str = "nacos.io/cluster";
/// An instance whose metadata (keys and values) is larger than this is refused: Nacos
/// metadata is a handful of short entries, and a blob this size is a mistake that would
/// cost memory per endpoint all the way to the sink.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Nacos weights are decimals (1.0 by default, 0 to 10000); the catalog's are whole
/// numbers. Scaling by 100 keeps two decimals: 1.0 → 100, 0.25 → 25.
pub const WEIGHT_SCALE: f64 = 100.0;

/// Nacos's separator in a grouped service name, `group@@service`. Nacos refuses `@@`
/// in group and service names, so the grouped name is unambiguous.
const GROUP_SEPARATOR: &str = "@@";

/// A service of one Nacos namespace: its group and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct ServiceName {
    pub group: String,
    pub name: String,
}

impl ServiceName {
    pub(super) fn new(group: &str, name: &str) -> ServiceName {
        ServiceName {
            group: group.to_string(),
            name: name.to_string(),
        }
    }

    /// A name as a listing or a push gives it: `group@@service` (Nacos) or the bare
    /// service name (rnacos), which then belongs to `group`.
    pub(super) fn parse(group: &str, listed: &str) -> ServiceName {
        match listed.split_once(GROUP_SEPARATOR) {
            Some((g, n)) if !g.is_empty() && !n.is_empty() => ServiceName::new(g, n),
            _ => ServiceName::new(group, listed),
        }
    }

    /// The service's key in the source's state: Nacos's own grouped name.
    pub(super) fn key(&self) -> String {
        format!("{}{GROUP_SEPARATOR}{}", self.group, self.name)
    }

    /// The catalog namespace (the host template's `{namespace}`): the group, except
    /// for `DEFAULT_GROUP`, which most estates use for everything and which would only
    /// lengthen every host.
    pub(super) fn namespace(&self) -> Option<&str> {
        (self.group != DEFAULT_GROUP).then_some(self.group.as_str())
    }
}

/// Maps one instance; returns its key within the service and the instance or why it
/// was refused. Healthy means Nacos's `healthy` and `enabled`; a weight of 0 keeps the
/// instance but gives it no traffic (translation leaves out weight-0 endpoints).
pub(super) fn instance(registry: &str, service: &ServiceName, raw: &ServiceInstance) -> (String, Item) {
    let cluster = raw.cluster_name.as_deref().unwrap_or_default();
    let key = match raw.instance_id.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!("{}#{}#{cluster}", raw.ip, raw.port),
    };
    let item = build(&key, raw).map_err(|refusal| refusal.skipped(registry, &service.key(), Some(&key)));
    (key, item)
}

fn build(id: &str, raw: &ServiceInstance) -> Result<Instance, Refusal> {
    let address = Address::parse(&raw.ip).map_err(|e| Refusal::address(e.to_string()))?;
    let port = parse_port(raw.port).map_err(|e| Refusal::port(e.to_string()))?;
    let weight = weight(raw.weight).map_err(Refusal::malformed)?;
    let size: usize = raw.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_METADATA_BYTES {
        return Err(Refusal::malformed(format!(
            "its metadata is {size} bytes, more than the {MAX_METADATA_BYTES} accepted"
        )));
    }
    let mut labels: Metadata = raw.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if let Some(cluster) = raw.cluster_name.as_deref().filter(|c| !c.is_empty()) {
        labels.insert(CLUSTER_LABEL.to_string(), cluster.to_string());
    }
    Ok(Instance {
        id: id.to_string(),
        address,
        ports: vec![InstancePort {
            name: PORT_NAME.to_string(),
            number: port,
            protocol_hint: None,
        }],
        healthy: raw.healthy && raw.enabled,
        weight: Some(weight),
        placement: None,
        labels,
    })
}

/// A Nacos weight as a catalog weight: × [`WEIGHT_SCALE`], rounded, and never rounded
/// down to 0 when it was above 0 (0.001 still gets traffic in Nacos). Negative and
/// non-numbers are refused; Nacos itself refuses them at registration.
pub(super) fn weight(raw: f64) -> Result<u32, String> {
    if !raw.is_finite() || raw < 0.0 {
        return Err(format!("weight {raw} is not a number from 0 up"));
    }
    if raw == 0.0 {
        return Ok(0);
    }
    let scaled = (raw * WEIGHT_SCALE).round().clamp(1.0, f64::from(u32::MAX));
    // In range after the clamp.
    Ok(scaled as u32)
}

/// One page of the catalog (`GET /nacos/v1/ns/catalog/services`): the total count and
/// the services with their groups.
pub(super) fn catalog_page(body: &[u8]) -> Result<(u64, Vec<ServiceName>), String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let count = value
        .get("count")
        .and_then(Value::as_u64)
        .ok_or("the answer has no numeric `count`")?;
    let Some(Value::Array(list)) = value.get("serviceList") else {
        return Err("the answer has no `serviceList` list".into());
    };
    let services = list
        .iter()
        .filter_map(|s| {
            let name = s.get("name")?.as_str().filter(|n| !n.is_empty())?;
            let group = s
                .get("groupName")
                .and_then(Value::as_str)
                .filter(|g| !g.is_empty())
                .unwrap_or(DEFAULT_GROUP);
            Some(ServiceName::parse(group, name))
        })
        .collect();
    Ok((count, services))
}

/// The access token of a login answer (`POST /nacos/v1/auth/login`) and how long it
/// lives, in seconds.
pub(super) fn login_answer(body: &[u8]) -> Result<(String, u64), String> {
    let value: Value = serde_json::from_slice(body).map_err(|_| "the answer is not JSON".to_string())?;
    let token = value
        .get("accessToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("the answer has no `accessToken`")?;
    // Whatever the server claims: a token is renewed at half its life, and a lifetime
    // past any clock (or of zero) must neither overflow an Instant nor spin the login.
    let ttl = value
        .get("tokenTtl")
        .and_then(Value::as_u64)
        .unwrap_or(18_000)
        .clamp(MIN_TOKEN_TTL, MAX_TOKEN_TTL);
    Ok((token.to_string(), ttl))
}

const MIN_TOKEN_TTL: u64 = 10;
const MAX_TOKEN_TTL: u64 = 7 * 24 * 3600;

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    proptest::proptest! {
        #[test]
        fn nacos_answers_and_instances_of_any_shape_never_panic(
            body in crate::arbitrary::bytes(),
            ip in ".{0,40}",
            port in proptest::prelude::any::<i32>(),
            raw_weight in proptest::prelude::any::<f64>(),
            metadata in proptest::collection::hash_map(".{0,10}", ".{0,300}", 0..5),
        ) {
            let _ = catalog_page(&body);
            let _ = login_answer(&body);
            let _ = weight(raw_weight);
            let mut raw = raw(&ip, port);
            raw.weight = raw_weight;
            raw.metadata = metadata;
            let _ = instance("n", &orders(), &raw);
        }
    }

    fn raw(ip: &str, port: i32) -> ServiceInstance {
        ServiceInstance {
            instance_id: None,
            ip: ip.into(),
            port,
            weight: 1.0,
            healthy: true,
            enabled: true,
            ephemeral: false,
            cluster_name: Some("DEFAULT".into()),
            service_name: Some("DEFAULT_GROUP@@orders".into()),
            metadata: HashMap::new(),
        }
    }

    fn orders() -> ServiceName {
        ServiceName::new(DEFAULT_GROUP, "orders")
    }

    #[test]
    fn an_instance_carries_metadata_and_cluster_as_labels_and_its_weight_times_100() {
        let mut instance = raw("10.0.0.1", 8080);
        instance.weight = 2.5;
        instance.cluster_name = Some("east".into());
        instance.metadata.insert("protocol".into(), "grpc".into());
        let (key, item) = super::instance("n", &orders(), &instance);
        assert_eq!(key, "10.0.0.1#8080#east", "no instanceId: ip#port#cluster");
        let item = item.unwrap();
        assert_eq!(item.address, Address::parse("10.0.0.1").unwrap());
        assert_eq!(item.ports[0].number, 8080);
        assert_eq!(item.weight, Some(250));
        assert!(item.healthy);
        let labels: Vec<_> = item.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(labels, ["nacos.io/cluster=east", "protocol=grpc"]);
    }

    #[test]
    fn unhealthy_or_disabled_instances_stay_but_are_not_healthy() {
        let mut sick = raw("10.0.0.1", 80);
        sick.healthy = false;
        let mut disabled = raw("10.0.0.2", 80);
        disabled.enabled = false;
        for instance in [sick, disabled] {
            let item = super::instance("n", &orders(), &instance).1.unwrap();
            assert!(!item.healthy, "{instance:?}");
        }
    }

    #[test]
    fn weights_keep_two_decimals_and_a_positive_weight_never_becomes_zero() {
        assert_eq!(weight(1.0), Ok(100));
        assert_eq!(weight(0.25), Ok(25));
        assert_eq!(weight(0.001), Ok(1));
        assert_eq!(weight(0.0), Ok(0));
        assert_eq!(weight(10_000.0), Ok(1_000_000));
        assert_eq!(weight(1e300), Ok(u32::MAX));
        assert!(weight(-1.0).is_err());
        assert!(weight(f64::NAN).is_err());
    }

    #[test]
    fn bad_instances_are_refused_one_by_one_with_reasons() {
        let mut huge = raw("10.0.0.4", 80);
        huge.metadata
            .insert("blob".into(), "x".repeat(MAX_METADATA_BYTES + 1));
        let mut negative = raw("10.0.0.5", 80);
        negative.weight = -3.0;
        let mut named = raw("10.0.0.6", 80);
        named.instance_id = Some("custom-id".into());
        let cases = [
            (raw("300.1.1.1", 80), "not a valid IPv4"),
            (raw("10.0.0.2", 0), "out of range"),
            (raw("10.0.0.3", 70000), "out of range"),
            (huge, "metadata"),
            (negative, "weight"),
        ];
        for (instance, why) in cases {
            let (key, item) = super::instance("n", &orders(), &instance);
            let skipped = item.unwrap_err();
            assert!(skipped.reason.contains(why), "{key}: {}", skipped.reason);
            assert_eq!(skipped.instance.as_deref(), Some(key.as_str()));
            assert_eq!(skipped.service, "DEFAULT_GROUP@@orders");
        }
        assert_eq!(super::instance("n", &orders(), &named).0, "custom-id");
    }

    #[test]
    fn grouped_names_are_split_and_the_default_group_is_no_namespace() {
        let grouped = ServiceName::parse(DEFAULT_GROUP, "SHOP@@orders");
        assert_eq!(grouped, ServiceName::new("SHOP", "orders"));
        assert_eq!(grouped.namespace(), Some("SHOP"));
        assert_eq!(grouped.key(), "SHOP@@orders");
        let bare = ServiceName::parse("SHOP", "orders");
        assert_eq!(
            bare, grouped,
            "rnacos lists bare names within the group asked for"
        );
        assert_eq!(orders().namespace(), None);
    }

    #[test]
    fn a_catalog_page_lists_services_with_their_groups() {
        let body = br#"{"count": 3, "serviceList": [
            {"name": "orders", "groupName": "SHOP", "ipCount": 1},
            {"name": "users", "groupName": ""},
            {"groupName": "SHOP"}]}"#;
        let (count, services) = catalog_page(body).unwrap();
        assert_eq!(count, 3);
        assert_eq!(
            services,
            [
                ServiceName::new("SHOP", "orders"),
                ServiceName::new(DEFAULT_GROUP, "users")
            ]
        );
        assert!(catalog_page(b"<html>").is_err());
        assert!(catalog_page(br#"{"count": 1}"#).is_err());
    }

    #[test]
    fn a_login_answer_gives_the_token_and_its_lifetime() {
        let (_, huge) = login_answer(br#"{"accessToken":"t","tokenTtl":18446744073709551615}"#).unwrap();
        assert_eq!(huge, MAX_TOKEN_TTL, "a lifetime past any clock is clamped");
        let (_, zero) = login_answer(br#"{"accessToken":"t","tokenTtl":0}"#).unwrap();
        assert_eq!(zero, MIN_TOKEN_TTL);
        let (token, ttl) = login_answer(br#"{"accessToken":"t0k","tokenTtl":600}"#).unwrap();
        assert_eq!((token.as_str(), ttl), ("t0k", 600));
        assert!(login_answer(b"unknown user!").is_err());
    }
}
