//! What the Kubernetes sink sends: server-side applies and deletes, each behind the
//! rate limiter and leadership, with jittered retries of transient failures, a call
//! timeout, the preconditions the view recorded, and the foreign check before a
//! create (a forced apply would take over an object someone else made). Holds no
//! state of the cluster: the view does.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use registry_sync_istio::{HeldObject, INSTANCE_LABEL, IstioObject, MANAGED_BY_LABEL, ObjectKey};
use registry_sync_plan::Owner;

use super::errors::{WriteError, describe};
use super::fresh::{Fresh, FreshRead};
use super::view::{ServerMeta, to_held};
use super::{FIELD_MANAGER, api_resource};
use crate::leader::Leadership;
use crate::pacing::{RateLimiter, is_retryable, status_code};

/// One write of a plan.
pub(super) enum Write {
    /// An object the sink has not seen: checked for before it is applied.
    Create(Arc<IstioObject>),
    /// An object the sink holds as ours, at the resourceVersion it was planned against.
    Update(Arc<IstioObject>, Option<String>),
    Delete(ObjectKey, Option<String>),
}

impl Write {
    pub(super) fn key(&self) -> ObjectKey {
        match self {
            Write::Create(o) | Write::Update(o, _) => o.key(),
            Write::Delete(k, _) => k.clone(),
        }
    }
}

/// What a write ended in.
pub(super) enum Outcome {
    Written(ObjectKey, Option<(HeldObject, ServerMeta)>),
    Deleted(ObjectKey),
    Failed(ObjectKey, String),
    /// A create found an object that is not ours under the name: not written, and now
    /// held, so the next plan reports the conflict.
    Foreign(ObjectKey, String, Option<(HeldObject, ServerMeta)>),
}

pub(super) struct Writes {
    pub(super) client: Client,
    pub(super) limiter: Arc<RateLimiter>,
    leader: Option<Leadership>,
    /// Attempts per write, the first included.
    attempts: usize,
    call_timeout: Duration,
}

impl Writes {
    pub(super) fn new(
        client: Client,
        settings: &super::KubeSinkSettings,
        leader: Option<Leadership>,
    ) -> Writes {
        Writes {
            client,
            limiter: Arc::new(RateLimiter::new(settings.qps, settings.burst)),
            leader,
            attempts: settings.attempts,
            call_timeout: settings.call_timeout,
        }
    }

    pub(super) fn is_leader(&self) -> bool {
        self.leader.as_ref().is_none_or(Leadership::is_leader)
    }

    pub(super) async fn execute(&self, write: Write, fresh: &FreshRead) -> Outcome {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(self.attempts.saturating_sub(1))
            .with_jitter();
        let key = write.key();
        if let Write::Create(object) = &write {
            let checked = match fresh.of(&key) {
                Fresh::Listed(found) => Ok(found.and_then(|found| self.foreign(object, found, "create"))),
                Fresh::NotListed => self.existing_foreign(object, "create").await,
            };
            match checked {
                Ok(None) => {}
                Ok(Some((reason, found))) => return Outcome::Foreign(key, reason, found),
                Err(e) => return Outcome::Failed(key, describe(&write, &WriteError::Api(e))),
            }
        }
        let attempt = || async {
            self.limiter.acquire().await;
            if !self.is_leader() {
                return Err(WriteError::NotLeader);
            }
            self.timed(self.send(&write)).await.map_err(WriteError::Api)
        };
        let result = attempt
            .retry(backoff)
            .when(|e: &WriteError| matches!(e, WriteError::Api(e) if is_retryable(e)))
            .notify(|e, wait| tracing::debug!(object = %key, "retrying in {wait:?}: {e}"))
            .await;
        // The version planned against is stale: the object changed since, or the watch
        // had not caught up with a write of our own. Read it once: still ours, apply on
        // top of what is there now; someone else's, leave it.
        let result = match (&write, result) {
            (Write::Update(object, _), Err(WriteError::Api(e))) if status_code(&e) == Some(409) => {
                match self.existing_foreign(object, "update").await {
                    Ok(Some((reason, found))) => return Outcome::Foreign(key, reason, found),
                    Ok(None) if !self.is_leader() => Err(WriteError::NotLeader),
                    Ok(None) => {
                        self.limiter.acquire().await;
                        let again = Write::Update(object.clone(), None);
                        self.timed(self.send(&again)).await.map_err(WriteError::Api)
                    }
                    Err(e) => Err(WriteError::Api(e)),
                }
            }
            (_, result) => result,
        };
        match (write, result) {
            (Write::Delete(..), Ok(_)) => Outcome::Deleted(key),
            (_, Ok(object)) => Outcome::Written(key.clone(), object.and_then(|o| to_held(key.kind, &o))),
            (Write::Delete(..), Err(WriteError::Api(e))) if status_code(&e) == Some(404) => {
                Outcome::Deleted(key)
            }
            (write, Err(e)) => Outcome::Failed(key, describe(&write, &e)),
        }
    }

