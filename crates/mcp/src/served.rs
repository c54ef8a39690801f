//! What the sink serves, kept encoded: each object is turned into its MCP resource and
//! encoded once, when it changes. A change re-encodes only the changed object; the
//! set's bytes are the concatenation of every object's own, shared by every response.
//!
//! istiod takes a response as the whole set of its type and deletes what it lacks, so
//! the set is only offered once it is complete ([`Served::complete`]): before that,
//! the entry types are not answered at all, and a registry-sync that restarts never
//! shrinks istiod's view, not even for one response.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use registry_sync_istio::{IstioObject, Kind, ObjectKey};
use sha2::{Digest, Sha256};

use crate::convert::resource;

/// Every object of one kind, ready to send.
#[derive(Debug, PartialEq)]
pub struct KindSet {
    /// A digest of every object's name and content version: the same set gives the same
    /// version in every process and replica.
    pub version: String,
    /// How many objects the set holds.
    pub count: usize,
    /// The `resources` of a response, encoded once for every stream
    /// ([`crate::wire::encode_resource`] of each object, in key order).
    pub resources: bytes::Bytes,
}

/// One published state of the served set: both kinds, each shared by every response.
#[derive(Debug, Clone)]
pub struct Entries {
    pub service_entries: Arc<KindSet>,
    pub workload_entries: Arc<KindSet>,
}

impl Entries {
    pub fn of(&self, kind: Kind) -> &Arc<KindSet> {
        match kind {
            Kind::ServiceEntry => &self.service_entries,
            Kind::WorkloadEntry => &self.workload_entries,
        }
    }
}

struct Entry {
    /// The object's `resources` field as it goes on the wire.
    encoded: bytes::Bytes,
    version: String,
    first_served: SystemTime,
}

#[derive(Default)]
pub struct Served {
    objects: BTreeMap<ObjectKey, Entry>,
    complete: bool,
    /// Kinds changed since the last offer.
    dirty: [bool; 2],
    offered: Option<Entries>,
}

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::ServiceEntry => 0,
        Kind::WorkloadEntry => 1,
    }
}

impl Served {
    /// Serves `object` from now on; returns whether what istiod would store changed.
    pub fn upsert(&mut self, object: &IstioObject, now: SystemTime) -> bool {
        let key = object.key();
        let version = object.content_hash().to_string();
        let first_served = match self.objects.get(&key) {
            Some(entry) if entry.version == version => return false,
            Some(entry) => entry.first_served,
            None => now,
        };
        let entry = Entry {
            encoded: crate::wire::encode_resource(&resource(object, first_served)),
            version,
            first_served,
        };
        self.dirty[slot(key.kind)] = true;
        self.objects.insert(key, entry);
        true
    }

    /// Takes back an object a previous process served (see [`crate::state`]), exactly
    /// as it was encoded then.
    pub fn restore(
        &mut self,
        key: ObjectKey,
        encoded: bytes::Bytes,
        version: String,
        first_served: SystemTime,
    ) {
        self.dirty[slot(key.kind)] = true;
        self.objects.insert(
            key,
            Entry {
                encoded,
                version,
                first_served,
            },
        );
    }

    /// Every object served, as the state file keeps it: key, encoded resource, version
    /// and when it was first served.
    pub fn entries(&self) -> impl Iterator<Item = (&ObjectKey, &bytes::Bytes, &str, SystemTime)> {
        self.objects
            .iter()
            .map(|(k, e)| (k, &e.encoded, e.version.as_str(), e.first_served))
    }

    /// An object's encoded resource and when it was first served, as served now.
    pub fn encoded(&self, key: &ObjectKey) -> Option<(&bytes::Bytes, SystemTime)> {
        self.objects.get(key).map(|e| (&e.encoded, e.first_served))
    }

