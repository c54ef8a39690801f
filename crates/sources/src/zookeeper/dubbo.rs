//! The Dubbo layout: `/dubbo/<interface>/providers/<URL-encoded provider URL>`.
//!
//! Everything about a provider is in its node's name, e.g.
//! `dubbo://10.0.0.1:20880/com.example.DemoService?application=demo&side=provider&weight=100`
//! URL-encoded as Java's `URLEncoder` does it. The URL's scheme names the port (one
//! logical port per scheme: `dubbo`, `tri`, `grpc`, `rest`, …) and hints its protocol;
//! its parameters become labels; `weight` sets the weight; `enabled=false` or
//! `disabled=true` takes the provider out of service; `side=consumer` nodes are not
//! providers and are ignored.

use registry_sync_catalog::{Address, Instance, InstancePort, Metadata, Protocol, Refusal, parse_port};

use crate::json::split_host_port;
use crate::state::Item;

/// What a scheme says about the protocol, weaker than a `protocol` label.
fn protocol_hint(scheme: &str) -> Option<Protocol> {
    match scheme {
        "dubbo" => Some(Protocol::Tcp),
        "tri" | "grpc" => Some(Protocol::Grpc),
        "rest" | "http" => Some(Protocol::Http),
        "https" => Some(Protocol::Https),
        _ => None,
    }
}

/// One provider node, or `None` when the node is not a provider (`side=consumer`).
pub(super) fn item(registry: &str, service: &str, node: &str) -> Option<Item> {
    let refuse = |refusal: Refusal| refusal.skipped(registry, service, Some(node));
    // A node name that does not decode, or is no provider URL, is malformed.
    let url = match decode(node) {
        Ok(url) => url,
        Err(reason) => return Some(Err(refuse(Refusal::malformed(reason)))),
    };
    let parsed = match ProviderUrl::parse(&url) {
        Ok(parsed) => parsed,
        Err(reason) => return Some(Err(refuse(Refusal::malformed(reason)))),
    };
    if parsed.param("side") == Some("consumer") {
        return None;
    }
    Some(parsed.instance().map_err(refuse))
}

/// Undoes Java's `URLEncoder`: `+` is a space, `%XX` a byte of UTF-8.
fn decode(node: &str) -> Result<String, String> {
    let spaced = node.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|url| url.into_owned())
        .map_err(|_| "the node name does not decode to UTF-8 text".to_string())
}

struct ProviderUrl<'u> {
    scheme: String,
    host: &'u str,
    port: Option<&'u str>,
    params: Vec<(&'u str, &'u str)>,
}

impl<'u> ProviderUrl<'u> {
    fn parse(url: &'u str) -> Result<ProviderUrl<'u>, String> {
        let Some((scheme, rest)) = url.split_once("://") else {
            // Not echoed whole: what stands before an `@` may be credentials.
            let shown = url.rsplit_once('@').map_or(url, |(_, host)| host);
            let shown: String = shown.chars().take(80).collect();
            return Err(format!("{shown:?} is not a provider URL (no scheme://)"));
        };
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(format!("the URL scheme {scheme:?} is not valid"));
        }
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = before_query.split('/').next().unwrap_or_default();
        // Credentials in the URL (`user:password@host`) are not ours to keep.
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        let (host, port) = match split_host_port(host_port) {
            Some((host, port)) => (host, Some(port)),
            None => (host_port.trim_start_matches('[').trim_end_matches(']'), None),
        };
        let params = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .filter(|(k, _)| !k.is_empty())
            .collect();
        Ok(ProviderUrl {
            scheme: scheme.to_ascii_lowercase(),
            host,
            port,
            params,
        })
    }

