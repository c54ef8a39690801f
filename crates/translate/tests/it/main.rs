//! The crate's integration tests, in one test binary (one link for them all); each
//! module is one area. Run one with `cargo test -p registry-sync-translate --test it <module>::`.

mod properties;
mod rules;
