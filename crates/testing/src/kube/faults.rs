//! Fault injection, switchable at runtime through [`Faults`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::kube::state::Shared;
use crate::kube::util::lock;

/// Runtime fault switches of a running stand-in. Cheap to clone; every clone controls
/// the same server.
#[derive(Clone)]
pub struct Faults {
    pub(crate) shared: Arc<Shared>,
}

impl Faults {
    /// Delays every request by `latency` before it is served (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.shared.faults.latency) = latency;
    }

    /// Answers the next `requests` requests (any verb, watches included) with
    /// `429 TooManyRequests` and `Retry-After: retry_after_secs`.
    pub fn throttle_next(&self, requests: u64, retry_after_secs: u32) {
        let mut t = lock(&self.shared.faults.throttle);
        t.remaining = requests;
        t.retry_after = retry_after_secs;
    }

    /// Answers a `fraction` (0.0–1.0) of requests with 429, deterministically: 0.25
    /// throttles every fourth request. 0.0 stops it.
    pub fn throttle_fraction(&self, fraction: f64, retry_after_secs: u32) {
        let mut t = lock(&self.shared.faults.throttle);
        t.fraction = fraction.clamp(0.0, 1.0);
        t.accumulated = 0.0;
        t.retry_after = retry_after_secs;
    }

    /// Answers the next `writes` write requests (create, update, patch, apply, delete)
    /// with `500 InternalError`, without applying them.
    pub fn fail_next_writes(&self, writes: u64) {
        self.shared.faults.failing_writes.store(writes, Ordering::SeqCst);
    }

    /// Answers a `fraction` (0.0–1.0) of write requests with `500 InternalError`, picked
    /// by a fixed pseudo-random sequence. 0.0 stops it.
    pub fn fail_writes_fraction(&self, fraction: f64) {
        let share = (fraction.clamp(0.0, 1.0) * 1_000_000.0).round() as u64;
        self.shared
            .faults
            .failing_writes_share
            .store(share, Ordering::Relaxed);
    }

    /// A validating admission webhook (`policy.example.com`) refuses every write of an
    /// object named `name` with `reason` (`403`), until [`Faults::clear`].
    pub fn deny_admission(&self, name: &str, reason: &str) {
        lock(&self.shared.faults.denied).insert(name.to_string(), reason.to_string());
    }

    /// Cuts every open watch stream now, mid-response (the client sees the connection
    /// end without the final chunk), as when an API server restarts.
    pub fn drop_watches(&self) {
        self.shared.faults.drops.send_modify(|n| *n += 1);
    }

    /// Holds every new request, and the delivery of watch events, until [`Faults::resume`].
    pub fn pause(&self) {
        self.shared.faults.paused.send_replace(true);
    }

    /// Lets held requests and watch events go on.
    pub fn resume(&self) {
        self.shared.faults.paused.send_replace(false);
    }

    /// Keeps at most `events` change events for watches to resume from (default 10,000).
    /// A watch from an older resourceVersion, or a watch that falls that far behind, gets
    /// an `ERROR` event with `410 Expired`; `0` expires every resourceVersion but the latest.
    pub fn set_history_limit(&self, events: usize) {
        self.shared.store().set_history_limit(events);
    }

    /// Switches every fault off (latency, throttling, failing writes, pause). The history
    /// limit stays.
    pub fn clear(&self) {
        self.set_latency(Duration::ZERO);
        self.throttle_next(0, 0);
        self.throttle_fraction(0.0, 0);
        self.fail_next_writes(0);
        self.fail_writes_fraction(0.0);
        lock(&self.shared.faults.denied).clear();
        self.resume();
    }
}
