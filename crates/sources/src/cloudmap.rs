//! The `cloudmap` registry: services and their healthy instances from AWS Cloud Map.
//!
//! Read through the AWS SDK (`aws-sdk-servicediscovery`) with the standard credentials
//! chain — environment, profile, web identity (EKS IRSA), container and instance roles
//! — and the region from `region` or the same chain. `endpoint` points the client at
//! another server (an emulator in tests, a private endpoint); the `data-` host prefix
//! the AWS model puts before the discovery calls is then left out.
//!
//! Cloud Map has no push and no long poll, so changes are found by polling, one round
//! every `interval` (default [`DEFAULT_INTERVAL`]): `ListNamespaces`, `ListServices`
//! per selected namespace (both paged), then per service `DiscoverInstancesRevision`
//! — one small call that says whether anything was registered, deregistered or
//! changed since the last read — and `DiscoverInstances` only for the services whose
//! revision moved. Health changes do not move the revision (as the API documents), so
//! a service with health checks (Route 53 or custom) is read with `DiscoverInstances`
//! every round instead; that is still one call. Every service is read in full at
//! least every five minutes, whatever its revision says. With nothing changing, a
//! round costs `1 + ⌈services/100⌉ per namespace + services` calls, all of which a
//! propagation waits at most one `interval` plus the round for.
//!
//! Health: `DiscoverInstances` is asked for `HEALTHY` instances only — Cloud Map's
//! own verdict, which counts an instance of a service without health checks as
//! healthy. `HEALTHY_OR_ELSE_ALL` is not used: when every instance fails it returns
//! them all, and publishing failing endpoints is what the mesh must not do (a service
//! with no healthy instance keeps its ServiceEntry with no endpoints).
//!
//! Mapping: one service per Cloud Map service, with the Cloud Map namespace's name as
//! its namespace (`{namespace}` in host templates; default hosts
//! `{service}.{namespace}`, the name Cloud Map's own DNS gives it); one instance per
//! instance id; the address is `AWS_INSTANCE_IPV4`, else `AWS_INSTANCE_IPV6`, else
//! `AWS_INSTANCE_CNAME` (a host name); one port named `default` from
//! `AWS_INSTANCE_PORT`; custom attributes become labels (a `protocol` attribute names
//! the port's protocol downstream), `AWS_*` attributes do not; ECS's
//! `AVAILABILITY_ZONE` (with `REGION` or the client's region) becomes the locality.

mod config;
pub use config::CloudMapBlock;
mod client;
mod parse;
mod poll;

use std::time::Duration;

use registry_sync_catalog::RegistrySnapshot;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::SourceEvent;
#[cfg(feature = "testing")]
pub(crate) use client::StripDataPrefix;
pub use parse::{MAX_ATTRIBUTE_VALUE, PORT_NAME};

/// How often Cloud Map is polled by default: a change is seen within about this long.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudMapConfig {
    /// The AWS region; `None`: from the environment or profile, as AWS tools do.
    pub region: Option<String>,
    /// Only these namespaces (by name), when not empty.
    pub namespaces: Vec<String>,
    /// Only these services (by name, in any selected namespace), when not empty.
    pub services: Vec<String>,
    /// Another server than AWS's regional endpoint, e.g. `http://127.0.0.1:5000`.
    pub endpoint: Option<String>,
    pub interval: Duration,
}

impl CloudMapConfig {
    /// Every service of every namespace of the region, polled every [`DEFAULT_INTERVAL`].
    pub fn new(region: Option<String>) -> CloudMapConfig {
        CloudMapConfig {
            region,
            namespaces: Vec::new(),
            services: Vec::new(),
            endpoint: None,
            interval: DEFAULT_INTERVAL,
        }
    }

    fn selects_namespace(&self, name: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == name)
    }

    fn selects_service(&self, name: &str) -> bool {
        self.services.is_empty() || self.services.iter().any(|s| s == name)
    }
}

/// Why Cloud Map could not be read. Each names the registry, what failed and what to
/// check; none carries credentials (access key ids in AWS error texts are replaced).
#[derive(Debug, thiserror::Error)]
pub enum CloudMapError {
    #[error(transparent)]
    Internal(#[from] crate::ReadTaskError),
    #[error(
        "registry {registry:?}: no AWS region is configured; set `region`, or AWS_REGION, or a region in the AWS profile"
    )]
    NoRegion { registry: String },
    #[error(
        "registry {registry:?}: cannot reach Cloud Map at {target} ({action}): {error}; check `region` or `endpoint` and the network path to Cloud Map"
    )]
    Unreachable {
        registry: String,
        target: String,
        action: String,
        error: String,
    },
    #[error(
        "registry {registry:?}: Cloud Map at {target} refused {action}: {error}; check the AWS credentials (environment, profile, web identity or instance role) and that their policy allows servicediscovery:ListNamespaces, ListServices, DiscoverInstances and DiscoverInstancesRevision"
    )]
    Denied {
        registry: String,
        target: String,
        action: String,
        error: String,
    },
    #[error(
        "registry {registry:?}: Cloud Map at {target} is throttling ({action}): {error}; backing off. A longer `interval` or a `services` allow-list sends fewer requests"
    )]
    Throttled {
        registry: String,
        target: String,
        action: String,
        error: String,
    },
    #[error("registry {registry:?}: Cloud Map at {target} answered {action} with an error: {error}")]
    Failed {
        registry: String,
        target: String,
        action: String,
        error: String,
    },
}

impl crate::Classified for CloudMapError {
    fn reason(&self) -> crate::FailureReason {
        use crate::FailureReason;
        match self {
            CloudMapError::Internal(_) => FailureReason::Internal,
            CloudMapError::NoRegion { .. } => FailureReason::Configuration,
            CloudMapError::Unreachable { .. } => FailureReason::Unreachable,
            CloudMapError::Denied { .. } => FailureReason::Denied,
            CloudMapError::Throttled { .. } => FailureReason::Throttled,
            CloudMapError::Failed { .. } => FailureReason::BadAnswer,
        }
    }
}

/// The Cloud Map namespaces of one AWS account and region, as one registry.
#[derive(Clone, Debug)]
pub struct CloudMapSource {
    registry: String,
    config: CloudMapConfig,
    /// Fixed dummy credentials instead of the chain (tests against an emulator only).
    test_credentials: bool,
}

impl CloudMapSource {
    pub fn new(registry: impl Into<String>, config: CloudMapConfig) -> Self {
        CloudMapSource {
            registry: registry.into(),
            config,
            test_credentials: false,
        }
    }

    #[cfg(feature = "testing")]
    /// Signs with fixed dummy credentials instead of the AWS credentials chain, for
    /// tests against an emulator that checks no signature.
    pub fn with_test_credentials(mut self) -> Self {
        self.test_credentials = true;
        self
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Reads every selected service once, for `once`, `plan`, `render` and `check`.
    pub async fn load(&self) -> Result<RegistrySnapshot, CloudMapError> {
        let client = client::Client::new(&self.registry, &self.config, self.test_credentials).await?;
        let mut poller = poll::Poller::new(&self.registry, client, self.config.clone());
        poller.round().await?;
        Ok(poller.state().snapshot())
    }

    /// Emits the state after the first complete round, then a snapshot after each
    /// round that changed something, until `cancel` fires or the receiver is dropped.
    /// While Cloud Map cannot be read (down, throttling, refusing) it emits one
    /// [`SourceEvent::Failed`] and retries with backoff; the state is kept.
    pub async fn watch(self, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
        poll::run(self, tx, cancel).await;
    }
}
