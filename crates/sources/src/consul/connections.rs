//! Consul's HTTP transport: a connection pool that never has more than
//! `max_connections` connections open, idle ones included.
//!
//! Consul counts every open connection of a client against
//! `limits.http_max_conns_per_client`, idle pooled ones as much as busy ones. Bounding
//! the requests in flight does not bound the connections: a connection on its way back
//! to the pool is neither busy nor reusable yet, and the next request opens another
//! (5,000 services at a budget of 64 were measured at 73 to 89 open at once). reqwest
//! cannot tie anything to a connection's lifetime (its connector's connection type is
//! private), so Consul is read through hyper's pooled client over a connector whose
//! every connection holds a permit until it closes: a request past the limit waits for
//! a pooled connection to come back, or for one to close.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::http::{HeaderMap, HeaderValue, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long an unused connection stays in the pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A pooled HTTP/1 client with at most `max_connections` connections open.
#[derive(Clone)]
pub(super) struct Transport {
    client: Client<Limited<HttpsConnector<HttpConnector>>, Empty<Bytes>>,
    #[cfg(test)]
    permits: Arc<Semaphore>,
}

/// An answer read whole.
pub(super) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Why a request got no answer; the text never holds the URL (it may carry a `dc` or
/// `ns` a user considers private, and a proxy's credentials).
#[derive(Debug)]
pub(super) enum Failure {
    /// Connecting, sending or reading failed.
    Transport(String),
    /// No whole answer within the timeout.
    TimedOut(Duration),
    /// The body was longer than the limit (in bytes).
    TooLarge(usize),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transport(error) => f.write_str(error),
            Failure::TimedOut(after) => write!(f, "no answer within {after:?}"),
            Failure::TooLarge(limit) => write!(f, "an answer over {} MiB", limit >> 20),
        }
    }
}

/// Why the transport could not be built.
pub(super) enum SetupError {
    CaFile(String),
    Tls(String),
}

impl Transport {
    pub(super) fn new(
        max_connections: usize,
        ca_file: Option<&Path>,
        connect_timeout: Duration,
    ) -> Result<Transport, SetupError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let pem = std::fs::read(path).map_err(|e| SetupError::CaFile(e.to_string()))?;
            let mut found = 0;
            for certificate in CertificateDer::pem_slice_iter(&pem) {
                let certificate = certificate.map_err(|e| SetupError::CaFile(e.to_string()))?;
                roots.add(certificate).map_err(|e| SetupError::CaFile(e.to_string()))?;
                found += 1;
            }
            if found == 0 {
                return Err(SetupError::CaFile("no PEM certificate in it".into()));
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let permits = Arc::new(Semaphore::new(max_connections));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(max_connections)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(Limited {
                inner: https,
                permits: Arc::clone(&permits),
            });
        Ok(Transport {
            client,
            #[cfg(test)]
            permits,
        })
    }

