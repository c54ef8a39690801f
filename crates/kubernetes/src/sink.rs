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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use registry_sync_istio::{
    HeldObject, INSTANCE_LABEL, IstioObject, Kind, MANAGED_BY_LABEL, ObjectKey, held_from_json,
};
use registry_sync_plan::{Owner, Plan, StatusChange};
use registry_sync_sinks::{ApplyReport, AsyncSink, BoxFuture, SinkError, Unavailability};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

mod errors;
mod fresh;
mod health;
mod memory;

pub use self::memory::{GUARD_MEMORY_ANNOTATION, GuardStore, NAMESPACES_ANNOTATION};

use self::errors::{WriteError, describe};
use self::fresh::{Fresh, FreshRead};
use crate::leader::Leadership;
use crate::pacing::{RateLimiter, is_retryable, status_code};

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

/// What the watch tasks tell the sink.
enum Observed {
    /// A watch (re)started listing `(kind, namespace)`.
    Init(Kind, String),
    Apply {
        held: HeldObject,
        meta: ServerMeta,
    },
    Delete(ObjectKey),
    /// The list that started with `Init` is complete.
    InitDone(Kind, String),
}

/// Identity of a held object on the server, for delete preconditions.
#[derive(Clone, Debug)]
struct ServerMeta {
    uid: String,
    /// The version the sink last saw: an update is sent with it, so it cannot land on
    /// an object that changed since (someone replaced it with their own).
    resource_version: Option<String>,
}

impl ServerMeta {
    /// Whether this version is known to be later than `other`'s. Resource versions
    /// are opaque to clients, but numeric in practice (etcd revisions); when either is
    /// not a number, nothing is assumed.
    fn is_newer_than(&self, other: &ServerMeta) -> bool {
        let number = |meta: &ServerMeta| meta.resource_version.as_deref()?.parse::<u64>().ok();
        self.uid == other.uid && matches!((number(self), number(other)), (Some(a), Some(b)) if a > b)
    }

    fn of(object: &DynamicObject) -> ServerMeta {
        ServerMeta {
            uid: object.uid().unwrap_or_default(),
            resource_version: object.resource_version(),
        }
    }
}

pub struct KubeSink {
    client: Client,
    settings: KubeSinkSettings,
    held: BTreeMap<ObjectKey, HeldObject>,
    server: HashMap<ObjectKey, ServerMeta>,
    /// Keys seen during a relist of (kind, namespace), to drop what vanished meanwhile.
    relisting: HashMap<(Kind, String), BTreeSet<ObjectKey>>,
    observed: mpsc::Receiver<Observed>,
    limiter: Arc<RateLimiter>,
    leader: Option<Leadership>,
    watches: Vec<JoinHandle<()>>,
    /// Writes of the current pass done so far (see `AsyncSink::progress`).
    done: Arc<std::sync::atomic::AtomicUsize>,
    /// Namespaces outside the configuration where this installation wrote objects
    /// before (remembered in its Lease): watched too, so what is left there is seen and
    /// deleted as the plan says.
    extra_namespaces: BTreeSet<String>,
    /// The namespaces the installation's Lease lists, as last read or written.
    remembered_namespaces: Option<BTreeSet<String>>,
}

impl Drop for KubeSink {
    fn drop(&mut self) {
        for task in &self.watches {
            task.abort();
        }
    }
}

fn to_held(kind: Kind, object: &DynamicObject) -> Option<(HeldObject, ServerMeta)> {
    let mut value = serde_json::to_value(object).ok()?;
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), registry_sync_istio::API_VERSION.into());
        map.insert("kind".into(), kind.as_str().into());
    }
    let held = held_from_json(value)?;
    Some((held, ServerMeta::of(object)))
}

/// Watch events waiting for the writer. Bounded: a writer busy applying makes the
/// watches wait (the API server keeps the events), and every replica, a standby too,
/// drains the queue continuously.
const OBSERVED_QUEUE: usize = 1024;

async fn watch_namespace(client: Client, kind: Kind, namespace: String, tx: mpsc::Sender<Observed>) {
    let api: Api<DynamicObject> = Api::namespaced_with(client, &namespace, &api_resource(kind));
    let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
    loop {
        let event = match stream.try_next().await {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(kind = %kind, %namespace, "watch failed, retrying with backoff: {e}");
                continue;
            }
        };
        let message = match event {
            watcher::Event::Init => Observed::Init(kind, namespace.clone()),
            watcher::Event::InitDone => Observed::InitDone(kind, namespace.clone()),
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                match to_held(kind, &object) {
                    Some((held, meta)) => Observed::Apply { held, meta },
                    None => continue,
                }
            }
            watcher::Event::Delete(object) => Observed::Delete(ObjectKey {
                kind,
                namespace: namespace.clone(),
                name: object.name_any(),
            }),
        };
        if tx.send(message).await.is_err() {
            return;
        }
    }
}

