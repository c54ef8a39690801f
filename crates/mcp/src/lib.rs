//! The MCP-over-xDS sink: registry-sync as a config source istiod dials
//! (`meshConfig.configSources: [{address: xds://host:port}]`), serving the
//! ServiceEntries and WorkloadEntries exactly as istiod reads them (see
//! docs/mcp-sink.md for the rules taken from istiod's own client).
//!
//! - [`proto`]: the xDS and Istio messages, by hand, with deterministic encoding;
//! - [`convert`]: an object as an `istio.mcp.v1alpha1.Resource`, and which requested
//!   type URLs are ours;
//! - [`stream`]: one istiod stream as a state machine (subscriptions, nonces, ACKs),
//!   with no I/O.

pub mod convert;
pub mod incoming;
mod open;
pub mod proto;
pub mod served;
pub mod server;
pub mod sink;
pub mod state;
pub mod stream;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod validate;
pub mod wire;

pub use open::{McpOptions, OpenError, open};
