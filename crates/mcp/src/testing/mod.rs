//! Test support (the `testing` feature): a client that reads an MCP source the way
//! istiod's `pkg/adsc` does: the
//! profile's type list in order, each with a Go time string as its nonce, the Node on
//! the first request only, an ACK with the full Node after every response, and a store
//! with istiod's rules (a response is the whole set; an unchanged version is ignored;
//! a resource in the wrong envelope, with a bad name, for another revision or failing
//! istiod's validation is dropped without a word to the server).

pub mod cases;
pub mod fixtures;
mod istiod_checks;
pub mod proxy;
pub use istiod_checks::{REVISION_LABEL, in_revision, refusal as istiod_refusal};

use std::collections::BTreeMap;
use std::time::Duration;

use crate::proto::{self, DiscoveryRequest, DiscoveryResponse, Node};
use prost::Message;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// Which istiod releases to behave like.
#[derive(Clone, Copy, Debug)]
pub enum Profile {
    /// 1.20 – 1.23: `v1alpha3`/`v1beta1` type URLs.
    Istio120,
    /// 1.24 – 1.29: `v1`.
    Istio124,
    /// 1.30 and later: `v1` plus TrafficExtension.
    Istio130,
}

impl Profile {
    pub fn types(self) -> Vec<&'static str> {
        let mut types = vec!["core/v1alpha1/MeshConfig"];
        match self {
            Profile::Istio120 => types.extend([
                "security.istio.io/v1beta1/AuthorizationPolicy",
                "networking.istio.io/v1alpha3/DestinationRule",
                "networking.istio.io/v1alpha3/EnvoyFilter",
                "networking.istio.io/v1alpha3/Gateway",
                "security.istio.io/v1beta1/PeerAuthentication",
                "networking.istio.io/v1beta1/ProxyConfig",
                "security.istio.io/v1beta1/RequestAuthentication",
                "networking.istio.io/v1alpha3/ServiceEntry",
                "networking.istio.io/v1alpha3/Sidecar",
                "telemetry.istio.io/v1alpha1/Telemetry",
                "networking.istio.io/v1alpha3/VirtualService",
                "extensions.istio.io/v1alpha1/WasmPlugin",
                "networking.istio.io/v1alpha3/WorkloadEntry",
                "networking.istio.io/v1alpha3/WorkloadGroup",
            ]),
            Profile::Istio124 | Profile::Istio130 => {
                types.extend([
                    "security.istio.io/v1/AuthorizationPolicy",
                    "networking.istio.io/v1/DestinationRule",
                    "networking.istio.io/v1alpha3/EnvoyFilter",
                    "networking.istio.io/v1/Gateway",
                    "security.istio.io/v1/PeerAuthentication",
                    "networking.istio.io/v1beta1/ProxyConfig",
                    "security.istio.io/v1/RequestAuthentication",
                    "networking.istio.io/v1/ServiceEntry",
                    "networking.istio.io/v1/Sidecar",
                    "telemetry.istio.io/v1/Telemetry",
                ]);
                if matches!(self, Profile::Istio130) {
                    types.push("extensions.istio.io/v1alpha1/TrafficExtension");
                }
                types.extend([
                    "networking.istio.io/v1/VirtualService",
                    "extensions.istio.io/v1alpha1/WasmPlugin",
                    "networking.istio.io/v1/WorkloadEntry",
                    "networking.istio.io/v1/WorkloadGroup",
                ]);
            }
        }
        types
    }

    pub fn service_entry(self) -> &'static str {
        match self {
            Profile::Istio120 => "networking.istio.io/v1alpha3/ServiceEntry",
            _ => "networking.istio.io/v1/ServiceEntry",
        }
    }
}

/// What istiod's store did, one event per object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Create(String),
    Update(String),
    Delete(String),
}

/// One object as istiod's memory store holds it.
#[derive(Clone, Debug)]
pub struct Stored {
    pub version: String,
    pub body: prost_types::Any,
    pub create_time: Option<prost_types::Timestamp>,
}

