//! Incremental translation: the same result as [`registry_sync_translate::translate`],
//! at a cost that grows with the size of a change instead of the size of the estate.
//!
//! The index remembers, per registry, each service and the host group it landed in, and
//! per group the objects it produced. A new snapshot is compared service by service;
//! only the groups a changed service left or joined are translated again, and the keys
//! of the objects that changed are returned so a planner can look at just those. The
//! rules themselves are `registry_sync_translate`'s: this module only keeps state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use registry_sync_catalog::{RegistryDelta, RegistrySnapshot, Service, ServiceKey, Skipped};
use registry_sync_istio::{Desired, IstioObject, ObjectKey, REGISTRY_LABEL};

use registry_sync_translate::{
    Allocator, Contributor, Fallback, GroupKey, RegistrySettings, Settings, group_of, instance_ips,
    translate_group,
};

struct ServiceState {
    service: Arc<Service>,
    /// `Ok(None)` when the registry's `select` leaves it out, `Err` when it has no
    /// valid host.
    group: Result<Option<GroupKey>, Skipped>,
    /// Why the service stays where an earlier decision put it, when its instances'
    /// metadata no longer decides (see [`stay`]).
    kept: Option<String>,
}

#[derive(Default)]
struct GroupOutput {
    keys: Vec<ObjectKey>,
    skipped: Vec<Skipped>,
    notes: Vec<Skipped>,
}

/// What one update changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Objects created, modified or removed from the desired set.
    pub objects: BTreeSet<ObjectKey>,
    /// Problems found while translating the changed services that were not reported
    /// for them before.
    pub new_problems: Vec<Skipped>,
    /// Lesser repairs in the changed groups (debug-level).
    pub notes: Vec<Skipped>,
    /// Services that moved to another namespace, left or joined the selection, or were
    /// kept where they were, in words (info-level: a move deletes and creates objects).
    pub moves: Vec<String>,
}

/// The services of one host group, sorted. Nearly every group has one member, so a
/// vector without spare room instead of a set, whose first node holds eleven.
#[derive(Clone, Debug, Default)]
struct GroupMembers(Vec<(String, ServiceKey)>);

impl GroupMembers {
    fn insert(&mut self, member: (String, ServiceKey)) {
        if let Err(at) = self.0.binary_search(&member) {
            self.0.reserve_exact(1);
            self.0.insert(at, member);
        }
    }

