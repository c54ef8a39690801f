//! Propagation through the watching registries, against real servers started for the
//! run (etcd and ZooKeeper from the Debian packages scripts/test installs, moto for
//! Cloud Map from PyPI, rnacos for Nacos from crates.io):
//! `cargo bench -p registry-sync --bench registries`.
//!
//! For each registry, CHANGES times: one instance's port changes in the registry; timed
//! from the write until registry-sync has applied the changed object to a sink (source →
//! catalog → translate → plan → apply). Beside it, a bare watch client of the same
//! registry measures the registry's own notification latency, and the table reports
//! the ratio of the p99s. Then the registry is left alone for IDLE seconds and the
//! requests registry-sync's source sends it are counted from the server's own counters.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use registry_sync::config::Config;
use registry_sync_istio::{HeldObject, ObjectKey, Spec};
use registry_sync_plan::Plan;
use registry_sync_sinks::{ApplyReport, Sink, SinkError};
use registry_sync_sources::SourceEvent;
use registry_sync_sources::etcd::{EtcdClient, EtcdConfig, EtcdSource, ValueFormat};
use registry_sync_sources::zookeeper::{ZkLayout, ZookeeperConfig, ZookeeperSource};
use registry_sync_testing::servers::{TestEtcd, TestZookeeper};
use registry_sync_writer::{NamedSink, Quiet, feed, pass};
use std::collections::BTreeMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[path = "registries/cloudmap.rs"]
mod cloudmap;
#[path = "registries/nacos.rs"]
mod nacos;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The endpoint port of the last applied ServiceEntry, and a wake-up when it changes:
/// the bench waits on it without polling, as the bare clients wait on their streams.
#[derive(Default)]
pub struct Port {
    value: AtomicUsize,
    changed: tokio::sync::Notify,
}

/// Remembers the endpoint port of the last applied ServiceEntry.
struct PortSink {
    held: BTreeMap<ObjectKey, HeldObject>,
    port: Arc<Port>,
}

impl Sink for PortSink {
    fn held(&self) -> &BTreeMap<ObjectKey, HeldObject> {
        &self.held
    }

    fn apply(&mut self, plan: &Plan) -> Result<ApplyReport, SinkError> {
        for object in plan.creates.iter().chain(&plan.updates) {
            if let Spec::ServiceEntry(se) = &object.spec
                && let Some(port) = se
                    .endpoints
                    .first()
                    .and_then(|e| e.ports.iter().next().map(|(_, p)| *p))
            {
                self.port.value.store(port as usize, Ordering::SeqCst);
                self.port.changed.notify_waiters();
            }
            let held = HeldObject::written(object);
            self.held.insert(object.key(), held);
        }
        Ok(ApplyReport {
            created: plan.creates.len(),
            updated: plan.updates.len(),
            ..Default::default()
        })
    }
}

/// Runs a source into an index and a [`PortSink`] until `cancel`.
fn run_pipeline(
    config: Config,
    mut rx: mpsc::Receiver<SourceEvent>,
    port: Arc<Port>,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        let mut index = config.index();
        let mut sinks = vec![config.writer_settings().writer(
            NamedSink {
                name: "bench".into(),
                sink: Box::new(PortSink {
                    held: BTreeMap::new(),
                    port,
                }),
            },
            Arc::new(Quiet),
        )];
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => return,
                event = rx.recv() => match event { Some(e) => e, None => return },
            };
            let mut changed = false;
            for event in std::iter::once(event).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                changed |= feed::take(&mut index, event, Duration::ZERO, &Quiet);
            }
            if changed {
                pass::sync(&index, &mut sinks).await;
            }
        }
    });
}

