//! **Test support only — never a product code path.** A stand-in for the Kubernetes API
//! server, for registry-sync's integration tests: no kube-apiserver can be installed on
//! the machines the tests run on.
//!
//! It serves, over plain HTTP/1.1 on `127.0.0.1`, what registry-sync's Kubernetes sink
//! talks to, following the API conventions closely enough that kube-rs uses it exactly as
//! a cluster:
//!
//! * `networking.istio.io/v1` `serviceentries` and `workloadentries`, and
//!   `coordination.k8s.io/v1` `leases`, all namespaced:
//!   `/apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}]` and the all-namespaces
//!   `/apis/{group}/{version}/{plural}`; discovery (`/apis`, `/apis/{group}/{version}`,
//!   `/api`) and `/version`.
//! * get; list with `labelSelector`, `fieldSelector` (`metadata.name`,
//!   `metadata.namespace`) and `limit`/`continue` paging; watch with resourceVersion
//!   resume from a bounded history, `410 Expired` beyond it, bookmarks,
//!   `sendInitialEvents` and `timeoutSeconds`.
//! * create, replace (optimistic concurrency on `metadata.resourceVersion`), delete
//!   (preconditions, finalizers), merge patch, JSON patch, strategic merge patch (Lease
//!   only; custom resources answer 415 as the real server does) and **server-side apply**
//!   with field managers, conflicts and `force` (see [`apply`](crate::kube#server-side-apply)).
//! * `422 Invalid` from the Istio CRDs' structural schema and CEL rules, and from
//!   Kubernetes metadata rules, as the API server reports them.
//! * Faults switchable at runtime ([`Faults`]) and request counts ([`Counts`]).
//!
//! Every write bumps one global resourceVersion; objects get a `uid`,
//! `creationTimestamp` and a `generation` that grows when anything outside metadata and
//! status changes. A write that changes nothing (such as re-applying the same
//! configuration) is a no-op: no new resourceVersion, no watch event.
//!
//! # Server-side apply
//!
//! Ownership is tracked per manager and operation in `metadata.managedFields`
//! (`fieldsType: FieldsV1`, in the real format: `{"f:spec":{"f:hosts":{},...}}`).
//! Objects are granular, lists atomic, except ServiceEntry `spec.ports`, which the CRD
//! declares a map keyed by `name` (`k:{"name":"http"}` entries), so managers can own
//! single ports. An apply replaces what its manager owned: fields it stops sending are
//! removed unless another manager owns them; a field another manager owns with a
//! different value is a `409 Conflict` listing every conflicting field, unless
//! `force=true`, which takes ownership. Create, replace and patch record `Update`
//! entries that take the fields they change. Status subresources and client-supplied
//! `managedFields` are not supported.
//!
//! # Differences from a real API server
//!
//! Namespaces exist implicitly; there is no authentication, admission, defaulting,
//! garbage collection of owner references, `/status` subresource route, protobuf or
//! Table output; the watch history is global rather than per resource; a continue token
//! pages over current objects rather than a snapshot.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use registry_sync_testing::kube::{Resource, StandIn, Verb};
//! let server = StandIn::start().await;
//! let client = kube::Client::try_from(server.kube_config())?;
//! // ... run the code under test with `client` ...
//! assert_eq!(server.counts().of(Verb::Apply, Resource::ServiceEntry), 1);
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod apply;
mod counts;
mod fault_state;
mod faults;
mod fields;
mod ops;
mod patch;
mod resource;
mod routes;
mod schema;
mod selector;
mod state;
mod status;
mod store;
mod util;
mod validate;
mod watch;

#[cfg(test)]
mod crd_agreement;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;

pub use counts::{Counts, Verb};
pub use faults::Faults;
pub use resource::Resource;

use state::Shared;

/// A running stand-in API server. Dropping it stops the server.
pub struct StandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl StandIn {
    /// Starts a server on `127.0.0.1` on a free port, on the current tokio runtime.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start() -> StandIn {
        StandIn::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the kube stand-in to 127.0.0.1:0")
    }

    /// Starts a server on `addr` (for the `kube-standin` binary's `--port`).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<StandIn> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Shared::new();
        let app = routes::router(shared.clone());
        let stop = shared.shutdown.clone();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            let _ = serve.await;
        });
        Ok(StandIn {
            addr,
            shared,
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube-rs configuration for this server: plain HTTP, no authentication, namespace
    /// `default`, a 5 s connect timeout, a 30 s write timeout and no read timeout (watches
    /// are long polls). kube's default retry of 429/503/504 stays on, as with
    /// `Config::infer`; set `default_retry = false` to see those errors directly.
    pub fn kube_config(&self) -> kube::Config {
        let url = self.url().parse().expect("a loopback URL is a valid URI");
        let mut config = kube::Config::new(url);
        config.connect_timeout = Some(Duration::from_secs(5));
        config.write_timeout = Some(Duration::from_secs(30));
        config.read_timeout = None;
        config
    }

    /// The fault switches.
    pub fn faults(&self) -> Faults {
        Faults {
            shared: self.shared.clone(),
        }
    }

    /// Request counts so far.
    pub fn counts(&self) -> Counts {
        self.shared.counts()
    }

    /// Sets every request count back to zero.
    pub fn reset_counts(&self) {
        self.shared.reset_counts();
    }

    /// The stored object, as the API server would return it.
    pub fn object(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .store()
            .get(resource, namespace, name)
            .map(|o| (*o).clone())
    }

    /// Every stored object of a resource, ordered by namespace and name.
    pub fn objects(&self, resource: Resource) -> Vec<Value> {
        self.shared
            .store()
            .list(resource, None)
            .map(|o| (**o).clone())
            .collect()
    }

    /// Every stored object, with its resource, ordered by resource, namespace and name.
    pub fn all_objects(&self) -> Vec<(Resource, Value)> {
        self.shared
            .store()
            .all()
            .map(|(r, o)| (r, (**o).clone()))
            .collect()
    }

    /// Every state a resource's objects were stored in after resourceVersion `after`,
    /// oldest first (a deleted object's last state included): what a watcher, istiod
    /// for one, may have seen.
    ///
    /// # Panics
    /// If the history no longer reaches back to `after`.
    pub fn states_after(&self, resource: Resource, after: u64) -> Vec<Value> {
        let events = self
            .shared
            .store()
            .events_after(after)
            .unwrap_or_else(|floor| panic!("the stand-in's history starts after {floor}, not {after}"));
        events
            .iter()
            .filter(|e| e.resource == resource)
            .map(|e| (*e.object).clone())
            .collect()
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().rv()
    }

    /// Stops the server: open watches end, open connections close.
    pub async fn shutdown(mut self) {
        self.shared.faults.drops.send_modify(|n| *n += 1);
        self.shared.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