/// How istiod dials: its revision and keepalive (`GRPC_KEEPALIVE_INTERVAL`, 30 s;
/// `GRPC_KEEPALIVE_TIMEOUT`, 10 s; no pings without a stream).
#[derive(Clone, Debug)]
pub struct Dial {
    pub profile: Profile,
    pub node_id: String,
    /// `REVISION`; the Helm chart sets `default`.
    pub revision: String,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Dial {
    pub fn new(profile: Profile, node_id: &str) -> Dial {
        Dial {
            profile,
            node_id: node_id.to_string(),
            revision: "default".into(),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }

    fn endpoint(&self, uri: String) -> tonic::transport::Endpoint {
        Channel::from_shared(uri)
            .expect("a valid URI")
            .initial_stream_window_size(WINDOW)
            .initial_connection_window_size(WINDOW)
            .http2_keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout)
            .keep_alive_while_idle(false)
    }

    /// The Node istiod sends: `{GENERATOR: api, ISTIO_REVISION, ISTIO_VERSION}`, the
    /// revision left out when it is empty.
    fn node(&self) -> Node {
        let text = |s: &str| prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(s.to_string())),
        };
        let mut fields = BTreeMap::from([
            ("GENERATOR".to_string(), text("api")),
            ("ISTIO_VERSION".to_string(), text("65536.65536.65536")),
        ]);
        if !self.revision.is_empty() {
            fields.insert("ISTIO_REVISION".into(), text(&self.revision));
        }
        Node {
            id: self.node_id.clone(),
            metadata: Some(prost_types::Struct { fields }),
            ..Default::default()
        }
    }
}

pub struct Istiod {
    pub profile: Profile,
    dial: Dial,
    node: Node,
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: tonic::Streaming<DiscoveryResponse>,
    /// Per type URL, name → object.
    pub store: BTreeMap<String, BTreeMap<String, Stored>>,
    pub events: Vec<Event>,
    /// Type URLs answered at least once.
    pub synced: std::collections::BTreeSet<String>,
    pub responses_seen: usize,
    pub nonces: std::collections::BTreeSet<String>,
    /// The stream ended or failed; [`Istiod::reconnect`] opens a new one.
    pub broken: bool,
    /// Responses received per type URL, over every stream.
    pub answers: BTreeMap<String, usize>,
    /// Encoded size of the last response.
    pub last_bytes: usize,
    /// Off: responses are ACKed but not stored (a bench's extra clients).
    pub keep_store: bool,
    /// Off: responses are stored but never ACKed (a server must not wait for ACKs).
    pub acks: bool,
    /// What istiod would have logged about a resource it dropped: name and reason.
    pub dropped: Vec<(String, String)>,
}

/// istiod's HTTP/2 windows (`WithInitialWindowSize`, `WithInitialConnWindowSize`).
const WINDOW: u32 = 1 << 20;

fn go_time_nonce(n: usize) -> String {
    format!("2026-12-01 10:00:{n:02}.123456789 +0000 UTC m=+0.{n:09}")
}

impl Istiod {
    pub async fn connect(address: std::net::SocketAddr, profile: Profile, node_id: &str) -> Istiod {
        Istiod::dial(address, Dial::new(profile, node_id))
            .await
            .expect("the MCP server accepts connections")
    }

    /// istiod's first dial: when it fails, istiod exits (`configSources` fail closed).
    pub async fn dial(address: std::net::SocketAddr, dial: Dial) -> Result<Istiod, tonic::Status> {
        let channel = dial
            .endpoint(format!("http://{address}"))
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        Istiod::over(channel, dial).await
    }

    /// As istiod ≥ 1.26 with `tlsSettings: {mode: SIMPLE, caCertificates, sni}`.
    pub async fn connect_tls(
        address: std::net::SocketAddr,
        ca_pem: &[u8],
        sni: &str,
        profile: Profile,
        node_id: &str,
    ) -> Result<Istiod, String> {
        Istiod::connect_tls_as(address, ca_pem, sni, None, profile, node_id).await
    }

