//! Following Nacos: one coordinator owns the state, lists the services every
//! `interval`, and re-reads a service when its subscription pushes.
//!
//! Pushes that arrive together are read together and cost one snapshot, so the first
//! change of a burst goes out at once. The first snapshot waits until every listed
//! service has been read, so a consumer never sees a half-listed registry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use nacos_sdk::api::naming::{NamingChangeEvent, NamingEventListener, ServiceInstance};
use registry_sync_catalog::ServiceKey;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::parse::{self, ServiceName};
use super::{NacosError, NacosSource, READ_CONCURRENCY};
use crate::SourceEvent;
use crate::emit::{Backoff, Emitter, Stopped};
use crate::state::{Item, Services};

/// Turns the SDK's notifications into service names for the coordinator.
struct Listener {
    tx: mpsc::UnboundedSender<ServiceName>,
}

impl NamingEventListener for Listener {
    fn event(&self, event: Arc<NamingChangeEvent>) {
        let _ = self
            .tx
            .send(ServiceName::parse(&event.group_name, &event.service_name));
    }
}

/// A service's instances as state items; a second instance with the same id keeps its
/// own item so that building the service reports it.
pub(super) fn items(
    registry: &str,
    service: &ServiceName,
    instances: &[ServiceInstance],
) -> BTreeMap<String, Item> {
    let mut items = BTreeMap::new();
    for instance in instances {
        let (key, item) = parse::instance(registry, service, instance);
        let mut unique = key.clone();
        let mut n = 1;
        while items.contains_key(&unique) {
            n += 1;
            unique = format!("{key}#{n}");
        }
        items.insert(unique, item);
    }
    items
}

/// Reads the instances of `services`, a bounded number at a time, subscribing each one
/// first when a listener is given (so no change falls between the read and the
/// subscription). The first failure ends the read.
/// What reading a set of services gave: the services read, and those that failed.
pub(super) struct Read {
    pub ok: Vec<(ServiceName, Vec<ServiceInstance>)>,
    pub failed: Vec<(ServiceName, NacosError)>,
}

impl Read {
    /// One service failing is that service's problem; every one failing is Nacos's.
    pub(super) fn or_all_failed(mut self) -> Result<Read, NacosError> {
        if self.ok.is_empty() && !self.failed.is_empty() {
            return Err(self.failed.swap_remove(0).1);
        }
        Ok(self)
    }
}

pub(super) async fn read(
    client: &Client,
    services: Vec<ServiceName>,
    listener: Option<&Arc<dyn NamingEventListener>>,
) -> Result<Read, NacosError> {
    let semaphore = Arc::new(Semaphore::new(READ_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for service in services {
        let client = client.clone();
        let semaphore = Arc::clone(&semaphore);
        let listener = listener.cloned();
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let result = async {
                if let Some(listener) = listener {
                    client.subscribe(&service, listener).await?;
                }
                client.instances(&service).await
            }
            .await;
            (service, result)
        });
    }
    let mut read = Read {
        ok: Vec::new(),
        failed: Vec::new(),
    };
    // A read that panicked or was cancelled is no answer about its service: skipping it
    // would drop the service from the listing, and `once` would delete it.
    for (service, result) in
        crate::join_reads(client.registry(), "reading a service's instances", tasks).await?
    {
        match result {
            Ok(instances) => read.ok.push((service, instances)),
            Err(error) => read.failed.push((service, error)),
        }
    }
    read.or_all_failed()
}

/// Applies what a read gave to the state: services read replace theirs; a service that
/// failed keeps its last state or, never read, is marked unknown.
pub(super) fn apply_read(registry: &str, state: &mut Services, read: Read) -> Vec<ServiceName> {
    for (service, instances) in read.ok {
        let items = items(registry, &service, &instances);
        state.clear_unknown(&service.key());
        state.replace_scoped_service(&service.key(), service.namespace(), &service.name, items);
    }
    let mut failed = Vec::new();
    for (service, error) in read.failed {
        tracing::warn!(
            "{error}; keeping the last known state of {}, the others sync on",
            service.key()
        );
        state.mark_unknown(
            &service.key(),
            ServiceKey {
                namespace: service.namespace().map(str::to_string),
                name: service.name.clone(),
            },
        );
        failed.push(service);
    }
    failed
}

