//! The keys of the registries read over HTTP (`consul`, `eureka`).

// A build without one of these registries uses only part of this.
#![cfg_attr(
    not(all(feature = "consul", feature = "eureka")),
    allow(dead_code, unused_imports)
)]

use serde_saphyr::Spanned;

use super::{Check, ConfigError, SourceConfig};

pub(super) const CONSUL_KEYS: &[&str] = &[
    "address",
    "datacenter",
    "token_file",
    "token_env",
    "consul_namespace",
    "partition",
    "ca_file",
    "health",
    "services",
    "tags",
    "wait",
    "max_connections",
];
pub(super) const EUREKA_KEYS: &[&str] = &[
    "address",
    "username",
    "password_file",
    "password_env",
    "ca_file",
    "health",
    "refresh",
    "instance_address",
];

impl Check<'_> {
    /// One `http://` or `https://` URL, and `ca_file` only with `https://`.
    #[cfg(any(feature = "consul", feature = "eureka"))]
    fn url(&self, example: &str) -> Result<(String, Option<std::path::PathBuf>), ConfigError> {
        let address = self.address(&format!("the URL of the registry, e.g. {example}"))?;
        let line = self.raw.address.as_ref().map_or(0, |a| a.referenced.line());
        let [url] = address.as_slice() else {
            return Err(self.error(line, "address", format!("give one URL, e.g. {example}")));
        };
        let https = url.starts_with("https://");
        if !(https || url.starts_with("http://")) || url.len() <= "https://".len() {
            return Err(self.error(
                line,
                "address",
                format!("{url:?} must be a URL starting with http:// or https://, e.g. {example}"),
            ));
        }
        let ca = match &self.raw.ca_file {
            Some(ca) if !https => {
                return Err(self.error(ca.referenced.line(), "ca_file", "needs an https:// `address`"));
            }
            Some(ca) => Some(self.path(ca)),
            None => None,
        };
        Ok((url.clone(), ca))
    }

    /// A list of non-empty strings, or `None` when not given.
    #[cfg(any(
        feature = "consul",
        feature = "eureka",
        feature = "cloudmap",
        feature = "nacos"
    ))]
    pub(super) fn list(
        &self,
        value: &Option<Spanned<Vec<String>>>,
        field: &str,
    ) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(value) = value else { return Ok(None) };
        if value.value.is_empty() || value.value.iter().any(|v| v.trim().is_empty()) {
            return Err(self.error(
                value.referenced.line(),
                field,
                "must list at least one value, none empty",
            ));
        }
        Ok(Some(value.value.iter().map(|v| v.trim().to_string()).collect()))
    }

    #[cfg(any(
        feature = "consul",
        feature = "eureka",
        feature = "cloudmap",
        feature = "nacos"
    ))]
    pub(super) fn duration_in(
        &self,
        value: &Option<Spanned<String>>,
        field: &str,
        bounds: std::ops::RangeInclusive<std::time::Duration>,
        default: std::time::Duration,
    ) -> Result<std::time::Duration, ConfigError> {
        let Some(value) = value else { return Ok(default) };
        super::parse_duration(&value.value)
            .filter(|d| bounds.contains(d))
            .ok_or_else(|| {
                self.error(
                    value.referenced.line(),
                    field,
                    format!(
                        "{:?} must be a duration from {:?} to {:?}, e.g. 500ms, 5s or 2m",
                        value.value,
                        bounds.start(),
                        bounds.end()
                    ),
                )
            })
    }

    #[cfg(feature = "consul")]
    pub(in crate::config) fn consul(&self) -> Result<SourceConfig, ConfigError> {
        use registry_sync_sources::consul::{CheckStatus, ConsulConfig, MAX_WAIT};
        use registry_sync_sources::secret::SecretSource;
        let r = self.raw;
        let (address, ca_file) = self.url("\"http://127.0.0.1:8500\"")?;
        let mut config = ConsulConfig::new(address);
        config.ca_file = ca_file;
        let text = |value: &Option<Spanned<String>>, field: &str| -> Result<Option<String>, ConfigError> {
            value
                .as_ref()
                .map(|_| self.required(value, field, "").map(str::to_string))
                .transpose()
        };
        config.datacenter = text(&r.datacenter, "datacenter")?;
        config.namespace = text(&r.consul_namespace, "consul_namespace")?;
        config.partition = text(&r.partition, "partition")?;
        config.token = match (&r.token_file, &r.token_env) {
            (Some(_), Some(env)) => {
                return Err(self.error(
                    env.referenced.line(),
                    "token_env",
                    "give the ACL token in `token_file` or `token_env`, not both",
                ));
            }
            (Some(file), None) => {
                self.required(&r.token_file, "token_file", "")?;
                Some(SecretSource::File(self.path(file)))
            }
            (None, Some(_)) => Some(SecretSource::Env(
                self.required(&r.token_env, "token_env", "")?.to_string(),
            )),
            (None, None) => None,
        };
        if let Some(health) = self.list(&r.health, "health")? {
            let line = r.health.as_ref().map_or(0, |h| h.referenced.line());
            config.health = health
                .iter()
                .map(|h| {
                    CheckStatus::parse(h).ok_or_else(|| {
                        self.error(
                            line,
                            "health",
                            format!("{h:?} is not a check status; use passing, warning or critical"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        config.services = self.list(&r.services, "services")?.unwrap_or_default();
        config.tags = self.list(&r.tags, "tags")?.unwrap_or_default();
        config.wait = self.duration_in(
            &r.wait,
            "wait",
            std::time::Duration::from_secs(1)..=MAX_WAIT,
            config.wait,
        )?;
        if let Some(max) = &r.max_connections {
            use registry_sync_sources::consul::MIN_MAX_CONNECTIONS;
            match usize::try_from(max.value) {
                Ok(n) if (MIN_MAX_CONNECTIONS..=10_000).contains(&n) => config.max_connections = n,
                _ => {
                    return Err(self.error(
                        max.referenced.line(),
                        "max_connections",
                        format!(
                            "must be from {MIN_MAX_CONNECTIONS} to 10000, and stay under Consul's `limits.http_max_conns_per_client` (200 by default)"
                        ),
                    ));
                }
            }
        }
        Ok(SourceConfig::Consul(Box::new(config)))
    }

    #[cfg(feature = "eureka")]
    pub(in crate::config) fn eureka(&self) -> Result<SourceConfig, ConfigError> {
        use registry_sync_sources::eureka::{EurekaConfig, InstanceAddress};
        let r = self.raw;
        let (address, ca_file) = self.url("\"http://127.0.0.1:8761/eureka\"")?;
        let mut config = EurekaConfig::new(address);
        config.ca_file = ca_file;
        config.credentials = self.credentials()?;
        if let Some(health) = self.list(&r.health, "health")? {
            config.health = health.iter().map(|h| h.to_ascii_uppercase()).collect();
        }
        config.refresh = self.duration_in(
            &r.refresh,
            "refresh",
            std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(300),
            config.refresh,
        )?;
        if let Some(value) = &r.instance_address {
            config.instance_address = match value.value.trim() {
                "ip" => InstanceAddress::Ip,
                "hostname" => InstanceAddress::Hostname,
                other => {
                    return Err(self.error(
                        value.referenced.line(),
                        "instance_address",
                        format!("{other:?} is not a choice; use ip (the instance's ipAddr) or hostname (its hostName)"),
                    ));
                }
            };
        }
        Ok(SourceConfig::Eureka(Box::new(config)))
    }
}
