//! Services past the connection budget: watched together, not one connection each.
//!
//! Every blocking query holds an HTTP connection for up to `wait`, and Consul refuses a
//! client more than `limits.http_max_conns_per_client` (200 by default) open
//! connections. So at most [`Budget::watches`] services get a blocking query of their
//! own; the rest — the overflow — are followed through two shared queries:
//!
//! - `/v1/health/state/any` (one blocking query on every check): a service whose checks
//!   came, went or changed status is read again at once. Health changes, and
//!   registrations and deregistrations of instances with checks, arrive in two round
//!   trips.
//! - the catalog query the source runs anyway: its index moves on every registration
//!   change, so each move reads every overflow service again (bounded by
//!   [`Budget::reads`] at a time), which catches what checks do not show — a new port,
//!   new metadata, an instance without checks.
//!
//! A read already running for a service is not started twice: a service asked for again
//! meanwhile is read once more when the running read reports, so a burst costs at most
//! two reads per service.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::parse::{self, CheckStates};
use super::blocking::{Report, follow};

/// How the connection budget is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Budget {
    /// Services with a blocking query of their own.
    pub watches: usize,
    /// Non-blocking reads at once (the first listing, overflow reads).
    pub reads: usize,
}

impl Budget {
    /// Splits `max_connections`: the catalog query and the check-state query hold one
    /// each, a quarter (at most 16) is for reads, the rest is for per-service watches.
    /// The transport never opens more than `max_connections`, idle ones included
    /// (`connections.rs`); this split only decides who waits for one.
    pub(super) fn of(max_connections: usize) -> Budget {
        let reads = (max_connections / 4).clamp(1, 16);
        Budget {
            watches: max_connections.saturating_sub(2 + reads),
            reads,
        }
    }
}

pub(super) struct Overflow {
    client: Client,
    wait: Duration,
    reports: mpsc::Sender<Report>,
    cancel: CancellationToken,
    reads: Arc<Semaphore>,
    services: BTreeSet<String>,
    reading: HashSet<String>,
    again: HashSet<String>,
    checks: Option<CheckStates>,
    feed_started: bool,
}

impl Overflow {
    pub(super) fn new(
        client: Client,
        wait: Duration,
        budget: Budget,
        reports: mpsc::Sender<Report>,
        cancel: CancellationToken,
    ) -> Overflow {
        Overflow {
            client,
            wait,
            reports,
            cancel,
            reads: Arc::new(Semaphore::new(budget.reads)),
            services: BTreeSet::new(),
            reading: HashSet::new(),
            again: HashSet::new(),
            checks: None,
            feed_started: false,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.services.len()
    }

    pub(super) fn services(&self) -> impl Iterator<Item = &String> {
        self.services.iter()
    }

    pub(super) fn contains(&self, service: &str) -> bool {
        self.services.contains(service)
    }

    /// Follows `service` from now on, starting with a read.
    pub(super) fn add(&mut self, service: String) {
        if !self.feed_started {
            self.feed_started = true;
            tokio::spawn(checks_task(
                self.client.clone(),
                self.wait,
                self.reports.clone(),
                self.cancel.clone(),
            ));
        }
        self.read(&service);
        self.services.insert(service);
    }

    pub(super) fn remove(&mut self, service: &str) {
        self.services.remove(service);
        self.again.remove(service);
    }

    /// Takes one service out to give it a watch of its own.
    pub(super) fn take_first(&mut self) -> Option<String> {
        let first = self.services.pop_first()?;
        self.again.remove(&first);
        Some(first)
    }

    /// The catalog moved: read every overflow service again.
    pub(super) fn read_all(&mut self) {
        let services: Vec<String> = self.services.iter().cloned().collect();
        for service in services {
            self.read(&service);
        }
    }

    /// A new answer of the check-state query: reads the services whose checks changed.
    pub(super) fn checks_changed(&mut self, now: CheckStates) {
        if let Some(before) = &self.checks {
            for service in parse::changed_services(before, &now) {
                if self.services.contains(&service) {
                    self.read(&service);
                }
            }
        }
        self.checks = Some(now);
    }

    /// A read of `service` reported; reads it once more if it was asked for meanwhile.
    pub(super) fn read_done(&mut self, service: &str) {
        self.reading.remove(service);
        if self.again.remove(service) && self.services.contains(service) {
            self.read(service);
        }
    }

    fn read(&mut self, service: &str) {
        if !self.reading.insert(service.to_string()) {
            self.again.insert(service.to_string());
            return;
        }
        let client = self.client.clone();
        let reads = Arc::clone(&self.reads);
        let reports = self.reports.clone();
        let cancel = self.cancel.clone();
        let name = service.to_string();
        let wait = self.wait;
        tokio::spawn(async move {
            let Ok(_permit) = reads.acquire_owned().await else {
                return;
            };
            let sent = Instant::now();
            let result = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                result = client.health(&name, 0, wait) => result.map(|answer| answer.body),
            };
            let _ = reports.send(Report::Service { name, sent, result }).await;
        });
    }
}

async fn checks_task(
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
            async move { client.check_states(index, wait).await }
        },
        |_sent, result| Report::Checks(result),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_keeps_two_connections_for_the_shared_queries_and_a_quarter_for_reads() {
        assert_eq!(
            Budget::of(64),
            Budget {
                watches: 46,
                reads: 16
            }
        );
        assert_eq!(
            Budget::of(200),
            Budget {
                watches: 182,
                reads: 16
            }
        );
        assert_eq!(
            Budget::of(8),
            Budget {
                watches: 4,
                reads: 2
            }
        );
        for max in [8, 9, 64, 65, 200, 10_000] {
            let budget = Budget::of(max);
            assert_eq!(budget.watches + budget.reads + 2, max, "{budget:?}");
        }
    }
}
