//! Turning file-system notifications into snapshots.
//!
//! notify calls back on its own thread; the callback only classifies the event and
//! hands a [`Wake`] to the task over an unbounded channel (events are tiny and the task
//! drains them in bursts). The task reads the file at the first sign of a completed
//! change, after draining whatever is already queued, so a burst costs one read and the
//! first change of a burst is never held back by a debounce timer.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{FileSource, FileSourceError};
use crate::{FailureReason, SourceEvent, SourceFailure};

/// How long a started in-place write may take before the file is read anyway. Writers
/// that close the file (nearly all) are read as soon as they close it; this only bounds
/// the wait for writers that keep the file open.
const WRITE_SETTLE: Duration = Duration::from_millis(100);
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Kubernetes mounts ConfigMaps and Secrets as symlinks through `..data`, which it
/// swaps atomically; the file's own name sees no event then.
const KUBERNETES_DATA_LINK: &str = "..data";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    /// The file was replaced, removed, closed after writing or changed its metadata.
    Now,
    /// A writer is still at work: reading now could see a truncated file.
    Soon,
    /// The watched directory was removed or moved: notifications have stopped.
    DirectoryGone,
}

/// What was last sent, so that repeats are not. A snapshot is remembered by the
/// digest of the bytes it was parsed from, not the bytes: a registry file of 100,000
/// endpoints is ~9 MB that would otherwise be held for as long as the process runs.
enum Last {
    Nothing,
    Snapshot([u8; 32]),
    Failed(SourceFailure),
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

struct Emitter {
    source: FileSource,
    tx: mpsc::Sender<SourceEvent>,
    last: Last,
}

pub(super) async fn run(source: FileSource, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
    let (wake_tx, mut wake_rx) = mpsc::unbounded_channel();
    let target = Target::of(&source.path);
    // Watch before the first read, so a change between the two is not missed.
    let mut watcher = match &target {
        Some(target) => start_watcher(target, wake_tx).map_err(|e| e.to_string()),
        None => Err("the path does not name a file in a directory".to_string()),
    };
    let mut watching = match (&mut watcher, &target) {
        (Ok(watcher), Some(target)) => match watcher.watch(&target.dir, RecursiveMode::NonRecursive) {
            Ok(()) => true,
            Err(e) => {
                warn_polling(&source, &e.to_string());
                false
            }
        },
        (Err(e), _) => {
            warn_polling(&source, e);
            false
        }
        _ => false,
    };

    let mut emitter = Emitter {
        source,
        tx,
        last: Last::Nothing,
    };
    if !emitter.reload(&cancel).await {
        return;
    }
    let mut poll = polling_interval();
    let mut fingerprint = fingerprint(&emitter.source.path);
    let mut settle: Option<Instant> = None;

    loop {
        let read = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = emitter.tx.closed() => return,
            wake = wake_rx.recv(), if watching => {
                let mut wakes = vec![wake.unwrap_or(Wake::DirectoryGone)];
                while let Ok(more) = wake_rx.try_recv() {
                    wakes.push(more);
                }
                if wakes.contains(&Wake::DirectoryGone) {
                    if let (Ok(watcher), Some(target)) = (&mut watcher, &target) {
                        // The kernel has dropped the watch already; this tidies notify's side.
                        let _ = watcher.unwatch(&target.dir);
                    }
                    warn_polling(&emitter.source, "its directory was removed or moved");
                    watching = false;
                    poll = polling_interval();
                    true
                } else if wakes.contains(&Wake::Now) {
                    true
                } else {
                    settle.get_or_insert_with(|| Instant::now() + WRITE_SETTLE);
                    false
                }
            }
            () = tokio::time::sleep_until(settle.unwrap_or_else(Instant::now)), if settle.is_some() => true,
            _ = poll.tick(), if !watching => {
                if let (Ok(watcher), Some(target)) = (&mut watcher, &target)
                    && watcher.watch(&target.dir, RecursiveMode::NonRecursive).is_ok()
                {
                    tracing::info!(
                        registry = %emitter.source.registry,
                        path = %emitter.source.path.display(),
                        "watching the file for changes again"
                    );
                    watching = true;
                    true
                } else {
                    let now = self::fingerprint(&emitter.source.path);
                    std::mem::replace(&mut fingerprint, now) != now
                }
            }
        };
        if read {
            settle = None;
            if !watching {
                fingerprint = self::fingerprint(&emitter.source.path);
            }
            if !emitter.reload(&cancel).await {
                return;
            }
        }
    }
}

fn polling_interval() -> tokio::time::Interval {
    let mut poll = tokio::time::interval_at(Instant::now() + POLL_INTERVAL, POLL_INTERVAL);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    poll
}

