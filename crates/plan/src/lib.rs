//! The diff between the Istio objects registry-sync wants and what a sink holds.
//!
//! Planning is pure so that `registry-sync plan` can show exactly what `run` would do, and
//! so that every safety rule (never touch what is not ours, never delete what a failing
//! registry merely stopped reporting) is decided — and tested — in one place instead of in
//! every sink. Sinks only carry out the writes a plan lists.

#![forbid(unsafe_code)]

mod diff;
mod guard;
mod replace;

pub use guard::{MIN_HELD_ENDPOINTS, MIN_HELD_OBJECTS, MassChangeGuard, Totals};
pub use replace::{Replacement, Successor, hold_replacements};

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::iter::Peekable;
use std::sync::Arc;

use registry_sync_istio::{
    Desired, HeldObject, INSTANCE_LABEL, IstioObject, MANAGED_BY_LABEL, MANAGED_BY_VALUE, ObjectKey,
    REGISTRY_LABEL,
};

/// This installation. Two installations sharing a cluster or a directory each only ever
/// change objects stamped with their own instance id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub instance: String,
}

impl Owner {
    pub fn new(instance: impl Into<String>) -> Owner {
        Owner {
            instance: instance.into(),
        }
    }

    /// Both labels are required: the managed-by label alone would let one installation
    /// garbage-collect another's objects.
    pub fn owns(&self, held: &HeldObject) -> bool {
        held.label(MANAGED_BY_LABEL) == Some(MANAGED_BY_VALUE)
            && held.label(INSTANCE_LABEL) == Some(self.instance.as_str())
    }

    /// Why a held object is not ours, in words an operator can act on.
    fn disown_reason(&self, held: &HeldObject) -> String {
        match (held.label(MANAGED_BY_LABEL), held.label(INSTANCE_LABEL)) {
            (Some(MANAGED_BY_VALUE), Some(other)) => format!(
                "another registry-sync installation ({INSTANCE_LABEL}={other:?}) owns this object; \
                 give each installation its own namespaces or services"
            ),
            (Some(MANAGED_BY_VALUE), None) => format!(
                "a registry-sync object without the {INSTANCE_LABEL} label already has this name; \
                 add {INSTANCE_LABEL}={:?} to adopt it, or delete it",
                self.instance
            ),
            (Some(manager), _) => format!(
                "an object managed by {manager:?} ({MANAGED_BY_LABEL}) already has this name; \
                 rename or delete it, or exclude the service from registry-sync"
            ),
            (None, _) => format!(
                "an object not created by registry-sync (no {MANAGED_BY_LABEL} label) already has this \
                 name; rename or delete it, or exclude the service from registry-sync"
            ),
        }
    }
}

/// Which owned objects may be written or deleted. Safety rules:
///
/// - nothing of a registry is deleted unless that registry's latest view is complete and
///   successful: an unreachable registry looks exactly like one whose services all
///   vanished, and must not empty the mesh;
/// - an object fed by a registry (by its sources annotation) that has not delivered a
///   complete view since start is left as the sink holds it: a merged host rewritten
///   without the registry that is down would lose that registry's endpoints;
/// - an object of a registry the configuration no longer names is an orphan: listed,
///   deleted only by a deliberate prune (a renamed registry must not silently delete,
///   and a mistyped one must not empty the mesh).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteScope {
    /// Registries whose latest view is complete and successful.
    pub complete: BTreeSet<String>,
    /// Registries that have delivered at least one complete view since start.
    pub delivered: BTreeSet<String>,
    /// Registries in the current configuration.
    pub configured: BTreeSet<String>,
    /// Delete orphans (objects of registries no longer configured) instead of listing them.
    pub prune_orphans: bool,
    /// Registry services (`registry:service`, as in the sources annotation) whose latest
    /// state could not be read: objects made from them are left as the sink holds them.
    pub unknown: BTreeSet<String>,
}

impl DeleteScope {
    /// `None` when the object may be deleted, otherwise the registry whose incomplete view
    /// protects it.
    fn protecting_registry<'a>(&self, held: &'a HeldObject) -> Option<&'a str> {
        let registry = held.label(REGISTRY_LABEL)?;
        (!self.complete.contains(registry) && self.configured.contains(registry)).then_some(registry)
    }

    /// The object's registry (empty when it names none) when the configuration does not
    /// name it.
    fn orphaned<'a>(&self, held: &'a HeldObject) -> Option<&'a str> {
        let registry = held.label(REGISTRY_LABEL).unwrap_or_default();
        (!self.configured.contains(registry)).then_some(registry)
    }

    fn waiting(&self, registry: &str) -> bool {
        self.configured.contains(registry) && !self.delivered.contains(registry)
    }

    /// A configured registry feeding `held` that has not been heard from since start, or
    /// whose service feeding it could not be read: `held` must stay as it is.
    fn waiting_contributor<'a>(&self, held: &'a HeldObject) -> Option<&'a str> {
        held.label(REGISTRY_LABEL)
            .into_iter()
            .chain(held.source_registries())
            .find(|registry| self.waiting(registry))
            .or_else(|| {
                held.sources
                    .iter()
                    .find(|source| self.unknown.contains(source.as_str()))
                    .map(|source| registry_sync_istio::registry_of_source(source))
            })
    }
}

