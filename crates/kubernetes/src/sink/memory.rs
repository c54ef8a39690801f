//! What an installation remembers in the cluster, as annotations on a small Lease of its
//! own (`registry-sync-guard-<instance>`), beside the leader election's: the
//! mass-change guard's memory, and the namespaces it has written objects to.
//!
//! A Lease because the replicas already coordinate through Leases (the chart grants
//! get, create and update on them in the release's namespace, and nothing more), and
//! because a standby that takes over must find the peak and the holds its leader
//! judged with: it reads this object at takeover. The namespaces are remembered because
//! the sink watches only the namespaces of its configuration: objects left in a
//! namespace the configuration no longer names (a registry's `namespace` changed,
//! `allowed_namespaces` shrank) would otherwise never be seen again, duplicates with
//! frozen endpoints.

use std::collections::BTreeSet;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{DynamicObject, ListParams, ObjectMeta, PostParams};
use registry_sync_istio::{INSTANCE_LABEL, Kind, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use registry_sync_sinks::SinkError;

use super::{KubeSink, api_resource};

/// The annotation that holds the memory.
pub const GUARD_MEMORY_ANNOTATION: &str = "registry-sync.io/guard-memory";
/// The annotation that lists the namespaces this installation has written objects to.
pub const NAMESPACES_ANNOTATION: &str = "registry-sync.io/namespaces";

/// Where the memory is kept: the Lease's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardStore {
    pub namespace: String,
    pub name: String,
    /// This installation, stamped on the object.
    pub instance: String,
}

impl GuardStore {
    /// The store of installation `instance` in `namespace`.
    pub fn new(namespace: String, instance: &str) -> GuardStore {
        let name: String = format!("registry-sync-guard-{instance}")
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
                _ => '-',
            })
            .take(253)
            .collect();
        GuardStore {
            namespace,
            name: name.trim_end_matches(['-', '.']).to_string(),
            instance: instance.to_string(),
        }
    }
}

fn unavailable(store: &GuardStore, what: &str, e: kube::Error) -> SinkError {
    SinkError::unavailable(
        crate::pacing::unavailability(&e),
        format!(
            "cannot {what} the mass-change guard's memory (Lease {}/{}): {e}; check that the service account may get, create and update leases there",
            store.namespace, store.name
        ),
    )
}

impl KubeSink {
    fn guard_api(&self, store: &GuardStore) -> Api<Lease> {
        Api::namespaced(self.writes.client.clone(), &store.namespace)
    }

    /// One annotation of the installation's Lease; `None` when there is no store, no
    /// Lease or no such annotation.
    pub(super) async fn read_remembered(&self, annotation: &str) -> Result<Option<String>, SinkError> {
        let Some(store) = &self.settings.guard_store else {
            return Ok(None);
        };
        self.writes.limiter.acquire().await;
        let lease = self
            .writes
            .timed(self.guard_api(store).get_opt(&store.name))
            .await
            .map_err(|e| unavailable(store, "read", e))?;
        Ok(lease.and_then(|lease| lease.metadata.annotations.and_then(|mut a| a.remove(annotation))))
    }

