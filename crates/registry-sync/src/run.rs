//! `run`: watch every registry and keep every sink in step until SIGINT or SIGTERM.
//!
//! One task per registry feeds events into one channel; this loop is the only writer.
//! The first event after a quiet period is applied at once (no debounce delay), and
//! everything that arrived while a pass was running is folded into the next pass, so
//! a burst of changes costs a few passes, not one per event.

use std::time::Duration;

use registry_sync_sources::SourceEvent;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::commands::CommandError;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::sinks::open_sinks;
use crate::sources;

const EVENT_QUEUE: usize = 1024;
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

fn handle(pipeline: &mut Pipeline, event: SourceEvent) -> bool {
    match event {
        SourceEvent::Snapshot { registry, snapshot } => {
            tracing::debug!(%registry, services = snapshot.services().len(), "registry view received");
            pipeline.registry_synced(&registry, snapshot)
        }
        SourceEvent::Failed { registry, error } => {
            tracing::warn!(%registry, "registry failing, keeping its last known state: {error}");
            pipeline.registry_failed(&registry);
            false
        }
    }
}

/// Cancels `cancel` on SIGINT or SIGTERM.
pub fn cancel_on_signals(cancel: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = match signal(SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM ({e}); only Ctrl-C stops registry-sync");
                    let _ = tokio::signal::ctrl_c().await;
                    cancel.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, stopping"),
                _ = term.recv() => tracing::info!("SIGTERM received, stopping"),
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        cancel.cancel();
    });
}

/// A full pass this often even when nothing changed: it re-checks objects the
/// incremental passes do not look at (a conflict resolved by hand, an object someone
/// deleted behind our back).
const RESYNC_INTERVAL: Duration = Duration::from_secs(300);

/// Starts leader election when the Kubernetes sink asks for it.
#[cfg(feature = "kubernetes")]
async fn start_leader_election(
    config: &Config,
    cancel: &CancellationToken,
) -> Result<Option<registry_sync_kubernetes::Leadership>, CommandError> {
    let Some(kube) = &config.sinks.kubernetes else {
        return Ok(None);
    };
    let Some(election) = &kube.leader_election else {
        return Ok(None);
    };
    let namespace = match election
        .namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
    {
        Some(namespace) => namespace,
        None => {
            return Err(CommandError::Kubernetes(
                "leader election needs the Lease's namespace: set sinks.kubernetes.leader_election.namespace or the POD_NAMESPACE environment variable".into(),
            ));
        }
    };
    let identity = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("registry-sync-{}", std::process::id()));
    let client = registry_sync_kubernetes::client(kube.kubeconfig.as_deref())
        .await
        .map_err(CommandError::Kubernetes)?;
    let lease_duration = Duration::from_secs(election.lease_duration_seconds);
    let settings = registry_sync_kubernetes::LeaderSettings {
        namespace,
        lease_name: election.lease.clone(),
        identity,
        lease_duration,
        retry_period: (lease_duration / 5).max(Duration::from_millis(500)),
    };
    tracing::info!(lease = %settings.lease_name, namespace = %settings.namespace, identity = %settings.identity, "leader election: standing by");
    Ok(Some(registry_sync_kubernetes::leader::start(
        client,
        settings,
        cancel.child_token(),
    )))
}

#[cfg(not(feature = "kubernetes"))]
async fn start_leader_election(
    _config: &Config,
    _cancel: &CancellationToken,
) -> Result<crate::sinks::Leadership, CommandError> {
    Ok(None)
}

