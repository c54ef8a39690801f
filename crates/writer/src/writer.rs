//! One writer per sink: it owns what that sink still has to do — the index version it
//! applied, the objects waiting for another try, the mass-change guard — and nothing
//! of any other sink, so a slow or failing sink delays no one else.
//!
//! A writer plans what changed in the index since the version it applied (or
//! everything, after the delete scope widened, a new leadership, a sink failure or the
//! periodic resync), adds what its sink saw change underneath it (drift), and applies.
//! An object the sink refuses goes into quarantine: tried again alone with backoff, or
//! at once when the registry changes it, while every other change flows; readiness
//! does not wait for it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use registry_sync_index::{Index, Since};
use registry_sync_istio::ObjectKey;
use registry_sync_plan::{MassChangeGuard, Owner, Plan, hold_replacements, plan, plan_keys};
use registry_sync_sinks::{ApplyReport, AsyncSink, SinkError};

use crate::observer::Observer;

/// A sink with a name for logs and messages.
pub struct NamedSink {
    pub name: String,
    pub sink: Box<dyn AsyncSink>,
}

/// What one pass did to one sink.
#[derive(Debug, Default)]
pub struct SinkOutcome {
    pub plan: Plan,
    pub report: ApplyReport,
}

const QUARANTINE_FIRST: Duration = Duration::from_secs(1);
const QUARANTINE_MAX: Duration = Duration::from_secs(300);

/// Objects a sink refused, each with when it is tried again.
#[derive(Debug, Default)]
struct Quarantine {
    entries: BTreeMap<ObjectKey, (Instant, Duration)>,
}

impl Quarantine {
    /// Quarantines `key` (again); returns the wait before the next try.
    fn fail(&mut self, key: ObjectKey, now: Instant) -> Duration {
        let delay = match self.entries.get(&key) {
            Some((_, delay)) => (*delay * 2).min(QUARANTINE_MAX),
            None => QUARANTINE_FIRST,
        };
        self.entries.insert(key, (now + delay, delay));
        delay
    }

    /// Tries `key` at the next plan (its registry changed it), keeping its backoff.
    fn release(&mut self, key: &ObjectKey, now: Instant) {
        if let Some((due, _)) = self.entries.get_mut(key) {
            *due = now;
        }
    }

    fn holds(&self, key: &ObjectKey, now: Instant) -> bool {
        self.entries.get(key).is_some_and(|(due, _)| *due > now)
    }

    fn due(&self, now: Instant) -> impl Iterator<Item = &ObjectKey> {
        self.entries
            .iter()
            .filter(move |(_, (due, _))| *due <= now)
            .map(|(k, _)| k)
    }

    fn next_due(&self) -> Option<Instant> {
        self.entries.values().map(|(due, _)| *due).min()
    }
}

/// Drops the writes of `plan` that `keep` refuses.
fn retain_writes(plan: &mut Plan, keep: impl Fn(&ObjectKey) -> bool) {
    plan.creates.retain(|o| keep(&o.key()));
    plan.updates.retain(|o| keep(&o.key()));
    plan.deletes.retain(|k| keep(k));
    plan.status.retain(|c| keep(&c.key));
}

/// A plan and the index version it brings the sink to.
pub struct Step {
    pub plan: Plan,
    version: u64,
    /// The quarantined objects this plan tries again (due when it was made): only
    /// these leave the quarantine when they are not refused again.
    retried: Vec<ObjectKey>,
}

pub struct SinkWriter {
    pub name: String,
    pub sink: Box<dyn AsyncSink>,
    owner: Owner,
    guard: Option<MassChangeGuard>,
    /// The index version planned last.
    version: u64,
    /// The index epoch planned last; `None`: plan everything next.
    epoch: Option<u64>,
    /// Keys to plan next besides what changed in the index: held back by the guard,
    /// or changed in the sink underneath us.
    pending: BTreeSet<ObjectKey>,
    quarantine: Quarantine,
    /// The version whose writes all went through (quarantined objects aside).
    applied: Option<u64>,
    /// Passes in a row that wrote successors objects waiting to be replaced wait for
    /// (0: the last one did not): the writer plans again at once to finish the
    /// replacements, a bounded number of times, so a sink that takes a write but never
    /// shows it held cannot keep it spinning.
    again_streak: usize,
    /// Where the guard's memory stands with the sink's copy of it.
    memory: GuardMemory,
    observer: Arc<dyn Observer>,
}

