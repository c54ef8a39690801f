//! The `consul` registry: services from Consul's catalog, health from its checks.
//!
//! A thin typed client over hyper's pooled client (`connections.rs` says why not
//! reqwest), not a client crate: none keeps what the mesh needs from Consul — service
//! `Meta`, `Weights`, `TaggedAddresses`, Enterprise namespaces and partitions, and the
//! checks' health per instance.
//!
//! Changes are followed with Consul's **blocking queries**: one on
//! `/v1/catalog/services` (which services exist, with their tags) and one per watched
//! service on `/v1/health/service/<name>` (its instances with their checks), each in
//! its own task, started and stopped as services appear in and leave the catalog. The
//! `X-Consul-Index` of each answer is handled as Consul's documentation asks: an index
//! that goes backwards (a snapshot restore, a new cluster) resets the query to index 0
//! — a full, immediate answer; an index of 0 is taken as 1, so a query never spins; and
//! a query that returns without a change waits out a floor of [`QUERY_FLOOR`] before it
//! asks again. A change is never delayed: the answer that carries it is applied at
//! once, and only a second change within the floor waits.
//!
//! With nothing changing, each query costs one request per `wait` (default 5 minutes):
//! `(1 + watched services) / wait` requests per second. Consul limits open HTTP
//! connections per client address (`limits.http_max_conns_per_client`, 200 by
//! default); each watched service holds one, so estates with more services need that
//! limit raised, or a `services` allow-list.
//!
//! Mapping: one instance per health entry, id `<node>/<service id>`; the address is the
//! service's, else the node's; one port named `default` (a Consul service instance has
//! one port); `Meta` and `key=value` / `key|value` tags become labels (meta wins; a
//! `protocol` key names the port's protocol downstream); the instance is healthy when
//! the worst of its node and service checks is in `health` (default `passing`);
//! `Weights.Passing` (or `Weights.Warning` for an instance in warning) is its weight.
//! Connect proxies and gateways (`Kind` set) are not services of the mesh and are left
//! out; a service made only of them is not published at all.

mod config;
pub use config::ConsulBlock;
mod client;
mod connections;
mod blocking;
mod overflow;
mod parse;
mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use registry_sync_catalog::RegistrySnapshot;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::SourceEvent;
use crate::secret::{SecretError, SecretSource};
use crate::state::Services;
use client::Client;
pub use parse::PORT_NAME;

/// Well under Consul's default per-client limit of 200, leaving room for other clients
/// behind the same address (a node-local agent shared by a pod's neighbours).
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Fewer leaves no room for per-service watches beside the shared queries and reads.
pub const MIN_MAX_CONNECTIONS: usize = 8;

/// How long a blocking query may be held by default, Consul's own default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Consul caps `wait` at 10 minutes.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// The shortest time between two queries of one kind that did not follow a change.
pub const QUERY_FLOOR: Duration = Duration::from_millis(50);
/// At most this many first (non-blocking) health queries at once, so a large catalog
/// does not open hundreds of connections in the same instant.
const LIST_CONCURRENCY: usize = 32;

/// The aggregate status of an instance's checks, worst first wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckStatus {
    Passing,
    Warning,
    Critical,
}

impl CheckStatus {
    pub fn parse(text: &str) -> Option<CheckStatus> {
        match text.trim().to_ascii_lowercase().as_str() {
            "passing" => Some(CheckStatus::Passing),
            "warning" => Some(CheckStatus::Warning),
            "critical" => Some(CheckStatus::Critical),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsulConfig {
    /// `http://host:port` or `https://host:port` of a Consul agent or server.
    pub address: String,
    pub datacenter: Option<String>,
    /// The ACL token, sent as `X-Consul-Token`.
    pub token: Option<SecretSource>,
    /// Consul Enterprise namespace (`ns`) and admin partition (`partition`).
    pub namespace: Option<String>,
    pub partition: Option<String>,
    /// The CA certificate (PEM) that signed Consul's certificate, for `https://`.
    pub ca_file: Option<PathBuf>,
    /// The check statuses that count as healthy.
    pub health: Vec<CheckStatus>,
    /// Only these services, when not empty.
    pub services: Vec<String>,
    /// Only instances carrying every one of these tags.
    pub tags: Vec<String>,
    pub wait: Duration,
    /// The most HTTP connections registry-sync holds open to Consul. Consul refuses a
    /// client past `limits.http_max_conns_per_client` (200 by default); see the
    /// overflow module for how services past the budget are followed.
    pub max_connections: usize,
}

impl ConsulConfig {
    /// A configuration with the defaults: passing instances of every service.
    pub fn new(address: impl Into<String>) -> ConsulConfig {
        ConsulConfig {
            address: address.into(),
            datacenter: None,
            token: None,
            namespace: None,
            partition: None,
            ca_file: None,
            health: vec![CheckStatus::Passing],
            services: Vec::new(),
            tags: Vec::new(),
            wait: DEFAULT_WAIT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    /// Whether the catalog's service (with the union of its instances' tags) is watched.
    fn selects(&self, service: &str, tags: &[String]) -> bool {
        (self.services.is_empty() || self.services.iter().any(|s| s == service))
            && self.tags.iter().all(|t| tags.contains(t))
    }
}

/// Why Consul could not be read. Each names the registry and what to check; none
/// carries the token.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error(transparent)]
    Internal(#[from] crate::ReadTaskError),
    #[error("registry {registry:?}: {error}; check `token_file` or `token_env`")]
    Token { registry: String, error: SecretError },
    #[error("registry {registry:?}: cannot read the CA file {}: {error}; check `ca_file`", path.display())]
    CaFile {
        registry: String,
        path: PathBuf,
        error: String,
    },
    #[error(
        "registry {registry:?}: cannot reach Consul at {address} ({action}): {error}; check `address` and that Consul is running"
    )]
    Unreachable {
        registry: String,
        address: String,
        action: String,
        error: String,
    },
    #[error(
        "registry {registry:?}: Consul at {address} answered {action} with more than {limit_mib} MiB; refused, since an answer is held in memory whole: check `address` (a proxy's error page or a broken server), or split the registry"
    )]
    TooLarge {
        registry: String,
        address: String,
        action: String,
        limit_mib: usize,
    },
    #[error(
        "registry {registry:?}: Consul at {address} refused the ACL token ({action}: {status} {body}); check `token_file` / `token_env` and that the token's policy grants service:read and node:read"
    )]
    Acl {
        registry: String,
        address: String,
        action: String,
        status: u16,
        body: String,
    },
    #[error(
        "registry {registry:?}: Consul at {address} filtered {action} by ACLs (X-Consul-Results-Filtered-By-ACLs): the token may not read everything, so the answer is incomplete and the last known state is kept; grant the token's policy service_prefix \"\" and node_prefix \"\" read, or check that it did not lose them"
    )]
    AclFiltered {
        registry: String,
        address: String,
        action: String,
    },
    #[error("registry {registry:?}: Consul at {address} answered {action} with {status}: {body}")]
    Status {
        registry: String,
        address: String,
        action: String,
        status: u16,
        body: String,
    },
    #[error(
        "registry {registry:?}: Consul at {address} answered {action} with something that is not the expected JSON: {error}"
    )]
    Json {
        registry: String,
        address: String,
        action: String,
        error: String,
    },
}

