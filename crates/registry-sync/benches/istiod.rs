//! The seed's whole path, measured: a registry write → the new endpoint in a sidecar's
//! EDS via the real istiod, through `registry-sync run` (the binary, release build) with
//! the Kubernetes sink and then with the MCP sink, against the real kube-apiserver.
//! The registry is a real etcd: a change is one key written, and registry-sync hears of
//! that key alone, as it would from any watching registry.
//!
//! Each change is followed by its baseline before the next one: the same kind of change
//! (an endpoint's new address) applied straight to the API server by one bare
//! server-side apply of a ServiceEntry of the bench's own, timed from the apply until
//! the proxy's EDS shows it. Both go through the same istiod, with its push debounce.
//! The first few changes of each kind are made and not measured: the very first one
//! after the proxy connects waits seconds on istiod, whoever makes it.
//!
//! Needs the real kube-apiserver, istiod and etcd (`scripts/bench` starts and builds
//! them). `BENCH_SIZES` (`1000,10000`) and `BENCH_CHANGES` (200) change the sizes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use registry_sync_mcp::testing::proxy::Proxy;
use registry_sync_sources::etcd::EtcdClient;
use registry_sync_testing::kube::Resource;
use registry_sync_testing::servers::{KubeApiServer, TestEtcd, TestIstiod, free_port};

mod support;

use support::{env_usize, p50_p99, p99_ratio};

const BIN: &str = env!("CARGO_BIN_EXE_registry-sync");

/// Changes of each kind made and not measured first, at least.
const WARM_UP: usize = 5;
/// Quick changes in a row that show istiod steady.
const STEADY: usize = 10;
/// Changes of each kind made and not measured first, at most.
const MAX_WARM_UP: usize = 200;

/// The address of service `s`'s one instance; service 0's moves with `generation`.
fn address(s: usize, generation: usize) -> String {
    let n = if s == 0 { 100_000 + generation } else { s };
    format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255)
}

/// etcd's own `naming/endpoints` value for an instance at `address`, port 8080.
fn value(address: &str) -> String {
    format!("{{\"Addr\":\"{address}:8080\",\"Metadata\":{{\"protocol\":\"http\"}}}}")
}

/// Writes `services` services of one instance each under `prefix`, in transactions of
/// etcd's default limit of operations.
async fn seed(etcd: &mut EtcdClient, prefix: &str, services: usize) {
    let pairs: Vec<(String, String)> = (0..services)
        .map(|s| (format!("{prefix}/s{s}/1"), value(&address(s, 0))))
        .collect();
    for chunk in pairs.chunks(128) {
        etcd.put_all(chunk.to_vec()).await.expect("seed etcd");
    }
}

struct Run {
    child: std::process::Child,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_run(dir: &Path) -> Run {
    let child = std::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(dir.join("sync.yaml"))
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("run.log")).unwrap())
        .spawn()
        .expect("start registry-sync run");
    Run { child }
}

/// Waits until the proxy's EDS for `cluster` shows `address`; the time it took.
async fn until_seen(proxy: &mut Proxy, cluster: &str, address: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let seen = proxy
        .until(limit, |p| {
            p.endpoints(cluster).iter().any(|s| s.address == address)
        })
        .await;
    seen.then(|| start.elapsed())
}

/// `step`, or a panic naming it when it takes longer than a change ever should: a
/// stalled server fails the bench instead of holding it.
async fn bounded<T>(step: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("{step} took over 60 s"))
}

/// Waits until istiod has given every ServiceEntry of the namespace an address of its
/// own (its IP auto-allocation patches each one's status, one patch at a time, minutes
/// for 10,000). Until then the stream of events holds its pushes back up to its debounce
/// limit (10 s), whoever made the change: a measure of istiod's cold start, not of a
/// change. Entries served over MCP have no status and are not allocated. The proxy
/// reads its stream meanwhile, as Envoy would.
async fn settle_allocation(what: &str, api: &Api<DynamicObject>, proxy: &mut Proxy) {
    let start = Instant::now();
    let mut allocated = 0;
    let mut progress = Instant::now();
    loop {
        let listed = bounded("listing ServiceEntries", api.list(&Default::default()))
            .await
            .expect("list ServiceEntries");
        let now = listed
            .items
            .iter()
            .filter(|o| {
                o.data["status"]["addresses"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            })
            .count();
        if now > allocated {
            allocated = now;
            progress = Instant::now();
        }
        if allocated == listed.items.len() || progress.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "{what}: istiod allocated addresses to {allocated} of {} ServiceEntries in {:?}",
                listed.items.len(),
                start.elapsed()
            );
            return;
        }
        let pause = Instant::now() + Duration::from_secs(5);
        while Instant::now() < pause {
            proxy.next(Duration::from_millis(200)).await;
        }
    }
}

