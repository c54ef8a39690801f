//! The keys of the registries that push (`etcd`, `zookeeper`), validated per kind.
//!
//! Every kind accepts only its own keys: a key of another kind (a `prefix` on a
//! ZooKeeper registry, a `path` on etcd) is an error that names it, because it means
//! the operator expects behaviour this kind does not have.

// A build without these registries parses only enough to refuse them.
#![cfg_attr(
    not(any(feature = "etcd", feature = "zookeeper")),
    allow(dead_code, unused_imports)
)]

use std::path::Path;
#[cfg(any(
    feature = "zookeeper",
    feature = "dns",
    feature = "consul",
    feature = "eureka",
    feature = "cloudmap",
    feature = "nacos"
))]
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{ConfigError, RawRegistry, RegistryKind, SourceConfig};

mod cloudmap;
mod http;
mod nacos;

/// `address`: one string (a ZooKeeper connect string, or etcd URLs separated by
/// commas) or a list.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawAddress {
    One(String),
    Many(Vec<String>),
}

impl RawAddress {
    fn entries(&self) -> Vec<String> {
        let items: Vec<&str> = match self {
            RawAddress::One(one) => one.split(',').collect(),
            RawAddress::Many(many) => many.iter().flat_map(|m| m.split(',')).collect(),
        };
        items
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

const FILE_KEYS: &[&str] = &["path"];
const ETCD_KEYS: &[&str] = &[
    "address",
    "prefix",
    "value_format",
    "address_field",
    "port_field",
    "metadata_field",
    "healthy_field",
    "weight_field",
    "username",
    "password_file",
    "password_env",
    "ca_file",
    "cert_file",
    "key_file",
];
const DNS_KEYS: &[&str] = &["nameserver", "names", "min_refresh", "max_refresh"];
const ZOOKEEPER_KEYS: &[&str] = &[
    "address",
    "layout",
    "root",
    "chroot",
    "username",
    "password_file",
    "password_env",
    "session_timeout",
];

/// Checks a registry, and the keys given for it, against its kind.
pub(super) struct Check<'a> {
    pub(super) raw: &'a RawRegistry,
    pub(super) base: &'a Path,
    pub(super) invalid: &'a dyn Fn(u64, String, String) -> ConfigError,
    pub(super) index: usize,
}

impl Check<'_> {
    fn key(&self, field: &str) -> String {
        format!("registries[{}].{field}", self.index)
    }

    fn error(&self, line: u64, field: &str, message: impl Into<String>) -> ConfigError {
        (self.invalid)(line, self.key(field), message.into())
    }

    fn kind_line(&self) -> u64 {
        self.raw.kind.referenced.line()
    }

    /// Every kind-specific key that is set, with its line.
    fn set_keys(&self) -> Vec<(&'static str, u64)> {
        let r = self.raw;
        let line = |s: &Option<Spanned<String>>| s.as_ref().map(|s| s.referenced.line());
        [
            ("path", line(&r.path)),
            ("address", r.address.as_ref().map(|a| a.referenced.line())),
            ("prefix", line(&r.prefix)),
            ("value_format", line(&r.value_format)),
            ("address_field", line(&r.address_field)),
            ("port_field", line(&r.port_field)),
            ("metadata_field", line(&r.metadata_field)),
            ("healthy_field", line(&r.healthy_field)),
            ("weight_field", line(&r.weight_field)),
            ("username", line(&r.username)),
            ("password_file", line(&r.password_file)),
            ("password_env", line(&r.password_env)),
            ("ca_file", line(&r.ca_file)),
            ("cert_file", line(&r.cert_file)),
            ("key_file", line(&r.key_file)),
            ("layout", line(&r.layout)),
            ("root", line(&r.root)),
            ("chroot", line(&r.chroot)),
            ("session_timeout", line(&r.session_timeout)),
            ("nameserver", line(&r.nameserver)),
            ("names", r.names.as_ref().map(|n| n.referenced.line())),
            ("min_refresh", line(&r.min_refresh)),
            ("max_refresh", line(&r.max_refresh)),
            ("datacenter", line(&r.datacenter)),
            ("token_file", line(&r.token_file)),
            ("token_env", line(&r.token_env)),
            ("consul_namespace", line(&r.consul_namespace)),
            ("partition", line(&r.partition)),
            ("health", r.health.as_ref().map(|n| n.referenced.line())),
            ("services", r.services.as_ref().map(|n| n.referenced.line())),
            ("tags", r.tags.as_ref().map(|n| n.referenced.line())),
            ("wait", line(&r.wait)),
            (
                "max_connections",
                r.max_connections.as_ref().map(|n| n.referenced.line()),
            ),
            ("refresh", line(&r.refresh)),
            ("instance_address", line(&r.instance_address)),
            ("region", line(&r.region)),
            ("namespaces", r.namespaces.as_ref().map(|n| n.referenced.line())),
            ("endpoint", line(&r.endpoint)),
            ("interval", line(&r.interval)),
            ("namespace_id", line(&r.namespace_id)),
            ("groups", r.groups.as_ref().map(|n| n.referenced.line())),
        ]
        .into_iter()
        .filter_map(|(key, line)| line.map(|l| (key, l)))
        .collect()
    }

