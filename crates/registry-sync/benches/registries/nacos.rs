//! The Nacos row: a private rnacos, written through its v1 HTTP open API. The bare
//! column is a nacos-sdk subscriber of its own (the push latency every Nacos client
//! sees); idle requests are the server's own counters (`/metrics`: gRPC requests
//! handled plus HTTP requests, less the bench's own scrapes).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nacos_sdk::api::naming::{NamingChangeEvent, NamingEventListener, NamingServiceBuilder};
use nacos_sdk::api::props::ClientProps;
use registry_sync::config::Config;
use registry_sync_sources::nacos::{NacosConfig, NacosSource};
use registry_sync_testing::servers::{NacosInstance, NacosWriter, TestNacos};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Row, counted, per_s, run_pipeline, wait_port};

/// Sends the port of every pushed instance list.
struct Ports(mpsc::UnboundedSender<Vec<i32>>);

impl NamingEventListener for Ports {
    fn event(&self, event: Arc<NamingChangeEvent>) {
        let ports = event.instances.iter().flatten().map(|i| i.port).collect();
        let _ = self.0.send(ports);
    }
}

/// Moves `service`'s one instance from port `old` to `new`, off the async threads. A
/// Nacos instance is its ip and port, so that is a registration and a deregistration;
/// rnacos pushes both in one notification (it gathers changes for 500 ms).
async fn move_port(writer: &NacosWriter, service: &'static str, old: Option<usize>, new: usize) {
    let writer = writer.clone();
    tokio::task::spawn_blocking(move || {
        writer.put(&NacosInstance {
            namespace_id: "public",
            group: "DEFAULT_GROUP",
            service,
            ip: "10.0.0.1",
            port: new as u32,
            extra: &[],
        });
        if let Some(old) = old {
            writer.delete("public", "DEFAULT_GROUP", service, "10.0.0.1", old as u32);
        }
    })
    .await
    .expect("the write ran");
}

/// rnacos gathers changes for 500 ms and pushes on a 500 ms tick, so when a write lands
/// decides much of its latency. A loop that writes the instant it sees the last push
/// lands every write at the same point of the tick; each write first waits a different
/// share of the tick (the same shares for both columns), so writes land anywhere in it.
async fn spread_over_the_push_tick(n: usize) {
    tokio::time::sleep(Duration::from_millis((n as u64 * 211) % 500)).await;
}

/// gRPC requests handled plus HTTP requests served, from rnacos's `/metrics`.
async fn requests(writer: &NacosWriter) -> f64 {
    let writer = writer.clone();
    let body = tokio::task::spawn_blocking(move || writer.send("GET", "/metrics", &[]).1)
        .await
        .unwrap_or_default();
    body.lines()
        .filter(|l| {
            l.starts_with("grpc_request_handle_rt_histogram_count ")
                || l.starts_with("http_request_total_count ")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub(super) async fn bench_nacos(changes: usize, idle: Duration) -> Row {
    let server = TestNacos::start().expect("rnacos is installed (scripts/test installs it)");
    let writer = server.writer();

    // The registry's own latency: a bare subscriber.
    move_port(&writer, "bare", None, 9000).await;
    let props = ClientProps::new()
        .server_addr(server.address())
        .namespace("public")
        .env_first(false)
        .naming_push_empty_protection(false)
        .cache_dir(std::env::temp_dir().join(format!("registry-sync-bench-nacos-{}", std::process::id())));
    let naming = NamingServiceBuilder::new(props).build().await.unwrap();
    let (tx, mut pushed) = mpsc::unbounded_channel();
    let listener: Arc<dyn NamingEventListener> = Arc::new(Ports(tx));
    naming
        .subscribe("bare".into(), None, Vec::new(), Arc::clone(&listener))
        .await
        .unwrap();
    let mut bare = Vec::with_capacity(changes);
    for n in 0..changes {
        let want = 10000 + n as i32;
        let old = if n == 0 { 9000 } else { want as usize - 1 };
        spread_over_the_push_tick(n).await;
        let t = Instant::now();
        move_port(&writer, "bare", Some(old), want as usize).await;
        while let Some(ports) = pushed.recv().await {
            if ports == [want] {
                break;
            }
        }
        bare.push(t.elapsed());
    }
    let _ = naming
        .unsubscribe("bare".into(), None, Vec::new(), listener)
        .await;
    drop(naming);

    move_port(&writer, "orders", None, 9000).await;
    let address = server.address();
    let config = Config::parse(
        Path::new("bench.yaml"),
        &format!("registries:\n  - {{name: nacos, kind: nacos, address: \"{address}\", namespace: mesh}}\n"),
    )
    .unwrap();
    let source = NacosSource::new("nacos", NacosConfig::new(address));
    let (tx, rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let port = Arc::new(super::Port::default());
    tokio::spawn(source.watch(tx, cancel.clone()));
    run_pipeline(config, rx, port.clone(), cancel.clone());
    wait_port(&port, 9000).await;
    let mut synced = Vec::with_capacity(changes);
    for n in 0..changes {
        let want = 10000 + n;
        let old = if n == 0 { 9000 } else { want - 1 };
        spread_over_the_push_tick(n).await;
        let t = Instant::now();
        move_port(&writer, "orders", Some(old), want).await;
        wait_port(&port, want).await;
        synced.push(t.elapsed());
    }

    // Idle: what the server handled while nothing changed. Its counters refresh every
    // second; the first wait lets the writes above settle into them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = requests(&writer).await;
    let counted_before = counted("nacos");
    tokio::time::sleep(idle).await;
    let after = requests(&writer).await;
    let counted_idle = counted("nacos") - counted_before;
    cancel.cancel();
    Row {
        registry: "Nacos (rnacos; gRPC push + service list every 10 s)",
        bare,
        synced,
        // Less the one scrape (`before`) that the `after` counters include.
        idle_requests_per_s: format!("{:.2}", (after - before - 1.0).max(0.0) / idle.as_secs_f64()),
        // The SDK's own health checks and re-reads are below the source: not counted.
        counted_per_s: per_s(counted_idle, idle),
    }
}