    fn param(&self, key: &str) -> Option<&'u str> {
        self.params.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn instance(&self) -> Result<Instance, Refusal> {
        let address = Address::parse(self.host).map_err(|e| Refusal::address(e.to_string()))?;
        let Some(port) = self.port else {
            return Err(Refusal::port(format!(
                "the URL has no port after the host {:?}",
                self.host
            )));
        };
        let number = port
            .parse::<i64>()
            .map_err(|_| Refusal::port(format!("port {port:?} is not a number")))
            .and_then(|n| parse_port(n).map_err(|e| Refusal::port(e.to_string())))?;
        let weight = match self.param("weight") {
            None | Some("") => None,
            Some(w) => Some(w.parse::<u32>().map_err(|_| {
                Refusal::malformed(format!(
                    "weight {w:?} is not a whole number from 0 to {}",
                    u32::MAX
                ))
            })?),
        };
        let healthy = self.param("enabled") != Some("false") && self.param("disabled") != Some("true");
        let labels: Metadata = self
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(Instance {
            id: self.id(&address, number),
            address,
            ports: vec![InstancePort {
                name: self.scheme.clone(),
                number,
                protocol_hint: protocol_hint(&self.scheme),
            }],
            healthy,
            weight,
            placement: None,
            labels,
        })
    }