    /// Before a create (rare: creates are new services), and after an update found its
    /// version stale: the object the name stands for on the server, as held, when it is
    /// not ours. The watch may not have shown it yet, and a forced apply would take it
    /// over. Ours is decided as the plan decides it ([`Owner::owns`]).
    pub(super) async fn existing_foreign(
        &self,
        object: &IstioObject,
        verb: &str,
    ) -> Result<Option<(String, Option<(HeldObject, ServerMeta)>)>, kube::Error> {
        self.limiter.acquire().await;
        let key = object.key();
        let found = self.timed(self.api(&key).get_opt(&object.metadata.name)).await?;
        Ok(found.and_then(|found| self.foreign(object, &found, verb)))
    }

    /// `found` (the object `object`'s name stands for on the server), as held, with the
    /// reason it is refused, when it is not ours.
    pub(super) fn foreign(
        &self,
        object: &IstioObject,
        found: &DynamicObject,
        verb: &str,
    ) -> Option<(String, Option<(HeldObject, ServerMeta)>)> {
        let key = object.key();
        let held = to_held(key.kind, found);
        let instance = object
            .metadata
            .labels
            .get(INSTANCE_LABEL)
            .cloned()
            .unwrap_or_default();
        if held.as_ref().is_some_and(|(h, _)| Owner::new(instance).owns(h)) {
            return None;
        }
        let label = |name: &str| found.labels().get(name).cloned().unwrap_or_default();
        let reason = format!(
            "{verb} {key} refused: an object this installation did not write already has the name \
             (managed-by {:?}, instance {:?}); it is left alone and reported as a conflict",
            label(MANAGED_BY_LABEL),
            label(INSTANCE_LABEL),
        );
        Some((reason, held))
    }

    /// One API call under [`super::KubeSinkSettings::call_timeout`]; a call that takes longer
    /// fails as a timeout, which is retried like any transient failure.
    pub(super) async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, kube::Error> {
        let limit = self.call_timeout;
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(kube::Error::Service(
                format!("no answer from the API server within {limit:?}").into(),
            )),
        }
    }

    pub(super) fn api(&self, key: &ObjectKey) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &key.namespace, &api_resource(key.kind))
    }

    pub(super) async fn send(&self, write: &Write) -> Result<Option<DynamicObject>, kube::Error> {
        match write {
            Write::Create(object) | Write::Update(object, _) => {
                let params = PatchParams::apply(FIELD_MANAGER).force();
                let mut body = serde_json::to_value(&**object).map_err(kube::Error::SerdeError)?;
                // The API server refuses the apply (409) if the object moved on since it
                // was planned: the watch brings the new version and the next pass decides.
                if let Write::Update(_, Some(version)) = write
                    && let Some(meta) = body.get_mut("metadata").and_then(|m| m.as_object_mut())
                {
                    meta.insert("resourceVersion".into(), version.clone().into());
                }
                self.api(&object.key())
                    .patch(&object.metadata.name, &params, &Patch::Apply(body))
                    .await
                    .map(Some)
            }
            Write::Delete(key, uid) => {
                let params = DeleteParams {
                    preconditions: uid.clone().map(|uid| Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                self.api(key).delete(&key.name, &params).await.map(|_| None)
            }
        }
    }
}
