//! The sync pass: catalog → translate → plan → apply, shared by every command.
//!
//! The pipeline keeps the last known view of every registry inside an incremental
//! translation [`Index`], and remembers which registries have delivered a complete
//! view. Only those may lose objects to a plan: a registry that never answered, or
//! that is failing now, keeps what it had.
//!
//! A pass after a change plans only the objects that change touched, so one changed
//! instance in a large estate costs one object's work, not the estate's. A full plan
//! (every desired and held object) runs on the first pass, when a registry becomes
//! complete (its leftovers may now be deleted), and after any failed write.

use std::collections::{BTreeMap, BTreeSet};

use registry_sync_catalog::{RegistrySnapshot, Skipped};
use registry_sync_istio::{Desired, ObjectKey};
use registry_sync_plan::{DeleteScope, MassChangeGuard, Owner, Plan, plan, plan_keys};
use registry_sync_sinks::{ApplyReport, AsyncSink, SinkError};
use registry_sync_translate::Index;

use crate::config::Config;
use crate::metrics::Metrics;

/// A sink with a name for logs and messages.
pub struct NamedSink {
    pub name: String,
    pub sink: Box<dyn AsyncSink>,
}

/// What one pass did, over every sink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassOutcome {
    /// Every planned write succeeded.
    pub written: bool,
    /// The mass-change guard held changes back on some sink.
    pub held_back: bool,
}

/// What one pass did to one sink.
#[derive(Debug, Default)]
pub struct SinkOutcome {
    pub plan: Plan,
    pub report: ApplyReport,
}