/// Held objects that must stay as they are until a registry is heard from, and the
/// registry services they carry: a desired object made from one of those services (the
/// same host under another name, a WorkloadEntry with another selector) must not be
/// written beside them either.
struct Frozen<'h> {
    /// `registry:service` → the registry it waits for.
    contributions: BTreeMap<&'h str, &'h str>,
}

impl<'h> Frozen<'h> {
    fn new(
        held: &'h BTreeMap<ObjectKey, HeldObject>,
        owner: &Owner,
        scope: &DeleteScope,
    ) -> Option<Frozen<'h>> {
        if scope.unknown.is_empty() && scope.configured.iter().all(|r| scope.delivered.contains(r)) {
            return None;
        }
        let mut contributions = BTreeMap::new();
        for have in held.values().filter(|h| owner.owns(h)) {
            if let Some(registry) = scope.waiting_contributor(have) {
                for source in &have.sources {
                    contributions.insert(source.as_str(), registry);
                }
            }
        }
        Some(Frozen { contributions })
    }

    fn waiting_for(&self, want: &IstioObject) -> Option<&'h str> {
        want.sources().find_map(|s| self.contributions.get(s).copied())
    }
}

/// A desired object whose key is taken by an object we do not own. It is never written;
/// it is reported so the operator can resolve it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub key: ObjectKey,
    pub reason: String,
}

/// An owned object that is no longer desired but not deleted, because the registry it came
/// from has not delivered a complete view.
///
/// Carries the registry (not just the key) so that status, metrics and the diff can say
/// which registry is holding deletions back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    pub key: ObjectKey,
    pub registry: String,
}

/// Changes of one registry held back by the mass-change guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldBack {
    pub registry: String,
    /// The objects that would have been deleted or lost endpoints.
    pub keys: Vec<ObjectKey>,
    /// The most the sink held of this registry within the guard's window.
    pub peak: Totals,
    /// What the sink would hold of it after the plan.
    pub after: Totals,
}

impl HeldBack {
    /// One sentence for logs, `plan` and errors: which registry, how much, what to do.
    pub fn describe(&self) -> String {
        format!(
            "registry {:?}: {} changes held back, they would leave {} of its {} objects and {} of its {} endpoints \
             (the most seen recently); if this is intended, confirm with --confirm-mass-delete \
             (or `safety: {{confirm_mass_delete: true}}`)",
            self.registry,
            self.keys.len(),
            self.after.objects,
            self.peak.objects,
            self.after.endpoints,
            self.peak.endpoints,
        )
    }
}

/// A WorkloadEntry whose `Healthy` condition must be set: health kept in status (see
/// [`IstioObject::health`]), patched without rewriting the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    pub key: ObjectKey,
    pub healthy: bool,
}

/// An owned object of a registry the configuration no longer names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    pub key: ObjectKey,
    pub registry: String,
}

/// The writes that bring a sink to the desired state. Every list is sorted by key, so the
/// same inputs always give the same plan and the same diff text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub creates: Vec<Arc<IstioObject>>,
    pub updates: Vec<Arc<IstioObject>>,
    pub deletes: Vec<ObjectKey>,
    pub unchanged: usize,
    pub conflicts: Vec<Conflict>,
    pub kept: Vec<Kept>,
    /// Changes the mass-change guard held back, per registry.
    pub held_back: Vec<HeldBack>,
    /// Objects of registries no longer configured, left in place (see [`DeleteScope`]).
    pub orphans: Vec<Orphan>,
    /// Health conditions to set, after the creates and updates of the same objects.
    pub status: Vec<StatusChange>,
    /// Deletes and endpoint-losing updates waiting for the objects that take over their
    /// registry services to be in the sink (see [`hold_replacements`]).
    pub replacements: Vec<Replacement>,
    /// Deletes and endpoint-losing updates that finish a replacement: what they take
    /// away is already in the sink under their successors' names.
    pub replaced: Vec<ObjectKey>,
}

impl Plan {
    /// True when applying the plan would write nothing; conflicts and kept objects are
    /// reports, not writes.
    pub fn is_empty(&self) -> bool {
        self.writes() == 0
    }

    pub fn writes(&self) -> usize {
        self.creates.len() + self.updates.len() + self.deletes.len() + self.status.len()
    }

    /// Replacements that cannot finish without an operator or a sink that accepts the
    /// successor: the old object stays and the pass is not complete.
    pub fn blocked_replacements(&self) -> impl Iterator<Item = &Replacement> {
        self.replacements.iter().filter(|r| r.is_blocked())
    }
}

