//! Readiness: whether every sink has applied the first complete view of every
//! registry. Its own handle, not a metric's flag, so `/readyz`, a test and a bench can
//! each read it, or wait for it.

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct Ready {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Ready {
    fn default() -> Ready {
        Ready {
            tx: Arc::new(watch::channel(false).0),
        }
    }
}

impl Ready {
    pub fn is_ready(&self) -> bool {
        *self.tx.borrow()
    }

    /// Waits until ready (at once if it is).
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives as long as `self`: the wait ends only when ready.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    pub(crate) fn set(&self) {
        self.tx.send_if_modified(|ready| !std::mem::replace(ready, true));
    }
}
