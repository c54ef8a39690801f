//! Following Cloud Map: one round per `interval` — list the namespaces and their
//! services, then ask each service whether it changed — and one snapshot after each
//! round that changed something.
//!
//! A round either completes or fails as a whole for what the consumer sees: services
//! read before a failure are kept in the state, but the snapshot waits for a round that
//! completes, so the consumer never sees a half-read registry. Services are removed
//! only when a complete listing no longer names them, or when Cloud Map answers that
//! the service is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{Client, Instances, Namespace, ServiceRef};
use super::{CloudMapConfig, CloudMapError, CloudMapSource};
use crate::SourceEvent;
use crate::emit::{Backoff, Emitter, Stopped};
use crate::state::Services;

/// At most this many calls in flight at once: enough to check a thousand services
/// in well under a second against AWS, few enough to stay clear of its rate limits.
const CONCURRENCY: usize = 16;
/// Every service is read in full at least this often, whatever its revision says:
/// a safety net that costs one call per service per five minutes.
const RESYNC: Duration = Duration::from_secs(300);

/// What is known of one service between rounds.
struct Known {
    namespace: String,
    name: String,
    /// The instances revision of the last full read.
    revision: i64,
    read_at: Instant,
    health_checked: bool,
}

/// What one service's check found.
enum Outcome {
    /// The revision did not move: nothing was read.
    Unchanged,
    Read(Instances),
    /// Cloud Map says the service (or its namespace) does not exist.
    Gone,
}

/// The state of one registry across rounds.
pub(super) struct Poller {
    client: Client,
    config: CloudMapConfig,
    known: BTreeMap<String, Known>,
    state: Services,
    /// Configured namespaces the last listing did not name, so each is logged once.
    missing: BTreeSet<String>,
}

impl Poller {
    pub(super) fn new(registry: &str, client: Client, config: CloudMapConfig) -> Poller {
        Poller {
            client,
            config,
            known: BTreeMap::new(),
            state: Services::new(registry),
            missing: BTreeSet::new(),
        }
    }

    pub(super) fn state(&mut self) -> &mut Services {
        &mut self.state
    }

    /// Lists, checks every listed service and applies what it learnt.
    pub(super) async fn round(&mut self) -> Result<(), CloudMapError> {
        let listing = self.list().await?;
        let listed: BTreeSet<&String> = listing.iter().map(|(key, _, _)| key).collect();
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|key| !listed.contains(key))
            .cloned()
            .collect();
        for key in gone {
            self.forget(&key);
        }

