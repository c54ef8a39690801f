//! The pipeline: source events into the [`Index`], and plans out of it, shared by
//! every command.
//!
//! The index keeps the last known view of every registry and knows which registries
//! have delivered a complete view: only those may lose objects to a plan. `once`,
//! `plan` and `prune` read every registry once and make one pass over the sinks here;
//! `run` shares the pipeline between the task that feeds it and one writer task per
//! sink ([`crate::writer`]).

use registry_sync_catalog::{RegistryDelta, RegistrySnapshot, Skipped};
use registry_sync_index::{Index, Update};
use registry_sync_istio::{Desired, HeldObject};
use registry_sync_plan::{MassChangeGuard, Owner, Plan, hold_replacements, plan};
use registry_sync_sinks::AsyncSink;
use registry_sync_sources::SourceEvent;

use crate::config::Config;
use crate::metrics::Metrics;
pub use crate::writer::NamedSink;
use crate::writer::SinkWriter;

/// What one pass did, over every sink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassOutcome {
    /// Every planned write succeeded.
    pub written: bool,
    /// The mass-change guard held changes back on some sink.
    pub held_back: bool,
    /// Some object could not be replaced: its successor conflicts with another object
    /// or the sink refused it, so the old object stays.
    pub replacements_blocked: bool,
}

pub struct Pipeline {
    index: Index,
    owner: Owner,
    /// Percent of a registry's objects or endpoints that may go within the guard's
    /// window; `None` when confirmed.
    mass_delete_guard: Option<u32>,
    guard_window: std::time::Duration,
    metrics: Option<Metrics>,
    /// The start of the index's clock (drain delays).
    started: std::time::Instant,
}

/// A held ServiceEntry's namespace, first host and address, as the allocator takes them.
fn vip_of(held: &HeldObject) -> Option<(&str, &str, &str)> {
    let (host, address) = held.vip.as_ref()?;
    Some((held.key.namespace.as_str(), host.as_str(), address.as_str()))
}

fn log_problem(skip: &Skipped) {
    tracing::warn!(
        registry = %skip.registry,
        service = %skip.service,
        instance = skip.instance.as_deref().unwrap_or(""),
        "skipped: {}",
        skip.reason
    );
}

impl Pipeline {
    pub fn new(config: &Config) -> Pipeline {
        Pipeline {
            index: Index::new(config.translate_settings(), config.registry_names()),
            owner: Owner::new(config.instance.clone()),
            mass_delete_guard: (!config.safety.confirm_mass_delete)
                .then(|| (config.safety.max_delete_share * 100.0).round() as u32),
            guard_window: config.safety.guard_window,
            metrics: None,
            started: std::time::Instant::now(),
        }
    }

