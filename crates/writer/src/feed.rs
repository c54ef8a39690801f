//! Source events into the index: the one place a registry's report becomes state,
//! logged and told to the observer.

use std::time::Duration;

use registry_sync_catalog::Skipped;
use registry_sync_index::{Event, Index, Update};
use registry_sync_sources::SourceEvent;

use crate::observer::Observer;

fn log_problem(skip: &Skipped) {
    tracing::warn!(
        registry = %skip.registry,
        service = %skip.service,
        instance = skip.instance.as_deref().unwrap_or(""),
        "skipped: {}",
        skip.reason
    );
}

/// Takes one source event at `now` (the index's time). Returns whether writers have
/// anything new to look at.
pub fn take(index: &mut Index, event: SourceEvent, now: Duration, observer: &dyn Observer) -> bool {
    match event {
        SourceEvent::Snapshot { registry, snapshot } => {
            tracing::debug!(%registry, services = snapshot.services().len(), "registry view received");
            let update = index.apply(&registry, Event::View(&snapshot), now);
            report(&registry, &update, observer)
        }
        SourceEvent::Changed { registry, delta } => {
            tracing::debug!(%registry, changed = delta.upserts.len(), removed = delta.removed.len(), "registry change received");
            let update = index.apply(&registry, Event::Changed(&delta), now);
            report(&registry, &update, observer)
        }
        SourceEvent::Failed { registry, error } => {
            tracing::warn!(%registry, "registry failing, keeping its last known state: {error}");
            observer.registry_failed(&registry, &error);
            index.apply(&registry, Event::Failed, now);
            false
        }
    }
}

fn report(registry: &str, update: &Update, observer: &dyn Observer) -> bool {
    update.new_problems.iter().for_each(log_problem);
    observer.registry_synced(registry, update);
    for key in &update.unknown {
        tracing::debug!(%registry, service = %key, "service could not be read; its objects stay as they are");
    }
    for moved in &update.moves {
        tracing::info!(%registry, "{moved}");
    }
    for note in &update.notes {
        tracing::debug!(registry = %note.registry, service = %note.service, instance = note.instance.as_deref().unwrap_or(""), "{}", note.reason);
    }
    update.is_news()
}
