//! What the injected faults are, and the rules that apply them to a request; switched
//! through [`crate::kube::Faults`], applied by the middleware in front of every route.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::kube::util::lock;

#[derive(Debug, Default)]
pub(crate) struct Throttle {
    /// Throttle this many further requests.
    pub(crate) remaining: u64,
    /// Throttle this fraction of requests (deterministically: every 1/fraction-th one).
    pub(crate) fraction: f64,
    pub(crate) accumulated: f64,
    pub(crate) retry_after: u32,
}

pub(crate) struct FaultState {
    pub(crate) latency: Mutex<Duration>,
    pub(crate) throttle: Mutex<Throttle>,
    pub(crate) failing_writes: AtomicU64,
    /// Fail this share of writes, in millionths, chosen by a seeded sequence.
    pub(crate) failing_writes_share: AtomicU64,
    write_draws: AtomicU64,
    /// Object names an admission webhook refuses writes of, with its reason.
    pub(crate) denied: Mutex<std::collections::BTreeMap<String, String>>,
    pub(crate) paused: watch::Sender<bool>,
    /// Bumped to drop every open watch stream.
    pub drops: watch::Sender<u64>,
}

impl Default for FaultState {
    fn default() -> FaultState {
        FaultState {
            latency: Mutex::new(Duration::ZERO),
            throttle: Mutex::new(Throttle::default()),
            failing_writes: AtomicU64::new(0),
            failing_writes_share: AtomicU64::new(0),
            write_draws: AtomicU64::new(0),
            denied: Mutex::new(std::collections::BTreeMap::new()),
            paused: watch::channel(false).0,
            drops: watch::channel(0).0,
        }
    }
}

impl FaultState {
    /// The Retry-After of a throttled request, if this one is throttled.
    pub(crate) fn take_throttle(&self) -> Option<u32> {
        let mut t = lock(&self.throttle);
        if t.remaining > 0 {
            t.remaining -= 1;
            return Some(t.retry_after);
        }
        if t.fraction > 0.0 {
            t.accumulated += t.fraction;
            if t.accumulated >= 1.0 {
                t.accumulated -= 1.0;
                return Some(t.retry_after);
            }
        }
        None
    }

    pub(crate) fn take_write_failure(&self) -> bool {
        if self
            .failing_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return true;
        }
        let share = self.failing_writes_share.load(Ordering::Relaxed);
        if share == 0 {
            return false;
        }
        // A fixed pseudo-random sequence (splitmix64): the same run each time, and no
        // lockstep with a client's retries.
        let mut x = self
            .write_draws
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        x % 1_000_000 < share
    }

    /// Waits while the server is paused.
    pub(crate) async fn unpaused(&self) {
        let mut rx = self.paused.subscribe();
        let _ = rx.wait_for(|paused| !paused).await;
    }
}
