//! What the runtime benches share: the estate as a watching source holds it, `run`'s
//! core fed by the bench, a sink wrapper that reports when each apply began and ended,
//! and percentiles.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_sync::config::Config;
use registry_sync_catalog::{RegistryDelta, RegistrySnapshot, Service};
use registry_sync_index::Event;
use registry_sync_istio::{HeldObject, ObjectKey};
use registry_sync_plan::Plan;
use registry_sync_sinks::{ApplyReport, AsyncSink, BoxFuture, SinkError};
use registry_sync_sources::SourceEvent;
use registry_sync_writer::{Leadership, NamedSink, Quiet, Ready, SharedIndex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One file registry named `bench` whose objects land in `mesh`, inline endpoints.
pub fn bench_config() -> Config {
    Config::parse(
        Path::new("bench.yaml"),
        "registries:\n  - {name: bench, kind: file, path: unused.yaml, namespace: mesh, endpoints: inline}\n",
    )
    .expect("bench config parses")
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn service(s: usize, instances: usize, port: u16) -> Service {
    use registry_sync_catalog::testing;
    let instances = (0..instances)
        .map(|i| {
            let n = s * instances + i;
            let address = format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255);
            let mut instance =
                testing::instance(&format!("i-{n}"), &address, if i == 0 { port } else { 8080 });
            instance.labels = [("version".to_string(), format!("v{}", i % 2))]
                .into_iter()
                .collect();
            instance
        })
        .collect();
    testing::service(&format!("service-{s:05}"), instances)
}

/// When one apply began and when it returned, and the objects it wrote.
#[derive(Clone)]
pub struct Applied {
    pub began: Instant,
    pub ended: Instant,
    pub written: std::collections::BTreeSet<ObjectKey>,
}

/// A sink that reports when each apply began and returned.
pub struct Timed {
    pub inner: Box<dyn AsyncSink>,
    pub done: mpsc::UnboundedSender<Applied>,
}

impl AsyncSink for Timed {
    fn refresh(&mut self) -> BoxFuture<'_, Vec<ObjectKey>> {
        self.inner.refresh()
    }

    fn held(&self) -> &BTreeMap<ObjectKey, HeldObject> {
        self.inner.held()
    }

    fn apply<'a>(&'a mut self, plan: &'a Plan) -> BoxFuture<'a, Result<ApplyReport, SinkError>> {
        Box::pin(async move {
            let began = Instant::now();
            let report = self.inner.apply(plan).await;
            let _ = self.done.send(Applied {
                began,
                ended: Instant::now(),
                written: plan
                    .creates
                    .iter()
                    .chain(&plan.updates)
                    .map(|o| o.key())
                    .collect(),
            });
            report
        })
    }

    fn observe(&mut self) -> BoxFuture<'_, Vec<ObjectKey>> {
        self.inner.observe()
    }

    fn complete(&mut self) {
        self.inner.complete();
    }

    fn needs_leadership(&self) -> bool {
        self.inner.needs_leadership()
    }
}

pub fn timed(name: &str, inner: Box<dyn AsyncSink>) -> (NamedSink, mpsc::UnboundedReceiver<Applied>) {
    let (done, rx) = mpsc::unbounded_channel();
    let sink = NamedSink {
        name: name.into(),
        sink: Box::new(Timed { inner, done }),
    };
    (sink, rx)
}

/// The estate as a watching source holds it, and the port counter that makes every
/// change a real one.
pub struct Estate {
    pub services: Vec<Arc<Service>>,
    pub instances: usize,
    pub next_port: u16,
}

impl Estate {
    pub fn new(services: usize, instances: usize) -> Estate {
        Estate {
            services: (0..services)
                .map(|s| Arc::new(service(s, instances, 8080)))
                .collect(),
            instances,
            next_port: 10_000,
        }
    }

    pub fn snapshot(&self) -> SourceEvent {
        SourceEvent::Snapshot {
            registry: "bench".into(),
            snapshot: RegistrySnapshot::from_shared("bench", self.services.clone(), vec![]),
        }
    }

