//! What `run` is doing, for people: every registry and every sink with their state, and
//! a search over services and hosts, served as a page and as JSON by the admin
//! endpoint.
//!
//! The board is fed by the same hooks as the metrics (a registry synced or failing, a
//! pass applied), so it costs nothing between refreshes; what only the index knows (the
//! skipped items, a search) is asked of it when a page is requested, through functions
//! `run` installs, so this module depends on no runtime type. Nothing on it is secret:
//! names, counts, times and the reasons the rest of the program logs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use registry_sync_catalog::Skipped;
use registry_sync_plan::{HeldBack, Plan, Replacement};
use registry_sync_sinks::ApplyReport;
use registry_sync_sources::SourceFailure;
use registry_sync_sources::requests::Requests;
use registry_sync_translate::Found;
use serde::Serialize;

mod page;

pub use page::render;

/// Items named per skip reason; the rest are counted.
const FIRST_NAMED: usize = 5;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Clone, Debug, Serialize)]
pub struct RegistryRow {
    pub name: String,
    pub kind: String,
    /// `waiting` (no view yet), `up` or `down`.
    pub state: &'static str,
    /// When the state began (Unix seconds).
    pub since: u64,
    pub last_complete_view: Option<u64>,
    pub services: usize,
    pub instances: usize,
    /// Why it is down, as logged.
    pub error: Option<String>,
    /// The kind of failure (`unreachable`, `denied`, …, as the failure metric's
    /// `reason` label), to act on without reading the message.
    pub reason: Option<&'static str>,
    /// Requests sent to it in the last 60 seconds: what watching it costs the registry.
    pub requests_per_minute: u64,
    /// Requests sent to it since the process started.
    pub requests: u64,
    /// Skipped items by reason, with the first few named.
    pub skipped: BTreeMap<String, SkipSummary>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SkipSummary {
    pub count: usize,
    pub first: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    pub object: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SinkRow {
    pub name: String,
    pub last_pass: Option<u64>,
    pub last_write: Option<u64>,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub status_patches: u64,
    /// From the registry change reaching registry-sync to its last write landing here.
    pub change_lag_ms: Option<u64>,
    /// Writes waiting: held back by the guard, or quarantined.
    pub pending: usize,
    /// Objects a user owns under the names we would write.
    pub conflicts: Vec<Problem>,
    /// Objects the sink refused, tried again alone.
    pub quarantined: Vec<Problem>,
    /// Mass changes the guard holds, with how to confirm them.
    pub held_back: Vec<String>,
    /// Objects kept until their successors are in the sink, and why.
    pub replacements: Vec<Problem>,
    #[serde(skip)]
    held_back_keys: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub instance: String,
    pub started: u64,
    pub now: u64,
    pub leader: Option<bool>,
    pub registries: Vec<RegistryRow>,
    pub sinks: Vec<SinkRow>,
}

type Search = dyn Fn(&str) -> Found + Send + Sync;
type Problems = dyn Fn() -> Vec<Skipped> + Send + Sync;

#[derive(Default)]
struct Board {
    instance: String,
    started: u64,
    leader: Option<bool>,
    registries: BTreeMap<String, RegistryRow>,
    sinks: BTreeMap<String, SinkRow>,
}

/// Shared by the hooks that feed it and the endpoint that shows it.
#[derive(Clone, Default)]
pub struct StatusBoard {
    board: Arc<Mutex<Board>>,
    search: Arc<OnceLock<Box<Search>>>,
    problems: Arc<OnceLock<Box<Problems>>>,
}

impl StatusBoard {
    fn with<T>(&self, f: impl FnOnce(&mut Board) -> T) -> T {
        let mut board = self.board.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut board)
    }

    /// The registries and sinks of the config, before anything happened.
    pub fn configure<'a>(
        &self,
        instance: &str,
        registries: impl IntoIterator<Item = (&'a str, &'a str)>,
        sinks: impl IntoIterator<Item = &'a str>,
    ) {
        let now = unix_now();
        self.with(|board| {
            board.instance = instance.to_string();
            board.started = now;
            for (name, kind) in registries {
                board.registries.insert(
                    name.to_string(),
                    RegistryRow {
                        name: name.to_string(),
                        kind: kind.to_string(),
                        state: "waiting",
                        since: now,
                        last_complete_view: None,
                        services: 0,
                        instances: 0,
                        error: None,
                        reason: None,
                        requests_per_minute: 0,
                        requests: 0,
                        skipped: BTreeMap::new(),
                    },
                );
            }
            for name in sinks {
                board.sinks.insert(
                    name.to_string(),
                    SinkRow {
                        name: name.to_string(),
                        ..SinkRow::default()
                    },
                );
            }
        });
    }