    fn remove(&mut self, member: &(String, ServiceKey)) {
        if let Ok(at) = self.0.binary_search(member) {
            self.0.remove(at);
            self.0.shrink_to_fit();
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &(String, ServiceKey)> {
        self.0.iter()
    }
}

type Members = BTreeMap<GroupKey, GroupMembers>;

/// Where services sit while one registry's view is taken in: the groups' members,
/// the groups to translate again, and, when some registry allocates virtual IPs, the
/// allocator, which counts every instance address so that no virtual IP is ever one
/// (a service's addresses are released when it leaves and taken when it is placed).
struct Seats<'a> {
    members: &'a mut Members,
    dirty: &'a mut BTreeSet<GroupKey>,
    vips: Option<&'a mut Allocator>,
}

/// Takes a service out of its group (and its addresses out of the allocator's count);
/// the group is translated again afterwards.
fn leave(seats: &mut Seats<'_>, registry: &str, key: &ServiceKey, state: &ServiceState) {
    if let Some(vips) = seats.vips.as_deref_mut() {
        for ip in instance_ips(&state.service) {
            vips.untake(ip);
        }
    }
    if let Ok(Some(group)) = &state.group {
        if let Some(members) = seats.members.get_mut(group) {
            members.remove(&(registry.to_string(), key.clone()));
        }
        seats.dirty.insert(group.clone());
    }
}

/// Puts a new or changed service into its group. `None` when it is unchanged from
/// `old` (which is then returned as it was).
fn place(
    seats: &mut Seats<'_>,
    registry: &str,
    settings: &RegistrySettings,
    service: &Arc<Service>,
    old: Option<ServiceState>,
    changes: &mut Changes,
) -> ServiceState {
    let key = service.key();
    let mut reported = None;
    let mut before = None;
    if let Some(state) = old {
        if Arc::ptr_eq(&state.service, service) || state.service == *service {
            return state;
        }
        leave(seats, registry, &key, &state);
        before = state.group.as_ref().ok().cloned().flatten();
        reported = state.group.err();
    }
    // A host whose address one of these instances has now gets another.
    if let Some(vips) = seats.vips.as_deref_mut() {
        for ip in instance_ips(service) {
            if let Some((namespace, host)) = vips.take(ip) {
                seats.dirty.insert(GroupKey {
                    namespace: namespace.clone(),
                    host: host.clone(),
                });
            }
        }
    }
    let decided = group_of(registry, settings, service);
    let (group, kept) = match before.as_ref() {
        Some(before) => stay(registry, settings, service, before, decided),
        None => (decided, None),
    };
    if let Some(kept) = &kept {
        changes
            .moves
            .push(format!("registry {registry:?}, service {key}: {kept}"));
    } else if let Some(before) = &before {
        match &group {
            Ok(Some(now)) if now.namespace != before.namespace => changes.moves.push(format!(
                "registry {registry:?}, service {key}: moves from namespace {:?} to {:?}; its objects there are replaced",
                before.namespace, now.namespace
            )),
            Ok(None) => changes.moves.push(format!(
                "registry {registry:?}, service {key}: no longer selected ({}); its objects are deleted",
                settings.select.rejects(service).unwrap_or_default()
            )),
            _ => {}
        }
    }
    match &group {
        Ok(None) => {}
        Ok(Some(group_key)) => {
            seats
                .members
                .entry(group_key.clone())
                .or_default()
                .insert((registry.to_string(), key));
            seats.dirty.insert(group_key.clone());
        }
        Err(skip) if reported.as_ref() != Some(skip) => changes.new_problems.push(skip.clone()),
        Err(_) => {}
    }
    ServiceState {
        service: service.clone(),
        group,
        kept,
    }
}

/// The last decision stands while the service exists, when its instances' metadata no
/// longer decides: instance churn must not move or delete a service. A service placed
/// by `namespace_from` (from instance metadata) whose instances now carry no value, or
/// disagree, stays in its namespace; one selected by `select.services.metadata` found
/// on an instance stays selected when no instance carries it any more. A service name
/// that `select` now refuses, or metadata that names another allowed namespace, is a
/// decision, and is followed. Returns the group and, when the earlier one was kept,
/// why.
fn stay(
    registry: &str,
    settings: &RegistrySettings,
    service: &Service,
    before: &GroupKey,
    decided: Result<Option<GroupKey>, Skipped>,
) -> (Result<Option<GroupKey>, Skipped>, Option<String>) {
    match decided {
        Ok(None) if settings.select.rejects_by_metadata_only(service) => (
            Ok(Some(before.clone())),
            Some(format!(
                "stays selected in namespace {:?}: no instance carries select.services.metadata any more, and the last decision stands while the service exists",
                before.namespace
            )),
        ),
        Ok(Some(mut now)) if now.namespace != before.namespace => {
            match settings.namespace_for(registry, service).fallback {
                Some(Fallback::Unnamed(why) | Fallback::NotAllowed(why)) => {
                    let kept = format!(
                        "stays in namespace {:?} ({why}); the last decision stands while the service exists",
                        before.namespace
                    );
                    now.namespace = before.namespace.clone();
                    (Ok(Some(now)), Some(kept))
                }
                None => (Ok(Some(now)), None),
            }
        }
        decided => (decided, None),
    }
}

pub(crate) struct Groups {
    settings: Settings,
    services: BTreeMap<String, BTreeMap<ServiceKey, ServiceState>>,
    members: Members,
    outputs: BTreeMap<GroupKey, GroupOutput>,
    desired: Desired,
    vips: Allocator,
    /// WorkloadEntries of instances the registry no longer lists, kept unhealthy until
    /// their registry's `drain_delay` is over: their group and deadline.
    draining: BTreeMap<ObjectKey, (GroupKey, Duration)>,
    /// Some registry has a drain delay.
    drains: bool,
    /// Some registry has a `vip_range`: endpoint addresses are tracked.
    allocates: bool,
}

impl Groups {
    pub(crate) fn new(settings: Settings) -> Groups {
        let drains = settings.registries.values().any(|r| r.drain_delay.is_some());
        let allocates = settings.registries.values().any(|r| r.vip_range.is_some());
        Groups {
            settings,
            services: BTreeMap::new(),
            members: BTreeMap::new(),
            outputs: BTreeMap::new(),
            desired: Desired::new(),
            vips: Allocator::default(),
            draining: BTreeMap::new(),
            drains,
            allocates,
        }
    }

