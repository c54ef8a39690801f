//! The mass-change guard: holds back a plan that would take away too much of one
//! registry at once.
//!
//! A registry that answers "nothing" after having hundreds of services, or whose every
//! instance turns unhealthy in the same second, is far more often broken (a lost ACL, a
//! failing health-check layer) than really emptied — Envoy's panic threshold rests on
//! the same judgement. Two things make the judgement hold up:
//!
//! - it looks over a **window**, against the largest view of the registry seen in it, so
//!   a registry that erodes over several passes (20 → 17 → 14 → …) is held once the
//!   erosion, taken together, crosses the share;
//! - it counts **endpoints** as well as objects, because instances turning unhealthy are
//!   updates that empty entries, not deletions.
//!
//! The guard is plain state with the clock passed in, so it is tested like the plan.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use registry_sync_istio::{HeldObject, ObjectKey, REGISTRY_LABEL};

use crate::{HeldBack, Owner, Plan};

/// How much of one registry a sink holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub objects: usize,
    pub endpoints: usize,
}

impl Totals {
    fn peak(self, other: Totals) -> Totals {
        Totals {
            objects: self.objects.max(other.objects),
            endpoints: self.endpoints.max(other.endpoints),
        }
    }

    fn covers(self, other: Totals) -> bool {
        self.objects >= other.objects && self.endpoints >= other.endpoints
    }
}

/// One sink's guard. Keep one per sink for the life of the process: the window is its
/// memory.
#[derive(Clone, Debug)]
pub struct MassChangeGuard {
    max_percent: u32,
    window: Duration,
    /// Per registry, what the sink held when a reduction was planned, newest last. An
    /// entry that a newer one covers is dropped, so the front is the window's peak.
    seen: BTreeMap<String, VecDeque<(Instant, Totals)>>,
}

/// A loss of fewer objects than this is never held back: removing the last service of a
/// small registry is ordinary.
pub const MIN_HELD_OBJECTS: usize = 2;
/// A loss of fewer endpoints than this is never held back: a small service scaling from
/// three instances to one is ordinary, and must not wait for a confirmation.
pub const MIN_HELD_ENDPOINTS: usize = 5;

impl MassChangeGuard {
    /// `max_percent`: the largest share of a registry's objects or endpoints, in percent,
    /// that may go within `window`.
    pub fn new(max_percent: u32, window: Duration) -> MassChangeGuard {
        MassChangeGuard {
            max_percent,
            window,
            seen: BTreeMap::new(),
        }
    }

