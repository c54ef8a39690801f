//! The binary's integration tests, in one test binary: every module links the whole
//! stack, so one link serves them all. Each module is one area (a registry, a sink, a
//! command); `support` is what they share. Run one area with
//! `cargo test -p registry-sync --test it <module>::`.

mod support;

mod apiserver;
mod cli;
mod cloudmap;
mod consul;
mod controls;
mod deploy;
mod dns;
mod docs;
mod etcd;
mod eureka;
mod explain;
mod istiod;
mod kubernetes;
mod kubernetes_health;
mod mcp;
mod nacos;
mod plan_once;
mod progress;
mod properties;
mod render;
mod replacements;
mod run;
mod safety;
mod status;
mod zookeeper;
