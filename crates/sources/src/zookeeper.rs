//! The `zookeeper` registry, in the two layouts found in the wild.
//!
//! * [`ZkLayout::Dubbo`]: `/dubbo/<interface>/providers/<URL-encoded provider URL>`.
//!   The interface is the service; a service exists while its `providers` node does,
//!   even with no provider left (it then keeps its ServiceEntry with no endpoints).
//! * [`ZkLayout::Curator`]: `/services/<name>/<id>` with a JSON `ServiceInstance`, as
//!   Apache Curator and Spring Cloud Zookeeper write it. A service exists while its
//!   `<name>` node does.
//!
//! Changes are followed with one persistent recursive watch on the root (ZooKeeper 3.6
//! or newer), registered before the tree is read so nothing falls between the two.
//! ZooKeeper does not replay events missed while a client was disconnected, so a
//! disconnect or an expired session ends the session: one [`SourceEvent::Failed`]
//! keeps the last known state in place downstream, and a new session (with backoff)
//! watches again and reads the whole tree again.

mod config;
pub use config::ZookeeperBlock;
mod curator;
mod dubbo;
mod watch;

use std::collections::BTreeMap;
use std::time::Duration;

use registry_sync_catalog::RegistrySnapshot;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zookeeper_client::{Client, MultiReadResult};

use crate::SourceEvent;
use crate::secret::{Credentials, SecretError};
use crate::state::{Item, Services};
pub use curator::{
    PLAIN_PORT as CURATOR_PLAIN_PORT, SPRING_PORT as CURATOR_SPRING_PORT, SSL_PORT as CURATOR_SSL_PORT,
};

/// Reads per multi-read request: one round trip for many nodes, far below ZooKeeper's
/// 1 MiB packet limit even with large Curator payloads.
const BATCH: usize = 256;
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// How services are laid out under the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZkLayout {
    Dubbo,
    Curator,
}

impl ZkLayout {
    /// `/dubbo` for Dubbo, `/services` for Curator (both projects' defaults).
    pub fn default_root(self) -> &'static str {
        match self {
            ZkLayout::Dubbo => "/dubbo",
            ZkLayout::Curator => "/services",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZookeeperConfig {
    /// The connect string: `host:port`, or an ensemble `h1:2181,h2:2181`.
    pub address: String,
    /// A path every other path is relative to, as in the Java client's connect string.
    pub chroot: Option<String>,
    pub layout: ZkLayout,
    /// The node the services live under, e.g. `/dubbo`.
    pub root: String,
    /// Digest authentication (`addauth digest user:password`).
    pub credentials: Option<Credentials>,
    pub session_timeout: Duration,
}

/// Why ZooKeeper could not be read. Each names the registry and what to check; none
/// carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum ZookeeperError {
    #[error("registry {registry:?}: {error}; check `password_file` or `password_env`")]
    Password { registry: String, error: SecretError },
    #[error(
        "registry {registry:?}: cannot connect to ZooKeeper at {address}: {error}; check `address` and that ZooKeeper is running"
    )]
    Connect {
        registry: String,
        address: String,
        error: zookeeper_client::Error,
    },
    #[error("registry {registry:?}: {action} at ZooKeeper {address} failed: {error}{hint}")]
    Request {
        registry: String,
        address: String,
        action: String,
        error: zookeeper_client::Error,
        hint: &'static str,
    },
    #[error(
        "registry {registry:?}: the root node {root} does not exist; the last known services are kept, since a wrong `root` or chroot and a wiped ensemble look the same. If the registry is really empty, create the node (`create {root} \"\"` in zkCli)"
    )]
    MissingRoot { registry: String, root: String },
    #[error("registry {registry:?}: the ZooKeeper session with {address} ended ({why}); starting a new one")]
    Session {
        registry: String,
        address: String,
        why: String,
    },
    #[error(
        "registry {registry:?}: ZooKeeper at {address} did not answer {action} within {}s; check that it is running and reachable",
        secs.as_secs()
    )]
    Timeout {
        registry: String,
        address: String,
        action: String,
        secs: Duration,
    },
}

impl crate::Classified for ZookeeperError {
    fn reason(&self) -> crate::FailureReason {
        use crate::FailureReason;
        match self {
            ZookeeperError::Password { .. } => FailureReason::Credentials,
            ZookeeperError::Connect { .. } | ZookeeperError::Session { .. } => FailureReason::Unreachable,
            ZookeeperError::Request { error, .. } => match error {
                zookeeper_client::Error::NoAuth => FailureReason::Denied,
                zookeeper_client::Error::AuthFailed => FailureReason::Credentials,
                zookeeper_client::Error::ConnectionLoss | zookeeper_client::Error::SessionExpired => {
                    FailureReason::Unreachable
                }
                _ => FailureReason::BadAnswer,
            },
            ZookeeperError::MissingRoot { .. } => FailureReason::Configuration,
            ZookeeperError::Timeout { .. } => FailureReason::Timeout,
        }
    }
}