    /// `host:port`, plus the group and version when the URL has them: one provider
    /// process may export several versions of an interface on the same port, and each
    /// is its own instance.
    fn id(&self, address: &Address, port: u16) -> String {
        let mut id = match address {
            Address::Ip(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
            other => format!("{other}:{port}"),
        };
        let mut sep = '?';
        for key in ["group", "version"] {
            if let Some(value) = self.param(key).filter(|v| !v.is_empty()) {
                id.push(sep);
                id.push_str(key);
                id.push('=');
                id.push_str(value);
                sep = '&';
            }
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn provider_nodes_of_any_text_never_panic(node in ".{0,120}", url in "[a-z]{1,6}://[^/?]{0,30}(/[a-zA-Z.]{0,20})?(\\?[a-z=&%0-9]{0,40})?") {
            let _ = item("zk", "a.B", &node);
            let encoded = percent_encoding::utf8_percent_encode(&url, percent_encoding::NON_ALPHANUMERIC).to_string();
            let _ = item("zk", "a.B", &encoded);
        }
    }

    fn encode(url: &str) -> String {
        percent_encoding::utf8_percent_encode(url, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    fn provider(url: &str) -> Item {
        item("dubbo", "com.example.DemoService", &encode(url)).expect("a provider")
    }

    #[test]
    fn a_provider_url_gives_address_port_named_after_the_scheme_labels_and_weight() {
        let instance = provider(
            "dubbo://10.0.0.1:20880/com.example.DemoService?application=demo&side=provider&weight=100&enabled=true&version=1.0.0",
        )
        .unwrap();
        assert_eq!(instance.address.to_string(), "10.0.0.1");
        assert_eq!(instance.id, "10.0.0.1:20880?version=1.0.0");
        assert_eq!(instance.ports[0].name, "dubbo");
        assert_eq!(instance.ports[0].number, 20880);
        assert_eq!(instance.ports[0].protocol_hint, Some(Protocol::Tcp));
        assert_eq!(instance.weight, Some(100));
        assert!(instance.healthy);
        assert_eq!(
            instance.labels.get("application").map(String::as_str),
            Some("demo")
        );
        assert_eq!(instance.labels.get("version").map(String::as_str), Some("1.0.0"));
    }

    #[test]
    fn schemes_hint_grpc_for_triple_and_http_for_rest() {
        let tri = provider("tri://10.0.0.1:50051/a.B?side=provider").unwrap();
        assert_eq!(tri.ports[0].protocol_hint, Some(Protocol::Grpc));
        let rest = provider("rest://10.0.0.1:8080/a.B").unwrap();
        assert_eq!(
            (rest.ports[0].name.as_str(), rest.ports[0].protocol_hint),
            ("rest", Some(Protocol::Http))
        );
        let other = provider("thrift://10.0.0.1:9090/a.B").unwrap();
        assert_eq!(other.ports[0].protocol_hint, None);
    }

    #[test]
    fn disabled_providers_are_not_healthy_and_consumers_are_ignored() {
        assert!(
            !provider("dubbo://10.0.0.1:20880/a.B?enabled=false")
                .unwrap()
                .healthy
        );
        assert!(
            !provider("dubbo://10.0.0.1:20880/a.B?disabled=true")
                .unwrap()
                .healthy
        );
        assert!(item("dubbo", "a.B", &encode("consumer://10.0.0.1/a.B?side=consumer")).is_none());
    }

    #[test]
    fn java_url_encoding_with_plus_for_space_is_decoded() {
        let node = "dubbo%3A%2F%2F10.0.0.1%3A20880%2Fa.B%3Fapplication%3Dmy+app";
        let instance = item("dubbo", "a.B", node).unwrap().unwrap();
        assert_eq!(
            instance.labels.get("application").map(String::as_str),
            Some("my app")
        );
    }

    #[test]
    fn credentials_in_a_provider_url_reach_neither_labels_nor_reasons() {
        let encoded = |url: &str| {
            percent_encoding::utf8_percent_encode(url, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let good = item(
            "zk",
            "a.B",
            &encoded("dubbo://admin:hunter2@10.0.0.1:20880/a.B?token=s3cret&version=1"),
        )
        .expect("a provider")
        .expect("an instance");
        assert!(!format!("{good:?}").contains("hunter2"), "{good:?}");
        let bad = item("zk", "a.B", &encoded("admin:hunter2@10.0.0.1:20880"))
            .expect("a provider")
            .expect_err("refused");
        assert!(!bad.reason.contains("hunter2"), "{}", bad.reason);
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        let reason = |url: &str| provider(url).unwrap_err().reason;
        assert!(reason("10.0.0.1:20880").contains("no scheme"));
        assert!(reason("dubbo://10.0.0.1/a.B").contains("no port"));
        assert!(reason("dubbo://10.0.0.1:0/a.B").contains("out of range"));
        assert!(reason("dubbo://10.0.0.1:70000/a.B").contains("out of range"));
        assert!(reason("dubbo://10.0.0.1:x/a.B").contains("not a number"));
        assert!(reason("dubbo://300.0.0.1:20880/a.B").contains("300.0.0.1"));
        assert!(reason("dubbo://10.0.0.1:20880/a.B?weight=heavy").contains("weight"));
        let skipped = item("dubbo", "a.B", "%FF%FE").unwrap().unwrap_err();
        assert_eq!(
            (skipped.registry.as_str(), skipped.service.as_str()),
            ("dubbo", "a.B")
        );
        assert!(skipped.reason.contains("UTF-8"));
    }

    #[test]
    fn a_refused_provider_never_shows_its_token_or_user_part() {
        let raw = "dubbo%3A%2F%2Fadmin%3Apw%40300.0.0.1%3A20880%2Fa.B%3Fapplication%3Ddemo%26token%3Ds3cr3t-t0ken";
        let skipped = item("dubbo", "a.B", raw).unwrap().unwrap_err();
        let shown = format!("{skipped} {:?}", skipped.instance);
        for secret in ["s3cr3t", "token", "admin", "pw"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(skipped.instance.as_deref(), Some("dubbo%3A%2F%2F…@300.0.0.1%3A20880%2Fa.B?…"));
        let long = format!("dubbo://10.0.0.1:20880/a.B?weight={}", "9".repeat(100_000));
        let skipped = item("dubbo", "a.B", &long).unwrap().unwrap_err();
        assert!(skipped.reason.len() <= registry_sync_catalog::MAX_REASON_LEN + '…'.len_utf8(), "{}", skipped.reason.len());
    }

    #[test]
    fn ipv6_providers_and_group_versions_get_distinct_ids() {
        let v6 = provider("dubbo://[2001:db8::1]:20880/a.B?group=g&version=2").unwrap();
        assert_eq!(v6.id, "[2001:db8::1]:20880?group=g&version=2");
    }
}
