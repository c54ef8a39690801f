//! The `dns` registry: services published as DNS SRV records (RFC 2782).
//!
//! Each configured name, e.g. `_http._tcp.billing.example`, is one service:
//!
//! * the service is the domain after the `_proto` label (`billing.example`), which is
//!   already a DNS name, so the default host template is just `{service}`;
//! * its one logical port is named after the SRV service label (`_http` → `http`, which
//!   gives HTTP by Istio's port-naming rule; a name with only a protocol label, such as
//!   `_tcp.billing.example`, names the port `tcp`);
//! * every SRV target of the lowest priority is looked up with A and AAAA, and each
//!   address is one instance, id `<target>:<port>/<address>`. Higher priorities are
//!   backups a DNS client only uses when all of the lowest fail; the mesh cannot express
//!   that order, so they are not published;
//! * the SRV weight is the endpoint weight, except that 0 becomes 1: RFC 2782 gives
//!   weight 0 "a very small chance" of being chosen, not none, while the mesh drops an
//!   endpoint of weight 0 altogether.
//!
//! Each name is looked up again when its records expire: after the smallest TTL of its
//! SRV and address records, kept between `min_refresh` and `max_refresh`. The lookups
//! bypass every cache, so that schedule is what the DNS server sees.
//!
//! What an answer means: `NXDOMAIN` (or an answer without SRV records) says the service
//! is gone, and it is removed; a single SRV record with target `.` says the service
//! exists but is "decidedly not available", and it is kept with no instances; `SERVFAIL`,
//! `REFUSED` or a timeout say nothing about the service, so its last known state is
//! kept and the name is tried again with backoff. A target that has no address is left
//! out with its reason; the other targets are kept.

mod config;
pub use config::DnsBlock;
mod lookup;
mod records;
mod schedule;
mod watch;

use std::net::SocketAddr;
use std::time::Duration;

use registry_sync_catalog::{Address, RegistrySnapshot};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::SourceEvent;
use crate::state::Services;

pub use schedule::refresh_after;

/// Shortest pause between two lookups of a name, whatever its TTL: a TTL of 0 (what
/// many servers give local records) must not turn into a query loop.
pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(5);
/// Longest pause between two lookups of a name: a record with a TTL of a day still
/// has its changes seen within minutes.
pub const DEFAULT_MAX_REFRESH: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// `None`: the system's resolver configuration (`/etc/resolv.conf`).
    pub nameserver: Option<SocketAddr>,
    pub names: Vec<SrvName>,
    pub min_refresh: Duration,
    pub max_refresh: Duration,
}

/// A validated SRV name, with the service and port it stands for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SrvName {
    /// Lowercase, without a trailing dot.
    name: String,
    service: String,
    port_name: String,
}

impl SrvName {
    /// Parses `_service._proto.domain` (or `_proto.domain`). The error says what is
    /// wrong and what the name should look like.
    pub fn parse(raw: &str) -> Result<SrvName, String> {
        let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        let usage = "an SRV name has the form _service._proto.domain, e.g. _http._tcp.billing.example";
        let labels: Vec<&str> = name.split('.').collect();
        let underscored = labels.iter().take_while(|l| l.starts_with('_')).count();
        if underscored == 0 || underscored > 2 {
            return Err(format!("{raw:?} is not an SRV name: {usage}"));
        }
        for label in &labels[..underscored] {
            let bare = &label[1..];
            if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(format!(
                    "{raw:?}: the label {label:?} must be '_' followed by letters, digits or '-'; {usage}"
                ));
            }
        }
        let domain = labels[underscored..].join(".");
        let service = match Address::parse(&domain) {
            Ok(Address::Hostname(host)) if !domain.is_empty() => host.into(),
            _ => {
                return Err(format!(
                    "{raw:?}: {domain:?} after the underscore labels is not a valid domain name; {usage}"
                ));
            }
        };
        Ok(SrvName {
            port_name: labels[0][1..].to_string(),
            service,
            name,
        })
    }

    /// The name as it is queried, without the trailing dot.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The service it publishes: the domain after the underscore labels.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The logical port: the first underscore label without its `_`.
    pub fn port_name(&self) -> &str {
        &self.port_name
    }
}

