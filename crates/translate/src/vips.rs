//! Virtual IPs for ServiceEntries, from a configured range.
//!
//! Without an address, every TCP ServiceEntry shares the `0.0.0.0:<port>` listener of
//! its port, and two such services on one port collide; ambient routes a ServiceEntry
//! through a waypoint only when it has one. istiod allocates addresses itself for
//! ServiceEntries it reads from Kubernetes, but not for MCP objects, so this allocates
//! one per host from `vip_range`.
//!
//! A host's address is a hash of its namespace and name into the range, probing onward
//! past taken addresses, so it does not depend on which other services exist unless two
//! hash to the same place. Addresses already written are read back from the sinks
//! ([`Allocator::seed`]) and kept, so a restart or a new neighbour moves no address.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

/// A CIDR range addresses are taken from.
#[derive(Clone, PartialEq, Eq)]
pub struct VipRange {
    source: String,
    base: u128,
    /// Host bits: the range holds `2^bits` addresses.
    bits: u32,
    v6: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VipRangeError {
    #[error("{0:?} is not a CIDR range such as 240.240.0.0/16")]
    Syntax(String),
    #[error("{0:?} has host bits set; the range starts at {1}")]
    HostBits(String, String),
    #[error(
        "{0:?} is too wide: use at least /8 for IPv4 and /64 for IPv6, so that no address a workload uses is taken"
    )]
    TooWide(String),
    #[error("{0:?} is too narrow: use at most /30 for IPv4 and /126 for IPv6")]
    TooNarrow(String),
    #[error(
        "{0:?} holds {1} addresses, which Istio or the network treat specially; use a private or reserved range such as 240.240.0.0/16"
    )]
    Special(String, &'static str),
}

impl VipRange {
    pub fn parse(text: &str) -> Result<VipRange, VipRangeError> {
        let text = text.trim();
        let syntax = || VipRangeError::Syntax(text.to_string());
        let (address, prefix) = text.split_once('/').ok_or_else(syntax)?;
        let address: IpAddr = address.parse().map_err(|_| syntax())?;
        let prefix: u32 = prefix.parse().map_err(|_| syntax())?;
        let (width, min, max) = match address {
            IpAddr::V4(_) => (32, 8, 30),
            IpAddr::V6(_) => (128, 64, 126),
        };
        if prefix > width {
            return Err(syntax());
        }
        if prefix < min {
            return Err(VipRangeError::TooWide(text.to_string()));
        }
        if prefix > max {
            return Err(VipRangeError::TooNarrow(text.to_string()));
        }
        let bits = width - prefix;
        let value = to_bits(address);
        let base = value & !((1u128 << bits) - 1);
        let range = VipRange {
            source: text.to_string(),
            base,
            bits,
            v6: address.is_ipv6(),
        };
        if base != value {
            return Err(VipRangeError::HostBits(
                text.to_string(),
                range.nth(0).to_string(),
            ));
        }
        let first = range.nth(0);
        if let Some(what) = special(first).or_else(|| special(range.nth(range.size() - 1))) {
            return Err(VipRangeError::Special(text.to_string(), what));
        }
        Ok(range)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    fn size(&self) -> u128 {
        1u128 << self.bits
    }

    fn nth(&self, offset: u128) -> IpAddr {
        from_bits(self.base + offset, self.v6)
    }

    /// Whether the range shares an address with the CIDR `other` (of any width);
    /// `false` when `other` is no CIDR.
    pub fn overlaps(&self, other: &str) -> bool {
        let Some((address, prefix)) = other.split_once('/') else {
            return false;
        };
        let (Ok(address), Ok(prefix)) = (address.parse::<IpAddr>(), prefix.parse::<u32>()) else {
            return false;
        };
        let width: u32 = if address.is_ipv6() { 128 } else { 32 };
        let bits = width.saturating_sub(prefix).max(self.bits);
        self.v6 == address.is_ipv6() && bits < 128 && self.base >> bits == to_bits(address) >> bits
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        address.is_ipv6() == self.v6 && to_bits(address) >> self.bits == self.base >> self.bits
    }

    /// Offsets that may be handed out: an IPv4 range leaves out its network and
    /// broadcast addresses.
    fn usable(&self) -> (u128, u128) {
        if self.v6 {
            (0, self.size())
        } else {
            (1, self.size() - 2)
        }
    }
}

impl fmt::Debug for VipRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VipRange({:?})", self.source)
    }
}

