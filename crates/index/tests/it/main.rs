//! The crate's integration tests, in one test binary; each module is one area. Run one
//! with `cargo test -p registry-sync-index --test it <module>::`.

mod controls;
mod explain;
mod properties;
mod registries;

use std::time::Duration;

use registry_sync_catalog::{RegistryDelta, RegistrySnapshot};
use registry_sync_index::{Event, Index, Update};

/// Feeds an index as a source would, at time zero, where the time does not matter.
pub trait Feed {
    fn update(&mut self, registry: &str, snapshot: &RegistrySnapshot) -> Update;
    fn apply_delta(&mut self, registry: &str, delta: &RegistryDelta) -> Update;
}

impl Feed for Index {
    fn update(&mut self, registry: &str, snapshot: &RegistrySnapshot) -> Update {
        self.apply(registry, Event::View(snapshot), Duration::ZERO)
    }

    fn apply_delta(&mut self, registry: &str, delta: &RegistryDelta) -> Update {
        self.apply(registry, Event::Changed(delta), Duration::ZERO)
    }
}