    /// Refuses keys that belong to other kinds.
    pub(super) fn only_own_keys(&self, kind: RegistryKind) -> Result<(), ConfigError> {
        let own = match kind {
            RegistryKind::File => FILE_KEYS,
            RegistryKind::Etcd => ETCD_KEYS,
            RegistryKind::Zookeeper => ZOOKEEPER_KEYS,
            RegistryKind::Dns => DNS_KEYS,
            RegistryKind::Consul => http::CONSUL_KEYS,
            RegistryKind::Eureka => http::EUREKA_KEYS,
            RegistryKind::CloudMap => cloudmap::CLOUDMAP_KEYS,
            RegistryKind::Nacos => nacos::NACOS_KEYS,
        };
        match self.set_keys().into_iter().find(|(key, _)| !own.contains(key)) {
            Some((key, line)) => Err(self.error(
                line,
                key,
                format!(
                    "does not apply to a registry of kind `{kind}`; its keys are {}",
                    own.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    fn required<'s>(
        &self,
        value: &'s Option<Spanned<String>>,
        field: &str,
        what: &str,
    ) -> Result<&'s str, ConfigError> {
        match value {
            None => Err(self.error(self.kind_line(), field, format!("is required: {what}"))),
            Some(v) if v.value.trim().is_empty() => {
                Err(self.error(v.referenced.line(), field, "must not be empty"))
            }
            Some(v) => Ok(v.value.trim()),
        }
    }

    fn path(&self, value: &Spanned<String>) -> std::path::PathBuf {
        self.base.join(value.value.trim())
    }

    /// `username` with exactly one of `password_file` / `password_env`.
    #[cfg(any(
        feature = "etcd",
        feature = "zookeeper",
        feature = "eureka",
        feature = "nacos"
    ))]
    fn credentials(&self) -> Result<Option<registry_sync_sources::secret::Credentials>, ConfigError> {
        use registry_sync_sources::secret::{Credentials, SecretSource};
        let r = self.raw;
        let password = match (&r.password_file, &r.password_env) {
            (Some(_), Some(env)) => {
                return Err(self.error(
                    env.referenced.line(),
                    "password_env",
                    "give the password in `password_file` or `password_env`, not both",
                ));
            }
            (Some(file), None) => Some(SecretSource::File(self.path(file))),
            (None, Some(_)) => Some(SecretSource::Env(
                self.required(&r.password_env, "password_env", "")?.to_string(),
            )),
            (None, None) => None,
        };
        match (&r.username, password) {
            (Some(user), Some(password)) => Ok(Some(Credentials {
                username: self.required(&Some(user.clone()), "username", "")?.to_string(),
                password,
            })),
            (Some(user), None) => Err(self.error(
                user.referenced.line(),
                "username",
                "needs a password: set `password_file` (a file holding it) or `password_env` (an environment variable)",
            )),
            (None, Some(_)) => Err(self.error(
                self.kind_line(),
                "username",
                "is required when a password is given",
            )),
            (None, None) => Ok(None),
        }
    }

