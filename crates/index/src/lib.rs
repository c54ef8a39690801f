//! The index: what every registry said last, translated, and which objects changed at
//! which version.
//!
//! Sources feed it whole views ([`Index::snapshot`]), the services an event touched
//! ([`Index::delta`]) and failures ([`Index::failed`]). It keeps the last known state of
//! every registry (a failing registry keeps its services), translates incrementally,
//! and records each changed object key at a new version. Each sink's writer remembers
//! the version it applied and asks [`Index::changed_since`] for the rest, so one
//! changed instance costs a writer one object, and a slow writer catches up in one
//! plan however many versions it missed.
//!
//! What may be deleted is part of the index too ([`Index::scope`]): a registry that
//! has not delivered a complete view, or a service it could not read, protects its
//! objects. When that scope widens (a registry completes, a service is readable
//! again), leftovers anywhere may now go, which no key-based plan sees: the index
//! bumps [`Index::epoch`] and writers plan everything once.
//!
//! Pure: no I/O, no clock, no async. The runtime shares it between the task that
//! feeds it and the writers that read it.

#![forbid(unsafe_code)]

mod log;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use registry_sync_catalog::{RegistryDelta, RegistrySnapshot, ServiceKey, Skipped};
use registry_sync_istio::Desired;
use registry_sync_plan::DeleteScope;
use registry_sync_translate::{Index as Translation, Settings};

pub use log::Since;

/// A look-up for `explain`, explained without the index (see [`Index::lookup`]).
pub struct Lookup {
    translation: registry_sync_translate::Lookup,
    /// What the sources refused of the services found, sorted per service.
    refused: Vec<Skipped>,
}

impl Lookup {
    pub fn explain(self) -> registry_sync_translate::Found {
        let mut found = self.translation.explain();
        for group in &mut found.groups {
            let extra: Vec<Skipped> = group
                .contributors
                .iter()
                .flat_map(|(registry, service)| {
                    let service = service.key().to_string();
                    self.refused
                        .iter()
                        .filter(move |s| s.registry == *registry && s.service == service)
                        .cloned()
                })
                .collect();
            group.refused.extend(extra);
        }
        found
    }
}

/// What one registry's view did to the index, for logs and metrics.
#[derive(Debug, Default)]
pub struct Update {
    /// Desired objects created, changed or removed.
    pub changed: usize,
    /// Services and instances the registry has now.
    pub services: usize,
    pub instances: usize,
    /// Items refused (by the source or the translation) that were not refused before.
    pub new_problems: Vec<Skipped>,
    /// Lesser repairs in the changed groups (debug-level).
    pub notes: Vec<Skipped>,
    /// Services that moved, left the selection or stayed where an earlier decision put
    /// them (info-level).
    pub moves: Vec<String>,
    /// Services that could not be read now, as `registry:service`.
    pub unknown: Vec<String>,
    /// The delete scope widened: writers plan everything once.
    pub widened: bool,
}

#[derive(Default)]
struct RegistryState {
    /// The last answer was a complete, successful view.
    complete: bool,
    /// A complete view came at least once since start.
    delivered: bool,
    /// Services (`registry:service`) the latest view could not read.
    unknown: BTreeSet<String>,
    /// What the source refuses now.
    source_skipped: HashSet<Skipped>,
    services: usize,
    instances: usize,
}

pub struct Index {
    translation: Translation,
    configured: BTreeSet<String>,
    registries: BTreeMap<String, RegistryState>,
    log: log::ChangeLog,
    epoch: u64,
    /// The version current when every registry had first delivered a complete view.
    ready_version: Option<u64>,
    prune_orphans: bool,
}

impl Index {
    pub fn new(settings: Settings, configured: BTreeSet<String>) -> Index {
        Index {
            translation: Translation::new(settings),
            configured,
            registries: BTreeMap::new(),
            log: log::ChangeLog::default(),
            epoch: 0,
            ready_version: None,
            prune_orphans: false,
        }
    }

