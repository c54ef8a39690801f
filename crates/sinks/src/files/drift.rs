//! Seeing the output directory change underneath the sink: a file someone deleted,
//! edited or added. inotify (through notify) reports file names; the sink re-reads
//! each named file and takes in what it holds now, so the writer plans those objects
//! again within milliseconds instead of at the next resync.
//!
//! The callback runs on notify's thread and only forwards names into a bounded
//! channel. When the channel is full, names are dropped and a flag asks for one full
//! rescan instead: memory stays bounded however busy the directory is, and nothing is
//! missed.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::is_yaml;
use crate::FilesError;

const NAMES_QUEUE: usize = 1024;

pub(super) struct DirWatch {
    /// Kept alive: dropping it stops the notifications.
    _watcher: RecommendedWatcher,
    names: mpsc::Receiver<OsString>,
    overflowed: Arc<AtomicBool>,
}

/// What changed since the last look.
pub(super) enum Seen {
    Files(BTreeSet<OsString>),
    /// Too much to list: look at every file.
    Everything,
}

impl DirWatch {
    pub(super) fn start(dir: &Path) -> Result<DirWatch, FilesError> {
        let (tx, names) = mpsc::channel(NAMES_QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&overflowed);
        let error = |source| FilesError::Watch {
            path: dir.to_path_buf(),
            source,
        };
        let mut watcher = RecommendedWatcher::new(
            move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else {
                    // notify lost track (a queue overflow in the kernel): rescan.
                    flag.store(true, Ordering::Relaxed);
                    let _ = tx.try_send(OsString::new());
                    return;
                };
                if matches!(event.kind, EventKind::Access(_)) {
                    return;
                }
                for path in event.paths {
                    let Some(name) = path.file_name().filter(|n| is_yaml(n)) else {
                        continue;
                    };
                    if tx.try_send(name.to_os_string()).is_err() {
                        flag.store(true, Ordering::Relaxed);
                    }
                }
            },
            notify::Config::default(),
        )
        .map_err(error)?;
        watcher.watch(dir, RecursiveMode::NonRecursive).map_err(error)?;
        Ok(DirWatch {
            _watcher: watcher,
            names,
            overflowed,
        })
    }

    /// Waits for the next change, then takes everything queued with it.
    pub(super) async fn next(&mut self) -> Seen {
        let Some(first) = self.names.recv().await else {
            return std::future::pending().await;
        };
        let mut names = BTreeSet::from([first]);
        while let Ok(name) = self.names.try_recv() {
            names.insert(name);
        }
        if self.overflowed.swap(false, Ordering::Relaxed) {
            return Seen::Everything;
        }
        names.remove(&OsString::new());
        Seen::Files(names)
    }
}