struct Watch {
    source: NacosSource,
    client: Client,
    listener: Arc<dyn NamingEventListener>,
    state: Services,
    /// The services subscribed to, which are the services in the state.
    subscribed: BTreeSet<ServiceName>,
}

impl Watch {
    /// Applies a read; returns the services that failed.
    fn apply(&mut self, read: Read) -> Vec<ServiceName> {
        apply_read(&self.source.registry, &mut self.state, read)
    }

    /// Lists the services; subscribes to and reads the new ones (every one with
    /// `everything`), drops the ones no longer listed.
    async fn sync(&mut self, everything: bool) -> Result<(), NacosError> {
        let listed = self.client.services().await?;
        let gone: Vec<ServiceName> = self.subscribed.difference(&listed).cloned().collect();
        let to_read: Vec<ServiceName> = if everything {
            listed.iter().cloned().collect()
        } else {
            listed.difference(&self.subscribed).cloned().collect()
        };
        let read = read(&self.client, to_read, Some(&self.listener)).await?;
        // A service that failed is read again at the next listing, as a new one.
        let failed = self.apply(read);
        self.subscribed = listed;
        for service in failed {
            self.subscribed.remove(&service);
        }
        for service in gone {
            self.state.remove_service(&service.key());
            if let Err(error) = self
                .client
                .unsubscribe(&service, Arc::clone(&self.listener))
                .await
            {
                tracing::debug!(registry = %self.source.registry, "{error}");
            }
        }
        Ok(())
    }

    /// Ends every subscription, so the SDK stops re-reading them; best effort.
    async fn unsubscribe_all(&self) {
        let mut tasks = tokio::task::JoinSet::new();
        for service in self.subscribed.clone() {
            let client = self.client.clone();
            let listener = Arc::clone(&self.listener);
            tasks.spawn(async move { client.unsubscribe(&service, listener).await });
        }
        let all = async { while tasks.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(super::REQUEST_TIMEOUT, all).await;
    }
}

pub(super) async fn run(source: NacosSource, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
    let mut emitter = Emitter::new(&source.registry, tx, cancel.clone());
    let mut backoff = Backoff::new();
    let client = loop {
        let connected = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            connected = Client::connect(&source.registry, &source.config) => connected,
        };
        match connected {
            Ok(client) => break client,
            Err(error) => {
                if emitter.failed(crate::SourceFailure::of(&error)).await.is_err()
                    || emitter.sleep(backoff.next_delay()).await.is_err()
                {
                    return;
                }
            }
        }
    };
    let (pushes_tx, mut pushes) = mpsc::unbounded_channel();
    let mut watch = Watch {
        state: Services::new(&source.registry),
        source,
        client,
        listener: Arc::new(Listener { tx: pushes_tx }),
        subscribed: BTreeSet::new(),
    };
    let _ = follow(&mut watch, &mut emitter, &mut backoff, &mut pushes).await;
    watch.unsubscribe_all().await;
}

