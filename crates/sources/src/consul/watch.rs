//! Following Consul: one blocking query on the catalog, one per watched service (up to
//! the connection budget; the rest are followed together, see [`super::overflow`]),
//! each in its own task, reporting to one coordinator that owns the state and the
//! emitter.
//!
//! The coordinator applies every report already queued before it sends one snapshot,
//! so the first change of a burst goes out at once and the rest of the burst costs one
//! snapshot. The first snapshot waits until every service of the first catalog answer
//! has been read, so a consumer never sees a half-listed registry.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::blocking::{Report, follow};
use super::client::{Answer, Client};
use super::overflow::{Budget, Overflow};
use super::parse::Parsed;
use super::ConsulSource;
use crate::SourceEvent;
use crate::emit::Emitter;
use crate::state::Services;

pub(super) async fn run(source: ConsulSource, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
    let mut emitter = Emitter::new(&source.registry, tx.clone(), cancel.clone());
    let client = match Client::new(&source.registry, &source.config) {
        Ok(client) => client,
        Err(error) => {
            // A bad CA file does not heal by retrying; report and wait for the end.
            if emitter.failed(crate::SourceFailure::of(&error)).await.is_ok() {
                cancel.cancelled().await;
            }
            return;
        }
    };
    let tasks = cancel.child_token();
    let _stop_tasks = tasks.clone().drop_guard();
    let (reports, mut inbox) = mpsc::channel(1024);
    tokio::spawn(catalog_task(
        client.clone(),
        source.config.wait,
        reports.clone(),
        tasks.clone(),
    ));

    let budget = Budget::of(source.config.max_connections);
    let mut overflow = Overflow::new(
        client.clone(),
        source.config.wait,
        budget,
        reports.clone(),
        tasks.clone(),
    );
    let mut state = Services::new(&source.registry);
    let mut watched: HashMap<String, DropGuard> = HashMap::new();
    let mut unread: HashSet<String> = HashSet::new();
    let mut listed = false;
    let mut catalog_at = Instant::now();
    let mut last_service_error: Option<crate::SourceFailure> = None;

    loop {
        let first = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = tx.closed() => return,
            report = inbox.recv() => match report { Some(r) => r, None => return },
        };
        let mut next = Some(first);
        let mut failure = None;
        while let Some(report) = next.take() {
            match report {
                Report::Catalog(Ok(catalog)) => {
                    catalog_at = Instant::now();
                    // The index moved: what changed may be an overflow service's.
                    if listed {
                        overflow.read_all();
                    }
                    listed = true;
                    let selected: std::collections::BTreeSet<String> = catalog
                        .into_iter()
                        .filter(|(name, tags)| source.config.selects(name, tags))
                        .map(|(name, _)| name)
                        .collect();
                    // Removing a service also forgets that it could not be read.
                    let mut forget = |name: &str, state: &mut Services| {
                        state.remove_service(name);
                        unread.remove(name);
                    };
                    watched.retain(|name, _| {
                        let keep = selected.contains(name);
                        if !keep {
                            forget(name, &mut state);
                        }
                        keep
                    });
                    let gone: Vec<String> = overflow
                        .services()
                        .filter(|n| !selected.contains(*n))
                        .cloned()
                        .collect();
                    for name in gone {
                        overflow.remove(&name);
                        forget(&name, &mut state);
                    }
                    for name in selected {
                        if watched.contains_key(&name) || overflow.contains(&name) {
                            continue;
                        }
                        unread.insert(name.clone());
                        if watched.len() < budget.watches {
                            watched.insert(
                                name.clone(),
                                start_watch(&client, &name, &source, &reports, &tasks),
                            );
                        } else {
                            overflow.add(name);
                        }
                    }
                    // Slots freed by services that left go to overflow services.
                    while watched.len() < budget.watches
                        && let Some(name) = overflow.take_first()
                    {
                        watched.insert(
                            name.clone(),
                            start_watch(&client, &name, &source, &reports, &tasks),
                        );
                    }
                }
                Report::Checks(Ok(states)) => overflow.checks_changed(states),
                Report::Checks(Err(error)) => failure = Some(error),
                Report::Service {
                    name,
                    result: Ok(parsed),
                    ..
                } => {
                    overflow.read_done(&name);
                    // A report from a task already stopped is ignored.
                    if watched.contains_key(&name) || overflow.contains(&name) {
                        unread.remove(&name);
                        if state.set_unknown(&name, false) {
                            tracing::info!(registry = %source.registry, service = %name, "service readable again");
                        }
                        match parsed {
                            Parsed::Items(items) => state.replace_service(&name, items),
                            Parsed::Infrastructure => state.remove_service(&name),
                        }
                    }
                }
                Report::Service {
                    name,
                    sent,
                    result: Err(error),
                } if sent < catalog_at => {
                    overflow.read_done(&name);
                    tracing::debug!(registry = %source.registry, "ignoring a failure from before the last catalog answer: {error}");
                }
                // One service that cannot be read keeps its own last known state (or,
                // never read, is marked unknown so nothing of it is deleted); every
                // other service moves on.
                Report::Service {
                    name,
                    result: Err(error),
                    ..
                } => {
                    overflow.read_done(&name);
                    if watched.contains_key(&name) || overflow.contains(&name) {
                        unread.remove(&name);
                        if state.set_unknown(&name, true) {
                            tracing::warn!(
                                "{error}; keeping the last known state of service {name:?}, the others sync on"
                            );
                        }
                        last_service_error = Some(crate::SourceFailure::of(&error));
                    }
                }
                Report::Catalog(Err(error)) => {
                    failure = Some(error);
                }
            }
            next = inbox.try_recv().ok();
        }
        // Every watched service failing is Consul failing, not one bad service.
        let followed = watched.len() + overflow.len();
        let all_unknown = followed > 0 && state.unknown_count() == followed;
        let failure = failure
            .map(|e| crate::SourceFailure::of(&e))
            .or_else(|| all_unknown.then(|| last_service_error.clone()).flatten());
        if let Some(error) = failure {
            if emitter.failed(error).await.is_err() {
                return;
            }
        } else if listed && unread.is_empty() && emitter.snapshot(&mut state).await.is_err() {
            return;
        }
    }
}

async fn catalog_task(
    client: Client,
    wait: Duration,
    reports: mpsc::Sender<Report>,
    cancel: CancellationToken,
) {
    follow(
        cancel,
        reports,
        |index| {
            let client = client.clone();
            async move {
                client.catalog(index, wait).await.map(|a| Answer {
                    index: a.index,
                    body: a.body,
                })
            }
        },
        |_sent, result| Report::Catalog(result),
    )
    .await;
}

async fn service_task(
    client: Client,
    name: String,
    wait: Duration,
    reports: mpsc::Sender<Report>,
    cancel: CancellationToken,
) {
    let query = name.clone();
    follow(
        cancel,
        reports,
        |index| {
            let client = client.clone();
            let name = query.clone();
            async move { client.health(&name, index, wait).await }
        },
        |sent, result| Report::Service {
            name: name.clone(),
            sent,
            result,
        },
    )
    .await;
}

/// Starts the blocking query of one service; dropping the guard stops it.
fn start_watch(
    client: &Client,
    name: &str,
    source: &ConsulSource,
    reports: &mpsc::Sender<Report>,
    tasks: &CancellationToken,
) -> DropGuard {
    let token = tasks.child_token();
    tokio::spawn(service_task(
        client.clone(),
        name.to_string(),
        source.config.wait,
        reports.clone(),
        token.clone(),
    ));
    token.drop_guard()
}
