//! The `etcd` registry: services kept as keys under a prefix in etcd v3.
//!
//! Layout: one key per instance, `<prefix>/<service>/<instance id>`. By default the
//! value is etcd's own `naming/endpoints` format (what `endpoints.Manager` of the Go
//! client writes and gRPC's etcd resolver reads):
//!
//! ```json
//! {"Addr": "10.0.0.1:8080", "Metadata": {"version": "v1", "protocol": "grpc", "weight": 5}}
//! ```
//!
//! `Metadata` may be any JSON object: text values become labels as they are, other
//! values their JSON text. Its keys `weight` (0 to 4294967295) and `healthy`
//! (true/false) set the instance's weight and health instead of becoming labels;
//! `protocol` names the port's protocol. [`ValueFormat::Json`] reads other JSON
//! layouts through configurable field paths.
//!
//! Changes are followed with one prefix watch, started from the revision of the
//! initial listing. After a disconnect the watch resumes from the last revision seen,
//! so nothing is listed again and nothing is missed; only when etcd has compacted that
//! revision away is everything listed again. A service exists while it has at least
//! one key: deleting a service's last key deletes the service.

mod config;
pub use config::EtcdBlock;
mod client;
mod layout;
mod proto;
mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use registry_sync_catalog::{RegistrySnapshot, Skipped};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::SourceEvent;
use crate::secret::{Credentials, SecretError};
use crate::state::{Item, Services};
#[cfg(not(any(test, feature = "testing")))]
use client::EtcdClient;
use client::{ConnectOptions, status_text};
#[cfg(any(test, feature = "testing"))]
pub use client::{EtcdClient, WatchStream};
pub use layout::PORT_NAME;
use layout::{KeyPlace, Layout};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds every unary request: a balanced channel whose endpoints are all down would
/// otherwise wait for one to come back, forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// HTTP/2 pings find a dead server or a silently dropped connection while the watch
/// has nothing to say.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys per range request of a listing, so no answer nears the message size limit.
const PAGE: i64 = 500;
/// etcd allows values up to 1.5 MiB; a page or a watch batch of large values must fit.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A dot-separated path to a field of a JSON object, e.g. `endpoint.port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    /// Refuses empty paths and empty segments (`a..b`).
    pub fn parse(path: &str) -> Result<FieldPath, String> {
        let segments: Vec<String> = path.split('.').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) {
            return Err(format!(
                "{path:?} is not a field path; write field names separated by dots, e.g. endpoint.port"
            ));
        }
        Ok(FieldPath(segments))
    }

    fn segments(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// Where the `json` value format finds each instance field. A field that is missing
/// from a value takes its default: healthy, no weight, no metadata, and the port from
/// `host:port` in the address field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonFields {
    pub address: FieldPath,
    pub port: FieldPath,
    pub metadata: FieldPath,
    pub healthy: FieldPath,
    pub weight: FieldPath,
}

impl Default for JsonFields {
    fn default() -> Self {
        let path = |name: &str| FieldPath(vec![name.to_string()]);
        JsonFields {
            address: path("address"),
            port: path("port"),
            metadata: path("metadata"),
            healthy: path("healthy"),
            weight: path("weight"),
        }
    }
}

/// How the value of an instance key is read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ValueFormat {
    /// etcd's `naming/endpoints`: `{"Addr":"ip:port","Metadata":{…}}`.
    #[default]
    NamingEndpoints,
    /// A JSON object with the fields where [`JsonFields`] says.
    Json(JsonFields),
}

/// TLS towards etcd: the CA that signed the servers' certificates, and optionally a
/// client certificate and key for etcd's client-certificate authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: PathBuf,
    /// `(cert_file, key_file)`.
    pub client: Option<(PathBuf, PathBuf)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `http://host:port` or `https://host:port`, one per cluster member.
    pub endpoints: Vec<String>,
    /// The key prefix the services live under, e.g. `/services`.
    pub prefix: String,
    pub credentials: Option<Credentials>,
    pub tls: Option<TlsFiles>,
    pub format: ValueFormat,
}

/// Why etcd could not be read. Each names the registry and what to check; none carries
/// a secret.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("registry {registry:?}: {error}; check `password_file` or `password_env`")]
    Password { registry: String, error: SecretError },
    #[error(
        "registry {registry:?}: cannot read the TLS file {}: {error}; check `ca_file`, `cert_file` and `key_file`",
        path.display()
    )]
    TlsFile {
        registry: String,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "registry {registry:?}: cannot connect to etcd at {endpoints}: {error}; check `address`, the credentials and that etcd is running"
    )]
    Connect {
        registry: String,
        endpoints: String,
        error: String,
    },
    #[error("registry {registry:?}: {action} at etcd {endpoints} failed: {error}")]
    Request {
        registry: String,
        endpoints: String,
        action: String,
        error: String,
    },
    #[error(
        "registry {registry:?}: etcd at {endpoints} did not answer {action} within {}s; check that it is running and reachable",
        REQUEST_TIMEOUT.as_secs()
    )]
    Timeout {
        registry: String,
        endpoints: String,
        action: String,
    },
}

impl crate::Classified for EtcdError {
    fn reason(&self) -> crate::FailureReason {
        use crate::FailureReason;
        match self {
            EtcdError::Password { .. } => FailureReason::Credentials,
            EtcdError::TlsFile { .. } => FailureReason::Configuration,
            EtcdError::Connect { .. } => FailureReason::Unreachable,
            EtcdError::Request { .. } => FailureReason::BadAnswer,
            EtcdError::Timeout { .. } => FailureReason::Timeout,
        }
    }
}

