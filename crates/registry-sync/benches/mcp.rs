//! The MCP sink end to end: `run`'s core fed as a watching source feeds it, writing to
//! the files sink and to the MCP server in the same run, with clients that read the
//! server as istiod does (the `testing` client of crates/mcp) over gRPC on loopback:
//!
//! 1. one instance changed in a 10,000 × 10 estate → the new set handed to the
//!    transport by the server, and received and stored by a connected client, p50 / p99,
//!    beside the files sink's apply of the same change;
//! 2. the full ServiceEntry set at 10,000 entries: time from a new client's subscription
//!    to its response, and the response's bytes;
//! 3. the process's resident memory with 10 clients connected, over none.
//!
//! `cargo bench -p registry-sync --bench mcp`; `BENCH_SERVICES`, `BENCH_INSTANCES`,
//! `BENCH_CHANGES` change the sizes.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_sync_mcp::server::{Ads, Observer, Serving};
use registry_sync_mcp::sink::McpSink;
use registry_sync_mcp::testing::{Istiod, Profile};
use registry_sync_sinks::FilesSink;
use support::*;

const NODE: &str = "sidecar~10.1.0.1~istiod-bench.istio-system~istio-system.svc.cluster.local";

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Records when each ServiceEntry response was handed to the transport.
struct PushTimes(tokio::sync::mpsc::UnboundedSender<Instant>);

impl Observer for PushTimes {
    fn pushed(&self, type_url: &str, _bytes: usize) {
        if type_url.ends_with("/ServiceEntry") {
            let _ = self.0.send(Instant::now());
        }
    }
}

/// Reads until the client has one more ServiceEntry answer than `before`.
async fn next_entries(istiod: &mut Istiod, before: usize) -> bool {
    let url = istiod.profile.service_entry().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    while istiod.answers.get(&url).copied().unwrap_or(0) <= before {
        if Instant::now() > deadline || istiod.broken {
            return false;
        }
        istiod.next(Duration::from_secs(1)).await;
    }
    true
}

fn entries_answered(istiod: &Istiod) -> usize {
    istiod
        .answers
        .get(istiod.profile.service_entry())
        .copied()
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let services = env_usize("BENCH_SERVICES", 10_000);
    let instances = env_usize("BENCH_INSTANCES", 10);
    let change_count = env_usize("BENCH_CHANGES", 1_000);
    let config = bench_config();
    let mut estate = Estate::new(services, instances);

    let (mcp, offers) = McpSink::new();
    let (push_times, mut pushes) = tokio::sync::mpsc::unbounded_channel();
    let serving = Serving::bind(
        "127.0.0.1:0".parse().unwrap(),
        Ads::new(offers, Arc::new(PushTimes(push_times))),
        None,
    )
    .await
    .unwrap();
    let address = serving.local_addr().unwrap();
    tokio::spawn(serving.run(std::future::pending()));
    let out = tempfile::tempdir().unwrap();
    let mut files = FilesSink::open(out.path()).unwrap();
    files.watch().unwrap();
    let (files_sink, mut files_done) = timed("files", Box::new(files));
    let (mcp_sink, mut mcp_done) = timed("mcp", Box::new(mcp));
    let runtime = Runtime::start(&config, vec![files_sink, mcp_sink]);

    // The client subscribes before the view arrives, as istiod does at a restart of both.
    let mut istiod = Istiod::connect(address, Profile::Istio124, NODE).await;
    let start = Instant::now();
    runtime.send(estate.snapshot()).await;
    assert!(next_entries(&mut istiod, 0).await, "the first set never came");
    let first_set = start.elapsed();
    let _ = files_done.recv().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    while files_done.try_recv().is_ok() {}
    while mcp_done.try_recv().is_ok() {}

    // 1: one change at a time, each read by the client and applied by the files sink.
    let mut pushed = Vec::with_capacity(change_count);
    let mut sent = Vec::with_capacity(change_count);
    let mut files_applied = Vec::with_capacity(change_count);
    for n in 0..change_count {
        let before = entries_answered(&istiod);
        while pushes.try_recv().is_ok() {}
        let event = estate.change(n);
        let start = Instant::now();
        runtime.send(event).await;
        assert!(
            next_entries(&mut istiod, before).await,
            "change {n} was never pushed"
        );
        pushed.push(start.elapsed());
        if let Ok(at) = pushes.try_recv() {
            sent.push(at - start);
        }
        let applied = files_done.recv().await.expect("the files writer runs");
        files_applied.push(applied.ended - start);
        while mcp_done.try_recv().is_ok() {}
    }
    pushed.sort();
    sent.sort();
    files_applied.sort();
    assert_eq!(istiod.service_entries().map(|s| s.len()), Some(services));

    // 2: the full set to a new client.
    let start = Instant::now();
    let mut fresh = Istiod::connect(address, Profile::Istio124, "sidecar~fresh").await;
    assert!(next_entries(&mut fresh, 0).await);
    let full_set = start.elapsed();
    let full_bytes = fresh.last_bytes;
    drop(fresh);

    // 3: ten more clients, each synced, none keeping a store (the server's cost alone).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = resident_kib();
    let mut clients = Vec::new();
    for c in 0..10 {
        let mut client = Istiod::connect(address, Profile::Istio124, &format!("sidecar~c{c}")).await;
        client.keep_store = false;
        assert!(next_entries(&mut client, 0).await);
        clients.push(client);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_ten = resident_kib();
    runtime.stop().await;

    println!();
    println!(
        "registry-sync MCP sink: {services} services × {instances} instances = {} endpoints; files sink and MCP server in one run; clients over gRPC on loopback",
        services * instances
    );
    println!();
    println!("| figure | result | beside it |");
    println!("| --- | --- | --- |");
    println!(
        "| one instance changed → the new set received by a client, p50 / p99 over {change_count} | {} | files sink applied: {} |",
        p50_p99(&pushed),
        p50_p99(&files_applied)
    );
    println!(
        "| one instance changed → the new set handed to the transport by the server | {} | |",
        p50_p99(&sent)
    );
    println!(
        "| full ServiceEntry set to a new client ({services} entries) | {} , {:.1} MiB | first set after the view arrived: {} |",
        ms(full_set),
        full_bytes as f64 / (1024.0 * 1024.0),
        ms(first_set)
    );
    println!(
        "| resident memory with 10 clients connected and synced | +{:.1} MiB ({:.1} MiB per client) | before: {:.0} MiB |",
        with_ten.saturating_sub(before) as f64 / 1024.0,
        with_ten.saturating_sub(before) as f64 / 1024.0 / 10.0,
        before as f64 / 1024.0
    );
}
