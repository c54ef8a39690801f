//! Following etcd: list once, then one prefix watch, resumed after disconnects.
//!
//! The task keeps the last revision it has fully applied. A reconnect starts the watch
//! right after it, so etcd replays exactly what was missed and nothing is listed
//! again; the state (and with it what the consumer holds) stays as it was meanwhile.
//! Only a compacted revision — the history is gone — forces a new listing.
//!
//! Events are applied as each watch response arrives, together with every further
//! response already received, and then one snapshot goes out: the first change of a
//! burst is never held back, the rest of the burst costs one snapshot.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client::{WatchStream, status_text};
use super::layout::{KeyPlace, Layout};
use super::proto::{self, WatchCreateRequest, WatchResponse};
use super::{EtcdError, EtcdSource, REQUEST_TIMEOUT, prefix_end};
use crate::SourceEvent;
use crate::emit::{Backoff, Emitter, Stopped};
use crate::state::Services;

/// Why a watch session ended.
enum End {
    /// Connection or request failure: report it, back off, reconnect and resume.
    Failed(EtcdError),
    /// The revision to resume from was compacted: list everything again, now.
    Compacted,
}

struct Watcher {
    source: EtcdSource,
    layout: Layout,
    state: Services,
    emitter: Emitter,
    /// The last revision whose events are all in `state`; `None` until listed.
    revision: Option<i64>,
}

pub(super) async fn run(source: EtcdSource, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
    let mut watcher = Watcher {
        layout: source.layout(),
        state: Services::new(&source.registry),
        emitter: Emitter::new(&source.registry, tx, cancel),
        revision: None,
        source,
    };
    let mut backoff = Backoff::new();
    loop {
        let end = match watcher.session(&mut backoff).await {
            Ok(end) => end,
            Err(Stopped) => return,
        };
        match end {
            End::Compacted => {
                tracing::info!(
                    registry = %watcher.source.registry,
                    "etcd compacted the history the watch needed; listing every key again"
                );
                watcher.revision = None;
            }
            End::Failed(error) => {
                let delay = backoff.next_delay();
                tracing::debug!(registry = %watcher.source.registry, "retrying in {delay:?}: {error}");
                if watcher.emitter.failed(crate::SourceFailure::of(&error)).await.is_err()
                    || watcher.emitter.sleep(delay).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

impl Watcher {
    /// Connects, lists if needed, and follows the watch until it breaks.
    async fn session(&mut self, backoff: &mut Backoff) -> Result<End, Stopped> {
        let mut client = match self.source.connect().await {
            Ok(client) => client,
            Err(error) => return Ok(End::Failed(error)),
        };
        let revision = match self.revision {
            Some(revision) => revision,
            None => {
                let listing = match self.source.list(&mut client).await {
                    Ok(listing) => listing,
                    Err(error) => return Ok(End::Failed(error)),
                };
                self.state.replace_all(listing.services, listing.orphans);
                self.revision = Some(listing.revision);
                tracing::info!(
                    registry = %self.source.registry,
                    services = self.state.len(),
                    revision = listing.revision,
                    "listed etcd"
                );
                self.emitter.snapshot(&mut self.state).await?;
                backoff.reset();
                listing.revision
            }
        };

        let action = format!("watching {}", self.layout.dir());
        let create = WatchCreateRequest {
            key: self.layout.dir().as_bytes().to_vec(),
            range_end: prefix_end(self.layout.dir().as_bytes()),
            start_revision: revision + 1,
            progress_notify: true,
        };
        let start = client.watch(create);
        let mut stream = match tokio::time::timeout(REQUEST_TIMEOUT, start).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(status)) => {
                return Ok(End::Failed(
                    self.source.request_error(&action, status_text(&status)),
                ));
            }
            Err(_) => return Ok(End::Failed(self.source.timeout_error(&action))),
        };

        loop {
            let message = tokio::select! {
                biased;
                () = self.emitter.cancel().cancelled() => return Err(Stopped),
                message = stream.message() => message,
            };
            // Apply this response and every one already received, then send once.
            let mut next = Some(message);
            let mut end = None;
            while let Some(message) = next.take() {
                end = match message {
                    Ok(Some(response)) => self.apply(response, backoff),
                    Ok(None) => Some(End::Failed(
                        self.source.request_error(&action, "etcd closed the watch stream"),
                    )),
                    Err(status) => Some(End::Failed(
                        self.source.request_error(&action, status_text(&status)),
                    )),
                };
                if end.is_some() {
                    break;
                }
                next = received(&mut stream);
            }
            // A failure keeps what was applied so far: those events are in `revision`.
            if end.is_none() || self.state.is_dirty() {
                self.emitter.snapshot(&mut self.state).await?;
            }
            if let Some(end) = end {
                return Ok(end);
            }
        }
    }

    /// Applies one watch response to the state. `Some` ends the session.
    fn apply(&mut self, response: WatchResponse, backoff: &mut Backoff) -> Option<End> {
        if response.canceled {
            if response.compact_revision > 0 {
                return Some(End::Compacted);
            }
            let reason = match response.cancel_reason.as_str() {
                "" => "etcd cancelled the watch".to_string(),
                reason => format!("etcd cancelled the watch: {reason}"),
            };
            let action = format!("watching {}", self.layout.dir());
            return Some(End::Failed(self.source.request_error(&action, reason)));
        }
        if response.created {
            // Connected again: the state is complete as of `revision`, and what was
            // missed follows as events. The snapshot after this ends a failure.
            backoff.reset();
            return None;
        }
        if response.events.is_empty() {
            // A progress notification: everything up to the header's revision is here.
            if let Some(header) = &response.header {
                self.revision = Some(header.revision);
            }
            return None;
        }
        for event in &response.events {
            let Some(kv) = &event.kv else { continue };
            let put = match event.r#type {
                proto::PUT => true,
                proto::DELETE => false,
                _ => continue,
            };
            match self.layout.place(&kv.key) {
                KeyPlace::Instance { service, id } => {
                    if put {
                        let item = self.layout.item(&service, &id, &kv.value);
                        self.state.put(&service, &id, item);
                    } else {
                        self.state.remove(&service, &id, true);
                    }
                }
                KeyPlace::Refused(skipped) => {
                    let key = String::from_utf8_lossy(&kv.key).into_owned();
                    if put {
                        self.state.put_orphan(&key, skipped);
                    } else {
                        self.state.remove_orphan(&key);
                    }
                }
            }
            self.revision = Some(kv.mod_revision);
        }
        None
    }
}

/// The next watch response if one has already arrived, without waiting. Taking the
/// message future and dropping it unfinished loses nothing: the stream keeps what it
/// has received until the next call.
fn received(stream: &mut WatchStream) -> Option<Result<Option<WatchResponse>, tonic::Status>> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(stream.message()).poll(&mut cx) {
        Poll::Ready(message) => Some(message),
        Poll::Pending => None,
    }
}
