//! The `nacos` registry: services of one Nacos namespace, followed by subscription push.
//!
//! Built on the official `nacos-sdk` client (2.x gRPC protocol, on the HTTP address's
//! port plus 1000). For every watched service the source **subscribes** with a
//! `NamingEventListener`; Nacos pushes a notification when an instance of it changes,
//! and the source then reads the service's instances again (`ServiceQuery`, one request)
//! rather than taking the pushed list as it is: the SDK hands each notification to its
//! listeners on a task of its own, so two quick pushes can arrive out of order, and a
//! read after a notification is always at least as new as the notification.
//!
//! Nacos pushes nothing when a *service* is created or removed, so every `interval`
//! (default [`DEFAULT_INTERVAL`]) the source lists the namespace's services: one
//! `ServiceList` request per 500 services and watched group (`get_service_list`
//! paging), or — when `groups` is not set, meaning every group — one
//! `GET /nacos/v1/ns/catalog/services` per 500 services over HTTP: Nacos's gRPC service
//! list only answers for one group at a time, and only this catalog API (Nacos 1.x/2.x
//! and rnacos) names the group of each service. A new service is subscribed and read;
//! one that is no longer listed is unsubscribed and dropped. So a new service appears
//! within `interval`, an instance change within a push.
//!
//! Lost pushes: besides the push, the SDK itself re-reads every subscribed service
//! about once a minute (its `cacheMillis` × 6) and notifies on a difference. While nothing
//! changes the source costs one list request per group per `interval`, the SDK's
//! re-reads (watched services / 60 per second) and the connection's health check
//! (one per 5 s).
//!
//! Failures: the SDK reconnects on its own, and while disconnected it answers from its
//! cache or not at all — a request can wait for the reconnect indefinitely. So every
//! request is bounded by [`REQUEST_TIMEOUT`], and a list or read that fails or times
//! out makes the source report [`SourceEvent::Failed`] once and keep its last state; it
//! retries with backoff and, once the server answers, lists and reads everything again
//! (pushes may have been missed meanwhile). A push is never taken as a failure or as a
//! deletion: the SDK's "empty push protection" is off so that a service whose last
//! instance left is seen empty, and its on-disk cache is never loaded.
//!
//! Auth: with `username` and a password (`password_file` / `password_env`, read at
//! each login) the source logs in with `POST /nacos/v1/auth/login` (form body, not the
//! URL) and sends the access token with every request, renewing it at half its
//! lifetime. It does not use the SDK's own HTTP login, which writes the password to its
//! debug log and puts it in the login URL. TLS is not supported: nacos-sdk's `tls`
//! feature drags in native TLS, which this project does not build.
//!
//! Mapping: one catalog service per Nacos service; its namespace (the host template's
//! `{namespace}`) is the group, none for `DEFAULT_GROUP`. One instance per Nacos
//! instance (id: `instanceId`, else `ip#port#cluster`), one port named `default`;
//! metadata becomes labels (a `protocol` key names the port's protocol downstream) and
//! the cluster name the label `nacos.io/cluster`; healthy when Nacos says `healthy` and
//! `enabled`; the weight is Nacos's × 100 (see [`parse::weight`]), so weight 0 keeps the
//! instance without traffic. Instances with a bad IP, a port outside 1–65535, a
//! negative weight or metadata over [`parse::MAX_METADATA_BYTES`] are skipped with a
//! reason.

mod config;
pub use config::NacosBlock;
mod client;
mod paging;
mod parse;
mod watch;

use std::time::Duration;

use registry_sync_catalog::RegistrySnapshot;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::SourceEvent;
use crate::secret::{Credentials, SecretError};
use crate::state::Services;
pub use parse::{CLUSTER_LABEL, DEFAULT_GROUP, MAX_METADATA_BYTES, PORT_NAME, WEIGHT_SCALE};

/// How often the service list is read by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// The namespace Nacos puts everything in when none is given.
pub const DEFAULT_NAMESPACE_ID: &str = "public";
/// The longest any one request may take before the registry counts as failing.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Services listed per request.
const PAGE_SIZE: i32 = 500;
/// At most this many instance reads (or subscriptions) at once, so a namespace with
/// thousands of services does not queue thousands of requests in one instant.
const READ_CONCURRENCY: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NacosConfig {
    /// `host:port` HTTP addresses of the Nacos servers of one cluster; the gRPC port
    /// is each port + 1000, as every Nacos client assumes.
    pub addresses: Vec<String>,
    /// The Nacos namespace (its id, not its display name).
    pub namespace_id: String,
    /// Only these groups; every group when empty.
    pub groups: Vec<String>,
    /// Only these services (by name, or `group@@name`), when not empty.
    pub services: Vec<String>,
    pub credentials: Option<Credentials>,
    /// How often the service list is read.
    pub interval: Duration,
}