    fn address(&self, what: &str) -> Result<Vec<String>, ConfigError> {
        let Some(address) = &self.raw.address else {
            return Err(self.error(self.kind_line(), "address", format!("is required: {what}")));
        };
        let entries = address.value.entries();
        if entries.is_empty() {
            return Err(self.error(address.referenced.line(), "address", "must not be empty"));
        }
        // Not echoed: the value holds a password.
        if entries.iter().any(|e| has_userinfo(e)) {
            return Err(self.error(
                address.referenced.line(),
                "address",
                "carries credentials (`user:password@` before the host); they would end up in logs \
                 and errors, so registry-sync refuses them: remove them and set the registry's \
                 credential keys instead (`username` with `password_file` or `password_env`, or \
                 its token keys)",
            ));
        }
        Ok(entries)
    }

    #[cfg(feature = "etcd")]
    pub(super) fn etcd(&self) -> Result<SourceConfig, ConfigError> {
        use registry_sync_sources::etcd::{EtcdConfig, FieldPath, JsonFields, TlsFiles, ValueFormat};
        let r = self.raw;
        let endpoints = self.address("the etcd endpoints, e.g. [\"http://127.0.0.1:2379\"]")?;
        let address_line = r.address.as_ref().map_or(0, |a| a.referenced.line());
        if let Some(bad) = endpoints
            .iter()
            .find(|e| !(e.starts_with("http://") || e.starts_with("https://")))
        {
            return Err(self.error(
                address_line,
                "address",
                format!("{bad:?} must be a URL starting with http:// or https://"),
            ));
        }
        let https = endpoints.iter().filter(|e| e.starts_with("https://")).count();
        if https != 0 && https != endpoints.len() {
            return Err(self.error(
                address_line,
                "address",
                "use https:// for every endpoint or for none",
            ));
        }
        let prefix = self.required(
            &r.prefix,
            "prefix",
            "the key prefix the services live under, e.g. /services",
        )?;

        let format = match r.value_format.as_ref().map(|v| (v, v.value.trim())) {
            None | Some((_, "naming-endpoints")) => {
                if let Some((key, line)) = self.set_keys().into_iter().find(|(k, _)| k.ends_with("_field")) {
                    return Err(self.error(line, key, "applies only with `value_format: json`"));
                }
                ValueFormat::NamingEndpoints
            }
            Some((_, "json")) => {
                let mut fields = JsonFields::default();
                for (raw, field, slot) in [
                    (&r.address_field, "address_field", &mut fields.address),
                    (&r.port_field, "port_field", &mut fields.port),
                    (&r.metadata_field, "metadata_field", &mut fields.metadata),
                    (&r.healthy_field, "healthy_field", &mut fields.healthy),
                    (&r.weight_field, "weight_field", &mut fields.weight),
                ] {
                    if let Some(raw) = raw {
                        *slot = FieldPath::parse(raw.value.trim())
                            .map_err(|message| self.error(raw.referenced.line(), field, message))?;
                    }
                }
                ValueFormat::Json(fields)
            }
            Some((v, other)) => {
                return Err(self.error(
                    v.referenced.line(),
                    "value_format",
                    format!("{other:?} is not a value format; use naming-endpoints (the default) or json"),
                ));
            }
        };

        let tls = match (&r.ca_file, &r.cert_file, &r.key_file) {
            (None, None, None) if https > 0 => {
                return Err(self.error(
                    address_line,
                    "ca_file",
                    "https:// endpoints need `ca_file`, the CA certificate (PEM) that signed etcd's certificates",
                ));
            }
            (None, None, None) => None,
            (ca, cert, key) => {
                let line = [ca, cert, key]
                    .into_iter()
                    .flatten()
                    .next()
                    .map_or(0, |v| v.referenced.line());
                if https == 0 {
                    return Err(self.error(
                        line,
                        "ca_file",
                        "TLS files need https:// endpoints in `address`",
                    ));
                }
                let Some(ca) = ca else {
                    return Err(self.error(line, "ca_file", "is required with `cert_file` and `key_file`"));
                };
                let client = match (cert, key) {
                    (Some(cert), Some(key)) => Some((self.path(cert), self.path(key))),
                    (None, None) => None,
                    (Some(_), None) => {
                        return Err(self.error(line, "key_file", "is required with `cert_file`"));
                    }
                    (None, Some(_)) => {
                        return Err(self.error(line, "cert_file", "is required with `key_file`"));
                    }
                };
                Some(TlsFiles {
                    ca_file: self.path(ca),
                    client,
                })
            }
        };
        Ok(SourceConfig::Etcd(Box::new(EtcdConfig {
            endpoints,
            prefix: prefix.to_string(),
            credentials: self.credentials()?,
            tls,
            format,
        })))
    }

