//! The keys of the `cloudmap` registry (AWS Cloud Map).

// A build without this registry parses only enough to refuse it.
#![cfg_attr(not(feature = "cloudmap"), allow(dead_code, unused_imports))]

use super::{Check, ConfigError, SourceConfig};

pub(super) const CLOUDMAP_KEYS: &[&str] = &["region", "namespaces", "services", "endpoint", "interval"];

impl Check<'_> {
    #[cfg(feature = "cloudmap")]
    pub(in crate::config) fn cloudmap(&self) -> Result<SourceConfig, ConfigError> {
        use registry_sync_sources::cloudmap::CloudMapConfig;
        let r = self.raw;
        let region = match &r.region {
            None => None,
            Some(value) => {
                let region = value.value.trim();
                let valid = !region.is_empty()
                    && region.len() <= 32
                    && region
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !region.starts_with('-')
                    && !region.ends_with('-');
                if !valid {
                    return Err(self.error(
                        value.referenced.line(),
                        "region",
                        format!("{region:?} is not an AWS region name such as us-east-1"),
                    ));
                }
                Some(region.to_string())
            }
        };
        let mut config = CloudMapConfig::new(region);
        config.namespaces = self.list(&r.namespaces, "namespaces")?.unwrap_or_default();
        config.services = self.list(&r.services, "services")?.unwrap_or_default();
        if let Some(value) = &r.endpoint {
            let endpoint = value.value.trim().trim_end_matches('/');
            let rest = endpoint
                .strip_prefix("https://")
                .or_else(|| endpoint.strip_prefix("http://"))
                .unwrap_or_default();
            if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
                return Err(self.error(
                    value.referenced.line(),
                    "endpoint",
                    format!(
                        "{endpoint:?} must be a URL of a host with an optional port, starting with http:// or https://, e.g. \"http://127.0.0.1:5000\""
                    ),
                ));
            }
            config.endpoint = Some(endpoint.to_string());
        }
        config.interval = self.duration_in(
            &r.interval,
            "interval",
            std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(3600),
            config.interval,
        )?;
        Ok(SourceConfig::CloudMap(Box::new(config)))
    }
}