    /// [`Istiod::connect_tls`], presenting `identity` (certificate and key, PEM) when
    /// given.
    pub async fn connect_tls_as(
        address: std::net::SocketAddr,
        ca_pem: &[u8],
        sni: &str,
        identity: Option<(&[u8], &[u8])>,
        profile: Profile,
        node_id: &str,
    ) -> Result<Istiod, String> {
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
            .domain_name(sni);
        if let Some((cert, key)) = identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        let dial = Dial::new(profile, node_id);
        let channel = dial
            .endpoint(format!("https://{address}"))
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        // With TLS 1.3 a server refuses a client's certificate after the client thinks
        // the handshake done: the refusal comes with the first request.
        Istiod::over(channel, dial)
            .await
            .map_err(|status| status.to_string())
    }

    async fn over(channel: Channel, dial: Dial) -> Result<Istiod, tonic::Status> {
        let node = dial.node();
        let (requests, responses) = open(channel, dial.profile, &node).await?;
        Ok(Istiod {
            profile: dial.profile,
            dial,
            node,
            requests,
            responses,
            store: BTreeMap::new(),
            events: Vec::new(),
            synced: Default::default(),
            responses_seen: 0,
            nonces: Default::default(),
            broken: false,
            answers: BTreeMap::new(),
            last_bytes: 0,
            keep_store: true,
            acks: true,
            dropped: Vec::new(),
        })
    }

