//! Translate + plan on a large estate: `cargo bench -p registry-sync --bench pipeline`.
//!
//! Builds 10,000 services × 10 instances (100,000 endpoints) in memory and measures
//! the cold pass (everything to create), the steady pass (nothing changed) and the pass
//! after one instance changed, plus the process's peak resident memory. Prints a table.
//! `BENCH_SERVICES` / `BENCH_INSTANCES` change the estate size.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use registry_sync::config::Config;
use registry_sync::pipeline::Pipeline;
use registry_sync_catalog::{Address, Instance, InstancePort, RegistrySnapshot, Service};
use registry_sync_istio::{HeldObject, IstioObject, ObjectKey};
use registry_sync_plan::Plan;
use registry_sync_sinks::{ApplyReport, Sink, SinkError};

/// A sink that holds objects in memory, as a sink would after applying.
#[derive(Default)]
struct Memory(BTreeMap<ObjectKey, HeldObject>);

impl Memory {
    fn take(&mut self, objects: &[IstioObject]) {
        for o in objects {
            self.0.insert(
                o.key(),
                HeldObject {
                    key: o.key(),
                    labels: o.metadata.labels.clone(),
                    content_hash: Some(o.content_hash().to_string()),
                },
            );
        }
    }
}

impl Sink for Memory {
    fn held(&self) -> &BTreeMap<ObjectKey, HeldObject> {
        &self.0
    }

    fn apply(&mut self, plan: &Plan) -> Result<ApplyReport, SinkError> {
        self.take(&plan.creates);
        self.take(&plan.updates);
        for key in &plan.deletes {
            self.0.remove(key);
        }
        Ok(ApplyReport {
            created: plan.creates.len(),
            updated: plan.updates.len(),
            deleted: plan.deletes.len(),
            failed: vec![],
        })
    }
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
            labels: [("team".to_string(), format!("team-{}", s % 50))].into(),
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
                        locality: Some(format!("region-{}/zone-{}", s % 3, i % 3)),
                        network: None,
                        service_account: None,
                        labels: [("version".to_string(), format!("v{}", i % 2))].into(),
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

    let mut pipeline = Pipeline::new(&config);
    let mut sink = Memory::default();

    let t = Instant::now();
    pipeline.registry_synced("bench", snapshot);
    let objects = pipeline.desired().len();
    let translate_cold = t.elapsed();

    let t = Instant::now();
    let cold_plan = pipeline.plan_for(&sink);
    let plan_cold = t.elapsed();
    let creates = cold_plan.creates.len();
    sink.apply(&cold_plan).expect("memory sink never fails");
    drop(cold_plan);

    let t = Instant::now();
    let steady = pipeline.plan_for(&sink);
    let plan_steady = t.elapsed();

    let changed = estate(services, instances, Some((services / 2, 3)));
    let t = Instant::now();
    pipeline.registry_synced("bench", changed);
    let one_plan = pipeline.plan_for(&sink);
    let one_change = t.elapsed();

    let rss = peak_rss_kib();
    let endpoints = services * instances;

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
        "| plan, cold (nothing held) | {creates} creates | {} |",
        ms(plan_cold)
    );
    println!(
        "| plan, steady (nothing changed) | {} writes, {} unchanged | {} |",
        steady.writes(),
        steady.unchanged,
        ms(plan_steady)
    );
    println!(
        "| one instance changed: catalog update + translate + plan | {} write(s) | {} |",
        one_plan.writes(),
        ms(one_change)
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
        one_plan.writes(),
        1,
        "one changed instance must plan exactly one write"
    );
}
