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

//! The index: the one home of registry-sync's state — what every registry said last,
//! translated, and which objects changed at which version.
//!
//! Sources feed it [`Event`]s: a registry's whole view, the services a change touched,
//! a failure. It keeps the last known state of every registry (a failing registry
//! keeps its services), translates incrementally with `registry_sync_translate`'s
//! rules, and records each changed object key at a new version. Each sink's writer
//! remembers the version it applied and asks [`Index::changed_since`] for the rest, so
//! one changed instance costs a writer one object, and a slow writer catches up in one
//! plan however many versions it missed. Registries come and go at run time
//! ([`Index::configure`], [`Index::remove`]).
//!
//! What may be deleted is part of the index too ([`Index::scope`]): a registry that
//! has not delivered a complete view, or a service it could not read, protects its
//! objects. When that scope widens (a registry completes, a service is readable
//! again, a registry is removed), leftovers anywhere may now go, which no key-based
//! plan sees: the index bumps [`Index::epoch`] and writers plan everything once.
//!
//! Pure: no I/O, no clock (the caller passes the time in), no async. The runtime
//! shares it between the task that feeds it and the writers that read it.

#![forbid(unsafe_code)]

mod explain;
mod groups;
mod log;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use registry_sync_catalog::{RegistryDelta, RegistrySnapshot, ServiceKey, Skipped};
use registry_sync_istio::{Desired, HeldObject, ObjectKey};
use registry_sync_plan::{DeleteScope, Owner};
use registry_sync_translate::{RegistrySettings, Settings};

use groups::{Changes, Groups};
pub use log::Since;

