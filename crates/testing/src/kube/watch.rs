//! Watch streams: newline-delimited JSON events over a chunked response.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::kube::resource::Resource;
use crate::kube::selector::Selectors;
use crate::kube::state::Shared;
use crate::kube::status::ApiError;
use crate::kube::store::{Event, EventKind, ns_name};

/// What a watch request asked for.
pub(crate) struct WatchRequest {
    pub resource: Resource,
    pub namespace: Option<String>,
    pub selectors: Selectors,
    /// `None` for `resourceVersion` absent or `"0"`: start with the current state.
    pub resource_version: Option<u64>,
    pub send_initial_events: bool,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
}

type Chunk = Result<Bytes, io::Error>;

/// Starts the stream; the returned body ends when the timeout passes, the history cannot
/// serve it (after an `ERROR` 410 event), the server shuts down, or the client goes.
pub(crate) fn start(shared: Arc<Shared>, req: WatchRequest) -> Body {
    let (tx, rx) = mpsc::channel::<Chunk>(64);
    tokio::spawn(run(shared, req, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    Body::from_stream(stream)
}

fn line(kind: &str, object: &Value) -> Chunk {
    let mut bytes = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
    Ok(Bytes::from(bytes))
}

fn bookmark(resource: Resource, rv: u64, initial_end: bool) -> Chunk {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"apiVersion": resource.api_version(), "kind": resource.kind(), "metadata": meta}),
    )
}

fn expired(rv: u64, floor: u64) -> Chunk {
    line(
        "ERROR",
        &ApiError::expired(format!("too old resource version: {rv} ({floor})")).to_status(),
    )
}

/// The event a watcher with this request sees for a change, if any: an object entering
/// the selector is ADDED, one leaving it DELETED.
fn translate(req: &WatchRequest, e: &Event) -> Option<Chunk> {
    if e.resource != req.resource {
        return None;
    }
    let (ns, _) = ns_name(&e.object);
    if req.namespace.as_ref().is_some_and(|n| *n != ns) {
        return None;
    }
    let now = req.selectors.matches(&e.object);
    let kind = match e.kind {
        EventKind::Added if now => "ADDED",
        EventKind::Deleted if now => "DELETED",
        EventKind::Modified => {
            let before = e.previous.as_ref().is_some_and(|p| req.selectors.matches(p));
            match (before, now) {
                (true, true) => "MODIFIED",
                (false, true) => "ADDED",
                (true, false) => "DELETED",
                (false, false) => return None,
            }
        }
        _ => return None,
    };
    Some(line(kind, &e.object))
}

async fn send(tx: &mpsc::Sender<Chunk>, chunk: Chunk) -> bool {
    tx.send(chunk).await.is_ok()
}

async fn run(shared: Arc<Shared>, req: WatchRequest, tx: mpsc::Sender<Chunk>) {
    let mut changes = shared.changes.clone();
    let mut drops = shared.faults.drops.subscribe();
    drops.mark_unchanged();
    let deadline = req.timeout.map(|t| Instant::now() + t);
    let initial = req.resource_version.is_none() || req.send_initial_events;

    changes.mark_unchanged();
    let start = {
        let store = shared.store();
        match req.resource_version {
            Some(rv) if rv < store.floor() && !initial => Err(expired(rv, store.floor())),
            Some(rv) if !initial => Ok((rv, Vec::new())),
            _ => {
                let snapshot: Vec<Chunk> = store
                    .list(req.resource, req.namespace.as_deref())
                    .filter(|o| req.selectors.matches(o))
                    .map(|o| line("ADDED", o))
                    .collect();
                Ok((store.rv(), snapshot))
            }
        }
    };
    let (mut cursor, first) = match start {
        Ok(start) => start,
        Err(error) => {
            let _ = send(&tx, error).await;
            return;
        }
    };
    for chunk in first {
        if !send(&tx, chunk).await {
            return;
        }
    }
    if req.send_initial_events && req.bookmarks && !send(&tx, bookmark(req.resource, cursor, true)).await {
        return;
    }

    let mut ticker = tokio::time::interval_at(Instant::now() + shared.bookmark_every, shared.bookmark_every);
    loop {
        tokio::select! {
            () = shared.faults.unpaused() => {}
            () = shared.shutdown.cancelled() => return,
            _ = drops.changed() => {
                let _ = tx.send(Err(io::Error::new(io::ErrorKind::ConnectionReset, "watch dropped"))).await;
                return;
            }
        }
        changes.mark_unchanged();
        let batch = {
            let store = shared.store();
            match store.events_after(cursor) {
                Ok(events) => {
                    let chunks: Vec<Chunk> = events.iter().filter_map(|e| translate(&req, e)).collect();
                    cursor = store.rv().max(cursor);
                    Ok(chunks)
                }
                Err(floor) => Err(floor),
            }
        };
        match batch {
            Ok(chunks) => {
                for chunk in chunks {
                    if !send(&tx, chunk).await {
                        return;
                    }
                }
            }
            Err(floor) => {
                let _ = send(&tx, expired(cursor, floor)).await;
                return;
            }
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = changes.changed() => {}
            () = sleep => return,
            () = shared.shutdown.cancelled() => return,
            () = tx.closed() => return,
            _ = drops.changed() => {
                let _ = tx.send(Err(io::Error::new(io::ErrorKind::ConnectionReset, "watch dropped"))).await;
                return;
            }
            _ = ticker.tick(), if req.bookmarks => {
                if !send(&tx, bookmark(req.resource, cursor, false)).await {
                    return;
                }
            }
        }
    }
}
