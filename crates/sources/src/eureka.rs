//! The `eureka` registry: applications from a Eureka server's REST API.
//!
//! A thin typed client over `reqwest`: the one Rust client crate (`eureka-client`) is
//! from 2018 and built on reqwest 0.9.
//!
//! Changes are followed the way Eureka's own clients follow them: one full fetch of
//! `GET {address}/apps`, then every `refresh` (default [`DEFAULT_REFRESH`]) a fetch of
//! `GET {address}/apps/delta` — the instances the server changed in its last few
//! minutes, each with an `actionType` of `ADDED`, `MODIFIED` or `DELETED` — applied to
//! the local copy. After each delta the local copy's reconcile hash (the count of
//! instances per status, by status name: `DOWN_1_UP_3_`) is compared with the delta's
//! `apps__hashcode`, the same hash of the server's registry; when they differ something
//! was missed and the next request is a full fetch. After any failure the next request
//! is a full fetch too, since the delta may not reach back far enough.
//!
//! With nothing changing this costs one small request per `refresh`: 1 request/s by
//! default, whatever the size of the estate (a delta with no changes is a few dozen
//! bytes). Eureka's Java client polls every 30 s; the shorter default is what keeps
//! propagation near one second.
//!
//! Mapping: one service per application, named as Eureka names it (upper case; hosts
//! are lowercased downstream); one instance per `instanceId` (or `hostName` on servers
//! too old to have one); the address is `ipAddr` or `hostName` (`instance_address`);
//! an enabled `port` is the port `http`, an enabled `securePort` the port `https`;
//! `metadata` becomes labels; the instance is healthy when its `status` is in `health`
//! (default `UP`). Eureka's JSON may give a list of one as the item itself; both forms
//! are read.

mod config;
pub use config::EurekaBlock;
mod parse;
mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use registry_sync_catalog::RegistrySnapshot;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::SourceEvent;
use crate::secret::{Credentials, SecretError};
use crate::state::Services;

/// How often the delta is fetched by default.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which of an instance's addresses the mesh dials.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InstanceAddress {
    /// `ipAddr`.
    #[default]
    Ip,
    /// `hostName`.
    Hostname,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EurekaConfig {
    /// The service URL, e.g. `http://127.0.0.1:8761/eureka`.
    pub address: String,
    pub credentials: Option<Credentials>,
    pub ca_file: Option<PathBuf>,
    /// Statuses that count as healthy, upper case.
    pub health: Vec<String>,
    pub refresh: Duration,
    pub instance_address: InstanceAddress,
}

impl EurekaConfig {
    pub fn new(address: impl Into<String>) -> EurekaConfig {
        EurekaConfig {
            address: address.into(),
            credentials: None,
            ca_file: None,
            health: vec!["UP".to_string()],
            refresh: DEFAULT_REFRESH,
            instance_address: InstanceAddress::Ip,
        }
    }
}

/// Why Eureka could not be read. Each names the registry and what to check; none
/// carries the password.
#[derive(Debug, thiserror::Error)]
pub enum EurekaError {
    #[error("registry {registry:?}: {error}; check `password_file` or `password_env`")]
    Password { registry: String, error: SecretError },
    #[error("registry {registry:?}: cannot use the CA file {}: {error}; check `ca_file`", path.display())]
    CaFile {
        registry: String,
        path: PathBuf,
        error: String,
    },
    #[error(
        "registry {registry:?}: cannot reach Eureka at {address} ({action}): {error}; check `address` (the service URL, usually ending in /eureka) and that Eureka is running"
    )]
    Unreachable {
        registry: String,
        address: String,
        action: String,
        error: String,
    },
    #[error(
        "registry {registry:?}: Eureka at {address} answered {action} with more than {limit_mib} MiB; refused, since an answer is held in memory whole: check `address` (a proxy's error page or a broken server), or split the registry"
    )]
    TooLarge {
        registry: String,
        address: String,
        action: String,
        limit_mib: usize,
    },
    #[error("registry {registry:?}: Eureka at {address} answered {action} with {status}: {body}{hint}")]
    Status {
        registry: String,
        address: String,
        action: String,
        status: u16,
        body: String,
        hint: &'static str,
    },
    #[error(
        "registry {registry:?}: Eureka at {address} answered {action} with something that is not its JSON: {error}"
    )]
    Json {
        registry: String,
        address: String,
        action: String,
        error: String,
    },
}

impl crate::Classified for EurekaError {
    fn reason(&self) -> crate::FailureReason {
        use crate::FailureReason;
        match self {
            EurekaError::Password { .. } => FailureReason::Credentials,
            EurekaError::CaFile { .. } => FailureReason::Configuration,
            EurekaError::Unreachable { .. } => FailureReason::Unreachable,
            EurekaError::Status { status: 401, .. } => FailureReason::Credentials,
            EurekaError::Status { status: 403, .. } => FailureReason::Denied,
            EurekaError::Status { status: 429, .. } => FailureReason::Throttled,
            EurekaError::TooLarge { .. } | EurekaError::Status { .. } | EurekaError::Json { .. } => {
                FailureReason::BadAnswer
            }
        }
    }
}

/// One Eureka server (or cluster behind one URL) serving as one registry.
#[derive(Clone, Debug)]
pub struct EurekaSource {
    registry: String,
    config: EurekaConfig,
}

impl EurekaSource {
    pub fn new(registry: impl Into<String>, config: EurekaConfig) -> Self {
        EurekaSource {
            registry: registry.into(),
            config,
        }
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// One full fetch, for `once`, `plan`, `render` and `check`.
    pub async fn load(&self) -> Result<RegistrySnapshot, EurekaError> {
        let client = watch::Client::new(&self.registry, &self.config)?;
        let full = client.fetch("/apps", "the full registry").await?;
        let mut state = Services::new(&self.registry);
        let mut listing: BTreeMap<String, BTreeMap<String, crate::state::Item>> = BTreeMap::new();
        for instance in full.instances {
            listing
                .entry(instance.app)
                .or_default()
                .insert(instance.id, instance.item);
        }
        state.replace_all(listing, BTreeMap::new());
        Ok(state.snapshot())
    }

    /// Emits the current state, then a snapshot after each delta that changed
    /// something, until `cancel` fires or the receiver is dropped.
    pub async fn watch(self, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
        watch::run(self, tx, cancel).await;
    }
}
