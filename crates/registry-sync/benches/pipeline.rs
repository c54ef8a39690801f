//! Translate + plan on a large estate: `cargo bench -p registry-sync --bench pipeline`.
//!
//! Builds 10,000 services × 10 instances (100,000 endpoints) in memory and measures
//! the cold pass (everything to create), the steady pass (nothing changed) and the pass
//! after one instance changed, plus the process's peak resident memory. Prints a table.
//! `BENCH_SERVICES` / `BENCH_INSTANCES` change the estate size.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use registry_sync::config::Config;
use registry_sync_catalog::{Address, Instance, InstancePort, RegistryDelta, RegistrySnapshot, Service};
use registry_sync_index::Event;
use registry_sync_sinks::testing::Memory;
use registry_sync_writer::{NamedSink, Quiet, SharedIndex, pass};

/// The in-memory sink never waits, so a current-thread runtime drives a pass.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            // Timers on: a pass of 200 writes or more reports its progress on a tick.
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a runtime")
        })
        .block_on(future)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn estate(services: usize, instances: usize, changed: Option<(usize, usize)>) -> RegistrySnapshot {
    let list = (0..services)
        .map(|s| Service {
            name: format!("service-{s:05}"),
            namespace: Some(format!("team-{}", s % 50)),
            labels: [("team".to_string(), format!("team-{}", s % 50))]
                .into_iter()
                .collect(),
            instances: (0..instances)
                .map(|i| {
                    let n = s * instances + i;
                    let port = if changed == Some((s, i)) { 9090 } else { 8080 };
                    Instance {
                        id: format!("i-{n}"),
                        address: Address::parse(&format!(
                            "10.{}.{}.{}",
                            n >> 16 & 255,
                            n >> 8 & 255,
                            n & 255
                        ))
                        .unwrap(),
                        ports: vec![InstancePort {
                            name: "http".into(),
                            number: port,
                            protocol_hint: None,
                        }],
                        healthy: true,
                        weight: Some(1 + (i as u32 % 3)),
                        placement: registry_sync_catalog::Placement::boxed(
                            Some(format!("region-{}/zone-{}", s % 3, i % 3)),
                            None,
                            None,
                        ),
                        labels: [("version".to_string(), format!("v{}", i % 2))]
                            .into_iter()
                            .collect(),
                    }
                })
                .collect(),
        })
        .collect();
    RegistrySnapshot::new("bench", list, vec![])
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let services = env_usize("BENCH_SERVICES", 10_000);
    let instances = env_usize("BENCH_INSTANCES", 10);
    let config = Config::parse(
        Path::new("bench.yaml"),
        "registries:\n  - {name: bench, kind: file, path: unused.yaml, namespace: mesh}\n",
    )
    .expect("bench config parses");
    let rss_before = peak_rss_kib();

    let t = Instant::now();
    let snapshot = estate(services, instances, None);
    let build = t.elapsed();

    let mut index = config.index();
    let settings = config.writer_settings();
    let writes = Arc::new(AtomicUsize::new(0));
    let mut sinks = vec![settings.writer(
        NamedSink {
            name: "memory".into(),
            sink: Box::new(Memory::counting(writes.clone())),
        },
        Arc::new(Quiet),
    )];

    let t = Instant::now();
    index.apply("bench", Event::View(&snapshot), Duration::ZERO);
    drop(snapshot);
    let objects = index.desired().len();
    let translate_cold = t.elapsed();

    let t = Instant::now();
    assert!(block_on(pass::sync(&index, &mut sinks)).written);
    let sync_cold = t.elapsed();
    let creates = writes.swap(0, Ordering::Relaxed);

    let t = Instant::now();
    let steady = pass::plan_for(&index, &settings, sinks[0].sink.as_ref(), None);
    let plan_steady = t.elapsed();

    // Peak memory of the synced estate: catalog, desired objects and the sink's view.
    let rss = peak_rss_kib();

    // One instance changes, then changes back, CHANGES times: each is a full snapshot
    // from the registry (as the file source delivers) with one instance different.
    let changes = env_usize("BENCH_CHANGES", 20);
    let variants = [
        estate(services, instances, Some((services / 2, 3))),
        estate(services, instances, None),
    ];
    let mut latencies = Vec::with_capacity(changes);
    for n in 0..changes {
        let snapshot = variants[n % 2].clone();
        let t = Instant::now();
        index.apply("bench", Event::View(&snapshot), Duration::ZERO);
        block_on(pass::sync(&index, &mut sinks));
        latencies.push(t.elapsed());
    }
    let change_writes = writes.swap(0, Ordering::Relaxed);
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let max = latencies[latencies.len() - 1];

    // The same change as a watching source sends it: the changed service alone.
    let mut delta_latencies = Vec::with_capacity(changes);
    for n in 0..changes {
        let changed = format!("service-{:05}", services / 2);
        let service = variants[n % 2]
            .services()
            .iter()
            .find(|s| s.name == changed)
            .map(Arc::clone)
            .expect("the changed service is in the estate");
        let delta = RegistryDelta {
            upserts: vec![service],
            ..RegistryDelta::default()
        };
        let t = Instant::now();
        index.apply("bench", Event::Changed(&delta), Duration::ZERO);
        block_on(pass::sync(&index, &mut sinks));
        delta_latencies.push(t.elapsed());
    }
    let delta_writes = writes.swap(0, Ordering::Relaxed);
    delta_latencies.sort();

    let endpoints = services * instances;

    // The status page: what one refresh costs (the snapshot with the skipped items
    // asked of the index, and the page), and what a search costs.
    let board = registry_sync::status::StatusBoard::default();
    board.configure("bench", [("bench", "file")], ["memory"]);
    let shared = SharedIndex::new(index);
    let (searched, listed) = (shared.clone(), shared.clone());
    board.install(
        Box::new(move |q| {
            let lookup = searched.lock().lookup(q);
            lookup.explain()
        }),
        Box::new(move || listed.lock().problems_with_sources()),
    );
    let refreshes = 50;
    let t = Instant::now();
    let mut page_bytes = 0;
    for _ in 0..refreshes {
        page_bytes = registry_sync::status::render(&board.snapshot(), None, None).len();
    }
    let refresh = t.elapsed() / refreshes;
    let query = format!("service-{:05}", services / 2);
    let t = Instant::now();
    let mut found_page = 0;
    for _ in 0..refreshes {
        let found = board.search(&query);
        found_page = registry_sync::status::render(&board.snapshot(), Some(&query), Some(&found)).len();
    }
    let search = t.elapsed() / refreshes;

    // The same estate under every mapping control at once: what they add to translation.
    let allowed: Vec<String> = (0..50).map(|t| format!("team-{t}")).collect();
    let controlled = Config::parse(
        Path::new("bench.yaml"),
        &format!(
            "registries:
  - name: bench
    kind: file
    path: unused.yaml
    namespace: mesh
    provenance: true
    vip_range: 240.241.0.0/16
    select:
      services: {{exclude: [\"service-*9\"]}}
      instances: {{exclude_metadata: {{version: v9}}}}
    namespace_from: \"{{meta:team}}\"
    allowed_namespaces: [{}]
overrides:
  - {{name: grpc, service: \"service-0*\", ports: [{{port: 8080, protocol: GRPC, name: grpc-api}}]}}
  - {{name: external, service: \"service-1*\", location: mesh-external, export_to: [\".\"]}}
  - {{name: aliases, service: \"service-2*\", hosts: [alias.example], labels: {{tier: gold}}}}
",
            allowed.join(", ")
        ),
    )
    .expect("the bench's controlled config parses");
    let mut with_controls = controlled.index();
    let controlled_snapshot = estate(services, instances, None);
    let t = Instant::now();
    with_controls.apply("bench", Event::View(&controlled_snapshot), Duration::ZERO);
    let translate_controlled = t.elapsed();
    let controlled_objects = with_controls.desired().len();
    drop(with_controls);

    println!();
    println!(
        "registry-sync pipeline bench: {services} services x {instances} instances = {endpoints} endpoints"
    );
    println!();
    println!("| step | result | time |");
    println!("| --- | --- | --- |");
    println!(
        "| build catalog snapshot (input, not registry-sync work) | {services} services | {} |",
        ms(build)
    );
    println!("| translate, cold | {objects} objects | {} |", ms(translate_cold));
    println!(
        "| translate, cold, every mapping control on (select, namespace_from, 3 overrides, vip_range, provenance) | {controlled_objects} objects | {} |",
        ms(translate_controlled)
    );
    println!(
        "| plan + apply, cold (nothing held) | {creates} writes | {} |",
        ms(sync_cold)
    );
    println!(
        "| full plan, steady (nothing changed) | {} writes, {} unchanged | {} |",
        steady.writes(),
        steady.unchanged,
        ms(plan_steady)
    );
    println!(
        "| one instance changed, whole snapshot delivered: diff + translate + plan + apply | {} writes for {changes} changes | p50 {}, max {} |",
        change_writes,
        ms(p50),
        ms(max)
    );
    println!(
        "| the same change delivered as a watching source sends it (the changed service): index + plan + apply | {delta_writes} writes for {changes} changes | p50 {}, max {} |",
        us(delta_latencies[delta_latencies.len() / 2]),
        us(delta_latencies[delta_latencies.len() - 1])
    );
    println!(
        "| status page, one refresh (snapshot + page) | {page_bytes} bytes | {} |",
        us(refresh)
    );
    println!(
        "| status page with a search for one service (explain + page) | {found_page} bytes | {} |",
        us(search)
    );
    if let (Some(before), Some(peak)) = (rss_before, rss) {
        println!(
            "| peak resident memory | {:.1} MiB ({} bytes per endpoint over start) | |",
            peak as f64 / 1024.0,
            (peak.saturating_sub(before) * 1024) / endpoints.max(1) as u64
        );
    }
    println!();
    assert_eq!(steady.writes(), 0, "a steady estate must plan zero writes");
    assert_eq!(
        change_writes, changes,
        "each changed instance must cost exactly one write"
    );
    assert_eq!(delta_writes, changes, "each delta must cost exactly one write");
}
