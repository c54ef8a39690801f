//! State shared by the server tasks and the [`crate::kube::StandIn`] handle.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::kube::counts::{Counts, Verb};
use crate::kube::fault_state::FaultState;
use crate::kube::store::Store;
use crate::kube::util::lock;

pub(crate) struct Shared {
    store: Mutex<Store>,
    /// The latest resourceVersion; watches wait on it for new events.
    pub changes: watch::Receiver<u64>,
    pub faults: FaultState,
    counts: Mutex<BTreeMap<(Verb, String), u64>>,
    /// Cancelled when the server shuts down: ends every watch.
    pub shutdown: CancellationToken,
    /// How often an idle watch that asked for bookmarks gets one.
    pub bookmark_every: Duration,
}

impl Shared {
    pub(crate) fn new() -> Arc<Shared> {
        let (tx, rx) = watch::channel(1);
        Arc::new(Shared {
            store: Mutex::new(Store::new(tx)),
            changes: rx,
            faults: FaultState::default(),
            counts: Mutex::new(BTreeMap::new()),
            shutdown: CancellationToken::new(),
            bookmark_every: Duration::from_secs(30),
        })
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    pub(crate) fn count(&self, verb: Verb, plural: &str) {
        *lock(&self.counts).entry((verb, plural.to_string())).or_default() += 1;
    }

    pub(crate) fn counts(&self) -> Counts {
        Counts {
            by: lock(&self.counts).clone(),
        }
    }

    pub(crate) fn reset_counts(&self) {
        lock(&self.counts).clear();
    }
}
