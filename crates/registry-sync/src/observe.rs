//! What the binary watches the runtime with: metrics, the status page and progress
//! lines for `run`; progress alone for the one-shot commands.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use registry_sync_index::Update;
use registry_sync_plan::{HeldBack, Plan, Replacement};
use registry_sync_sinks::{ApplyReport, SinkError};
use registry_sync_sources::SourceFailure;
use registry_sync_writer::{Observer, PassProgress};

use crate::metrics::Metrics;
use crate::progress::WriteProgress;

impl PassProgress for WriteProgress {
    fn tick(&self) {
        WriteProgress::tick(self);
    }

    fn finish(self: Box<Self>, written: usize) {
        WriteProgress::finish(*self, written);
    }
}

fn progress(sink: &str, writes: usize, done: Option<Arc<AtomicUsize>>) -> Option<Box<dyn PassProgress>> {
    WriteProgress::start(sink, writes, done).map(|p| Box::new(p) as Box<dyn PassProgress>)
}

/// Progress of long passes, nothing else: `once` and `prune`.
pub struct Progress;

impl Observer for Progress {
    fn pass_started(
        &self,
        sink: &str,
        writes: usize,
        done: Option<Arc<AtomicUsize>>,
    ) -> Option<Box<dyn PassProgress>> {
        progress(sink, writes, done)
    }
}

impl Observer for Metrics {
    fn registry_synced(&self, registry: &str, update: &Update) {
        Metrics::registry_synced(
            self,
            registry,
            update.services,
            update.instances,
            &update.new_problems,
        );
    }

    fn registry_failed(&self, registry: &str, failure: &SourceFailure) {
        Metrics::registry_failed(self, registry, failure);
    }

    fn held_back(&self, sink: &str, held_back: &[HeldBack]) {
        Metrics::held_back(self, sink, held_back);
    }

    fn replacements(&self, sink: &str, waiting: &[Replacement]) {
        Metrics::replacements(self, sink, waiting);
    }

    fn applied(&self, sink: &str, plan: &Plan, report: &ApplyReport) {
        Metrics::applied(self, sink, plan, report);
    }

    fn sink_failed(&self, sink: &str, error: &SinkError) {
        Metrics::sink_failed(self, sink, error);
    }

    fn quarantined(&self, sink: &str, objects: usize) {
        Metrics::quarantined(self, sink, objects);
    }

    fn change_applied(&self, sink: &str, took: Duration) {
        self.propagation.observe(took.as_secs_f64());
        self.status.change_applied(sink, took);
    }

    fn leadership(&self, leading: bool) {
        self.leader.set(i64::from(leading));
        self.status.set_leader(leading);
    }

    fn pass_started(
        &self,
        sink: &str,
        writes: usize,
        done: Option<Arc<AtomicUsize>>,
    ) -> Option<Box<dyn PassProgress>> {
        progress(sink, writes, done)
    }
}
