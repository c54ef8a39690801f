//! Registry clients.
//!
//! A source speaks one registry's protocol — a file, Consul's blocking queries, a
//! ZooKeeper watch — and turns what the registry says into the registry-neutral
//! [`RegistrySnapshot`]. It owns everything about reaching that registry: connecting,
//! authenticating, watching or polling, retrying and backing off. Nothing Istio-specific
//! lives here; translation happens downstream, on the catalog.
//!
//! A source sends a whole [`SourceEvent::Snapshot`] first (and after every failure),
//! then [`SourceEvent::Changed`] with only the services an event touched: a consumer
//! never has to replay history to know the state, and one changed instance in a large
//! registry costs that service downstream, not the registry. A registry that fails
//! sends [`SourceEvent::Failed`] instead, which keeps its last known state in place. Bad items
//! (an invalid address, port 0) are not failures: they are left out of the snapshot and
//! listed in its `skipped`, so one typo never takes a registry down.

#![forbid(unsafe_code)]
// Built for its event types alone (the writer library does), no registry is compiled in
// and the registry table has nothing to dispatch to.
#![cfg_attr(
    not(any(
        feature = "file",
        feature = "etcd",
        feature = "zookeeper",
        feature = "consul",
        feature = "eureka",
        feature = "dns",
        feature = "nacos",
        feature = "cloudmap"
    )),
    allow(unused)
)]

use registry_sync_catalog::{RegistryDelta, RegistrySnapshot};

#[cfg(test)]
mod arbitrary;
// Each kind uses the checks it needs; a build with few kinds leaves some unused.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub mod config;
mod failure;
pub use failure::{Classified, FailureReason, SourceFailure};
pub mod registry;
pub mod requests;

// Every registry kind: its module (behind the Cargo feature of its name) and its place
// in the dispatch. Adding a kind is its module and one line here.
registry::registries! {
    "file" => File(file::FileSource),
    "etcd" => Etcd(etcd::EtcdSource),
    "zookeeper" => Zookeeper(zookeeper::ZookeeperSource),
    "dns" => Dns(dns::DnsSource),
    "consul" => Consul(consul::ConsulSource),
    "eureka" => Eureka(eureka::EurekaSource),
    "cloudmap" => CloudMap(cloudmap::CloudMapSource),
    "nacos" => Nacos(nacos::NacosSource),
}

#[cfg(any(
    feature = "etcd",
    feature = "zookeeper",
    feature = "dns",
    feature = "consul",
    feature = "eureka",
    feature = "nacos",
    feature = "cloudmap"
))]
// A build with fewer registries uses only part of it.
#[cfg_attr(not(all(feature = "etcd", feature = "zookeeper")), allow(dead_code))]
mod emit;
#[cfg(feature = "eureka")]
mod http;

/// The largest registry answer read over HTTP: a whole Eureka estate of 100,000
/// instances is about 150 MiB of JSON. A larger body (a broken or hostile server, a
/// proxy's error stream) is refused before it exhausts memory.
#[cfg(any(feature = "consul", feature = "eureka"))]
pub(crate) const MAX_BODY: usize = 256 << 20;
#[cfg(any(
    feature = "etcd",
    feature = "zookeeper",
    feature = "consul",
    feature = "eureka"
))]
#[cfg_attr(not(all(feature = "etcd", feature = "zookeeper")), allow(dead_code))]
mod json;
pub mod secret;
#[cfg(any(
    feature = "etcd",
    feature = "zookeeper",
    feature = "dns",
    feature = "consul",
    feature = "eureka",
    feature = "nacos",
    feature = "cloudmap"
))]
// A build with fewer registries uses only part of it.
#[cfg_attr(not(all(feature = "etcd", feature = "zookeeper")), allow(dead_code))]
mod state;
#[cfg(feature = "testing")]
pub mod testing;

/// A read task that panicked or was cancelled: no answer about the service it read,
/// which must therefore neither vanish from the listing nor be deleted. Shared by the
/// sources that read services in parallel tasks.
#[derive(Debug, thiserror::Error)]
#[error(
    "registry {registry:?}: a read task ({action}) ended unexpectedly: {error}; the last known state is kept and the read is retried (this is a bug of registry-sync: please report it)"
)]
pub struct ReadTaskError {
    pub registry: String,
    pub action: &'static str,
    pub error: String,
}

impl ReadTaskError {
    #[cfg(any(feature = "consul", feature = "nacos", feature = "cloudmap"))]
    pub(crate) fn new(registry: &str, action: &'static str, error: &tokio::task::JoinError) -> ReadTaskError {
        ReadTaskError {
            registry: registry.to_string(),
            action,
            error: error.to_string(),
        }
    }
}

/// Waits for every read task. One that panicked or was cancelled fails the whole read:
/// skipping it would leave its service out of the listing as if it were gone.
#[cfg(any(feature = "consul", feature = "nacos", feature = "cloudmap"))]
pub(crate) async fn join_reads<T: 'static>(
    registry: &str,
    action: &'static str,
    mut tasks: tokio::task::JoinSet<T>,
) -> Result<Vec<T>, ReadTaskError> {
    let mut done = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        done.push(joined.map_err(|error| ReadTaskError::new(registry, action, &error))?);
    }
    Ok(done)
}

/// What a source tells the catalog.
#[cfg(all(test, feature = "consul"))]
mod read_tests {
    #[tokio::test]
    async fn a_read_task_that_panics_fails_the_read_instead_of_dropping_its_service() {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async { "orders" });
        tasks.spawn(async {
            if true {
                panic!("a bug in a client");
            }
            "payments"
        });
        let error = super::join_reads("consul", "reading a service's health", tasks)
            .await
            .expect_err("a panicked read is no answer");
        let text = error.to_string();
        assert!(
            text.contains("registry \"consul\"") && text.contains("ended unexpectedly"),
            "{text}"
        );
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceEvent {
    /// A complete, successful view of the registry.
    Snapshot {
        registry: String,
        snapshot: RegistrySnapshot,
    },
    /// What changed since the previous view; the registry is complete and successful.
    Changed { registry: String, delta: RegistryDelta },
    /// The registry could not be read; the last known state must be kept (nothing deleted).
    Failed { registry: String, error: SourceFailure },
}

impl SourceEvent {
    pub fn registry(&self) -> &str {
        match self {
            SourceEvent::Snapshot { registry, .. }
            | SourceEvent::Changed { registry, .. }
            | SourceEvent::Failed { registry, .. } => registry,
        }
    }

    /// Folds a view into `view`, the way a consumer keeping whole views does; returns
    /// whether the event was a view (not a failure).
    pub fn fold_into(&self, view: &mut RegistrySnapshot) -> bool {
        match self {
            SourceEvent::Snapshot { snapshot, .. } => {
                *view = snapshot.clone();
                true
            }
            SourceEvent::Changed { delta, .. } => {
                view.apply(delta);
                true
            }
            SourceEvent::Failed { .. } => false,
        }
    }
}