    /// Keeps the virtual IPs the sinks' own ServiceEntries already have (read back when
    /// they were opened), so a restart moves no address.
    pub fn seed_vips<'a>(&mut self, sinks: impl IntoIterator<Item = &'a dyn AsyncSink>) {
        let owner = &self.owner;
        let (ours, foreign): (Vec<&HeldObject>, Vec<&HeldObject>) = sinks
            .into_iter()
            .flat_map(|sink| sink.held().values())
            .filter(|held| held.vip.is_some())
            .partition(|held| owner.owns(held));
        // Another's address is never ours to hand out, whoever wrote it.
        self.index.reserve_vips(
            foreign
                .iter()
                .filter_map(|h| h.vip.as_ref().map(|(_, a)| a.as_str())),
        );
        self.index.seed_vips(ours.into_iter().filter_map(vip_of));
    }

    /// Takes the addresses `sink` holds for our entries where they differ from this
    /// process's own (a new leader, which allocated in its own order as a standby).
    pub fn adopt_vips(&mut self, sink: &dyn AsyncSink) {
        let owner = &self.owner;
        let ours = sink.held().values().filter(|h| owner.owns(h));
        let adopted = self.index.adopt_vips(ours.filter_map(vip_of));
        if adopted > 0 {
            tracing::info!(
                objects = adopted,
                "took the virtual IPs the sink holds over this replica's own"
            );
        }
    }

    /// Reports to `metrics` from now on.
    pub fn with_metrics(mut self, metrics: Metrics) -> Pipeline {
        self.metrics = Some(metrics);
        self
    }

    /// Deletes orphans (objects of registries no longer configured) instead of listing
    /// them: `registry-sync prune`.
    pub fn prune_orphans(mut self) -> Pipeline {
        self.index = self.index.prune_orphans();
        self
    }

    /// Whose objects this installation's plans may write and delete.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Forgets the changes every writer has planned past (see [`Index::compact`]).
    pub fn compact(&mut self, upto: u64) {
        self.index.compact(upto);
    }

    /// Takes one source event. Returns whether writers have anything new to look at.
    pub fn take(&mut self, event: SourceEvent) -> bool {
        self.index.set_clock(self.started.elapsed());
        match event {
            SourceEvent::Snapshot { registry, snapshot } => {
                tracing::debug!(%registry, services = snapshot.services().len(), "registry view received");
                self.registry_synced(&registry, snapshot)
            }
            SourceEvent::Changed { registry, delta } => {
                tracing::debug!(%registry, changed = delta.upserts.len(), removed = delta.removed.len(), "registry change received");
                self.registry_changed(&registry, &delta)
            }
            SourceEvent::Failed { registry, error } => {
                tracing::warn!(%registry, "registry failing, keeping its last known state: {error}");
                self.registry_failed(&registry, &error);
                false
            }
        }
    }

    /// Takes a registry's complete view. Returns whether writers have anything to do.
    pub fn registry_synced(&mut self, registry: &str, snapshot: RegistrySnapshot) -> bool {
        let update = self.index.snapshot(registry, &snapshot);
        self.report(registry, update)
    }

    /// Takes what changed in a registry since its last view.
    pub fn registry_changed(&mut self, registry: &str, delta: &RegistryDelta) -> bool {
        let update = self.index.delta(registry, delta);
        self.report(registry, update)
    }

    /// Deletes the WorkloadEntries whose drain delay is over. Returns whether writers
    /// have anything new to look at.
    pub fn expire_drained(&mut self) -> bool {
        self.index.expire(self.started.elapsed()) > 0
    }

    /// When [`Pipeline::expire_drained`] has something to do next.
    pub fn next_drain_deadline(&self) -> Option<std::time::Instant> {
        self.index.next_drain_deadline().map(|after| self.started + after)
    }

    fn report(&self, registry: &str, update: Update) -> bool {
        update.new_problems.iter().for_each(log_problem);
        if let Some(metrics) = &self.metrics {
            metrics.registry_synced(registry, update.services, update.instances, &update.new_problems);
        }
        for key in &update.unknown {
            tracing::debug!(%registry, service = %key, "service could not be read; its objects stay as they are");
        }
        for moved in &update.moves {
            tracing::info!(%registry, "{moved}");
        }
        for note in &update.notes {
            tracing::debug!(registry = %note.registry, service = %note.service, instance = note.instance.as_deref().unwrap_or(""), "{}", note.reason);
        }
        update.changed > 0 || update.widened
    }

    /// Marks a registry as failing: its last known services stay, nothing of it is
    /// deleted until it answers again.
    pub fn registry_failed(&mut self, registry: &str, failure: &registry_sync_sources::SourceFailure) {
        if let Some(metrics) = &self.metrics {
            metrics.registry_failed(registry, failure);
        }
        self.index.failed(registry);
    }

    /// Every configured registry has delivered a complete view.
    pub fn all_registries_complete(&self) -> bool {
        self.index.all_complete()
    }

    pub fn desired(&self) -> &Desired {
        self.index.desired()
    }

    fn new_guard(&self) -> Option<MassChangeGuard> {
        self.mass_delete_guard
            .map(|percent| MassChangeGuard::new(percent, self.guard_window))
    }

    /// The writer of one sink, with its own mass-change guard (each judges what its own
    /// sink holds).
    pub fn writer(&self, sink: NamedSink) -> SinkWriter {
        SinkWriter::new(sink, self.owner.clone(), self.new_guard(), self.metrics.clone())
    }

    /// The full plan for one sink, without applying it; the guard judges it as a fresh
    /// start would: against what the sink holds now and the guard's `memory` the sink
    /// keeps.
    pub fn plan_for(&self, sink: &dyn AsyncSink, memory: Option<&str>) -> Plan {
        let mut plan = plan(
            self.index.desired(),
            sink.held(),
            &self.owner,
            &self.index.scope(),
        );
        hold_replacements(
            &mut plan,
            self.index.desired(),
            sink.held(),
            &self.owner,
            &|source| self.index.successors(source),
        );
        if let Some(mut guard) = self.new_guard() {
            let now = std::time::Instant::now();
            guard.restore(memory.unwrap_or_default(), now, std::time::SystemTime::now());
            guard.hold(&mut plan, sink.held(), &self.owner, now);
        }
        plan
    }

    /// One pass over every sink, one after the other: what `once` and `prune` do. A
    /// sink whose pass wrote the successors of objects being replaced gets another pass
    /// right away, which removes the old objects now that their successors landed.
    pub async fn sync(&mut self, writers: &mut [SinkWriter]) -> PassOutcome {
        let mut outcome = PassOutcome {
            written: true,
            held_back: false,
            replacements_blocked: false,
        };
        for writer in writers.iter_mut() {
            for _ in 0..REPLACEMENT_PASSES {
                writer.catch_up().await;
                writer.load_guard_memory().await;
                let step = writer.plan(&self.index, std::time::Instant::now());
                let held_back = !step.plan.held_back.is_empty();
                let blocked = step.plan.blocked_replacements().count() > 0;
                match writer.apply(step).await {
                    Ok(report) => outcome.written &= report.is_complete(),
                    Err(e) => {
                        tracing::error!(sink = %writer.name, "{e}");
                        outcome.written = false;
                        break;
                    }
                }
                if !writer.wants_another_pass() {
                    outcome.held_back |= held_back;
                    outcome.replacements_blocked |= blocked;
                    break;
                }
            }
        }
        outcome
    }
}

