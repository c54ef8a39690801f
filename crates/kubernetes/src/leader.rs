//! Leader election on a `coordination.k8s.io/v1` Lease, so several replicas can run and
//! exactly one writes.
//!
//! The algorithm is client-go's: the holder renews the lease every `retry_period`; a
//! candidate takes the lease over when it has seen no renewal for `lease_duration`
//! (measured on its own clock, from when it observed the record, so clock skew between
//! nodes does not matter); every update carries the resourceVersion read, so two
//! candidates never both win.
//!
//! Written here rather than taken from a crate because the one property that matters
//! for safety must be exact: a leader that cannot renew stops writing *before* its
//! lease can expire for the others. [`Leadership::is_leader`] is true only until the
//! last successful renewal plus `lease_duration` minus a margin, whatever the network
//! does, and the sink checks it before every single write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct LeaderSettings {
    pub namespace: String,
    pub lease_name: String,
    /// This replica's name (the pod name in a cluster).
    pub identity: String,
    pub lease_duration: Duration,
    pub retry_period: Duration,
}

impl LeaderSettings {
    /// Leadership ends this long before the lease could expire for others, to cover a
    /// write already on the wire and scheduling delays.
    fn margin(&self) -> Duration {
        (self.lease_duration / 5).max(Duration::from_millis(200))
    }
}

/// The shared view of whether this replica leads.
#[derive(Clone)]
pub struct Leadership {
    state: Arc<Mutex<Option<Instant>>>,
    changes: watch::Receiver<bool>,
    margin: Duration,
    lease: Duration,
}

impl Leadership {
    /// True while the last renewal is recent enough that no other replica can have
    /// taken over.
    pub fn is_leader(&self) -> bool {
        match self.state.try_lock() {
            Ok(renewed) => renewed.is_some_and(|at| Instant::now() < at + self.lease - self.margin),
            // Being updated right now: the watch value is at most one tick old.
            Err(_) => *self.changes.borrow(),
        }
    }

    /// Changes of leadership, for the run loop (a new leader starts with a full pass).
    pub fn changes(&self) -> watch::Receiver<bool> {
        self.changes.clone()
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Runs the election until `cancel` fires, then releases the lease so a standby takes
/// over at once instead of after the lease duration.
pub fn start(client: Client, settings: LeaderSettings, cancel: CancellationToken) -> Leadership {
    let (tx, rx) = watch::channel(false);
    let state = Arc::new(Mutex::new(None));
    let leadership = Leadership {
        state: state.clone(),
        changes: rx,
        margin: settings.margin(),
        lease: settings.lease_duration,
    };
    let view = leadership.clone();
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
        let mut observed: Option<(String, Instant)> = None;
        let led = AtomicBool::new(false);
        loop {
            let started = Instant::now();
            let renewed = tokio::select! {
                _ = cancel.cancelled() => break,
                // A stalled API server must not hold the round past the margin: the
                // leadership this replica claims expires on its own clock meanwhile.
                renewed = tokio::time::timeout(settings.margin(), try_acquire_or_renew(&api, &settings, &mut observed)) => {
                    renewed.unwrap_or_else(|_| Err(kube::Error::Service(format!("the Lease call took longer than {:?}", settings.margin()).into())))
                }
            };
            {
                let mut guard = state.lock().await;
                match renewed {
                    // Counted from before the request: the server may have recorded the
                    // renewal as early as that.
                    Ok(true) => *guard = Some(started),
                    Ok(false) => *guard = None,
                    Err(e) => tracing::warn!(lease = %settings.lease_name, "leader election: {e}"),
                }
            }
            let leading = view.is_leader();
            if led.swap(leading, Ordering::Relaxed) != leading {
                if leading {
                    tracing::info!(identity = %settings.identity, "became the leader; writing");
                } else {
                    tracing::warn!(identity = %settings.identity, "lost leadership; writes stopped");
                }
                let _ = tx.send(leading);
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(settings.retry_period) => {}
            }
        }
        *state.lock().await = None;
        let _ = tx.send(false);
        if led.load(Ordering::Relaxed) {
            let _ = tokio::time::timeout(settings.margin(), release(&api, &settings)).await;
        }
    });
    leadership
}

/// One round: returns whether this replica holds the lease after it.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    settings: &LeaderSettings,
    observed: &mut Option<(String, Instant)>,
) -> Result<bool, kube::Error> {
    let duration_secs = i32::try_from(settings.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&settings.lease_name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(settings.lease_name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(settings.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    // When the record last changed, on our clock.
    let record = format!("{holder}/{:?}", spec.renew_time);
    let seen_at = match observed {
        Some((previous, at)) if *previous == record => *at,
        _ => {
            *observed = Some((record, Instant::now()));
            Instant::now()
        }
    };
    let held_by_us = holder == settings.identity;
    let lease_duration = Duration::from_secs(
        u64::try_from(spec.lease_duration_seconds.unwrap_or(duration_secs)).unwrap_or(15),
    );
    let expired = holder.is_empty() || Instant::now() > seen_at + lease_duration;
    if !held_by_us && !expired {
        return Ok(false);
    }
    if !held_by_us {
        spec.holder_identity = Some(settings.identity.clone());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(duration_secs);
    spec.renew_time = Some(now());
    // The resourceVersion read travels with the update: a concurrent winner makes it 409.
    match api
        .replace(&settings.lease_name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the lease up on shutdown.
async fn release(api: &Api<Lease>, settings: &LeaderSettings) {
    let Ok(Some(mut lease)) = api.get_opt(&settings.lease_name).await else {
        return;
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = Some(now());
    match api
        .replace(&settings.lease_name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => tracing::info!(lease = %settings.lease_name, "leadership released"),
        Err(e) => tracing::warn!(lease = %settings.lease_name, "could not release the lease: {e}"),
    }
}
