//! `run`: watch every registry and keep every sink in step until SIGINT or SIGTERM.
//!
//! Tasks and channels (ARCHITECTURE.md draws them):
//!
//! * one task per registry sends [`SourceEvent`]s into one bounded channel;
//! * the feed loop ([`drive`]) folds them into the shared [`Pipeline`] — a burst
//!   that arrived meanwhile is folded in one go — and publishes the change on a `watch`
//!   channel, which coalesces: a writer that was busy sees only the latest;
//! * one writer task per sink plans what changed since the version it applied, plus
//!   what its sink saw change underneath it, and applies. A slow or failing sink
//!   holds up no other; leadership gates the writer of every sink one replica owns
//!   (not the MCP server's, which every replica serves), and losing it cancels the
//!   writes in flight.
//!
//! The first change after a quiet period is planned at once (no debounce delay).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use registry_sync_sources::SourceEvent;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::config::Config;
use crate::error::CommandError;
use crate::metrics::Metrics;
use crate::pipeline::{NamedSink, Pipeline};
use crate::sinks::{Purpose, open_sinks};
use crate::sources;
use crate::writer::SinkWriter;
use registry_sync_sinks::Gate;

const EVENT_QUEUE: usize = 1024;
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// The change log is compacted once it holds this many changes.
const COMPACT_SLACK: usize = 4096;
/// How long a stop waits for the tasks of one kind after cancelling them.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// Cancels `cancel` on SIGINT or SIGTERM.
pub fn cancel_on_signals(cancel: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = match signal(SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM ({e}); only Ctrl-C stops registry-sync");
                    let _ = tokio::signal::ctrl_c().await;
                    cancel.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, stopping"),
                _ = term.recv() => tracing::info!("SIGTERM received, stopping"),
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        cancel.cancel();
    });
}

/// A full plan this often even when nothing changed: it re-checks what no watch
/// reports (a conflict resolved by hand in a sink that cannot watch itself).
const RESYNC_INTERVAL: Duration = Duration::from_secs(300);

fn is_leader(gate: &Gate) -> bool {
    gate.as_ref().is_none_or(|g| g.is_open())
}

fn leader_changes(gate: &Gate) -> Option<watch::Receiver<bool>> {
    gate.as_ref().map(|g| g.changes())
}

