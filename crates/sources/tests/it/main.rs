//! The crate's integration tests, in one test binary (one link for them all); each
//! module is one area. Run one with `cargo test -p registry-sync-sources --test it <module>::`.

mod support;

mod cloudmap;
mod consul;
mod dns;
mod etcd;
mod eureka;
mod file_source;
mod nacos;
mod zookeeper;
