//! `run`: watch every registry and keep every sink in step until SIGINT or SIGTERM.
//!
//! Only wiring: the admin endpoints, the sinks, one task per registry sending source
//! events into one bounded channel, and the writer library's
//! [`Runtime`], which folds them into the index and drives one writer per sink
//! (ARCHITECTURE.md draws the tasks and channels).

use std::sync::Arc;
use std::time::Duration;

use registry_sync_writer::{Observer, Ready, Runtime, SharedIndex, join_within};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::config::Config;
use crate::error::CommandError;
use crate::metrics::Metrics;
use crate::sinks::{Purpose, open_sinks};
use crate::sources;

const EVENT_QUEUE: usize = 1024;

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
    let metrics = Metrics::new();
    let ready = Ready::default();
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
        admin::serve(
            listen,
            metrics.clone(),
            ready.clone(),
            cancel.child_token(),
            routes,
        )
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
    let (sinks, leadership) = (opened.sinks, opened.leadership);
    metrics.leader.set(i64::from(leadership.is_leader()));
    metrics.status.configure(
        &config.instance,
        std::iter::empty(),
        sinks.iter().map(|named| named.name.as_str()),
    );
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
    let index = SharedIndex::new(config.index());
    install_status(&metrics, &index);
    let runtime = Runtime {
        settings: config.writer_settings(),
        leadership: leadership.clone(),
        observer: Arc::new(metrics) as Arc<dyn Observer>,
        ready,
    };
    runtime.run(index, sinks, rx, cancel.clone()).await;
    cancel.cancel();
    join_within(source_tasks, "registry tasks").await;
    // Leader election releases its lease on cancel; give it a moment.
    if leadership.is_elected() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The status page looks services up in the index and lists its problems.
pub fn install_status(metrics: &Metrics, index: &SharedIndex) {
    let (searched, listed) = (index.clone(), index.clone());
    metrics.status.install(
        // Only the look-up holds the index: explaining a large service takes long.
        Box::new(move |query| {
            let lookup = searched.lock().lookup(query);
            lookup.explain()
        }),
        Box::new(move || listed.lock().problems_with_sources()),
    );
}