fn to_bits(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_bits(bits: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(bits.into())
    } else {
        IpAddr::V4(u32::try_from(bits).unwrap_or(u32::MAX).into())
    }
}

/// What a range must not hold: `0.0.0.0` and `::` (every listener), loopback,
/// multicast, link-local and broadcast.
fn special(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) if v4.is_unspecified() || v4.octets()[0] == 0 => Some("unspecified (0.0.0.0/8)"),
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("multicast"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("broadcast"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified (::)"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("multicast"),
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => Some("link-local"),
        _ => None,
    }
}

/// Which ServiceEntry an address belongs to: its namespace and (first) host.
pub type VipKey = (String, String);

/// The addresses handed out, by host, and the reverse.
#[derive(Clone, Debug, Default)]
pub struct Allocator {
    by_host: HashMap<VipKey, IpAddr>,
    owners: HashMap<IpAddr, VipKey>,
    /// Addresses no host may get, with how many holders each has: every endpoint
    /// address of every registry (in ambient, a service whose address is another's
    /// endpoint would take that endpoint's traffic) and the addresses of objects
    /// someone else wrote.
    taken: HashMap<IpAddr, u32>,
}

impl Allocator {
    /// Records an address a sink already holds for a host, so it is kept. An address
    /// another host holds already is not taken over (the first seed wins; the other host
    /// is given a new one).
    pub fn seed(&mut self, namespace: &str, host: &str, address: &str) {
        let Ok(address) = address.trim().parse::<IpAddr>() else {
            return;
        };
        let key = (namespace.to_string(), host.to_string());
        if self.owners.contains_key(&address) || self.by_host.contains_key(&key) {
            return;
        }
        self.owners.insert(address, key.clone());
        self.by_host.insert(key, address);
    }

    /// The address of a host: the one it has if that is still in `range` and not one
    /// of `avoid` (its own endpoints' addresses), else a new one. `None` when the range
    /// is full.
    pub fn assign(
        &mut self,
        range: &VipRange,
        namespace: &str,
        host: &str,
        avoid: &[IpAddr],
    ) -> Option<IpAddr> {
        let key = (namespace.to_string(), host.to_string());
        if let Some(&held) = self.by_host.get(&key) {
            if range.contains(held) && !avoid.contains(&held) && !self.is_taken(&held) {
                return Some(held);
            }
            self.release(namespace, host);
        }
        let (first, count) = range.usable();
        let start = hash(namespace, host) % count;
        let free = (0..count)
            .map(|step| range.nth(first + (start + step) % count))
            .find(|candidate| {
                !self.owners.contains_key(candidate)
                    && !avoid.contains(candidate)
                    && !self.is_taken(candidate)
            })?;
        self.owners.insert(free, key.clone());
        self.by_host.insert(key, free);
        Some(free)
    }

    /// Gives a host the address a sink holds for it, when it has another here (another
    /// replica allocated first, and this one now writes): the host that has that address
    /// here gives it up. Returns the hosts whose address changed, to translate again.
    pub fn adopt(&mut self, namespace: &str, host: &str, address: &str) -> Vec<VipKey> {
        let Ok(address) = address.trim().parse::<IpAddr>() else {
            return Vec::new();
        };
        let key = (namespace.to_string(), host.to_string());
        if self.by_host.get(&key) == Some(&address) || self.is_taken(&address) {
            return Vec::new();
        }
        let mut moved = vec![key.clone()];
        if let Some(other) = self.owners.remove(&address) {
            self.by_host.remove(&other);
            moved.push(other);
        }
        if let Some(old) = self.by_host.remove(&key) {
            self.owners.remove(&old);
        }
        self.owners.insert(address, key.clone());
        self.by_host.insert(key, address);
        moved
    }

