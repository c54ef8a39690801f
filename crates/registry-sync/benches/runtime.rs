//! The runtime end to end: events fed to the writer library's `Runtime`, which `run`
//! drives, exactly as a watching source sends them (a whole view, then one changed
//! service at a time), through the feed loop and one writer task per sink, into the
//! files sink and the Kubernetes sink (the API server stand-in, in this process, over
//! real HTTP on loopback). Each figure is printed beside its bare baseline from the
//! same run:
//!
//! 1. one instance changed in a 10,000 × 10 estate → applied, Kubernetes sink, against
//!    one bare kube-rs server-side apply of a changed object made right after each change;
//! 2. the same through the files sink, against one bare durable file write into the same
//!    directory (temporary file, fsync, rename, fsync of the directory: what the sink
//!    does), also right after each change;
//! 3. the cold sync of the 10,000 entries, objects/s, against a bare loop of kube-rs
//!    applies at the same concurrency (the mean of one run before ours and one after);
//! 4. the files sink's latency while the Kubernetes API answers every request in 2 s,
//!    against the files sink alone (2.), each over the bare writes of its own window;
//! 5. peak RSS of the `registry-sync run` binary per endpoint at 100,000 endpoints (a
//!    services file and the files sink), over the same binary with an empty registry.
//!
//! Rows 1 and 3 also run against the real kube-apiserver when `REGISTRY_SYNC_TEST_KUBE`
//! names one (scripts/bench starts it), each beside the same bare kube-rs baseline
//! against that server.
//!
//! `cargo bench -p registry-sync --bench runtime`; `BENCH_SERVICES`, `BENCH_INSTANCES`,
//! `BENCH_CHANGES` change the sizes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use registry_sync::config::Config;
use registry_sync_catalog::RegistrySnapshot;
use registry_sync_index::Event;
use registry_sync_istio::Kind;
use registry_sync_kubernetes::{KubeSink, KubeSinkSettings, api_resource};
use registry_sync_sinks::{AsyncSink, FilesSink};
use registry_sync_testing::kube::StandIn;
use tokio::sync::mpsc;

mod support;

use support::*;

const CONCURRENCY: usize = 8;

/// Sends `changes` one-service changes, each after the previous one was applied, timing
/// each from its send to its apply returning. Each is followed by one run of `bare`, so
/// that ours and the baseline see the same moment of the machine (the file system's
/// periodic journal commits, the other tasks): timed apart, a tail in one of them says
/// more about when it ran than about it.
async fn changes_beside_bare<F: Future<Output = ()>>(
    runtime: &Runtime,
    estate: &mut Estate,
    done: &mut mpsc::UnboundedReceiver<Applied>,
    changes: usize,
    mut bare: impl FnMut(usize) -> F,
) -> (Vec<Duration>, Vec<Duration>, Parts) {
    let mut ours = Vec::with_capacity(changes);
    let mut baseline = Vec::with_capacity(changes);
    let mut parts = Parts::default();
    for n in 0..changes {
        let event = estate.change(n);
        let start = Instant::now();
        runtime.send(event).await;
        let applied = done.recv().await.expect("the writer runs");
        ours.push(applied.ended - start);
        parts.to_apply.push(applied.began - start);
        parts.applying.push(applied.ended - applied.began);
        // Let the echo of our write reach the sink's watch first, as it would between
        // two registry changes.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let start = Instant::now();
        bare(n).await;
        baseline.push(start.elapsed());
    }
    ours.sort();
    baseline.sort();
    parts.to_apply.sort();
    parts.applying.sort();
    (ours, baseline, parts)
}

/// Where a change's time went: from its send until its sink's apply began (source
/// channel, feed loop, index, the writer's wake-up and plan), and the apply itself.
#[derive(Default)]
struct Parts {
    to_apply: Vec<Duration>,
    applying: Vec<Duration>,
}