/// Plans every key that is desired or held.
pub fn plan(
    desired: &Desired,
    held: &BTreeMap<ObjectKey, HeldObject>,
    owner: &Owner,
    scope: &DeleteScope,
) -> Plan {
    let union = SortedUnion {
        a: desired.keys().peekable(),
        b: held.keys().peekable(),
    };
    plan_sorted_unique(union, desired, held, owner, scope)
}

/// Plans only `keys` (duplicates allowed, any order), so that an incremental run costs in
/// proportion to the change rather than to the estate. A key that is neither desired nor
/// held plans to nothing.
pub fn plan_keys<'k>(
    keys: impl IntoIterator<Item = &'k ObjectKey>,
    desired: &Desired,
    held: &BTreeMap<ObjectKey, HeldObject>,
    owner: &Owner,
    scope: &DeleteScope,
) -> Plan {
    let keys: BTreeSet<&ObjectKey> = keys.into_iter().collect();
    plan_sorted_unique(keys.into_iter(), desired, held, owner, scope)
}

/// Keys must arrive sorted and unique: that is what keeps every output list sorted without
/// a sort per list.
fn plan_sorted_unique<'k>(
    keys: impl Iterator<Item = &'k ObjectKey>,
    desired: &Desired,
    held: &BTreeMap<ObjectKey, HeldObject>,
    owner: &Owner,
    scope: &DeleteScope,
) -> Plan {
    let mut plan = Plan::default();
    let frozen = Frozen::new(held, owner, scope);
    for key in keys {
        // An owned object that must stay as held, and the registry it waits for.
        let waiting = frozen
            .as_ref()
            .and(held.get(key))
            .filter(|have| owner.owns(have))
            .and_then(|have| scope.waiting_contributor(have));
        // Whether the object is ours to write: then its health is, too.
        let mut ours = false;
        match (desired.get(key), held.get(key)) {
            // Ownership first: a foreign object that happens to carry our hash annotation
            // (a copy of one of ours, say) is still not ours to call unchanged.
            (Some(_), Some(have)) if !owner.owns(have) => {
                plan.conflicts.push(Conflict {
                    key: key.clone(),
                    reason: owner.disown_reason(have),
                });
            }
            (Some(want), Some(have)) if have.content_hash.as_deref() == Some(want.content_hash()) => {
                plan.unchanged += 1;
                ours = true;
            }
            (_, Some(_)) if waiting.is_some() => {
                plan.kept.push(Kept {
                    key: key.clone(),
                    registry: waiting.unwrap_or_default().to_string(),
                });
            }
            (Some(want), held) => match frozen.as_ref().and_then(|f| f.waiting_for(want)) {
                Some(registry) => plan.kept.push(Kept {
                    key: key.clone(),
                    registry: registry.to_string(),
                }),
                None if held.is_some() => {
                    plan.updates.push(want.clone());
                    ours = true;
                }
                None => {
                    plan.creates.push(want.clone());
                    ours = true;
                }
            },
            (None, Some(have)) if owner.owns(have) => {
                if let Some(registry) = scope.protecting_registry(have) {
                    plan.kept.push(Kept {
                        key: key.clone(),
                        registry: registry.to_string(),
                    });
                } else if let Some(registry) = scope.orphaned(have).filter(|_| !scope.prune_orphans) {
                    plan.orphans.push(Orphan {
                        key: key.clone(),
                        registry: registry.to_string(),
                    });
                } else {
                    plan.deletes.push(key.clone());
                }
            }
            // Not ours and not wanted: none of our business.
            (None, Some(_)) | (None, None) => {}
        }
        if ours
            && let Some(healthy) = desired.get(key).and_then(|want| want.health)
            && held.get(key).and_then(|have| have.healthy) != Some(healthy)
        {
            plan.status.push(StatusChange {
                key: key.clone(),
                healthy,
            });
        }
    }
    plan
}

/// Merges two sorted, duplicate-free key streams into one, in linear time.
struct SortedUnion<'k, A: Iterator<Item = &'k ObjectKey>, B: Iterator<Item = &'k ObjectKey>> {
    a: Peekable<A>,
    b: Peekable<B>,
}

impl<'k, A, B> Iterator for SortedUnion<'k, A, B>
where
    A: Iterator<Item = &'k ObjectKey>,
    B: Iterator<Item = &'k ObjectKey>,
{
    type Item = &'k ObjectKey;

    fn next(&mut self) -> Option<&'k ObjectKey> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) => match x.cmp(y) {
                Ordering::Less => self.a.next(),
                Ordering::Greater => self.b.next(),
                Ordering::Equal => {
                    self.b.next();
                    self.a.next()
                }
            },
            (Some(_), None) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

#[cfg(test)]
mod tests;
