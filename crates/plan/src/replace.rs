//! Make before break: an object that hands its registry services over to other objects
//! (a `namespace_from` move, a rename by a host template or an override, `auto`
//! crossing its WorkloadEntry threshold, an `endpoints` override) is deleted or emptied
//! only once those objects are in the sink.
//!
//! A plan is made from what the sink holds, not from what its writes will achieve: a
//! create can fail (a missing namespace, a quota, a webhook) and a name can belong to a
//! user's object (a conflict). Deleting the old object in the same pass as its
//! successor's create would then take the service's endpoints out of the mesh with
//! nothing in their place. So a reducing write (a delete, or an update that loses
//! endpoints) waits while any desired object made from one of its registry services is
//! not yet held as desired; the writer plans it again as soon as the successor lands.
//!
//! Successors are found through the registry services an object was made from (its
//! sources annotation), which both sides of every replacement share: the lookup is
//! the caller's (the index knows which objects each service feeds now).

use std::collections::{BTreeMap, BTreeSet};

use registry_sync_istio::{Desired, HeldObject, ObjectKey};

use crate::{Owner, Plan};

/// Why a successor is not in the sink yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Successor {
    /// Written by this plan; the old object goes in the pass after it lands.
    Written,
    /// A user's (or another installation's) object holds its name: the old object stays
    /// until the conflict is resolved.
    Conflict(String),
    /// Not written by this plan (refused by the sink and waiting for another try, or
    /// kept for a registry that has not been heard from).
    Missing,
}

/// A delete or an endpoint-losing update held until the objects taking over its
/// registry services are in the sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replacement {
    /// The object that waits.
    pub key: ObjectKey,
    /// The first successor not in place, and why.
    pub successor: ObjectKey,
    pub state: Successor,
}

impl Replacement {
    /// One sentence for logs, `plan` and the status page.
    pub fn describe(&self) -> String {
        match &self.state {
            Successor::Written => format!(
                "waits for {} (written in this pass) before it is removed",
                self.successor
            ),
            Successor::Conflict(reason) => format!(
                "kept: its successor {} cannot be written ({reason})",
                self.successor
            ),
            Successor::Missing => format!(
                "kept: its successor {} is not in the sink yet (refused, or waiting for its registry)",
                self.successor
            ),
        }
    }

    /// The replacement cannot finish on its own: an operator has to act (a conflict),
    /// or the sink keeps refusing the successor.
    pub fn is_blocked(&self) -> bool {
        !matches!(self.state, Successor::Written)
    }
}

/// Holds back every reducing write of `plan` whose registry services now feed an object
/// that is not in the sink as desired, into [`Plan::replacements`]. A reducing write
/// whose successors are all in place is a replacement finishing: it is listed in
/// [`Plan::replaced`] so the mass-change guard does not count the hand-over as a loss.
///
/// `successors` gives the desired objects made from one registry service
/// (`registry:service`, as in the sources annotation).
pub fn hold_replacements(
    plan: &mut Plan,
    desired: &Desired,
    held: &BTreeMap<ObjectKey, HeldObject>,
    owner: &Owner,
    successors: &dyn Fn(&str) -> Vec<ObjectKey>,
) {
    let reducing_updates = plan.updates.iter().filter_map(|want| {
        let key = want.key();
        let have = held.get(&key)?;
        (want.health.is_none() && want.endpoint_count() < have.endpoints).then_some(key)
    });
    let reducing: BTreeSet<ObjectKey> = plan.deletes.iter().cloned().chain(reducing_updates).collect();
    if reducing.is_empty() {
        return;
    }
    let written: BTreeSet<ObjectKey> = plan
        .creates
        .iter()
        .chain(&plan.updates)
        .map(|o| o.key())
        .filter(|k| !reducing.contains(k))
        .collect();
    let conflicts: BTreeMap<&ObjectKey, &str> = plan
        .conflicts
        .iter()
        .map(|c| (&c.key, c.reason.as_str()))
        .collect();
    let in_place = |key: &ObjectKey| {
        held.get(key).is_some_and(|have| {
            owner.owns(have)
                && desired
                    .get(key)
                    .is_some_and(|want| have.content_hash.as_deref() == Some(want.content_hash()))
        })
    };
    let mut waiting: Vec<Replacement> = Vec::new();
    for key in &reducing {
        let Some(have) = held.get(key) else { continue };
        let mut handed_over = false;
        let mut blocker: Option<(ObjectKey, Successor)> = None;
        'sources: for source in &have.sources {
            for successor in successors(source) {
                // An object losing endpoints itself takes nothing over.
                if &successor == key || reducing.contains(&successor) {
                    continue;
                }
                handed_over = true;
                if in_place(&successor) {
                    continue;
                }
                let state = if let Some(reason) = conflicts.get(&successor) {
                    Successor::Conflict((*reason).to_string())
                } else if written.contains(&successor) {
                    Successor::Written
                } else {
                    Successor::Missing
                };
                // A blocked successor says more than one merely being written.
                let blocked = !matches!(state, Successor::Written);
                if blocker.is_none() || blocked {
                    blocker = Some((successor, state));
                }
                if blocked {
                    break 'sources;
                }
            }
        }
        match blocker {
            Some((successor, state)) => waiting.push(Replacement {
                key: key.clone(),
                successor,
                state,
            }),
            None if handed_over => plan.replaced.push(key.clone()),
            None => {}
        }
    }
    if waiting.is_empty() {
        return;
    }
    let held_back: BTreeSet<&ObjectKey> = waiting.iter().map(|r| &r.key).collect();
    plan.deletes.retain(|k| !held_back.contains(k));
    plan.updates.retain(|o| !held_back.contains(&o.key()));
    plan.replacements.extend(waiting);
}

#[cfg(test)]
mod tests;
