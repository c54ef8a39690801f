//! Asking the DNS server, and telling "the name is gone" from "the server failed".
//!
//! The resolver keeps no cache: the refresh schedule decides when a name is asked
//! again, and a cached answer would hide a change for as long as the cache held it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use tokio::sync::Semaphore;

use super::DnsError;
use super::records::{SrvRecord, TargetAddresses};

/// Queries in flight at once: below the resolver's limit per connection (32), past
/// which it refuses requests as "busy".
const IN_FLIGHT: usize = 24;
/// Per attempt; two attempts per query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// What the server said about one name and record type.
#[derive(Debug)]
pub(super) enum Answer<T> {
    /// The records, and the smallest TTL among them.
    Records(Vec<T>, u32),
    /// No such record: `NXDOMAIN` (`exists: false`) or a name without records of the
    /// type (`exists: true`); with the negative TTL when the server sent an SOA.
    None { exists: bool, ttl: u32 },
}

#[derive(Clone)]
pub(super) struct Lookups {
    registry: String,
    nameserver: String,
    resolver: TokioResolver,
    permits: Arc<Semaphore>,
    requests: crate::requests::Requests,
}

impl Lookups {
    pub(super) fn new(registry: &str, nameserver: Option<SocketAddr>) -> Result<Lookups, DnsError> {
        let mut builder = match nameserver {
            Some(address) => {
                let mut server = NameServerConfig::udp_and_tcp(address.ip());
                for connection in &mut server.connections {
                    connection.port = address.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio().map_err(|error| DnsError::SystemConfig {
                registry: registry.to_string(),
                error: error.to_string(),
            })?,
        };
        let options = builder.options_mut();
        options.cache_size = 0;
        options.use_hosts_file = ResolveHosts::Never;
        options.timeout = QUERY_TIMEOUT;
        options.attempts = 2;
        let resolver = builder.build().map_err(|error| DnsError::SystemConfig {
            registry: registry.to_string(),
            error: error.to_string(),
        })?;
        Ok(Lookups {
            registry: registry.to_string(),
            nameserver: nameserver.map_or_else(|| "the system resolver".to_string(), |a| a.to_string()),
            resolver,
            permits: Arc::new(Semaphore::new(IN_FLIGHT)),
            requests: crate::requests::Requests::of(registry),
        })
    }

    pub(super) fn registry(&self) -> &str {
        &self.registry
    }

    fn error(&self, record: &'static str, name: &str, error: impl ToString) -> DnsError {
        DnsError::Lookup {
            registry: self.registry.clone(),
            nameserver: self.nameserver.clone(),
            record,
            name: name.to_string(),
            error: error.to_string(),
        }
    }

    /// The SRV records of `name` (lowercase, no trailing dot).
    pub(super) async fn srv(&self, name: &str) -> Result<Answer<SrvRecord>, DnsError> {
        self.query(name, RecordType::SRV, "SRV", |data| match data {
            RData::SRV(srv) => Some(SrvRecord {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: srv.target.to_ascii().trim_end_matches('.').to_ascii_lowercase(),
            }),
            _ => None,
        })
        .await
    }

    /// The A and AAAA addresses of a target, and the smallest TTL of both answers.
    pub(super) async fn addresses(&self, target: &str) -> Result<(TargetAddresses, u32), DnsError> {
        let v4 = self.query(target, RecordType::A, "A", |data| match data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        });
        let v6 = self.query(target, RecordType::AAAA, "AAAA", |data| match data {
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        });
        let (v4, v6) = tokio::join!(v4, v6);
        let mut addresses = Vec::new();
        let mut ttl = u32::MAX;
        let mut exists = false;
        for answer in [v4?, v6?] {
            match answer {
                Answer::Records(found, found_ttl) => {
                    addresses.extend(found);
                    ttl = ttl.min(found_ttl);
                    exists = true;
                }
                Answer::None { exists: e, ttl: t } => {
                    exists |= e;
                    ttl = ttl.min(t);
                }
            }
        }
        let found = if !addresses.is_empty() {
            addresses.sort();
            addresses.dedup();
            TargetAddresses::Found(addresses)
        } else if exists {
            TargetAddresses::Missing(format!("the SRV target {target} has no A or AAAA record"))
        } else {
            TargetAddresses::Missing(format!("the SRV target {target} does not exist (NXDOMAIN)"))
        };
        Ok((found, ttl))
    }

    async fn query<T>(
        &self,
        name: &str,
        kind: RecordType,
        record: &'static str,
        pick: impl Fn(&RData) -> Option<T>,
    ) -> Result<Answer<T>, DnsError> {
        // A trailing dot: the name is complete, no search domain is tried.
        let fqdn = Name::from_ascii(format!("{name}.")).map_err(|e| self.error(record, name, e))?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| self.error(record, name, e))?;
        self.requests.count();
        match self.resolver.lookup(fqdn, kind).await {
            Ok(lookup) => {
                let mut ttl = u32::MAX;
                let mut found = Vec::new();
                for answer in lookup.answers() {
                    if let Some(value) = pick(&answer.data) {
                        ttl = ttl.min(answer.ttl);
                        found.push(value);
                    }
                }
                if found.is_empty() {
                    // Only a CNAME chain that ends nowhere: the name has no such records.
                    return Ok(Answer::None { exists: true, ttl: 0 });
                }
                Ok(Answer::Records(found, ttl))
            }
            Err(error) => negative(&error).ok_or_else(|| self.error(record, name, error)),
        }
    }
}

/// `Some` when the error is an answer that says there is no such record.
fn negative<T>(error: &NetError) -> Option<Answer<T>> {
    match error {
        NetError::Dns(hickory_resolver::net::DnsError::NoRecordsFound(none)) => Some(Answer::None {
            exists: none.response_code != ResponseCode::NXDomain,
            ttl: none.negative_ttl.unwrap_or(0),
        }),
        _ => None,
    }
}
