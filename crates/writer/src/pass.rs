//! One pass over every sink, without the runtime's tasks: what `once` and `prune` do,
//! and the full plan `plan` shows.

use std::time::{Instant, SystemTime};

use registry_sync_index::Index;
use registry_sync_plan::{Plan, hold_replacements, plan};
use registry_sync_sinks::AsyncSink;

use crate::settings::WriterSettings;
use crate::writer::SinkWriter;

/// What one pass did, over every sink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassOutcome {
    /// Every planned write succeeded.
    pub written: bool,
    /// The mass-change guard held changes back on some sink.
    pub held_back: bool,
    /// Some object could not be replaced: its successor conflicts with another object
    /// or the sink refused it, so the old object stays.
    pub replacements_blocked: bool,
}

/// Passes one `once` makes over a sink at most: the first writes the successors, the
/// second removes what they replace (a third covers a successor that itself replaced
/// something in the second).
const REPLACEMENT_PASSES: usize = 3;

/// The full plan for one sink, without applying it; the guard judges it as a fresh
/// start would: against what the sink holds now and the guard's `memory` the sink
/// keeps.
pub fn plan_for(
    index: &Index,
    settings: &WriterSettings,
    sink: &dyn AsyncSink,
    memory: Option<&str>,
) -> Plan {
    let owner = &settings.owner;
    let mut plan = plan(index.desired(), sink.held(), owner, &index.scope());
    hold_replacements(&mut plan, index.desired(), sink.held(), owner, &|source| {
        index.successors(source)
    });
    if let Some(mut guard) = settings.new_guard() {
        let now = Instant::now();
        guard.restore(memory.unwrap_or_default(), now, SystemTime::now());
        guard.hold(&mut plan, sink.held(), owner, now);
    }
    plan
}

/// One pass over every sink, one after the other. A sink whose pass wrote the
/// successors of objects being replaced gets another pass right away, which removes
/// the old objects now that their successors landed.
pub async fn sync(index: &Index, writers: &mut [SinkWriter]) -> PassOutcome {
    let mut outcome = PassOutcome {
        written: true,
        held_back: false,
        replacements_blocked: false,
    };
    for writer in writers.iter_mut() {
        for _ in 0..REPLACEMENT_PASSES {
            writer.catch_up().await;
            writer.load_guard_memory().await;
            let step = writer.plan(index, Instant::now());
            let held_back = !step.plan.held_back.is_empty();
            let blocked = step.plan.blocked_replacements().count() > 0;
            match writer.apply(step).await {
                Ok(report) => outcome.written &= report.is_complete(),
                Err(e) => {
                    tracing::error!(sink = %writer.name, "{e}");
                    outcome.written = false;
                    break;
                }
            }
            if !writer.wants_another_pass() {
                outcome.held_back |= held_back;
                outcome.replacements_blocked |= blocked;
                break;
            }
        }
    }
    outcome
}
