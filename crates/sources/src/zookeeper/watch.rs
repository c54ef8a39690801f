//! Following ZooKeeper with one persistent recursive watch on the root.
//!
//! A small task moves the watcher's events into a channel, so the main loop can take
//! every event already queued after the first one and answer the whole burst with one
//! snapshot. Node events are applied one by one: a Dubbo provider is all in its
//! node's name, a Curator instance is read (many in one multi-read round trip).
//!
//! Session events decide the rest. `Disconnected`, `Expired`, `AuthFailed`, `Closed`:
//! one `Failed`, then a new session with a new watch and a full read, with backoff —
//! ZooKeeper does not replay what a watch missed while disconnected, and a persistent
//! watch resumed on a restarted server was seen to stay silent.

use std::collections::BTreeMap;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zookeeper_client::{AddWatchMode, Client, EventType, MultiReadResult, SessionState, WatchedEvent};

use super::{ZkLayout, ZookeeperError, ZookeeperSource, curator, dubbo};
use crate::SourceEvent;
use crate::emit::{Backoff, Emitter, Stopped};
use crate::state::Services;

struct Watcher {
    source: ZookeeperSource,
    state: Services,
    emitter: Emitter,
}

pub(super) async fn run(source: ZookeeperSource, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
    let mut watcher = Watcher {
        state: Services::new(&source.registry),
        emitter: Emitter::new(&source.registry, tx, cancel),
        source,
    };
    let mut backoff = Backoff::new();
    loop {
        let error = match watcher.session(&mut backoff).await {
            Ok(error) => error,
            Err(Stopped) => return,
        };
        let delay = backoff.next_delay();
        tracing::debug!(registry = %watcher.source.registry, "retrying in {delay:?}: {error}");
        if watcher.emitter.failed(crate::SourceFailure::of(&error)).await.is_err()
            || watcher.emitter.sleep(delay).await.is_err()
        {
            return;
        }
    }
}

/// Ends the forwarding task when the session ends, whichever way it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a batch of node events asks for.
#[derive(Default)]
struct Changes {
    /// Curator instance nodes to read, by (service, node); `false` once deleted again.
    reads: BTreeMap<(String, String), bool>,
}

impl Watcher {
    /// One ZooKeeper session: connect, watch, read, follow. Returns why it ended.
    async fn session(&mut self, backoff: &mut Backoff) -> Result<ZookeeperError, Stopped> {
        let client = match self.source.connect().await {
            Ok(client) => client,
            Err(error) => return Ok(error),
        };
        let root = self.source.config.root.clone();
        let action = format!("watching {root}");
        let watch = client.watch(&root, AddWatchMode::PersistentRecursive);
        let mut persistent = match self.source.timed(&action, watch).await {
            Ok(watcher) => watcher,
            Err(error) => return Ok(error),
        };
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let _forward = AbortOnDrop(tokio::spawn(async move {
            loop {
                let event = persistent.changed().await;
                // The watcher panics when polled after a terminal state: stop here.
                let terminal = event.event_type == EventType::Session && event.session_state.is_terminated();
                if events_tx.send(event).is_err() || terminal {
                    return;
                }
            }
        }));

        match self.source.read_all(&client).await {
            Ok(listing) => {
                self.state.replace_all(listing, BTreeMap::new());
                tracing::info!(registry = %self.source.registry, services = self.state.len(), "read ZooKeeper");
                backoff.reset();
                self.emitter.snapshot(&mut self.state).await?;
            }
            Err(error) => return Ok(error),
        }
        loop {
            let first = tokio::select! {
                biased;
                () = self.emitter.cancel().cancelled() => return Err(Stopped),
                event = events.recv() => event,
            };
            let Some(first) = first else {
                return Ok(self.session_error("the watch stopped"));
            };
            let mut batch = vec![first];
            while let Ok(more) = events.try_recv() {
                batch.push(more);
            }
            let mut changes = Changes::default();
            for event in batch {
                if event.event_type != EventType::Session {
                    self.node_event(&event, &mut changes);
                    continue;
                }
                match event.session_state {
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly => {}
                    // After a disconnect the client would resume the session, but a
                    // persistent watch may then miss events (ZOOKEEPER-4698) or, after
                    // a server restart, stay silent: a new session with a new watch
                    // and a full read is the only state known to be right.
                    SessionState::Disconnected => return Ok(self.session_error("connection lost")),
                    other => return Ok(self.session_error(&format!("{other:?}"))),
                }
            }
            // The changes so far are applied: a failed read ends the session, and the
            // next one reads everything again.
            if let Err(error) = self.read_instances(&client, changes).await {
                self.emitter.snapshot(&mut self.state).await?;
                return Ok(error);
            }
            self.emitter.snapshot(&mut self.state).await?;
        }
    }

