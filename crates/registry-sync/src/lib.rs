//! registry-sync's binary: configuration, the commands, and `run`, which wires
//! sources → index (translate) → plan → sinks together through the writer library.
//!
//! ```text
//!  one task per registry ──SourceEvent (bounded)──▶ feed loop ──▶ Index (shared)
//!                                                                     │ version
//!                                            ┌────────────────────────┼──────────────┐
//!                                            ▼                        ▼              ▼
//!                                     writer: files            writer: mcp      writer: kubernetes
//!                                     plan(changed since v)                     ▲ watch (drift)
//!                                     apply                                     leadership
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
pub mod observe;
pub mod progress;
pub mod run;
pub mod sinks;
pub mod sources;
pub mod status;