/// One etcd cluster and prefix serving as one registry.
#[derive(Clone, Debug)]
pub struct EtcdSource {
    registry: String,
    config: EtcdConfig,
}

/// A complete listing: items by service and key, keys outside the layout, revision.
struct Listing {
    revision: i64,
    services: BTreeMap<String, BTreeMap<String, Item>>,
    orphans: BTreeMap<String, Skipped>,
}

impl EtcdSource {
    pub fn new(registry: impl Into<String>, config: EtcdConfig) -> Self {
        EtcdSource {
            registry: registry.into(),
            config,
        }
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Lists the prefix once, for `once`, `plan`, `render` and `check`.
    pub async fn load(&self) -> Result<RegistrySnapshot, EtcdError> {
        let mut client = self.connect().await?;
        let listing = self.list(&mut client).await?;
        let mut state = Services::new(&self.registry);
        state.replace_all(listing.services, listing.orphans);
        Ok(state.snapshot())
    }

    /// Emits the current state, then a snapshot after each batch of changes, until
    /// `cancel` fires or the receiver is dropped. While etcd cannot be reached it
    /// emits one [`SourceEvent::Failed`] and retries with backoff.
    pub async fn watch(self, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
        watch::run(self, tx, cancel).await;
    }

    fn layout(&self) -> Layout {
        Layout::new(&self.registry, &self.config.prefix, self.config.format.clone())
    }

    fn endpoints(&self) -> String {
        self.config.endpoints.join(",")
    }

    fn request_error(&self, action: &str, error: impl fmt::Display) -> EtcdError {
        EtcdError::Request {
            registry: self.registry.clone(),
            endpoints: self.endpoints(),
            action: action.to_string(),
            error: error.to_string(),
        }
    }

    fn timeout_error(&self, action: &str) -> EtcdError {
        EtcdError::Timeout {
            registry: self.registry.clone(),
            endpoints: self.endpoints(),
            action: action.to_string(),
        }
    }

    async fn connect(&self) -> Result<EtcdClient, EtcdError> {
        let user = match &self.config.credentials {
            Some(credentials) => {
                let password = credentials.password.read().map_err(|error| EtcdError::Password {
                    registry: self.registry.clone(),
                    error,
                })?;
                Some((credentials.username.clone(), password))
            }
            None => None,
        };
        let tls = match &self.config.tls {
            Some(tls) => Some(self.tls_config(tls)?),
            None => None,
        };
        let options = ConnectOptions {
            connect_timeout: CONNECT_TIMEOUT,
            keep_alive_interval: KEEP_ALIVE_INTERVAL,
            keep_alive_timeout: KEEP_ALIVE_TIMEOUT,
            max_message: MAX_MESSAGE,
            tls,
            user,
            requests: crate::requests::Requests::of(&self.registry),
        };
        let connect = EtcdClient::connect(&self.config.endpoints, options);
        match tokio::time::timeout(REQUEST_TIMEOUT, connect).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(error)) => Err(EtcdError::Connect {
                registry: self.registry.clone(),
                endpoints: self.endpoints(),
                error,
            }),
            Err(_) => Err(self.timeout_error("the connection")),
        }
    }

    fn tls_config(&self, tls: &TlsFiles) -> Result<tonic::transport::ClientTlsConfig, EtcdError> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|error| EtcdError::TlsFile {
                registry: self.registry.clone(),
                path: path.clone(),
                error,
            })
        };
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&tls.ca_file)?));
        if let Some((cert, key)) = &tls.client {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(config)
    }

    /// Reads every key under the prefix, page by page, all at the revision of the
    /// first page, so the listing is one consistent moment the watch can start from.
    async fn list(&self, client: &mut EtcdClient) -> Result<Listing, EtcdError> {
        let layout = self.layout();
        let end = prefix_end(layout.dir().as_bytes());
        let mut from = layout.dir().as_bytes().to_vec();
        let mut listing = Listing {
            revision: 0,
            services: BTreeMap::new(),
            orphans: BTreeMap::new(),
        };
        let action = format!("listing {}", layout.dir());
        loop {
            let request = proto::RangeRequest {
                key: from.clone(),
                range_end: end.clone(),
                limit: PAGE,
                revision: listing.revision,
            };
            let response = match tokio::time::timeout(REQUEST_TIMEOUT, client.range(request)).await {
                Ok(Ok(response)) => response,
                Ok(Err(status)) => return Err(self.request_error(&action, status_text(&status))),
                Err(_) => return Err(self.timeout_error(&action)),
            };
            if listing.revision == 0 {
                listing.revision = response.header.as_ref().map_or(0, |h| h.revision);
            }
            for kv in &response.kvs {
                match layout.place(&kv.key) {
                    KeyPlace::Instance { service, id } => {
                        let item = layout.item(&service, &id, &kv.value);
                        listing.services.entry(service).or_default().insert(id, item);
                    }
                    KeyPlace::Refused(skipped) => {
                        let key = String::from_utf8_lossy(&kv.key).into_owned();
                        listing.orphans.insert(key, skipped);
                    }
                }
            }
            match response.kvs.last() {
                Some(last) if response.more => {
                    from = last.key.clone();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok(listing)
    }
}

/// The end of the key range of `prefix`: the prefix with its last byte that is not
/// 0xff incremented, as etcd's own clients compute it.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the key space.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_end_of_a_prefix_is_its_successor() {
        assert_eq!(prefix_end(b"/services/"), b"/services0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn field_paths_refuse_empty_segments() {
        assert_eq!(FieldPath::parse("a.b").unwrap().to_string(), "a.b");
        assert!(FieldPath::parse("").is_err());
        assert!(FieldPath::parse("a..b").is_err());
        assert!(FieldPath::parse(".a").is_err());
    }
}
