//! What a watching source knows of its registry between two snapshots.
//!
//! Registries that push (etcd, ZooKeeper) report one key or node at a time. The source
//! keeps every item it has seen, per service, and rebuilds only the services an event
//! touched; the others are handed over as the same `Arc<Service>` in the next
//! snapshot, so the consumer skips comparing them (pointer equality). Building a
//! snapshot of an estate where one instance changed therefore costs that service plus
//! one pointer per other service.
//!
//! After the first snapshot a source sends [`Services::delta`] instead: only the
//! services touched since, so the consumer's work follows the change, not the estate.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use registry_sync_catalog::{
    Instance, Metadata, RegistryDelta, RegistrySnapshot, Service, ServiceKey, Skipped,
};

/// One item of a registry: the instance it describes, or why it was refused.
pub(crate) type Item = Result<Instance, Skipped>;

#[derive(Default)]
struct Entry {
    /// By the registry's own key of the item (an etcd key, a ZooKeeper node name).
    items: BTreeMap<String, Item>,
    /// The service as last built; `None` after a change.
    built: Option<Arc<Service>>,
    /// What the last build refused (kept across changes, to tell whether it changed).
    refused: Vec<Skipped>,
    /// The registry-side namespace (a Nacos group) and name the service is built with,
    /// when they differ from its key here; `None`: the key is the name, no namespace.
    scope: Option<(Option<String>, String)>,
}

/// Every service of one registry, as items, with the last built form of each.
pub(crate) struct Services {
    registry: String,
    services: BTreeMap<String, Entry>,
    /// Items that belong to no service (a key outside the layout), by their key.
    orphans: BTreeMap<String, Skipped>,
    /// Services (by key here) that exist but could not be read this time, with the key
    /// they are known by downstream; see [`RegistrySnapshot::unknown`].
    unknown: BTreeMap<String, ServiceKey>,
    /// Something changed since the last snapshot.
    dirty: bool,
    /// Services (by key here) added or changed since the last snapshot or delta.
    touched: BTreeSet<String>,
    /// Services (as known downstream) removed since the last snapshot or delta.
    gone: BTreeSet<ServiceKey>,
    /// The refused items may differ from the last snapshot or delta.
    skipped_dirty: bool,
}

impl Entry {
    fn downstream_key(&self, key: &str) -> ServiceKey {
        match &self.scope {
            Some((namespace, name)) => ServiceKey {
                namespace: namespace.clone(),
                name: name.clone(),
            },
            None => ServiceKey {
                namespace: None,
                name: key.to_string(),
            },
        }
    }
}

impl Services {
    pub(crate) fn new(registry: &str) -> Services {
        Services {
            registry: registry.to_string(),
            services: BTreeMap::new(),
            orphans: BTreeMap::new(),
            unknown: BTreeMap::new(),
            dirty: true,
            touched: BTreeSet::new(),
            gone: BTreeSet::new(),
            skipped_dirty: false,
        }
    }

    /// Notes that a service was added or changed.
    fn touch(&mut self, key: &str) {
        self.dirty = true;
        self.touched.insert(key.to_string());
    }

    /// Notes that a service is gone.
    fn drop_entry(&mut self, key: &str, entry: &Entry) {
        self.dirty = true;
        self.skipped_dirty |= !entry.refused.is_empty();
        self.gone.insert(entry.downstream_key(key));
    }

    /// Marks a service (unscoped: its key is its name) as unreadable this time (`true`)
    /// or readable again. Returns whether that changed anything.
    pub(crate) fn set_unknown(&mut self, service: &str, unknown: bool) -> bool {
        if unknown {
            let key = ServiceKey {
                namespace: None,
                name: service.to_string(),
            };
            self.mark_unknown(service, key)
        } else {
            self.clear_unknown(service)
        }
    }

    /// Marks a service as unreadable this time; `as_key` is how downstream knows it.
    /// Returns whether it was not marked before.
    pub(crate) fn mark_unknown(&mut self, service: &str, as_key: ServiceKey) -> bool {
        let newly = self.unknown.insert(service.to_string(), as_key).is_none();
        self.dirty |= newly;
        newly
    }