/// Passes made at once, one after the other, to finish replacements; past this the
/// writer waits for its next reason to plan (a change, a retry, the resync).
const MAX_PASSES_AT_ONCE: usize = 3;

/// How often at most the guard's window is written to the sink when no hold began or
/// ended: a restart loses at most this much of the window's history, never a hold.
const MEMORY_EVERY: Duration = Duration::from_secs(30);

/// How often a long pass reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct GuardMemory {
    /// Read from the sink since start or the last change of leadership.
    loaded: bool,
    /// The sink keeps a memory that a confirmed run (without a guard) must clear.
    stale: bool,
    /// The window changed since it was last kept.
    dirty: bool,
    kept_at: Option<Instant>,
}

impl SinkWriter {
    pub fn new(
        named: NamedSink,
        owner: Owner,
        guard: Option<MassChangeGuard>,
        observer: Arc<dyn Observer>,
    ) -> SinkWriter {
        SinkWriter {
            name: named.name,
            sink: named.sink,
            owner,
            guard,
            version: 0,
            epoch: None,
            pending: BTreeSet::new(),
            quarantine: Quarantine::default(),
            applied: None,
            again_streak: 0,
            memory: GuardMemory::default(),
            observer,
        }
    }

    /// Plans everything next time (a new leader, a periodic resync).
    pub fn request_full(&mut self) {
        self.epoch = None;
    }

    /// Reads the guard's memory from the sink again before the next plan (a new leader
    /// takes over the last one's peak and holds).
    pub fn reload_guard_memory(&mut self) {
        self.memory.loaded = false;
    }

    /// Reads the guard's memory from the sink, once since start or since the last
    /// [`SinkWriter::reload_guard_memory`].
    pub async fn load_guard_memory(&mut self) {
        if self.memory.loaded {
            return;
        }
        match self.sink.load_guard_memory().await {
            Ok(memory) => {
                self.memory.loaded = true;
                let memory = memory.unwrap_or_default();
                match &mut self.guard {
                    Some(guard) => guard.restore(&memory, Instant::now(), SystemTime::now()),
                    None => self.memory.stale = !memory.trim().is_empty(),
                }
            }
            Err(e) => {
                tracing::warn!(sink = %self.name, "cannot read the mass-change guard's memory ({e}); judging from what this process sees, and trying again at the next pass");
            }
        }
    }

    /// Keeps the guard's memory in the sink when a hold began or ended, or now and then
    /// when only its window moved; a confirmed run clears what an earlier one kept.
    async fn keep_guard_memory(&mut self) {
        let memory = match &mut self.guard {
            Some(guard) => {
                let (changed, holds_changed) = guard.take_changed();
                self.memory.dirty |= changed;
                let due = self.memory.kept_at.is_none_or(|at| at.elapsed() >= MEMORY_EVERY);
                if !(holds_changed || self.memory.dirty && due) {
                    return;
                }
                guard.memory(Instant::now(), SystemTime::now())
            }
            None if self.memory.stale => String::new(),
            None => return,
        };
        match self.sink.keep_guard_memory(&memory).await {
            Ok(()) => {
                self.memory.dirty = false;
                self.memory.stale = false;
                self.memory.kept_at = Some(Instant::now());
            }
            Err(e) => {
                self.memory.dirty = true;
                tracing::warn!(sink = %self.name, "cannot keep the mass-change guard's memory ({e}); a restart now would judge from what it sees");
            }
        }
    }

    /// The sink saw these objects change: plan them next time.
    pub fn observed(&mut self, keys: Vec<ObjectKey>) {
        self.pending.extend(keys);
    }

    /// Takes in what the sink saw since it was last looked at, before a plan.
    pub async fn catch_up(&mut self) {
        let keys = self.sink.refresh().await;
        self.observed(keys);
    }

