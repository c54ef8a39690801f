//! At the sizes the largest estates run, through the writer library's runtime exactly
//! as `run` drives it. Each figure is printed beside its baseline from the same run:
//!
//! 1. one instance changed in a service of 100,000 instances (WorkloadEntry mode) →
//!    applied, p50 / p99, beside the same change in a service of 10 instances, into an
//!    in-memory sink (the runtime's own cost, no API in the way);
//! 2. sustained churn: 1,000 instance changes a second for 10 s in 10,000 services × 10
//!    (inline endpoints), Kubernetes sink against the API server stand-in: lag from a
//!    change's send to the end of the apply that wrote it, p50 / p99, writes per change,
//!    and the longest a source waited to hand over an event (the only queue is bounded).
//!
//! 3. the cold sync of 100,000 services × 10 (1,000,000 endpoints) into the Kubernetes
//!    sink (stand-in), from the view's arrival until the runtime is ready (translating
//!    and planning included), beside a bare kube-rs apply loop of the same objects at
//!    the same concurrency, the mean of one run before ours and one after (the
//!    stand-in's store grows by 100,000 entries with each).
//!
//! 4. peak RSS of the `registry-sync run` binary at 1,000,000 endpoints (a services
//!    file of 100,000 × 10 into the files sink), per endpoint, over the same binary with
//!    an empty registry.
//!
//! The bench's own allocator is mimalloc, as the binary's.
//!
//! `cargo bench -p registry-sync --bench scale`; `BENCH_BIG` (100,000),
//! `BENCH_CHANGES` (30), `BENCH_RATE` (1,000/s), `BENCH_SECONDS` (10) and `BENCH_COLD`
//! (100,000 services) change the sizes.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{DynamicObject, Patch, PatchParams};
use registry_sync::config::Config;
use registry_sync_catalog::{RegistryDelta, RegistrySnapshot};
use registry_sync_istio::{Kind, ObjectKey};
use registry_sync_kubernetes::{KubeSink, KubeSinkSettings, api_resource};
use registry_sync_sinks::testing::Memory;
use registry_sync_sources::SourceEvent;
use registry_sync_testing::kube::StandIn;
use registry_sync_writer::{Leadership, NamedSink, Quiet, Ready, SharedIndex};
use tokio_util::sync::CancellationToken;

mod support;

use support::*;

fn config(endpoints: &str) -> Config {
    Config::parse(
        Path::new("bench.yaml"),
        &format!(
            "registries:\n  - {{name: bench, kind: file, path: unused.yaml, namespace: mesh, endpoints: {endpoints}}}\n"
        ),
    )
    .expect("bench config parses")
}

/// Row 1 for one service of `instances`: `changes` changes of one instance, each timed
/// from its send to the end of its apply.
async fn one_instance_changes(instances: usize, changes: usize) -> Vec<Duration> {
    let (sink, mut done) = timed("memory", Box::new(Memory::default()));
    let runtime = Runtime::start(&config("workload-entry"), vec![sink]);
    let snapshot = |port: u16| SourceEvent::Snapshot {
        registry: "bench".into(),
        snapshot: RegistrySnapshot::from_shared("bench", vec![Arc::new(service(0, instances, port))], vec![]),
    };
    runtime.send(snapshot(8080)).await;
    done.recv().await.expect("the cold pass");
    let mut took = Vec::with_capacity(changes);
    for n in 0..changes {
        // Built before the clock starts: a source hands over a service it already holds.
        let delta = RegistryDelta {
            upserts: vec![Arc::new(service(0, instances, 10_000 + n as u16))],
            ..RegistryDelta::default()
        };
        let start = Instant::now();
        runtime
            .send(SourceEvent::Changed {
                registry: "bench".into(),
                delta,
            })
            .await;
        let applied = done.recv().await.expect("the change is applied");
        took.push(applied.ended - start);
    }
    runtime.stop().await;
    took.sort();
    took
}

struct Churn {
    lags: Vec<Duration>,
    changes: usize,
    writes: usize,
    longest_send: Duration,
    applies: usize,
}

