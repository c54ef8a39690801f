//! A thin etcd v3 client over tonic: range, watch and authenticate, plus the writes
//! tests need. Written by hand rather than taken from `etcd-client` because that
//! crate generates its code at build time with `protoc` and the protobuf include
//! files, which a plain Rust toolchain does not have; the calls used here are few and
//! etcd keeps their wire format stable across v3 releases.

use std::time::Duration;

use http::uri::PathAndQuery;
use prost::Message;
use tokio::sync::mpsc;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status, Streaming};

use super::proto::{
    AuthenticateRequest, AuthenticateResponse, RangeRequest, RangeResponse, WatchCreateRequest, WatchRequest,
    WatchResponse,
};
use crate::requests::Requests;
use crate::secret::Secret;

const RANGE: &str = "/etcdserverpb.KV/Range";
const WATCH: &str = "/etcdserverpb.Watch/Watch";
const AUTHENTICATE: &str = "/etcdserverpb.Auth/Authenticate";

/// How to reach the cluster.
pub struct ConnectOptions {
    pub connect_timeout: Duration,
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
    pub max_message: usize,
    pub tls: Option<ClientTlsConfig>,
    /// User and password for etcd's authentication: a token is fetched at connect and
    /// fetched again when etcd says it expired.
    pub user: Option<(String, Secret)>,
    /// Where the calls are counted (a detached counter when nobody reads them).
    pub requests: Requests,
}

#[derive(Clone)]
pub struct EtcdClient {
    channel: Channel,
    max_message: usize,
    user: Option<(String, Secret)>,
    token: Option<MetadataValue<Ascii>>,
    requests: Requests,
}

/// A watch: its responses, and the request side, which must stay open (etcd ends the
/// watch when the client closes its half).
pub struct WatchStream {
    _requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

impl WatchStream {
    /// The next response; `Ok(None)` when etcd closed the stream. Cancel safe.
    pub async fn message(&mut self) -> Result<Option<WatchResponse>, Status> {
        self.responses.message().await
    }
}

fn endpoint(address: &str, options: &ConnectOptions) -> Result<Endpoint, String> {
    let uri = if address.contains("://") {
        address.to_string()
    } else if options.tls.is_some() {
        format!("https://{address}")
    } else {
        format!("http://{address}")
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|_| format!("{address:?} is not a URL"))?
        .connect_timeout(options.connect_timeout)
        .http2_keep_alive_interval(options.keep_alive_interval)
        .keep_alive_timeout(options.keep_alive_timeout)
        .keep_alive_while_idle(true);
    if let Some(tls) = &options.tls {
        endpoint = endpoint.tls_config(tls.clone()).map_err(|e| e.to_string())?;
    }
    Ok(endpoint)
}

impl EtcdClient {
    /// Dials the members in order and keeps the first that answers, so a member that is
    /// down costs one connect timeout, not every request (a balanced channel keeps
    /// sending requests to a member it cannot reach). When that member goes away, the
    /// source reconnects and the next member that answers takes over.
    pub async fn connect(addresses: &[String], options: ConnectOptions) -> Result<EtcdClient, String> {
        let endpoints = addresses
            .iter()
            .map(|a| endpoint(a, &options))
            .collect::<Result<Vec<_>, _>>()?;
        let mut failures = Vec::new();
        let mut channel = None;
        for (address, endpoint) in addresses.iter().zip(&endpoints) {
            match endpoint.connect().await {
                Ok(connected) => {
                    channel = Some(connected);
                    break;
                }
                Err(e) => failures.push(format!("{address}: {}", transport_error(&e))),
            }
        }
        let Some(channel) = channel else {
            return Err(failures.join("; "));
        };
        let mut client = EtcdClient {
            channel,
            max_message: options.max_message,
            user: options.user,
            token: None,
            requests: options.requests,
        };
        if client.user.is_some() {
            client.authenticate().await.map_err(|s| status_text(&s))?;
        }
        Ok(client)
    }

    async fn authenticate(&mut self) -> Result<(), Status> {
        let Some((name, password)) = &self.user else {
            return Ok(());
        };
        let request = AuthenticateRequest {
            name: name.clone(),
            password: password.expose().to_string(),
        };
        self.token = None;
        let response: AuthenticateResponse = self.call(AUTHENTICATE, request).await?;
        let token = MetadataValue::try_from(response.token.as_str())
            .map_err(|_| Status::internal("etcd answered an authentication token that is not ASCII"))?;
        self.token = Some(token);
        Ok(())
    }

    fn grpc(&self) -> tonic::client::Grpc<Channel> {
        tonic::client::Grpc::new(self.channel.clone()).max_decoding_message_size(self.max_message)
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request.metadata_mut().insert("token", token.clone());
        }
        request
    }

    async fn call<Q, A>(&self, path: &'static str, message: Q) -> Result<A, Status>
    where
        Q: Message + Send + Sync + 'static,
        A: Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc();
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Q, A>::default();
        let request = self.request(message);
        self.requests.count();
        grpc.unary(request, PathAndQuery::from_static(path), codec)
            .await
            .map(tonic::Response::into_inner)
    }