async fn kube_sink(client: kube::Client, namespace: &str) -> Box<dyn AsyncSink> {
    let settings = KubeSinkSettings {
        namespaces: BTreeSet::from([namespace.to_string()]),
        qps: 0.0,
        concurrency: CONCURRENCY,
        initial_list_timeout: Duration::from_secs(120),
        ..KubeSinkSettings::default()
    };
    Box::new(KubeSink::connect(client, settings, None).await.unwrap())
}

/// Rows 1 and 3 against the API server `client` reaches: the cold sync of the estate
/// beside a bare kube-rs apply loop, then one change at a time beside one bare apply.
struct KubeRows {
    services: usize,
    changes: Vec<Duration>,
    bare_apply: Vec<Duration>,
    parts: Parts,
    cold: Duration,
    cold_whole: Duration,
    bare_cold: Duration,
}

async fn kube_rows(
    client: kube::Client,
    config: &Config,
    estate: &mut Estate,
    change_count: usize,
) -> KubeRows {
    let services = estate.services.len();
    // 3, bare: kube-rs's cold loop into another namespace at the same concurrency, once
    // before ours (into an empty stand-in) and once after (into a fuller one); the
    // baseline is their mean, so that neither the store's size nor a slow moment of
    // the machine decides the ratio.
    let bare_api = |namespace: &str| -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), namespace, &api_resource(Kind::ServiceEntry))
    };
    let params = PatchParams::apply("bench-bare").force();
    let cold_objects = objects_in(config, estate, "bare-cold");
    let bare_cold_loop = |namespace: &'static str| {
        let api = bare_api(namespace);
        let objects: Vec<serde_json::Value> = cold_objects
            .iter()
            .map(|o| {
                let mut o = o.clone();
                o["metadata"]["namespace"] = namespace.into();
                o
            })
            .collect();
        let params = params.clone();
        async move {
            let start = Instant::now();
            futures::stream::iter(objects.iter().map(|o| {
                let name = o["metadata"]["name"].as_str().unwrap().to_string();
                let (api, params) = (&api, &params);
                async move { api.patch(&name, params, &Patch::Apply(o)).await.unwrap() }
            }))
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
            start.elapsed()
        }
    };
    let bare_cold_before = bare_cold_loop("bare-cold").await;

    // 1 and 3: the Kubernetes sink alone, cold, then one change at a time.
    let (sink, mut kube_done) = timed("kubernetes", kube_sink(client.clone(), "mesh").await);
    let runtime = Runtime::start(config, vec![sink]);
    let start = Instant::now();
    runtime.send(estate.snapshot()).await;
    let cold_apply = kube_done.recv().await.unwrap();
    // The writes alone, as the bare loop does them, and from the whole view's arrival
    // (the index translating 10,000 services and the writer planning them first).
    let (cold, cold_whole) = (cold_apply.ended - cold_apply.began, cold_apply.ended - start);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let written = bare_api("mesh")
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(written, services);
    // 1: each change followed by its bare baseline, one kube-rs apply of a changed
    // object.
    let api = bare_api("bare-single");
    let mut object = cold_objects[0].clone();
    object["metadata"]["namespace"] = "bare-single".into();
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    let (kube_changes, bare_apply, kube_parts) =
        changes_beside_bare(&runtime, estate, &mut kube_done, change_count, |n| {
            object["spec"]["ports"][0]["number"] = (20_000 + n).into();
            let body = object.clone();
            let (api, params, name) = (&api, &params, &name);
            async move {
                api.patch(name, params, &Patch::Apply(&body)).await.unwrap();
            }
        })
        .await;
    runtime.stop().await;
    let bare_cold_after = bare_cold_loop("bare-cold-after").await;
    let bare_cold = (bare_cold_before + bare_cold_after) / 2;

    KubeRows {
        services,
        changes: kube_changes,
        bare_apply,
        parts: kube_parts,
        cold,
        cold_whole,
        bare_cold,
    }
}

