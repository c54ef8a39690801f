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
//! The other two figures at this scale, peak RSS of `run` at 1,000,000 endpoints and
//! the cold sync of 100,000 entries beside the bare apply loop, come from the runtime
//! bench at that size: `BENCH_SERVICES=100000 cargo bench --bench runtime`.
//!
//! `cargo bench -p registry-sync --bench scale`; `BENCH_BIG` (100,000),
//! `BENCH_CHANGES` (30), `BENCH_RATE` (1,000/s) and `BENCH_SECONDS` (10) change the
//! sizes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_sync::config::Config;
use registry_sync_catalog::{RegistryDelta, RegistrySnapshot};
use registry_sync_istio::{HeldObject, ObjectKey};
use registry_sync_kubernetes::{KubeSink, KubeSinkSettings};
use registry_sync_plan::Plan;
use registry_sync_sinks::{ApplyReport, Sink, SinkError};
use registry_sync_sources::SourceEvent;
use registry_sync_testing::kube::StandIn;

mod support;

use support::*;

/// Holds what it is given, as a sink does after applying.
#[derive(Default)]
struct Memory {
    held: BTreeMap<ObjectKey, HeldObject>,
}

impl Sink for Memory {
    fn held(&self) -> &BTreeMap<ObjectKey, HeldObject> {
        &self.held
    }

    fn apply(&mut self, plan: &Plan) -> Result<ApplyReport, SinkError> {
        let mut report = ApplyReport::default();
        for object in plan.creates.iter().chain(&plan.updates) {
            self.held.insert(object.key(), HeldObject::written(object));
            report.created += 1;
        }
        for key in &plan.deletes {
            self.held.remove(key);
            report.deleted += 1;
        }
        Ok(report)
    }
}

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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let big = env_usize("BENCH_BIG", 100_000);
    let changes = env_usize("BENCH_CHANGES", 30);
    let rate = env_usize("BENCH_RATE", 1_000);
    let seconds = env_usize("BENCH_SECONDS", 10) as u64;

    let small = one_instance_changes(10, changes).await;
    let large = one_instance_changes(big, changes).await;
    let churn = churn(rate, seconds).await;

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
}
