//! The Cloud Map row: against moto (an AWS API emulator; scripts/test installs it).
//!
//! Cloud Map has no push, so the "bare" column is a bare poller: a free-running loop of
//! `DiscoverInstancesRevision` at the same interval as registry-sync's source, timed
//! from the write until it sees the revision move — the best any poller at that interval
//! does. Each change registers one new instance (one API call; its address sorts first,
//! so the sink's first endpoint carries its port). Nothing is deregistered: moto's
//! revision is the sum of its present instances' revisions, so a deregistration and a
//! registration within one interval can leave it where it was (AWS documents its
//! revision as increasing). Each write waits a different share of the interval first,
//! so writes land anywhere in the poll cycle. Idle requests are counted from moto's
//! request log while nothing changes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use registry_sync::config::Config;
use registry_sync_sources::cloudmap::{CloudMapConfig, CloudMapSource};
use registry_sync_sources::testing::CloudMapWriter;
use registry_sync_testing::servers::{MOTO_REGION, TestMoto};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Row, counted, per_s, run_pipeline, wait_port};

const NAMESPACE: &str = "bench.local";
/// The poll interval of both the bare poller and the source. The product default is
/// 5 s; a short one keeps the run short, and latency scales with it (about half an
/// interval on average, a whole one at worst, plus one round).
const INTERVAL: Duration = Duration::from_millis(200);

/// The attributes of the `n`th change's instance: addresses go down as `n` goes up.
fn instance(n: usize, port: usize) -> (String, Vec<(&'static str, String)>) {
    let address = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 200, 255, 250)) - n as u32);
    (
        format!("i-{n:06}"),
        vec![
            ("AWS_INSTANCE_IPV4", address.to_string()),
            ("AWS_INSTANCE_PORT", port.to_string()),
        ],
    )
}

/// A pause before the `n`th write, spread evenly over one interval: a write right after
/// the previous change was seen would always land just after a poll and wait a whole
/// interval; real writes land anywhere in the cycle.
fn phase(n: usize) -> Duration {
    INTERVAL * ((n * 37) % 100) as u32 / 100
}

async fn register(writer: &CloudMapWriter, service: &str, n: usize, port: usize) {
    let (id, attributes) = instance(n, port);
    let pairs: Vec<(&str, &str)> = attributes.iter().map(|(k, v)| (*k, v.as_str())).collect();
    writer.register(service, &id, &pairs).await;
}

pub(super) async fn bench_cloudmap(changes: usize, idle: Duration) -> Row {
    let moto = TestMoto::start().expect("moto is installed (scripts/test installs it)");
    let writer = CloudMapWriter::new(&moto.url());
    let namespace = writer.namespace(NAMESPACE).await;
    let bare_service = writer.service(&namespace, "bare", false).await;
    let orders = writer.service(&namespace, "orders", false).await;

    // The bare poller, free-running so its phase against the writes is arbitrary.
    let seen = Arc::new(AtomicI64::new(writer.revision(NAMESPACE, "bare").await));
    let stop_bare = CancellationToken::new();
    {
        let (writer, seen, stop) = (writer.clone(), Arc::clone(&seen), stop_bare.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                seen.store(writer.revision(NAMESPACE, "bare").await, Ordering::SeqCst);
                tokio::time::sleep(INTERVAL).await;
            }
        });
    }
    let mut bare = Vec::with_capacity(changes);
    for n in 0..changes {
        tokio::time::sleep(phase(n)).await;
        let before = seen.load(Ordering::SeqCst);
        let t = Instant::now();
        register(&writer, &bare_service, n, 10000 + n).await;
        while seen.load(Ordering::SeqCst) == before {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        bare.push(t.elapsed());
    }
    stop_bare.cancel();

    register(&writer, &orders, 0, 9000).await;
    let url = moto.url();
    let config = Config::parse(
        Path::new("bench.yaml"),
        &format!(
            "registries:\n  - {{name: aws, kind: cloudmap, region: {MOTO_REGION}, namespaces: [{NAMESPACE}], services: [orders], endpoint: \"{url}\", interval: 200ms, namespace: mesh, endpoints: inline}}\n"
        ),
    )
    .unwrap();
    let mut source_config = CloudMapConfig::new(Some(MOTO_REGION.to_string()));
    source_config.namespaces = vec![NAMESPACE.to_string()];
    source_config.services = vec!["orders".to_string()];
    source_config.endpoint = Some(url);
    source_config.interval = INTERVAL;
    let source = CloudMapSource::new("aws", source_config).with_test_credentials();
    let (tx, rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let port = Arc::new(super::Port::default());
    tokio::spawn(source.watch(tx, cancel.clone()));
    run_pipeline(config, rx, port.clone(), cancel.clone());
    wait_port(&port, 9000).await;
    let mut synced = Vec::with_capacity(changes);
    for n in 1..=changes {
        let want = 10000 + n;
        tokio::time::sleep(phase(n)).await;
        let t = Instant::now();
        register(&writer, &orders, n, want).await;
        wait_port(&port, want).await;
        synced.push(t.elapsed());
    }
    // Idle: requests moto answered while only the source was talking to it.
    let before = moto.requests();
    let counted_before = counted("aws");
    tokio::time::sleep(idle).await;
    let after = moto.requests();
    let counted_idle = counted("aws") - counted_before;
    cancel.cancel();
    Row {
        registry: "Cloud Map (poll every 200 ms, 1 service; moto)",
        bare,
        synced,
        idle_requests_per_s: format!(
            "{:.2} (= (ListNamespaces + ListServices + 1 revision per service) / interval)",
            (after - before) as f64 / idle.as_secs_f64()
        ),
        counted_per_s: per_s(counted_idle, idle),
    }
}
