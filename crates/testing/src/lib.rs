//! **Test support only — never a product code path.** Everything registry-sync's tests
//! and benches run against, under one roof:
//!
//! - [`servers`]: launchers of the real servers (etcd, ZooKeeper, dnsmasq, moto for
//!   AWS Cloud Map, rnacos for Nacos, the kube-apiserver, Eureka and the Spring Cloud
//!   clients, istiod, Helm), on free loopback ports, stopped and cleaned up when
//!   dropped, and the shared ones `scripts/test` starts;
//! - [`standins`]: Consul (not built into the tests: docs/testing.md says why) and
//!   Eureka, written from their official API documentation and enforcing their limits;
//!   Eureka's for the faults the real server cannot be made to show on demand;
//! - [`kube`]: a Kubernetes API server stand-in, for fault injection (stalls, lost
//!   rights, refused writes) beside the real one;
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
