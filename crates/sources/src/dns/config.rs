//! The `dns` registry's keys.

use std::time::Duration;

use serde::Deserialize;

use super::{DEFAULT_MAX_REFRESH, DEFAULT_MIN_REFRESH, DnsConfig, DnsError, DnsSource, SrvName};
use crate::config::{BlockError, Context, parse_duration};
use crate::registry::{Kind, load_and_watch};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsBlock {
    nameserver: Option<String>,
    names: Option<Vec<String>>,
    min_refresh: Option<String>,
    max_refresh: Option<String>,
}

fn refresh(value: &Option<String>, key: &str, default: Duration) -> Result<Duration, BlockError> {
    let bounds = Duration::from_millis(100)..=Duration::from_secs(86_400);
    match value {
        None => Ok(default),
        Some(v) => parse_duration(v).filter(|d| bounds.contains(d)).ok_or_else(|| {
            BlockError::new(
                key,
                format!("{v:?} must be a duration from 100ms to 1440m, e.g. 5s or 2m"),
            )
        }),
    }
}

impl Kind for DnsSource {
    type Block = DnsBlock;
    type Config = DnsConfig;
    type Error = DnsError;

    fn configure(b: DnsBlock, _: &Context) -> Result<DnsConfig, BlockError> {
        let nameserver = match &b.nameserver {
            None => None,
            Some(v) => {
                let text = v.trim();
                let parsed = text
                    .parse::<std::net::SocketAddr>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()));
                Some(parsed.map_err(|_| {
                    BlockError::new(
                        "nameserver",
                        format!("{text:?} must be an IP address with an optional port, e.g. \"10.0.0.53\" or \"127.0.0.1:5353\""),
                    )
                })?)
            }
        };
        let Some(raw_names) = &b.names else {
            return Err(BlockError::new(
                "names",
                "is required: the SRV names to follow, e.g. [_http._tcp.billing.example]",
            ));
        };
        if raw_names.is_empty() {
            return Err(BlockError::new("names", "must list at least one SRV name"));
        }
        let mut names: Vec<SrvName> = Vec::new();
        for raw in raw_names {
            let name = SrvName::parse(raw).map_err(|message| BlockError::new("names", message))?;
            if let Some(other) = names.iter().find(|n| n.service() == name.service()) {
                return Err(BlockError::new(
                    "names",
                    format!(
                        "{} and {} both name the service {}; list one SRV name per service",
                        other.name(),
                        name.name(),
                        name.service()
                    ),
                ));
            }
            names.push(name);
        }
        let min_refresh = refresh(&b.min_refresh, "min_refresh", DEFAULT_MIN_REFRESH)?;
        let max_refresh = refresh(&b.max_refresh, "max_refresh", DEFAULT_MAX_REFRESH)?;
        if min_refresh > max_refresh {
            return Err(BlockError::new(
                "min_refresh",
                format!("{min_refresh:?} is longer than `max_refresh` ({max_refresh:?})"),
            ));
        }
        Ok(DnsConfig {
            nameserver,
            names,
            min_refresh,
            max_refresh,
        })
    }

    fn default_hosts(_: &DnsConfig) -> &'static str {
        // The service is the SRV name's domain, already a DNS name.
        "{service}"
    }

    load_and_watch!();
}