    /// The index version planned last: the change log must keep what follows it.
    pub fn planned(&self) -> u64 {
        self.version
    }

    /// The index version this sink has applied, quarantined objects aside.
    pub fn applied(&self) -> Option<u64> {
        self.applied
    }

    /// The last pass wrote the successors of objects waiting to be replaced: the next
    /// plan, made at once, removes them.
    pub fn wants_another_pass(&self) -> bool {
        (1..=MAX_PASSES_AT_ONCE).contains(&self.again_streak)
    }

    /// When a quarantined object is due for another try.
    pub fn next_retry(&self) -> Option<Instant> {
        self.quarantine.next_due()
    }

    /// What to write next: the index's changes since the last plan, the pending keys
    /// and the quarantined objects now due; everything when the epoch moved on.
    pub fn plan(&mut self, index: &Index, now: Instant) -> Step {
        let version = index.version();
        let scope = index.scope();
        let changed = match index.changed_since(self.version) {
            Since::Keys(keys) if self.epoch == Some(index.epoch()) => Some(keys),
            _ => None,
        };
        let held = self.sink.held();
        let mut plan = match changed {
            Some(changed) => {
                let mut keys = std::mem::take(&mut self.pending);
                for key in &changed {
                    self.quarantine.release(key, now);
                }
                keys.extend(changed);
                keys.extend(self.quarantine.due(now).cloned());
                plan_keys(&keys, index.desired(), held, &self.owner, &scope)
            }
            None => {
                self.pending.clear();
                plan(index.desired(), held, &self.owner, &scope)
            }
        };
        retain_writes(&mut plan, |key| !self.quarantine.holds(key, now));
        hold_replacements(&mut plan, index.desired(), held, &self.owner, &|source| {
            index.successors(source)
        });
        if let Some(guard) = &mut self.guard {
            guard.hold(&mut plan, held, &self.owner, now);
        }
        // Held-back keys are judged again on the next plan: the hold lasts while the
        // registry's view stays too small, not one plan. An object waiting for its
        // successor is planned again until the successor is in the sink.
        for held_back in &plan.held_back {
            self.pending.extend(held_back.keys.iter().cloned());
        }
        self.pending
            .extend(plan.replacements.iter().map(|r| r.key.clone()));
        let retried = self.quarantine.due(now).cloned().collect();
        self.version = version;
        self.epoch = Some(index.epoch());
        Step {
            plan,
            version,
            retried,
        }
    }

    /// Applies a step. `Err`: the sink could not be used at all; the next plan covers
    /// everything.
    pub async fn apply(&mut self, step: Step) -> Result<ApplyReport, SinkError> {
        self.observer.held_back(&self.name, &step.plan.held_back);
        self.observer.replacements(&self.name, &step.plan.replacements);
        let finishing = step.plan.replacements.iter().any(|r| !r.is_blocked());
        // Zero until this pass completes: a pass that fails or is cancelled (leadership
        // lost, shutdown) asks for no other at once.
        let streak = std::mem::take(&mut self.again_streak);
        let progress = self
            .observer
            .pass_started(&self.name, step.plan.writes(), self.sink.progress());
        let pass = apply(&self.name, self.sink.as_mut(), step.plan);
        let result = match &progress {
            None => pass.await,
            Some(progress) => {
                tokio::pin!(pass);
                let mut ticks = tokio::time::interval(PROGRESS_EVERY);
                ticks.tick().await;
                loop {
                    tokio::select! {
                        result = &mut pass => break result,
                        _ = ticks.tick() => progress.tick(),
                    }
                }
            }
        };
        let applied = match result {
            Ok(applied) => applied,
            Err(e) => {
                self.observer.sink_failed(&self.name, &e);
                self.request_full();
                return Err(e);
            }
        };
        if let Some(progress) = progress {
            let report = &applied.report;
            progress.finish(report.created + report.updated + report.deleted + report.status);
        }
        self.observer.applied(&self.name, &applied.plan, &applied.report);
        let now = Instant::now();
        let failed: BTreeSet<&ObjectKey> = applied.report.failed.iter().map(|(k, _)| k).collect();
        // A retried object that was not refused again is written, or no longer needs
        // writing. The others keep their place, even if they came due while this pass
        // ran: they were not tried.
        for key in step.retried.iter().filter(|k| !failed.contains(k)) {
            self.quarantine.entries.remove(key);
        }
        for (key, _) in &applied.report.failed {
            let delay = self.quarantine.fail(key.clone(), now);
            tracing::warn!(sink = %self.name, object = %key, "quarantined: tried again alone in {delay:?}, or as soon as its registry changes it; everything else is written meanwhile");
        }
        let report = &applied.report;
        if finishing && report.created + report.updated > 0 {
            self.again_streak = streak + 1;
        }
        self.observer
            .quarantined(&self.name, self.quarantine.entries.len());
        self.applied = Some(step.version);
        self.keep_guard_memory().await;
        Ok(applied.report)
    }
}