/// One sink's figures: registry-sync's changes and the bare applies beside them.
struct Figures {
    ours: Vec<Duration>,
    bare: Vec<Duration>,
}

/// What one measured run is made of.
struct Setup<'a> {
    what: &'a str,
    server: &'a KubeApiServer,
    etcd: &'a str,
    namespace: &'a str,
    dir: &'a Path,
    sink_config: &'a str,
    mesh_config: &'a str,
    services: usize,
    changes: usize,
}

async fn measure(setup: Setup<'_>) -> Figures {
    let Setup {
        what,
        server,
        etcd,
        namespace,
        dir,
        sink_config,
        mesh_config,
        services,
        changes,
    } = setup;
    let mut client = EtcdClient::connect_plain(etcd).await.expect("connect to etcd");
    let prefix = format!("/{namespace}");
    let start = Instant::now();
    seed(&mut client, &prefix, services).await;
    eprintln!(
        "{what}: {services} services written to etcd in {:?}",
        start.elapsed()
    );
    std::fs::write(
        dir.join("sync.yaml"),
        format!(
            "instance: {namespace}
registries:
  - name: bench
    kind: etcd
    address: \"{etcd}\"
    prefix: {prefix}
    namespace: {namespace}
    hosts: \"{{service}}.{namespace}.bench\"
{sink_config}"
        ),
    )
    .unwrap();
    // istiod reads this run's namespace alone: the objects earlier runs left stay out.
    server
        .label_namespace(namespace, "registry-sync-bench", namespace)
        .await;
    let mesh_config =
        format!("{mesh_config}discoverySelectors:\n  - matchLabels: {{registry-sync-bench: {namespace}}}\n");
    let _run = spawn_run(dir);
    if let Some(port) = sink_config
        .split("listen: 127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse::<u16>().ok())
    {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "{what}: the MCP server never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let istiod =
        tokio::task::block_in_place(|| TestIstiod::start(&server.admin_kubeconfig(), &mesh_config, &[]))
            .expect("istiod");
    let node = format!("sidecar~10.9.9.9~bench.{namespace}~{namespace}.svc.cluster.local");
    let mut proxy = Proxy::connect(istiod.xds_address(), &node)
        .await
        .expect("the proxy connects");
    let ours = Proxy::cluster_name(&format!("s0.{namespace}.bench"), 8080);
    let last = Proxy::cluster_name(&format!("s{}.{namespace}.bench", services - 1), 8080);
    let start = Instant::now();
    assert!(
        proxy
            .until(Duration::from_secs(600), |p| !p.endpoints(&ours).is_empty()
                && !p.endpoints(&last).is_empty())
            .await,
        "{what}: the estate never reached the proxy:\n{}",
        istiod.log()
    );
    eprintln!(
        "{what}: {services} services in the proxy's EDS after {:?}",
        start.elapsed()
    );

    // The bare baseline's own ServiceEntry, in the same namespace.
    let api: Api<DynamicObject> = Api::namespaced_with(
        server.admin().await,
        namespace,
        &Resource::ServiceEntry.api_resource(),
    );
    let bare_host = format!("bare.{namespace}.bench");
    let bare_cluster = Proxy::cluster_name(&bare_host, 8080);
    let bare_object = |address: &str| {
        serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": "bare", "namespace": namespace},
            "spec": {"hosts": [bare_host], "location": "MESH_INTERNAL", "resolution": "STATIC",
                     "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
                     "endpoints": [{"address": address}]}
        })
    };
    let params = PatchParams::apply("bench-bare").force();
    api.patch("bare", &params, &Patch::Apply(bare_object("10.200.0.0")))
        .await
        .unwrap();
    assert!(
        until_seen(&mut proxy, &bare_cluster, "10.200.0.0", Duration::from_secs(60))
            .await
            .is_some()
    );

    settle_allocation(what, &api, &mut proxy).await;

    let mut figures = Figures {
        ours: Vec::with_capacity(changes),
        bare: Vec::with_capacity(changes),
    };
    // The first changes after the proxy connects wait on istiod's first pushes (seconds
    // for the very first, and at 10,000 services istiod works through the cold sync's
    // events for a while longer), whoever makes them. Changes go unmeasured until
    // istiod is steady: at least WARM_UP of each, then until STEADY pairs in a row each
    // reached the proxy within a second (at most MAX_WARM_UP).
    let mut steady = 0;
    let mut warm_up = 0;
    for n in 1.. {
        let measured = warm_up >= WARM_UP && steady >= STEADY || warm_up >= MAX_WARM_UP;
        if figures.ours.len() == changes {
            break;
        }
        let moved = address(0, n);
        let started = Instant::now();
        bounded(
            "the etcd write",
            client.put(format!("{prefix}/s0/1"), value(&moved)),
        )
        .await
        .expect("write to etcd");
        let seen = until_seen(&mut proxy, &ours, &moved, Duration::from_secs(60)).await;
        if seen.is_none() {
            panic!("{what}: change {n} never reached the proxy:\n{}", istiod.log());
        }
        let ours_took = started.elapsed();

        let address = format!("10.200.{}.{}", n >> 8 & 255, n & 255);
        let started_bare = Instant::now();
        bounded(
            "the bare apply",
            api.patch("bare", &params, &Patch::Apply(bare_object(&address))),
        )
        .await
        .unwrap();
        until_seen(&mut proxy, &bare_cluster, &address, Duration::from_secs(60))
            .await
            .expect("the bare change reaches the proxy");
        let bare_took = started_bare.elapsed();
        if measured {
            figures.ours.push(ours_took);
            figures.bare.push(bare_took);
        } else {
            warm_up += 1;
            let quick = Duration::from_secs(1);
            steady = if ours_took < quick && bare_took < quick {
                steady + 1
            } else {
                0
            };
        }
    }
    eprintln!("{what}: {warm_up} changes of each kind before istiod was steady");
    figures.ours.sort();
    figures.bare.sort();
    let slowest = |samples: &[Duration]| -> Vec<String> {
        samples
            .iter()
            .rev()
            .take(5)
            .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
            .collect()
    };
    eprintln!(
        "{what}: the five slowest, registry-sync {:?} ms, bare {:?} ms",
        slowest(&figures.ours),
        slowest(&figures.bare)
    );
    figures
}

