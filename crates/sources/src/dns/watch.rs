//! Following DNS: look every name up, then each again when its records expire.
//!
//! A round looks up the names that are due: their SRV records first, then every
//! distinct target once (A and AAAA), however many names share it. The answers are
//! folded into the shared state and one snapshot goes out if anything changed.
//!
//! No snapshot is sent before every name has been answered once: a first view with a
//! name missing would delete that service's objects. A name whose lookup fails keeps
//! its last known service and is tried again with backoff; when no lookup of a round
//! succeeds at all the server is unreachable, and one failure is reported.

use std::collections::{BTreeMap, HashMap, HashSet};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lookup::{Answer, Lookups};
use super::records::{self, SrvRecord, TargetAddresses};
use super::schedule::{Schedule, refresh_after};
use super::{DnsError, DnsSource, SrvName};
use crate::SourceEvent;
use crate::emit::{Backoff, Emitter, Stopped};
use crate::state::{Item, Services};

/// What one name's lookup found.
pub(super) enum Outcome {
    /// The service's items, and the smallest TTL of the records behind them.
    Found { items: BTreeMap<String, Item>, ttl: u32 },
    /// `NXDOMAIN` or no SRV record: the service is gone.
    Gone { ttl: u32 },
}

/// Looks up the names at `due` (indices into `names`), sharing target lookups.
pub(super) async fn round(
    lookups: &Lookups,
    names: &[SrvName],
    due: &[usize],
) -> Vec<(usize, Result<Outcome, DnsError>)> {
    let mut srv_lookups = JoinSet::new();
    for &index in due {
        let lookups = lookups.clone();
        let name = names[index].name().to_string();
        srv_lookups.spawn(async move { (index, lookups.srv(&name).await) });
    }
    let mut answers: Vec<(usize, Result<Answer<SrvRecord>, DnsError>)> = srv_lookups.join_all().await;
    answers.sort_by_key(|(index, _)| *index);

    let mut targets: HashSet<String> = HashSet::new();
    for (_, answer) in &answers {
        if let Ok(Answer::Records(records, _)) = answer {
            targets.extend(records::published(records).iter().map(|r| r.target.clone()));
        }
    }
    let mut target_lookups = JoinSet::new();
    for target in targets {
        let lookups = lookups.clone();
        target_lookups.spawn(async move {
            let result = lookups.addresses(&target).await;
            (target, result)
        });
    }
    let resolved: HashMap<String, Result<(TargetAddresses, u32), DnsError>> =
        target_lookups.join_all().await.into_iter().collect();

    let registry = lookups.registry();
    answers
        .into_iter()
        .map(|(index, answer)| {
            let outcome = match answer {
                Err(error) => Err(error),
                Ok(Answer::None { ttl, .. }) => Ok(Outcome::Gone { ttl }),
                Ok(Answer::Records(srv, srv_ttl)) => {
                    outcome(registry, &names[index], &srv, srv_ttl, &resolved)
                }
            };
            (index, outcome)
        })
        .collect()
}

/// A name's service from its SRV records and what its targets resolved to; a target
/// whose lookup failed fails the name (its last state is kept).
fn outcome(
    registry: &str,
    name: &SrvName,
    srv: &[SrvRecord],
    srv_ttl: u32,
    resolved: &HashMap<String, Result<(TargetAddresses, u32), DnsError>>,
) -> Result<Outcome, DnsError> {
    let mut ttl = srv_ttl;
    let mut targets = HashMap::new();
    for record in records::published(srv) {
        match resolved.get(&record.target) {
            Some(Ok((addresses, target_ttl))) => {
                ttl = ttl.min(*target_ttl);
                targets.insert(record.target.clone(), addresses.clone());
            }
            Some(Err(error)) => return Err(error.clone()),
            None => {}
        }
    }
    Ok(Outcome::Found {
        items: records::items(registry, name, srv, &targets),
        ttl,
    })
}

pub(super) async fn run(source: DnsSource, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
    let mut emitter = Emitter::new(&source.registry, tx, cancel);
    let lookups = match Lookups::new(&source.registry, source.config.nameserver) {
        Ok(lookups) => lookups,
        Err(error) => {
            // Nothing can change without a new configuration: report it and wait.
            if emitter.failed(crate::SourceFailure::of(&error)).await.is_ok() {
                emitter.cancel().cancelled().await;
            }
            return;
        }
    };
    let _ = follow(&source, &lookups, &mut emitter).await;
}

async fn follow(source: &DnsSource, lookups: &Lookups, emitter: &mut Emitter) -> Result<(), Stopped> {
    let config = &source.config;
    let names = &config.names;
    let mut state = Services::new(&source.registry);
    let mut schedule = Schedule::new(names.len());
    let mut answered = vec![false; names.len()];
    // Looked up at least once, answered or not.
    let mut tried = vec![false; names.len()];
    let mut backoffs: HashMap<usize, Backoff> = HashMap::new();
    loop {
        if let Some(next) = schedule.next() {
            tokio::select! {
                biased;
                () = emitter.cancel().cancelled() => return Err(Stopped),
                () = tokio::time::sleep_until(next) => {}
            }
        }
        let due = schedule.take_due(Instant::now());
        let mut first_error = None;
        for (index, outcome) in round(lookups, names, &due).await {
            let name = &names[index];
            let now = Instant::now();
            match outcome {
                Ok(outcome) => {
                    let ttl = match outcome {
                        Outcome::Found { items, ttl } => {
                            state.replace_service(name.service(), items);
                            ttl
                        }
                        Outcome::Gone { ttl } => {
                            state.remove_service(name.service());
                            ttl
                        }
                    };
                    if backoffs.remove(&index).is_some() {
                        tracing::info!(registry = %source.registry, name = name.name(), "lookup succeeds again");
                    }
                    answered[index] = true;
                    tried[index] = true;
                    state.set_unknown(name.service(), false);
                    schedule.set(
                        index,
                        now + refresh_after(ttl, config.min_refresh, config.max_refresh),
                    );
                }
                Err(error) => {
                    let backoff = backoffs.entry(index).or_insert_with(|| {
                        tracing::warn!("{error}; keeping the last known state of {}", name.service());
                        Backoff::new()
                    });
                    let delay = backoff
                        .next_delay()
                        .min(config.max_refresh.max(config.min_refresh));
                    tracing::debug!(registry = %source.registry, name = name.name(), "retrying in {delay:?}: {error}");
                    schedule.set(index, now + delay);
                    tried[index] = true;
                    // Never answered: nothing is known of it, so nothing of it may go.
                    if !answered[index] {
                        state.set_unknown(name.service(), true);
                    }
                    first_error.get_or_insert(error);
                }
            }
        }
        // Failing: every name's latest lookup failed (the server is down). One bad name
        // among good ones keeps its last state — or, never answered, is unknown, so
        // nothing of it is deleted — and the others sync on. The first view waits until
        // every name was tried once.
        let everything_tried = tried.iter().all(|t| *t);
        match first_error {
            Some(error) if backoffs.len() == names.len() => {
                emitter.failed(crate::SourceFailure::of(&error)).await?;
            }
            _ if everything_tried => emitter.snapshot(&mut state).await?,
            _ => {}
        }
        if names.is_empty() {
            // Nothing to look up, ever: the empty view has been sent.
            emitter.cancel().cancelled().await;
            return Err(Stopped);
        }
    }
}