async fn wait_port(port: &Port, want: usize) {
    loop {
        let changed = port.changed.notified();
        if port.value.load(Ordering::SeqCst) == want {
            return;
        }
        changed.await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

struct Row {
    registry: &'static str,
    bare: Vec<Duration>,
    synced: Vec<Duration>,
    idle_requests_per_s: String,
    /// What the source's own counter (the status page's column) saw in the same window.
    counted_per_s: String,
}

/// The source's own request count, read around the idle window.
fn counted(registry: &str) -> u64 {
    registry_sync_sources::requests::Requests::of(registry).total()
}

fn per_s(requests: u64, window: Duration) -> String {
    format!("{:.2}", requests as f64 / window.as_secs_f64())
}

async fn bench_etcd(changes: usize, idle: Duration) -> Row {
    let server = TestEtcd::start().expect("etcd is installed (scripts/test installs it)");
    let url = server.url();
    let mut client = EtcdClient::connect_plain(&url).await.unwrap();
    let value = |port: usize| format!("{{\"Addr\":\"10.0.0.1:{port}\",\"Metadata\":{{}}}}");

    // The registry's own latency: a bare watch client.
    let mut stream = client.watch_prefix("/bare/").await.unwrap();
    let mut bare = Vec::with_capacity(changes);
    for n in 0..changes {
        let t = Instant::now();
        client.put("/bare/orders/1", value(10000 + n)).await.unwrap();
        stream.next_events().await.unwrap();
        bare.push(t.elapsed());
    }

    client.put("/services/orders/1", value(9000)).await.unwrap();
    let config = Config::parse(
        Path::new("bench.yaml"),
        &format!("registries:\n  - {{name: kv, kind: etcd, address: \"{url}\", prefix: /services, namespace: mesh}}\n"),
    )
    .unwrap();
    let source = EtcdSource::new(
        "kv",
        EtcdConfig {
            endpoints: vec![url],
            prefix: "/services".into(),
            credentials: None,
            tls: None,
            format: ValueFormat::NamingEndpoints,
        },
    );
    let (tx, rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let port = Arc::new(Port::default());
    tokio::spawn(source.watch(tx, cancel.clone()));
    run_pipeline(config, rx, port.clone(), cancel.clone());
    wait_port(&port, 9000).await;
    let mut synced = Vec::with_capacity(changes);
    for n in 0..changes {
        let want = 10000 + n;
        let t = Instant::now();
        client.put("/services/orders/1", value(want)).await.unwrap();
        wait_port(&port, want).await;
        synced.push(t.elapsed());
    }
    // Idle: requests the server handled while nothing changed (its own gRPC counter).
    let metrics = |url: &str| -> f64 {
        let out = std::process::Command::new("curl")
            .args(["-s", &format!("{url}/metrics")])
            .output();
        out.ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.starts_with("grpc_server_handled_total") || l.starts_with("grpc_server_started_total")
            })
            .filter(|l| l.starts_with("grpc_server_started_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = metrics(&server.url());
    let counted_before = counted("kv");
    tokio::time::sleep(idle).await;
    let after = metrics(&server.url());
    let counted_idle = counted("kv") - counted_before;
    cancel.cancel();
    Row {
        registry: "etcd (prefix watch)",
        bare,
        synced,
        idle_requests_per_s: format!("{:.2}", (after - before) / idle.as_secs_f64()),
        counted_per_s: per_s(counted_idle, idle),
    }
}

async fn bench_zookeeper(changes: usize, idle: Duration) -> Row {
    use zookeeper_client::{Acls, AddWatchMode, Client, CreateMode};
    let server = TestZookeeper::start().expect("ZooKeeper is installed (scripts/test installs it)");
    let address = server.address();
    let zk = Client::connector().connect(&address).await.unwrap();
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let spring = |port: usize| {
        format!(r#"{{"name":"orders","id":"a1","address":"10.0.0.1","port":{port},"payload":{{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","metadata":{{}}}}}}"#)
            .into_bytes()
    };
    zk.mkdir("/bare/orders", &persistent).await.unwrap();
    zk.create("/bare/orders/a1", &spring(1), &persistent)
        .await
        .unwrap();
    let mut watcher = zk
        .watch("/bare", AddWatchMode::PersistentRecursive)
        .await
        .unwrap();
    let mut bare = Vec::with_capacity(changes);
    for n in 0..changes {
        let t = Instant::now();
        zk.set_data("/bare/orders/a1", &spring(10000 + n), None)
            .await
            .unwrap();
        watcher.changed().await;
        bare.push(t.elapsed());
    }

    zk.mkdir("/services/orders", &persistent).await.unwrap();
    zk.create("/services/orders/a1", &spring(9000), &persistent)
        .await
        .unwrap();
    let config = Config::parse(
        Path::new("bench.yaml"),
        &format!("registries:\n  - {{name: spring, kind: zookeeper, address: \"{address}\", layout: curator, root: /services, namespace: mesh}}\n"),
    )
    .unwrap();
    let source = ZookeeperSource::new(
        "spring",
        ZookeeperConfig {
            address: address.clone(),
            chroot: None,
            layout: ZkLayout::Curator,
            root: "/services".into(),
            credentials: None,
            session_timeout: Duration::from_secs(10),
        },
    );
    let (tx, rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let port = Arc::new(Port::default());
    tokio::spawn(source.watch(tx, cancel.clone()));
    run_pipeline(config, rx, port.clone(), cancel.clone());
    wait_port(&port, 9000).await;
    let mut synced = Vec::with_capacity(changes);
    for n in 0..changes {
        let want = 10000 + n;
        let t = Instant::now();
        zk.set_data("/services/orders/a1", &spring(want), None)
            .await
            .unwrap();
        wait_port(&port, want).await;
        synced.push(t.elapsed());
    }
    // Idle: packets the server received, from its `mntr` counters (includes both this
    // benchmark's sessions' pings, so it is an upper bound for the source alone).
    let packets = |address: &str| -> f64 {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.write_all(b"mntr").unwrap();
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text.lines()
            .find(|l| l.starts_with("zk_packets_received"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0)
    };
    let before = packets(&address);
    let counted_before = counted("spring");
    tokio::time::sleep(idle).await;
    let after = packets(&address);
    let counted_idle = counted("spring") - counted_before;
    cancel.cancel();
    Row {
        registry: "ZooKeeper (persistent recursive watch, Curator layout)",
        bare,
        synced,
        idle_requests_per_s: format!(
            "≤ {:.2} (session pings of two clients)",
            (after - before - 1.0).max(0.0) / idle.as_secs_f64()
        ),
        // Pings are the client library's own, below the source: not counted.
        counted_per_s: per_s(counted_idle, idle),
    }
}

/// Consul and Eureka have no installable server here: their stand-ins (test support)
/// take the writes, so there is no bare-client column; the time is from the write to
/// the stand-in until registry-sync applied it.
async fn bench_http(name: &'static str, changes: usize, idle: Duration) -> Row {
    use registry_sync_sources::consul::{ConsulConfig, ConsulSource};
    use registry_sync_sources::eureka::{EurekaConfig, EurekaSource};
    use registry_sync_testing::standins::consul::ConsulStandIn;
    use registry_sync_testing::standins::eureka::EurekaStandIn;
    use serde_json::json;

    let (tx, rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let port = Arc::new(Port::default());
    let consul_server;
    let eureka_server;
    let write: Box<dyn Fn(usize)>;
    let counts: Box<dyn Fn() -> u64>;
    let config;
    if name == "consul" {
        consul_server = ConsulStandIn::start();
        let server = &consul_server;
        let register = move |server: &ConsulStandIn, port: usize| {
            server
                .register(
                    json!({"ID": "web-1", "Name": "web", "Address": "10.0.0.1", "Port": port,
                    "Check": {"CheckID": "check-web-1", "TTL": "30s", "Status": "passing"}}),
                )
                .unwrap()
        };
        register(server, 9000);
        let url = server.url();
        config = Config::parse(
            Path::new("bench.yaml"),
            &format!(
                "registries:\n  - {{name: consul, kind: consul, address: \"{url}\", namespace: mesh}}\n"
            ),
        )
        .unwrap();
        tokio::spawn(ConsulSource::new("consul", ConsulConfig::new(url)).watch(tx, cancel.clone()));
        let s: &'static ConsulStandIn = Box::leak(Box::new(consul_server));
        write = Box::new(move |p| register(s, p));
        counts = Box::new(move || s.counts().total());
    } else {
        eureka_server = EurekaStandIn::start();
        let instance = |port: usize| {
            json!({"instanceId": "o1", "hostName": "o1.local", "app": "ORDERS", "ipAddr": "10.0.0.1",
                "status": "UP", "port": {"$": port, "@enabled": "true"}, "securePort": {"$": 443, "@enabled": "false"},
                "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"}})
        };
        eureka_server.register("orders", instance(9000)).unwrap();
        let url = eureka_server.url();
        config = Config::parse(
            Path::new("bench.yaml"),
            &format!(
                "registries:\n  - {{name: eureka, kind: eureka, address: \"{url}\", namespace: mesh}}\n"
            ),
        )
        .unwrap();
        tokio::spawn(EurekaSource::new("eureka", EurekaConfig::new(url)).watch(tx, cancel.clone()));
        let s: &'static EurekaStandIn = Box::leak(Box::new(eureka_server));
        write = Box::new(move |p| s.register("orders", instance(p)).unwrap());
        counts = Box::new(move || s.counts().total());
    }
    run_pipeline(config, rx, port.clone(), cancel.clone());
    wait_port(&port, 9000).await;
    let mut synced = Vec::with_capacity(changes);
    for n in 0..changes {
        let want = 10000 + n;
        // Spaced past the source's re-query floor (50 ms, a rate limit for bursts), so
        // each change is measured as an isolated one.
        if name == "consul" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let t = Instant::now();
        write(want);
        wait_port(&port, want).await;
        synced.push(t.elapsed());
    }
    let before = counts();
    let counted_before = counted(name);
    tokio::time::sleep(idle).await;
    let after = counts();
    let counted_idle = counted(name) - counted_before;
    cancel.cancel();
    Row {
        registry: if name == "consul" {
            "Consul (blocking queries; stand-in)"
        } else {
            "Eureka (delta every 1 s + hashcode; stand-in)"
        },
        bare: Vec::new(),
        synced,
        idle_requests_per_s: format!("{:.2}", (after - before) as f64 / idle.as_secs_f64()),
        counted_per_s: per_s(counted_idle, idle),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let changes = env_usize("BENCH_CHANGES", 300);
    let idle = Duration::from_secs(env_usize("BENCH_IDLE_SECONDS", 10) as u64);
    // BENCH_ONLY=nacos,etcd runs only those rows; every row by default.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| only.trim().is_empty() || only.split(',').any(|o| o.trim() == name);
    let mut rows = Vec::new();
    if run("etcd") {
        rows.push(bench_etcd(changes, idle).await);
    }
    if run("zookeeper") {
        rows.push(bench_zookeeper(changes, idle).await);
    }
    if run("consul") {
        rows.push(bench_http("consul", changes, idle).await);
    }
    if run("eureka") {
        rows.push(bench_http("eureka", changes.min(60), idle).await);
    }
    if run("cloudmap") {
        rows.push(cloudmap::bench_cloudmap(changes, idle).await);
    }
    if run("nacos") {
        rows.push(nacos::bench_nacos(changes, idle).await);
    }
    println!();
    println!("registry write → object applied by registry-sync, {changes} changes each, on loopback");
    println!();
    println!(
        "| registry | bare watch p50 / p99 | registry-sync p50 / p99 | p99 ratio | idle requests/s to the registry | counted by registry-sync |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for row in &mut rows {
        row.bare.sort();
        row.synced.sort();
        let s99 = percentile(&row.synced, 0.99);
        let (bare, ratio) = if row.bare.is_empty() {
            ("no installable server".to_string(), "–".to_string())
        } else {
            let b99 = percentile(&row.bare, 0.99);
            (
                format!("{} / {}", ms(percentile(&row.bare, 0.5)), ms(b99)),
                format!("{:.2}", s99.as_secs_f64() / b99.as_secs_f64()),
            )
        };
        println!(
            "| {} | {bare} | {} / {} | {ratio} | {} | {} |",
            row.registry,
            ms(percentile(&row.synced, 0.5)),
            ms(s99),
            row.idle_requests_per_s,
            row.counted_per_s
        );
    }
    println!();
}