/// Applies one plan to one sink, logging what happened.
async fn apply(sink_name: &str, sink: &mut dyn AsyncSink, plan: Plan) -> Result<SinkOutcome, SinkError> {
    for conflict in &plan.conflicts {
        tracing::warn!(sink = sink_name, object = %conflict.key, "conflict, not written: {}", conflict.reason);
    }
    for held_back in &plan.held_back {
        tracing::error!(
            sink = sink_name,
            registry = %held_back.registry,
            changes = held_back.keys.len(),
            objects = held_back.after.objects,
            objects_peak = held_back.peak.objects,
            endpoints = held_back.after.endpoints,
            endpoints_peak = held_back.peak.endpoints,
            "mass change held back: {}",
            held_back.describe()
        );
    }
    for replacement in &plan.replacements {
        if replacement.is_blocked() {
            tracing::warn!(sink = sink_name, object = %replacement.key, successor = %replacement.successor, "not removed: {}", replacement.describe());
        } else {
            tracing::debug!(sink = sink_name, object = %replacement.key, successor = %replacement.successor, "{}", replacement.describe());
        }
    }
    if let Some(first) = plan.orphans.first() {
        tracing::warn!(
            sink = sink_name,
            orphans = plan.orphans.len(),
            example = %first.key,
            registry = %first.registry,
            "objects of registries this configuration no longer names are left in place; `registry-sync prune --config FILE` deletes them (`plan` lists them)"
        );
    }
    for kept in &plan.kept {
        tracing::debug!(sink = sink_name, object = %kept.key, registry = %kept.registry, "kept: registry has not delivered a complete view");
    }
    if plan.is_empty() {
        tracing::debug!(
            sink = sink_name,
            unchanged = plan.unchanged,
            "in sync, nothing to write"
        );
        return Ok(SinkOutcome {
            plan,
            report: ApplyReport::default(),
        });
    }
    let report = sink.apply(&plan).await?;
    for (key, error) in &report.failed {
        tracing::error!(sink = sink_name, object = %key, "write failed: {error}");
    }
    tracing::info!(
        sink = sink_name,
        created = report.created,
        updated = report.updated,
        deleted = report.deleted,
        status = report.status,
        failed = report.failed.len(),
        unchanged = plan.unchanged,
        conflicts = plan.conflicts.len(),
        "applied"
    );
    Ok(SinkOutcome { plan, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            kind: registry_sync_istio::Kind::ServiceEntry,
            namespace: "mesh".into(),
            name: name.into(),
        }
    }

    #[test]
    fn quarantine_backs_off_and_releases_on_change() {
        let mut quarantine = Quarantine::default();
        let start = Instant::now();
        assert_eq!(quarantine.fail(key("a"), start), Duration::from_secs(1));
        assert_eq!(quarantine.fail(key("a"), start), Duration::from_secs(2));
        assert!(quarantine.holds(&key("a"), start + Duration::from_millis(1500)));
        assert_eq!(quarantine.due(start + Duration::from_secs(2)).count(), 1);
        quarantine.release(&key("a"), start);
        assert!(!quarantine.holds(&key("a"), start));
        for _ in 0..20 {
            quarantine.fail(key("a"), start);
        }
        assert_eq!(quarantine.entries[&key("a")].1, QUARANTINE_MAX);
    }
}
