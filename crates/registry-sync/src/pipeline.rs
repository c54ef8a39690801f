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
use registry_sync_plan::{DeleteScope, Owner, Plan, plan, plan_keys};
use registry_sync_sinks::{ApplyReport, AsyncSink, SinkError};
use registry_sync_translate::Index;

use crate::config::Config;
use crate::metrics::Metrics;

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

pub struct Pipeline {
    index: Index,
    owner: Owner,
    configured: BTreeSet<String>,
    /// Registries whose last answer was a complete, successful view.
    complete: BTreeSet<String>,
    /// What each registry's source refused last time, to log only what is new.
    source_skipped: BTreeMap<String, Vec<Skipped>>,
    /// Objects changed since the last successful pass.
    pending: BTreeSet<ObjectKey>,
    /// The next pass must look at every object, not only `pending`.
    full_next: bool,
    /// Percent of a registry's objects one pass may delete; `None` when confirmed.
    mass_delete_guard: Option<u32>,
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
            source_skipped: BTreeMap::new(),
            pending: BTreeSet::new(),
            full_next: true,
            mass_delete_guard: (!config.safety.confirm_mass_delete)
                .then(|| (config.safety.max_delete_share * 100.0).round() as u32),
            metrics: None,
        }
    }

    /// Reports to `metrics` from now on.
    pub fn with_metrics(mut self, metrics: Metrics) -> Pipeline {
        self.metrics = Some(metrics);
        self
    }

    /// Takes a registry's complete view. Returns whether a pass has anything to do.
    pub fn registry_synced(&mut self, registry: &str, snapshot: RegistrySnapshot) -> bool {
        let newly_complete = self.complete.insert(registry.to_string());
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
        if newly_complete {
            self.full_next = true;
        }
        changed || newly_complete
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
            configured: self.configured.clone(),
            mass_delete_guard: self.mass_delete_guard,
        }
    }

    /// The full plan for one sink, without applying it.
    pub fn plan_for(&self, sink: &dyn AsyncSink) -> Plan {
        plan(
            self.index.desired(),
            sink.held(),
            &self.owner,
            &self.delete_scope(),
        )
    }

    /// Plans and applies for every sink. Returns whether every write succeeded; if not,
    /// the next pass is a full one, which retries exactly what is still different.
    /// Makes the next pass a full one (a new leader, a periodic resync).
    pub fn request_full_pass(&mut self) {
        self.full_next = true;
    }

    pub async fn sync(&mut self, sinks: &mut [NamedSink]) -> bool {
        let scope = self.delete_scope();
        let mut ok = true;
        for named in sinks.iter_mut() {
            named.sink.refresh().await;
            let plan = if self.full_next {
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
            match apply(&named.name, named.sink.as_mut(), plan).await {
                Ok(outcome) => {
                    if let Some(metrics) = &self.metrics {
                        metrics.applied(&named.name, &outcome.plan, &outcome.report);
                    }
                    ok &= outcome.report.is_complete();
                }
                Err(e) => {
                    tracing::error!(sink = %named.name, "{e}");
                    ok = false;
                }
            }
        }
        self.pending.clear();
        self.full_next = !ok;
        ok
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
            deletions = held_back.keys.len(),
            objects = held_back.owned,
            "mass deletion held back: the registry's latest view would delete more than the allowed share of its objects; if this is intended, restart with --confirm-mass-delete (or `safety: {{confirm_mass_delete: true}}`)"
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
