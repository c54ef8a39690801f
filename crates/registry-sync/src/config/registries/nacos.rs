//! The keys of the `nacos` registry.

// A build without this registry parses only enough to refuse it.
#![cfg_attr(not(feature = "nacos"), allow(dead_code, unused_imports))]

use super::{Check, ConfigError, SourceConfig};

pub(super) const NACOS_KEYS: &[&str] = &[
    "address",
    "namespace_id",
    "groups",
    "services",
    "username",
    "password_file",
    "password_env",
    "interval",
];

/// Nacos's separator in grouped names; never part of a group or service name.
const GROUP_SEPARATOR: &str = "@@";

impl Check<'_> {
    #[cfg(feature = "nacos")]
    pub(in crate::config) fn nacos(&self) -> Result<SourceConfig, ConfigError> {
        use registry_sync_sources::nacos::NacosConfig;
        let r = self.raw;
        let addresses = self.address(
            "the HTTP address of Nacos, e.g. \"127.0.0.1:8848\" (gRPC is on its port + 1000), or a list of them",
        )?;
        let line = r.address.as_ref().map_or(0, |a| a.referenced.line());
        for address in &addresses {
            let port = address
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            let valid = matches!(port, Some((host, Ok(port))) if !host.is_empty() && !host.contains('/') && port > 0 && port <= 64_535);
            if !valid {
                return Err(self.error(
                    line,
                    "address",
                    format!(
                        "{address:?} must be host:port, the HTTP address without http://, e.g. \"127.0.0.1:8848\" (the port at most 64535: gRPC is on port + 1000)"
                    ),
                ));
            }
        }
        let mut config = NacosConfig::new(addresses[0].clone());
        config.addresses = addresses;
        if r.namespace_id.is_some() {
            config.namespace_id = self.required(&r.namespace_id, "namespace_id", "")?.to_string();
        }
        if let Some(groups) = self.list(&r.groups, "groups")? {
            let line = r.groups.as_ref().map_or(0, |g| g.referenced.line());
            if let Some(bad) = groups.iter().find(|g| g.contains(GROUP_SEPARATOR)) {
                return Err(self.error(
                    line,
                    "groups",
                    format!("{bad:?} is not a group name: Nacos group names never contain @@"),
                ));
            }
            config.groups = groups;
        }
        config.services = self.list(&r.services, "services")?.unwrap_or_default();
        config.credentials = self.credentials()?;
        config.interval = self.duration_in(
            &r.interval,
            "interval",
            std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(3600),
            config.interval,
        )?;
        Ok(SourceConfig::Nacos(Box::new(config)))
    }
}

#[cfg(all(test, feature = "nacos"))]
#[path = "nacos_tests.rs"]
mod tests;
