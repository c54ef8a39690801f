//! One blocking query, as Consul's documentation asks it to be followed: the index
//! bookkeeping and the loop every query of the source runs (the catalog's, each watched
//! service's, and the overflow's health query), reporting to the coordinator.

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::Answer;
use super::parse::{CheckStates, Parsed};
use super::{ConsulError, QUERY_FLOOR};
use crate::emit::Backoff;

type Catalog = std::collections::BTreeMap<String, Vec<String>>;

/// What a query tells the coordinator.
pub(super) enum Report {
    Catalog(Result<Catalog, ConsulError>),
    /// Every service check's status (only while some services overflow the budget).
    Checks(Result<CheckStates, ConsulError>),
    Service {
        name: String,
        /// When the request that failed was sent: a failure older than the last
        /// catalog answer is a straggler of an outage that is already over.
        sent: Instant,
        result: Result<Parsed, ConsulError>,
    },
}

/// The index bookkeeping of one blocking query, as Consul's documentation asks.
pub(super) struct Index {
    value: u64,
    last_change: Option<Instant>,
}

impl Index {
    pub(super) fn new() -> Index {
        Index {
            value: 0,
            last_change: None,
        }
    }

    pub(super) fn value(&self) -> u64 {
        self.value
    }

    /// Takes an answer's index; returns whether the data may have changed (the index
    /// moved) and when the next query may start. Backwards resets to 0; 0 becomes 1.
    pub(super) fn advance(&mut self, answered: u64, sent: Instant, now: Instant) -> (bool, Instant) {
        let changed = answered != self.value;
        self.value = match answered {
            0 => 1,
            n if n < self.value => 0,
            n => n,
        };
        let follows_change = self
            .last_change
            .is_some_and(|t| now.duration_since(t) < QUERY_FLOOR);
        let next = if changed && !follows_change {
            now
        } else {
            sent + QUERY_FLOOR
        };
        if changed {
            self.last_change = Some(now);
        }
        (changed, next)
    }

    /// After a failure the next query asks for everything, without blocking.
    pub(super) fn reset(&mut self) {
        self.value = 0;
    }
}

/// The loop every blocking query runs: ask, report what changed, respect the floor,
/// back off after a failure and then ask again from index 0.
pub(super) async fn follow<T, Q, F>(
    cancel: CancellationToken,
    reports: mpsc::Sender<Report>,
    query: Q,
    report: impl Fn(Instant, Result<T, ConsulError>) -> Report,
) where
    Q: Fn(u64) -> F,
    F: std::future::Future<Output = Result<Answer<T>, ConsulError>>,
{
    let mut index = Index::new();
    let mut backoff = Backoff::new();
    loop {
        let sent = Instant::now();
        let answer = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            answer = query(index.value()) => answer,
        };
        let (message, next) = match answer {
            Ok(answer) => {
                backoff.reset();
                let (changed, next) = index.advance(answer.index, sent, Instant::now());
                (changed.then(|| report(sent, Ok(answer.body))), next)
            }
            Err(error) => {
                index.reset();
                (
                    Some(report(sent, Err(error))),
                    Instant::now() + backoff.next_delay(),
                )
            }
        };
        if let Some(message) = message {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                sent = reports.send(message) => if sent.is_err() { return },
            }
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_index_that_goes_backwards_resets_to_zero_and_zero_becomes_one() {
        let start = Instant::now();
        let mut index = Index::new();
        assert!(index.advance(10, start, start).0);
        assert_eq!(index.value(), 10);
        assert!(index.advance(3, start, start + Duration::from_secs(1)).0);
        assert_eq!(index.value(), 0, "backwards: ask for everything again");
        index.advance(0, start, start + Duration::from_secs(2));
        assert_eq!(
            index.value(),
            1,
            "a zero index would make every query return at once"
        );
    }

    #[test]
    fn the_first_change_is_asked_after_at_once_and_unchanged_answers_wait_out_the_floor() {
        let t0 = Instant::now();
        let mut index = Index::new();
        let (_, next) = index.advance(5, t0, t0);
        assert_eq!(next, t0, "a change: ask again at once");
        let t1 = t0 + Duration::from_millis(10);
        let (changed, next) = index.advance(6, t1, t1);
        assert!(changed);
        assert_eq!(next, t1 + QUERY_FLOOR, "a second change within the floor waits");
        let t2 = t1 + Duration::from_secs(1);
        let (changed, next) = index.advance(6, t2, t2);
        assert!(!changed);
        assert_eq!(next, t2 + QUERY_FLOOR, "an unchanged answer never spins");
    }
}