    /// Returns whether the service was marked unknown.
    pub(crate) fn clear_unknown(&mut self, service: &str) -> bool {
        let was = self.unknown.remove(service).is_some();
        self.dirty |= was;
        was
    }

    pub(crate) fn unknown_count(&self) -> usize {
        self.unknown.len()
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub(crate) fn len(&self) -> usize {
        self.services.len()
    }

    /// Replaces everything with a complete listing, keeping the built form of every
    /// service whose items did not change (a relist after a reconnect usually finds
    /// almost everything as it was).
    pub(crate) fn replace_all(
        &mut self,
        listing: BTreeMap<String, BTreeMap<String, Item>>,
        orphans: BTreeMap<String, Skipped>,
    ) {
        if self.orphans != orphans {
            self.orphans = orphans;
            self.dirty = true;
            self.skipped_dirty = true;
        }
        let mut old = std::mem::take(&mut self.services);
        for (name, items) in listing {
            let (built, refused) = match old.remove(&name) {
                Some(entry) if entry.items == items && entry.scope.is_none() => (entry.built, entry.refused),
                Some(entry) => {
                    if entry.scope.is_some() {
                        self.drop_entry(&name, &entry);
                    }
                    self.touch(&name);
                    (None, entry.refused)
                }
                None => {
                    self.touch(&name);
                    (None, Vec::new())
                }
            };
            let entry = Entry {
                items,
                built,
                refused,
                scope: None,
            };
            self.services.insert(name, entry);
        }
        for (name, entry) in old {
            self.drop_entry(&name, &entry);
        }
    }

    #[cfg(feature = "zookeeper")]
    /// Makes sure a service exists, even with no instances (a ZooKeeper service node
    /// whose providers are all gone still names a service).
    pub(crate) fn ensure_service(&mut self, service: &str) {
        if !self.services.contains_key(service) {
            self.services.insert(service.to_string(), Entry::default());
            self.touch(service);
        }
    }

    #[cfg(any(
        feature = "zookeeper",
        feature = "dns",
        feature = "consul",
        feature = "eureka",
        feature = "nacos",
        feature = "cloudmap"
    ))]
    pub(crate) fn remove_service(&mut self, service: &str) {
        if let Some(entry) = self.services.remove(service) {
            self.drop_entry(service, &entry);
        }
        self.clear_unknown(service);
    }

    #[cfg(any(feature = "dns", feature = "consul", feature = "eureka"))]
    /// Replaces one service's items with a complete new set, creating the service if
    /// needed: a DNS answer is always the whole service, and an empty set (an SRV
    /// target `.`) still names one.
    pub(crate) fn replace_service(&mut self, service: &str, items: BTreeMap<String, Item>) {
        self.replace_entry(service, None, items);
    }

    #[cfg(any(feature = "nacos", feature = "cloudmap"))]
    /// Like [`Services::replace_service`], for a registry that scopes service names by
    /// a namespace or group (Nacos): `key` is unique within this state, and the built
    /// service carries `namespace` and `name`.
    pub(crate) fn replace_scoped_service(
        &mut self,
        key: &str,
        namespace: Option<&str>,
        name: &str,
        items: BTreeMap<String, Item>,
    ) {
        let scope = Some((namespace.map(str::to_string), name.to_string()));
        self.replace_entry(key, scope, items);
    }

    #[cfg(any(
        feature = "dns",
        feature = "consul",
        feature = "eureka",
        feature = "nacos",
        feature = "cloudmap"
    ))]
    /// Replaces one entry's items and scope; a no-op when both are what is held.
    fn replace_entry(
        &mut self,
        key: &str,
        scope: Option<(Option<String>, String)>,
        items: BTreeMap<String, Item>,
    ) {
        match self.services.get_mut(key) {
            Some(entry) if entry.items == items && entry.scope == scope => {}
            Some(entry) => {
                let old_key = entry.downstream_key(key);
                entry.items = items;
                entry.scope = scope;
                entry.built = None;
                if entry.downstream_key(key) != old_key {
                    self.gone.insert(old_key);
                }
                self.touch(key);
            }
            None => {
                let entry = Entry {
                    items,
                    built: None,
                    refused: Vec::new(),
                    scope,
                };
                self.services.insert(key.to_string(), entry);
                self.touch(key);
            }
        }
    }

    #[cfg(feature = "zookeeper")]
    /// Removes every service.
    pub(crate) fn clear(&mut self) {
        if !self.orphans.is_empty() {
            self.orphans.clear();
            self.dirty = true;
            self.skipped_dirty = true;
        }
        for (key, entry) in std::mem::take(&mut self.services) {
            self.drop_entry(&key, &entry);
        }
    }

    #[cfg(feature = "etcd")]
    /// Records a key that belongs to no service, with the reason.
    pub(crate) fn put_orphan(&mut self, key: &str, skipped: Skipped) {
        if self.orphans.get(key) != Some(&skipped) {
            self.orphans.insert(key.to_string(), skipped);
            self.dirty = true;
            self.skipped_dirty = true;
        }
    }

    #[cfg(feature = "etcd")]
    pub(crate) fn remove_orphan(&mut self, key: &str) {
        if self.orphans.remove(key).is_some() {
            self.dirty = true;
            self.skipped_dirty = true;
        }
    }

    /// Sets one item; a no-op when it is equal to what is held.
    pub(crate) fn put(&mut self, service: &str, key: &str, item: Item) {
        let entry = self.services.entry(service.to_string()).or_default();
        if entry.items.get(key) == Some(&item) {
            return;
        }
        entry.items.insert(key.to_string(), item);
        entry.built = None;
        self.touch(service);
    }

    /// Removes one item. With `drop_empty` a service left without items is removed
    /// too: in a flat key space (etcd) a service is nothing but its keys.
    pub(crate) fn remove(&mut self, service: &str, key: &str, drop_empty: bool) {
        let Some(entry) = self.services.get_mut(service) else {
            return;
        };
        if entry.items.remove(key).is_none() {
            return;
        }
        if drop_empty && entry.items.is_empty() {
            if let Some(entry) = self.services.remove(service) {
                self.drop_entry(service, &entry);
            }
        } else {
            entry.built = None;
            self.touch(service);
        }
    }

    /// The whole registry as a snapshot, rebuilding only the services that changed.
    pub(crate) fn snapshot(&mut self) -> RegistrySnapshot {
        let mut services = Vec::with_capacity(self.services.len());
        for (key, entry) in &mut self.services {
            services.push(built(&self.registry, key, entry).0);
        }
        self.dirty = false;
        self.touched.clear();
        self.gone.clear();
        self.skipped_dirty = false;
        let unknown = self.unknown.values().cloned();
        RegistrySnapshot::from_shared(&self.registry, services, self.all_skipped()).with_unknown(unknown)
    }

    /// What changed since the last snapshot or delta: the services touched, rebuilt,
    /// and those gone. Costs the changed services, not the registry.
    pub(crate) fn delta(&mut self) -> RegistryDelta {
        let mut upserts = Vec::with_capacity(self.touched.len());
        for key in std::mem::take(&mut self.touched) {
            let Some(entry) = self.services.get_mut(&key) else {
                continue;
            };
            let (service, refused_changed) = built(&self.registry, &key, entry);
            self.skipped_dirty |= refused_changed;
            upserts.push(service);
        }
        upserts.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut gone = std::mem::take(&mut self.gone);
        for service in &upserts {
            gone.remove(&service.key());
        }
        self.dirty = false;
        let skipped = std::mem::take(&mut self.skipped_dirty).then(|| self.all_skipped());
        RegistryDelta {
            upserts,
            removed: gone.into_iter().collect(),
            unknown: self.unknown.values().cloned().collect(),
            skipped,
        }
    }

    fn all_skipped(&self) -> Vec<Skipped> {
        let mut skipped: Vec<Skipped> = self.orphans.values().cloned().collect();
        for entry in self.services.values() {
            skipped.extend(entry.refused.iter().cloned());
        }
        skipped
    }
}

