//! What the Kubernetes sink sees: a list+watch per kind and target namespace, folded
//! into the objects held and their identity on the server (uid and resourceVersion,
//! for the writes' preconditions). The watch is not label-selected on purpose: it must
//! also see objects someone else made, so the planner reports a foreign object as a
//! conflict before anything is sent. Knows nothing of writes: the sink tells it what a
//! write's response showed ([`View::took`], [`View::forget`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use registry_sync_istio::{HeldObject, Kind, ObjectKey, held_from_json};
use registry_sync_sinks::{SinkError, Unavailability};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::api_resource;

/// What the watch tasks tell the view.
pub(super) enum Observed {
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
pub(super) struct ServerMeta {
    pub(super) uid: String,
    /// The version the sink last saw: an update is sent with it, so it cannot land on
    /// an object that changed since (someone replaced it with their own).
    pub(super) resource_version: Option<String>,
}

impl ServerMeta {
    /// Whether this version is known to be later than `other`'s. Resource versions
    /// are opaque to clients, but numeric in practice (etcd revisions); when either is
    /// not a number, nothing is assumed.
    fn is_newer_than(&self, other: &ServerMeta) -> bool {
        let number = |meta: &ServerMeta| meta.resource_version.as_deref()?.parse::<u64>().ok();
        self.uid == other.uid && matches!((number(self), number(other)), (Some(a), Some(b)) if a > b)
    }

    pub(super) fn of(object: &DynamicObject) -> ServerMeta {
        ServerMeta {
            uid: object.uid().unwrap_or_default(),
            resource_version: object.resource_version(),
        }
    }
}

pub(super) struct View {
    pub(super) held: BTreeMap<ObjectKey, HeldObject>,
    server: HashMap<ObjectKey, ServerMeta>,
    /// Keys seen during a relist of (kind, namespace), to drop what vanished meanwhile.
    relisting: HashMap<(Kind, String), BTreeSet<ObjectKey>>,
    observed: mpsc::Receiver<Observed>,
    tx: mpsc::Sender<Observed>,
    watches: Vec<JoinHandle<()>>,
    /// The (kind, namespace) pairs watched.
    watched: BTreeSet<(Kind, String)>,
}

impl Drop for View {
    fn drop(&mut self) {
        for task in &self.watches {
            task.abort();
        }
    }
}

pub(super) fn to_held(kind: Kind, object: &DynamicObject) -> Option<(HeldObject, ServerMeta)> {
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

impl View {
    pub(super) fn new() -> View {
        let (tx, observed) = mpsc::channel(OBSERVED_QUEUE);
        View {
            held: BTreeMap::new(),
            server: HashMap::new(),
            relisting: HashMap::new(),
            observed,
            tx,
            watches: Vec::new(),
            watched: BTreeSet::new(),
        }
    }

    /// Starts watching both kinds in `namespace`.
    pub(super) fn watch(&mut self, client: &Client, namespace: &str) {
        for kind in [Kind::ServiceEntry, Kind::WorkloadEntry] {
            if self.watched.insert((kind, namespace.to_string())) {
                self.watches.push(tokio::spawn(watch_namespace(
                    client.clone(),
                    kind,
                    namespace.to_string(),
                    self.tx.clone(),
                )));
            }
        }
    }

    /// Waits for the first complete list of every watch, so that the first plan
    /// already knows every object this installation owns.
    pub(super) async fn listed(&mut self, timeout: Duration) -> Result<(), SinkError> {
        let mut listed: BTreeSet<(Kind, String)> = BTreeSet::new();
        let deadline = Instant::now() + timeout;
        while listed.len() < self.watched.len() {
            let message = tokio::time::timeout_at(deadline, self.observed.recv()).await;
            match message {
                Ok(Some(message)) => {
                    if let Observed::InitDone(kind, namespace) = &message {
                        listed.insert((*kind, namespace.clone()));
                    }
                    self.fold(message);
                }
                Ok(None) => break,
                Err(_) => {
                    let missing: Vec<String> = self
                        .watched
                        .iter()
                        .filter(|entry| !listed.contains(*entry))
                        .map(|(k, ns)| format!("{} in {ns}", k.plural()))
                        .collect();
                    return Err(SinkError::unavailable(
                        Unavailability::Unreachable,
                        format!(
                            "cannot list {} within {timeout:?}; check that the API server is reachable, that the Istio CRDs are installed and that registry-sync may list and watch them (RBAC)",
                            missing.join(", "),
                        ),
                    ));
                }
            }
        }
        Ok(())
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
    pub(super) fn queued(&self) -> usize {
        self.observed.len()
    }

    /// Takes in every event waiting; returns the keys whose held state changed.
    pub(super) fn drain(&mut self) -> Vec<ObjectKey> {
        let mut keys = Vec::new();
        while let Ok(message) = self.observed.try_recv() {
            keys.extend(self.fold(message));
        }
        keys
    }

    /// Waits for the next events and takes them in; never returns once the watches
    /// ended (the sink is shutting down).
    pub(super) async fn next(&mut self) -> Vec<ObjectKey> {
        let Some(first) = self.observed.recv().await else {
            return std::future::pending().await;
        };
        let mut keys = self.fold(first);
        keys.extend(self.drain());
        keys
    }

    /// What a write's response showed of the object.
    pub(super) fn took(&mut self, key: ObjectKey, written: Option<(HeldObject, ServerMeta)>) {
        if let Some((held, meta)) = written {
            self.server.insert(key.clone(), meta);
            self.held.insert(key, held);
        }
    }

    /// The object is gone.
    pub(super) fn forget(&mut self, key: &ObjectKey) {
        self.held.remove(key);
        self.server.remove(key);
    }

    /// The version a write is planned against.
    pub(super) fn version_of(&self, key: &ObjectKey) -> Option<String> {
        self.server.get(key).and_then(|m| m.resource_version.clone())
    }

    /// The uid a delete is conditioned on.
    pub(super) fn uid_of(&self, key: &ObjectKey) -> Option<String> {
        self.server.get(key).map(|m| m.uid.clone())
    }
}