    /// A unary call, authenticating again once when etcd says the token expired (its
    /// simple tokens last five minutes by default).
    async fn unary<Q, A>(&mut self, path: &'static str, message: Q) -> Result<A, Status>
    where
        Q: Message + Clone + Send + Sync + 'static,
        A: Message + Default + Send + Sync + 'static,
    {
        match self.call(path, message.clone()).await {
            Err(status) if is_expired_token(&status) && self.user.is_some() => {
                self.authenticate().await?;
                self.call(path, message).await
            }
            other => other,
        }
    }

    pub async fn range(&mut self, request: RangeRequest) -> Result<RangeResponse, Status> {
        self.unary(RANGE, request).await
    }

    /// Opens a watch; the first response says whether etcd created it.
    pub async fn watch(&mut self, create: WatchCreateRequest) -> Result<WatchStream, Status> {
        match self.open_watch(create.clone()).await {
            Err(status) if is_expired_token(&status) && self.user.is_some() => {
                self.authenticate().await?;
                self.open_watch(create).await
            }
            other => other,
        }
    }

    async fn open_watch(&self, create: WatchCreateRequest) -> Result<WatchStream, Status> {
        let mut grpc = self.grpc();
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (requests, rx) = mpsc::channel(1);
        requests
            .send(WatchRequest {
                create_request: Some(create),
            })
            .await
            .map_err(|_| Status::internal("the watch request queue closed"))?;
        let stream =
            futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        let codec = tonic_prost::ProstCodec::<WatchRequest, WatchResponse>::default();
        self.requests.count();
        let responses = grpc
            .streaming(self.request(stream), PathAndQuery::from_static(WATCH), codec)
            .await?
            .into_inner();
        Ok(WatchStream {
            _requests: requests,
            responses,
        })
    }
}

fn is_expired_token(status: &Status) -> bool {
    status.code() == Code::Unauthenticated && status.message().contains("token")
}

/// A transport error with its causes, which tonic keeps apart ("transport error" alone
/// says nothing of a refused connection).
fn transport_error(error: &tonic::transport::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What etcd said, without tonic's details (which may echo request metadata).
pub fn status_text(status: &Status) -> String {
    match status.message() {
        "" => format!("{:?}", status.code()),
        message => format!("{:?}: {message}", status.code()),
    }
}

#[cfg(any(test, feature = "testing"))]
impl WatchStream {
    /// Waits for the next response with events and returns how many it carried.
    pub async fn next_events(&mut self) -> Result<usize, Status> {
        loop {
            match self.message().await? {
                Some(response) if !response.events.is_empty() => return Ok(response.events.len()),
                Some(_) => continue,
                None => return Err(Status::unavailable("etcd closed the watch")),
            }
        }
    }
}

#[cfg(any(test, feature = "testing"))]
mod writes {
    use super::super::proto::writes::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, Written};
    use super::*;

    fn plain_options() -> ConnectOptions {
        ConnectOptions {
            connect_timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            max_message: 64 << 20,
            tls: None,
            user: None,
            requests: Requests::default(),
        }
    }

    impl EtcdClient {
        /// Connects to one member without authentication, for tests and benches.
        pub async fn connect_plain(address: &str) -> Result<EtcdClient, String> {
            EtcdClient::connect(&[address.to_string()], plain_options()).await
        }

        /// Connects to one member as `user`, for tests of etcd's authentication.
        pub async fn connect_as(address: &str, user: &str, password: &str) -> Result<EtcdClient, String> {
            let mut options = plain_options();
            options.user = Some((user.to_string(), Secret::new(password.to_string())));
            EtcdClient::connect(&[address.to_string()], options).await
        }

        /// How many keys lie under `prefix`.
        pub async fn count(&mut self, prefix: &str) -> Result<usize, Status> {
            let request = RangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: super::super::prefix_end(prefix.as_bytes()),
                limit: 0,
                revision: 0,
            };
            Ok(self.range(request).await?.kvs.len())
        }

        pub async fn put(
            &mut self,
            key: impl Into<Vec<u8>>,
            value: impl Into<Vec<u8>>,
        ) -> Result<i64, Status> {
            let request = PutRequest {
                key: key.into(),
                value: value.into(),
            };
            let written: Written = self.unary("/etcdserverpb.KV/Put", request).await?;
            Ok(written.header.map_or(0, |h| h.revision))
        }

        pub async fn delete(&mut self, key: impl Into<Vec<u8>>) -> Result<i64, Status> {
            let request = DeleteRangeRequest {
                key: key.into(),
                range_end: Vec::new(),
            };
            let written: Written = self.unary("/etcdserverpb.KV/DeleteRange", request).await?;
            Ok(written.header.map_or(0, |h| h.revision))
        }

        /// Puts every pair in one transaction: one revision, one watch response.
        pub async fn put_all(&mut self, pairs: Vec<(String, String)>) -> Result<i64, Status> {
            let request = TxnRequest {
                success: pairs
                    .into_iter()
                    .map(|(key, value)| RequestOp {
                        request_put: Some(PutRequest {
                            key: key.into_bytes(),
                            value: value.into_bytes(),
                        }),
                        request_delete_range: None,
                    })
                    .collect(),
            };
            let written: Written = self.unary("/etcdserverpb.KV/Txn", request).await?;
            Ok(written.header.map_or(0, |h| h.revision))
        }

        /// Watches every key under `prefix` from now on.
        pub async fn watch_prefix(&mut self, prefix: &str) -> Result<WatchStream, Status> {
            let create = WatchCreateRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: super::super::prefix_end(prefix.as_bytes()),
                start_revision: 0,
                progress_notify: false,
            };
            self.watch(create).await
        }

        /// Compacts the history up to `revision`, as an operator's `etcdctl compact` does.
        pub async fn compact(&mut self, revision: i64) -> Result<(), Status> {
            #[derive(Clone, PartialEq, prost::Message)]
            struct CompactionRequest {
                #[prost(int64, tag = "1")]
                revision: i64,
                #[prost(bool, tag = "2")]
                physical: bool,
            }
            let request = CompactionRequest {
                revision,
                physical: true,
            };
            let _: Written = self.unary("/etcdserverpb.KV/Compact", request).await?;
            Ok(())
        }
    }
}