/// One line of the table.
fn row(sink: &str, services: usize, figures: &Figures) -> String {
    format!(
        "| registry write → EDS, {sink}, {services} services, p50 / p99 | {} | {} | {:.2} | ≤ 1.1 |",
        p50_p99(&figures.ours),
        p50_p99(&figures.bare),
        p99_ratio(&figures.ours, &figures.bare)
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(server) = KubeApiServer::shared() else {
        eprintln!("the istiod bench needs the real kube-apiserver and istiod: run it through scripts/bench");
        return;
    };
    let etcd = TestEtcd::start().expect("etcd is installed (scripts/test installs it)");
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let changes = env_usize("BENCH_CHANGES", 200);
    server.create_namespace("istio-system").await;
    let work = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();

    for &services in &sizes {
        let namespace = server.namespace("bench-kube").await;
        let dir: PathBuf = work.path().join(&namespace);
        std::fs::create_dir_all(&dir).unwrap();
        let kube = format!(
            "sinks:\n  kubernetes:\n    kubeconfig: {}\n    qps: 0\n    leader_election: {{enabled: false}}\n",
            server.admin_kubeconfig().display()
        );
        let figures = measure(Setup {
            what: "Kubernetes sink",
            server: &server,
            etcd: &etcd.url(),
            namespace: &namespace,
            dir: &dir,
            sink_config: &kube,
            mesh_config: "",
            services,
            changes,
        })
        .await;
        eprintln!("{}", row("Kubernetes sink", services, &figures));
        rows.push(row("Kubernetes sink", services, &figures));

        let namespace = server.namespace("bench-mcp").await;
        let dir = work.path().join(&namespace);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let mcp = format!("sinks:\n  mcp:\n    listen: 127.0.0.1:{port}\n");
        let mesh = format!("configSources:\n  - address: xds://127.0.0.1:{port}\n  - address: k8s://\n");
        let figures = measure(Setup {
            what: "MCP sink",
            server: &server,
            etcd: &etcd.url(),
            namespace: &namespace,
            dir: &dir,
            sink_config: &mcp,
            mesh_config: &mesh,
            services,
            changes,
        })
        .await;
        eprintln!("{}", row("MCP sink", services, &figures));
        rows.push(row("MCP sink", services, &figures));
    }

    println!();
    println!(
        "etcd write → the new endpoint in a sidecar's EDS via the real istiod (1.31-dev), {changes} changes, real kube-apiserver v1.37.2, all on one 2-core machine"
    );
    println!();
    println!("| figure | registry-sync | bare server-side apply → EDS (same run) | p99 ratio | goal |");
    println!("| --- | --- | --- | --- | --- |");
    for row in &rows {
        println!("{row}");
    }
    println!();
}
