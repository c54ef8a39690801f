//! The crate's integration tests, in one test binary (one link for them all); each
//! module is one area. Run one with `cargo test -p registry-sync-kubernetes --test it <module>::`.

mod support;

mod leader;
mod sink;