/// Row 2: `rate` changes a second for `seconds` into the Kubernetes sink.
async fn churn(rate: usize, seconds: u64) -> Churn {
    let server = StandIn::start().await;
    let client = kube::Client::try_from(server.kube_config()).unwrap();
    let settings = KubeSinkSettings {
        namespaces: BTreeSet::from(["mesh".to_string()]),
        qps: 0.0,
        concurrency: 8,
        initial_list_timeout: Duration::from_secs(120),
        ..KubeSinkSettings::default()
    };
    let kube = KubeSink::connect(client, settings, None).await.unwrap();
    let (sink, mut applied) = timed("kubernetes", Box::new(kube));
    let mut estate = Estate::new(10_000, 10);
    let runtime = Runtime::start(&config("inline"), vec![sink]);
    runtime.send(estate.snapshot()).await;
    applied.recv().await.expect("the cold pass");
    let mut applies: Vec<Applied> = Vec::new();

    let total = rate * seconds as usize;
    let mut sent: Vec<(Instant, ObjectKey)> = Vec::with_capacity(total);
    let mut longest_send = Duration::ZERO;
    let start = Instant::now();
    for n in 0..total {
        let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let event = estate.change(n);
        let SourceEvent::Changed { delta, .. } = &event else {
            unreachable!("a change")
        };
        let key = ObjectKey {
            kind: registry_sync_istio::Kind::ServiceEntry,
            namespace: "mesh".into(),
            name: format!("bench.{}", delta.upserts[0].name),
        };
        let at = Instant::now();
        runtime.send(event).await;
        longest_send = longest_send.max(at.elapsed());
        sent.push((at, key));
    }
    // Until every change is written.
    let deadline = Instant::now() + Duration::from_secs(120);
    let lags = loop {
        while let Ok(apply) = applied.try_recv() {
            applies.push(apply);
        }
        let lags: Option<Vec<Duration>> = sent
            .iter()
            .map(|(at, key)| {
                applies
                    .iter()
                    .find(|apply| apply.began >= *at && apply.written.contains(key))
                    .map(|apply| apply.ended - *at)
            })
            .collect();
        if let Some(lags) = lags {
            break lags;
        }
        assert!(Instant::now() < deadline, "some change was never written");
        if let Ok(Some(apply)) = tokio::time::timeout(Duration::from_secs(1), applied.recv()).await {
            applies.push(apply);
        }
    };
    runtime.stop().await;
    let writes = applies.iter().map(|apply| apply.written.len()).sum();
    let mut lags = lags;
    lags.sort();
    Churn {
        lags,
        changes: total,
        writes,
        longest_send,
        applies: applies.len(),
    }
}

struct Cold {
    services: usize,
    ours: Duration,
    bare: Duration,
}