    /// Virtual IPs the sinks already hold (namespace, host, address), kept for those
    /// hosts; before the first registry is heard from.
    pub fn seed_vips<'a>(&mut self, held: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) {
        self.translation.seed_vips(held);
    }

    /// Takes the addresses a sink holds for our hosts (see
    /// [`registry_sync_translate::Index::adopt_vips`]); returns how many objects
    /// changed.
    pub fn adopt_vips<'a>(&mut self, held: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) -> usize {
        let changes = self.translation.adopt_vips(held);
        let changed = changes.objects.len();
        self.log.record(changes.objects);
        changed
    }

    /// Addresses of objects someone else wrote in the sinks: never given to an entry of
    /// ours.
    pub fn reserve_vips<'a>(&mut self, addresses: impl IntoIterator<Item = &'a str>) {
        self.translation.reserve_vips(addresses);
    }

    /// Lets plans delete orphans (objects of registries no longer configured).
    pub fn prune_orphans(mut self) -> Index {
        self.prune_orphans = true;
        self
    }

    /// A registry's complete view, replacing what it said before.
    pub fn snapshot(&mut self, registry: &str, snapshot: &RegistrySnapshot) -> Update {
        let services = snapshot.services().len();
        let instances = snapshot.instance_count();
        let changes = self.translation.update(registry, snapshot);
        let mut update = self.complete(registry, &snapshot.unknown, Some(&snapshot.skipped));
        update.services = services;
        update.instances = instances;
        self.record(registry, update, changes)
    }

    /// What changed in a registry since its last view (which came before as a
    /// snapshot): costs the changed services, not the registry.
    pub fn delta(&mut self, registry: &str, delta: &RegistryDelta) -> Update {
        let state = self.registries.entry(registry.to_string()).or_default();
        let (mut services, mut instances) = (state.services as isize, state.instances as isize);
        for key in delta.removed.iter().filter(|k| !delta.unknown.contains(k)) {
            if let Some(old) = self.translation.service(registry, key) {
                services -= 1;
                instances -= old.instances.len() as isize;
            }
        }
        for service in &delta.upserts {
            match self.translation.service(registry, &service.key()) {
                Some(old) => instances -= old.instances.len() as isize,
                None => services += 1,
            }
            instances += service.instances.len() as isize;
        }
        let changes = self.translation.apply_delta(registry, delta);
        let mut update = self.complete(registry, &delta.unknown, delta.skipped.as_deref());
        update.services = services.max(0) as usize;
        update.instances = instances.max(0) as usize;
        self.record(registry, update, changes)
    }

    /// The time the next updates happen at, for drain delays (see
    /// [`registry_sync_translate::Index::set_clock`]).
    pub fn set_clock(&mut self, now: std::time::Duration) {
        self.translation.set_clock(now);
    }

    /// Deletes the WorkloadEntries whose drain delay is over at `now`; returns how many
    /// objects changed.
    pub fn expire(&mut self, now: std::time::Duration) -> usize {
        let changes = self.translation.expire(now);
        let changed = changes.objects.len();
        self.log.record(changes.objects);
        changed
    }

    /// When the next drain delay is over, if any runs.
    pub fn next_drain_deadline(&self) -> Option<std::time::Duration> {
        self.translation.next_drain_deadline()
    }

    /// The registry cannot be read: its last known state stays, and nothing of it is
    /// deleted until it answers again.
    pub fn failed(&mut self, registry: &str) {
        self.registries.entry(registry.to_string()).or_default().complete = false;
    }

    /// Marks a registry complete after a view; returns the update so far.
    fn complete(&mut self, registry: &str, unknown: &[ServiceKey], skipped: Option<&[Skipped]>) -> Update {
        let state = self.registries.entry(registry.to_string()).or_default();
        let newly_complete = !state.complete;
        state.complete = true;
        state.delivered = true;
        let mut update = Update::default();
        if let Some(skipped) = skipped {
            update.new_problems = skipped
                .iter()
                .filter(|s| !state.source_skipped.contains(*s))
                .cloned()
                .collect();
            state.source_skipped = skipped.iter().cloned().collect();
        }
        let unknown: BTreeSet<String> = unknown.iter().map(|key| format!("{registry}:{key}")).collect();
        // Objects kept for a service that is readable again may now be written.
        let recovered = state.unknown.iter().any(|k| !unknown.contains(k));
        update.unknown = unknown.iter().cloned().collect();
        state.unknown = unknown;
        update.widened = newly_complete || recovered;
        update
    }

    fn record(
        &mut self,
        registry: &str,
        mut update: Update,
        changes: registry_sync_translate::Changes,
    ) -> Update {
        update.changed = changes.objects.len();
        update.new_problems.extend(changes.new_problems);
        update.notes = changes.notes;
        update.moves = changes.moves;
        self.log.record(changes.objects);
        if update.widened {
            self.epoch += 1;
        }
        let state = self.registries.entry(registry.to_string()).or_default();
        state.services = update.services;
        state.instances = update.instances;
        if self.ready_version.is_none() && self.all_complete() {
            self.ready_version = Some(self.log.version());
        }
        update
    }

    /// Every configured registry's latest view is complete.
    pub fn all_complete(&self) -> bool {
        self.configured
            .iter()
            .all(|r| self.registries.get(r).is_some_and(|s| s.complete))
    }

    /// The version every sink must have applied to be ready: the one current when every
    /// registry had first delivered a complete view. `None` until then.
    pub fn ready_version(&self) -> Option<u64> {
        self.ready_version
    }

    /// The current version; it grows with every change of the desired set.
    pub fn version(&self) -> u64 {
        self.log.version()
    }

    /// Grows when the delete scope widened: a writer that saw an older epoch plans
    /// everything once.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The objects whose desired state changed after `version`.
    pub fn changed_since(&self, version: u64) -> Since {
        self.log.since(version)
    }

    /// Forgets the changes every writer has planned past (`upto`, the lowest version
    /// any writer may still ask about), so the log holds recent changes only.
    pub fn compact(&mut self, upto: u64) {
        self.log.compact(upto);
    }

    pub fn desired(&self) -> &Desired {
        self.translation.desired()
    }

    /// The desired objects made from one registry service (`registry:service`): the
    /// successors of an object it fed before (see [`registry_sync_plan::hold_replacements`]).
    pub fn successors(&self, source: &str) -> Vec<registry_sync_istio::ObjectKey> {
        self.translation.objects_of_source(source)
    }

    /// What plans may delete now.
    pub fn scope(&self) -> DeleteScope {
        let registries = || self.registries.iter();
        DeleteScope {
            complete: registries()
                .filter(|(_, s)| s.complete)
                .map(|(r, _)| r.clone())
                .collect(),
            delivered: registries()
                .filter(|(_, s)| s.delivered)
                .map(|(r, _)| r.clone())
                .collect(),
            configured: self.configured.clone(),
            prune_orphans: self.prune_orphans,
            unknown: registries()
                .flat_map(|(_, s)| s.unknown.iter().cloned())
                .collect(),
        }
    }

    /// What `explain` shows for a service or host (see
    /// [`registry_sync_translate::Index::explain`]).
    pub fn explain(&self, query: &str) -> registry_sync_translate::Found {
        self.lookup(query).explain()
    }

    /// What [`Index::explain`] needs, taken in a moment: explaining it afterwards
    /// ([`Lookup::explain`]) needs the index no more, so a shared index is locked only
    /// for the look-up.
    pub fn lookup(&self, query: &str) -> Lookup {
        let translation = self.translation.lookup(query);
        // What the sources refused never became an instance: it is told here.
        let mut refused: Vec<Skipped> = Vec::new();
        let wanted: BTreeSet<(&str, String)> = translation.contributors().collect();
        for (registry, service) in &wanted {
            let before = refused.len();
            refused.extend(
                self.registries
                    .get(*registry)
                    .into_iter()
                    .flat_map(|state| state.source_skipped.iter())
                    .filter(|s| s.service == *service)
                    .cloned(),
            );
            refused[before..].sort_by(|a, b| a.instance.cmp(&b.instance));
        }
        Lookup { translation, refused }
    }

    /// Why the registry's `select` leaves a service out; `None` when it does not.
    pub fn unselected(&self, registry: &str, service: &registry_sync_catalog::ServiceKey) -> Option<String> {
        self.translation.unselected(registry, service)
    }

    /// Every current problem of the translation (services without a host, skipped
    /// instances and ports).
    pub fn problems(&self) -> impl Iterator<Item = &Skipped> {
        self.translation.problems()
    }

    /// Every current problem: what the sources refused and what translation skipped.
    pub fn problems_with_sources(&self) -> Vec<Skipped> {
        let mut all: Vec<Skipped> = self
            .registries
            .values()
            .flat_map(|state| state.source_skipped.iter().cloned())
            .chain(self.translation.problems().cloned())
            .collect();
        all.sort_by(|a, b| {
            (&a.registry, &a.service, &a.instance).cmp(&(&b.registry, &b.service, &b.instance))
        });
        all
    }

    /// Entries in the change log (changes not yet compacted).
    pub fn log_len(&self) -> usize {
        self.log.len()
    }
}

#[cfg(test)]
mod tests;
