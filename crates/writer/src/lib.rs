//! The writing half of registry-sync, as a library: what turns the index into writes
//! on every sink, for `run` (the [`Runtime`]: a feed loop and one writer task per
//! sink), `once` and `prune` ([`pass::sync`]) and `plan` ([`pass::plan_for`]) alike,
//! and for the benches, which drive exactly this.
//!
//! ```text
//!  SourceEvent ─▶ feed::take ─▶ Index (shared) ─watch─▶ writer task ─▶ SinkWriter ─▶ sink
//!                                                     └▶ writer task ─▶ SinkWriter ─▶ sink
//! ```
//!
//! It knows its watchers only through [`Observer`] (metrics, the status page and
//! progress implement it), its election only through [`Leadership`] (a `watch` of
//! whether this replica leads; [`Leadership::always`] without one), and publishes
//! readiness on [`Ready`].

#![forbid(unsafe_code)]

pub mod feed;
mod leadership;
mod observer;
pub mod pass;
mod ready;
mod runtime;
mod settings;
mod writer;

pub use leadership::Leadership;
pub use observer::{Observer, PassProgress, Quiet};
pub use ready::Ready;
pub use runtime::{Runtime, SharedIndex, join_within};
pub use settings::WriterSettings;
pub use writer::{NamedSink, SinkOutcome, SinkWriter, Step};

#[cfg(test)]
mod tests;