/// Row 3: the cold sync of `services` × 10 to ready, between two bare loops.
async fn cold_sync(services: usize) -> Cold {
    let config = config("inline");
    let server = StandIn::start().await;
    let client = || kube::Client::try_from(server.kube_config()).unwrap();
    let estate = Estate::new(services, 10);
    let objects = objects_in(&config, &estate, "mesh");
    let bare = |namespace: &'static str| {
        let api: kube::Api<DynamicObject> =
            kube::Api::namespaced_with(client(), namespace, &api_resource(Kind::ServiceEntry));
        let objects = &objects;
        async move {
            let params = PatchParams::apply("bench-bare").force();
            let start = Instant::now();
            futures::stream::iter(objects.iter().map(|o| {
                let mut o = o.clone();
                o["metadata"]["namespace"] = namespace.into();
                let name = o["metadata"]["name"].as_str().unwrap().to_string();
                let (api, params) = (&api, &params);
                async move { api.patch(&name, params, &Patch::Apply(&o)).await.unwrap() }
            }))
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
            start.elapsed()
        }
    };
    let before = bare("bare-before").await;
    let settings = KubeSinkSettings {
        namespaces: BTreeSet::from(["mesh".to_string()]),
        qps: 0.0,
        concurrency: 8,
        initial_list_timeout: Duration::from_secs(300),
        ..KubeSinkSettings::default()
    };
    let kube = KubeSink::connect(client(), settings, None).await.unwrap();
    let ready = Ready::default();
    let runtime = registry_sync_writer::Runtime {
        settings: config.writer_settings(),
        leadership: Leadership::always(),
        observer: Arc::new(Quiet),
        ready: ready.clone(),
    };
    let (events, rx) = tokio::sync::mpsc::channel(1024);
    let cancel = CancellationToken::new();
    let sinks = vec![NamedSink {
        name: "kubernetes".into(),
        sink: Box::new(kube),
    }];
    let task = tokio::spawn(runtime.run(SharedIndex::new(config.index()), sinks, rx, cancel.clone()));
    let start = Instant::now();
    events.send(estate.snapshot()).await.unwrap();
    ready.wait().await;
    let ours = start.elapsed();
    cancel.cancel();
    let _ = task.await;
    drop(estate);
    let after = bare("bare-after").await;
    Cold {
        services,
        ours,
        bare: (before + after) / 2,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let big = env_usize("BENCH_BIG", 100_000);
    let changes = env_usize("BENCH_CHANGES", 30);
    let rate = env_usize("BENCH_RATE", 1_000);
    let seconds = env_usize("BENCH_SECONDS", 10) as u64;

    let small = one_instance_changes(10, changes).await;
    let large = one_instance_changes(big, changes).await;
    let churn = churn(rate, seconds).await;
    let cold = cold_sync(env_usize("BENCH_COLD", 100_000)).await;
    let work = tempfile::tempdir().unwrap();
    let rss_services = env_usize("BENCH_COLD", 100_000);
    let empty = binary_peak_rss(work.path(), "services: []\n", 0);
    let full = binary_peak_rss(work.path(), &services_yaml(rss_services, 10), rss_services);
    let per_endpoint = (full.saturating_sub(empty) * 1024) as f64 / (rss_services * 10) as f64;

    println!();
    println!("registry-sync scale bench");
    println!();
    println!("| figure | registry-sync | baseline (same run) | ratio | goal |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| one instance changed in a service of {big} instances (WorkloadEntry mode) → applied, p50 / p99 over {changes} | {} | the same change in a service of 10: {} | p99 {:.2} | ≤ 1.5 |",
        p50_p99(&large),
        p50_p99(&small),
        p99_ratio(&large, &small)
    );
    println!(
        "| sustained churn, {rate} changes/s for {seconds} s in 10,000 × 10, Kubernetes sink (stand-in): lag p50 / p99 | {} | | | p99 ≤ 1 s |",
        p50_p99(&churn.lags)
    );
    println!(
        "| the same: writes per change; applies; longest wait to hand over an event (queue bounded at 1,024) | {:.3} ({} writes for {} changes); {} applies; {} | | | ≤ 1, bounded |",
        churn.writes as f64 / churn.changes as f64,
        churn.writes,
        churn.changes,
        churn.applies,
        ms(churn.longest_send)
    );
    let rate = |took: Duration| cold.services as f64 / took.as_secs_f64();
    println!(
        "| cold sync of {} services × 10 ({} endpoints) to ready, Kubernetes sink (stand-in), translating and planning included | {:.0} objects/s ({}) | kube-rs apply loop, mean of a run before and one after: {:.0} objects/s ({}) | {:.0} % | ≥ 95 % |",
        cold.services,
        cold.services * 10,
        rate(cold.ours),
        ms(cold.ours),
        rate(cold.bare),
        ms(cold.bare),
        100.0 * cold.bare.as_secs_f64() / cold.ours.as_secs_f64()
    );
    println!(
        "| peak RSS of `registry-sync run` per endpoint at {} endpoints (services file → files sink) | {per_endpoint:.0} B ({:.0} MiB) | the same binary, empty registry: {:.0} MiB | | ≤ 1 KiB |",
        rss_services * 10,
        full as f64 / 1024.0,
        empty as f64 / 1024.0
    );
}