/// The coordinator's loop, until the emitter stops.
async fn follow(
    watch: &mut Watch,
    emitter: &mut Emitter,
    backoff: &mut Backoff,
    pushes: &mut mpsc::UnboundedReceiver<ServiceName>,
) -> Result<(), Stopped> {
    let interval = watch.source.config.interval;
    // After a failure (and at the start) the next sync reads every service again.
    let mut failing = true;
    loop {
        let synced = tokio::select! {
            biased;
            () = emitter.cancel().cancelled() => return Err(Stopped),
            synced = watch.sync(failing) => synced,
        };
        let mut next_sync = match synced {
            Ok(()) => {
                failing = false;
                backoff.reset();
                emitter.snapshot(&mut watch.state).await?;
                Instant::now() + interval
            }
            Err(error) => {
                failing = true;
                emitter.failed(crate::SourceFailure::of(&error)).await?;
                Instant::now() + backoff.next_delay()
            }
        };
        loop {
            let first = tokio::select! {
                biased;
                () = emitter.cancel().cancelled() => return Err(Stopped),
                () = tokio::time::sleep_until(next_sync) => break,
                push = pushes.recv() => match push { Some(p) => p, None => return Err(Stopped) },
            };
            if failing {
                // The next sync reads everything anyway.
                continue;
            }
            let mut changed = BTreeSet::from([first]);
            while let Ok(more) = pushes.try_recv() {
                changed.insert(more);
            }
            changed.retain(|s| watch.subscribed.contains(s));
            let reread = tokio::select! {
                biased;
                () = emitter.cancel().cancelled() => return Err(Stopped),
                result = read(&watch.client, changed.into_iter().collect(), None) => result,
            };
            match reread {
                Ok(services) => {
                    // A service whose re-read failed keeps its last state; everything
                    // is read again after the backoff.
                    if !watch.apply(services).is_empty() {
                        failing = true;
                        next_sync = next_sync.min(Instant::now() + backoff.next_delay());
                    }
                    emitter.snapshot(&mut watch.state).await?;
                }
                Err(error) => {
                    // The change this push announced is not read yet: sync everything
                    // again after the backoff.
                    emitter.failed(crate::SourceFailure::of(&error)).await?;
                    failing = true;
                    next_sync = next_sync.min(Instant::now() + backoff.next_delay());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn timeout() -> NacosError {
        NacosError::Timeout {
            registry: "n".into(),
            address: "127.0.0.1:8848".into(),
            action: "the instances of payments".into(),
        }
    }

    #[test]
    fn a_service_that_fails_to_read_is_unknown_and_the_others_are_applied() {
        let orders = ServiceName::parse("DEFAULT_GROUP", "orders");
        let payments = ServiceName::parse("team-a", "payments");
        let read = Read {
            ok: vec![(orders.clone(), vec![raw(None, "10.0.0.1")])],
            failed: vec![(payments, timeout())],
        }
        .or_all_failed()
        .expect("one failure is not the registry's");
        let mut state = Services::new("n");
        let failed = apply_read("n", &mut state, read);
        assert_eq!(failed.len(), 1);
        let snapshot = state.snapshot();
        assert_eq!(snapshot.services().len(), 1);
        assert_eq!(
            snapshot.unknown,
            [ServiceKey {
                namespace: Some("team-a".into()),
                name: "payments".into()
            }]
        );
        let all_failed = Read {
            ok: Vec::new(),
            failed: vec![(orders, timeout())],
        };
        assert!(
            all_failed.or_all_failed().is_err(),
            "every service failing is Nacos failing"
        );
    }

    fn raw(id: Option<&str>, ip: &str) -> ServiceInstance {
        ServiceInstance {
            instance_id: id.map(str::to_string),
            ip: ip.into(),
            port: 80,
            weight: 1.0,
            healthy: true,
            enabled: true,
            ephemeral: true,
            cluster_name: None,
            service_name: None,
            metadata: HashMap::new(),
        }
    }

    #[test]
    fn two_instances_with_one_id_are_both_kept_so_that_the_duplicate_is_reported() {
        let service = ServiceName::new("DEFAULT_GROUP", "orders");
        let items = items(
            "n",
            &service,
            &[raw(Some("same"), "10.0.0.1"), raw(Some("same"), "10.0.0.2")],
        );
        assert_eq!(items.len(), 2);
        let mut state = Services::new("n");
        state.replace_scoped_service(&service.key(), None, "orders", items);
        let snapshot = state.snapshot();
        assert_eq!(snapshot.services()[0].instances.len(), 1);
        assert_eq!(snapshot.skipped.len(), 1, "{:?}", snapshot.skipped);
    }

    #[test]
    fn a_service_outside_the_default_group_carries_its_group_as_namespace() {
        let service = ServiceName::new("SHOP", "orders");
        let mut state = Services::new("n");
        let items = items("n", &service, &[raw(None, "10.0.0.1")]);
        state.replace_scoped_service(&service.key(), service.namespace(), &service.name, items.clone());
        let first = state.snapshot();
        let built = &first.services()[0];
        assert_eq!(
            (built.namespace.as_deref(), built.name.as_str()),
            (Some("SHOP"), "orders")
        );
        state.replace_scoped_service(&service.key(), service.namespace(), &service.name, items);
        assert!(!state.is_dirty(), "an equal read changes nothing");
        let second = state.snapshot();
        assert!(Arc::ptr_eq(&first.services()[0], &second.services()[0]));
    }
}