/// The entry's service, built if a change invalidated it, and whether what the build
/// refused differs from before.
fn built(registry: &str, key: &str, entry: &mut Entry) -> (Arc<Service>, bool) {
    if let Some(service) = &entry.built {
        return (Arc::clone(service), false);
    }
    let (namespace, name) = match &entry.scope {
        Some((namespace, name)) => (namespace.as_deref(), name.as_str()),
        None => (None, key),
    };
    let (service, refused) = build(registry, namespace, name, &entry.items);
    let changed = refused != entry.refused;
    entry.refused = refused;
    entry.built = Some(Arc::clone(&service));
    (service, changed)
}

fn build(
    registry: &str,
    namespace: Option<&str>,
    name: &str,
    items: &BTreeMap<String, Item>,
) -> (Arc<Service>, Vec<Skipped>) {
    let mut skipped = Vec::new();
    let mut instances = Vec::with_capacity(items.len());
    for item in items.values() {
        match item {
            Ok(instance) => instances.push(instance.clone()),
            Err(skip) => skipped.push(skip.clone()),
        }
    }
    let mut service = Service {
        name: name.to_string(),
        namespace: namespace.map(str::to_string),
        labels: Metadata::new(),
        instances,
    };
    skipped.extend(service.canonicalize(registry));
    (Arc::new(service), skipped)
}

