//! registry-sync's runtime: configuration, the commands, and the tasks of `run` that
//! wire sources → index (translate) → plan → sinks together.
//!
//! ```text
//!  one task per registry ──SourceEvent (bounded)──▶ feed loop ──▶ Pipeline { Index }
//!                                                                     │ version
//!                                            ┌────────────────────────┼──────────────┐
//!                                            ▼                        ▼              ▼
//!                                     writer: files            writer: stdout   writer: kubernetes
//!                                     plan(changed since v)                     ▲ watch (drift)
//!                                     apply                                     leadership gate
//! ```
//!
//! ARCHITECTURE.md at the repository root walks through the tasks and channels.

#![forbid(unsafe_code)]

pub mod admin;
pub mod commands;
pub mod config;
pub mod error;
pub mod explain;
pub mod logs;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod run;
pub mod sinks;
pub mod sources;
pub mod status;
pub mod writer;