    #[cfg(feature = "zookeeper")]
    pub(super) fn zookeeper(&self) -> Result<SourceConfig, ConfigError> {
        use registry_sync_sources::zookeeper::{DEFAULT_SESSION_TIMEOUT, ZkLayout, ZookeeperConfig};
        let r = self.raw;
        let address =
            self.address("the ZooKeeper connect string, e.g. \"127.0.0.1:2181\" or \"h1:2181,h2:2181\"")?;
        let address_line = r.address.as_ref().map_or(0, |a| a.referenced.line());
        if let Some(bad) = address.iter().find(|a| a.contains('/') || !a.contains(':')) {
            return Err(self.error(
                address_line,
                "address",
                format!("{bad:?} must be host:port (put a chroot path in `chroot`)"),
            ));
        }
        let layout = match self.required(&r.layout, "layout", "dubbo or curator")? {
            "dubbo" => ZkLayout::Dubbo,
            "curator" => ZkLayout::Curator,
            other => {
                let line = r.layout.as_ref().map_or(0, |l| l.referenced.line());
                return Err(self.error(
                    line,
                    "layout",
                    format!("{other:?} is not a layout; use dubbo or curator"),
                ));
            }
        };
        let absolute =
            |value: &Option<Spanned<String>>, field: &str| -> Result<Option<String>, ConfigError> {
                match value {
                    None => Ok(None),
                    Some(v) if !v.value.trim().starts_with('/') => Err(self.error(
                        v.referenced.line(),
                        field,
                        format!("{:?} must be an absolute path starting with /", v.value),
                    )),
                    Some(v) => Ok(Some(v.value.trim().to_string())),
                }
            };
        let root = absolute(&r.root, "root")?.unwrap_or_else(|| layout.default_root().to_string());
        let chroot = absolute(&r.chroot, "chroot")?.filter(|c| c != "/");
        let session_timeout = match &r.session_timeout {
            None => DEFAULT_SESSION_TIMEOUT,
            Some(v) => parse_duration(&v.value)
                .filter(|d| (Duration::from_secs(1)..=Duration::from_secs(300)).contains(d))
                .ok_or_else(|| {
                    self.error(
                        v.referenced.line(),
                        "session_timeout",
                        format!(
                            "{:?} must be a duration from 1s to 300s, e.g. 10s or 2500ms",
                            v.value
                        ),
                    )
                })?,
        };
        Ok(SourceConfig::Zookeeper(Box::new(ZookeeperConfig {
            address: address.join(","),
            chroot,
            layout,
            root,
            credentials: self.credentials()?,
            session_timeout,
        })))
    }