pub struct Pipeline {
    index: Index,
    owner: Owner,
    configured: BTreeSet<String>,
    /// Registries whose last answer was a complete, successful view.
    complete: BTreeSet<String>,
    /// Registries that delivered a complete view at least once since start.
    delivered: BTreeSet<String>,
    /// What each registry's source refused last time, to log only what is new.
    source_skipped: BTreeMap<String, Vec<Skipped>>,
    /// Objects changed since the last successful pass.
    pending: BTreeSet<ObjectKey>,
    /// The next pass must look at every object, not only `pending`.
    full_next: bool,
    /// Percent of a registry's objects or endpoints that may go within the guard's
    /// window; `None` when confirmed.
    mass_delete_guard: Option<u32>,
    guard_window: std::time::Duration,
    /// One mass-change guard per sink (by name): each judges what its own sink holds.
    guards: BTreeMap<String, MassChangeGuard>,
    prune_orphans: bool,
    /// Per registry, its services (`registry:service`) whose state its latest view could
    /// not read: their objects stay as the sinks hold them.
    unknown: BTreeMap<String, BTreeSet<String>>,
    metrics: Option<Metrics>,
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
            index: Index::new(config.translate_settings()),
            owner: Owner::new(config.instance.clone()),
            configured: config.registry_names(),
            complete: BTreeSet::new(),
            delivered: BTreeSet::new(),
            source_skipped: BTreeMap::new(),
            pending: BTreeSet::new(),
            full_next: true,
            mass_delete_guard: (!config.safety.confirm_mass_delete)
                .then(|| (config.safety.max_delete_share * 100.0).round() as u32),
            guard_window: config.safety.guard_window,
            guards: BTreeMap::new(),
            prune_orphans: false,
            unknown: Default::default(),
            metrics: None,
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
        self.prune_orphans = true;
        self
    }

    /// Takes a registry's complete view. Returns whether a pass has anything to do.
    pub fn registry_synced(&mut self, registry: &str, snapshot: RegistrySnapshot) -> bool {
        let newly_complete = self.complete.insert(registry.to_string());
        self.delivered.insert(registry.to_string());
        let seen = self.source_skipped.remove(registry).unwrap_or_default();
        let new_skips: Vec<Skipped> = snapshot
            .skipped
            .iter()
            .filter(|s| !seen.contains(s))
            .cloned()
            .collect();
        new_skips.iter().for_each(log_problem);
        if let Some(metrics) = &self.metrics {
            metrics.registry_synced(
                registry,
                snapshot.services().len(),
                snapshot.instance_count(),
                &new_skips,
            );
        }
        let unknown: BTreeSet<String> = snapshot
            .unknown
            .iter()
            .map(|key| format!("{registry}:{key}"))
            .collect();
        for key in &unknown {
            tracing::debug!(%registry, service = %key, "service could not be read; its objects stay as they are");
        }
        // Objects kept for a service that is readable again may now be written.
        let recovered = self
            .unknown
            .get(registry)
            .is_some_and(|previous| previous.iter().any(|k| !unknown.contains(k)));
        self.unknown.insert(registry.to_string(), unknown);
        let changes = self.index.update(registry, &snapshot);
        self.source_skipped.insert(registry.to_string(), snapshot.skipped);
        changes.new_problems.iter().for_each(log_problem);
        if let Some(metrics) = &self.metrics {
            changes.new_problems.iter().for_each(|skip| metrics.skip(skip));
        }
        for note in &changes.notes {
            tracing::debug!(registry = %note.registry, service = %note.service, instance = note.instance.as_deref().unwrap_or(""), "{}", note.reason);
        }
        let changed = !changes.objects.is_empty();
        self.pending.extend(changes.objects);
        if newly_complete || recovered {
            self.full_next = true;
        }
        changed || newly_complete || recovered
    }

    /// Marks a registry as failing: its last known services stay, nothing of it is
    /// deleted until it answers again.
    pub fn registry_failed(&mut self, registry: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.registry_failed(registry);
        }
        self.complete.remove(registry);
    }

    /// Every configured registry has delivered a complete view.
    pub fn all_registries_complete(&self) -> bool {
        self.configured.is_subset(&self.complete)
    }

    pub fn desired(&self) -> &Desired {
        self.index.desired()
    }

    fn delete_scope(&self) -> DeleteScope {
        DeleteScope {
            complete: self.complete.clone(),
            delivered: self.delivered.clone(),
            configured: self.configured.clone(),
            prune_orphans: self.prune_orphans,
            unknown: self.unknown.values().flatten().cloned().collect(),
        }
    }

    fn new_guard(&self) -> Option<MassChangeGuard> {
        self.mass_delete_guard
            .map(|percent| MassChangeGuard::new(percent, self.guard_window))
    }

    /// The full plan for one sink, without applying it; the guard judges it as a fresh
    /// start would (against what the sink holds now).
    pub fn plan_for(&self, sink: &dyn AsyncSink) -> Plan {
        let mut plan = plan(
            self.index.desired(),
            sink.held(),
            &self.owner,
            &self.delete_scope(),
        );
        if let Some(mut guard) = self.new_guard() {
            guard.hold(&mut plan, sink.held(), &self.owner, std::time::Instant::now());
        }
        plan
    }

    /// Plans and applies for every sink. Returns whether every write succeeded; if not,
    /// the next pass is a full one, which retries exactly what is still different.
    /// Makes the next pass a full one (a new leader, a periodic resync).
    pub fn request_full_pass(&mut self) {
        self.full_next = true;
    }

    pub async fn sync(&mut self, sinks: &mut [NamedSink]) -> PassOutcome {
        let scope = self.delete_scope();
        let mut outcome = PassOutcome {
            written: true,
            held_back: false,
        };
        // Held-back keys are judged again on the next pass: the hold lasts while the
        // registry's view stays too small, not one pass.
        let mut still_pending: BTreeSet<ObjectKey> = BTreeSet::new();
        let mut sink_failed = false;
        for named in sinks.iter_mut() {
            named.sink.refresh().await;
            let mut plan = if self.full_next {
                plan(self.index.desired(), named.sink.held(), &self.owner, &scope)
            } else {
                plan_keys(
                    &self.pending,
                    self.index.desired(),
                    named.sink.held(),
                    &self.owner,
                    &scope,
                )
            };
            if let Some(percent) = self.mass_delete_guard {
                let window = self.guard_window;
                self.guards
                    .entry(named.name.clone())
                    .or_insert_with(|| MassChangeGuard::new(percent, window))
                    .hold(
                        &mut plan,
                        named.sink.held(),
                        &self.owner,
                        std::time::Instant::now(),
                    );
            }
            for held_back in &plan.held_back {
                still_pending.extend(held_back.keys.iter().cloned());
                outcome.held_back = true;
            }
            if let Some(metrics) = &self.metrics {
                metrics.held_back(&named.name, &plan.held_back);
            }
            match apply(&named.name, named.sink.as_mut(), plan).await {
                Ok(applied) => {
                    if let Some(metrics) = &self.metrics {
                        metrics.applied(&named.name, &applied.plan, &applied.report);
                    }
                    outcome.written &= applied.report.is_complete();
                    // A refused object is retried on its own: one object the API server
                    // keeps refusing must not turn every later pass into a full one.
                    still_pending.extend(applied.report.failed.iter().map(|(key, _)| key.clone()));
                }
                Err(e) => {
                    tracing::error!(sink = %named.name, "{e}");
                    outcome.written = false;
                    sink_failed = true;
                }
            }
        }
        self.pending = still_pending;
        // A sink that could not be used at all may have missed anything.
        self.full_next = sink_failed;
        outcome
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
        failed = report.failed.len(),
        unchanged = plan.unchanged,
        conflicts = plan.conflicts.len(),
        "applied"
    );
    Ok(SinkOutcome { plan, report })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use registry_sync_catalog::{Address, Instance, InstancePort, RegistrySnapshot, Service};
    use registry_sync_istio::HeldObject;
    use registry_sync_sinks::{BoxFuture, SinkError};

    use super::*;

    /// Holds what it is given, refuses one object by name, and records the plans.
    struct Refusing {
        held: BTreeMap<ObjectKey, HeldObject>,
        refuses: &'static str,
        plans: Arc<Mutex<Vec<(usize, usize)>>>,
    }

    impl AsyncSink for Refusing {
        fn refresh(&mut self) -> BoxFuture<'_, ()> {
            Box::pin(std::future::ready(()))
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
        Service {
            name: name.into(),
            namespace: None,
            labels: Default::default(),
            instances: vec![Instance {
                id: "1".into(),
                address: Address::parse("10.0.0.1").unwrap(),
                ports: vec![InstancePort {
                    name: "http".into(),
                    number: 8080,
                    protocol_hint: None,
                }],
                healthy: true,
                weight: None,
                locality: None,
                network: None,
                service_account: None,
                labels: Default::default(),
            }],
        }
    }

    #[tokio::test]
    async fn a_refused_object_is_retried_alone_not_with_a_full_pass() {
        let config = Config::parse(
            Path::new("sync.yaml"),
            "registries:\n  - {name: legacy, kind: file, path: s.yaml, namespace: mesh}\n",
        )
        .unwrap();
        let mut pipeline = Pipeline::new(&config);
        let plans = Arc::new(Mutex::new(Vec::new()));
        let mut sinks = vec![NamedSink {
            name: "refusing".into(),
            sink: Box::new(Refusing {
                held: BTreeMap::new(),
                refuses: "bad",
                plans: Arc::clone(&plans),
            }),
        }];
        let services: Vec<Service> = ["a", "b", "c", "bad"].into_iter().map(service).collect();
        pipeline.registry_synced("legacy", RegistrySnapshot::new("legacy", services, vec![]));
        assert!(!pipeline.sync(&mut sinks).await.written);
        assert!(!pipeline.sync(&mut sinks).await.written);
        let plans = plans.lock().unwrap().clone();
        assert_eq!(plans[0], (4, 0), "the first pass creates all four");
        assert_eq!(
            plans[1],
            (1, 0),
            "the retry plans the refused object only: {plans:?}"
        );
    }
}
