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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// One sink's guard. Its window and its holds are its memory: keep it in the sink
/// ([`MassChangeGuard::memory`], [`MassChangeGuard::restore`]) so that a restart, a
/// `once` or a new leader judges with the same peak and keeps what was held, held.
#[derive(Clone, Debug)]
pub struct MassChangeGuard {
    max_percent: u32,
    window: Duration,
    /// Per registry, what the sink held when a reduction was planned, newest last. An
    /// entry that a newer one covers is dropped, so the front is the window's peak.
    seen: BTreeMap<String, VecDeque<(Instant, Totals)>>,
    /// Per registry whose change is held, the peak it was held against: a hold lasts
    /// until it is confirmed or the registry recovers, not until the window passes.
    pinned: BTreeMap<String, Totals>,
    /// The memory changed since it was last taken ([`MassChangeGuard::take_changed`]).
    changed: bool,
    /// A hold began or ended since then.
    holds_changed: bool,
}

/// The first line of a guard's memory, naming its format.
const MEMORY_HEADER: &str = "registry-sync mass-change guard v1";
/// Entries of one registry's window a memory keeps (the newest, and the peak).
const MEMORY_ENTRIES: usize = 32;

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
            pinned: BTreeMap::new(),
            changed: false,
            holds_changed: false,
        }
    }

    /// What changed in the memory since the last call, `(anything, a hold)`: a writer
    /// keeps a new hold in its sink at once, the window's history now and then.
    pub fn take_changed(&mut self) -> (bool, bool) {
        (
            std::mem::take(&mut self.changed),
            std::mem::take(&mut self.holds_changed),
        )
    }

    /// Whether some registry's change is held now.
    pub fn holds_something(&self) -> bool {
        !self.pinned.is_empty()
    }

    /// The window and the holds as text (one line each: registry, `seen` or `held`,
    /// Unix milliseconds, objects, endpoints), with `wall` the clock time of `now`.
    pub fn memory(&self, now: Instant, wall: SystemTime) -> String {
        let unix_ms = |at: Instant| {
            let age = now.saturating_duration_since(at);
            wall.checked_sub(age)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis())
        };
        let mut out = format!("{MEMORY_HEADER}\n");
        for (registry, seen) in &self.seen {
            let keep = seen.len().saturating_sub(MEMORY_ENTRIES);
            let entries = seen.front().into_iter().chain(seen.iter().skip(keep.max(1)));
            for (at, totals) in entries {
                out.push_str(&format!(
                    "{registry}\tseen\t{}\t{}\t{}\n",
                    unix_ms(*at),
                    totals.objects,
                    totals.endpoints
                ));
            }
        }
        for (registry, peak) in &self.pinned {
            out.push_str(&format!(
                "{registry}\theld\t{}\t{}\t{}\n",
                unix_ms(now),
                peak.objects,
                peak.endpoints
            ));
        }
        out
    }

    /// Takes back a memory written by [`MassChangeGuard::memory`] (in this process or
    /// another, with `wall` the clock time of `now`). Lines that do not parse are
    /// skipped: a damaged memory costs its lines, never the start.
    pub fn restore(&mut self, memory: &str, now: Instant, wall: SystemTime) {
        self.seen.clear();
        self.pinned.clear();
        let mut lines = memory.lines();
        if lines.next() != Some(MEMORY_HEADER) {
            return;
        }
        let now_ms = wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        for line in lines {
            let fields: Vec<&str> = line.split('\t').collect();
            let [registry, what, at, objects, endpoints] = fields[..] else {
                continue;
            };
            let (Ok(at), Ok(objects), Ok(endpoints)) = (
                at.parse::<u128>(),
                objects.parse::<usize>(),
                endpoints.parse::<usize>(),
            ) else {
                continue;
            };
            let totals = Totals { objects, endpoints };
            match what {
                "held" => {
                    self.pinned.insert(registry.to_string(), totals);
                }
                "seen" => {
                    let age =
                        Duration::from_millis(u64::try_from(now_ms.saturating_sub(at)).unwrap_or(u64::MAX));
                    let at = now.checked_sub(age).unwrap_or(now);
                    self.seen
                        .entry(registry.to_string())
                        .or_default()
                        .push_back((at, totals));
                }
                _ => {}
            }
        }
        (self.changed, self.holds_changed) = (false, false);
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
            // Every held change is planned again on each pass: a registry held before
            // with nothing to take away now has recovered.
            if !self.pinned.is_empty() {
                self.pinned.clear();
                (self.changed, self.holds_changed) = (true, true);
            }
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

        let recovered: Vec<String> = self
            .pinned
            .keys()
            .filter(|r| !reducing.contains_key(r.as_str()))
            .cloned()
            .collect();
        for registry in recovered {
            self.pinned.remove(&registry);
            (self.changed, self.holds_changed) = (true, true);
        }
        let mut holding: BTreeSet<ObjectKey> = BTreeSet::new();
        for (registry, (keys, lost)) in reducing {
            let now_totals = current.get(registry).copied().unwrap_or_default();
            let mut peak = self.observe(registry, now_totals, now);
            if let Some(pinned) = self.pinned.get(registry) {
                peak = peak.peak(*pinned);
            }
            let after = Totals {
                objects: now_totals.objects.saturating_sub(lost.objects),
                endpoints: now_totals.endpoints.saturating_sub(lost.endpoints),
            };
            if self.too_much(peak.objects, after.objects, MIN_HELD_OBJECTS)
                || self.too_much(peak.endpoints, after.endpoints, MIN_HELD_ENDPOINTS)
            {
                holding.extend(keys.iter().cloned());
                if self.pinned.insert(registry.to_string(), peak) != Some(peak) {
                    (self.changed, self.holds_changed) = (true, true);
                }
                plan.held_back.push(HeldBack {
                    registry: registry.to_string(),
                    keys,
                    peak,
                    after,
                });
            } else if self.pinned.remove(registry).is_some() {
                (self.changed, self.holds_changed) = (true, true);
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
        self.changed = true;
        seen.iter().fold(Totals::default(), |peak, (_, t)| peak.peak(*t))
    }
}
