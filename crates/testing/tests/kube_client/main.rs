//! The stand-in driven by kube-rs, as registry-sync's Kubernetes sink drives a cluster.
//! One test binary (one link) with a module per area.

#![forbid(unsafe_code)]

mod common;
mod crud;
mod faults;
mod lease;
mod ssa;
mod validation;
mod watch;
