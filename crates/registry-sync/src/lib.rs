//! registry-sync's runtime: configuration, the sync pass and the watch loop that wire
//! sources → catalog → translate → plan → sinks together.
//!
//! ```text
//!  sources::spawn_watch ──SourceEvent──▶ run loop ──▶ Pipeline ──translate──▶ desired
//!                                                        │                      │
//!                                                        └──── plan vs held ◀───┘
//!                                                                 │
//!                                                          Sink::apply (files, stdout)
//! ```

#![forbid(unsafe_code)]

pub mod admin;
pub mod commands;
pub mod config;
pub mod metrics;
pub mod pipeline;
pub mod run;
pub mod sinks;
pub mod sources;