/// One ZooKeeper ensemble and root serving as one registry.
#[derive(Clone, Debug)]
pub struct ZookeeperSource {
    registry: String,
    config: ZookeeperConfig,
    requests: crate::requests::Requests,
}

/// A complete read of the tree: items by service and node name.
type Listing = BTreeMap<String, BTreeMap<String, Item>>;

impl ZookeeperSource {
    pub fn new(registry: impl Into<String>, mut config: ZookeeperConfig) -> Self {
        config.root = normalize(&config.root);
        let registry = registry.into();
        ZookeeperSource {
            requests: crate::requests::Requests::of(&registry),
            registry,
            config,
        }
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Reads the tree once, for `once`, `plan`, `render` and `check`.
    pub async fn load(&self) -> Result<RegistrySnapshot, ZookeeperError> {
        let client = self.connect().await?;
        let listing = self.read_all(&client).await?;
        let mut state = Services::new(&self.registry);
        state.replace_all(listing, BTreeMap::new());
        Ok(state.snapshot())
    }

    /// Emits the current state, then a snapshot after each batch of changes, until
    /// `cancel` fires or the receiver is dropped.
    pub async fn watch(self, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
        watch::run(self, tx, cancel).await;
    }

    fn connect_string(&self) -> String {
        match &self.config.chroot {
            Some(chroot) => format!("{}{}", self.config.address, normalize(chroot)),
            None => self.config.address.clone(),
        }
    }

    /// How long one request may take: a disconnected client fails requests within
    /// about the session timeout, so twice that means something is stuck.
    fn request_timeout(&self) -> Duration {
        self.config.session_timeout * 2
    }

    async fn connect(&self) -> Result<Client, ZookeeperError> {
        let mut connector = Client::connector()
            .with_session_timeout(self.config.session_timeout)
            .with_fail_eagerly();
        if let Some(credentials) = &self.config.credentials {
            let password = credentials
                .password
                .read()
                .map_err(|error| ZookeeperError::Password {
                    registry: self.registry.clone(),
                    error,
                })?;
            let auth = format!("{}:{}", credentials.username, password.expose());
            connector = connector.with_auth("digest", auth.as_bytes());
        }
        let connect_string = self.connect_string();
        self.requests.count();
        let connect = connector.connect(&connect_string);
        match tokio::time::timeout(self.request_timeout(), connect).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(error)) => Err(ZookeeperError::Connect {
                registry: self.registry.clone(),
                address: self.config.address.clone(),
                error,
            }),
            Err(_) => Err(self.timeout_error("the connection")),
        }
    }

    fn request_error(&self, action: &str, error: zookeeper_client::Error) -> ZookeeperError {
        let hint = match error {
            zookeeper_client::Error::NoAuth | zookeeper_client::Error::AuthFailed => {
                "; check `username` and the password, and the nodes' ACLs"
            }
            _ => "",
        };
        ZookeeperError::Request {
            registry: self.registry.clone(),
            address: self.config.address.clone(),
            action: action.to_string(),
            error,
            hint,
        }
    }

    fn timeout_error(&self, action: &str) -> ZookeeperError {
        ZookeeperError::Timeout {
            registry: self.registry.clone(),
            address: self.config.address.clone(),
            action: action.to_string(),
            secs: self.request_timeout(),
        }
    }

    fn path(&self, parts: &[&str]) -> String {
        join(&self.config.root, parts)
    }

    /// The node whose children are a service's instances.
    fn instances_path(&self, service: &str) -> String {
        match self.config.layout {
            ZkLayout::Dubbo => self.path(&[service, "providers"]),
            ZkLayout::Curator => self.path(&[service]),
        }
    }

    /// Reads every service and instance under the root.
    ///
    /// A missing root is a failure, not an empty registry: a mistyped `root`, a wrong
    /// chroot or a wiped ensemble look exactly like it, and must not delete every
    /// service. An empty registry is an existing root without children (create it with
    /// `create /dubbo ""`). A node that cannot be read (`NoAuth` under a digest ACL) fails
    /// the read too; only a node that is gone (`NoNode`) is left out.
    async fn read_all(&self, client: &Client) -> Result<Listing, ZookeeperError> {
        let root = self.config.root.clone();
        let services = match self
            .timed(&format!("listing {root}"), client.list_children(&root))
            .await
        {
            Ok(services) => services,
            Err(ZookeeperError::Request {
                error: zookeeper_client::Error::NoNode,
                ..
            }) => {
                return Err(ZookeeperError::MissingRoot {
                    registry: self.registry.clone(),
                    root,
                });
            }
            Err(error) => return Err(error),
        };
        let dirs: Vec<String> = services.iter().map(|s| self.instances_path(s)).collect();
        let children = self.multi_read(client, &dirs, false).await?;
        let mut listing = Listing::new();
        let mut data_paths = Vec::new();
        let mut data_owners = Vec::new();
        for ((service, dir), result) in services.into_iter().zip(&dirs).zip(children) {
            let nodes = match self.present(dir, result)? {
                Some(MultiReadResult::Children { children }) => children,
                // Gone meanwhile, or (Dubbo) an interface with no `providers` node.
                _ => continue,
            };
            let items = listing.entry(service.clone()).or_default();
            for node in nodes {
                match self.config.layout {
                    ZkLayout::Dubbo => {
                        if let Some(item) = dubbo::item(&self.registry, &service, &node) {
                            items.insert(node, item);
                        }
                    }
                    ZkLayout::Curator => {
                        data_paths.push(self.path(&[&service, &node]));
                        data_owners.push((service.clone(), node));
                    }
                }
            }
        }
        let data = self.multi_read(client, &data_paths, true).await?;
        for (((service, node), path), result) in data_owners.into_iter().zip(&data_paths).zip(data) {
            if let Some(MultiReadResult::Data { data, .. }) = self.present(path, result)? {
                let item = curator::item(&self.registry, &service, &node, &data);
                listing.entry(service).or_default().insert(node, item);
            }
        }
        Ok(listing)
    }

    /// One result of a multi-read: `None` when the node is gone (`NoNode`), the error
    /// when it could not be read for any other reason (`NoAuth`, …) — that is not the
    /// node's absence, and must not be taken for it.
    pub(crate) fn present(
        &self,
        path: &str,
        result: MultiReadResult,
    ) -> Result<Option<MultiReadResult>, ZookeeperError> {
        match result {
            MultiReadResult::Error {
                err: zookeeper_client::Error::NoNode,
            } => Ok(None),
            MultiReadResult::Error { err } => Err(self.request_error(&format!("reading {path}"), err)),
            other => Ok(Some(other)),
        }
    }

    /// Reads children (or data) of many nodes, [`BATCH`] per round trip. A node that
    /// is missing gives its own error result, never a failure of the whole read.
    async fn multi_read(
        &self,
        client: &Client,
        paths: &[String],
        data: bool,
    ) -> Result<Vec<MultiReadResult>, ZookeeperError> {
        let mut results = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(BATCH) {
            let mut reader = client.new_multi_reader();
            for path in chunk {
                let added = if data {
                    reader.add_get_data(path)
                } else {
                    reader.add_get_children(path)
                };
                added.map_err(|error| self.request_error(&format!("reading {path}"), error))?;
            }
            let action = format!("reading {} nodes under {}", chunk.len(), self.config.root);
            results.extend(self.timed(&action, reader.commit()).await?);
        }
        Ok(results)
    }

    async fn timed<T>(
        &self,
        action: &str,
        request: impl Future<Output = Result<T, zookeeper_client::Error>>,
    ) -> Result<T, ZookeeperError> {
        self.requests.count();
        match tokio::time::timeout(self.request_timeout(), request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.request_error(action, error)),
            Err(_) => Err(self.timeout_error(action)),
        }
    }
}

/// `/a/b/` → `/a/b`; `a` → `/a`; `` → `/`.
fn normalize(path: &str) -> String {
    let trimmed = path.trim().trim_matches('/');
    format!("/{trimmed}")
}

fn join(root: &str, parts: &[&str]) -> String {
    let mut path = if root == "/" {
        String::new()
    } else {
        root.to_string()
    };
    for part in parts {
        path.push('/');
        path.push_str(part);
    }
    if path.is_empty() { "/".into() } else { path }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_and_joined_below_the_root() {
        assert_eq!(normalize("/dubbo/"), "/dubbo");
        assert_eq!(normalize("dubbo"), "/dubbo");
        assert_eq!(normalize("/"), "/");
        assert_eq!(join("/dubbo", &["a.B", "providers"]), "/dubbo/a.B/providers");
        assert_eq!(join("/", &["orders"]), "/orders");
        assert_eq!(join("/", &[]), "/");
    }
}