fn warn_polling(source: &FileSource, why: &str) {
    tracing::warn!(
        registry = %source.registry,
        path = %source.path.display(),
        "cannot watch the file for changes ({why}); polling it every {}s instead",
        POLL_INTERVAL.as_secs()
    );
}

/// Modification time and length: cheap to compare, and a change in the content that
/// keeps both is caught by the byte comparison after the next read anyway.
fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

struct Target {
    dir: PathBuf,
    name: OsString,
}

impl Target {
    fn of(path: &Path) -> Option<Target> {
        let absolute = std::path::absolute(path).ok()?;
        let name = absolute.file_name()?.to_os_string();
        let dir = absolute.parent()?.to_path_buf();
        Some(Target { dir, name })
    }
}

fn start_watcher(
    target: &Target,
    wake_tx: mpsc::UnboundedSender<Wake>,
) -> notify::Result<RecommendedWatcher> {
    let dir = target.dir.clone();
    let name = target.name.clone();
    RecommendedWatcher::new(
        move |event: notify::Result<notify::Event>| {
            if let Some(wake) = classify(event, &dir, &name) {
                // The task has stopped when this fails; nothing is left to wake.
                let _ = wake_tx.send(wake);
            }
        },
        notify::Config::default(),
    )
}

fn classify(event: notify::Result<notify::Event>, dir: &Path, name: &OsStr) -> Option<Wake> {
    let event = match event {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(path = %dir.display(), "file notification error ({error}); re-reading the file");
            return Some(Wake::Now);
        }
    };
    if event.need_rescan() {
        return Some(Wake::Now);
    }
    if matches!(
        event.kind,
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
    ) && event.paths.iter().any(|p| p == dir)
    {
        return Some(Wake::DirectoryGone);
    }
    let ours = event.paths.iter().any(|p| {
        p.file_name()
            .is_some_and(|n| n == name || n == KUBERNETES_DATA_LINK)
    });
    if !ours {
        return None;
    }
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Wake::Now),
        // Includes the opens and closes of our own reads.
        EventKind::Access(_) => None,
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => Some(Wake::Soon),
        _ => Some(Wake::Now),
    }
}

impl Emitter {
    /// Reads the file and sends what changed. Returns `false` when the task must end.
    async fn reload(&mut self, cancel: &CancellationToken) -> bool {
        let event = tokio::select! {
            biased;
            () = cancel.cancelled() => return false,
            event = self.next_event() => event,
        };
        let Some(event) = event else { return true };
        tokio::select! {
            biased;
            () = cancel.cancelled() => false,
            sent = self.tx.send(event) => sent.is_ok(),
        }
    }

    async fn next_event(&mut self) -> Option<SourceEvent> {
        let source = self.source.clone();
        let bytes = match tokio::task::spawn_blocking(move || source.read()).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(error)) => return self.failed(&error),
            Err(join) => return self.failed_internally(&join),
        };
        let read = digest(&bytes);
        if matches!(&self.last, Last::Snapshot(previous) if *previous == read) {
            return None;
        }
        let source = self.source.clone();
        let parsed = tokio::task::spawn_blocking(move || source.parse(&bytes)).await;
        match parsed {
            Ok(Ok(snapshot)) => {
                tracing::info!(
                    registry = %self.source.registry,
                    path = %self.source.path.display(),
                    services = snapshot.services().len(),
                    instances = snapshot.instance_count(),
                    skipped = snapshot.skipped.len(),
                    "loaded the registry file"
                );
                for skipped in &snapshot.skipped {
                    tracing::debug!("skipped {skipped}");
                }
                self.last = Last::Snapshot(read);
                Some(SourceEvent::Snapshot {
                    registry: self.source.registry.clone(),
                    snapshot,
                })
            }
            Ok(Err(error)) => self.failed(&error),
            Err(join) => self.failed_internally(&join),
        }
    }

    fn failed(&mut self, error: &FileSourceError) -> Option<SourceEvent> {
        self.fail(SourceFailure::of(error))
    }

    fn failed_internally(&mut self, join: &tokio::task::JoinError) -> Option<SourceEvent> {
        self.fail(SourceFailure::new(FailureReason::Internal, format!(
            "registry {:?}: reading {} stopped unexpectedly ({join}); this is a bug in registry-sync, please report it",
            self.source.registry,
            self.source.path.display()
        )))
    }

    fn fail(&mut self, error: SourceFailure) -> Option<SourceEvent> {
        if matches!(&self.last, Last::Failed(previous) if *previous == error) {
            return None;
        }
        // The consumer logs the failure with what it means for the objects.
        tracing::debug!("{error}");
        self.last = Last::Failed(error.clone());
        Some(SourceEvent::Failed {
            registry: self.source.registry.clone(),
            error,
        })
    }
}