#[cfg(test)]
mod tests {
    use registry_sync_catalog::Address;

    use super::*;

    fn instance(id: &str, port: u16) -> Item {
        Ok(Instance {
            id: id.into(),
            address: Address::parse("10.0.0.1").unwrap(),
            ports: vec![registry_sync_catalog::InstancePort {
                name: "default".into(),
                number: port,
                protocol_hint: None,
            }],
            healthy: true,
            weight: None,
            placement: None,
            labels: Metadata::new(),
        })
    }

    #[test]
    fn unchanged_services_are_handed_over_as_the_same_arc() {
        let mut state = Services::new("r");
        state.put("a", "1", instance("1", 80));
        state.put("b", "1", instance("1", 80));
        let first = state.snapshot();
        assert!(!state.is_dirty());
        state.put("b", "1", instance("1", 81));
        let second = state.snapshot();
        assert!(Arc::ptr_eq(&first.services()[0], &second.services()[0]));
        assert!(!Arc::ptr_eq(&first.services()[1], &second.services()[1]));
    }

    #[test]
    fn putting_an_equal_item_changes_nothing() {
        let mut state = Services::new("r");
        state.put("a", "1", instance("1", 80));
        state.snapshot();
        state.put("a", "1", instance("1", 80));
        assert!(!state.is_dirty());
    }

    #[test]
    fn removing_the_last_item_drops_the_service_only_when_asked() {
        let mut state = Services::new("r");
        state.put("a", "1", instance("1", 80));
        state.put("b", "1", instance("1", 80));
        state.remove("a", "1", true);
        state.remove("b", "1", false);
        let snapshot = state.snapshot();
        let names: Vec<_> = snapshot.services().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b"]);
        assert!(snapshot.services()[0].instances.is_empty());
    }

    #[test]
    fn refused_items_travel_in_the_snapshot_and_duplicate_ids_are_reported() {
        let mut state = Services::new("r");
        state.put("a", "k1", instance("same", 80));
        state.put("a", "k2", instance("same", 81));
        state.put(
            "a",
            "k3",
            Err(Skipped {
                registry: "r".into(),
                service: "a".into(),
                instance: Some("k3".into()),
                kind: registry_sync_catalog::SkipKind::Malformed,
                reason: "bad".into(),
            }),
        );
        let snapshot = state.snapshot();
        assert_eq!(snapshot.services()[0].instances.len(), 1);
        assert_eq!(snapshot.skipped.len(), 2, "{:?}", snapshot.skipped);
    }

    #[test]
    fn a_relist_equal_to_the_state_keeps_every_built_service() {
        let mut state = Services::new("r");
        state.put("a", "1", instance("1", 80));
        let first = state.snapshot();
        let listing = BTreeMap::from([(
            "a".to_string(),
            BTreeMap::from([("1".to_string(), instance("1", 80))]),
        )]);
        state.replace_all(listing, BTreeMap::new());
        assert!(!state.is_dirty());
        let second = state.snapshot();
        assert!(Arc::ptr_eq(&first.services()[0], &second.services()[0]));
    }
}
