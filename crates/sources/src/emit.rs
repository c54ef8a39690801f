//! Sending what a watching source learns, and waiting between reconnects.
//!
//! The contract every source keeps: a whole snapshot after each change; while the
//! registry cannot be read, one [`SourceEvent::Failed`] (not one per retry, which would
//! flood the consumer's log) and the consumer keeps the last state; the next snapshot
//! ends the failure.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::SourceEvent;
use crate::state::Services;

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

    /// Sends the state as a snapshot if it changed, or if the registry was failing
    /// (the consumer needs a complete view to end the failure), or if nothing was
    /// sent yet.
    pub(crate) async fn snapshot(&mut self, state: &mut Services) -> Result<(), Stopped> {
        if !state.is_dirty() && !self.failing && self.sent_any {
            return Ok(());
        }
        let snapshot = state.snapshot();
        if self.failing {
            tracing::info!(registry = %self.registry, services = snapshot.services().len(), "registry reachable again");
        }
        self.failing = false;
        self.sent_any = true;
        self.send(SourceEvent::Snapshot {
            registry: self.registry.clone(),
            snapshot,
        })
        .await
    }

    /// Reports a failure, once until the next snapshot.
    pub(crate) async fn failed(&mut self, error: String) -> Result<(), Stopped> {
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

/// Exponential backoff between reconnects: 0.5 s doubling to 30 s, reset after a
/// success. Fast enough that a restarted registry is back within a second, slow
/// enough that a registry that is down for long is not hammered.
pub(crate) struct Backoff {
    next: Duration,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff { next: BACKOFF_FIRST }
    }

    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<_> = (0..8).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), BACKOFF_FIRST);
    }

    #[tokio::test]
    async fn a_failure_is_sent_once_until_the_next_snapshot() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut emitter = Emitter::new("r", tx, CancellationToken::new());
        let mut state = Services::new("r");
        emitter.snapshot(&mut state).await.unwrap();
        emitter.failed("down".into()).await.unwrap();
        emitter.failed("still down".into()).await.unwrap();
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
}
