//! **Test support only — never a product code path.** Stand-ins for the Consul and
//! Eureka HTTP APIs: neither server can be installed on the machines registry-sync's
//! tests run on, so these follow the official API documentation closely enough that
//! registry-sync's clients cannot tell the difference for the subset they use.
//!
//! * [`consul::ConsulStandIn`]: agent register/deregister/check endpoints, the catalog
//!   service list and the health endpoint, both as **blocking queries**
//!   (`?index=N&wait=5s`, `X-Consul-Index`), ACL tokens (`403 ACL not found`) and the
//!   `dc` parameter.
//! * [`eureka::EurekaStandIn`]: register, heartbeat, cancel and status overrides, the
//!   full registry (`/eureka/apps`) and the delta (`/eureka/apps/delta`) served from a
//!   recently-changed queue with `apps__hashcode`, and the "one item is an object, not a
//!   list" JSON quirk of Eureka's serializer.
//!
//! Each server runs on its own Tokio runtime in its own threads, on `127.0.0.1:0`, so a
//! plain `#[test]` can use it, and [`stop`](consul::ConsulStandIn::stop) really drops
//! every connection (the runtime goes away) while the registry's data is kept for
//! [`resume`](consul::ConsulStandIn::resume) on the same port. Faults ([`Faults`]) are
//! switchable at runtime: latency, `500` for the next N requests; each stand-in adds its
//! own (an index reset for Consul, a wrong hashcode for Eureka). [`Counts`] counts
//! requests per route.

pub mod consul;
pub mod eureka;
mod server;

pub use server::{Connections, Counts, Faults};
