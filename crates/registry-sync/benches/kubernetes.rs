//! The Kubernetes sink through the API server stand-in (in this process, over real
//! HTTP on loopback): `cargo bench -p registry-sync --bench kubernetes`.
//!
//! 1. Cold sync of 10,000 services × 10 instances: objects/s, requests, peak RSS.
//! 2. One instance changed, 1,000 times: registry event → acknowledged apply, p50/p99.
//! 3. The ceiling: a bare loop of kube-rs server-side applies of the same objects at the
//!    same concurrency, and of single applies one after another.
//!
//! `BENCH_SERVICES`, `BENCH_INSTANCES`, `BENCH_CHANGES` change the sizes.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use registry_sync::config::Config;
use registry_sync::pipeline::{NamedSink, Pipeline};
use registry_sync_catalog::{Address, Instance, InstancePort, RegistryDelta, RegistrySnapshot, Service};
use registry_sync_kube_standin::StandIn;
use registry_sync_kubernetes::{KubeSink, KubeSinkSettings, api_resource};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn service(s: usize, instances: usize, port: u16) -> Service {
    Service {
        name: format!("service-{s:05}"),
        namespace: None,
        labels: Default::default(),
        instances: (0..instances)
            .map(|i| {
                let n = s * instances + i;
                Instance {
                    id: format!("i-{n}"),
                    address: Address::parse(&format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255))
                        .unwrap(),
                    ports: vec![InstancePort {
                        name: "http".into(),
                        number: if i == 0 { port } else { 8080 },
                        protocol_hint: None,
                    }],
                    healthy: true,
                    weight: None,
                    locality: None,
                    network: None,
                    service_account: None,
                    labels: [("version".to_string(), format!("v{}", i % 2))]
                        .into_iter()
                        .collect(),
                }
            })
            .collect(),
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let services = env_usize("BENCH_SERVICES", 10_000);
    let instances = env_usize("BENCH_INSTANCES", 10);
    let changes = env_usize("BENCH_CHANGES", 1_000);
    let concurrency = 8;
    let server = StandIn::start().await;
    let config = Config::parse(
        Path::new("bench.yaml"),
        "registries:\n  - {name: bench, kind: file, path: unused.yaml, namespace: mesh, endpoints: inline}\n",
    )
    .expect("bench config parses");

    let settings = KubeSinkSettings {
        namespaces: BTreeSet::from(["mesh".to_string()]),
        qps: 0.0,
        concurrency,
        initial_list_timeout: Duration::from_secs(60),
        ..KubeSinkSettings::default()
    };
    let client = kube::Client::try_from(server.kube_config()).unwrap();
    let sink = KubeSink::connect(client.clone(), settings.clone(), None)
        .await
        .unwrap();
    let mut pipeline = Pipeline::new(&config);
    let mut sinks = vec![pipeline.writer(NamedSink {
        name: "kubernetes".into(),
        sink: Box::new(sink),
    })];

    // A watching source keeps its services between snapshots; unchanged ones are shared.
    let mut shared: Vec<Arc<Service>> = (0..services)
        .map(|s| Arc::new(service(s, instances, 8080)))
        .collect();
    let start = Instant::now();
    pipeline.registry_synced(
        "bench",
        RegistrySnapshot::from_shared("bench", shared.clone(), vec![]),
    );
    assert!(pipeline.sync(&mut sinks).await.written, "cold sync succeeds");
    let cold = start.elapsed();
    let cold_requests = server.counts().writes();
    let rss_after_cold = peak_rss_mib();

    let mut latencies = Vec::with_capacity(changes);
    server.reset_counts();
    for n in 0..changes {
        let s = (n * 7919) % services;
        shared[s] = Arc::new(service(s, instances, 9000 + (n % 1000) as u16));
        // What a watching source sends after its first view: the changed service.
        let delta = RegistryDelta {
            upserts: vec![Arc::clone(&shared[s])],
            ..RegistryDelta::default()
        };
        let t = Instant::now();
        pipeline.registry_changed("bench", &delta);
        assert!(pipeline.sync(&mut sinks).await.written);
        latencies.push(t.elapsed());
    }
    let change_writes = server.counts().writes();
    latencies.sort();

    // The ceiling: the same objects applied straight through kube-rs.
    let objects: Vec<serde_json::Value> = pipeline
        .desired()
        .values()
        .map(|o| serde_json::to_value(&**o).unwrap())
        .collect();
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "mesh",
        &api_resource(registry_sync_istio::Kind::ServiceEntry),
    );
    let params = PatchParams::apply("bench-ceiling").force();
    let start = Instant::now();
    futures::stream::iter(objects.iter().map(|o| {
        let name = o["metadata"]["name"].as_str().unwrap().to_string();
        let (api, params) = (&api, &params);
        async move { api.patch(&name, params, &Patch::Apply(o)).await.unwrap() }
    }))
    .buffer_unordered(concurrency)
    .collect::<Vec<_>>()
    .await;
    let bare_cold = start.elapsed();
    let mut bare = Vec::with_capacity(changes);
    for object in objects.iter().cycle().take(changes) {
        let name = object["metadata"]["name"].as_str().unwrap();
        let t = Instant::now();
        api.patch(name, &params, &Patch::Apply(object)).await.unwrap();
        bare.push(t.elapsed());
    }
    bare.sort();

    let total = services * instances;
    println!();
    println!(
        "registry-sync → Kubernetes API (stand-in on loopback): {services} services × {instances} instances = {total} endpoints, concurrency {concurrency}"
    );
    println!();
    println!("| measure | registry-sync | bare kube-rs apply loop (ceiling) |");
    println!("| --- | --- | --- |");
    println!(
        "| cold sync of {services} ServiceEntries | {} ({:.0} objects/s, {cold_requests} write requests) | {} ({:.0} objects/s) |",
        ms(cold),
        services as f64 / cold.as_secs_f64(),
        ms(bare_cold),
        services as f64 / bare_cold.as_secs_f64()
    );
    println!(
        "| one instance changed → applied, p50 / p99 over {changes} | {} / {} ({change_writes} writes) | {} / {} |",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&bare, 0.5)),
        ms(percentile(&bare, 0.99))
    );
    println!(
        "| peak RSS after the cold sync (registry-sync and the stand-in, one process) | {rss_after_cold:.0} MiB | |"
    );
    println!();
    assert_eq!(cold_requests as usize, services, "one write per object");
    assert_eq!(change_writes as usize, changes, "one write per change");
}
