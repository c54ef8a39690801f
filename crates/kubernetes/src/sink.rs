//! The Kubernetes sink: ServiceEntries and WorkloadEntries in the API server.
//!
//! * **What it holds** comes from a list+watch per kind and target namespace, so an
//!   unchanged object costs no request at all and a restart plans zero writes. The
//!   watch is not label-selected on purpose: it must also see objects someone else
//!   made, because a server-side apply cannot refuse to adopt an existing object. With
//!   every name in view, the planner reports a foreign object as a conflict before
//!   anything is sent. (Creating with `POST` instead would leave the fields owned by an
//!   `Update` entry that later applies never clear: a renamed port would linger.)
//! * **Creates and updates** are server-side applies (field manager `registry-sync`,
//!   forced, as controllers should: ownership was already checked by the planner
//!   against our labels).
//! * **Deletes** carry the uid the watch reported as a precondition, so an object that
//!   was deleted and recreated by someone else in between is never removed.
//! * Every write waits for the rate limiter and for leadership, runs with bounded
//!   concurrency, and is retried with jittered exponential backoff when the failure is
//!   transient (429, 5xx, timeouts); the transport honours `Retry-After`.
//!
//! The sink is two halves and the orchestration of a pass: `view` (the watches, what
//! is held, the server's uid and version of each object) and `writes` (the limiter,
//! retries, preconditions and the foreign check), which shares no state with it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use kube::api::ApiResource;
use registry_sync_istio::{HeldObject, Kind, ObjectKey};
use registry_sync_plan::{Plan, StatusChange};
use registry_sync_sinks::{ApplyReport, AsyncSink, BoxFuture, SinkError, Unavailability};

mod errors;
mod fresh;
mod health;
mod memory;
mod view;
mod writes;

pub use self::memory::{GUARD_MEMORY_ANNOTATION, GuardStore, NAMESPACES_ANNOTATION};

use self::view::View;
use self::writes::{Outcome, Write, Writes};
use crate::leader::Leadership;

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "registry-sync";

#[derive(Clone, Debug)]
pub struct KubeSinkSettings {
    /// Namespaces the objects go to (each registry's `namespace`).
    pub namespaces: BTreeSet<String>,
    /// Client-side rate limit; 0 disables it.
    pub qps: f64,
    pub burst: u32,
    /// Writes in flight at once.
    pub concurrency: usize,
    /// Attempts per write, the first included.
    pub attempts: usize,
    /// How long `connect` waits for the first complete list of every namespace.
    pub initial_list_timeout: Duration,
    /// The longest one API call (a write, a read before a create) may take; a stalled
    /// API server fails the call instead of holding the writer.
    pub call_timeout: Duration,
    /// Where the mass-change guard's memory is kept; `None`: nowhere.
    pub guard_store: Option<GuardStore>,
}

impl Default for KubeSinkSettings {
    fn default() -> Self {
        KubeSinkSettings {
            namespaces: BTreeSet::new(),
            qps: 50.0,
            burst: 100,
            concurrency: 8,
            attempts: 5,
            initial_list_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(10),
            guard_store: None,
        }
    }
}

pub fn api_resource(kind: Kind) -> ApiResource {
    ApiResource {
        group: registry_sync_istio::API_GROUP.into(),
        version: "v1".into(),
        api_version: registry_sync_istio::API_VERSION.into(),
        kind: kind.as_str().into(),
        plural: kind.plural().into(),
    }
}

/// The view (what the cluster holds) and the writes (what is sent), with what the
/// installation remembers in its Lease.
pub struct KubeSink {
    settings: KubeSinkSettings,
    view: View,
    writes: Writes,
    /// Writes of the current pass done so far (see `AsyncSink::progress`).
    done: Arc<std::sync::atomic::AtomicUsize>,
    /// Namespaces outside the configuration where this installation wrote objects
    /// before (remembered in its Lease): watched too, so what is left there is seen and
    /// deleted as the plan says.
    extra_namespaces: BTreeSet<String>,
    /// The namespaces the installation's Lease lists, as last read or written.
    remembered_namespaces: Option<BTreeSet<String>>,
}

impl KubeSink {
    /// Starts the watches and waits for the first complete list of every namespace, so
    /// that the first plan already knows every object this installation owns.
    pub async fn connect(
        client: Client,
        settings: KubeSinkSettings,
        leader: Option<Leadership>,
    ) -> Result<KubeSink, SinkError> {
        let mut sink = KubeSink {
            view: View::new(),
            writes: Writes::new(client, &settings, leader),
            done: Arc::default(),
            settings,
            extra_namespaces: BTreeSet::new(),
            remembered_namespaces: None,
        };
        sink.find_extra_namespaces().await;
        let watched: BTreeSet<String> = sink
            .settings
            .namespaces
            .union(&sink.extra_namespaces)
            .cloned()
            .collect();
        for namespace in &watched {
            sink.view.watch(&sink.writes.client, namespace);
        }
        sink.view.listed(sink.settings.initial_list_timeout).await?;
        tracing::info!(
            objects = sink.view.held.len(),
            namespaces = sink.settings.namespaces.len(),
            "kubernetes: initial list complete"
        );
        Ok(sink)
    }