impl crate::Classified for ConsulError {
    fn reason(&self) -> crate::FailureReason {
        use crate::FailureReason;
        match self {
            ConsulError::Internal(_) => FailureReason::Internal,
            ConsulError::Token { .. } => FailureReason::Credentials,
            ConsulError::CaFile { .. } => FailureReason::Configuration,
            ConsulError::Unreachable { .. } => FailureReason::Unreachable,
            ConsulError::Acl { .. } | ConsulError::AclFiltered { .. } => FailureReason::Denied,
            ConsulError::Status { status: 401, .. } => FailureReason::Credentials,
            ConsulError::Status { status: 403, .. } => FailureReason::Denied,
            ConsulError::Status { status: 429, .. } => FailureReason::Throttled,
            ConsulError::TooLarge { .. } | ConsulError::Status { .. } | ConsulError::Json { .. } => {
                FailureReason::BadAnswer
            }
        }
    }
}

/// One Consul datacenter serving as one registry.
#[derive(Clone, Debug)]
pub struct ConsulSource {
    registry: String,
    config: ConsulConfig,
}

impl ConsulSource {
    pub fn new(registry: impl Into<String>, config: ConsulConfig) -> Self {
        ConsulSource {
            registry: registry.into(),
            config,
        }
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Reads the catalog and every selected service once, for `once`, `plan`, `render`
    /// and `check`.
    pub async fn load(&self) -> Result<RegistrySnapshot, ConsulError> {
        let client = Client::new(&self.registry, &self.config)?;
        let catalog = client.catalog(0, self.config.wait).await?;
        let names: Vec<String> = catalog
            .body
            .into_iter()
            .filter(|(name, tags)| self.config.selects(name, tags))
            .map(|(name, _)| name)
            .collect();
        let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(
            // The transport holds connections to `max_connections`; more reads would wait.
            LIST_CONCURRENCY.min(self.config.max_connections),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for name in names {
            let client = client.clone();
            let semaphore = std::sync::Arc::clone(&semaphore);
            let wait = self.config.wait;
            tasks.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                let answer = client.health(&name, 0, wait).await;
                (name, answer)
            });
        }
        let mut listing = BTreeMap::new();
        let mut unknown = Vec::new();
        let mut last_error = None;
        let watched = tasks.len();
        // A read that panicked or was cancelled is no answer about its service: the
        // listing would lack it, and `once` would delete it.
        for (name, answer) in crate::join_reads(&self.registry, "reading a service's health", tasks).await? {
            match answer {
                Ok(answer) => {
                    if let parse::Parsed::Items(items) = answer.body {
                        listing.insert(name, items);
                    }
                }
                // One service that cannot be read is unknown, not absent: the others
                // are synced, and nothing of it is deleted.
                Err(error) => {
                    tracing::warn!("{error}; its objects are kept as they are");
                    unknown.push(name);
                    last_error = Some(error);
                }
            }
        }
        if let Some(error) = last_error.filter(|_| unknown.len() == watched) {
            return Err(error);
        }
        let mut state = Services::new(&self.registry);
        state.replace_all(listing, BTreeMap::new());
        for name in &unknown {
            state.set_unknown(name, true);
        }
        Ok(state.snapshot())
    }

    /// Emits the current state, then a snapshot after each change, until `cancel` fires
    /// or the receiver is dropped. While Consul cannot be read it emits one
    /// [`SourceEvent::Failed`] and retries with backoff; the state is kept.
    pub async fn watch(self, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
        watch::run(self, tx, cancel).await;
    }
}