    /// What istiod does when its stream breaks: waits out its backoff (0.5 s, ×1.5,
    /// ±50 %, at most 60 s) between attempts, then opens a new stream and asks for every
    /// type again, keeping its store and its synced flags. Gives up after `patience`.
    pub async fn reconnect(&mut self, address: std::net::SocketAddr, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        let mut backoff = Backoff::new();
        loop {
            tokio::time::sleep(backoff.next()).await;
            if let Ok(channel) = self.dial.endpoint(format!("http://{address}")).connect().await
                && let Ok((requests, responses)) = open(channel, self.profile, &self.node).await
            {
                self.requests = requests;
                self.responses = responses;
                self.broken = false;
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
        }
    }

    /// Handles the next response within `timeout`; false when none came.
    pub async fn next(&mut self, timeout: Duration) -> bool {
        if self.broken {
            return false;
        }
        let Ok(message) = tokio::time::timeout(timeout, self.responses.message()).await else {
            return false;
        };
        let Ok(Some(response)) = message else {
            // The server went away: istiod keeps its store and reconnects.
            self.broken = true;
            return false;
        };
        self.responses_seen += 1;
        *self.answers.entry(response.type_url.clone()).or_default() += 1;
        self.last_bytes = prost::Message::encoded_len(&response);
        assert!(!response.nonce.is_empty(), "every response has a nonce");
        assert!(self.nonces.insert(response.nonce.clone()), "nonces are unique");
        assert!(
            self.profile.types().contains(&response.type_url.as_str()),
            "only requested types are answered: {}",
            response.type_url
        );
        if response.type_url == "core/v1alpha1/MeshConfig" && !response.resources.is_empty() {
            return true;
        }
        if self.keep_store {
            self.handle(&response);
        }
        self.synced.insert(response.type_url.clone());
        if self.acks
            && self
                .requests
                .send(DiscoveryRequest {
                    node: Some(self.node.clone()),
                    type_url: response.type_url.clone(),
                    version_info: response.version_info.clone(),
                    response_nonce: response.nonce.clone(),
                    ..Default::default()
                })
                .await
                .is_err()
        {
            self.broken = true;
        }
        true
    }

    /// istiod's handleMCP: the response is the whole set of its type.
    fn handle(&mut self, response: &DiscoveryResponse) {
        let store = self.store.entry(response.type_url.clone()).or_default();
        let mut received = BTreeMap::new();
        for any in &response.resources {
            if any.type_url != proto::RESOURCE_TYPE {
                self.dropped
                    .push((String::new(), format!("mismatched message type {}", any.type_url)));
                continue;
            }
            let Ok(resource) = proto::Resource::decode(any.value.as_slice()) else {
                self.dropped
                    .push((String::new(), "the resource does not decode".into()));
                continue;
            };
            let Some(meta) = resource.metadata else {
                continue;
            };
            if !in_revision(&meta.labels, &self.dial.revision) {
                continue;
            }
            if meta.name.split('/').count() != 2 {
                self.dropped.push((meta.name, "invalid name".into()));
                continue;
            }
            let Some(body) = resource.body else { continue };
            received.insert(
                meta.name.clone(),
                Stored {
                    version: meta.version,
                    body,
                    create_time: meta.create_time,
                },
            );
        }
        for (name, object) in received.iter() {
            let changes = match store.get(name) {
                None => true,
                Some(old) => old.version != object.version || object.version.is_empty(),
            };
            if !changes {
                continue;
            }
            // A create that fails validation leaves no object; an update that fails
            // keeps the old one.
            // Validation runs on what changes only, as the store's Create and Update do.
            if let Some(why) = istiod_refusal(self.profile, &response.type_url, &object.body) {
                self.dropped
                    .push((name.clone(), format!("validation failed: {why}")));
                continue;
            }
            let event = if store.contains_key(name) {
                Event::Update(name.clone())
            } else {
                Event::Create(name.clone())
            };
            self.events.push(event);
            store.insert(name.clone(), object.clone());
        }
        let gone: Vec<String> = store
            .keys()
            .filter(|k| !received.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            store.remove(&name);
            self.events.push(Event::Delete(name));
        }
    }

    /// Reads responses until every Pilot type has been answered.
    pub async fn wait_synced(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.is_synced() {
                return true;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || !self.next(left).await {
                return self.is_synced();
            }
        }
    }

    pub fn is_synced(&self) -> bool {
        self.profile
            .types()
            .iter()
            .skip(1)
            .all(|t| self.synced.contains(*t))
    }

    pub fn service_entries(&self) -> Option<&BTreeMap<String, Stored>> {
        self.store.get(self.profile.service_entry())
    }
}

/// istiod's reconnect schedule (cenkalti/backoff defaults as Istio sets them).
struct Backoff {
    interval: Duration,
    seed: u64,
}

impl Backoff {
    fn new() -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 | 1);
        Backoff {
            interval: Duration::from_millis(500),
            seed,
        }
    }

    fn next(&mut self) -> Duration {
        // xorshift: jitter, not cryptography.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let factor = 0.5 + (self.seed % 1000) as f64 / 1000.0;
        let wait = self.interval.mul_f64(factor);
        self.interval = self.interval.mul_f64(1.5).min(Duration::from_secs(60));
        wait
    }
}

type Opened = (
    mpsc::Sender<DiscoveryRequest>,
    tonic::Streaming<DiscoveryResponse>,
);

/// One stream as istiod opens it: every type of the profile, in order, each with a Go
/// time string for a nonce, the Node on the first only.
async fn open(channel: Channel, profile: Profile, node: &Node) -> Result<Opened, tonic::Status> {
    // istiod takes responses of any size (`MaxCallRecvMsgSize(math.MaxInt32)`): a
    // whole set of 10,000 entries is tens of MiB.
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(i32::MAX as usize);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let (requests, rx) = mpsc::channel(64);
    for (n, type_url) in profile.types().into_iter().enumerate() {
        requests
            .send(DiscoveryRequest {
                type_url: type_url.to_string(),
                response_nonce: go_time_nonce(n),
                node: (n == 0).then(|| node.clone()),
                ..Default::default()
            })
            .await
            .map_err(|_| tonic::Status::internal("request queue closed"))?;
    }
    let path = http::uri::PathAndQuery::from_static(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
    );
    let codec = tonic_prost::ProstCodec::<DiscoveryRequest, DiscoveryResponse>::default();
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let responses = grpc
        .streaming(tonic::Request::new(stream), path, codec)
        .await?
        .into_inner();
    Ok((requests, responses))
}