    /// Moves every reducing change of a registry that would lose more than the allowed
    /// share (against the window's peak) into [`Plan::held_back`]. Creates and growing
    /// updates always go ahead, but what they add is not counted: the guard judges what
    /// the sink will hold for certain, and a planned create may yet fail. A replacement
    /// that finishes ([`Plan::replaced`]: its successors are in the sink) is no loss, and
    /// the old object it removes is not counted twice. Costs nothing unless the plan
    /// takes something away.
    pub fn hold(
        &mut self,
        plan: &mut Plan,
        held: &BTreeMap<ObjectKey, HeldObject>,
        owner: &Owner,
        now: Instant,
    ) {
        let registry_of = |have: &HeldObject| have.label(REGISTRY_LABEL).unwrap_or_default().to_string();
        // What each reducing change takes away: (objects, endpoints).
        let mut losses: BTreeMap<ObjectKey, (String, Totals)> = BTreeMap::new();
        for key in &plan.deletes {
            let (registry, endpoints) = held
                .get(key)
                .map(|have| (registry_of(have), have.endpoints))
                .unwrap_or_default();
            losses.insert(
                key.clone(),
                (
                    registry,
                    Totals {
                        objects: 1,
                        endpoints,
                    },
                ),
            );
        }
        // An object whose health lives in status changes what serves only through the
        // status changes below.
        for object in plan.updates.iter().filter(|o| o.health.is_none()) {
            let key = object.key();
            if let Some(have) = held.get(&key)
                && object.endpoint_count() < have.endpoints
            {
                let lost = have.endpoints - object.endpoint_count();
                losses.insert(
                    key,
                    (
                        registry_of(have),
                        Totals {
                            objects: 0,
                            endpoints: lost,
                        },
                    ),
                );
            }
        }
        for change in plan.status.iter().filter(|c| !c.healthy) {
            if let Some(have) = held.get(&change.key)
                && have.endpoints > 0
            {
                let totals = Totals {
                    objects: 0,
                    endpoints: have.endpoints,
                };
                losses.insert(change.key.clone(), (registry_of(have), totals));
            }
        }
        // A finished replacement: its loss is already in the sink under other names.
        let mut handed_over: BTreeMap<String, Totals> = BTreeMap::new();
        for key in &plan.replaced {
            if let Some((registry, lost)) = losses.remove(key) {
                let totals = handed_over.entry(registry).or_default();
                totals.objects += lost.objects;
                totals.endpoints += lost.endpoints;
            }
        }
        if losses.is_empty() {
            return;
        }
        let mut reducing: BTreeMap<&str, (Vec<ObjectKey>, Totals)> = BTreeMap::new();
        for (key, (registry, lost)) in &losses {
            let (keys, totals) = reducing.entry(registry.as_str()).or_default();
            keys.push(key.clone());
            totals.objects += lost.objects;
            totals.endpoints += lost.endpoints;
        }

        let mut current: BTreeMap<&str, Totals> = BTreeMap::new();
        for object in held.values().filter(|h| owner.owns(h)) {
            let registry = object.label(REGISTRY_LABEL).unwrap_or_default();
            if reducing.contains_key(registry) {
                let totals = current.entry(registry).or_default();
                totals.objects += 1;
                totals.endpoints += object.endpoints;
            }
        }
        for (registry, twice) in &handed_over {
            if let Some(totals) = current.get_mut(registry.as_str()) {
                totals.objects = totals.objects.saturating_sub(twice.objects);
                totals.endpoints = totals.endpoints.saturating_sub(twice.endpoints);
            }
        }

        let mut holding: BTreeSet<ObjectKey> = BTreeSet::new();
        for (registry, (keys, lost)) in reducing {
            let now_totals = current.get(registry).copied().unwrap_or_default();
            let peak = self.observe(registry, now_totals, now);
            let after = Totals {
                objects: now_totals.objects.saturating_sub(lost.objects),
                endpoints: now_totals.endpoints.saturating_sub(lost.endpoints),
            };
            if self.too_much(peak.objects, after.objects, MIN_HELD_OBJECTS)
                || self.too_much(peak.endpoints, after.endpoints, MIN_HELD_ENDPOINTS)
            {
                holding.extend(keys.iter().cloned());
                plan.held_back.push(HeldBack {
                    registry: registry.to_string(),
                    keys,
                    peak,
                    after,
                });
            }
        }
        if !holding.is_empty() {
            plan.deletes.retain(|k| !holding.contains(k));
            plan.updates.retain(|o| !holding.contains(&o.key()));
            plan.status.retain(|c| !holding.contains(&c.key));
        }
    }

    fn too_much(&self, peak: usize, after: usize, min_loss: usize) -> bool {
        let lost = peak.saturating_sub(after);
        lost >= min_loss && lost as u64 * 100 > u64::from(self.max_percent) * peak as u64
    }

    /// Records what the sink holds of `registry` now; returns the peak of the window.
    fn observe(&mut self, registry: &str, totals: Totals, now: Instant) -> Totals {
        let seen = self.seen.entry(registry.to_string()).or_default();
        while seen
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > self.window)
        {
            seen.pop_front();
        }
        while seen.back().is_some_and(|(_, t)| totals.covers(*t)) {
            seen.pop_back();
        }
        seen.push_back((now, totals));
        seen.iter().fold(Totals::default(), |peak, (_, t)| peak.peak(*t))
    }
}
