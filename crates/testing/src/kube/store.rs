//! The object store: every object by resource, namespace and name, one global
//! resourceVersion counter, and a bounded history of change events that watches resume
//! from.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;

use crate::kube::resource::Resource;

/// The history size unless a test sets another with `Faults::set_history_limit`.
pub(crate) const DEFAULT_HISTORY: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One committed change.
#[derive(Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub resource: Resource,
    pub kind: EventKind,
    /// The object after the change; for a deletion, the last state with the deletion's
    /// resourceVersion.
    pub object: Arc<Value>,
    /// The object before the change (modifications), so a watch with a selector can tell
    /// an object entering or leaving it.
    pub previous: Option<Arc<Value>>,
}

type Key = (Resource, String, String);

pub(crate) struct Store {
    rv: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// Every event with a resourceVersion above `floor` is still in `history`.
    floor: u64,
    notify: watch::Sender<u64>,
}

/// `metadata.namespace` and `metadata.name` of an object.
pub(crate) fn ns_name(obj: &Value) -> (String, String) {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

/// `metadata.resourceVersion` as a number (0 when absent or not a number).
pub(crate) fn rv_of(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl Store {
    pub(crate) fn new(notify: watch::Sender<u64>) -> Store {
        Store {
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: DEFAULT_HISTORY,
            floor: 1,
            notify,
        }
    }

    /// The current (latest) resourceVersion.
    pub(crate) fn rv(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch can still resume from.
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    pub(crate) fn get(&self, resource: Resource, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(&(resource, ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Objects of a resource, in one namespace or all, ordered by namespace and name.
    pub(crate) fn list<'a>(
        &'a self,
        resource: Resource,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Arc<Value>> + 'a {
        self.objects
            .range((resource, String::new(), String::new())..)
            .take_while(move |((r, _, _), _)| *r == resource)
            .filter(move |((_, n, _), _)| ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
    }

    /// Every object of every resource.
    pub(crate) fn all(&self) -> impl Iterator<Item = (Resource, &Arc<Value>)> {
        self.objects.iter().map(|((r, _, _), v)| (*r, v))
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, event: Event) {
        self.history.push_back(Arc::new(event));
        self.trim();
        self.notify.send_replace(self.rv);
    }

    fn trim(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.floor = e.rv;
            }
        }
        if self.history_limit == 0 {
            self.floor = self.rv;
        }
    }

    /// Stores a new or changed object under a new resourceVersion and records the event.
    pub(crate) fn put(
        &mut self,
        resource: Resource,
        mut obj: Value,
        previous: Option<Arc<Value>>,
    ) -> Arc<Value> {
        let rv = self.bump();
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let (ns, name) = ns_name(&obj);
        let obj = Arc::new(obj);
        self.objects.insert((resource, ns, name), obj.clone());
        let kind = if previous.is_some() {
            EventKind::Modified
        } else {
            EventKind::Added
        };
        self.record(Event {
            rv,
            resource,
            kind,
            object: obj.clone(),
            previous,
        });
        obj
    }

    /// Removes an object; returns its last state, carrying the deletion's resourceVersion.
    pub(crate) fn remove(&mut self, resource: Resource, ns: &str, name: &str) -> Option<Arc<Value>> {
        let old = self
            .objects
            .remove(&(resource, ns.to_string(), name.to_string()))?;
        let rv = self.bump();
        let mut last = (*old).clone();
        last["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let last = Arc::new(last);
        self.record(Event {
            rv,
            resource,
            kind: EventKind::Deleted,
            object: last.clone(),
            previous: Some(old),
        });
        Some(last)
    }

    /// Events after `rv`, or `Err(floor)` when some of them are no longer kept.
    pub(crate) fn events_after(&self, rv: u64) -> Result<Vec<Arc<Event>>, u64> {
        if rv < self.floor {
            return Err(self.floor);
        }
        let start = self.history.partition_point(|e| e.rv <= rv);
        Ok(self.history.range(start..).cloned().collect())
    }

    /// Keeps at most `events` events; older resourceVersions then answer `410 Expired`.
    pub(crate) fn set_history_limit(&mut self, events: usize) {
        self.history_limit = events;
        self.trim();
    }
}
