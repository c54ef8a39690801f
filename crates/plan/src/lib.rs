//! The diff between the Istio objects registry-sync wants and what a sink holds.
//!
//! Planning is pure so that `registry-sync plan` can show exactly what `run` would do, and
//! so that every safety rule (never touch what is not ours, never delete what a failing
//! registry merely stopped reporting) is decided — and tested — in one place instead of in
//! every sink. Sinks only carry out the writes a plan lists.

#![forbid(unsafe_code)]

mod diff;

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

/// Which owned-but-undesired objects may be deleted. Safety rule: nothing of a registry is
/// deleted unless that registry has delivered a complete, successful view — an unreachable
/// registry looks exactly like one whose services all vanished, and must not empty the mesh.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteScope {
    /// Registries whose latest view is complete and successful.
    pub complete: BTreeSet<String>,
    /// Registries in the current configuration. Objects of a registry that was removed from
    /// the configuration will never be reported again, so they are deletable.
    pub configured: BTreeSet<String>,
    /// The largest share of a registry's objects, in percent, one plan may delete. A
    /// registry that answers "nothing" after having hundreds of services is far more
    /// often broken than emptied; such deletions wait for a confirmation. `None`: no
    /// limit (confirmed).
    pub mass_delete_guard: Option<u32>,
}

impl DeleteScope {
    /// `None` when the object may be deleted, otherwise the registry whose incomplete view
    /// protects it.
    fn protecting_registry<'a>(&self, held: &'a HeldObject) -> Option<&'a str> {
        let registry = held.label(REGISTRY_LABEL)?;
        (!self.complete.contains(registry) && self.configured.contains(registry)).then_some(registry)
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

/// Deletions of one registry held back by the mass-deletion guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldBack {
    pub registry: String,
    /// The objects that would have been deleted.
    pub keys: Vec<ObjectKey>,
    /// How many objects of this registry the sink holds.
    pub owned: usize,
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
    /// Deletions the mass-deletion guard held back, per registry.
    pub held_back: Vec<HeldBack>,
}

impl Plan {
    /// True when applying the plan would write nothing; conflicts and kept objects are
    /// reports, not writes.
    pub fn is_empty(&self) -> bool {
        self.writes() == 0
    }

    pub fn writes(&self) -> usize {
        self.creates.len() + self.updates.len() + self.deletes.len()
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
    for key in keys {
        match (desired.get(key), held.get(key)) {
            (Some(want), None) => plan.creates.push(want.clone()),
            // Ownership first: a foreign object that happens to carry our hash annotation
            // (a copy of one of ours, say) is still not ours to call unchanged.
            (Some(_), Some(have)) if !owner.owns(have) => {
                plan.conflicts.push(Conflict {
                    key: key.clone(),
                    reason: owner.disown_reason(have),
                });
            }
            (Some(want), Some(have)) => {
                if have.content_hash.as_deref() == Some(want.content_hash()) {
                    plan.unchanged += 1;
                } else {
                    plan.updates.push(want.clone());
                }
            }
            (None, Some(have)) if owner.owns(have) => match scope.protecting_registry(have) {
                None => plan.deletes.push(key.clone()),
                Some(registry) => plan.kept.push(Kept {
                    key: key.clone(),
                    registry: registry.to_string(),
                }),
            },
            // Not ours and not wanted: none of our business.
            (None, Some(_)) | (None, None) => {}
        }
    }
    if let Some(max_percent) = scope.mass_delete_guard {
        hold_back_mass_deletes(&mut plan, held, owner, max_percent);
    }
    plan
}

/// Moves a registry's deletions into [`Plan::held_back`] when they exceed `max_percent`
/// of what the sink holds of that registry. A single deletion is never held back:
/// removing the last service of a small registry is ordinary.
fn hold_back_mass_deletes(
    plan: &mut Plan,
    held: &BTreeMap<ObjectKey, HeldObject>,
    owner: &Owner,
    max_percent: u32,
) {
    if plan.deletes.len() < 2 {
        return;
    }
    let mut by_registry: BTreeMap<String, Vec<ObjectKey>> = BTreeMap::new();
    for key in &plan.deletes {
        let registry = held
            .get(key)
            .and_then(|h| h.label(REGISTRY_LABEL))
            .unwrap_or_default();
        by_registry
            .entry(registry.to_string())
            .or_default()
            .push(key.clone());
    }
    let mut owned: BTreeMap<&str, usize> = BTreeMap::new();
    for object in held.values().filter(|h| owner.owns(h)) {
        *owned
            .entry(object.label(REGISTRY_LABEL).unwrap_or_default())
            .or_default() += 1;
    }
    for (registry, keys) in by_registry {
        let total = owned.get(registry.as_str()).copied().unwrap_or_default();
        if keys.len() >= 2 && keys.len() as u64 * 100 > u64::from(max_percent) * total as u64 {
            let held_back: BTreeSet<&ObjectKey> = keys.iter().collect();
            plan.deletes.retain(|k| !held_back.contains(k));
            plan.held_back.push(HeldBack {
                registry,
                keys,
                owned: total,
            });
        }
    }
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
