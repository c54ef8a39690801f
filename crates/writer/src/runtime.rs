//! The runtime of `run`: source events into the shared index, and one writer task per
//! sink out of it, until cancelled.
//!
//! * the feed loop folds events into the index — a burst that arrived meanwhile is
//!   folded in one go — and publishes the change on a `watch` channel, which coalesces:
//!   a writer that was busy sees only the latest;
//! * one writer task per sink plans what changed since the version it applied, plus
//!   what its sink saw change underneath it, and applies. A slow or failing sink holds
//!   up no other; leadership gates the writer of every sink one replica owns (not the
//!   MCP server's, which every replica serves), and losing it cancels the writes in
//!   flight.
//!
//! The first change after a quiet period is planned at once (no debounce delay).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use registry_sync_index::Index;
use registry_sync_sources::SourceEvent;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::feed;
use crate::leadership::Leadership;
use crate::observer::Observer;
use crate::ready::Ready;
use crate::settings::WriterSettings;
use crate::writer::{NamedSink, SinkWriter};

const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// The change log is compacted once it holds this many changes.
const COMPACT_SLACK: usize = 4096;
/// How long a stop waits for the tasks of one kind after cancelling them.
const STOP_DEADLINE: Duration = Duration::from_secs(5);
/// A full plan this often even when nothing changed: it re-checks what no watch
/// reports (a conflict resolved by hand in a sink that cannot watch itself).
const RESYNC_INTERVAL: Duration = Duration::from_secs(300);

/// The index, shared by the feed loop, the writers and whoever looks things up in it
/// (the status page's `explain`).
#[derive(Clone)]
pub struct SharedIndex(Arc<Mutex<Index>>);

impl SharedIndex {
    pub fn new(index: Index) -> SharedIndex {
        SharedIndex(Arc::new(Mutex::new(index)))
    }