    /// Removes the draining WorkloadEntries whose delay is over at `now`.
    pub(crate) fn expire(&mut self, now: Duration) -> Changes {
        let mut changes = Changes::default();
        let due: BTreeSet<GroupKey> = self
            .draining
            .values()
            .filter(|(_, deadline)| *deadline <= now)
            .map(|(group, _)| group.clone())
            .collect();
        for group in due {
            self.retranslate(&group, now, &mut changes);
        }
        changes
    }

    /// When the next draining entry is due, if any.
    pub(crate) fn next_drain_deadline(&self) -> Option<Duration> {
        self.draining.values().map(|(_, deadline)| *deadline).min()
    }

    /// Addresses a sink already holds for ServiceEntries (namespace, host, address):
    /// kept for those hosts instead of new ones. Call before the first update.
    pub(crate) fn seed_vips<'a>(&mut self, held: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) {
        for (namespace, host, address) in held {
            self.vips.seed(namespace, host, address);
        }
    }

    /// Takes the addresses a sink holds for our hosts where they differ from the ones
    /// here: a standby that takes over (or an MCP replica that meets a sink written by
    /// another) writes the addresses that are out there, never its own order of
    /// arrival. The hosts whose address changed are translated again.
    pub(crate) fn adopt_vips<'a>(
        &mut self,
        held: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
        now: Duration,
    ) -> Changes {
        let mut dirty = BTreeSet::new();
        for (namespace, host, address) in held {
            for (namespace, host) in self.vips.adopt(namespace, host, address) {
                dirty.insert(GroupKey { namespace, host });
            }
        }
        let mut changes = Changes::default();
        for group in dirty {
            if self.members.contains_key(&group) {
                self.retranslate(&group, now, &mut changes);
            }
        }
        changes
    }

    /// Addresses of objects someone else wrote: no host of ours gets them.
    pub(crate) fn reserve_vips<'a>(&mut self, addresses: impl IntoIterator<Item = &'a str>) {
        for address in addresses {
            if let Ok(address) = address.trim().parse() {
                self.vips.take(address);
            }
        }
    }

    /// Every service held, with the group it joined (see [`ServiceState`]).
    pub(crate) fn placements(
        &self,
    ) -> impl Iterator<Item = (&str, &Arc<Service>, &Result<Option<GroupKey>, Skipped>)> {
        self.services.iter().flat_map(|(registry, services)| {
            services
                .values()
                .map(move |state| (registry.as_str(), &state.service, &state.group))
        })
    }

    /// The services of a group, in order (the first decides).
    pub(crate) fn members_of(&self, group: &GroupKey) -> Vec<(String, Arc<Service>)> {
        let Some(members) = self.members.get(group) else {
            return Vec::new();
        };
        members
            .iter()
            .filter_map(|(registry, key)| {
                let state = self.services.get(registry)?.get(key)?;
                Some((registry.clone(), Arc::clone(&state.service)))
            })
            .collect()
    }

    /// The objects a group produced, as desired.
    pub(crate) fn objects_of_group(&self, group: &GroupKey) -> Vec<Arc<IstioObject>> {
        self.outputs
            .get(group)
            .into_iter()
            .flat_map(|output| output.keys.iter())
            .filter_map(|key| self.desired.get(key).cloned())
            .collect()
    }

    /// Why the services of a group stay where earlier decisions put them, if any did.
    pub(crate) fn kept_in(&self, group: &GroupKey) -> Vec<String> {
        self.members
            .get(group)
            .into_iter()
            .flat_map(|members| members.iter())
            .filter_map(|(registry, key)| {
                let kept = self.services.get(registry)?.get(key)?.kept.as_ref()?;
                Some(format!("{registry}:{key} {kept}"))
            })
            .collect()
    }

    /// The group an object was made for.
    pub(crate) fn group_of_object(&self, key: &ObjectKey) -> Option<GroupKey> {
        self.outputs
            .iter()
            .find(|(_, output)| output.keys.contains(key))
            .map(|(group, _)| group.clone())
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A service as the index holds it.
    pub(crate) fn service(&self, registry: &str, key: &ServiceKey) -> Option<&Arc<Service>> {
        self.services.get(registry)?.get(key).map(|state| &state.service)
    }

    /// The desired objects made from one registry service (`registry:service`, as in
    /// the sources annotation): what takes over from an object that service fed before.
    pub(crate) fn objects_of_source(&self, source: &str) -> Vec<ObjectKey> {
        let Some((registry, service)) = source.split_once(':') else {
            return Vec::new();
        };
        let Some(services) = self.services.get(registry) else {
            return Vec::new();
        };
        // The annotation writes a service key as `namespace/name` or `name`.
        let split = |(namespace, name): (&str, &str)| ServiceKey {
            namespace: Some(namespace.to_string()),
            name: name.to_string(),
        };
        let candidates = [
            Some(ServiceKey {
                namespace: None,
                name: service.to_string(),
            }),
            service.split_once('/').map(split),
            service.rsplit_once('/').map(split),
        ];
        let mut keys: Vec<ObjectKey> = candidates
            .into_iter()
            .flatten()
            .filter_map(|key| match &services.get(&key)?.group {
                Ok(Some(group)) => self.outputs.get(group),
                _ => None,
            })
            .flat_map(|output| output.keys.iter())
            .filter(|key| {
                self.desired
                    .get(*key)
                    .is_some_and(|object| object.sources().any(|s| s == source))
            })
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Every desired object, by key.
    pub(crate) fn desired(&self) -> &Desired {
        &self.desired
    }

    /// Replaces a registry's services with a new snapshot. A registry without settings
    /// is ignored, as in [`crate::translate`].
    pub(crate) fn update(&mut self, registry: &str, snapshot: &RegistrySnapshot, now: Duration) -> Changes {
        let mut changes = Changes::default();
        let Some(registry_settings) = self.settings.registries.get(registry) else {
            return changes;
        };
        let old = self.services.remove(registry).unwrap_or_default();
        let mut new: BTreeMap<ServiceKey, ServiceState> = BTreeMap::new();
        let mut dirty: BTreeSet<GroupKey> = BTreeSet::new();
        let mut seats = Seats {
            members: &mut self.members,
            dirty: &mut dirty,
            vips: self.allocates.then_some(&mut self.vips),
        };
        let mut old = old.into_iter().peekable();
        let unknown: BTreeSet<&ServiceKey> = snapshot.unknown.iter().collect();
        for service in snapshot.services() {
            let key = service.key();
            // Carry over unchanged services; note departures of those no longer listed.
            while let Some((old_key, _)) = old.peek() {
                if *old_key >= key {
                    break;
                }
                let (gone_key, gone) = old.next().expect("peeked");
                if unknown.contains(&gone_key) {
                    new.insert(gone_key, gone);
                } else {
                    leave(&mut seats, registry, &gone_key, &gone);
                }
            }
            let previous = old.next_if(|(k, _)| *k == key).map(|(_, state)| state);
            let state = place(
                &mut seats,
                registry,
                registry_settings,
                service,
                previous,
                &mut changes,
            );
            new.insert(key, state);
        }
        // A service not listed leaves, unless the registry could not read it this time:
        // then what was known of it stays.
        for (gone_key, gone) in old {
            if unknown.contains(&gone_key) {
                new.insert(gone_key, gone);
            } else {
                leave(&mut seats, registry, &gone_key, &gone);
            }
        }
        self.services.insert(registry.to_string(), new);
        for group in dirty {
            self.retranslate(&group, now, &mut changes);
        }
        changes
    }

    /// Applies what changed in a registry since its last view: only the groups the
    /// changed services left or joined are translated again. A removal of a service
    /// the registry could not read now is no removal: what was known of it stays.
    pub(crate) fn apply_delta(&mut self, registry: &str, delta: &RegistryDelta, now: Duration) -> Changes {
        let mut changes = Changes::default();
        let Some(registry_settings) = self.settings.registries.get(registry) else {
            return changes;
        };
        let services = self.services.entry(registry.to_string()).or_default();
        let mut dirty: BTreeSet<GroupKey> = BTreeSet::new();
        let mut seats = Seats {
            members: &mut self.members,
            dirty: &mut dirty,
            vips: self.allocates.then_some(&mut self.vips),
        };
        for key in &delta.removed {
            if delta.unknown.contains(key) {
                continue;
            }
            if let Some(gone) = services.remove(key) {
                leave(&mut seats, registry, key, &gone);
            }
        }
        for service in &delta.upserts {
            let key = service.key();
            let previous = services.remove(&key);
            let state = place(
                &mut seats,
                registry,
                registry_settings,
                service,
                previous,
                &mut changes,
            );
            services.insert(key, state);
        }
        for group in dirty {
            self.retranslate(&group, now, &mut changes);
        }
        changes
    }

    fn retranslate(&mut self, group: &GroupKey, now: Duration, changes: &mut Changes) {
        let previous = self.outputs.remove(group).unwrap_or_default();
        let members = self.members.get(group).cloned().unwrap_or_default();
        let mut objects: Vec<IstioObject> = Vec::new();
        let mut output = GroupOutput::default();
        if members.is_empty() {
            self.members.remove(group);
            self.vips.release(&group.namespace, &group.host);
        } else {
            let contributors: Vec<Contributor<'_>> = members
                .iter()
                .filter_map(|(registry, key)| {
                    let state = self.services.get(registry)?.get(key)?;
                    Some(Contributor {
                        registry,
                        settings: self.settings.registries.get(registry)?,
                        service: &state.service,
                    })
                })
                .collect();
            let translation = translate_group(group, &contributors, &self.settings, &mut self.vips);
            objects = translation.objects;
            output.skipped = translation.skipped;
            output.notes = translation.notes;
        }
        self.keep_draining(group, &previous.keys, now, &mut objects);
        let fresh: BTreeSet<ObjectKey> = objects.iter().map(IstioObject::key).collect();
        for key in previous.keys.iter().filter(|k| !fresh.contains(*k)) {
            if self.desired.remove(key).is_some() {
                changes.objects.insert(key.clone());
            }
        }
        for object in objects {
            let key = object.key();
            let same = self
                .desired
                .get(&key)
                .is_some_and(|o| o.content_hash() == object.content_hash() && o.health == object.health);
            if !same {
                changes.objects.insert(key.clone());
                self.desired.insert(key.clone(), Arc::new(object));
            }
            output.keys.push(key);
        }
        output.keys.shrink_to_fit();
        changes.new_problems.extend(
            output
                .skipped
                .iter()
                .filter(|s| !previous.skipped.contains(s))
                .cloned(),
        );
        changes.notes.extend(output.notes.iter().cloned());
        if !output.keys.is_empty() || !output.skipped.is_empty() {
            self.outputs.insert(group.clone(), output);
        }
    }

    /// A WorkloadEntry that was desired and is no longer, of a registry with a drain
    /// delay and health in status, stays (unhealthy) until the delay is over; one that
    /// is desired again stops draining.
    fn keep_draining(
        &mut self,
        group: &GroupKey,
        previous: &[ObjectKey],
        now: Duration,
        objects: &mut Vec<IstioObject>,
    ) {
        // Without a drain delay nothing drains: translating a group costs nothing here.
        if !self.drains {
            return;
        }
        let present: BTreeSet<ObjectKey> = objects.iter().map(IstioObject::key).collect();
        for key in &present {
            self.draining.remove(key);
        }
        for key in previous.iter().filter(|k| !present.contains(*k)) {
            let Some(old) = self.desired.get(key).filter(|o| o.health.is_some()) else {
                continue;
            };
            let delay = old
                .metadata
                .labels
                .get(REGISTRY_LABEL)
                .and_then(|registry| self.settings.registries.get(registry))
                .and_then(|settings| settings.drain_delay);
            let Some(delay) = delay else { continue };
            let deadline = match self.draining.get(key) {
                Some((_, deadline)) => *deadline,
                None => now + delay,
            };
            if deadline <= now {
                self.draining.remove(key);
                continue;
            }
            self.draining.insert(key.clone(), (group.clone(), deadline));
            objects.push((**old).clone().with_health(false));
        }
    }

    /// Keeps a registry under `settings` from now on. A registry held already has its
    /// services placed again under the new settings: an edit costs what it moves.
    pub(crate) fn configure(&mut self, registry: &str, settings: RegistrySettings, now: Duration) -> Changes {
        let services: Vec<Arc<Service>> = self
            .services
            .get(registry)
            .map(|held| held.values().map(|state| Arc::clone(&state.service)).collect())
            .unwrap_or_default();
        let mut changes = self.remove(registry, now);
        self.settings.registries.insert(registry.to_string(), settings);
        self.settle_flags();
        let again = self.apply_delta(
            registry,
            &RegistryDelta {
                upserts: services,
                ..RegistryDelta::default()
            },
            now,
        );
        changes.objects.extend(again.objects);
        changes.new_problems.extend(again.new_problems);
        changes.notes.extend(again.notes);
        changes.moves.extend(again.moves);
        changes
    }

    /// Forgets a registry: its services leave their groups, whose objects are
    /// translated again without them (deleted where they were the only member).
    pub(crate) fn remove(&mut self, registry: &str, now: Duration) -> Changes {
        let mut changes = Changes::default();
        let old = self.services.remove(registry).unwrap_or_default();
        let mut dirty: BTreeSet<GroupKey> = BTreeSet::new();
        let mut seats = Seats {
            members: &mut self.members,
            dirty: &mut dirty,
            vips: self.allocates.then_some(&mut self.vips),
        };
        for (key, state) in &old {
            leave(&mut seats, registry, key, state);
        }
        self.settings.registries.remove(registry);
        self.settle_flags();
        for group in dirty {
            self.retranslate(&group, now, &mut changes);
        }
        changes
    }

    /// Whether some registry drains or allocates, after the registries changed. An
    /// allocator that starts now counts the addresses of every service held.
    fn settle_flags(&mut self) {
        self.drains = self.settings.registries.values().any(|r| r.drain_delay.is_some());
        let allocates = self.settings.registries.values().any(|r| r.vip_range.is_some());
        if allocates && !self.allocates {
            for state in self.services.values().flat_map(|s| s.values()) {
                for ip in instance_ips(&state.service) {
                    self.vips.take(ip);
                }
            }
        }
        self.allocates = allocates;
    }

    /// Why the registry's `select` leaves a service out, or `None` when it does not (or
    /// the index does not hold it).
    pub(crate) fn unselected(&self, registry: &str, key: &ServiceKey) -> Option<String> {
        let state = self.services.get(registry)?.get(key)?;
        if !matches!(state.group, Ok(None)) {
            return None;
        }
        self.settings
            .registries
            .get(registry)?
            .select
            .rejects(&state.service)
    }

    /// Every current problem (services without a host, skipped instances and ports).
    pub(crate) fn problems(&self) -> impl Iterator<Item = &Skipped> {
        let hosts = self
            .services
            .values()
            .flat_map(|s| s.values())
            .filter_map(|s| s.group.as_ref().err());
        hosts.chain(self.outputs.values().flat_map(|o| o.skipped.iter()))
    }
}