    /// Watch events waiting to be taken in (at most the queue's bound).
    pub fn queued(&self) -> usize {
        self.view.queued()
    }

    async fn apply_plan(&mut self, plan: &Plan) -> Result<ApplyReport, SinkError> {
        if !self.writes.is_leader() {
            return Err(SinkError::unavailable(
                Unavailability::NotLeader,
                "not the leader: another replica writes",
            ));
        }
        let mut report = ApplyReport::default();
        let creates: BTreeSet<ObjectKey> = plan.creates.iter().map(|o| o.key()).collect();
        // istiod takes a WorkloadEntry with health checks on and no `Healthy=True`
        // condition for unhealthy: an entry that exists gets its condition before the
        // write that turns its checks on, and a new one is created without the checks,
        // given its condition, and only then written whole.
        let (early, late): (Vec<&StatusChange>, Vec<&StatusChange>) = plan
            .status
            .iter()
            .partition(|c| c.healthy && !creates.contains(&c.key) && self.view.held.contains_key(&c.key));
        self.set_conditions(early, &mut report).await;
        let staged: BTreeSet<ObjectKey> = plan
            .status
            .iter()
            .filter(|c| c.healthy && creates.contains(&c.key))
            .map(|c| c.key.clone())
            .collect();
        let writes: Vec<Write> = plan
            .creates
            .iter()
            .map(|o| match staged.contains(&o.key()) {
                true => Write::Create(Arc::new(health::without_health_checks(o))),
                false => Write::Create(o.clone()),
            })
            .chain(
                plan.updates
                    .iter()
                    .map(|o| Write::Update(o.clone(), self.view.version_of(&o.key()))),
            )
            .chain(
                plan.deletes
                    .iter()
                    .map(|k| Write::Delete(k.clone(), self.view.uid_of(k))),
            )
            .collect();
        let fresh = self.read_before_creates(&plan.creates).await;
        let concurrency = self.settings.concurrency.max(1);
        self.done.store(0, std::sync::atomic::Ordering::Relaxed);
        let done = Arc::clone(&self.done);
        let outcomes: Vec<Outcome> = futures::stream::iter(writes)
            .map(|write| self.writes.execute(write, &fresh))
            .buffer_unordered(concurrency)
            .inspect(|_| {
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                Outcome::Written(key, held) => {
                    if creates.contains(&key) {
                        report.created += 1;
                    } else {
                        report.updated += 1;
                    }
                    self.view.took(key, held);
                }
                Outcome::Foreign(key, reason, found) => {
                    self.view.took(key.clone(), found);
                    report.failed.push((key, reason));
                }
                Outcome::Deleted(key) => {
                    report.deleted += 1;
                    self.view.forget(&key);
                }
                Outcome::Failed(key, message) => report.failed.push((key, message)),
            }
        }
        // The other conditions after the writes: a condition can only be set on an
        // object that exists.
        let failed: BTreeSet<ObjectKey> = report.failed.iter().map(|(k, _)| k.clone()).collect();
        let late: Vec<&StatusChange> = late
            .into_iter()
            .filter(|c| !failed.contains(&c.key) && self.view.held.contains_key(&c.key))
            .collect();
        self.set_conditions(late, &mut report).await;
        self.write_staged_whole(plan, &staged, &fresh, &mut report).await;
        self.remember_namespaces().await;
        Ok(report)
    }
}

impl AsyncSink for KubeSink {
    fn load_guard_memory(&mut self) -> BoxFuture<'_, Result<Option<String>, SinkError>> {
        Box::pin(self.read_remembered(GUARD_MEMORY_ANNOTATION))
    }

    fn keep_guard_memory<'a>(&'a mut self, memory: &'a str) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.remember(GUARD_MEMORY_ANNOTATION, memory))
    }

    fn refresh(&mut self) -> BoxFuture<'_, Vec<ObjectKey>> {
        Box::pin(std::future::ready(self.view.drain()))
    }

    fn observe(&mut self) -> BoxFuture<'_, Vec<ObjectKey>> {
        Box::pin(self.view.next())
    }

    fn held(&self) -> &BTreeMap<ObjectKey, HeldObject> {
        &self.view.held
    }

    fn progress(&self) -> Option<Arc<std::sync::atomic::AtomicUsize>> {
        Some(Arc::clone(&self.done))
    }

    fn apply<'a>(&'a mut self, plan: &'a Plan) -> BoxFuture<'a, Result<ApplyReport, SinkError>> {
        Box::pin(self.apply_plan(plan))
    }
}
