//! The seed's whole path, measured: a registry write → the new endpoint in a sidecar's
//! EDS via the real istiod, through `registry-sync run` (the binary, release build) with
//! the Kubernetes sink and then with the MCP sink, against the real kube-apiserver.
//!
//! Each change is followed by its baseline before the next one: the same kind of change
//! (an endpoint's new address) applied straight to the API server by one bare
//! server-side apply of a ServiceEntry of the bench's own, timed from the apply until
//! the proxy's EDS shows it. Both go through the same istiod, with its push debounce.
//! The first few changes of each kind are made and not measured: the very first one
//! after the proxy connects waits seconds on istiod, whoever makes it.
//!
//! Needs the real kube-apiserver and istiod (`scripts/bench` starts and builds them).
//! `BENCH_SERVICES` (1,000) and `BENCH_CHANGES` (200) change the sizes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use registry_sync_mcp::testing::proxy::Proxy;
use registry_sync_testing::kube::Resource;
use registry_sync_testing::servers::{KubeApiServer, TestIstiod, free_port};

mod support;

use support::{env_usize, p50_p99, p99_ratio};

const BIN: &str = env!("CARGO_BIN_EXE_registry-sync");

/// Changes of each kind made and not measured first.
const WARM_UP: usize = 5;

/// The registry: `services` services of one instance each; service 0's instance has
/// the address of `generation`.
fn services_file(services: usize, generation: usize) -> String {
    let mut text = String::from("services:\n");
    for s in 0..services {
        let n = if s == 0 { 100_000 + generation } else { s };
        text.push_str(&format!(
            "  - name: s{s}\n    instances:\n      - {{address: 10.{}.{}.{}, ports: {{http: 8080}}}}\n",
            n >> 16 & 255,
            n >> 8 & 255,
            n & 255
        ));
    }
    text
}

fn address_of(generation: usize) -> String {
    let n = 100_000 + generation;
    format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255)
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

/// One sink's figures: registry-sync's changes and the bare applies beside them.
struct Figures {
    ours: Vec<Duration>,
    bare: Vec<Duration>,
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    what: &str,
    server: &KubeApiServer,
    namespace: &str,
    dir: &Path,
    sink_config: &str,
    mesh_config: &str,
    services: usize,
    changes: usize,
) -> Figures {
    std::fs::write(dir.join("services.yaml"), services_file(services, 0)).unwrap();
    std::fs::write(
        dir.join("sync.yaml"),
        format!(
            "instance: {namespace}
registries:
  - name: bench
    kind: file
    path: services.yaml
    namespace: {namespace}
    hosts: \"{{service}}.{namespace}.bench\"
{sink_config}"
        ),
    )
    .unwrap();
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
        tokio::task::block_in_place(|| TestIstiod::start(&server.admin_kubeconfig(), mesh_config, &[]))
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

    let mut figures = Figures {
        ours: Vec::with_capacity(changes),
        bare: Vec::with_capacity(changes),
    };
    // The first changes after the proxy connects wait on istiod's first pushes (seconds
    // for the very first), whoever makes them: a few of each go unmeasured.
    for n in 1..=WARM_UP + changes {
        let measured = n > WARM_UP;
        let path = dir.join("services.yaml");
        let tmp = dir.join(".services.yaml.tmp");
        std::fs::write(&tmp, services_file(services, n)).unwrap();
        let started = Instant::now();
        std::fs::rename(&tmp, &path).unwrap();
        let seen = until_seen(&mut proxy, &ours, &address_of(n), Duration::from_secs(60)).await;
        let Some(_) = seen else {
            panic!("{what}: change {n} never reached the proxy:\n{}", istiod.log());
        };
        if measured {
            figures.ours.push(started.elapsed());
        }

        let address = format!("10.200.{}.{}", n >> 8 & 255, n & 255);
        let started = Instant::now();
        api.patch("bare", &params, &Patch::Apply(bare_object(&address)))
            .await
            .unwrap();
        until_seen(&mut proxy, &bare_cluster, &address, Duration::from_secs(60))
            .await
            .expect("the bare change reaches the proxy");
        if measured {
            figures.bare.push(started.elapsed());
        }
    }
    figures.ours.sort();
    figures.bare.sort();
    figures
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(server) = KubeApiServer::shared() else {
        eprintln!("the istiod bench needs the real kube-apiserver and istiod: run it through scripts/bench");
        return;
    };
    let services = env_usize("BENCH_SERVICES", 1_000);
    let changes = env_usize("BENCH_CHANGES", 200);
    server.create_namespace("istio-system").await;
    let work = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();

    let namespace = server.namespace("bench-kube").await;
    let dir: PathBuf = work.path().join("kube");
    std::fs::create_dir_all(&dir).unwrap();
    let kube = format!(
        "sinks:\n  kubernetes:\n    kubeconfig: {}\n    qps: 0\n    leader_election: {{enabled: false}}\n",
        server.admin_kubeconfig().display()
    );
    let figures = measure(
        "Kubernetes sink",
        &server,
        &namespace,
        &dir,
        &kube,
        "{}\n",
        services,
        changes,
    )
    .await;
    rows.push(("Kubernetes sink", figures));

    let namespace = server.namespace("bench-mcp").await;
    let dir = work.path().join("mcp");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mcp = format!("sinks:\n  mcp:\n    listen: 127.0.0.1:{port}\n");
    let mesh = format!("configSources:\n  - address: xds://127.0.0.1:{port}\n  - address: k8s://\n");
    let figures = measure(
        "MCP sink", &server, &namespace, &dir, &mcp, &mesh, services, changes,
    )
    .await;
    rows.push(("MCP sink", figures));

    println!();
    println!(
        "registry write → the new endpoint in a sidecar's EDS via the real istiod (1.31-dev), {services} services, {changes} changes, real kube-apiserver v1.37.2, all on one 2-core machine"
    );
    println!();
    println!("| figure | registry-sync | bare server-side apply → EDS (same run) | p99 ratio | goal |");
    println!("| --- | --- | --- | --- | --- |");
    for (sink, figures) in &rows {
        println!(
            "| registry write → EDS, {sink}, p50 / p99 | {} | {} | {:.2} | ≤ 1.1 |",
            p50_p99(&figures.ours),
            p50_p99(&figures.bare),
            p99_ratio(&figures.ours, &figures.bare)
        );
    }
    println!();
}
