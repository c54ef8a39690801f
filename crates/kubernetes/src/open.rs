//! Everything the Kubernetes sink needs, opened in one call: one client for the sink
//! and the leader election, the election itself when asked for, and the sink, so the
//! binary has a single place to call and nothing to assemble.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use registry_sync_sinks::SinkError;
use tokio_util::sync::CancellationToken;

use crate::{KubeSink, KubeSinkSettings, LeaderSettings, Leadership, leader};

/// What the configuration says about the Kubernetes sink.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// Without one: `KUBECONFIG`, `~/.kube/config`, then the in-cluster account.
    pub kubeconfig: Option<PathBuf>,
    /// Every namespace objects go to.
    pub namespaces: BTreeSet<String>,
    pub qps: f64,
    pub burst: u32,
    pub concurrency: usize,
    pub leader_election: Option<ElectionOptions>,
    /// This installation's name, which names the object the guard's memory is kept in.
    pub instance: String,
}

#[derive(Clone, Debug)]
pub struct ElectionOptions {
    /// The Lease's namespace; `None`: the pod's own (`POD_NAMESPACE`).
    pub namespace: Option<String>,
    pub lease: String,
    pub lease_duration: Duration,
}

/// The sink, and the leadership that gates it when an election runs.
pub struct Opened {
    pub sink: KubeSink,
    pub leadership: Option<Leadership>,
}

/// Why the Kubernetes sink could not be opened; each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("kubernetes sink: {0}")]
    Client(String),
    #[error(
        "kubernetes sink: leader election needs the Lease's namespace: set sinks.kubernetes.leader_election.namespace or the POD_NAMESPACE environment variable"
    )]
    LeaseNamespace,
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// How to use the sink.
pub enum Mode<'a> {
    /// To write (`run`): leader election starts when configured, and ends with
    /// `cancel`, releasing the lease.
    Elected(&'a CancellationToken),
    /// To write once (`once`, `prune`), without an election.
    Unelected,
    /// To read what it holds (`plan`).
    ReadOnly,
}

pub async fn open(options: &KubeOptions, mode: Mode<'_>) -> Result<Opened, OpenError> {
    let client = crate::client(options.kubeconfig.as_deref())
        .await
        .map_err(OpenError::Client)?;
    let leadership = match (&options.leader_election, &mode) {
        (Some(election), Mode::Elected(cancel)) => {
            let settings = leader_settings(election)?;
            tracing::info!(lease = %settings.lease_name, namespace = %settings.namespace, identity = %settings.identity, "leader election: standing by");
            Some(leader::start(client.clone(), settings, cancel.child_token()))
        }
        _ => None,
    };
    let settings = KubeSinkSettings {
        namespaces: options.namespaces.clone(),
        qps: options.qps,
        burst: options.burst,
        concurrency: options.concurrency,
        // A write sent while leading must not land after the lease could have passed
        // to another replica: no call outlasts the leadership margin (a fifth of it).
        call_timeout: options
            .leader_election
            .as_ref()
            .map(|election| election.lease_duration / 5)
            .unwrap_or(Duration::from_secs(10))
            .min(Duration::from_secs(10)),
        guard_store: Some(crate::GuardStore::new(
            guard_namespace(options, &client),
            &options.instance,
        )),
        ..KubeSinkSettings::default()
    };
    let sink = KubeSink::connect(client, settings, leadership.clone()).await?;
    Ok(Opened { sink, leadership })
}

/// Where the installation's own Lease lives: beside the Lease of the election, else in
/// the pod's namespace, else in the client's (the kubeconfig context's, or the service
/// account's): a place that stays when the configuration's namespaces change.
fn guard_namespace(options: &KubeOptions, client: &kube::Client) -> String {
    options
        .leader_election
        .as_ref()
        .and_then(|election| election.namespace.clone())
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| client.default_namespace().to_string())
}

fn leader_settings(election: &ElectionOptions) -> Result<LeaderSettings, OpenError> {
    let namespace = election
        .namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .ok_or(OpenError::LeaseNamespace)?;
    let identity = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("registry-sync-{}", std::process::id()));
    Ok(LeaderSettings {
        namespace,
        lease_name: election.lease.clone(),
        identity,
        lease_duration: election.lease_duration,
        retry_period: (election.lease_duration / 5).max(Duration::from_millis(500)),
    })
}
