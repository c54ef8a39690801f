//! Running an axum router on its own runtime, with fault switches and request counts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Locks a mutex even if a panicking test thread poisoned it: the data is still usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Fault switches shared by both stand-ins.
#[derive(Debug, Default)]
pub struct Faults {
    latency_ms: AtomicU64,
    fail_next: AtomicU64,
    /// Paths that answer `500` until cleared (one broken service among good ones).
    failing_paths: Mutex<Vec<String>>,
}

impl Faults {
    /// Delays every answer by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms.store(
            u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Answers the next `n` requests with `500 Internal Server Error`.
    pub fn fail_next(&self, n: u64) {
        self.fail_next.store(n, Ordering::Relaxed);
    }

    /// Answers every request whose path is `path` with `500` until [`Faults::heal_path`].
    pub fn fail_path(&self, path: &str) {
        lock(&self.failing_paths).push(path.to_string());
    }

    pub fn heal_path(&self, path: &str) {
        lock(&self.failing_paths).retain(|p| p != path);
    }

    fn path_fails(&self, path: &str) -> bool {
        lock(&self.failing_paths).iter().any(|p| p == path)
    }

    fn take_failure(&self) -> bool {
        self.fail_next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Requests received, per route name (e.g. `health/service`).
#[derive(Debug, Default)]
pub struct Counts {
    by_route: Mutex<BTreeMap<String, u64>>,
}

impl Counts {
    pub fn of(&self, route: &str) -> u64 {
        lock(&self.by_route).get(route).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        lock(&self.by_route).values().sum()
    }

    pub(crate) fn add(&self, route: &str) {
        *lock(&self.by_route).entry(route.to_string()).or_default() += 1;
    }
}

/// Names a request's route for [`Counts`].
pub(crate) type Classify = fn(&str) -> String;

#[derive(Clone)]
struct Layer {
    faults: Arc<Faults>,
    counts: Arc<Counts>,
    classify: Classify,
}

async fn faults(State(layer): State<Layer>, request: Request, next: Next) -> Response {
    layer.counts.add(&(layer.classify)(request.uri().path()));
    let latency = layer.faults.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if layer.faults.path_fails(request.uri().path()) || layer.faults.take_failure() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected fault").into_response();
    }
    next.run(request).await
}

/// A router served on `127.0.0.1`, stoppable and resumable on the same port.
pub(crate) struct Server {
    router: Router,
    address: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    pub(crate) faults: Arc<Faults>,
    pub(crate) counts: Arc<Counts>,
}

impl Server {
    pub(crate) fn start(router: Router, classify: Classify) -> Server {
        let faults = Arc::new(Faults::default());
        let counts = Arc::new(Counts::default());
        let layer = Layer {
            faults: Arc::clone(&faults),
            counts: Arc::clone(&counts),
            classify,
        };
        let router = router.layer(axum::middleware::from_fn_with_state(layer, self::faults));
        let mut server = Server {
            router,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            runtime: None,
            faults,
            counts,
        };
        server.resume();
        server
    }

    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Drops the runtime, and with it the listener and every open connection.
    pub(crate) fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Serves again on the same port (a fresh port on the first start).
    pub(crate) fn resume(&mut self) {
        if self.runtime.is_some() {
            return;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("registry-standin")
            .enable_all()
            .build()
            .expect("a runtime for the stand-in");
        let deadline = Instant::now() + Duration::from_secs(10);
        // The port may linger for a moment after a stop; std sets SO_REUSEADDR. Bound
        // here, not in the runtime, so this works from inside another runtime too.
        let listener = loop {
            match std::net::TcpListener::bind(self.address) {
                Ok(listener) => break listener,
                Err(error) if Instant::now() > deadline => panic!("cannot bind {}: {error}", self.address),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        listener.set_nonblocking(true).expect("a non-blocking listener");
        self.address = listener.local_addr().expect("a bound address");
        let router = self.router.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
            let _ = axum::serve(listener, router).await;
        });
        self.runtime = Some(runtime);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