/// One write of a plan.
enum Write {
    /// An object the sink has not seen: checked for before it is applied.
    Create(Arc<IstioObject>),
    /// An object the sink holds as ours, at the resourceVersion it was planned against.
    Update(Arc<IstioObject>, Option<String>),
    Delete(ObjectKey, Option<String>),
}

impl Write {
    fn key(&self) -> ObjectKey {
        match self {
            Write::Create(o) | Write::Update(o, _) => o.key(),
            Write::Delete(k, _) => k.clone(),
        }
    }
}

/// What a write ended in.
enum Outcome {
    Written(ObjectKey, Option<(HeldObject, ServerMeta)>),
    Deleted(ObjectKey),
    Failed(ObjectKey, String),
    /// A create found an object that is not ours under the name: not written, and now
    /// held, so the next plan reports the conflict.
    Foreign(ObjectKey, String, Option<(HeldObject, ServerMeta)>),
}

impl KubeSink {
    /// Starts the watches and waits for the first complete list of every namespace, so
    /// that the first plan already knows every object this installation owns.
    pub async fn connect(
        client: Client,
        settings: KubeSinkSettings,
        leader: Option<Leadership>,
    ) -> Result<KubeSink, SinkError> {
        let (tx, rx) = mpsc::channel(OBSERVED_QUEUE);
        let limiter = Arc::new(RateLimiter::new(settings.qps, settings.burst));
        let mut sink = KubeSink {
            client,
            held: BTreeMap::new(),
            server: HashMap::new(),
            relisting: HashMap::new(),
            observed: rx,
            limiter,
            leader,
            watches: Vec::new(),
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
            for kind in [Kind::ServiceEntry, Kind::WorkloadEntry] {
                sink.watches.push(tokio::spawn(watch_namespace(
                    sink.client.clone(),
                    kind,
                    namespace.clone(),
                    tx.clone(),
                )));
            }
        }
        let expected = watched.len() * 2;
        let mut listed: BTreeSet<(Kind, String)> = BTreeSet::new();
        let deadline = Instant::now() + sink.settings.initial_list_timeout;
        while listed.len() < expected {
            let message = tokio::time::timeout_at(deadline, sink.observed.recv()).await;
            match message {
                Ok(Some(message)) => {
                    if let Observed::InitDone(kind, namespace) = &message {
                        listed.insert((*kind, namespace.clone()));
                    }
                    sink.fold(message);
                }
                Ok(None) => break,
                Err(_) => {
                    let missing: Vec<String> = watched
                        .iter()
                        .flat_map(|ns| [Kind::ServiceEntry, Kind::WorkloadEntry].map(|k| (k, ns.clone())))
                        .filter(|entry| !listed.contains(entry))
                        .map(|(k, ns)| format!("{} in {ns}", k.plural()))
                        .collect();
                    return Err(SinkError::unavailable(
                        Unavailability::Unreachable,
                        format!(
                            "cannot list {} within {:?}; check that the API server is reachable, that the Istio CRDs are installed and that registry-sync may list and watch them (RBAC)",
                            missing.join(", "),
                            sink.settings.initial_list_timeout
                        ),
                    ));
                }
            }
        }
        tracing::info!(
            objects = sink.held.len(),
            namespaces = sink.settings.namespaces.len(),
            "kubernetes: initial list complete"
        );
        Ok(sink)
    }

    /// Folds one watch event into what the sink holds; returns the key when what is
    /// held changed (not for the echo of a write the sink already took in).
    fn fold(&mut self, message: Observed) -> Vec<ObjectKey> {
        match message {
            Observed::Init(kind, namespace) => {
                self.relisting.insert((kind, namespace), BTreeSet::new());
                Vec::new()
            }
            Observed::Apply { held, meta } => {
                let key = held.key.clone();
                if let Some(seen) = self.relisting.get_mut(&(key.kind, key.namespace.clone())) {
                    seen.insert(key.clone());
                }
                if self
                    .server
                    .get(&key)
                    .is_some_and(|known| known.is_newer_than(&meta))
                {
                    // An event older than a write response already taken in.
                    return Vec::new();
                }
                let same = self.held.get(&key) == Some(&held);
                self.server.insert(key.clone(), meta);
                self.held.insert(key.clone(), held);
                if same { Vec::new() } else { vec![key] }
            }
            Observed::Delete(key) => {
                self.held.remove(&key);
                self.server.remove(&key);
                vec![key]
            }
            Observed::InitDone(kind, namespace) => {
                if let Some(seen) = self.relisting.remove(&(kind, namespace.clone())) {
                    let vanished: Vec<ObjectKey> = self
                        .held
                        .keys()
                        .filter(|k| k.kind == kind && k.namespace == namespace)
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for key in &vanished {
                        self.held.remove(key);
                        self.server.remove(key);
                    }
                    return vanished;
                }
                Vec::new()
            }
        }
    }