    /// How the page searches and lists what was skipped: asked of the index on request.
    pub fn install(&self, search: Box<Search>, problems: Box<Problems>) {
        let _ = self.search.set(search);
        let _ = self.problems.set(problems);
    }

    pub(crate) fn registry_synced(&self, registry: &str, services: usize, instances: usize) {
        let now = unix_now();
        self.with(|board| {
            if let Some(row) = board.registries.get_mut(registry) {
                if row.state != "up" {
                    row.state = "up";
                    row.since = now;
                }
                row.error = None;
                row.last_complete_view = Some(now);
                row.services = services;
                row.instances = instances;
            }
        });
    }

    pub fn registry_failed(&self, registry: &str, failure: &SourceFailure) {
        let now = unix_now();
        self.with(|board| {
            if let Some(row) = board.registries.get_mut(registry) {
                if row.state != "down" {
                    row.state = "down";
                    row.since = now;
                }
                row.error = Some(failure.message.clone());
                row.reason = Some(failure.reason.metric_label());
            }
        });
    }

    pub(crate) fn set_leader(&self, leading: bool) {
        self.with(|board| board.leader = Some(leading));
    }

    pub(crate) fn held_back(&self, sink: &str, held_back: &[HeldBack]) {
        self.with(|board| {
            if let Some(row) = board.sinks.get_mut(sink) {
                row.held_back = held_back.iter().map(HeldBack::describe).collect();
                row.held_back_keys = held_back.iter().map(|h| h.keys.len()).sum();
            }
        });
    }

    pub(crate) fn replacements(&self, sink: &str, waiting: &[Replacement]) {
        self.with(|board| {
            if let Some(row) = board.sinks.get_mut(sink) {
                row.replacements = waiting
                    .iter()
                    .map(|r| Problem {
                        object: r.key.to_string(),
                        reason: r.describe(),
                    })
                    .collect();
            }
        });
    }

    pub(crate) fn applied(&self, sink: &str, plan: &Plan, report: &ApplyReport) {
        let now = unix_now();
        self.with(|board| {
            let Some(row) = board.sinks.get_mut(sink) else {
                return;
            };
            row.last_pass = Some(now);
            let wrote = report.created + report.updated + report.deleted + report.status;
            if wrote > 0 {
                row.last_write = Some(now);
            }
            row.created += report.created as u64;
            row.updated += report.updated as u64;
            row.deleted += report.deleted as u64;
            row.status_patches += report.status as u64;
            // A conflict stays until its name is written (the user's object went), a
            // quarantined object until a write of it goes through. Only those few are
            // looked up, so a pass of thousands of writes costs nothing here.
            if !row.conflicts.is_empty() || !row.quarantined.is_empty() {
                let written: BTreeSet<String> = plan
                    .creates
                    .iter()
                    .chain(&plan.updates)
                    .map(|o| o.key().to_string())
                    .chain(plan.deletes.iter().map(ToString::to_string))
                    .collect();
                let failed: BTreeSet<String> = report.failed.iter().map(|(k, _)| k.to_string()).collect();
                row.conflicts.retain(|c| !written.contains(&c.object));
                row.quarantined
                    .retain(|q| !written.contains(&q.object) || failed.contains(&q.object));
            }
            for conflict in &plan.conflicts {
                let object = conflict.key.to_string();
                if !row.conflicts.iter().any(|c| c.object == object) {
                    row.conflicts.push(Problem {
                        object,
                        reason: conflict.reason.clone(),
                    });
                }
            }
            for (key, why) in &report.failed {
                let object = key.to_string();
                row.quarantined.retain(|q| q.object != object);
                row.quarantined.push(Problem {
                    object,
                    reason: why.clone(),
                });
            }
        });
    }

    pub(crate) fn change_applied(&self, sink: &str, lag: std::time::Duration) {
        self.with(|board| {
            if let Some(row) = board.sinks.get_mut(sink) {
                row.change_lag_ms = Some(lag.as_millis() as u64);
            }
        });
    }

