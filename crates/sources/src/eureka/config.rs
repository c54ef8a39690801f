//! The `eureka` registry's keys.

use std::time::Duration;

use serde::Deserialize;

use super::{EurekaConfig, EurekaError, EurekaSource, InstanceAddress};
use crate::config::{BlockError, Context, RawAddress, credentials, duration_in, list, url};
use crate::registry::{Kind, load_and_watch};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EurekaBlock {
    address: Option<RawAddress>,
    username: Option<String>,
    password_file: Option<String>,
    password_env: Option<String>,
    ca_file: Option<String>,
    health: Option<Vec<String>>,
    refresh: Option<String>,
    instance_address: Option<String>,
}

impl Kind for EurekaSource {
    type Block = EurekaBlock;
    type Config = EurekaConfig;
    type Error = EurekaError;

    fn configure(b: EurekaBlock, cx: &Context) -> Result<EurekaConfig, BlockError> {
        let (address, ca_file) = url(cx, &b.address, &b.ca_file, "\"http://127.0.0.1:8761/eureka\"")?;
        let mut config = EurekaConfig::new(address);
        config.ca_file = ca_file;
        config.credentials = credentials(cx, &b.username, &b.password_file, &b.password_env)?;
        if let Some(health) = list(&b.health, "health")? {
            config.health = health.iter().map(|h| h.to_ascii_uppercase()).collect();
        }
        config.refresh = duration_in(
            &b.refresh,
            "refresh",
            Duration::from_millis(100)..=Duration::from_secs(300),
            config.refresh,
        )?;
        if let Some(value) = &b.instance_address {
            config.instance_address = match value.trim() {
                "ip" => InstanceAddress::Ip,
                "hostname" => InstanceAddress::Hostname,
                other => {
                    return Err(BlockError::new(
                        "instance_address",
                        format!(
                            "{other:?} is not a choice; use ip (the instance's ipAddr) or hostname (its hostName)"
                        ),
                    ));
                }
            };
        }
        Ok(config)
    }

    fn default_hosts(_: &EurekaConfig) -> &'static str {
        "{service}.eureka"
    }

    load_and_watch!();
}