    /// Watch events waiting to be taken in (at most the queue's bound).
    pub fn queued(&self) -> usize {
        self.observed.len()
    }

    fn is_leader(&self) -> bool {
        self.leader.as_ref().is_none_or(Leadership::is_leader)
    }

    async fn execute(&self, write: Write, fresh: &FreshRead) -> Outcome {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(self.settings.attempts.saturating_sub(1))
            .with_jitter();
        let key = write.key();
        if let Write::Create(object) = &write {
            let checked = match fresh.of(&key) {
                Fresh::Listed(found) => Ok(found.and_then(|found| self.foreign(object, found, "create"))),
                Fresh::NotListed => self.existing_foreign(object, "create").await,
            };
            match checked {
                Ok(None) => {}
                Ok(Some((reason, found))) => return Outcome::Foreign(key, reason, found),
                Err(e) => return Outcome::Failed(key, describe(&write, &WriteError::Api(e))),
            }
        }
        let attempt = || async {
            self.limiter.acquire().await;
            if !self.is_leader() {
                return Err(WriteError::NotLeader);
            }
            self.timed(self.send(&write)).await.map_err(WriteError::Api)
        };
        let result = attempt
            .retry(backoff)
            .when(|e: &WriteError| matches!(e, WriteError::Api(e) if is_retryable(e)))
            .notify(|e, wait| tracing::debug!(object = %key, "retrying in {wait:?}: {e}"))
            .await;
        // The version planned against is stale: the object changed since, or the watch
        // had not caught up with a write of our own. Read it once: still ours, apply on
        // top of what is there now; someone else's, leave it.
        let result = match (&write, result) {
            (Write::Update(object, _), Err(WriteError::Api(e))) if status_code(&e) == Some(409) => {
                match self.existing_foreign(object, "update").await {
                    Ok(Some((reason, found))) => return Outcome::Foreign(key, reason, found),
                    Ok(None) if !self.is_leader() => Err(WriteError::NotLeader),
                    Ok(None) => {
                        self.limiter.acquire().await;
                        let again = Write::Update(object.clone(), None);
                        self.timed(self.send(&again)).await.map_err(WriteError::Api)
                    }
                    Err(e) => Err(WriteError::Api(e)),
                }
            }
            (_, result) => result,
        };
        match (write, result) {
            (Write::Delete(..), Ok(_)) => Outcome::Deleted(key),
            (_, Ok(object)) => Outcome::Written(key.clone(), object.and_then(|o| to_held(key.kind, &o))),
            (Write::Delete(..), Err(WriteError::Api(e))) if status_code(&e) == Some(404) => {
                Outcome::Deleted(key)
            }
            (write, Err(e)) => Outcome::Failed(key, describe(&write, &e)),
        }
    }

    /// Before a create (rare: creates are new services), and after an update found its
    /// version stale: the object the name stands for on the server, as held, when it is
    /// not ours. The watch may not have shown it yet, and a forced apply would take it
    /// over. Ours is decided as the plan decides it ([`Owner::owns`]).
    async fn existing_foreign(
        &self,
        object: &IstioObject,
        verb: &str,
    ) -> Result<Option<(String, Option<(HeldObject, ServerMeta)>)>, kube::Error> {
        self.limiter.acquire().await;
        let key = object.key();
        let found = self.timed(self.api(&key).get_opt(&object.metadata.name)).await?;
        Ok(found.and_then(|found| self.foreign(object, &found, verb)))
    }

    /// `found` (the object `object`'s name stands for on the server), as held, with the
    /// reason it is refused, when it is not ours.
    fn foreign(
        &self,
        object: &IstioObject,
        found: &DynamicObject,
        verb: &str,
    ) -> Option<(String, Option<(HeldObject, ServerMeta)>)> {
        let key = object.key();
        let held = to_held(key.kind, found);
        let instance = object
            .metadata
            .labels
            .get(INSTANCE_LABEL)
            .cloned()
            .unwrap_or_default();
        if held.as_ref().is_some_and(|(h, _)| Owner::new(instance).owns(h)) {
            return None;
        }
        let label = |name: &str| found.labels().get(name).cloned().unwrap_or_default();
        let reason = format!(
            "{verb} {key} refused: an object this installation did not write already has the name \
             (managed-by {:?}, instance {:?}); it is left alone and reported as a conflict",
            label(MANAGED_BY_LABEL),
            label(INSTANCE_LABEL),
        );
        Some((reason, held))
    }

