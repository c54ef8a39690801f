//! Where plans are carried out. A sink reports what it holds, so the planner can diff
//! against it, and applies the writes a plan lists — nothing more: every decision about
//! what may be written or deleted is the planner's, so a sink cannot widen it.
//!
//! Local sinks implement the synchronous [`Sink`]: files and stdout gain nothing from
//! async. Each sink's writer task drives it through [`AsyncSink`], which remote sinks
//! implement directly; [`AsyncSink::observe`] is how a sink reports objects changed
//! underneath it, so the writer repairs drift at once.

#![forbid(unsafe_code)]

mod files;
mod stdout;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use registry_sync_istio::{HeldObject, ObjectKey};
use registry_sync_plan::Plan;

pub use files::{FilesSink, write_file_atomically};
pub use stdout::StdoutSink;

/// A boxed future, so that [`AsyncSink`] can be used as a trait object.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A sink as its writer drives it. Remote sinks (an API server) are asynchronous and
/// learn what they hold from a watch, which [`AsyncSink::refresh`] folds in before each
/// plan; every [`Sink`] is an `AsyncSink` whose refresh does nothing.
pub trait AsyncSink: Send {
    /// Brings [`AsyncSink::held`] up to date with what the sink has observed since,
    /// without waiting, and returns the keys whose held state changed (as
    /// [`AsyncSink::observe`] does), so a plan made right after misses no drift.
    fn refresh(&mut self) -> BoxFuture<'_, Vec<ObjectKey>>;

    /// Waits until the sink sees objects change (by anyone: a hand edit, a delete, the
    /// echo of a write), folds that into [`AsyncSink::held`] and returns their keys, so
    /// the writer can repair drift at once instead of at the next resync. A sink that
    /// cannot see changes never returns. Dropping the future loses nothing.
    fn observe(&mut self) -> BoxFuture<'_, Vec<ObjectKey>> {
        Box::pin(std::future::pending())
    }

    /// Writes of the pass in progress done so far, for sinks that can tell (the count
    /// starts again at each apply); `None`: the sink does not count them.
    fn progress(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicUsize>> {
        None
    }

    /// What the sink holds now (all Istio objects it can see, ours or not).
    fn held(&self) -> &BTreeMap<ObjectKey, HeldObject>;

    /// Applies creates, updates and deletes of the plan; see [`Sink::apply`].
    fn apply<'a>(&'a mut self, plan: &'a Plan) -> BoxFuture<'a, Result<ApplyReport, SinkError>>;

    /// Every registry has delivered a complete view since start and the sink has applied
    /// the plan made from it: what it holds is now the whole desired state. A sink whose
    /// reader takes each answer as the whole set (istiod reading an MCP source deletes
    /// whatever a response lacks) offers nothing before this.
    fn complete(&mut self) {}

    /// Whether only the leader may write to this sink. A sink whose readers are local to
    /// each replica (the istiods connected to its MCP server) is written by every replica.
    fn needs_leadership(&self) -> bool {
        true
    }

    /// How long the sink waits for every registry's first complete view before it
    /// takes what it has as whole ([`AsyncSink::complete`]); `None`: it waits as long as
    /// it takes. A sink whose reader stays blind until then (istiod waiting for an MCP
    /// answer) must not wait forever for a registry that is down.
    fn complete_after(&self) -> Option<std::time::Duration> {
        None
    }

    /// The mass-change guard's memory as the sink keeps it, read now (a new leader reads
    /// what the last one kept); `None` when it keeps none.
    fn load_guard_memory(&mut self) -> BoxFuture<'_, Result<Option<String>, SinkError>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Keeps the guard's memory beside what the sink holds, so that a restart, a `once`
    /// or another replica judges with the same peak and keeps a held change held. A
    /// sink with no store of its own keeps nothing.
    fn keep_guard_memory<'a>(&'a mut self, _memory: &'a str) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

impl<T: Sink + Send> AsyncSink for T {
    fn refresh(&mut self) -> BoxFuture<'_, Vec<ObjectKey>> {
        Box::pin(std::future::ready(Vec::new()))
    }

    fn held(&self) -> &BTreeMap<ObjectKey, HeldObject> {
        Sink::held(self)
    }

    fn apply<'a>(&'a mut self, plan: &'a Plan) -> BoxFuture<'a, Result<ApplyReport, SinkError>> {
        Box::pin(std::future::ready(Sink::apply(self, plan)))
    }

    fn observe(&mut self) -> BoxFuture<'_, Vec<ObjectKey>> {
        Sink::observe(self)
    }

    fn load_guard_memory(&mut self) -> BoxFuture<'_, Result<Option<String>, SinkError>> {
        Box::pin(std::future::ready(Sink::load_guard_memory(self)))
    }

    fn keep_guard_memory<'a>(&'a mut self, memory: &'a str) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(std::future::ready(Sink::keep_guard_memory(self, memory)))
    }
}