/// Passes one `once` makes over a sink at most: the first writes the successors, the
/// second removes what they replace (a third covers a successor that itself replaced
/// something in the second).
const REPLACEMENT_PASSES: usize = 3;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use registry_sync_catalog::{RegistrySnapshot, Service};
    use registry_sync_istio::{HeldObject, ObjectKey};
    use registry_sync_sinks::{ApplyReport, BoxFuture, SinkError};

    use super::*;

    /// Holds what it is given, refuses one object by name, records the plans, and sees
    /// the objects in `deleted_behind` vanish at its next refresh (someone deleted them).
    struct Refusing {
        held: BTreeMap<ObjectKey, HeldObject>,
        refuses: &'static str,
        plans: Arc<Mutex<Vec<(usize, usize)>>>,
        deleted_behind: Arc<Mutex<Vec<ObjectKey>>>,
    }

    impl AsyncSink for Refusing {
        fn refresh(&mut self) -> BoxFuture<'_, Vec<ObjectKey>> {
            let gone: Vec<ObjectKey> = std::mem::take(&mut *self.deleted_behind.lock().unwrap());
            for key in &gone {
                self.held.remove(key);
            }
            Box::pin(std::future::ready(gone))
        }

        fn held(&self) -> &BTreeMap<ObjectKey, HeldObject> {
            &self.held
        }

        fn apply<'a>(&'a mut self, plan: &'a Plan) -> BoxFuture<'a, Result<ApplyReport, SinkError>> {
            self.plans.lock().unwrap().push((plan.writes(), plan.unchanged));
            let mut report = ApplyReport::default();
            for object in &plan.creates {
                if object.metadata.name.ends_with(self.refuses) {
                    report.failed.push((object.key(), "denied by a webhook".into()));
                } else {
                    self.held.insert(object.key(), HeldObject::written(object));
                    report.created += 1;
                }
            }
            Box::pin(std::future::ready(Ok(report)))
        }
    }

    fn service(name: &str) -> Service {
        registry_sync_catalog::testing::service(
            name,
            vec![registry_sync_catalog::testing::instance("1", "10.0.0.1", 8080)],
        )
    }

    /// A pipeline over one file registry, `legacy`.
    fn legacy_pipeline() -> Pipeline {
        let config = Config::parse(
            Path::new("sync.yaml"),
            "registries:\n  - {name: legacy, kind: file, path: s.yaml, namespace: mesh}\n",
        )
        .unwrap();
        Pipeline::new(&config)
    }

    /// The names of the objects a plan creates.
    fn created_names(plan: &Plan) -> Vec<&str> {
        plan.creates.iter().map(|o| o.metadata.name.as_str()).collect()
    }

    /// A writer into a sink that refuses every object named `*bad`.
    fn refusing_bad(pipeline: &Pipeline, plans: &Arc<Mutex<Vec<(usize, usize)>>>) -> SinkWriter {
        pipeline.writer(NamedSink {
            name: "refusing".into(),
            sink: Box::new(Refusing {
                held: BTreeMap::new(),
                refuses: "bad",
                plans: Arc::clone(plans),
                deleted_behind: Default::default(),
            }),
        })
    }

    #[tokio::test]
    async fn a_refused_object_is_quarantined_and_retried_alone_while_the_rest_flows() {
        let mut pipeline = legacy_pipeline();
        let plans = Arc::new(Mutex::new(Vec::new()));
        let mut writer = refusing_bad(&pipeline, &plans);
        let services: Vec<Service> = ["a", "b", "c", "bad"].into_iter().map(service).collect();
        pipeline.registry_synced("legacy", RegistrySnapshot::new("legacy", services, vec![]));
        let start = Instant::now();
        let step = writer.plan(pipeline.index(), start);
        let report = writer.apply(step).await.unwrap();
        assert_eq!((report.created, report.failed.len()), (3, 1));
        assert_eq!(
            writer.applied(),
            Some(pipeline.index().version()),
            "a quarantined object does not hold readiness back"
        );
        // A new service while the refused one waits: only the new one is planned.
        let services: Vec<Service> = ["a", "b", "c", "bad", "d"].into_iter().map(service).collect();
        pipeline.registry_synced("legacy", RegistrySnapshot::new("legacy", services, vec![]));
        let step = writer.plan(pipeline.index(), start + Duration::from_millis(500));
        assert_eq!(
            step.plan.creates.len(),
            1,
            "the refused object waits in quarantine"
        );
        writer.apply(step).await.unwrap();
        let step = writer.plan(pipeline.index(), start + Duration::from_millis(1500));
        let names = created_names(&step.plan);
        assert_eq!(names, ["legacy.bad"], "once due, it is retried alone");
        assert_eq!(plans.lock().unwrap().clone(), [(4, 0), (1, 0)]);
    }

    #[tokio::test]
    async fn a_quarantined_object_that_comes_due_during_another_pass_is_still_retried() {
        let mut pipeline = legacy_pipeline();
        let plans = Arc::new(Mutex::new(Vec::new()));
        let mut writer = refusing_bad(&pipeline, &plans);
        let services: Vec<Service> = ["a", "bad"].into_iter().map(service).collect();
        pipeline.registry_synced("legacy", RegistrySnapshot::new("legacy", services, vec![]));
        let step = writer.plan(pipeline.index(), Instant::now());
        writer.apply(step).await.unwrap();
        // Another change is planned before `bad` is due, and its pass outlasts the
        // quarantine's first backoff (1 s).
        let services: Vec<Service> = ["a", "bad", "c"].into_iter().map(service).collect();
        pipeline.registry_synced("legacy", RegistrySnapshot::new("legacy", services, vec![]));
        let step = writer.plan(pipeline.index(), Instant::now());
        assert_eq!(step.plan.creates.len(), 1, "only `c`: `bad` is not due yet");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        writer.apply(step).await.unwrap();
        let step = writer.plan(pipeline.index(), Instant::now());
        let names = created_names(&step.plan);
        assert_eq!(
            names,
            ["legacy.bad"],
            "it came due while the other pass ran: tried now"
        );
    }

    #[tokio::test]
    async fn an_object_the_sink_saw_vanish_before_a_plan_is_written_back_by_that_plan() {
        let mut pipeline = legacy_pipeline();
        let plans = Arc::new(Mutex::new(Vec::new()));
        let deleted_behind: Arc<Mutex<Vec<ObjectKey>>> = Default::default();
        let mut writers = vec![pipeline.writer(NamedSink {
            name: "drifting".into(),
            sink: Box::new(Refusing {
                held: BTreeMap::new(),
                refuses: "none",
                plans: Arc::clone(&plans),
                deleted_behind: Arc::clone(&deleted_behind),
            }),
        })];
        let services: Vec<Service> = ["a", "b"].into_iter().map(service).collect();
        pipeline.registry_synced("legacy", RegistrySnapshot::new("legacy", services, vec![]));
        assert!(pipeline.sync(&mut writers).await.written);
        // Someone deletes `a`; the next plan (incremental: the index did not change)
        // learns it from the sink right before planning.
        let a = pipeline.desired().keys().next().unwrap().clone();
        deleted_behind.lock().unwrap().push(a.clone());
        assert!(pipeline.sync(&mut writers).await.written);
        assert_eq!(plans.lock().unwrap().clone(), [(2, 0), (1, 0)]);
        assert!(writers[0].sink.held().contains_key(&a), "written back");
    }
}