    /// Whether the set may be offered.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    pub fn remove(&mut self, key: &ObjectKey) -> bool {
        let removed = self.objects.remove(key).is_some();
        if removed {
            self.dirty[slot(key.kind)] = true;
        }
        removed
    }

    /// Every registry has delivered a complete view: what is served now is the whole
    /// desired state, and may be offered.
    pub fn complete(&mut self) {
        if !self.complete {
            self.complete = true;
            self.dirty = [true, true];
        }
    }

    /// The state to publish, when it changed since the last call; never before the set
    /// is complete.
    pub fn offer(&mut self) -> Option<Entries> {
        if !self.complete {
            return None;
        }
        if self.dirty == [false, false] && self.offered.is_some() {
            return None;
        }
        let previous = self.offered.take();
        let set = |kind: Kind, this: &Served| -> Arc<KindSet> {
            match &previous {
                Some(p) if !this.dirty[slot(kind)] => Arc::clone(p.of(kind)),
                _ => Arc::new(this.kind_set(kind)),
            }
        };
        let entries = Entries {
            service_entries: set(Kind::ServiceEntry, self),
            workload_entries: set(Kind::WorkloadEntry, self),
        };
        self.dirty = [false, false];
        self.offered = Some(entries.clone());
        Some(entries)
    }

    fn kind_set(&self, kind: Kind) -> KindSet {
        let mut digest = Sha256::new();
        let of_kind = || self.objects.iter().filter(move |(k, _)| k.kind == kind);
        let mut count = 0;
        let mut resources = Vec::with_capacity(of_kind().map(|(_, e)| e.encoded.len()).sum());
        for (key, entry) in of_kind() {
            digest.update(key.namespace.as_bytes());
            digest.update(b"/");
            digest.update(key.name.as_bytes());
            digest.update(b"=");
            digest.update(entry.version.as_bytes());
            digest.update(b"\n");
            resources.extend_from_slice(&entry.encoded);
            count += 1;
        }
        let version = digest.finalize();
        KindSet {
            version: version[..8].iter().map(|b| format!("{b:02x}")).collect(),
            count,
            resources: bytes::Bytes::from(resources),
        }
    }
}

#[cfg(test)]
mod tests {
    use registry_sync_istio::{LiteMap, ObjectMeta, ServiceEntrySpec};

    use super::*;

    fn entry(name: &str, host: &str) -> IstioObject {
        IstioObject::new(
            ObjectMeta {
                name: name.into(),
                namespace: "mesh".into(),
                labels: LiteMap::new(),
                annotations: LiteMap::new(),
            },
            registry_sync_istio::Spec::ServiceEntry(ServiceEntrySpec {
                addresses: Vec::new(),
                hosts: vec![host.into()],
                location: registry_sync_istio::Location::MeshInternal,
                resolution: registry_sync_istio::Resolution::Dns,
                ports: Vec::new(),
                endpoints: Vec::new(),
                workload_selector: None,
                export_to: Vec::new(),
            }),
        )
    }

    #[test]
    fn nothing_is_offered_until_the_set_is_complete_and_then_every_object_at_once() {
        let mut served = Served::default();
        let now = SystemTime::now();
        assert!(served.upsert(&entry("a", "a.example"), now));
        assert!(
            served.offer().is_none(),
            "a partial set would delete the rest in istiod"
        );
        assert!(served.upsert(&entry("b", "b.example"), now));
        served.complete();
        let offer = served.offer().expect("complete now");
        assert_eq!(offer.service_entries.count, 2);
        assert!(offer.workload_entries.count == 0);
        assert!(served.offer().is_none(), "nothing changed since");
    }

    #[test]
    fn an_unchanged_object_changes_nothing_and_a_changed_one_changes_only_its_kind() {
        let mut served = Served::default();
        let now = SystemTime::now();
        served.upsert(&entry("a", "a.example"), now);
        served.complete();
        let first = served.offer().unwrap();
        assert!(!served.upsert(&entry("a", "a.example"), now), "same content");
        assert!(served.offer().is_none());
        assert!(served.upsert(&entry("a", "a2.example"), now));
        let second = served.offer().unwrap();
        assert_ne!(first.service_entries.version, second.service_entries.version);
        assert!(Arc::ptr_eq(&first.workload_entries, &second.workload_entries));
        assert!(served.remove(&entry("a", "a2.example").key()));
        let third = served.offer().unwrap();
        assert!(third.service_entries.count == 0);
        assert_ne!(third.service_entries.version, second.service_entries.version);
    }

    #[test]
    fn the_same_set_has_the_same_version_in_another_process_whenever_it_was_first_served() {
        let build = |at: SystemTime| {
            let mut served = Served::default();
            served.upsert(&entry("a", "a.example"), at);
            served.upsert(&entry("b", "b.example"), at);
            served.complete();
            served.offer().unwrap().service_entries.version.clone()
        };
        let now = SystemTime::now();
        assert_eq!(build(now), build(now + std::time::Duration::from_secs(3600)));
    }
}