/// Waits for the next change of leadership; never, without leader election.
async fn leadership_changed(changes: &mut Option<watch::Receiver<bool>>) {
    match changes {
        Some(rx) => {
            if rx.changed().await.is_err() {
                *changes = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Waits until leadership is lost; never, without leader election.
async fn leadership_lost(changes: &mut Option<watch::Receiver<bool>>) {
    match changes {
        Some(rx) => {
            if rx.wait_for(|leading| !leading).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
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
    metrics: Metrics,
}

impl Readiness {
    fn set(&self, slot: &WriterSlot) {
        slot.ready.store(true, Ordering::Relaxed);
        if self.slots.iter().all(|s| s.ready.load(Ordering::Relaxed)) {
            self.metrics.set_ready();
        }
    }
}

struct WriterTask {
    writer: SinkWriter,
    pipeline: Arc<Mutex<Pipeline>>,
    published: watch::Receiver<Published>,
    leadership: Gate,
    slot: Arc<WriterSlot>,
    readiness: Arc<Readiness>,
    metrics: Metrics,
    cancel: CancellationToken,
}

fn lock(pipeline: &Mutex<Pipeline>) -> std::sync::MutexGuard<'_, Pipeline> {
    // A writer that panicked mid-plan leaves nothing half changed in the index: the
    // index is only read under this lock by writers.
    pipeline.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl WriterTask {
    async fn run(mut self) {
        let mut leader = leader_changes(&self.leadership);
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
                && is_leader(&self.leadership)
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
                    () = leadership_changed(&mut leader) => {
                        // A new leader does not know what the old one left half done, nor
                        // what its guard held.
                        self.writer.request_full();
                        self.writer.reload_guard_memory();
                        if is_leader(&self.leadership) {
                            // What the last leader wrote is out there: its addresses
                            // stand, not this replica's order of arrival.
                            self.writer.catch_up().await;
                            lock(&self.pipeline).adopt_vips(self.writer.sink.as_ref());
                        }
                    }
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
                        let waiting: Vec<String> = {
                            let scope = lock(&self.pipeline).index().scope();
                            scope.configured.difference(&scope.delivered).cloned().collect()
                        };
                        if !waiting.is_empty() {
                            tracing::warn!(sink = %self.writer.name, registries = %waiting.join(", "), "some registries have not answered since start: serving what there is now, without their services (a set kept from before the restart keeps them)");
                            self.writer.sink.complete();
                            // Its readers dial it through a Service: it must be ready to
                            // be reached at all.
                            self.readiness.set(&self.slot);
                        }
                    }
                }
            }
            if !is_leader(&self.leadership) {
                // A standby writes nothing; its next plan as leader is a full one.
                self.slot.needs.store(u64::MAX, Ordering::Relaxed);
                waiting_since = None;
                if lock(&self.pipeline).all_registries_complete() {
                    self.readiness.set(&self.slot);
                }
                continue;
            }
            self.writer.catch_up().await;
            self.writer.load_guard_memory().await;
            let (step, target) = {
                let pipeline = lock(&self.pipeline);
                let step = self.writer.plan(pipeline.index(), std::time::Instant::now());
                (step, pipeline.index().ready_version())
            };
            self.slot.needs.store(self.writer.planned(), Ordering::Relaxed);
            let applied = tokio::select! {
                applied = self.writer.apply(step) => applied,
                () = self.cancel.cancelled() => {
                    tracing::info!(sink = %self.writer.name, "stopping in the middle of a write; the next start finishes it");
                    break;
                }
                () = leadership_lost(&mut leader) => {
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
                        self.metrics.propagation.observe(since.elapsed().as_secs_f64());
                        self.metrics
                            .status
                            .change_applied(&self.writer.name, since.elapsed());
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
}

/// Runs until `cancel` fires or every source has ended. Needs a multi-threaded runtime.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), CommandError> {
    let metrics = Metrics::new();
    metrics.status.configure(
        &config.instance,
        config
            .registries
            .iter()
            .map(|r| (r.name.as_str(), r.source.kind())),
        std::iter::empty(),
    );
    let listeners = match (config.admin_listen, config.status_listen) {
        (Some(listen), None) => vec![(listen, admin::Routes::All)],
        (Some(listen), Some(page)) => vec![(listen, admin::Routes::Probes), (page, admin::Routes::Page)],
        (None, Some(page)) => vec![(page, admin::Routes::Page)],
        (None, None) => Vec::new(),
    };
    for (listen, routes) in listeners {
        admin::serve(listen, metrics.clone(), cancel.child_token(), routes)
            .await
            .map_err(|e| CommandError::Admin(format!("cannot serve the admin endpoint on {listen}: {e}")))?;
    }
    let opened = open_sinks(
        &config,
        Purpose::Run {
            shutdown: &cancel,
            metrics: &metrics,
        },
    )
    .await?;
    let (sinks, leadership) = (opened.sinks, opened.gate);
    metrics.leader.set(i64::from(is_leader(&leadership)));
    if let Some(mut changes) = leader_changes(&leadership) {
        metrics.status.set_leader(is_leader(&leadership));
        let metrics = metrics.clone();
        let leadership = leadership.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                metrics.leader.set(i64::from(is_leader(&leadership)));
                metrics.status.set_leader(is_leader(&leadership));
            }
        });
    }
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let mut source_tasks = Vec::new();
    for registry in &config.registries {
        source_tasks.push(sources::spawn_watch(registry, tx.clone(), cancel.child_token()));
    }
    drop(tx);
    tracing::info!(
        registries = config.registries.len(),
        sinks = sinks.len(),
        "watching"
    );

    drive(&config, sinks, leadership.clone(), metrics, rx, cancel.clone()).await;
    cancel.cancel();
    join_within(source_tasks, "registry tasks").await;
    // Leader election releases its lease on cancel; give it a moment.
    if leadership.is_some() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The core of `run` once sources and sinks exist: feeds `events` into the pipeline
/// and drives one writer task per sink, until `cancel` fires or `events` ends. Public
/// so that benchmarks can feed it events exactly as sources send them.
pub async fn drive(
    config: &Config,
    sinks: Vec<NamedSink>,
    leadership: Gate,
    metrics: Metrics,
    mut rx: mpsc::Receiver<SourceEvent>,
    cancel: CancellationToken,
) {
    let cancel = cancel.child_token();
    let mut pipeline = Pipeline::new(config).with_metrics(metrics.clone());
    pipeline.seed_vips(sinks.iter().map(|named| named.sink.as_ref()));
    metrics.status.configure(
        &config.instance,
        std::iter::empty(),
        sinks.iter().map(|named| named.name.as_str()),
    );
    let writers: Vec<SinkWriter> = sinks.into_iter().map(|sink| pipeline.writer(sink)).collect();
    let pipeline = Arc::new(Mutex::new(pipeline));
    let (searched, listed) = (Arc::clone(&pipeline), Arc::clone(&pipeline));
    metrics.status.install(
        // Only the look-up holds the pipeline: explaining a large service takes long.
        Box::new(move |query| {
            let lookup = lock(&searched).index().lookup(query);
            lookup.explain()
        }),
        Box::new(move || lock(&listed).index().problems_with_sources()),
    );
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
        metrics: metrics.clone(),
    });
    let mut writer_tasks = Vec::new();
    for (writer, slot) in writers.into_iter().zip(&slots) {
        // A sink every replica writes (the MCP server's) is not gated by the election.
        let leadership = if writer.sink.needs_leadership() {
            leadership.clone()
        } else {
            None
        };
        let task = WriterTask {
            writer,
            pipeline: Arc::clone(&pipeline),
            published: published.clone(),
            leadership,
            slot: Arc::clone(slot),
            readiness: Arc::clone(&readiness),
            metrics: metrics.clone(),
            cancel: cancel.child_token(),
        };
        writer_tasks.push(tokio::spawn(task.run()));
    }
    drop(published);

    loop {
        let drain_due = lock(&pipeline).next_drain_deadline();
        let event = tokio::select! {
            () = cancel.cancelled() => break,
            event = rx.recv() => match event {
                Some(event) => Some(event),
                None => break,
            },
            () = drain_sleep(drain_due) => None,
        };
        let at = Instant::now();
        let changed = {
            let mut pipeline = lock(&pipeline);
            let mut changed = match event {
                Some(event) => pipeline.take(event),
                None => pipeline.expire_drained(),
            };
            while let Ok(event) = rx.try_recv() {
                changed |= pipeline.take(event);
            }
            let index = pipeline.index();
            if index.log_len() > COMPACT_SLACK {
                let upto = slots
                    .iter()
                    .map(|s| s.needs.load(Ordering::Relaxed))
                    .min()
                    .unwrap_or(u64::MAX);
                pipeline.compact(upto);
            }
            changed
        };
        if changed {
            publish.send_replace(Published { at });
        }
    }
    cancel.cancel();
    join_within(writer_tasks, "writers").await;
}

/// Until the next drain delay is over; forever when none runs.
async fn drain_sleep(due: Option<std::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(Instant::from_std(due)).await,
        None => std::future::pending().await,
    }
}

/// Waits for cancelled tasks under one deadline for all of them, so a stop takes
/// seconds however many there are.
async fn join_within(tasks: Vec<tokio::task::JoinHandle<()>>, what: &str) {
    let deadline = Instant::now() + STOP_DEADLINE;
    for task in tasks {
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            tracing::warn!("some {what} did not stop within {STOP_DEADLINE:?}; stopping anyway");
            break;
        }
    }
}
