//! The registry-neutral model of services and instances.
//!
//! Every source (file, Consul, Eureka, ZooKeeper, …) turns what its registry says into
//! these types, and everything downstream — translation into Istio objects, planning,
//! sinks — reads only these types. Keeping this crate free of Istio and of I/O is what
//! lets one registry's quirks stay inside its source and lets the translation be tested
//! with plain data.
//!
//! ```text
//!  source ──▶ RegistrySnapshot { services, skipped, unknown } ──▶ index ──▶ translate
//!         └─▶ RegistryDelta { upserts, removed, … } (after the first view) ─┘
//! ```
//!
//! Values here are already validated: an [`Address`] is an IP or an RFC 1123 host name, a
//! port number is 1–65535. Sources use [`Address::parse`] and [`parse_port`] so that a bad
//! item is rejected with a reason ([`Skipped`]) instead of travelling further.

#![forbid(unsafe_code)]

mod address;
mod model;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use address::{Address, AddressError};
pub use model::{
    Catalog, Instance, InstancePort, MAX_INSTANCE_LEN, MAX_REASON_LEN, Metadata, Placement, PortError,
    Protocol, Refusal, RegistryDelta, RegistrySnapshot, Service, ServiceKey, SkipKind, Skipped, bounded,
    compact, parse_port, public_instance,
};
