//! One Cloud Map instance's attributes, read into a catalog instance. Pure: no SDK types,
//! so every rule is tested without a server. A bad instance is refused with a reason,
//! never a reason to drop its service.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use registry_sync_catalog::{
    Address, Instance, InstancePort, Metadata, Placement, Refusal, SkipKind, parse_port,
};

use crate::state::Item;

/// The name of the one logical port of a Cloud Map instance.
pub const PORT_NAME: &str = "default";

const IPV4: &str = "AWS_INSTANCE_IPV4";
const IPV6: &str = "AWS_INSTANCE_IPV6";
const CNAME: &str = "AWS_INSTANCE_CNAME";
const PORT: &str = "AWS_INSTANCE_PORT";
/// Attributes ECS (and others following its convention) register with each task.
const AVAILABILITY_ZONE: &str = "AVAILABILITY_ZONE";
const REGION: &str = "REGION";
/// Cloud Map reserves this prefix for its own attributes; none of them is a label.
const RESERVED_PREFIX: &str = "AWS_";

/// Cloud Map refuses attribute values longer than this; a longer one did not come
/// from Cloud Map's own checks, and no label can carry it, so it is left out.
pub const MAX_ATTRIBUTE_VALUE: usize = 1024;
/// Cloud Map allows 30 attributes of at most 1 KiB: an instance carrying more than
/// this in total is not what the API promises, and is refused rather than held.
pub const MAX_ATTRIBUTES_BYTES: usize = 64 * 1024;

/// What identifies an instance for a reason.
pub(super) struct Origin<'a> {
    pub registry: &'a str,
    /// `namespace/service`.
    pub service: &'a str,
    /// The AWS region the client reads, for the locality of ECS tasks.
    pub region: Option<&'a str>,
}

/// Reads one instance of `DiscoverInstances`. `healthy` is Cloud Map's verdict.
pub(super) fn instance(
    origin: &Origin<'_>,
    id: &str,
    attributes: &HashMap<String, String>,
    healthy: bool,
) -> Item {
    read(origin, id, attributes, healthy)
        .map_err(|refusal| refusal.skipped(origin.registry, origin.service, Some(id)))
}

