//! The `consul` registry's keys.

use std::time::Duration;

use serde::Deserialize;

use super::{CheckStatus, ConsulConfig, ConsulError, ConsulSource, MAX_WAIT, MIN_MAX_CONNECTIONS};
use crate::config::{BlockError, Context, RawAddress, duration_in, list, required, secret_source, url};
use crate::registry::{Kind, load_and_watch};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulBlock {
    address: Option<RawAddress>,
    datacenter: Option<String>,
    token_file: Option<String>,
    token_env: Option<String>,
    consul_namespace: Option<String>,
    partition: Option<String>,
    ca_file: Option<String>,
    health: Option<Vec<String>>,
    services: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    wait: Option<String>,
    #[serde(default, deserialize_with = "crate::config::number")]
    max_connections: Option<u64>,
}

impl Kind for ConsulSource {
    type Block = ConsulBlock;
    type Config = ConsulConfig;
    type Error = ConsulError;

    fn configure(b: ConsulBlock, cx: &Context) -> Result<ConsulConfig, BlockError> {
        let (address, ca_file) = url(cx, &b.address, &b.ca_file, "\"http://127.0.0.1:8500\"")?;
        let mut config = ConsulConfig::new(address);
        config.ca_file = ca_file;
        let text =
            |value: &Option<String>, key: &str| value.as_ref().map(|_| required(value, key, "")).transpose();
        config.datacenter = text(&b.datacenter, "datacenter")?;
        config.namespace = text(&b.consul_namespace, "consul_namespace")?;
        config.partition = text(&b.partition, "partition")?;
        config.token = secret_source(cx, "token", "the ACL token", &b.token_file, &b.token_env)?;
        if let Some(health) = list(&b.health, "health")? {
            config.health = health
                .iter()
                .map(|h| {
                    CheckStatus::parse(h).ok_or_else(|| {
                        BlockError::new(
                            "health",
                            format!("{h:?} is not a check status; use passing, warning or critical"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        config.services = list(&b.services, "services")?.unwrap_or_default();
        config.tags = list(&b.tags, "tags")?.unwrap_or_default();
        config.wait = duration_in(&b.wait, "wait", Duration::from_secs(1)..=MAX_WAIT, config.wait)?;
        if let Some(max) = b.max_connections {
            match usize::try_from(max) {
                Ok(n) if (MIN_MAX_CONNECTIONS..=10_000).contains(&n) => config.max_connections = n,
                _ => {
                    return Err(BlockError::new(
                        "max_connections",
                        format!(
                            "must be from {MIN_MAX_CONNECTIONS} to 10000, and stay under Consul's `limits.http_max_conns_per_client` (200 by default)"
                        ),
                    ));
                }
            }
        }
        Ok(config)
    }

    fn default_hosts(_: &ConsulConfig) -> &'static str {
        // Consul's own DNS name for a service.
        "{service}.service.consul"
    }

    load_and_watch!();
}
