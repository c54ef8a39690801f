//! The `nacos` registry's keys.

use std::time::Duration;

use serde::Deserialize;

use super::{NacosConfig, NacosError, NacosSource};
use crate::config::{BlockError, Context, RawAddress, address, credentials, duration_in, list, required};
use crate::registry::{Kind, load_and_watch};

/// Nacos's separator in grouped names; never part of a group or service name.
const GROUP_SEPARATOR: &str = "@@";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NacosBlock {
    address: Option<RawAddress>,
    namespace_id: Option<String>,
    groups: Option<Vec<String>>,
    services: Option<Vec<String>>,
    username: Option<String>,
    password_file: Option<String>,
    password_env: Option<String>,
    interval: Option<String>,
}

impl Kind for NacosSource {
    type Block = NacosBlock;
    type Config = NacosConfig;
    type Error = NacosError;

    fn configure(b: NacosBlock, cx: &Context) -> Result<NacosConfig, BlockError> {
        let addresses = address(
            &b.address,
            "the HTTP address of Nacos, e.g. \"127.0.0.1:8848\" (gRPC is on its port + 1000), or a list of them",
        )?;
        for address in &addresses {
            let port = address
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            let valid = matches!(port, Some((host, Ok(port))) if !host.is_empty() && !host.contains('/') && port > 0 && port <= 64_535);
            if !valid {
                return Err(BlockError::new(
                    "address",
                    format!(
                        "{address:?} must be host:port, the HTTP address without http://, e.g. \"127.0.0.1:8848\" (the port at most 64535: gRPC is on port + 1000)"
                    ),
                ));
            }
        }
        let mut config = NacosConfig::new(addresses[0].clone());
        config.addresses = addresses;
        if b.namespace_id.is_some() {
            config.namespace_id = required(&b.namespace_id, "namespace_id", "")?;
        }
        if let Some(groups) = list(&b.groups, "groups")? {
            if let Some(bad) = groups.iter().find(|g| g.contains(GROUP_SEPARATOR)) {
                return Err(BlockError::new(
                    "groups",
                    format!("{bad:?} is not a group name: Nacos group names never contain @@"),
                ));
            }
            config.groups = groups;
        }
        config.services = list(&b.services, "services")?.unwrap_or_default();
        config.credentials = credentials(cx, &b.username, &b.password_file, &b.password_env)?;
        config.interval = duration_in(
            &b.interval,
            "interval",
            Duration::from_secs(1)..=Duration::from_secs(3600),
            config.interval,
        )?;
        Ok(config)
    }

    fn default_hosts(_: &NacosConfig) -> &'static str {
        // `{namespace}` is the Nacos group, empty (and left out) for DEFAULT_GROUP.
        "{service}.{namespace}.nacos"
    }

    load_and_watch!();
}