    #[cfg(feature = "dns")]
    pub(super) fn dns(&self) -> Result<SourceConfig, ConfigError> {
        use registry_sync_sources::dns::{DEFAULT_MAX_REFRESH, DEFAULT_MIN_REFRESH, DnsConfig, SrvName};
        let r = self.raw;
        let nameserver = match &r.nameserver {
            None => None,
            Some(v) => {
                let text = v.value.trim();
                let parsed = text
                    .parse::<std::net::SocketAddr>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()));
                Some(parsed.map_err(|_| {
                    self.error(
                        v.referenced.line(),
                        "nameserver",
                        format!("{text:?} must be an IP address with an optional port, e.g. \"10.0.0.53\" or \"127.0.0.1:5353\""),
                    )
                })?)
            }
        };
        let Some(raw_names) = &r.names else {
            return Err(self.error(
                self.kind_line(),
                "names",
                "is required: the SRV names to follow, e.g. [_http._tcp.billing.example]",
            ));
        };
        let line = raw_names.referenced.line();
        if raw_names.value.is_empty() {
            return Err(self.error(line, "names", "must list at least one SRV name"));
        }
        let mut names: Vec<SrvName> = Vec::new();
        for raw in &raw_names.value {
            let name = SrvName::parse(raw).map_err(|message| self.error(line, "names", message))?;
            if let Some(other) = names.iter().find(|n| n.service() == name.service()) {
                return Err(self.error(
                    line,
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
        let bounds = std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(86_400);
        let duration = |value: &Option<Spanned<String>>, field: &str, default: Duration| match value {
            None => Ok(default),
            Some(v) => parse_duration(&v.value)
                .filter(|d| bounds.contains(d))
                .ok_or_else(|| {
                    self.error(
                        v.referenced.line(),
                        field,
                        format!(
                            "{:?} must be a duration from 100ms to 1440m, e.g. 5s or 2m",
                            v.value
                        ),
                    )
                }),
        };
        let min_refresh = duration(&r.min_refresh, "min_refresh", DEFAULT_MIN_REFRESH)?;
        let max_refresh = duration(&r.max_refresh, "max_refresh", DEFAULT_MAX_REFRESH)?;
        if min_refresh > max_refresh {
            let line = r
                .min_refresh
                .as_ref()
                .map_or(self.kind_line(), |v| v.referenced.line());
            return Err(self.error(
                line,
                "min_refresh",
                format!("{min_refresh:?} is longer than `max_refresh` ({max_refresh:?})"),
            ));
        }
        Ok(SourceConfig::Dns(Box::new(DnsConfig {
            nameserver,
            names,
            min_refresh,
            max_refresh,
        })))
    }

    /// The default host template where it depends on more than the kind.
    pub(super) fn default_hosts(&self, kind: RegistryKind) -> &'static str {
        match kind {
            RegistryKind::File => "{service}.{namespace}.{registry}",
            RegistryKind::Etcd => "{service}.{registry}",
            // A Dubbo interface name is already a dotted, unique name.
            RegistryKind::Zookeeper
                if self
                    .raw
                    .layout
                    .as_ref()
                    .is_some_and(|l| l.value.trim() == "dubbo") =>
            {
                "{service}"
            }
            RegistryKind::Zookeeper => "{service}.{registry}",
            // The service is the SRV name's domain, already a DNS name.
            RegistryKind::Dns => "{service}",
            // Consul's own DNS name for a service.
            RegistryKind::Consul => "{service}.service.consul",
            RegistryKind::Eureka => "{service}.eureka",
            // The name Cloud Map's own DNS gives a service of a DNS namespace.
            RegistryKind::CloudMap => "{service}.{namespace}",
            // `{namespace}` is the Nacos group, empty (and left out) for DEFAULT_GROUP.
            RegistryKind::Nacos => "{service}.{namespace}.nacos",
        }
    }

    /// The error for a kind this build leaves out.
    #[allow(dead_code)]
    pub(super) fn not_built(&self, kind: RegistryKind) -> ConfigError {
        self.error(
            self.kind_line(),
            "kind",
            format!(
                "this build of registry-sync does not include the `{kind}` registry (Cargo feature `{kind}`)"
            ),
        )
    }
}

/// `user[:password]@` before the host of a URL or `host:port`.
pub(crate) fn has_userinfo(address: &str) -> bool {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.contains('@')
}

/// `10s`, `2500ms`, `1m`.
pub(crate) fn parse_duration(text: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = number.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        _ => None,
    }
}

#[cfg(all(test, feature = "etcd", feature = "zookeeper"))]
#[path = "registries_tests.rs"]
mod tests;

#[cfg(all(test, feature = "dns"))]
#[path = "dns_tests.rs"]
mod dns_tests;

#[cfg(all(test, feature = "cloudmap"))]
#[path = "cloudmap_tests.rs"]
mod cloudmap_tests;