    /// One API call under [`KubeSinkSettings::call_timeout`]; a call that takes longer
    /// fails as a timeout, which is retried like any transient failure.
    async fn timed<T>(&self, call: impl Future<Output = Result<T, kube::Error>>) -> Result<T, kube::Error> {
        let limit = self.settings.call_timeout;
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(kube::Error::Service(
                format!("no answer from the API server within {limit:?}").into(),
            )),
        }
    }

    fn api(&self, key: &ObjectKey) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &key.namespace, &api_resource(key.kind))
    }

    async fn send(&self, write: &Write) -> Result<Option<DynamicObject>, kube::Error> {
        match write {
            Write::Create(object) | Write::Update(object, _) => {
                let params = PatchParams::apply(FIELD_MANAGER).force();
                let mut body = serde_json::to_value(&**object).map_err(kube::Error::SerdeError)?;
                // The API server refuses the apply (409) if the object moved on since it
                // was planned: the watch brings the new version and the next pass decides.
                if let Write::Update(_, Some(version)) = write
                    && let Some(meta) = body.get_mut("metadata").and_then(|m| m.as_object_mut())
                {
                    meta.insert("resourceVersion".into(), version.clone().into());
                }
                self.api(&object.key())
                    .patch(&object.metadata.name, &params, &Patch::Apply(body))
                    .await
                    .map(Some)
            }
            Write::Delete(key, uid) => {
                let params = DeleteParams {
                    preconditions: uid.clone().map(|uid| Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                self.api(key).delete(&key.name, &params).await.map(|_| None)
            }
        }
    }

    async fn apply_plan(&mut self, plan: &Plan) -> Result<ApplyReport, SinkError> {
        if !self.is_leader() {
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
            .partition(|c| c.healthy && !creates.contains(&c.key) && self.held.contains_key(&c.key));
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
            .chain(plan.updates.iter().map(|o| {
                let version = self.server.get(&o.key()).and_then(|m| m.resource_version.clone());
                Write::Update(o.clone(), version)
            }))
            .chain(
                plan.deletes
                    .iter()
                    .map(|k| Write::Delete(k.clone(), self.server.get(k).map(|m| m.uid.clone()))),
            )
            .collect();
        let fresh = self.read_before_creates(&plan.creates).await;
        let concurrency = self.settings.concurrency.max(1);
        self.done.store(0, std::sync::atomic::Ordering::Relaxed);
        let done = Arc::clone(&self.done);
        let outcomes: Vec<Outcome> = futures::stream::iter(writes)
            .map(|write| self.execute(write, &fresh))
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
                    if let Some((held, meta)) = held {
                        self.server.insert(key.clone(), meta);
                        self.held.insert(key, held);
                    }
                }
                Outcome::Foreign(key, reason, found) => {
                    if let Some((held, meta)) = found {
                        self.server.insert(key.clone(), meta);
                        self.held.insert(key.clone(), held);
                    }
                    report.failed.push((key, reason));
                }
                Outcome::Deleted(key) => {
                    report.deleted += 1;
                    self.held.remove(&key);
                    self.server.remove(&key);
                }
                Outcome::Failed(key, message) => report.failed.push((key, message)),
            }
        }
        // The other conditions after the writes: a condition can only be set on an
        // object that exists.
        let failed: BTreeSet<ObjectKey> = report.failed.iter().map(|(k, _)| k.clone()).collect();
        let late: Vec<&StatusChange> = late
            .into_iter()
            .filter(|c| !failed.contains(&c.key) && self.held.contains_key(&c.key))
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
        Box::pin(async move {
            let mut keys = Vec::new();
            while let Ok(message) = self.observed.try_recv() {
                keys.extend(self.fold(message));
            }
            keys
        })
    }

    fn observe(&mut self) -> BoxFuture<'_, Vec<ObjectKey>> {
        Box::pin(async move {
            let Some(first) = self.observed.recv().await else {
                // The watches ended (the sink is shutting down): nothing more to see.
                return std::future::pending().await;
            };
            let mut keys = self.fold(first);
            while let Ok(message) = self.observed.try_recv() {
                keys.extend(self.fold(message));
            }
            keys
        })
    }

    fn held(&self) -> &BTreeMap<ObjectKey, HeldObject> {
        &self.held
    }

    fn progress(&self) -> Option<Arc<std::sync::atomic::AtomicUsize>> {
        Some(Arc::clone(&self.done))
    }

    fn apply<'a>(&'a mut self, plan: &'a Plan) -> BoxFuture<'a, Result<ApplyReport, SinkError>> {
        Box::pin(self.apply_plan(plan))
    }
}