/// Why DNS could not be read. Each names the registry and what to check.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DnsError {
    #[error(
        "registry {registry:?}: cannot read the system's resolver configuration: {error}; set `nameserver` to the DNS server's address, e.g. \"10.0.0.53:53\""
    )]
    SystemConfig { registry: String, error: String },
    #[error(
        "registry {registry:?}: looking up {record} records of {name} at {nameserver} failed: {error}; check that the DNS server is running and reachable, and `nameserver`"
    )]
    Lookup {
        registry: String,
        nameserver: String,
        record: &'static str,
        name: String,
        error: String,
    },
}

impl crate::Classified for DnsError {
    fn reason(&self) -> crate::FailureReason {
        use crate::FailureReason;
        match self {
            DnsError::SystemConfig { .. } => FailureReason::Configuration,
            DnsError::Lookup { .. } => FailureReason::Unreachable,
        }
    }
}

/// One DNS server and a list of SRV names serving as one registry.
#[derive(Clone, Debug)]
pub struct DnsSource {
    registry: String,
    config: DnsConfig,
}

impl DnsSource {
    pub fn new(registry: impl Into<String>, config: DnsConfig) -> Self {
        DnsSource {
            registry: registry.into(),
            config,
        }
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Looks every name up once, for `once`, `plan`, `render` and `check`. Any lookup
    /// that fails fails the whole read: a view with a service missing would delete it.
    pub async fn load(&self) -> Result<RegistrySnapshot, DnsError> {
        let lookups = lookup::Lookups::new(&self.registry, self.config.nameserver)?;
        let all: Vec<usize> = (0..self.config.names.len()).collect();
        let mut state = Services::new(&self.registry);
        let mut failed = Vec::new();
        for (index, outcome) in watch::round(&lookups, &self.config.names, &all).await {
            let name = &self.config.names[index];
            match outcome {
                Ok(watch::Outcome::Found { items, .. }) => state.replace_service(name.service(), items),
                Ok(watch::Outcome::Gone { .. }) => state.remove_service(name.service()),
                // One name that times out is unknown, not gone: the others are synced.
                Err(error) => {
                    tracing::warn!("{error}; its objects are kept as they are");
                    state.set_unknown(name.service(), true);
                    failed.push(error);
                }
            }
        }
        if failed.len() == self.config.names.len()
            && let Some(error) = failed.pop()
        {
            return Err(error);
        }
        Ok(state.snapshot())
    }

    /// Emits the state once every name has been looked up, then a snapshot whenever a
    /// refresh changes something, until `cancel` fires or the receiver is dropped.
    /// While the server cannot be reached it emits one [`SourceEvent::Failed`].
    pub async fn watch(self, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
        watch::run(self, tx, cancel).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_srv_name_gives_the_domain_as_service_and_the_service_label_as_port() {
        let name = SrvName::parse("_HTTP._tcp.Billing.Example.").unwrap();
        assert_eq!(
            (name.name(), name.service(), name.port_name()),
            ("_http._tcp.billing.example", "billing.example", "http")
        );
        let bare = SrvName::parse("_tcp.billing.example").unwrap();
        assert_eq!((bare.service(), bare.port_name()), ("billing.example", "tcp"));
    }

    #[test]
    fn names_that_are_not_srv_names_are_refused_with_the_expected_form() {
        for bad in [
            "billing.example",
            "_http._tcp",
            "_http._tcp._x.billing.example",
            "_._tcp.billing.example",
            "_ht tp._tcp.billing.example",
            "_http._tcp.bad_domain.example",
            "",
        ] {
            let error = SrvName::parse(bad).expect_err(bad);
            assert!(error.contains("_service._proto.domain"), "{bad:?}: {error}");
        }
    }
}