        let now = Instant::now();
        let semaphore = Arc::new(Semaphore::new(CONCURRENCY));
        let mut checks = JoinSet::new();
        for (key, namespace, service) in listing {
            let known = self
                .known
                .get(&key)
                .filter(|k| !k.health_checked && !service.health_checked)
                .filter(|k| now.duration_since(k.read_at) < RESYNC)
                .map(|k| k.revision);
            let client = self.client.clone();
            let semaphore = Arc::clone(&semaphore);
            checks.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                let outcome = check(&client, &namespace, &service.name, known).await;
                (key, namespace, service, outcome)
            });
        }

        let mut first_error = None;
        let (mut checked, mut failed) = (0usize, 0usize);
        // A check that panicked or was cancelled fails the round: its service would be
        // neither read nor known to be unreadable.
        let registry = self.client.registry().to_string();
        for (key, namespace, service, outcome) in
            crate::join_reads(&registry, "reading a service's instances", checks).await?
        {
            checked += 1;
            if outcome.is_ok() {
                self.state.clear_unknown(&key);
            }
            match outcome {
                Ok(Outcome::Unchanged) => {}
                Ok(Outcome::Read(instances)) => {
                    self.state.replace_scoped_service(
                        &key,
                        Some(&namespace.name),
                        &service.name,
                        instances.items,
                    );
                    self.known.insert(
                        key,
                        Known {
                            namespace: namespace.name,
                            name: service.name,
                            revision: instances.revision,
                            read_at: Instant::now(),
                            health_checked: service.health_checked,
                        },
                    );
                }
                Ok(Outcome::Gone) => self.forget(&key),
                // One service that cannot be read keeps its last state (or, never read,
                // is unknown, so nothing of it is deleted); the others move on.
                Err(error) => {
                    failed += 1;
                    if !self.known.contains_key(&key) {
                        self.state.mark_unknown(
                            &key,
                            registry_sync_catalog::ServiceKey {
                                namespace: Some(namespace.name.clone()),
                                name: service.name.clone(),
                            },
                        );
                    }
                    tracing::warn!("{error}; keeping the last known state of {key}, the others sync on");
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) if failed == checked => Err(error),
            _ => Ok(()),
        }
    }

    fn forget(&mut self, key: &str) {
        if let Some(known) = self.known.remove(key) {
            tracing::debug!(
                registry = %self.client.registry(),
                namespace = %known.namespace,
                service = %known.name,
                "service gone"
            );
        }
        self.state.remove_service(key);
    }

    /// Every selected service of every selected namespace: `(key, namespace, service)`.
    async fn list(&mut self) -> Result<Vec<(String, Namespace, ServiceRef)>, CloudMapError> {
        let namespaces = self.client.namespaces().await?;
        let names: BTreeSet<&str> = namespaces.iter().map(|n| n.name.as_str()).collect();
        for wanted in &self.config.namespaces {
            if !names.contains(wanted.as_str()) {
                if self.missing.insert(wanted.clone()) {
                    tracing::warn!(
                        registry = %self.client.registry(),
                        namespace = %wanted,
                        "Cloud Map has no namespace of this name in the region; check `namespaces` and `region`"
                    );
                }
            } else {
                self.missing.remove(wanted);
            }
        }
        let mut listing = Vec::new();
        for namespace in namespaces {
            if !self.config.selects_namespace(&namespace.name) {
                continue;
            }
            for service in self.client.services(&namespace).await? {
                if self.config.selects_service(&service.name) {
                    let key = format!("{}/{}", namespace.name, service.name);
                    listing.push((key, namespace.clone(), service));
                }
            }
        }
        Ok(listing)
    }
}

/// Reads a service in full, or only its revision when the last read is still good.
async fn check(
    client: &Client,
    namespace: &Namespace,
    service: &str,
    known: Option<i64>,
) -> Result<Outcome, CloudMapError> {
    if let Some(known) = known {
        match client.revision(namespace, service).await? {
            None => return Ok(Outcome::Gone),
            Some(revision) if revision == known => return Ok(Outcome::Unchanged),
            Some(_) => {}
        }
    }
    Ok(match client.instances(namespace, service).await? {
        Some(instances) => Outcome::Read(instances),
        None => Outcome::Gone,
    })
}

pub(super) async fn run(source: CloudMapSource, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
    let mut emitter = Emitter::new(&source.registry, tx, cancel);
    let _ = follow(source, &mut emitter).await;
}

async fn follow(source: CloudMapSource, emitter: &mut Emitter) -> Result<(), Stopped> {
    let mut backoff = Backoff::paced();
    let cancel = emitter.cancel().clone();
    let client = loop {
        let built = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(Stopped),
            built = Client::new(&source.registry, &source.config, source.test_credentials) => built,
        };
        match built {
            Ok(client) => break client,
            Err(error) => {
                emitter.failed(crate::SourceFailure::of(&error)).await?;
                emitter.sleep(backoff.next_delay()).await?;
            }
        }
    };
    backoff.reset();
    let interval = source.config.interval;
    let mut poller = Poller::new(&source.registry, client, source.config);
    loop {
        let result = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(Stopped),
            result = poller.round() => result,
        };
        match result {
            Ok(()) => {
                backoff.reset();
                emitter.snapshot(poller.state()).await?;
                emitter.sleep(interval).await?;
            }
            Err(error) => {
                // Throttling, an outage or a refusal alike: keep the state, report
                // once, and ask again later — never sooner than the interval.
                emitter.failed(crate::SourceFailure::of(&error)).await?;
                emitter.sleep(backoff.next_delay().max(interval)).await?;
            }
        }
    }
}