    /// `GET url`, the whole answer within `timeout`, its body at most `limit` bytes.
    pub(super) async fn get(
        &self,
        url: Uri,
        headers: HeaderMap,
        timeout: Duration,
        limit: usize,
    ) -> Result<Answer, Failure> {
        let exchange = async {
            let mut request = Request::get(url)
                .body(Empty::new())
                .map_err(|e| Failure::Transport(e.to_string()))?;
            *request.headers_mut() = headers;
            let response = self.client.request(request).await.map_err(|e| chain(&e))?;
            let (parts, mut body) = response.into_parts();
            let declared = parts
                .headers
                .get(hyper::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|len| len > limit as u64) {
                return Err(Failure::TooLarge(limit));
            }
            let mut bytes = Vec::with_capacity(declared.unwrap_or(0) as usize);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| chain(&e))?;
                if let Ok(data) = frame.into_data() {
                    if bytes.len() + data.len() > limit {
                        return Err(Failure::TooLarge(limit));
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body: bytes,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(Failure::TimedOut(timeout)))
    }

    /// Connections open now (busy, idle or connecting).
    #[cfg(test)]
    fn open(&self, max_connections: usize) -> usize {
        max_connections - self.permits.available_permits()
    }
}

/// A header value that never reaches a log or a debug print.
pub(super) fn secret_header(value: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(value).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// An error and its causes, as one line: hyper's own text ("client error (Connect)")
/// names no cause.
fn chain(error: &(dyn std::error::Error + 'static)) -> Failure {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    Failure::Transport(text)
}

/// A connector whose connections each hold a permit until they close.
#[derive(Clone)]
struct Limited<C> {
    inner: C,
    permits: Arc<Semaphore>,
}

impl<C> tower_service::Service<Uri> for Limited<C>
where
    C: tower_service::Service<Uri> + Clone + Send + 'static,
    C::Future: Send,
    C::Error: Into<BoxError>,
    C::Response: Send,
{
    type Response = Held<C::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Held<C::Response>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        // The ready service is the one called; a fresh clone takes its place.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let permits = Arc::clone(&self.permits);
        Box::pin(async move {
            let permit = permits.acquire_owned().await?;
            let io = inner.call(uri).await.map_err(Into::into)?;
            Ok(Held { io, _permit: permit })
        })
    }
}

/// A connection and the permit it holds until it is dropped (closed).
struct Held<T> {
    io: T,
    _permit: OwnedSemaphorePermit,
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Held<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Held<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

impl<T: Connection> Connection for Held<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every request after `delay`, keeping connections open, and counts how
    /// many are open at once.
    async fn slow_server(delay: Duration) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (counted, most) = (Arc::clone(&open), Arc::clone(&peak));
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let now = counted.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        tokio::time::sleep(delay).await;
                        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(reply).await.is_err() {
                            break;
                        }
                    }
                    counted.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (format!("http://{address}/"), peak)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_past_the_limit_wait_for_a_connection_instead_of_opening_one() {
        let (url, peak) = slow_server(Duration::from_millis(20)).await;
        let transport = Transport::new(4, None, Duration::from_secs(5)).ok().unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let (transport, url) = (transport.clone(), url.clone());
            tasks.spawn(async move {
                let answer = transport
                    .get(url.parse().unwrap(), HeaderMap::new(), Duration::from_secs(20), 1024)
                    .await
                    .unwrap();
                assert_eq!(answer.body, b"ok");
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=4).contains(&peak), "{peak} connections open at once");
        assert!(transport.open(4) <= 4);
    }

    #[tokio::test]
    async fn a_refused_connection_says_why_and_gives_its_permit_back() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let transport = Transport::new(1, None, Duration::from_secs(5)).ok().unwrap();
        for _ in 0..2 {
            let error = transport
                .get(url.parse().unwrap(), HeaderMap::new(), Duration::from_secs(5), 1024)
                .await
                .err()
                .unwrap();
            assert!(error.to_string().contains("refused"), "{error}");
        }
        assert_eq!(transport.open(1), 0);
    }

    #[tokio::test]
    async fn a_server_signed_by_the_private_ca_is_trusted_and_another_is_refused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ca = registry_sync_testing::tls::TestCa::new();
        let issued = ca.issue(&["127.0.0.1"]);
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut buf = [0u8; 4096];
                    if stream.read(&mut buf).await.unwrap_or(0) > 0 {
                        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        let _ = stream.write_all(reply).await;
                    }
                });
            }
        });
        use rustls::pki_types::pem::PemObject;
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let get = |transport: Transport| {
            let url = url.clone();
            async move {
                transport
                    .get(url.parse().unwrap(), HeaderMap::new(), Duration::from_secs(5), 1024)
                    .await
            }
        };
        let trusting = Transport::new(2, Some(&ca_file), Duration::from_secs(5)).ok().unwrap();
        assert_eq!(get(trusting).await.unwrap().body, b"ok");
        let default_roots = Transport::new(2, None, Duration::from_secs(5)).ok().unwrap();
        let error = get(default_roots).await.err().unwrap().to_string();
        assert!(error.contains("certificate"), "{error}");
        std::fs::write(&ca_file, "not a certificate").unwrap();
        assert!(matches!(
            Transport::new(2, Some(&ca_file), Duration::from_secs(5)),
            Err(SetupError::CaFile(_))
        ));
    }
}
