//! The ADS endpoint istiod dials, and one task per connected istiod stream.
//!
//! The gRPC service is written out by hand over tonic's server machinery (what
//! `tonic-build` would generate for one bidirectional method), which needs no `protoc`
//! and no generated crate. Each stream runs on its own task: a client that stops
//! reading blocks only its own pushes, and the served set is shared, never copied per
//! client until it is encoded.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

use crate::proto::DiscoveryRequest;
use crate::served::Entries;
use crate::stream::{Answer, Next, StreamState};
use crate::wire::{Codec, Encoded};

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const METHOD: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
/// Responses queued per stream before its task waits for the client to read.
const QUEUED_RESPONSES: usize = 4;
/// `version_info` of an empty answer.
const EMPTY_VERSION: &str = "empty";

/// What one connected client reports, for logs and metrics.
pub trait Observer: Send + Sync + 'static {
    fn connected(&self, _node: &str) {}
    fn disconnected(&self, _node: &str) {}
    fn pushed(&self, _type_url: &str, _bytes: usize) {}
    fn acked(&self, _node: &str, _type_url: &str, _version: &str, _after: std::time::Duration) {}
}

/// The ADS service.
#[derive(Clone)]
pub struct Ads {
    inner: Arc<Inner>,
}

/// Streams served at once by default: every istiod holds one.
pub const DEFAULT_MAX_STREAMS: usize = 64;
/// The longest node id shown in logs and metric labels.
const MAX_NODE_ID: usize = 128;

/// A client's node id as logs and metrics show it: printable and bounded, whatever the
/// client sent.
pub fn shown_node_id(id: &str) -> String {
    let mut shown: String = id
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(MAX_NODE_ID)
        .collect();
    if id.chars().count() > MAX_NODE_ID {
        shown.push('…');
    }
    shown
}

struct Inner {
    offers: watch::Receiver<Option<Entries>>,
    streams: AtomicU64,
    /// Streams open now, and the most allowed.
    open: std::sync::atomic::AtomicUsize,
    max_streams: usize,
    /// Makes nonces unique across restarts of the process too.
    process: String,
    observer: Arc<dyn Observer>,
}

impl Ads {
    pub fn new(offers: watch::Receiver<Option<Entries>>, observer: Arc<dyn Observer>) -> Ads {
        let process = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        Ads {
            inner: Arc::new(Inner {
                offers,
                streams: AtomicU64::new(0),
                open: std::sync::atomic::AtomicUsize::new(0),
                max_streams: DEFAULT_MAX_STREAMS,
                process,
                observer,
            }),
        }
    }
}

impl Ads {
    /// At most `max` streams at once; more are refused (`RESOURCE_EXHAUSTED`).
    pub fn max_streams(self, max: usize) -> Ads {
        let inner = Inner {
            offers: self.inner.offers.clone(),
            streams: AtomicU64::new(0),
            open: std::sync::atomic::AtomicUsize::new(0),
            max_streams: max.max(1),
            process: self.inner.process.clone(),
            observer: Arc::clone(&self.inner.observer),
        };
        Ads {
            inner: Arc::new(inner),
        }
    }
}

impl tonic::server::NamedService for Ads {
    const NAME: &'static str = SERVICE;
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<B> tower_service::Service<http::Request<B>> for Ads
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != METHOD {
            // Delta and everything else: istiod never uses them for a config source.
            return Box::pin(async {
                Ok(Status::unimplemented("only StreamAggregatedResources").into_http())
            });
        }
        let method = Method(Arc::clone(&self.inner));
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(Codec)
                .max_decoding_message_size(4 << 20)
                .max_encoding_message_size(usize::MAX);
            Ok(grpc.streaming(method, request).await)
        })
    }
}

struct Method(Arc<Inner>);

impl tonic::server::StreamingService<DiscoveryRequest> for Method {
    type Response = Encoded;
    type ResponseStream = Responses;
    type Future = BoxFuture<Result<tonic::Response<Responses>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<DiscoveryRequest>>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move {
            if inner.open.fetch_add(1, Ordering::AcqRel) >= inner.max_streams {
                inner.open.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!(
                    max = inner.max_streams,
                    "an MCP stream refused: the server serves this many at once (sinks.mcp.max_streams)"
                );
                return Err(Status::resource_exhausted(format!(
                    "this server serves at most {} streams at once",
                    inner.max_streams
                )));
            }
            let n = inner.streams.fetch_add(1, Ordering::Relaxed) + 1;
            let (tx, rx) = mpsc::channel(QUEUED_RESPONSES);
            let state = StreamState::new(format!("{}.{n}", inner.process));
            tokio::spawn(run_stream(request.into_inner(), tx, inner, state));
            Ok(tonic::Response::new(Responses(rx)))
        })
    }
}

/// The responses of one stream, as tonic sends them.
pub struct Responses(mpsc::Receiver<Result<Encoded, Status>>);

