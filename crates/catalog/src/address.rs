use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where an instance can be reached: an IP address, or a DNS host name that the mesh
/// resolves itself (which turns the ServiceEntry's resolution into `DNS`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Address {
    Ip(IpAddr),
    /// Lowercase, RFC 1123, without a trailing dot. A boxed string keeps the address as
    /// small as an IP and an instance 8 bytes smaller.
    Hostname(Box<str>),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is empty")]
    Empty,
    #[error("address {0:?} is not a usable unicast IP (unspecified, multicast or broadcast)")]
    NotUnicast(String),
    #[error(
        "address {0:?} looks like a dotted number but is not a valid IPv4 address (RFC 1123 forbids such host names)"
    )]
    NumericHostname(String),
    #[error("address {0:?} is neither an IP address nor a valid host name: {1}")]
    InvalidHostname(String, &'static str),
}

/// Longest host name DNS can carry in presentation form.
const MAX_HOSTNAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

impl Address {
    /// Parses an IPv4 or IPv6 address (brackets allowed around IPv6) or an RFC 1123 host
    /// name. Host names are lowercased. Addresses that no mesh endpoint can carry —
    /// unspecified, multicast, broadcast, dotted numbers that are not IPv4 — are refused,
    /// because publishing them would send traffic nowhere.
    pub fn parse(raw: &str) -> Result<Address, AddressError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(AddressError::Empty);
        }
        let unbracketed = trimmed
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(trimmed);
        if let Ok(v4) = unbracketed.parse::<Ipv4Addr>() {
            if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() {
                return Err(AddressError::NotUnicast(raw.to_string()));
            }
            return Ok(Address::Ip(IpAddr::V4(v4)));
        }
        if let Ok(v6) = unbracketed.parse::<Ipv6Addr>() {
            if v6.is_unspecified() || v6.is_multicast() {
                return Err(AddressError::NotUnicast(raw.to_string()));
            }
            return Ok(Address::Ip(IpAddr::V6(v6)));
        }
        parse_hostname(trimmed).map(|name| Address::Hostname(name.into()))
    }

    pub fn is_ip(&self) -> bool {
        matches!(self, Address::Ip(_))
    }
}

fn parse_hostname(raw: &str) -> Result<String, AddressError> {
    let invalid = |why| AddressError::InvalidHostname(raw.to_string(), why);
    let name = raw.strip_suffix('.').unwrap_or(raw);
    if name.len() > MAX_HOSTNAME_LEN {
        return Err(invalid("longer than 253 characters"));
    }
    let mut last_label = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err(invalid("empty label"));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(invalid("a label is longer than 63 characters"));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(invalid("only letters, digits, '-' and '.' are allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label starts or ends with '-'"));
        }
        last_label = label;
    }
    // RFC 1123 §2.1: a valid host name never has the form of a dotted number, and no
    // top-level domain is all-numeric; "10.0.0.300" or "1.2.3" is a typo, not a host.
    if last_label.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddressError::NumericHostname(raw.to_string()));
    }
    Ok(name.to_ascii_lowercase())
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(ip) => ip.fmt(f),
            Address::Hostname(h) => f.write_str(h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_ipv6_and_bracketed_ipv6_parse_as_ips() {
        assert_eq!(Address::parse("10.1.0.1").unwrap().to_string(), "10.1.0.1");
        assert_eq!(Address::parse("2001:db8::1").unwrap().to_string(), "2001:db8::1");
        assert_eq!(
            Address::parse("[2001:db8::1]").unwrap().to_string(),
            "2001:db8::1"
        );
        assert!(Address::parse(" 10.1.0.1 ").unwrap().is_ip());
    }

    #[test]
    fn hostnames_are_lowercased_and_lose_a_trailing_dot() {
        assert_eq!(
            Address::parse("Orders-1.Example.COM.").unwrap(),
            Address::Hostname("orders-1.example.com".into())
        );
    }

    #[test]
    fn dotted_numbers_that_are_not_ipv4_are_refused() {
        for bad in ["10.1.0.300", "1.2.3", "999", "010.001.000.001", "1.2.3.4.5"] {
            assert!(
                matches!(Address::parse(bad), Err(AddressError::NumericHostname(_))),
                "{bad} should be refused as a numeric host name"
            );
        }
    }

    #[test]
    fn malformed_hostnames_are_refused_with_a_reason() {
        for bad in [
            "",
            "a..b",
            "-a.com",
            "a-.com",
            "a_b.com",
            "a b",
            "höst.de",
            &"a".repeat(64),
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let long = vec!["abc"; 70].join(".");
        assert!(Address::parse(&long).is_err());
    }

    #[test]
    fn unspecified_multicast_and_broadcast_ips_are_refused() {
        for bad in ["0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "ff02::1"] {
            assert!(
                matches!(Address::parse(bad), Err(AddressError::NotUnicast(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn zone_ids_and_ports_are_not_addresses() {
        assert!(Address::parse("fe80::1%eth0").is_err());
        assert!(Address::parse("10.0.0.1:8080").is_err());
    }
}
