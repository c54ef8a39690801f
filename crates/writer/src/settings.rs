//! What every writer of one installation shares: whose objects it may write, and how
//! much a registry may lose at once before the mass-change guard holds it back.

use std::sync::Arc;
use std::time::Duration;

use registry_sync_plan::{MassChangeGuard, Owner};

use crate::observer::Observer;
use crate::writer::{NamedSink, SinkWriter};

#[derive(Clone, Debug)]
pub struct WriterSettings {
    /// Whose objects plans may write and delete.
    pub owner: Owner,
    /// Percent of a registry's objects or endpoints that may go within
    /// [`WriterSettings::guard_window`]; `None` when mass changes are confirmed.
    pub max_delete_percent: Option<u32>,
    pub guard_window: Duration,
}

impl WriterSettings {
    /// A fresh guard: each writer judges what its own sink holds.
    pub fn new_guard(&self) -> Option<MassChangeGuard> {
        self.max_delete_percent
            .map(|percent| MassChangeGuard::new(percent, self.guard_window))
    }

    /// The writer of one sink, with its own guard.
    pub fn writer(&self, sink: NamedSink, observer: Arc<dyn Observer>) -> SinkWriter {
        SinkWriter::new(sink, self.owner.clone(), self.new_guard(), observer)
    }
}