    fn session_error(&self, why: &str) -> ZookeeperError {
        ZookeeperError::Session {
            registry: self.source.registry.clone(),
            address: self.source.config.address.clone(),
            why: why.to_string(),
        }
    }

    /// Applies one node event to the state, or notes the read it needs.
    fn node_event(&mut self, event: &WatchedEvent, changes: &mut Changes) {
        let root = &self.source.config.root;
        if event.path == *root {
            if event.event_type == EventType::NodeDeleted {
                self.state.clear();
            }
            return;
        }
        let relative = if root == "/" {
            event.path.strip_prefix('/')
        } else {
            event
                .path
                .strip_prefix(root.as_str())
                .and_then(|p| p.strip_prefix('/'))
        };
        let Some(relative) = relative else { return };
        let segments: Vec<&str> = relative.split('/').collect();
        let created = event.event_type == EventType::NodeCreated;
        let deleted = event.event_type == EventType::NodeDeleted;
        let registry = self.source.registry.clone();
        match (self.source.config.layout, segments.as_slice()) {
            (ZkLayout::Dubbo, [service]) if deleted => self.state.remove_service(service),
            (ZkLayout::Dubbo, [service, "providers"]) if created => self.state.ensure_service(service),
            (ZkLayout::Dubbo, [service, "providers"]) if deleted => self.state.remove_service(service),
            (ZkLayout::Dubbo, [service, "providers", node]) if created => {
                if let Some(item) = dubbo::item(&registry, service, node) {
                    self.state.put(service, node, item);
                }
            }
            (ZkLayout::Dubbo, [service, "providers", node]) if deleted => {
                self.state.remove(service, node, false)
            }
            (ZkLayout::Curator, [service]) if created => self.state.ensure_service(service),
            (ZkLayout::Curator, [service]) if deleted => self.state.remove_service(service),
            (ZkLayout::Curator, [service, node]) => {
                let key = (service.to_string(), node.to_string());
                if deleted {
                    self.state.remove(service, node, false);
                    changes.reads.insert(key, false);
                } else {
                    changes.reads.insert(key, true);
                }
            }
            _ => {}
        }
    }

    /// Reads the Curator instances a batch created or changed.
    async fn read_instances(&mut self, client: &Client, changes: Changes) -> Result<(), ZookeeperError> {
        let wanted: Vec<(String, String)> = changes
            .reads
            .into_iter()
            .filter_map(|(key, read)| read.then_some(key))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let paths: Vec<String> = wanted.iter().map(|(s, n)| self.source.path(&[s, n])).collect();
        let results = self.source.multi_read(client, &paths, true).await?;
        for (((service, node), path), result) in wanted.into_iter().zip(&paths).zip(results) {
            match self.source.present(path, result)? {
                Some(MultiReadResult::Data { data, .. }) => {
                    let item = curator::item(&self.source.registry, &service, &node, &data);
                    self.state.put(&service, &node, item);
                }
                // Deleted again before the read: its deletion event follows.
                _ => self.state.remove(&service, &node, false),
            }
        }
        Ok(())
    }
}