    /// Everything the page shows, as of now.
    pub fn snapshot(&self) -> Snapshot {
        let problems = self.problems.get().map(|f| f()).unwrap_or_default();
        self.with(|board| {
            let mut registries: Vec<RegistryRow> = board.registries.values().cloned().collect();
            for row in &mut registries {
                let requests = Requests::of(&row.name);
                row.requests_per_minute = requests.last_minute();
                row.requests = requests.total();
                for skip in problems.iter().filter(|s| s.registry == row.name) {
                    let summary = row
                        .skipped
                        .entry(skip.kind.metric_label().to_string())
                        .or_default();
                    summary.count += 1;
                    if summary.first.len() < FIRST_NAMED {
                        let what = match &skip.instance {
                            Some(instance) => format!("{} {instance}: {}", skip.service, skip.reason),
                            None => format!("{}: {}", skip.service, skip.reason),
                        };
                        summary.first.push(what);
                    }
                }
            }
            Snapshot {
                instance: board.instance.clone(),
                started: board.started,
                now: unix_now(),
                leader: board.leader,
                registries,
                sinks: board
                    .sinks
                    .values()
                    .map(|row| SinkRow {
                        pending: row.held_back_keys + row.quarantined.len() + row.replacements.len(),
                        ..row.clone()
                    })
                    .collect(),
            }
        })
    }

    /// What the index says of a service or host; empty before `run` installed it. Long
    /// for a large service: call it off the runtime's workers.
    pub fn search(&self, query: &str) -> Found {
        self.search.get().map(|f| f(query)).unwrap_or_default()
    }
}

/// The longest query searched: names and hosts are at most 253 characters.
const MAX_QUERY: usize = 253;

/// A query cut to a length any name or host fits in.
pub fn bounded_query(query: &str) -> &str {
    let mut end = query.len().min(MAX_QUERY);
    while !query.is_char_boundary(end) {
        end -= 1;
    }
    &query[..end]
}

#[cfg(test)]
mod tests {
    use registry_sync_catalog::SkipKind;
    use registry_sync_sources::FailureReason;

    use super::*;

    fn board() -> StatusBoard {
        let board = StatusBoard::default();
        board.configure("prod", [("consul", "consul"), ("files", "file")], ["kubernetes"]);
        board
    }

    #[test]
    fn a_registry_is_waiting_then_up_then_down_with_its_error() {
        let board = board();
        assert_eq!(board.snapshot().registries[0].state, "waiting");
        board.registry_synced("consul", 3, 7);
        let up = board.snapshot().registries[0].clone();
        assert_eq!((up.state, up.services, up.instances), ("up", 3, 7));
        assert!(up.last_complete_view.is_some());
        board.registry_failed(
            "consul",
            &SourceFailure::new(FailureReason::Unreachable, "connection refused"),
        );
        let down = board.snapshot().registries[0].clone();
        assert_eq!(down.state, "down");
        assert_eq!(down.error.as_deref(), Some("connection refused"));
        assert_eq!(down.reason, Some("unreachable"));
        assert_eq!(down.services, 3, "the last view is kept");
    }

    #[test]
    fn a_registry_shows_the_requests_its_source_sent_in_the_last_minute() {
        let board = StatusBoard::default();
        board.configure("prod", [("status-test-requests", "eureka")], ["files"]);
        assert_eq!(board.snapshot().registries[0].requests_per_minute, 0);
        Requests::of("status-test-requests").add(30);
        Requests::of("status-test-requests").count();
        let row = board.snapshot().registries[0].clone();
        assert_eq!((row.requests_per_minute, row.requests), (31, 31));
        assert!(page::render(&board.snapshot(), None, None).contains("title=\"31 since start\">31</td>"));
    }

    #[test]
    fn skipped_items_are_counted_by_reason_with_the_first_named() {
        let board = board();
        let skip = |n: usize| Skipped {
            registry: "consul".into(),
            service: "orders".into(),
            instance: Some(format!("i-{n}")),
            kind: SkipKind::ReservedPort,
            reason: "port 15000 is reserved".into(),
        };
        board.install(
            Box::new(|_| Found::default()),
            Box::new(move || (0..8).map(skip).collect()),
        );
        let consul = board.snapshot().registries[0].clone();
        let reserved = &consul.skipped["reserved_port"];
        assert_eq!(reserved.count, 8);
        assert_eq!(reserved.first.len(), FIRST_NAMED);
        assert_eq!(reserved.first[0], "orders i-0: port 15000 is reserved");
        assert!(board.snapshot().registries[1].skipped.is_empty());
    }
}
