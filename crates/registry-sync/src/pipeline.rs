//! The sync pass: catalog → translate → plan → apply, shared by every command.
//!
//! The pipeline owns the catalog (last known state of every registry) and remembers
//! which registries have delivered a complete view. Only those may lose objects to a
//! plan: a registry that never answered, or that is failing now, keeps what it had.

use std::collections::{BTreeMap, BTreeSet};

use registry_sync_catalog::{Catalog, RegistrySnapshot, Skipped};
use registry_sync_istio::{IstioObject, ObjectKey};
use registry_sync_plan::{DeleteScope, Owner, Plan, plan};
use registry_sync_sinks::{ApplyReport, Sink, SinkError};
use registry_sync_translate::{Settings, translate};

use crate::config::Config;

/// What one pass did to one sink.
#[derive(Debug, Default)]
pub struct SinkOutcome {
    pub plan: Plan,
    pub report: ApplyReport,
}

pub struct Pipeline {
    settings: Settings,
    owner: Owner,
    configured: BTreeSet<String>,
    catalog: Catalog,
    /// Registries whose last answer was a complete, successful view.
    complete: BTreeSet<String>,
    /// Problems already logged, so a steady estate does not repeat its warnings.
    reported: BTreeSet<Skipped>,
    desired: BTreeMap<ObjectKey, IstioObject>,
    /// The catalog changed since `desired` was computed.
    stale: bool,
}

impl Pipeline {
    pub fn new(config: &Config) -> Pipeline {
        Pipeline {
            settings: config.translate_settings(),
            owner: Owner::new(config.instance.clone()),
            configured: config.registry_names(),
            catalog: Catalog::default(),
            complete: BTreeSet::new(),
            reported: BTreeSet::new(),
            desired: BTreeMap::new(),
            stale: false,
        }
    }

    /// Takes a registry's complete view. Returns whether anything changed.
    pub fn registry_synced(&mut self, registry: &str, snapshot: RegistrySnapshot) -> bool {
        let newly_complete = self.complete.insert(registry.to_string());
        let changed = self.catalog.update(registry, snapshot);
        self.stale |= changed;
        changed || newly_complete
    }

    /// Marks a registry as failing: its last known services stay, nothing of it is
    /// deleted until it answers again.
    pub fn registry_failed(&mut self, registry: &str) {
        self.complete.remove(registry);
    }

    pub fn is_complete(&self, registry: &str) -> bool {
        self.complete.contains(registry)
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The objects the catalog translates to, recomputed only after a change.
    pub fn desired(&mut self) -> &BTreeMap<ObjectKey, IstioObject> {
        if self.stale {
            let translation = translate(&self.catalog, &self.settings);
            let mut problems: BTreeSet<Skipped> = BTreeSet::new();
            for (_, snapshot) in self.catalog.registries() {
                problems.extend(snapshot.skipped.iter().cloned());
            }
            problems.extend(translation.skipped);
            for skip in problems.difference(&self.reported) {
                tracing::warn!(registry = %skip.registry, service = %skip.service, instance = skip.instance.as_deref().unwrap_or(""), "skipped: {}", skip.reason);
            }
            for note in &translation.notes {
                tracing::debug!(registry = %note.registry, service = %note.service, instance = note.instance.as_deref().unwrap_or(""), "{}", note.reason);
            }
            self.reported = problems;
            self.desired = translation.objects.into_iter().map(|o| (o.key(), o)).collect();
            self.stale = false;
        }
        &self.desired
    }

    pub fn delete_scope(&self) -> DeleteScope {
        DeleteScope {
            complete: self.complete.clone(),
            configured: self.configured.clone(),
        }
    }

    /// The plan for one sink, without applying it.
    pub fn plan_for(&mut self, sink: &dyn Sink) -> Plan {
        let scope = self.delete_scope();
        let owner = self.owner.clone();
        plan(self.desired(), sink.held(), &owner, &scope)
    }

    /// Plans and applies for one sink, logging what happened.
    pub fn sync(&mut self, sink_name: &str, sink: &mut dyn Sink) -> Result<SinkOutcome, SinkError> {
        let plan = self.plan_for(sink);
        for conflict in &plan.conflicts {
            tracing::warn!(sink = sink_name, object = %conflict.key, "conflict, not written: {}", conflict.reason);
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
        let report = sink.apply(&plan)?;
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
}