    pub fn lock(&self) -> MutexGuard<'_, Index> {
        // A writer that panicked mid-plan leaves nothing half changed in the index:
        // writers only read it.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What `run` is made of once the sinks are open.
pub struct Runtime {
    pub settings: WriterSettings,
    pub leadership: Leadership,
    pub observer: Arc<dyn Observer>,
    pub ready: Ready,
}

/// The index changed; when the oldest event of the change reached registry-sync.
#[derive(Clone, Copy, Debug)]
struct Published {
    at: Instant,
}

/// What a writer shares with the feed loop and the other writers.
struct WriterSlot {
    /// The lowest index version the writer may still ask about (`u64::MAX` when its
    /// next plan is a full one anyway): the change log keeps everything after it.
    needs: AtomicU64,
    ready: AtomicBool,
}

/// Ready once every writer is: it has applied the version current when every registry
/// had first delivered a complete view (a standby: once that view exists).
struct Readiness {
    slots: Vec<Arc<WriterSlot>>,
    ready: Ready,
}

impl Readiness {
    fn set(&self, slot: &WriterSlot) {
        slot.ready.store(true, Ordering::Relaxed);
        if self.slots.iter().all(|s| s.ready.load(Ordering::Relaxed)) {
            self.ready.set();
        }
    }
}

/// The index's time: drain delays count from the runtime's start.
#[derive(Clone, Copy)]
struct Clock(std::time::Instant);

impl Clock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

struct WriterTask {
    writer: SinkWriter,
    index: SharedIndex,
    settings: WriterSettings,
    clock: Clock,
    published: watch::Receiver<Published>,
    leadership: Leadership,
    slot: Arc<WriterSlot>,
    readiness: Arc<Readiness>,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
}

impl WriterTask {
    async fn run(mut self) {
        let mut leader = self.leadership.clone();
        let mut resync = tokio::time::interval_at(Instant::now() + RESYNC_INTERVAL, RESYNC_INTERVAL);
        let mut retry_at: Option<Instant> = None;
        let mut retry_delay = RETRY_FIRST;
        // When the oldest change not yet applied reached registry-sync.
        let mut waiting_since: Option<Instant> = None;
        // A sink whose readers stay blind until it is complete (istiod and the MCP
        // sink) is completed with what there is once this passes.
        let mut give_up_at = self
            .writer
            .sink
            .complete_after()
            .map(|wait| Instant::now() + wait);
        loop {
            let next_retry = [retry_at, self.writer.next_retry().map(Instant::from_std)]
                .into_iter()
                .flatten()
                .min();
            // The last pass wrote successors that old objects wait for: remove those now
            // instead of at the next change. Only while leading: a standby that skipped
            // the wait would spin.
            let again = self.writer.wants_another_pass()
                && self.leadership.is_leader()
                && !self.cancel.is_cancelled();
            if !again {
                tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => break,
                    changed = self.published.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        waiting_since.get_or_insert(self.published.borrow().at);
                    }
                    () = leader.changed() => self.take_over().await,
                    keys = self.writer.sink.observe() => {
                        // Drained by a standby too, so its view is current at takeover.
                        if keys.is_empty() {
                            continue;
                        }
                        tracing::debug!(sink = %self.writer.name, objects = keys.len(), "changed in the sink; planning them again");
                        self.writer.observed(keys);
                    }
                    () = async { tokio::time::sleep_until(next_retry.expect("guarded")).await }, if next_retry.is_some() => {
                        retry_at = None;
                    }
                    _ = resync.tick() => self.writer.request_full(),
                    () = async { tokio::time::sleep_until(give_up_at.expect("guarded")).await }, if give_up_at.is_some() => {
                        give_up_at = None;
                        self.complete_without_the_silent();
                    }
                }
            }
            if !self.leadership.is_leader() {
                // A standby writes nothing; its next plan as leader is a full one.
                self.slot.needs.store(u64::MAX, Ordering::Relaxed);
                waiting_since = None;
                if self.index.lock().all_complete() {
                    self.readiness.set(&self.slot);
                }
                continue;
            }
            self.writer.catch_up().await;
            self.writer.load_guard_memory().await;
            let (step, target) = {
                let index = self.index.lock();
                let step = self.writer.plan(&index, std::time::Instant::now());
                (step, index.ready_version())
            };
            self.slot.needs.store(self.writer.planned(), Ordering::Relaxed);
            let applied = tokio::select! {
                applied = self.writer.apply(step) => applied,
                () = self.cancel.cancelled() => {
                    tracing::info!(sink = %self.writer.name, "stopping in the middle of a write; the next start finishes it");
                    break;
                }
                () = leader.lost() => {
                    tracing::warn!(sink = %self.writer.name, "leadership lost: writes in flight cancelled");
                    self.writer.request_full();
                    self.slot.needs.store(u64::MAX, Ordering::Relaxed);
                    continue;
                }
            };
            match applied {
                Ok(report) => {
                    retry_delay = RETRY_FIRST;
                    retry_at = None;
                    if report.is_complete()
                        && let Some(since) = waiting_since.take()
                    {
                        self.observer.change_applied(&self.writer.name, since.elapsed());
                    }
                    if target.is_some_and(|target| self.writer.applied().is_some_and(|v| v >= target)) {
                        give_up_at = None;
                        self.writer.sink.complete();
                        self.readiness.set(&self.slot);
                    }
                }
                Err(e) => {
                    tracing::error!(sink = %self.writer.name, "{e}; trying again in {retry_delay:?}");
                    self.slot.needs.store(u64::MAX, Ordering::Relaxed);
                    retry_at = Some(Instant::now() + retry_delay);
                    retry_delay = (retry_delay * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Leadership changed. A new leader does not know what the old one left half done,
    /// nor what its guard held; what the last leader wrote is out there, and its
    /// addresses stand, not this replica's order of arrival.
    async fn take_over(&mut self) {
        self.writer.request_full();
        self.writer.reload_guard_memory();
        if self.leadership.is_leader() {
            self.writer.catch_up().await;
            let now = self.clock.now();
            let update =
                self.index
                    .lock()
                    .adopt_vips(self.writer.sink.held().values(), &self.settings.owner, now);
            if !update.changed.is_empty() {
                tracing::info!(
                    objects = update.changed.len(),
                    "took the virtual IPs the sink holds over this replica's own"
                );
            }
        }
    }

    /// Serves what there is when some registries have not answered since start.
    fn complete_without_the_silent(&mut self) {
        let waiting: Vec<String> = {
            let scope = self.index.lock().scope();
            scope.configured.difference(&scope.delivered).cloned().collect()
        };
        if !waiting.is_empty() {
            tracing::warn!(sink = %self.writer.name, registries = %waiting.join(", "), "some registries have not answered since start: serving what there is now, without their services (a set kept from before the restart keeps them)");
            self.writer.sink.complete();
            // Its readers dial it through a Service: it must be ready to be reached at all.
            self.readiness.set(&self.slot);
        }
    }
}

impl Runtime {
    /// Feeds `events` into `index` and drives one writer task per sink, until `cancel`
    /// fires or `events` ends.
    pub async fn run(
        self,
        index: SharedIndex,
        sinks: Vec<NamedSink>,
        mut events: mpsc::Receiver<SourceEvent>,
        cancel: CancellationToken,
    ) {
        let cancel = cancel.child_token();
        let clock = Clock(std::time::Instant::now());
        index.lock().seed_vips(
            sinks.iter().flat_map(|named| named.sink.held().values()),
            &self.settings.owner,
        );
        let leadership_watch = self.watch_leadership(cancel.clone());
        let writers: Vec<SinkWriter> = sinks
            .into_iter()
            .map(|sink| self.settings.writer(sink, Arc::clone(&self.observer)))
            .collect();
        let (publish, published) = watch::channel(Published { at: Instant::now() });
        let slots: Vec<Arc<WriterSlot>> = writers
            .iter()
            .map(|_| {
                Arc::new(WriterSlot {
                    needs: AtomicU64::new(u64::MAX),
                    ready: AtomicBool::new(false),
                })
            })
            .collect();
        let readiness = Arc::new(Readiness {
            slots: slots.clone(),
            ready: self.ready.clone(),
        });
        let mut writer_tasks = Vec::new();
        for (writer, slot) in writers.into_iter().zip(&slots) {
            // A sink every replica writes (the MCP server's) is not gated by the election.
            let leadership = if writer.sink.needs_leadership() {
                self.leadership.clone()
            } else {
                Leadership::always()
            };
            let task = WriterTask {
                writer,
                index: index.clone(),
                settings: self.settings.clone(),
                clock,
                published: published.clone(),
                leadership,
                slot: Arc::clone(slot),
                readiness: Arc::clone(&readiness),
                observer: Arc::clone(&self.observer),
                cancel: cancel.child_token(),
            };
            writer_tasks.push(tokio::spawn(task.run()));
        }
        drop(published);

        loop {
            let drain_due = index
                .lock()
                .next_drain_deadline()
                .map(|after| Instant::from_std(clock.0 + after));
            let event = tokio::select! {
                () = cancel.cancelled() => break,
                event = events.recv() => match event {
                    Some(event) => Some(event),
                    None => break,
                },
                () = drain_sleep(drain_due) => None,
            };
            let at = Instant::now();
            let changed = {
                let mut index = index.lock();
                let now = clock.now();
                let observer = self.observer.as_ref();
                let mut changed = match event {
                    Some(event) => feed::take(&mut index, event, now, observer),
                    None => index.expire(now).is_news(),
                };
                while let Ok(event) = events.try_recv() {
                    changed |= feed::take(&mut index, event, now, observer);
                }
                if index.log_len() > COMPACT_SLACK {
                    let upto = slots
                        .iter()
                        .map(|s| s.needs.load(Ordering::Relaxed))
                        .min()
                        .unwrap_or(u64::MAX);
                    index.compact(upto);
                }
                changed
            };
            if changed {
                publish.send_replace(Published { at });
            }
        }
        cancel.cancel();
        join_within(writer_tasks, "writers").await;
        if let Some(task) = leadership_watch {
            task.abort();
        }
    }

    /// Tells the observer of each change of leadership, where an election is held.
    fn watch_leadership(&self, cancel: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
        if !self.leadership.is_elected() {
            return None;
        }
        let mut leadership = self.leadership.clone();
        let observer = Arc::clone(&self.observer);
        observer.leadership(leadership.is_leader());
        Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = leadership.changed() => observer.leadership(leadership.is_leader()),
                }
            }
        }))
    }
}

/// Until the next drain delay is over; forever when none runs.
async fn drain_sleep(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Waits for cancelled tasks under one deadline for all of them, so a stop takes
/// seconds however many there are.
pub async fn join_within(tasks: Vec<tokio::task::JoinHandle<()>>, what: &str) {
    let deadline = Instant::now() + STOP_DEADLINE;
    for task in tasks {
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            tracing::warn!("some {what} did not stop within {STOP_DEADLINE:?}; stopping anyway");
            break;
        }
    }
}
