//! The mass-change guard's memory in the cluster: an annotation on a small Lease of the
//! installation's own (`registry-sync-guard-<instance>`), beside the leader election's.
//!
//! A Lease because the replicas already coordinate through Leases (the chart grants
//! get, create and update on them in the release's namespace, and nothing more), and
//! because a standby that takes over must find the peak and the holds its leader
//! judged with: it reads this object at takeover.

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use registry_sync_istio::{INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use registry_sync_sinks::SinkError;

use super::KubeSink;

/// The annotation that holds the memory.
pub const GUARD_MEMORY_ANNOTATION: &str = "registry-sync.io/guard-memory";

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
    SinkError::Unavailable(format!(
        "cannot {what} the mass-change guard's memory (Lease {}/{}): {e}; check that the service account may get, create and update leases there",
        store.namespace, store.name
    ))
}

impl KubeSink {
    fn guard_api(&self, store: &GuardStore) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &store.namespace)
    }

    pub(super) async fn read_guard_memory(&self) -> Result<Option<String>, SinkError> {
        let Some(store) = &self.settings.guard_store else {
            return Ok(None);
        };
        self.limiter.acquire().await;
        let lease = self
            .timed(self.guard_api(store).get_opt(&store.name))
            .await
            .map_err(|e| unavailable(store, "read", e))?;
        Ok(lease.and_then(|lease| {
            lease
                .metadata
                .annotations
                .and_then(|mut a| a.remove(GUARD_MEMORY_ANNOTATION))
        }))
    }

    pub(super) async fn write_guard_memory(&self, memory: &str) -> Result<(), SinkError> {
        let Some(store) = &self.settings.guard_store else {
            return Ok(());
        };
        if !self.is_leader() {
            return Err(SinkError::Unavailable(
                "not the leader: the leader keeps the guard's memory".into(),
            ));
        }
        let api = self.guard_api(store);
        self.limiter.acquire().await;
        let found = self
            .timed(api.get_opt(&store.name))
            .await
            .map_err(|e| unavailable(store, "read", e))?;
        let params = PostParams::default();
        self.limiter.acquire().await;
        let written = match found {
            Some(mut lease) => {
                lease
                    .metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(GUARD_MEMORY_ANNOTATION.into(), memory.into());
                self.timed(api.replace(&store.name, &params, &lease)).await
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
                        annotations: Some([(GUARD_MEMORY_ANNOTATION.to_string(), memory.to_string())].into()),
                        ..ObjectMeta::default()
                    },
                    spec: None,
                };
                self.timed(api.create(&params, &lease)).await
            }
        };
        written.map(|_| ()).map_err(|e| unavailable(store, "keep", e))
    }
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