impl Stream for Responses {
    type Item = Result<Encoded, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

async fn run_stream(
    mut requests: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<Encoded, Status>>,
    inner: Arc<Inner>,
    mut state: StreamState,
) {
    let mut offers = inner.offers.clone();
    let mut node = String::from("(no node yet)");
    let mut announced = false;
    loop {
        tokio::select! {
            message = requests.message() => {
                let request = match message {
                    Ok(Some(request)) => request,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(node = %node, %status, "MCP stream ended by an error");
                        break;
                    }
                };
                let next = state.request(request, Instant::now());
                if !announced && let Some(id) = state.node_id() {
                    node = shown_node_id(id);
                    announced = true;
                    tracing::info!(node = %node, "istiod connected to the MCP server");
                    inner.observer.connected(&node);
                }
                match next {
                    Next::Respond(type_url) => {
                        // Entry types asked for before the set is complete get their
                        // answer when it is (below).
                        let offer = offers.borrow().clone();
                        respond(&tx, &mut state, &offer, &type_url, &inner).await;
                    }
                    Next::Acked { type_url, version, after } => {
                        inner.observer.acked(&node, &type_url, &version, after);
                    }
                    Next::Nothing => {}
                    Next::Refuse(why) => {
                        tracing::warn!(node = %node, "MCP stream ended: {why}");
                        let _ = tx.send(Err(Status::resource_exhausted(why))).await;
                        break;
                    }
                }
            }
            changed = offers.changed() => {
                if changed.is_err() {
                    break;
                }
                let offer = offers.borrow_and_update().clone();
                let Some(entries) = offer else { continue };
                let subscribed: Vec<(String, Option<String>)> = state
                    .subscribed()
                    .map(|(url, sent)| (url.to_string(), sent.map(str::to_string)))
                    .collect();
                for (type_url, sent) in subscribed {
                    let Answer::Entries(kind) = Answer::of(&type_url) else { continue };
                    if sent.as_deref() == Some(entries.of(kind).version.as_str()) {
                        continue;
                    }
                    respond(&tx, &mut state, &Some(entries.clone()), &type_url, &inner).await;
                }
            }
            () = tx.closed() => break,
        }
    }
    if announced {
        tracing::info!(node = %node, "istiod disconnected from the MCP server");
        inner.observer.disconnected(&node);
    }
    inner.open.fetch_sub(1, Ordering::AcqRel);
}

/// Sends the answer for `type_url`; false when it must wait for a complete set.
async fn respond(
    tx: &mpsc::Sender<Result<Encoded, Status>>,
    state: &mut StreamState,
    offer: &Option<Entries>,
    type_url: &str,
    inner: &Inner,
) -> bool {
    let (version, resources) = match Answer::of(type_url) {
        Answer::Empty => (EMPTY_VERSION.to_string(), bytes::Bytes::new()),
        Answer::Entries(kind) => match offer {
            Some(entries) => {
                let set = entries.of(kind);
                (set.version.clone(), set.resources.clone())
            }
            None => return false,
        },
    };
    let nonce = state.sending(type_url, &version, Instant::now());
    let response = Encoded::response(&version, type_url, &nonce, &resources);
    let bytes = response.len();
    if tx.send(Ok(response)).await.is_ok() {
        inner.observer.pushed(type_url, bytes);
    }
    true
}

/// An observer that records nothing (the stream's own log lines still appear).
pub struct Unobserved;

impl Observer for Unobserved {}

/// The server certificate and key, PEM, for istiod dialing with `tlsSettings.mode:
/// SIMPLE` (1.26+); istiod checks the certificate's DNS names against its `sni` or the
/// host it dials. With `files`, the pair is read again from them when they change.
#[derive(Clone)]
pub struct ServerTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub files: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Clients must present a certificate this CA (PEM) issued.
    pub client_ca_pem: Option<Vec<u8>>,
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the TLS certificate or key is not usable: {0}")]
    Tls(String),
}

/// The bound listener and the service, ready to serve.
pub struct Serving {
    listener: tokio::net::TcpListener,
    ads: Ads,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Serving {
    /// Binds `address` and checks the certificate now, so a port already taken or a bad
    /// key fails at start, not later.
    pub async fn bind(
        address: std::net::SocketAddr,
        ads: Ads,
        tls: Option<&ServerTls>,
    ) -> Result<Serving, ServeError> {
        let tls = match tls {
            Some(tls) => {
                let first =
                    crate::tls::certified_key(&tls.cert_pem, &tls.key_pem).map_err(ServeError::Tls)?;
                let resolver = Arc::new(crate::tls::Reloading::new(first, tls.files.clone()));
                Some(crate::tls::acceptor(resolver, tls.client_ca_pem.as_deref()).map_err(ServeError::Tls)?)
            }
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| ServeError::Listen { address, source })?;
        Ok(Serving { listener, ads, tls })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes. HTTP/2 keepalive finds an istiod that went
    /// away without closing its stream; istiod's own pings (every 30 s) are answered.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let max = self.ads.inner.max_streams;
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
            .add_service(self.ads)
            .serve_with_incoming_shutdown(crate::incoming::incoming(self.listener, self.tls, max), shutdown)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_id_is_shown_printable_and_bounded() {
        assert_eq!(
            shown_node_id("sidecar~10.0.0.1~istiod"),
            "sidecar~10.0.0.1~istiod"
        );
        assert_eq!(shown_node_id("a\nforged\tline"), "a?forged?line");
        let long = shown_node_id(&"n".repeat(10_000));
        assert_eq!(long.chars().count(), MAX_NODE_ID + 1);
        assert!(long.ends_with('…'));
    }
}
