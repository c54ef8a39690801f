//! Builds each configured registry's source and runs it: once (render, plan, once,
//! check) or as a watch that feeds the run loop.

use registry_sync_catalog::RegistrySnapshot;
use registry_sync_sources::SourceEvent;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::RegistryConfig;
use registry_sync_sources::registry::SourceError;

/// Reads a registry once. The error names the registry and what to check: sources
/// write their own messages that way, and callers print them as they are.
pub async fn load(registry: &RegistryConfig) -> Result<RegistrySnapshot, SourceError> {
    registry.source.load(&registry.name).await
}

/// The first restart of a source task that died waits this long, doubling up to
/// [`RESTART_MAX`]; a task that ran for [`RESTART_MAX`] starts the count over.
const RESTART_FIRST: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(60);

/// Watches a registry under supervision; events arrive on `tx` until `cancel` fires.
///
/// A source task that panics (a bug, or input no parser should have let through) or ends
/// by itself would otherwise leave its registry "up" with frozen data. The supervisor
/// reports it as a failure — the registry keeps its last known state, its objects are
/// protected, `registry_up` drops — and starts the source again with backoff.
pub fn spawn_watch(
    registry: &RegistryConfig,
    tx: mpsc::Sender<SourceEvent>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let config = registry.clone();
    supervise(registry.name.clone(), tx, cancel, move |tx, cancel| {
        start_watch(&config, tx, cancel)
    })
}

/// Runs `start` until `cancel` fires, restarting what it returns whenever that task
/// ends early.
pub(crate) fn supervise<F>(
    registry: String,
    tx: mpsc::Sender<SourceEvent>,
    cancel: CancellationToken,
    start: F,
) -> JoinHandle<()>
where
    F: Fn(mpsc::Sender<SourceEvent>, CancellationToken) -> JoinHandle<()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut delay = RESTART_FIRST;
        loop {
            let started = Instant::now();
            let task = start(tx.clone(), cancel.child_token());
            let abort = task.abort_handle();
            let ended = tokio::select! {
                ended = task => ended,
                () = cancel.cancelled() => {
                    abort.abort();
                    return;
                }
            };
            if cancel.is_cancelled() || tx.is_closed() {
                return;
            }
            if started.elapsed() >= RESTART_MAX {
                delay = RESTART_FIRST;
            }
            // The panic's text stays in the process's own panic output: it may quote
            // registry data, which does not belong in events, metrics or status.
            let how = match ended {
                Err(join) if join.is_panic() => "panicked",
                Err(_) => "was cancelled",
                Ok(()) => "ended by itself",
            };
            let error = format!(
                "registry {registry:?}: its source task {how}; the last known state is kept and the source restarts in {}s (this is a bug of registry-sync: please report it)",
                delay.as_secs()
            );
            tracing::error!(%registry, "{error}");
            if tx
                .send(SourceEvent::Failed {
                    registry: registry.clone(),
                    error: registry_sync_sources::SourceFailure::new(
                        registry_sync_sources::FailureReason::Internal,
                        error,
                    ),
                })
                .await
                .is_err()
            {
                return;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RESTART_MAX);
        }
    })
}

/// Starts watching a registry; events arrive on `tx` until `cancel` fires.
fn start_watch(
    registry: &RegistryConfig,
    tx: mpsc::Sender<SourceEvent>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    registry.source.watch(&registry.name, tx, cancel)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use registry_sync_catalog::RegistrySnapshot;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_source_task_that_panics_is_reported_as_failing_and_restarted() {
        let (tx, mut rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let starts = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&starts);
        let supervisor = supervise("legacy".into(), tx, cancel.clone(), move |tx, cancel| {
            let attempt = counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if attempt == 0 {
                    panic!("a parser bug");
                }
                let snapshot = RegistrySnapshot::new("legacy", Vec::new(), Vec::new());
                let _ = tx
                    .send(SourceEvent::Snapshot {
                        registry: "legacy".into(),
                        snapshot,
                    })
                    .await;
                cancel.cancelled().await;
            })
        });
        match rx.recv().await {
            Some(SourceEvent::Failed { registry, error }) => {
                assert_eq!(registry, "legacy");
                assert_eq!(error.reason, registry_sync_sources::FailureReason::Internal);
                assert!(error.message.contains("panicked"), "{error}");
                assert!(
                    !error.message.contains("a parser bug"),
                    "the panic text stays out: {error}"
                );
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(matches!(rx.recv().await, Some(SourceEvent::Snapshot { .. })));
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        cancel.cancel();
        supervisor.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_stops_the_source_without_a_failure() {
        let (tx, mut rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let supervisor = supervise("legacy".into(), tx, cancel.clone(), |_tx, cancel| {
            tokio::spawn(async move { cancel.cancelled().await })
        });
        cancel.cancel();
        supervisor.await.unwrap();
        assert!(rx.recv().await.is_none());
    }
}
