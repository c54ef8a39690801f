//! The `cloudmap` registry's keys (AWS Cloud Map).

use std::time::Duration;

use serde::Deserialize;

use super::{CloudMapConfig, CloudMapError, CloudMapSource};
use crate::config::{BlockError, Context, duration_in, list};
use crate::registry::{Kind, load_and_watch};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudMapBlock {
    region: Option<String>,
    namespaces: Option<Vec<String>>,
    services: Option<Vec<String>>,
    endpoint: Option<String>,
    interval: Option<String>,
}

impl Kind for CloudMapSource {
    type Block = CloudMapBlock;
    type Config = CloudMapConfig;
    type Error = CloudMapError;

    fn configure(b: CloudMapBlock, _: &Context) -> Result<CloudMapConfig, BlockError> {
        let region = match &b.region {
            None => None,
            Some(value) => {
                let region = value.trim();
                let valid = !region.is_empty()
                    && region.len() <= 32
                    && region
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !region.starts_with('-')
                    && !region.ends_with('-');
                if !valid {
                    return Err(BlockError::new(
                        "region",
                        format!("{region:?} is not an AWS region name such as us-east-1"),
                    ));
                }
                Some(region.to_string())
            }
        };
        let mut config = CloudMapConfig::new(region);
        config.namespaces = list(&b.namespaces, "namespaces")?.unwrap_or_default();
        config.services = list(&b.services, "services")?.unwrap_or_default();
        if let Some(value) = &b.endpoint {
            let endpoint = value.trim().trim_end_matches('/');
            let rest = endpoint
                .strip_prefix("https://")
                .or_else(|| endpoint.strip_prefix("http://"))
                .unwrap_or_default();
            if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
                return Err(BlockError::new(
                    "endpoint",
                    format!(
                        "{endpoint:?} must be a URL of a host with an optional port, starting with http:// or https://, e.g. \"http://127.0.0.1:5000\""
                    ),
                ));
            }
            config.endpoint = Some(endpoint.to_string());
        }
        config.interval = duration_in(
            &b.interval,
            "interval",
            Duration::from_millis(100)..=Duration::from_secs(3600),
            config.interval,
        )?;
        Ok(config)
    }

    fn default_hosts(_: &CloudMapConfig) -> &'static str {
        // The name Cloud Map's own DNS gives a service of a DNS namespace.
        "{service}.{namespace}"
    }

    load_and_watch!();
}
