//! Fault injection, switchable at runtime through [`Faults`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::kube::routes::classify_request;
use crate::kube::state::{Shared, lock_ignoring_poison as lock};
use crate::kube::status::ApiError;

#[derive(Debug, Default)]
struct Throttle {
    /// Throttle this many further requests.
    remaining: u64,
    /// Throttle this fraction of requests (deterministically: every 1/fraction-th one).
    fraction: f64,
    accumulated: f64,
    retry_after: u32,
}

pub(crate) struct FaultState {
    latency: Mutex<Duration>,
    throttle: Mutex<Throttle>,
    failing_writes: AtomicU64,
    /// Fail this share of writes, in millionths, chosen by a seeded sequence.
    failing_writes_share: AtomicU64,
    write_draws: AtomicU64,
    /// Object names an admission webhook refuses writes of, with its reason.
    denied: Mutex<std::collections::BTreeMap<String, String>>,
    paused: watch::Sender<bool>,
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
    fn take_throttle(&self) -> Option<u32> {
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

    fn take_write_failure(&self) -> bool {
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

/// The middleware in front of every route: counting, pause, latency, 429s, failing writes.
pub(crate) async fn layer(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let class = classify_request(&req);
    if let Some((verb, plural)) = &class {
        shared.count(*verb, plural);
    }
    tokio::select! {
        () = shared.faults.unpaused() => {}
        () = shared.shutdown.cancelled() => return ApiError::internal("server shutting down").into_response(),
    }
    let latency = *lock(&shared.faults.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(retry_after) = shared.faults.take_throttle() {
        return ApiError::too_many_requests(retry_after).into_response();
    }
    if class.as_ref().is_some_and(|(verb, _)| verb.is_write()) {
        let name = req.uri().path().rsplit('/').next().unwrap_or_default();
        if let Some(reason) = lock(&shared.faults.denied).get(name) {
            return ApiError::denied_by_webhook("policy.example.com", reason).into_response();
        }
    }
    if class.as_ref().is_some_and(|(verb, _)| verb.is_write()) && shared.faults.take_write_failure() {
        return ApiError::internal("etcdserver: request timed out (injected fault)").into_response();
    }
    next.run(req).await
}