fn kube_change_row(server: &str, rows: &KubeRows, change_count: usize) {
    println!(
        "| one instance changed → applied, Kubernetes sink ({server}), p50 / p99 over {change_count} | {} | single kube-rs apply: {} | p99 {:.2} | ≤ 1.5 |",
        p50_p99(&rows.changes),
        p50_p99(&rows.bare_apply),
        p99_ratio(&rows.changes, &rows.bare_apply)
    );
}

fn kube_cold_row(server: &str, rows: &KubeRows) {
    let services = rows.services;
    println!(
        "| cold sync of {services} entries, Kubernetes sink ({server}): the writes | {:.0} objects/s ({}; {} from the view's arrival, with translating and planning) | kube-rs apply loop: {:.0} objects/s ({}) | {:.0} % | ≥ 95 % |",
        services as f64 / rows.cold.as_secs_f64(),
        ms(rows.cold),
        ms(rows.cold_whole),
        services as f64 / rows.bare_cold.as_secs_f64(),
        ms(rows.bare_cold),
        100.0 * rows.bare_cold.as_secs_f64() / rows.cold.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let services = env_usize("BENCH_SERVICES", 10_000);
    let instances = env_usize("BENCH_INSTANCES", 10);
    let change_count = env_usize("BENCH_CHANGES", 1_000);
    let config = bench_config();
    let server = StandIn::start().await;
    let mut estate = Estate::new(services, instances);

    let client = kube::Client::try_from(server.kube_config()).unwrap();
    let standin_rows = kube_rows(client.clone(), &config, &mut estate, change_count).await;
    // 2: the files sink alone.
    let out = tempfile::tempdir().unwrap();
    let mut files = FilesSink::open(out.path()).unwrap();
    files.watch().unwrap();
    let (sink, mut files_done) = timed("files", Box::new(files));
    let runtime = Runtime::start(&config, vec![sink]);
    let start = Instant::now();
    runtime.send(estate.snapshot()).await;
    let files_cold = files_done.recv().await.unwrap().ended - start;
    // Let the directory settle (the watch's echo of 10,000 writes, the kernel's
    // writeback) before timing single changes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sample = {
        let mut index = config.index();
        let snapshot = RegistrySnapshot::from_shared("bench", estate.services[..1].to_vec(), vec![]);
        index.apply("bench", Event::View(&snapshot), Duration::ZERO);
        registry_sync_istio::render_object(index.desired().values().next().unwrap()).unwrap()
    };
    // Into the same directory of 10,000 files (a rename and a directory sync cost more
    // there than in an empty one), under a name the sink does not read.
    let (files_alone, bare_write, files_parts) =
        changes_beside_bare(&runtime, &mut estate, &mut files_done, change_count, |_| {
            bare_file_write(out.path(), "zz-bare.txt", sample.as_bytes());
            std::future::ready(())
        })
        .await;
    runtime.stop().await;

    // 4: both sinks, the API answering in 2 s. Both already hold the estate, so the
    // first plans write nothing; every change then costs the Kubernetes writer 2 s.
    let kube = kube_sink(client.clone(), "mesh").await;
    let mut files = FilesSink::open(out.path()).unwrap();
    files.watch().unwrap();
    let (files_sink, mut both_done) = timed("files", Box::new(files));
    let (kube_sink_timed, mut slow_done) = timed("kubernetes", kube);
    server.faults().set_latency(Duration::from_secs(2));
    let runtime = Runtime::start(&config, vec![files_sink, kube_sink_timed]);
    runtime.send(estate.snapshot()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    while both_done.try_recv().is_ok() {}
    let slow_changes = change_count;
    // Paced as in 2., each beside its bare write: the figure is the p99 ratio to the
    // bare write of its own window over that of 2., so a noisier minute of the machine
    // in one window does not pass for the slow sink's doing.
    let (files_beside_slow, bare_beside_slow, _) =
        changes_beside_bare(&runtime, &mut estate, &mut both_done, slow_changes, |_| {
            bare_file_write(out.path(), "zz-bare.txt", sample.as_bytes());
            std::future::ready(())
        })
        .await;
    let _ = std::fs::remove_file(out.path().join("zz-bare.txt"));
    let kube_still_writing = slow_done.try_recv().is_err();
    runtime.stop().await;
    server.faults().clear();

    // 1 and 3 again against the real kube-apiserver, when scripts/bench started one.
    let real = match registry_sync_testing::servers::KubeApiServer::shared() {
        Some(real) => {
            for namespace in ["mesh", "bare-cold", "bare-single", "bare-cold-after"] {
                real.create_namespace(namespace).await;
            }
            Some(kube_rows(real.admin().await, &config, &mut estate, change_count).await)
        }
        None => None,
    };

    // 5: the binary's peak RSS per endpoint.
    let work = tempfile::tempdir().unwrap();
    let empty = binary_peak_rss(work.path(), "services: []\n", 0);
    let full = binary_peak_rss(work.path(), &services_yaml(services, instances), services);
    let endpoints = services * instances;
    let per_endpoint = (full.saturating_sub(empty) * 1024) as f64 / endpoints as f64;

    println!();
    println!(
        "registry-sync runtime: {services} services × {instances} instances = {endpoints} endpoints; changes fed as a watching source sends them; the API server stand-in{} on loopback; concurrency {CONCURRENCY}",
        if real.is_some() {
            " and the real kube-apiserver"
        } else {
            ""
        }
    );
    println!();
    println!("| figure | registry-sync | bare baseline (same run) | ratio | goal |");
    println!("| --- | --- | --- | --- | --- |");
    kube_change_row("API server stand-in", &standin_rows, change_count);
    if let Some(real) = &real {
        kube_change_row("real kube-apiserver", real, change_count);
    }
    println!(
        "| one instance changed → applied, files sink, p50 / p99 over {change_count} | {} | single durable file write: {} | p99 {:.2} | ≤ 1.5 |",
        p50_p99(&files_alone),
        p50_p99(&bare_write),
        p99_ratio(&files_alone, &bare_write)
    );
    kube_cold_row("API server stand-in", &standin_rows);
    if let Some(real) = &real {
        kube_cold_row("real kube-apiserver", real);
    }
    println!(
        "| files sink p50 / p99 while the API answers in 2 s, over {slow_changes}{} | {} (bare write beside it: {}) | files sink alone: {} (bare write beside it: {}) | p99 {:.2} against its own bare write, over 2.'s (raw {:.2}) | ≤ 1.2 |",
        if kube_still_writing {
            " (the Kubernetes writer still in its first apply)"
        } else {
            ""
        },
        p50_p99(&files_beside_slow),
        p50_p99(&bare_beside_slow),
        p50_p99(&files_alone),
        p50_p99(&bare_write),
        p99_ratio(&files_beside_slow, &bare_beside_slow) / p99_ratio(&files_alone, &bare_write),
        p99_ratio(&files_beside_slow, &files_alone)
    );
    println!(
        "| peak RSS of `run` per endpoint (services file → files sink) | {per_endpoint:.0} B ({:.0} MiB) | empty registry: {:.0} MiB | | ≤ 1 KiB |",
        full as f64 / 1024.0,
        empty as f64 / 1024.0
    );
    println!(
        "| files sink cold sync of {services} files | {} | | | |",
        ms(files_cold)
    );
    println!();
    let mut all_parts = vec![
        ("Kubernetes (stand-in)", &standin_rows.parts),
        ("files", &files_parts),
    ];
    if let Some(real) = &real {
        all_parts.push(("Kubernetes (real kube-apiserver)", &real.parts));
    }
    for (sink, parts) in all_parts {
        println!(
            "{sink} sink, where a change's time goes (p50 / p99): until its apply begins {}, the apply {}",
            p50_p99(&parts.to_apply),
            p50_p99(&parts.applying)
        );
    }
    println!();
}
