//! What the runtime tells whoever watches it — metrics, the status page, progress on a
//! terminal — through one trait, so the runtime knows none of them and a test or a
//! bench watches it with [`Quiet`].

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use registry_sync_index::Update;
use registry_sync_plan::{HeldBack, Plan, Replacement};
use registry_sync_sinks::{ApplyReport, SinkError};
use registry_sync_sources::SourceFailure;

/// Every method has a default that does nothing: an observer says what it watches.
pub trait Observer: Send + Sync + 'static {
    /// A registry's view or change went into the index.
    fn registry_synced(&self, _registry: &str, _update: &Update) {}

    /// A registry cannot be read; its last known state stays.
    fn registry_failed(&self, _registry: &str, _failure: &SourceFailure) {}

    /// The guard holds these changes of a sink back.
    fn held_back(&self, _sink: &str, _held_back: &[HeldBack]) {}

    /// Objects of a sink that wait for their successors.
    fn replacements(&self, _sink: &str, _waiting: &[Replacement]) {}

    /// A pass over a sink ended with this report.
    fn applied(&self, _sink: &str, _plan: &Plan, _report: &ApplyReport) {}

    /// A sink could not be used at all.
    fn sink_failed(&self, _sink: &str, _error: &SinkError) {}

    /// Objects a sink refused, waiting for another try.
    fn quarantined(&self, _sink: &str, _objects: usize) {}

    /// A change reached a sink this long after it reached registry-sync.
    fn change_applied(&self, _sink: &str, _took: Duration) {}

    /// This replica leads, or no longer does (only where an election is held).
    fn leadership(&self, _leading: bool) {}

    /// A pass of `writes` writes begins on `sink`; `done` counts the sink's own
    /// progress where it keeps one. A report of its progress, or `None`.
    fn pass_started(
        &self,
        _sink: &str,
        _writes: usize,
        _done: Option<Arc<AtomicUsize>>,
    ) -> Option<Box<dyn PassProgress>> {
        None
    }
}

/// A long pass, reported while it runs.
pub trait PassProgress: Send + Sync {
    /// Called every second or so while the pass runs.
    fn tick(&self);
    /// The pass ended with `written` writes done.
    fn finish(self: Box<Self>, written: usize);
}

/// Watches nothing: tests and benches.
pub struct Quiet;

impl Observer for Quiet {}