    /// Sets one annotation of the installation's Lease, creating the Lease if needed.
    pub(super) async fn remember(&self, annotation: &str, value: &str) -> Result<(), SinkError> {
        let Some(store) = &self.settings.guard_store else {
            return Ok(());
        };
        if !self.writes.is_leader() {
            return Err(SinkError::unavailable(
                registry_sync_sinks::Unavailability::NotLeader,
                "not the leader: the leader keeps what the installation remembers",
            ));
        }
        let api = self.guard_api(store);
        self.writes.limiter.acquire().await;
        let found = self
            .writes
            .timed(api.get_opt(&store.name))
            .await
            .map_err(|e| unavailable(store, "read", e))?;
        let params = PostParams::default();
        self.writes.limiter.acquire().await;
        let written = match found {
            Some(mut lease) => {
                lease
                    .metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(annotation.into(), value.into());
                self.writes.timed(api.replace(&store.name, &params, &lease)).await
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(store.name.clone()),
                        namespace: Some(store.namespace.clone()),
                        labels: Some(
                            [
                                (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
                                (INSTANCE_LABEL.to_string(), store.instance.clone()),
                            ]
                            .into(),
                        ),
                        annotations: Some([(annotation.to_string(), value.to_string())].into()),
                        ..ObjectMeta::default()
                    },
                    spec: None,
                };
                self.writes.timed(api.create(&params, &lease)).await
            }
        };
        written.map(|_| ()).map_err(|e| unavailable(store, "keep", e))
    }

    /// Reads the namespaces this installation wrote to before; those the configuration
    /// no longer names are watched too, when they may be read.
    pub(super) async fn find_extra_namespaces(&mut self) {
        if self.settings.guard_store.is_none() {
            return;
        }
        let remembered = match self.read_remembered(NAMESPACES_ANNOTATION).await {
            Ok(value) => namespaces_of(value.as_deref()),
            Err(e) => {
                tracing::warn!(
                    "{e}; objects left in namespaces the configuration no longer names are not looked for"
                );
                return;
            }
        };
        for namespace in remembered.difference(&self.settings.namespaces) {
            let api: Api<DynamicObject> = Api::namespaced_with(
                self.writes.client.clone(),
                namespace,
                &api_resource(Kind::ServiceEntry),
            );
            self.writes.limiter.acquire().await;
            match self.writes.timed(api.list(&ListParams::default().limit(1))).await {
                Ok(_) => {
                    tracing::info!(%namespace, "this installation wrote objects to a namespace its configuration no longer names: watching it, so what is left there is deleted as `plan` shows");
                    self.extra_namespaces.insert(namespace.clone());
                }
                Err(e) => tracing::warn!(
                    %namespace,
                    "this installation wrote objects to a namespace its configuration no longer names, and may not read it ({e}): what is left there stays; let registry-sync list, watch and delete there until it is gone, or delete it with `kubectl delete serviceentries,workloadentries -n {namespace} -l {INSTANCE_LABEL}={}`",
                    self.settings.guard_store.as_ref().map_or("", |s| s.instance.as_str())
                ),
            }
        }
        self.remembered_namespaces = Some(remembered);
    }

    /// After a pass: the namespaces remembered are those of the configuration and
    /// those not configured that still hold objects of this installation. Written only
    /// when that changes.
    pub(super) async fn remember_namespaces(&mut self) {
        let Some(store) = &self.settings.guard_store else {
            return;
        };
        let instance = store.instance.clone();
        let ours = |namespace: &str| {
            self.view.held.values().any(|h| {
                h.key.namespace == namespace
                    && h.label(MANAGED_BY_LABEL) == Some(MANAGED_BY_VALUE)
                    && h.label(INSTANCE_LABEL) == Some(instance.as_str())
            })
        };
        let mut wanted: BTreeSet<String> = self.settings.namespaces.clone();
        wanted.extend(self.extra_namespaces.iter().filter(|ns| ours(ns)).cloned());
        if self.remembered_namespaces.as_ref() == Some(&wanted) {
            return;
        }
        let value = wanted.iter().cloned().collect::<Vec<_>>().join(",");
        match self.remember(NAMESPACES_ANNOTATION, &value).await {
            Ok(()) => self.remembered_namespaces = Some(wanted),
            Err(e) => tracing::warn!(
                "cannot remember the namespaces written to ({e}); tried again after the next pass"
            ),
        }
    }
}

/// The namespaces an annotation lists.
pub(super) fn namespaces_of(annotation: Option<&str>) -> BTreeSet<String> {
    annotation
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|ns| !ns.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_named_after_the_installation_as_kubernetes_allows() {
        let store = GuardStore::new("ops".into(), "Prod_East");
        assert_eq!(store.name, "registry-sync-guard-prod-east");
        assert_eq!(store.namespace, "ops");
    }
}
