//! `run`: watch every registry and keep every sink in step until SIGINT or SIGTERM.
//!
//! One task per registry feeds events into one channel; this loop is the only writer.
//! The first event after a quiet period is applied at once (no debounce delay), and
//! everything that arrived while a pass was running is folded into the next pass, so
//! a burst of changes costs a few passes, not one per event.

use std::time::Duration;

use registry_sync_sources::SourceEvent;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::commands::{CommandError, open_sinks};
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::sources;

const EVENT_QUEUE: usize = 1024;
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

fn handle(pipeline: &mut Pipeline, event: SourceEvent) -> bool {
    match event {
        SourceEvent::Snapshot { registry, snapshot } => {
            tracing::debug!(%registry, services = snapshot.services().len(), "registry view received");
            pipeline.registry_synced(&registry, snapshot)
        }
        SourceEvent::Failed { registry, error } => {
            tracing::warn!(%registry, "registry failing, keeping its last known state: {error}");
            pipeline.registry_failed(&registry);
            false
        }
    }
}

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

/// Runs until `cancel` fires or every source has ended. Needs a multi-threaded runtime.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), CommandError> {
    let mut sinks = open_sinks(&config)?;
    let mut pipeline = Pipeline::new(&config);
    let (tx, mut rx) = mpsc::channel(EVENT_QUEUE);
    let mut tasks = Vec::new();
    for registry in &config.registries {
        tasks.push(sources::spawn_watch(registry, tx.clone(), cancel.child_token()));
    }
    drop(tx);
    tracing::info!(
        registries = config.registries.len(),
        sinks = sinks.len(),
        "watching"
    );

    let mut retry_delay = RETRY_FIRST;
    let mut retry_at: Option<Instant> = None;
    loop {
        let mut changed = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = async { tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)).await }, if retry_at.is_some() => {
                retry_at = None;
                true
            }
            event = rx.recv() => match event {
                Some(event) => handle(&mut pipeline, event),
                None => break,
            },
        };
        while let Ok(event) = rx.try_recv() {
            changed |= handle(&mut pipeline, event);
        }
        if !changed {
            continue;
        }
        if pipeline.sync(&mut sinks).await {
            retry_delay = RETRY_FIRST;
            retry_at = None;
        } else {
            tracing::warn!("some writes failed; retrying in {retry_delay:?}");
            retry_at = Some(Instant::now() + retry_delay);
            retry_delay = (retry_delay * 2).min(RETRY_MAX);
        }
    }
    cancel.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    tracing::info!("stopped");
    Ok(())
}