/// Runs until `cancel` fires or every source has ended. Needs a multi-threaded runtime.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), CommandError> {
    let metrics = Metrics::new();
    if let Some(listen) = config.admin_listen {
        admin::serve(listen, metrics.clone(), cancel.child_token())
            .await
            .map_err(|e| CommandError::Admin(format!("cannot serve the admin endpoint on {listen}: {e}")))?;
    }
    let leadership = start_leader_election(&config, &cancel).await?;
    #[cfg(feature = "kubernetes")]
    let mut leader_changes = leadership.as_ref().map(|l| l.changes());
    #[cfg(not(feature = "kubernetes"))]
    let mut leader_changes: Option<tokio::sync::watch::Receiver<bool>> = None;
    #[cfg(feature = "kubernetes")]
    let is_leader = |l: &crate::sinks::Leadership| l.as_ref().is_none_or(|l| l.is_leader());
    #[cfg(not(feature = "kubernetes"))]
    let is_leader = |_: &crate::sinks::Leadership| true;
    metrics.leader.set(i64::from(is_leader(&leadership)));

    let mut sinks = open_sinks(&config, leadership.clone()).await?;
    let mut pipeline = Pipeline::new(&config).with_metrics(metrics.clone());
    let (tx, mut rx) = mpsc::channel(EVENT_QUEUE);
    let mut tasks = Vec::new();
    for registry in &config.registries {
        tasks.push(sources::spawn_watch(registry, tx.clone(), cancel.child_token()));
    }
    drop(tx);
    tracing::info!(
        registries = config.registries.len(),
        sinks = sinks.len(),
        "watching"
    );

    let mut retry_delay = RETRY_FIRST;
    let mut retry_at: Option<Instant> = None;
    let mut resync = tokio::time::interval_at(Instant::now() + RESYNC_INTERVAL, RESYNC_INTERVAL);
    // When the oldest event not yet applied arrived.
    let mut waiting_since: Option<Instant> = None;
    loop {
        let mut changed = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = async { tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)).await }, if retry_at.is_some() => {
                retry_at = None;
                true
            }
            _ = resync.tick() => {
                pipeline.request_full_pass();
                true
            }
            changed = async { leader_changes.as_mut().expect("guarded").changed().await }, if leader_changes.is_some() => {
                if changed.is_err() {
                    leader_changes = None;
                }
                let leading = is_leader(&leadership);
                metrics.leader.set(i64::from(leading));
                // A new leader does not know what the old one left half done.
                pipeline.request_full_pass();
                leading
            }
            event = rx.recv() => match event {
                Some(event) => {
                    waiting_since.get_or_insert_with(Instant::now);
                    handle(&mut pipeline, event)
                }
                None => break,
            },
        };
        while let Ok(event) = rx.try_recv() {
            changed |= handle(&mut pipeline, event);
        }
        if !changed {
            if pipeline.all_registries_complete() && !metrics.is_ready() && is_leader(&leadership) {
                metrics.set_ready();
            }
            continue;
        }
        if !is_leader(&leadership) {
            // A standby keeps its view current and writes nothing.
            if pipeline.all_registries_complete() {
                metrics.set_ready();
            }
            waiting_since = None;
            continue;
        }
        // A pass waits on the sinks, and a stalled API server can hold it for as long as
        // it stalls: a stop must not wait for it. Writes are idempotent, so a pass cut
        // short leaves nothing half done that the next start does not finish.
        let pass = tokio::select! {
            pass = pipeline.sync(&mut sinks) => pass,
            () = cancel.cancelled() => {
                tracing::info!("stopping in the middle of a pass; the next start finishes it");
                break;
            }
        };
        if pass.written {
            retry_delay = RETRY_FIRST;
            retry_at = None;
            if let Some(since) = waiting_since.take() {
                metrics.propagation.observe(since.elapsed().as_secs_f64());
            }
            if pipeline.all_registries_complete() {
                metrics.set_ready();
            }
        } else {
            tracing::warn!("some writes failed; retrying in {retry_delay:?}");
            retry_at = Some(Instant::now() + retry_delay);
            retry_delay = (retry_delay * 2).min(RETRY_MAX);
        }
    }
    cancel.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    // Leader election releases its lease on cancel; give it a moment.
    if leadership.is_some() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::info!("stopped");
    Ok(())
}
