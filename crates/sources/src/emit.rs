//! Sending what a watching source learns, and waiting between reconnects.
//!
//! The contract every source keeps: a whole snapshot first, then after each change
//! the services it touched; while the registry cannot be read, one [`SourceEvent::Failed`] (not one per retry, which would
//! flood the consumer's log) and the consumer keeps the last state; the next snapshot
//! ends the failure.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::state::Services;
use crate::{SourceEvent, SourceFailure};

/// Sends a source's events, with the "failed once" rule.
pub(crate) struct Emitter {
    registry: String,
    tx: mpsc::Sender<SourceEvent>,
    cancel: CancellationToken,
    failing: bool,
    /// Whether a snapshot was ever sent: the first one goes out even if empty.
    sent_any: bool,
}

/// The consumer is gone or the source was cancelled: the task must end.
#[derive(Debug)]
pub(crate) struct Stopped;

impl Emitter {
    pub(crate) fn new(registry: &str, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) -> Emitter {
        Emitter {
            registry: registry.to_string(),
            tx,
            cancel,
            failing: false,
            sent_any: false,
        }
    }

    pub(crate) fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Sends what changed in the state: the whole view first and after a failure (the
    /// consumer needs a complete view to end it), and after that only the services
    /// that changed. Nothing when nothing changed.
    pub(crate) async fn snapshot(&mut self, state: &mut Services) -> Result<(), Stopped> {
        if !state.is_dirty() && !self.failing && self.sent_any {
            return Ok(());
        }
        let event = if self.failing || !self.sent_any {
            let snapshot = state.snapshot();
            if self.failing {
                tracing::info!(registry = %self.registry, services = snapshot.services().len(), "registry reachable again");
            }
            SourceEvent::Snapshot {
                registry: self.registry.clone(),
                snapshot,
            }
        } else {
            SourceEvent::Changed {
                registry: self.registry.clone(),
                delta: state.delta(),
            }
        };
        self.failing = false;
        self.sent_any = true;
        self.send(event).await
    }

    /// Reports a failure, once until the next snapshot.
    pub(crate) async fn failed(&mut self, error: SourceFailure) -> Result<(), Stopped> {
        if self.failing {
            tracing::debug!(registry = %self.registry, "still failing: {error}");
            return Ok(());
        }
        self.failing = true;
        self.send(SourceEvent::Failed {
            registry: self.registry.clone(),
            error,
        })
        .await
    }

    async fn send(&self, event: SourceEvent) -> Result<(), Stopped> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(Stopped),
            sent = self.tx.send(event) => sent.map_err(|_| Stopped),
        }
    }

    /// Sleeps, unless cancelled first.
    pub(crate) async fn sleep(&self, delay: Duration) -> Result<(), Stopped> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(Stopped),
            () = self.tx.closed() => Err(Stopped),
            () = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

/// Exponential backoff between reconnects, reset after a success. Reconnecting to
/// etcd, ZooKeeper, Consul, Nacos or Eureka costs the registry one connection, so the
/// wait stays short — 0.25 s doubling to 4 s — and changes flow again within seconds
/// of a registry's return. AWS Cloud Map bills and throttles every call: it keeps the
/// longer [`Backoff::paced`] wait.
pub(crate) struct Backoff {
    next: Duration,
    first: Duration,
    max: Duration,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(4);
const PACED_FIRST: Duration = Duration::from_millis(500);
const PACED_MAX: Duration = Duration::from_secs(30);

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff::between(BACKOFF_FIRST, BACKOFF_MAX)
    }

    /// For registries whose every call is throttled or billed (AWS): 0.5 s to 30 s.
    #[cfg_attr(not(feature = "cloudmap"), allow(dead_code))]
    pub(crate) fn paced() -> Backoff {
        Backoff::between(PACED_FIRST, PACED_MAX)
    }

    fn between(first: Duration, max: Duration) -> Backoff {
        Backoff {
            next: first,
            first,
            max,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FailureReason;

    #[test]
    fn backoff_doubles_up_to_four_seconds_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<_> = (0..7).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 4000, 4000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), BACKOFF_FIRST);
    }

    #[test]
    fn paced_backoff_doubles_up_to_thirty_seconds() {
        let mut backoff = Backoff::paced();
        let delays: Vec<_> = (0..8).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    }

    #[tokio::test]
    async fn a_failure_is_sent_once_until_the_next_snapshot() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut emitter = Emitter::new("r", tx, CancellationToken::new());
        let mut state = Services::new("r");
        emitter.snapshot(&mut state).await.unwrap();
        emitter
            .failed(SourceFailure::new(FailureReason::Unreachable, "down"))
            .await
            .unwrap();
        emitter
            .failed(SourceFailure::new(FailureReason::Unreachable, "still down"))
            .await
            .unwrap();
        emitter.snapshot(&mut state).await.unwrap();
        emitter.snapshot(&mut state).await.unwrap();
        drop(emitter);
        let mut kinds = Vec::new();
        while let Some(event) = rx.recv().await {
            kinds.push(matches!(event, SourceEvent::Snapshot { .. }));
        }
        assert_eq!(
            kinds,
            [true, false, true],
            "snapshot, one failure, snapshot; no repeats"
        );
    }

    #[tokio::test]
    async fn after_the_first_snapshot_only_the_changed_services_travel() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut emitter = Emitter::new("r", tx, CancellationToken::new());
        let mut state = Services::new("r");
        for name in ["a", "b", "c"] {
            state.put(name, "1", instance("1"));
        }
        emitter.snapshot(&mut state).await.unwrap();
        state.put("b", "2", instance("2"));
        state.remove("c", "1", true);
        emitter.snapshot(&mut state).await.unwrap();
        drop(emitter);
        let Some(SourceEvent::Snapshot { snapshot, .. }) = rx.recv().await else {
            panic!("the first event is a whole view");
        };
        assert_eq!(snapshot.services().len(), 3);
        let Some(SourceEvent::Changed { delta, .. }) = rx.recv().await else {
            panic!("the second event is a delta");
        };
        let upserts: Vec<&str> = delta.upserts.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(upserts, ["b"]);
        assert_eq!(delta.removed.len(), 1);
        assert_eq!(delta.removed[0].name, "c");
        assert_eq!(delta.skipped, None, "no refused item changed");
        let mut folded = snapshot;
        folded.apply(&delta);
        let names: Vec<&str> = folded.services().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    fn instance(id: &str) -> crate::state::Item {
        Ok(registry_sync_catalog::testing::instance(id, "10.0.0.1", 80))
    }
}