fn read(
    origin: &Origin<'_>,
    id: &str,
    attributes: &HashMap<String, String>,
    healthy: bool,
) -> Result<Instance, Refusal> {
    if id.trim().is_empty() {
        return Err(Refusal::malformed("the instance has no id"));
    }
    let total: usize = attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_ATTRIBUTES_BYTES {
        return Err(Refusal::malformed(format!(
            "its attributes take {total} bytes, more than the {MAX_ATTRIBUTES_BYTES} a Cloud Map instance can hold"
        )));
    }
    // Every reason `address` gives is about the address.
    let address = address(attributes).map_err(Refusal::address)?;
    let port = match attributes.get(PORT) {
        None => {
            return Err(Refusal::new(
                SkipKind::PortNotPublished,
                format!("it has no {PORT} attribute, so there is no port to publish"),
            ));
        }
        Some(raw) => {
            let number: i64 = raw
                .trim()
                .parse()
                .map_err(|_| Refusal::port(format!("{PORT} {:?} is not a port number", shorten(raw))))?;
            parse_port(number).map_err(|e| Refusal::port(format!("{PORT}: {e}")))?
        }
    };
    let labels: Metadata = attributes
        .iter()
        .filter(|(key, value)| {
            !key.starts_with(RESERVED_PREFIX) && !key.trim().is_empty() && value.len() <= MAX_ATTRIBUTE_VALUE
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let locality = attributes
        .get(AVAILABILITY_ZONE)
        .map(|zone| zone.trim())
        .filter(|zone| !zone.is_empty() && !zone.contains('/'))
        .and_then(|zone| {
            let region = attributes
                .get(REGION)
                .map(String::as_str)
                .or(origin.region)?
                .trim();
            (!region.is_empty() && !region.contains('/')).then(|| format!("{region}/{zone}"))
        });
    Ok(Instance {
        id: id.to_string(),
        address,
        ports: vec![InstancePort {
            name: PORT_NAME.to_string(),
            number: port,
            protocol_hint: None,
        }],
        healthy,
        weight: None,
        placement: Placement::boxed(locality, None, None),
        labels,
    })
}

/// `AWS_INSTANCE_IPV4`, else `AWS_INSTANCE_IPV6`, else `AWS_INSTANCE_CNAME` (a host
/// name the mesh resolves). An instance registered with both IP families is dialled
/// over IPv4: an endpoint has one address, and IPv4 is what every mesh network routes.
fn address(attributes: &HashMap<String, String>) -> Result<Address, String> {
    if let Some(raw) = attributes.get(IPV4) {
        let ip: Ipv4Addr = raw
            .trim()
            .parse()
            .map_err(|_| format!("{IPV4} {:?} is not an IPv4 address", shorten(raw)))?;
        return checked(IpAddr::V4(ip), IPV4);
    }
    if let Some(raw) = attributes.get(IPV6) {
        let trimmed = raw.trim();
        let unbracketed = trimmed
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(trimmed);
        let ip: Ipv6Addr = unbracketed
            .parse()
            .map_err(|_| format!("{IPV6} {:?} is not an IPv6 address", shorten(raw)))?;
        return checked(IpAddr::V6(ip), IPV6);
    }
    if let Some(raw) = attributes.get(CNAME) {
        return match Address::parse(raw) {
            Ok(address @ Address::Hostname(_)) => Ok(address),
            Ok(Address::Ip(_)) => Err(format!(
                "{CNAME} {:?} is an IP address, not a host name",
                shorten(raw)
            )),
            Err(e) => Err(format!("{CNAME}: {e}")),
        };
    }
    Err(format!(
        "it has none of {IPV4}, {IPV6} or {CNAME}, so there is no address to publish"
    ))
}

/// The catalog's own refusals (unspecified, multicast, broadcast) for a parsed IP.
fn checked(ip: IpAddr, attribute: &str) -> Result<Address, String> {
    Address::parse(&ip.to_string()).map_err(|e| format!("{attribute}: {e}"))
}

/// A value as a reason quotes it: at most 64 characters.
fn shorten(raw: &str) -> String {
    match raw.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", &raw[..end]),
        None => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn cloud_map_attributes_of_any_shape_never_panic(
            attributes in proptest::collection::hash_map(
                proptest::prop_oneof![
                    proptest::strategy::Just("AWS_INSTANCE_IPV4".to_string()),
                    proptest::strategy::Just("AWS_INSTANCE_IPV6".to_string()),
                    proptest::strategy::Just("AWS_INSTANCE_CNAME".to_string()),
                    proptest::strategy::Just("AWS_INSTANCE_PORT".to_string()),
                    proptest::strategy::Just("AVAILABILITY_ZONE".to_string()),
                    ".{0,12}",
                ],
                ".{0,80}",
                0..6,
            ),
            healthy in proptest::prelude::any::<bool>(),
            id in ".{0,30}",
        ) {
            let _ = instance(&ORIGIN, &id, &attributes, healthy);
        }
    }

    const ORIGIN: Origin<'static> = Origin {
        registry: "aws",
        service: "demo.local/orders",
        region: Some("us-east-1"),
    };

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn reason(item: Item) -> String {
        item.expect_err("the instance is refused").reason
    }

    #[test]
    fn address_and_port_come_from_the_aws_attributes_and_custom_attributes_become_labels() {
        let item = instance(
            &ORIGIN,
            "i-1",
            &attrs(&[
                ("AWS_INSTANCE_IPV4", "10.0.0.1"),
                ("AWS_INSTANCE_PORT", "8080"),
                ("AWS_INIT_HEALTH_STATUS", "HEALTHY"),
                ("protocol", "http"),
                ("version", "v2"),
            ]),
            true,
        );
        let instance = item.unwrap();
        assert_eq!(instance.address, Address::parse("10.0.0.1").unwrap());
        assert_eq!(instance.ports[0].number, 8080);
        assert_eq!(instance.ports[0].name, PORT_NAME);
        assert!(instance.healthy);
        let labels: Vec<_> = instance.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            labels,
            ["protocol=http", "version=v2"],
            "AWS_ attributes are not labels"
        );
    }

    #[test]
    fn ipv4_is_preferred_then_ipv6_then_a_cname() {
        let both = attrs(&[
            ("AWS_INSTANCE_IPV6", "2001:db8::1"),
            ("AWS_INSTANCE_IPV4", "10.0.0.2"),
            ("AWS_INSTANCE_PORT", "80"),
        ]);
        assert_eq!(
            instance(&ORIGIN, "a", &both, true).unwrap().address.to_string(),
            "10.0.0.2"
        );
        let v6 = attrs(&[("AWS_INSTANCE_IPV6", "2001:db8::1"), ("AWS_INSTANCE_PORT", "80")]);
        assert_eq!(
            instance(&ORIGIN, "b", &v6, true).unwrap().address.to_string(),
            "2001:db8::1"
        );
        let cname = attrs(&[
            ("AWS_INSTANCE_CNAME", "Orders.Example.com"),
            ("AWS_INSTANCE_PORT", "80"),
        ]);
        assert_eq!(
            instance(&ORIGIN, "c", &cname, true).unwrap().address,
            Address::Hostname("orders.example.com".into())
        );
    }

    #[test]
    fn bad_addresses_and_ports_are_refused_with_the_attribute_named() {
        let cases = [
            (
                vec![("AWS_INSTANCE_IPV4", "300.1.1.1"), ("AWS_INSTANCE_PORT", "80")],
                "AWS_INSTANCE_IPV4",
            ),
            (
                vec![("AWS_INSTANCE_IPV4", "2001:db8::1"), ("AWS_INSTANCE_PORT", "80")],
                "not an IPv4",
            ),
            (
                vec![("AWS_INSTANCE_IPV4", "0.0.0.0"), ("AWS_INSTANCE_PORT", "80")],
                "unicast",
            ),
            (
                vec![("AWS_INSTANCE_IPV6", "10.0.0.1"), ("AWS_INSTANCE_PORT", "80")],
                "not an IPv6",
            ),
            (
                vec![("AWS_INSTANCE_CNAME", "10.0.0.1"), ("AWS_INSTANCE_PORT", "80")],
                "not a host name",
            ),
            (vec![("AWS_INSTANCE_PORT", "80")], "no address"),
            (vec![("AWS_INSTANCE_IPV4", "10.0.0.1")], "no AWS_INSTANCE_PORT"),
            (
                vec![("AWS_INSTANCE_IPV4", "10.0.0.1"), ("AWS_INSTANCE_PORT", "0")],
                "out of range",
            ),
            (
                vec![("AWS_INSTANCE_IPV4", "10.0.0.1"), ("AWS_INSTANCE_PORT", "65536")],
                "out of range",
            ),
            (
                vec![("AWS_INSTANCE_IPV4", "10.0.0.1"), ("AWS_INSTANCE_PORT", "http")],
                "not a port",
            ),
        ];
        for (pairs, expected) in cases {
            let why = reason(instance(&ORIGIN, "i", &attrs(&pairs), true));
            assert!(why.contains(expected), "{pairs:?}: {why}");
        }
    }

    #[test]
    fn huge_attributes_are_left_out_and_a_huge_instance_is_refused() {
        let long = "x".repeat(MAX_ATTRIBUTE_VALUE + 1);
        let pairs = [
            ("AWS_INSTANCE_IPV4", "10.0.0.1"),
            ("AWS_INSTANCE_PORT", "80"),
            ("blob", long.as_str()),
            ("team", "a"),
        ];
        let instance_ok = instance(&ORIGIN, "i", &attrs(&pairs), true).unwrap();
        assert_eq!(instance_ok.labels.keys().collect::<Vec<_>>(), ["team"]);

        let mut huge = attrs(&pairs[..2]);
        for n in 0..70 {
            huge.insert(format!("k{n}"), "y".repeat(1000));
        }
        assert!(reason(instance(&ORIGIN, "i", &huge, true)).contains("bytes"));
        let quoted = reason(instance(
            &ORIGIN,
            "i",
            &attrs(&[("AWS_INSTANCE_IPV4", &long), ("AWS_INSTANCE_PORT", "80")]),
            true,
        ));
        assert!(quoted.len() < 200, "a reason never quotes a huge value: {quoted}");
    }

    #[test]
    fn ecs_availability_zone_gives_the_locality_and_health_is_carried() {
        let pairs = attrs(&[
            ("AWS_INSTANCE_IPV4", "10.0.0.1"),
            ("AWS_INSTANCE_PORT", "80"),
            ("AVAILABILITY_ZONE", "us-east-1b"),
        ]);
        let instance_ok = instance(&ORIGIN, "i", &pairs, false).unwrap();
        assert_eq!(instance_ok.locality(), Some("us-east-1/us-east-1b"));
        assert!(!instance_ok.healthy);
        let no_region = Origin {
            region: None,
            ..ORIGIN
        };
        assert_eq!(instance(&no_region, "i", &pairs, true).unwrap().locality(), None);
    }
}
