//! Running an axum router on its own runtime, with fault switches and request counts.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    pub(crate) connections: Arc<Connections>,
}

/// Open connections per client address, and the most one client may hold open (0: no
/// limit) — Consul's `limits.http_max_conns_per_client`, 200 by default: a connection
/// past it is answered `429` and closed, as Consul's connection limiter does.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<BTreeMap<IpAddr, usize>>,
    limit: AtomicUsize,
    refused: AtomicU64,
    peak: AtomicUsize,
}

impl Connections {
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Connections refused for being over the limit.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The most connections one client held open at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn admit(&self, ip: IpAddr) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        let mut open = lock(&self.open);
        let count = open.entry(ip).or_default();
        if limit > 0 && *count >= limit {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        *count += 1;
        self.peak.fetch_max(*count, Ordering::Relaxed);
        true
    }

    fn close(&self, ip: IpAddr) {
        if let Some(count) = lock(&self.open).get_mut(&ip) {
            *count = count.saturating_sub(1);
        }
    }
}

/// A listener that counts each client's open connections and refuses those past the
/// limit.
struct LimitedListener {
    inner: tokio::net::TcpListener,
    connections: Arc<Connections>,
}

const TOO_MANY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: 81\r\nConnection: close\r\n\r\nYour IP is issuing too many concurrent connections, please rate limit your calls\n";

impl axum::serve::Listener for LimitedListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CountedStream, SocketAddr) {
        loop {
            let (mut stream, peer) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            // Go's HTTP servers (Consul's, Eureka's) set TCP_NODELAY on every connection.
            let _ = stream.set_nodelay(true);
            if !self.connections.admit(peer.ip()) {
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let _ = stream.write_all(TOO_MANY).await;
                    let _ = stream.shutdown().await;
                });
                continue;
            }
            let counted = CountedStream {
                stream,
                ip: peer.ip(),
                connections: Arc::clone(&self.connections),
            };
            return (counted, peer);
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection that leaves its client's count when it closes.
struct CountedStream {
    stream: tokio::net::TcpStream,
    ip: IpAddr,
    connections: Arc<Connections>,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.connections.close(self.ip);
    }
}

impl tokio::io::AsyncRead for CountedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
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
            connections: Arc::new(Connections::default()),
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
        let connections = Arc::clone(&self.connections);
        runtime.spawn(async move {
            let inner = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
            let _ = axum::serve(LimitedListener { inner, connections }, router).await;
        });
        self.runtime = Some(runtime);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