impl NacosConfig {
    /// The defaults: every group and service of the `public` namespace.
    pub fn new(address: impl Into<String>) -> NacosConfig {
        NacosConfig {
            addresses: vec![address.into()],
            namespace_id: DEFAULT_NAMESPACE_ID.to_string(),
            groups: Vec::new(),
            services: Vec::new(),
            credentials: None,
            interval: DEFAULT_INTERVAL,
        }
    }

    fn selects(&self, service: &parse::ServiceName) -> bool {
        (self.groups.is_empty() || self.groups.contains(&service.group))
            && (self.services.is_empty()
                || self
                    .services
                    .iter()
                    .any(|s| *s == service.name || *s == service.key()))
    }
}

/// Why Nacos could not be read. Each names the registry and what to check; none
/// carries the password or the access token.
#[derive(Debug, thiserror::Error)]
pub enum NacosError {
    #[error(transparent)]
    Internal(#[from] crate::ReadTaskError),
    #[error("registry {registry:?}: {error}; check `password_file` or `password_env`")]
    Password { registry: String, error: SecretError },
    #[error(
        "registry {registry:?}: cannot connect to Nacos at {address} (gRPC on each HTTP port + 1000): {error}; check `address` (the HTTP address, e.g. 127.0.0.1:8848), that Nacos is running and that its gRPC port is reachable"
    )]
    Connect {
        registry: String,
        address: String,
        error: String,
    },
    #[error(
        "registry {registry:?}: Nacos at {address} refused the login of user {username:?}: {error}; check `username` and `password_file` / `password_env`"
    )]
    Login {
        registry: String,
        address: String,
        username: String,
        error: String,
    },
    #[error(
        "registry {registry:?}: Nacos at {address} did not answer {action} within {:?}; check that Nacos is running and reachable",
        REQUEST_TIMEOUT
    )]
    Timeout {
        registry: String,
        address: String,
        action: String,
    },
    #[error(
        "registry {registry:?}: Nacos at {address} failed {action}: {error}; check that Nacos is running, `namespace_id` and, with auth on, `username` and the password"
    )]
    Request {
        registry: String,
        address: String,
        action: String,
        error: String,
    },
}

impl crate::Classified for NacosError {
    fn reason(&self) -> crate::FailureReason {
        use crate::FailureReason;
        match self {
            NacosError::Internal(_) => FailureReason::Internal,
            NacosError::Password { .. } => FailureReason::Credentials,
            NacosError::Connect { .. } => FailureReason::Unreachable,
            NacosError::Login { .. } => FailureReason::Credentials,
            NacosError::Timeout { .. } => FailureReason::Timeout,
            NacosError::Request { .. } => FailureReason::BadAnswer,
        }
    }
}

/// One Nacos namespace serving as one registry.
#[derive(Clone, Debug)]
pub struct NacosSource {
    registry: String,
    config: NacosConfig,
}

impl NacosSource {
    pub fn new(registry: impl Into<String>, config: NacosConfig) -> Self {
        NacosSource {
            registry: registry.into(),
            config,
        }
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Lists and reads every selected service once, for `once`, `plan`, `render` and
    /// `check`. Subscribes to nothing.
    pub async fn load(&self) -> Result<RegistrySnapshot, NacosError> {
        let client = client::Client::connect(&self.registry, &self.config).await?;
        let services = client.services().await?;
        let read = watch::read(&client, services.into_iter().collect(), None).await?;
        let mut state = Services::new(&self.registry);
        watch::apply_read(&self.registry, &mut state, read);
        Ok(state.snapshot())
    }

    /// Emits the current state, then a snapshot after each change, until `cancel` fires
    /// or the receiver is dropped. While Nacos cannot be read it emits one
    /// [`SourceEvent::Failed`] and retries with backoff; the state is kept.
    pub async fn watch(self, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
        watch::run(self, tx, cancel).await;
    }
}
