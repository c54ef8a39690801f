//! Health kept in status: a WorkloadEntry's `Healthy` condition set through the status
//! subresource, so an instance that flaps costs a status patch, never a rewrite of the
//! object (which every proxy of the mesh would receive).
//!
//! The conditions are one atomic list in the CRD schema: a server-side apply of ours
//! would own the whole list and drop the conditions istiod or others wrote. So the
//! status is read, our condition replaced in it (the others kept as they are), and
//! written back as a merge patch that carries the resource version read: a status
//! written by someone in between makes the API server refuse it (409), and it is read
//! again.

use std::collections::BTreeSet;

use futures::StreamExt;
use kube::api::{DynamicObject, Patch, PatchParams};
use registry_sync_istio::{
    CONTENT_HASH_ANNOTATION, HEALTH_CHECKS_ANNOTATION, HEALTHY_CONDITION, IstioObject, ObjectKey,
};
use registry_sync_plan::{Plan, StatusChange};
use registry_sync_sinks::ApplyReport;
use serde_json::{Value, json};

use super::fresh::FreshRead;
use super::{KubeSink, Outcome, Write};
use crate::pacing::status_code;

/// Reads and writes of one change before giving up until the next pass.
const ATTEMPTS: usize = 3;

/// The conditions with ours set: its transition time kept when the status is the same
/// (a probe, not a transition), every other condition untouched and in place.
fn merged_conditions(current: Option<&Value>, healthy: bool, now: &str) -> Vec<Value> {
    let status = if healthy { "True" } else { "False" };
    let mut conditions: Vec<Value> = current
        .and_then(|c| c.get("conditions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ours = conditions
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some(HEALTHY_CONDITION));
    let transition = ours
        .map(|at| &conditions[at])
        .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| now.into());
    let condition = json!({
        "type": HEALTHY_CONDITION,
        "status": status,
        "lastProbeTime": now,
        "lastTransitionTime": transition,
        "reason": if healthy { "RegistryHealthy" } else { "RegistryUnhealthy" },
        "message": if healthy {
            "the registry reports the instance healthy"
        } else {
            "the registry reports the instance unhealthy or out of rotation"
        },
    });
    match ours {
        Some(at) => conditions[at] = condition,
        None => conditions.push(condition),
    }
    conditions
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A new WorkloadEntry of a healthy instance as first created: without health checks,
/// which istiod would take for unhealthy until the condition is set, and without the
/// content hash, so that a pass cut short before it is written whole rewrites it.
pub(super) fn without_health_checks(object: &IstioObject) -> IstioObject {
    let mut first = object.clone();
    first.metadata.annotations.remove(HEALTH_CHECKS_ANNOTATION);
    first.metadata.annotations.remove(CONTENT_HASH_ANNOTATION);
    first
}

impl KubeSink {
    /// Sets the conditions of `changes`, a few at a time, and counts them in `report`.
    pub(super) async fn set_conditions(&mut self, changes: Vec<&StatusChange>, report: &mut ApplyReport) {
        let concurrency = self.settings.concurrency.max(1);
        let sink = &*self;
        let pending: Vec<_> = changes
            .into_iter()
            .map(|change| sink.set_health(change))
            .collect();
        let set: Vec<_> = futures::stream::iter(pending)
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for (change, result) in set {
            match result {
                Ok(written) => {
                    report.status += 1;
                    let held = super::view::to_held(change.key.kind, &written);
                    self.view.took(change.key.clone(), held);
                }
                Err(message) => report.failed.push((change.key.clone(), message)),
            }
        }
    }

    /// The new entries created without health checks, written whole now that their
    /// condition says they serve.
    pub(super) async fn write_staged_whole(
        &mut self,
        plan: &Plan,
        staged: &BTreeSet<ObjectKey>,
        fresh: &FreshRead,
        report: &mut ApplyReport,
    ) {
        let concurrency = self.settings.concurrency.max(1);
        let failed: BTreeSet<ObjectKey> = report.failed.iter().map(|(k, _)| k.clone()).collect();
        let whole: Vec<Write> = plan
            .creates
            .iter()
            .filter(|o| {
                staged.contains(&o.key())
                    && !failed.contains(&o.key())
                    && self.view.held.contains_key(&o.key())
            })
            .map(|o| Write::Update(o.clone(), self.view.version_of(&o.key())))
            .collect();
        let outcomes: Vec<Outcome> = futures::stream::iter(whole)
            .map(|write| self.writes.execute(write, fresh))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                Outcome::Written(key, written) => self.view.took(key, written),
                Outcome::Deleted(_) => {}
                Outcome::Foreign(key, reason, _) | Outcome::Failed(key, reason) => {
                    report.failed.push((key, reason))
                }
            }
        }
    }

    /// Sets one object's `Healthy` condition; the object as the API server returned it.
    pub(super) async fn set_health<'c>(
        &self,
        change: &'c StatusChange,
    ) -> (&'c StatusChange, Result<DynamicObject, String>) {
        (change, self.try_set_health(change).await)
    }

    async fn try_set_health(&self, change: &StatusChange) -> Result<DynamicObject, String> {
        let key = &change.key;
        let api = self.writes.api(key);
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            if !self.writes.is_leader() {
                return Err(failed(
                    key,
                    "leadership lost; writes stopped",
                    "another replica leads now",
                ));
            }
            self.writes.limiter.acquire().await;
            let current = self
                .writes
                .timed(api.get_status(&key.name))
                .await
                .map_err(|e| failed(key, &e.to_string(), hint(&e)))?;
            let conditions = merged_conditions(current.data.get("status"), change.healthy, &now_rfc3339());
            let patch = json!({
                "metadata": {"resourceVersion": current.metadata.resource_version},
                "status": {"conditions": conditions},
            });
            self.writes.limiter.acquire().await;
            match self
                .writes
                .timed(api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch)))
                .await
            {
                Ok(written) => return Ok(written),
                Err(e) if status_code(&e) == Some(409) => last = e.to_string(),
                Err(e) => return Err(failed(key, &e.to_string(), hint(&e))),
            }
        }
        Err(failed(
            key,
            &last,
            "the status changed under every attempt; it is set again on the next pass",
        ))
    }
}