/// A local sink: files and streams, where a write is a quick blocking call.
pub trait Sink {
    /// What the sink holds now (all Istio objects it can see, ours or not).
    fn held(&self) -> &BTreeMap<ObjectKey, HeldObject>;

    /// Applies creates, updates and deletes of the plan (conflicts, unchanged and kept
    /// objects are not touched). A failure of one object is reported in
    /// [`ApplyReport::failed`] and does not stop the others; `Err` means the sink itself
    /// is unusable.
    fn apply(&mut self, plan: &Plan) -> Result<ApplyReport, SinkError>;

    /// See [`AsyncSink::observe`]; never returns for a sink that cannot see changes.
    fn observe(&mut self) -> BoxFuture<'_, Vec<ObjectKey>> {
        Box::pin(std::future::pending())
    }

    /// See [`AsyncSink::load_guard_memory`].
    fn load_guard_memory(&mut self) -> Result<Option<String>, SinkError> {
        Ok(None)
    }

    /// See [`AsyncSink::keep_guard_memory`].
    fn keep_guard_memory(&mut self, _memory: &str) -> Result<(), SinkError> {
        Ok(())
    }
}

/// What an apply did. Failed objects are left as they were, so the next plan lists them
/// again and the write is retried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    /// Health conditions set in objects' status (see `registry_sync_plan::StatusChange`).
    pub status: usize,
    /// Each failed object with a message naming the path, the OS error and what to do.
    pub failed: Vec<(ObjectKey, String)>,
}

impl ApplyReport {
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Why a sink cannot take a plan now. What any sink may say is here; each local sink's
/// own failures are in its own type.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The sink cannot take writes now; `why` says in a word (the metric's reason), the
    /// message in full.
    #[error("{message}")]
    Unavailable { why: Unavailability, message: String },
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error(
        "cannot write the plan to the output stream: {source}; the stream may be closed (a pipe whose reader exited?)"
    )]
    Output { source: io::Error },
}

/// Why a sink cannot take writes now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailability {
    /// Another replica leads: this one writes nothing.
    NotLeader,
    /// The sink's server could not be reached, or did not answer in time.
    Unreachable,
    /// The sink's server refused our credentials or rights.
    Denied,
    /// The sink's server asked us to slow down.
    Throttled,
    /// The sink's server answered with another error.
    Refused,
    /// Storage the sink keeps itself failed (its directory, its state file).
    Storage,
}

impl SinkError {
    pub fn unavailable(why: Unavailability, message: impl Into<String>) -> SinkError {
        SinkError::Unavailable {
            why,
            message: message.into(),
        }
    }

    /// The `reason` label of `sink_failures_total`: short, fixed, never a message.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SinkError::Unavailable { why, .. } => match why {
                Unavailability::NotLeader => "not_leader",
                Unavailability::Unreachable => "unreachable",
                Unavailability::Denied => "denied",
                Unavailability::Throttled => "throttled",
                Unavailability::Refused => "refused",
                Unavailability::Storage => "storage",
            },
            SinkError::Files(_) => "files",
            SinkError::Output { .. } => "output",
        }
    }
}

/// The files sink's own failures, each naming the directory and what to do.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error(
        "cannot create the output directory {path}: {source}; create it by hand or choose a writable directory"
    )]
    CreateDir { path: PathBuf, source: io::Error },
    #[error(
        "cannot list the output directory {path}: {source}; check that it is a directory registry-sync may read"
    )]
    ReadDir { path: PathBuf, source: io::Error },
    #[error(
        "cannot watch the output directory {path} for changes: {source}; raise fs.inotify.max_user_watches or max_user_instances if they are exhausted"
    )]
    Watch { path: PathBuf, source: notify::Error },
}