    /// One more holder of `address` (an endpoint, another's object): no host gets it.
    /// Returns the host that holds it now, which must be given another.
    pub fn take(&mut self, address: IpAddr) -> Option<&VipKey> {
        *self.taken.entry(address).or_default() += 1;
        self.owners.get(&address)
    }

    /// One holder fewer of `address`.
    pub fn untake(&mut self, address: IpAddr) {
        if let Some(count) = self.taken.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                self.taken.remove(&address);
            }
        }
    }

    fn is_taken(&self, address: &IpAddr) -> bool {
        self.taken.contains_key(address)
    }

    /// Frees the address of a host that is gone.
    pub fn release(&mut self, namespace: &str, host: &str) {
        let key = (namespace.to_string(), host.to_string());
        if let Some(address) = self.by_host.remove(&key) {
            self.owners.remove(&address);
        }
    }

    pub fn len(&self) -> usize {
        self.by_host.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }
}

fn hash(namespace: &str, host: &str) -> u128 {
    let digest = Sha256::new()
        .chain_update(namespace.as_bytes())
        .chain_update([0])
        .chain_update(host.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> VipRange {
        VipRange::parse(text).unwrap()
    }

    #[test]
    fn ranges_are_checked_for_syntax_width_host_bits_and_special_addresses() {
        for (text, expected) in [
            ("240.240.0.0", "is not a CIDR range"),
            ("240.240.0.0/33", "is not a CIDR range"),
            ("nonsense/16", "is not a CIDR range"),
            ("0.0.0.0/0", "too wide"),
            ("10.0.0.0/7", "too wide"),
            ("240.240.0.0/31", "too narrow"),
            ("240.240.0.1/16", "host bits set; the range starts at 240.240.0.0"),
            ("0.0.0.0/8", "unspecified"),
            ("127.0.0.0/8", "loopback"),
            ("224.0.0.0/8", "multicast"),
            ("169.254.0.0/16", "link-local"),
            ("::/64", "unspecified (::)"),
            ("fe80::/64", "link-local"),
            ("fd00::/48", "too wide"),
        ] {
            let error = VipRange::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
        assert!(VipRange::parse("240.240.0.0/16").is_ok());
        assert!(range("240.240.7.0/30").overlaps("240.240.0.0/16"));
        assert!(range("240.0.0.0/8").overlaps("240.240.0.0/16"));
        assert!(!range("240.241.0.0/16").overlaps("240.240.0.0/16"));
        assert!(range("2001:2::/64").overlaps("2001:2::/48"));
        assert!(!range("2001:3::/64").overlaps("2001:2::/48"));
        assert!(!range("240.240.0.0/16").overlaps("2001:2::/48"));
        assert!(VipRange::parse("fd00:10::/64").is_ok());
    }

    #[test]
    fn an_address_is_in_the_range_never_its_network_or_broadcast_and_stable() {
        let r = range("240.240.7.0/30");
        let mut allocator = Allocator::default();
        let a = allocator.assign(&r, "mesh", "a.legacy", &[]).unwrap();
        let b = allocator.assign(&r, "mesh", "b.legacy", &[]).unwrap();
        assert_ne!(a, b);
        for address in [a, b] {
            assert!(r.contains(address));
            assert!(!["240.240.7.0", "240.240.7.3"].contains(&address.to_string().as_str()));
        }
        assert_eq!(
            allocator.assign(&r, "mesh", "a.legacy", &[]),
            Some(a),
            "the same host keeps it"
        );
        assert_eq!(
            allocator.assign(&r, "mesh", "c.legacy", &[]),
            None,
            "the range is full"
        );
        allocator.release("mesh", "b.legacy");
        assert_eq!(allocator.assign(&r, "mesh", "c.legacy", &[]), Some(b));
    }

    #[test]
    fn the_address_of_a_host_does_not_depend_on_its_neighbours_without_a_collision() {
        let r = range("240.240.0.0/16");
        let mut alone = Allocator::default();
        let by_itself = alone.assign(&r, "mesh", "orders.legacy", &[]).unwrap();
        let mut crowded = Allocator::default();
        for n in 0..200 {
            crowded.assign(&r, "mesh", &format!("svc-{n}.legacy"), &[]);
        }
        let among_others = crowded.assign(&r, "mesh", "orders.legacy", &[]).unwrap();
        assert_eq!(by_itself, among_others);
    }

    #[test]
    fn a_seeded_address_is_kept_even_where_the_hash_points_elsewhere() {
        let r = range("240.240.0.0/16");
        let mut allocator = Allocator::default();
        allocator.seed("mesh", "orders.legacy", "240.240.9.9");
        assert_eq!(
            allocator
                .assign(&r, "mesh", "orders.legacy", &[])
                .unwrap()
                .to_string(),
            "240.240.9.9"
        );
        // Seeded elsewhere (the range changed since): a new one from the range.
        allocator.seed("mesh", "other.legacy", "10.9.9.9");
        assert!(r.contains(allocator.assign(&r, "mesh", "other.legacy", &[]).unwrap()));
        // An address the first seed holds is not given to a second host.
        allocator.seed("mesh", "third.legacy", "240.240.9.9");
        assert_ne!(
            allocator
                .assign(&r, "mesh", "third.legacy", &[])
                .unwrap()
                .to_string(),
            "240.240.9.9"
        );
    }

    #[test]
    fn an_endpoint_address_inside_the_range_is_never_handed_out() {
        let r = range("240.240.7.0/30");
        let mut allocator = Allocator::default();
        let own: Vec<IpAddr> = vec!["240.240.7.1".parse().unwrap()];
        let got = allocator.assign(&r, "mesh", "a.legacy", &own).unwrap();
        assert_eq!(got.to_string(), "240.240.7.2");
    }

    #[test]
    fn ipv6_ranges_hand_out_ipv6_addresses() {
        let r = range("fd00:10::/64");
        let got = Allocator::default().assign(&r, "mesh", "a.legacy", &[]).unwrap();
        assert!(got.is_ipv6() && r.contains(got), "{got}");
    }
}
#[cfg(test)]
mod order_tests {
    use super::*;

    /// The share of hosts whose address depends on the order hosts arrive in: the
    /// figure docs/mapping.md gives for the MCP sink, which reads nothing back.
    #[test]
    fn few_addresses_depend_on_arrival_order_in_a_range_with_room() {
        let range = VipRange::parse("240.240.0.0/16").unwrap();
        // Measured: 16 of 1,000 and 579 of 6,500 (ten times the room); a hash that
        // clustered would move far more.
        for (n, at_most) in [(1_000usize, 30), (6_500, 700)] {
            let hosts: Vec<String> = (0..n).map(|i| format!("svc-{i}.legacy")).collect();
            let mut forward = Allocator::default();
            let mut backward = Allocator::default();
            let a: Vec<_> = hosts
                .iter()
                .map(|h| forward.assign(&range, "mesh", h, &[]))
                .collect();
            let mut b: Vec<_> = hosts
                .iter()
                .rev()
                .map(|h| backward.assign(&range, "mesh", h, &[]))
                .collect();
            b.reverse();
            let moved = a.iter().zip(&b).filter(|(x, y)| x != y).count();
            assert!(moved <= at_most, "{n} hosts: {moved} depend on the order");
        }
    }
}