fn failed(key: &ObjectKey, error: &str, hint: &str) -> String {
    format!("setting the Healthy condition of {key} failed: {error}; {hint}")
}

fn hint(error: &kube::Error) -> &'static str {
    match status_code(error) {
        Some(403) => "grant registry-sync get and patch on workloadentries/status in this namespace (RBAC)",
        Some(404) => "the WorkloadEntry is gone; the next pass writes it again",
        _ => "check the connection to the API server; it is tried again on the next pass",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_condition_replaces_its_old_self_and_leaves_the_others_in_place() {
        let current = json!({"conditions": [
            {"type": "Healthy", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Reconciled", "status": "True", "reason": "istiod"},
        ]});
        let flipped = merged_conditions(Some(&current), false, "2026-02-02T00:00:00Z");
        assert_eq!(flipped.len(), 2);
        assert_eq!(flipped[0]["status"], "False");
        assert_eq!(flipped[0]["lastTransitionTime"], "2026-02-02T00:00:00Z");
        assert_eq!(flipped[1], current["conditions"][1], "istiod's own is untouched");

        let same = merged_conditions(Some(&current), true, "2026-02-02T00:00:00Z");
        assert_eq!(
            same[0]["lastTransitionTime"], "2026-01-01T00:00:00Z",
            "no transition"
        );
        assert_eq!(same[0]["lastProbeTime"], "2026-02-02T00:00:00Z");
    }

    #[test]
    fn a_status_without_conditions_gets_ours_alone() {
        let conditions = merged_conditions(None, true, "2026-02-02T00:00:00Z");
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0]["type"], "Healthy");
        assert_eq!(conditions[0]["status"], "True");
    }
}