    /// One instance of one service changes its port: the delta a source sends.
    pub fn change(&mut self, n: usize) -> SourceEvent {
        let s = (n * 7919) % self.services.len();
        self.next_port = if self.next_port >= 60_000 {
            10_000
        } else {
            self.next_port + 1
        };
        self.services[s] = Arc::new(service(s, self.instances, self.next_port));
        SourceEvent::Changed {
            registry: "bench".into(),
            delta: RegistryDelta {
                upserts: vec![Arc::clone(&self.services[s])],
                ..RegistryDelta::default()
            },
        }
    }
}

/// The writer library's runtime with these sinks, fed by the bench.
pub struct Runtime {
    pub events: mpsc::Sender<SourceEvent>,
    pub cancel: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Runtime {
    pub fn start(config: &Config, sinks: Vec<NamedSink>) -> Runtime {
        let (events, rx) = mpsc::channel(1024);
        let cancel = CancellationToken::new();
        let config = config.clone();
        let stop = cancel.clone();
        let runtime = registry_sync_writer::Runtime {
            settings: config.writer_settings(),
            leadership: Leadership::always(),
            observer: Arc::new(Quiet),
            ready: Ready::default(),
        };
        let index = SharedIndex::new(config.index());
        let task = tokio::spawn(async move { runtime.run(index, sinks, rx, stop).await });
        Runtime { events, cancel, task }
    }

    pub async fn send(&self, event: SourceEvent) {
        self.events.send(event).await.expect("the runtime runs");
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

pub fn p50_p99(sorted: &[Duration]) -> String {
    format!(
        "{} / {}",
        ms(percentile(sorted, 0.5)),
        ms(percentile(sorted, 0.99))
    )
}

pub fn p99_ratio(ours: &[Duration], bare: &[Duration]) -> f64 {
    percentile(ours, 0.99).as_secs_f64() / percentile(bare, 0.99).as_secs_f64()
}

/// What the files sink does for one object, without registry-sync around it.
pub fn bare_file_write(dir: &Path, name: &str, text: &[u8]) {
    let tmp = dir.join(".bare.tmp");
    let mut file = std::fs::File::create(&tmp).unwrap();
    file.write_all(text).unwrap();
    file.sync_all().unwrap();
    drop(file);
    std::fs::rename(&tmp, dir.join(name)).unwrap();
    std::fs::File::open(dir).unwrap().sync_all().unwrap();
}

pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak RSS of `registry-sync run` once it has written `expected` files.
pub fn binary_peak_rss(dir: &Path, services_yaml: &str, expected: usize) -> u64 {
    std::fs::write(dir.join("services.yaml"), services_yaml).unwrap();
    std::fs::write(
        dir.join("sync.yaml"),
        "registries:\n  - {name: legacy, kind: file, path: services.yaml, namespace: mesh, endpoints: inline}\nsinks:\n  files: {dir: out}\n",
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(dir.join("out"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_registry-sync"))
        .args(["run", "--config", "sync.yaml"])
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the binary starts");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let written = std::fs::read_dir(dir.join("out")).map_or(0, |d| d.count());
        if written >= expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the binary never wrote {expected} files"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let peak = peak_rss_kib(child.id()).unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    peak
}

pub fn services_yaml(services: usize, instances: usize) -> String {
    let mut text = String::from("services:\n");
    for s in 0..services {
        text.push_str(&format!("  - name: service-{s:05}\n    instances:\n"));
        for i in 0..instances {
            let n = s * instances + i;
            text.push_str(&format!(
                "      - address: 10.{}.{}.{}\n        ports: {{http: 8080}}\n        labels: {{version: v{}}}\n",
                n >> 16 & 255,
                n >> 8 & 255,
                n & 255,
                i % 2
            ));
        }
    }
    text
}

/// The desired objects of the estate as JSON, moved to `namespace`.
pub fn objects_in(config: &Config, estate: &Estate, namespace: &str) -> Vec<serde_json::Value> {
    let mut index = config.index();
    let snapshot = RegistrySnapshot::from_shared("bench", estate.services.clone(), vec![]);
    index.apply("bench", Event::View(&snapshot), Duration::ZERO);
    index
        .desired()
        .values()
        .map(|o| {
            let mut value = serde_json::to_value(&**o).unwrap();
            value["metadata"]["namespace"] = namespace.into();
            value
        })
        .collect()
}