/// What a registry's source reports.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// Its complete view, replacing what it said before.
    View(&'a RegistrySnapshot),
    /// What changed since its last view: costs the changed services, not the registry.
    Changed(&'a RegistryDelta),
    /// It cannot be read: its last known state stays, and nothing of it is deleted
    /// until it answers again.
    Failed,
}

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

/// What one event did to the index, for logs and metrics.
#[derive(Debug, Default)]
pub struct Update {
    /// Desired objects created, changed or removed.
    pub changed: BTreeSet<ObjectKey>,
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

impl Update {
    /// Writers have something new to look at.
    pub fn is_news(&self) -> bool {
        !self.changed.is_empty() || self.widened
    }
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
    groups: Groups,
    configured: BTreeSet<String>,
    /// Registries removed at run time: what of theirs is left in a sink may go.
    removed: BTreeSet<String>,
    registries: BTreeMap<String, RegistryState>,
    log: log::ChangeLog,
    epoch: u64,
    /// The version current when every registry had first delivered a complete view.
    ready_version: Option<u64>,
    prune_orphans: bool,
}

/// A held ServiceEntry's namespace, first host and address, as the allocator takes them.
fn vip_of(held: &HeldObject) -> Option<(&str, &str, &str)> {
    let (host, address) = held.vip.as_ref()?;
    Some((held.key.namespace.as_str(), host.as_str(), address.as_str()))
}

impl Index {
    /// An index of the registries `settings` names.
    pub fn new(settings: Settings) -> Index {
        Index {
            configured: settings.registries.keys().cloned().collect(),
            groups: Groups::new(settings),
            removed: BTreeSet::new(),
            registries: BTreeMap::new(),
            log: log::ChangeLog::default(),
            epoch: 0,
            ready_version: None,
            prune_orphans: false,
        }
    }

    /// Lets plans delete orphans (objects of registries no longer configured).
    pub fn prune_orphans(mut self) -> Index {
        self.prune_orphans = true;
        self
    }

    /// Keeps the virtual IPs the sinks' own ServiceEntries already have (read back when
    /// they were opened), so a restart moves no address; another's address is never
    /// ours to hand out, whoever wrote it. Call before the first event.
    pub fn seed_vips<'a>(&mut self, held: impl IntoIterator<Item = &'a HeldObject>, owner: &Owner) {
        let (ours, foreign): (Vec<&HeldObject>, Vec<&HeldObject>) = held
            .into_iter()
            .filter(|held| held.vip.is_some())
            .partition(|held| owner.owns(held));
        self.groups.reserve_vips(
            foreign
                .iter()
                .filter_map(|h| h.vip.as_ref().map(|(_, a)| a.as_str())),
        );
        self.groups.seed_vips(ours.into_iter().filter_map(vip_of));
    }

    /// Takes the addresses a sink holds for our entries where they differ from the
    /// index's own: a standby that takes over (or an MCP replica that meets a sink
    /// written by another) writes the addresses that are out there, never its own
    /// order of arrival.
    pub fn adopt_vips<'a>(
        &mut self,
        held: impl IntoIterator<Item = &'a HeldObject>,
        owner: &Owner,
        now: Duration,
    ) -> Update {
        let ours = held.into_iter().filter(|h| owner.owns(h));
        let changes = self.groups.adopt_vips(ours.filter_map(vip_of), now);
        self.record_changes(changes)
    }

    /// Takes what a registry's source reported at `now` (the caller's time since any
    /// fixed start: drain delays count from it).
    pub fn apply(&mut self, registry: &str, event: Event<'_>, now: Duration) -> Update {
        // Events of a registry removed a moment ago may still be on their way.
        if !self.configured.contains(registry) {
            return Update::default();
        }
        match event {
            Event::View(snapshot) => {
                let changes = self.groups.update(registry, snapshot, now);
                let mut update = self.complete(registry, &snapshot.unknown, Some(&snapshot.skipped));
                update.services = snapshot.services().len();
                update.instances = snapshot.instance_count();
                self.record(registry, update, changes)
            }
            Event::Changed(delta) => {
                let (services, instances) = self.counts_after(registry, delta);
                let changes = self.groups.apply_delta(registry, delta, now);
                let mut update = self.complete(registry, &delta.unknown, delta.skipped.as_deref());
                update.services = services;
                update.instances = instances;
                self.record(registry, update, changes)
            }
            Event::Failed => {
                self.registries.entry(registry.to_string()).or_default().complete = false;
                Update::default()
            }
        }
    }

    /// Services and instances a registry will have once `delta` is in.
    fn counts_after(&mut self, registry: &str, delta: &RegistryDelta) -> (usize, usize) {
        let state = self.registries.entry(registry.to_string()).or_default();
        let (mut services, mut instances) = (state.services as isize, state.instances as isize);
        for key in delta.removed.iter().filter(|k| !delta.unknown.contains(k)) {
            if let Some(old) = self.groups.service(registry, key) {
                services -= 1;
                instances -= old.instances.len() as isize;
            }
        }
        for service in &delta.upserts {
            match self.groups.service(registry, &service.key()) {
                Some(old) => instances -= old.instances.len() as isize,
                None => services += 1,
            }
            instances += service.instances.len() as isize;
        }
        (services.max(0) as usize, instances.max(0) as usize)
    }

    /// Adds a registry at run time, or takes new settings for one held (its services
    /// are placed again under them). A new registry protects nothing and makes nothing
    /// until its first complete view; readiness, once reached, stays.
    pub fn configure(&mut self, registry: &str, settings: RegistrySettings, now: Duration) -> Update {
        self.removed.remove(registry);
        self.configured.insert(registry.to_string());
        let changes = self.groups.configure(registry, settings, now);
        self.record_changes(changes)
    }

    /// Removes a registry at run time: its objects leave the desired set, and what of
    /// it a sink still holds (written before a restart, say) may be deleted, so writers
    /// plan everything once.
    pub fn remove(&mut self, registry: &str, now: Duration) -> Update {
        if !self.configured.remove(registry) {
            return Update::default();
        }
        self.registries.remove(registry);
        self.removed.insert(registry.to_string());
        let changes = self.groups.remove(registry, now);
        let mut update = self.record_changes(changes);
        update.widened = true;
        self.epoch += 1;
        self.settle_ready();
        update
    }

    /// Deletes the WorkloadEntries whose drain delay is over at `now`.
    pub fn expire(&mut self, now: Duration) -> Update {
        let changes = self.groups.expire(now);
        self.record_changes(changes)
    }

    /// When the next drain delay is over (in the caller's time), if any runs.
    pub fn next_drain_deadline(&self) -> Option<Duration> {
        self.groups.next_drain_deadline()
    }

    /// Records what changed outside of a registry's view.
    fn record_changes(&mut self, changes: Changes) -> Update {
        self.log.record(changes.objects.iter().cloned());
        Update {
            changed: changes.objects,
            new_problems: changes.new_problems,
            notes: changes.notes,
            moves: changes.moves,
            ..Update::default()
        }
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

    /// Records a registry's view or change: what `complete` found, then the changes.
    fn record(&mut self, registry: &str, mut update: Update, changes: Changes) -> Update {
        let recorded = self.record_changes(changes);
        update.changed = recorded.changed;
        update.new_problems.extend(recorded.new_problems);
        update.notes = recorded.notes;
        update.moves = recorded.moves;
        if update.widened {
            self.epoch += 1;
        }
        let state = self.registries.entry(registry.to_string()).or_default();
        state.services = update.services;
        state.instances = update.instances;
        self.settle_ready();
        update
    }

    /// Takes the current version as the one sinks must reach to be ready, once every
    /// registry has delivered a complete view.
    fn settle_ready(&mut self) {
        if self.ready_version.is_none() && self.all_complete() {
            self.ready_version = Some(self.log.version());
        }
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
        self.groups.desired()
    }

    /// The desired objects made from one registry service (`registry:service`): the
    /// successors of an object it fed before (see [`registry_sync_plan::hold_replacements`]).
    pub fn successors(&self, source: &str) -> Vec<registry_sync_istio::ObjectKey> {
        self.groups.objects_of_source(source)
    }

    /// What plans may delete now.
    pub fn scope(&self) -> DeleteScope {
        let registries = || self.registries.iter();
        DeleteScope {
            complete: registries()
                .filter(|(_, s)| s.complete)
                .map(|(r, _)| r.clone())
                .chain(self.removed.iter().cloned())
                .collect(),
            delivered: registries()
                .filter(|(_, s)| s.delivered)
                .map(|(r, _)| r.clone())
                .chain(self.removed.iter().cloned())
                .collect(),
            configured: self.configured.union(&self.removed).cloned().collect(),
            prune_orphans: self.prune_orphans,
            unknown: registries()
                .flat_map(|(_, s)| s.unknown.iter().cloned())
                .collect(),
        }
    }

    /// What `explain` shows for a service, host or object name: each group it names,
    /// with the rules and every instance's fate, and the services that make nothing.
    pub fn explain(&self, query: &str) -> registry_sync_translate::Found {
        self.lookup(query).explain()
    }

    /// What [`Index::explain`] needs, taken in a moment: explaining it afterwards
    /// ([`Lookup::explain`]) needs the index no more, so a shared index is locked only
    /// for the look-up.
    pub fn lookup(&self, query: &str) -> Lookup {
        let translation = self.groups.lookup(query);
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
        self.groups.unselected(registry, service)
    }

    /// Every current problem of the translation (services without a host, skipped
    /// instances and ports).
    pub fn problems(&self) -> impl Iterator<Item = &Skipped> {
        self.groups.problems()
    }

    /// Every current problem: what the sources refused and what translation skipped.
    pub fn problems_with_sources(&self) -> Vec<Skipped> {
        let mut all: Vec<Skipped> = self
            .registries
            .values()
            .flat_map(|state| state.source_skipped.iter().cloned())
            .chain(self.groups.problems().cloned())
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
