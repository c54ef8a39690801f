//! **Test support only — never a product code path.** Everything registry-sync's tests
//! and benches run against, under one roof:
//!
//! - [`servers`]: launchers of the real servers that can be installed here (etcd,
//!   ZooKeeper, dnsmasq, moto for AWS Cloud Map, rnacos for Nacos), on free loopback
//!   ports, stopped and cleaned up when dropped, and the shared ones `scripts/test`
//!   starts;
//! - [`standins`]: Consul and Eureka, which cannot be installed here, written from their
//!   official API documentation and enforcing their limits;
//! - [`kube`]: the Kubernetes API server, likewise;
//! - [`tls`]: a certificate authority for the TLS tests.
//!
//! The clients that write to a registry as its users do stay with the registry's source
//! (`registry_sync_sources::testing`, `registry_sync_sources::etcd::EtcdClient`), and the
//! istiod-like MCP client with the MCP sink (`registry_sync_mcp::testing`): each shares
//! code with what it tests.

#![forbid(unsafe_code)]

pub mod kube;
pub mod servers;
pub mod standins;
pub mod tls;
