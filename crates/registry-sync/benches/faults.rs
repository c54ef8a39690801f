//! The fault suite: the release binary against the failures users meet, one line per
//! scenario. `cargo bench -p registry-sync --bench faults` (scripts/faults starts etcd).
//!
//! Each scenario runs `registry-sync run` (the binary cargo builds for this bench, in
//! release) with the Kubernetes sink against the API server stand-in on loopback, and
//! measures what a user would look at: how long until the cluster holds exactly what
//! the registries say, how many deletions happened (want 0: no scenario removes a
//! service), and how many writes a restart caused (want: only what was missing).
//!
//! `FAULTS_SERVICES` (default 2,000, three instances each) sets the estate's size;
//! `FAULTS_LOG=1` prints the warnings of each API-fault run.

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use registry_sync_testing::kube::{Resource, StandIn, Verb};
use registry_sync_testing::servers::TestEtcd;

const CONVERGE_LIMIT: Duration = Duration::from_secs(120);

fn services() -> usize {
    std::env::var("FAULTS_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// The services file: `n` services, three instances each, plus `malformed` broken
/// services and instances mixed in.
fn services_file(n: usize, port: u16, malformed: usize) -> String {
    let mut text = String::from("services:\n");
    for s in 0..n {
        text.push_str(&format!("  - name: svc-{s:05}\n    instances:\n"));
        for i in 1..=3 {
            text.push_str(&format!(
                "      - address: 10.{}.{}.{i}\n        ports: {{http: {port}}}\n",
                s / 250,
                s % 250
            ));
        }
        if s < malformed {
            text.push_str("      - address: 999.1.1.1\n        ports: {http: 8080}\n");
            text.push_str("      - address: 10.9.9.9\n        ports: {http: 70000}\n");
        }
    }
    for m in 0..malformed {
        text.push_str(&format!("  - name: \"bad name {m} ☃\"\n    instances: {{}}\n"));
    }
    text
}

struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new(server: &StandIn, registry: &str) -> Workspace {
        let dir = tempfile::Builder::new()
            .prefix("registry-sync-faults-")
            .tempdir()
            .unwrap();
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: s, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: u, user: {{}}}}]\ncontexts: [{{name: c, context: {{cluster: s, user: u, namespace: default}}}}]\ncurrent-context: c\n",
            server.url()
        );
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
        let config = format!(
            "instance: faults\nregistries:\n{registry}sinks:\n  kubernetes:\n    kubeconfig: kubeconfig\n    qps: 0\n    leader_election: {{enabled: false}}\n"
        );
        std::fs::write(dir.path().join("sync.yaml"), config).unwrap();
        Workspace { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write_services(&self, text: &str) {
        let tmp = self.path().join(".services.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.path().join("services.yaml")).unwrap();
    }

    fn run(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_registry-sync"))
            .args(["run", "--config"])
            .arg(self.path().join("sync.yaml"))
            .current_dir(self.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.path().join("run.log")).unwrap(),
            ))
            .spawn()
            .expect("start the release binary")
    }
}

const FILE_REGISTRY: &str =
    "  - {name: legacy, kind: file, path: services.yaml, namespace: mesh, endpoints: inline}\n";

/// Service entries on the server with all three endpoints on `port`.
fn entries_at(server: &StandIn, port: u64) -> usize {
    let name = format!("http-{port}");
    server
        .objects(Resource::ServiceEntry)
        .iter()
        .filter(|o| {
            o["spec"]["endpoints"]
                .as_array()
                .is_some_and(|e| e.len() == 3 && e.iter().all(|e| e["ports"][&name].as_u64() == Some(port)))
        })
        .count()
}

fn converged_now(server: &StandIn, want: usize, port: u64) -> bool {
    entries_at(server, port) == want && server.objects(Resource::ServiceEntry).len() == want
}

fn converge(server: &StandIn, want: usize, port: u64, started: Instant) -> Option<Duration> {
    while started.elapsed() < CONVERGE_LIMIT {
        if converged_now(server, want, port) {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

struct Row {
    scenario: &'static str,
    faults: String,
    converged: Option<Duration>,
    deletions: u64,
    writes_after_restart: Option<(u64, u64)>,
}

fn print(rows: &[Row]) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "| scenario | faults injected | seconds to converge | deletions (want 0) | writes after restart (got / want) |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    for row in rows {
        let converged = row.converged.map_or("never (over 120 s)".to_string(), |d| {
            format!("{:.2}", d.as_secs_f64())
        });
        let writes = row
            .writes_after_restart
            .map_or("—".to_string(), |(got, want)| format!("{got} / {want}"));
        let _ = writeln!(
            out,
            "| {} | {} | {converged} | {} | {writes} |",
            row.scenario, row.faults, row.deletions
        );
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A cold sync while the stand-in throttles `throttle_share` of requests, fails
/// `write_share` of writes with 500 and cuts every watch every `cut_every_ms` (resumes
/// get 410); all zero and `None` is the baseline without faults.
fn api_faults(
    runtime: &tokio::runtime::Runtime,
    n: usize,
    scenario: &'static str,
    throttle_share: f64,
    write_share: f64,
    cut_every_ms: Option<u64>,
) -> Row {
    let server = runtime.block_on(StandIn::start());
    let ws = Workspace::new(&server, FILE_REGISTRY);
    ws.write_services(&services_file(n, 8080, 0));
    server.faults().throttle_fraction(throttle_share, 0);
    server.faults().fail_writes_fraction(write_share);
    server.faults().set_history_limit(10);
    let started = Instant::now();
    let child = ws.run();
    let faults = server.faults();
    let mut cuts = 0;
    let mut next_cut = cut_every_ms.map(|every| Duration::from_millis(every / 2));
    let converged = loop {
        if converged_now(&server, n, 8080) {
            break Some(started.elapsed());
        }
        let now = started.elapsed();
        if now > CONVERGE_LIMIT {
            break None;
        }
        if let (Some(at), Some(every)) = (next_cut, cut_every_ms)
            && now >= at
        {
            faults.drop_watches();
            cuts += 1;
            next_cut = Some(at + Duration::from_millis(every));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    faults.clear();
    let present = entries_at(&server, 8080);
    stop(child);
    if converged.is_none() || std::env::var_os("FAULTS_LOG").is_some() {
        let log = std::fs::read_to_string(ws.path().join("run.log")).unwrap_or_default();
        eprintln!("{scenario}: {present} of {n} entries after {CONVERGE_LIMIT:?}; the run's log:");
        let interesting = |l: &&str| l.contains("registry_sync") && !l.contains("write failed");
        for line in log.lines().filter(interesting).take(80) {
            eprintln!("  {line}");
        }
    }
    Row {
        scenario,
        faults: if cut_every_ms.is_none() && throttle_share == 0.0 && write_share == 0.0 {
            "none".to_string()
        } else {
            format!(
                "{:.0} % of requests 429, {:.0} % of writes 500, {cuts} watch cuts, 410 on resume",
                throttle_share * 100.0,
                write_share * 100.0
            )
        },
        converged,
        deletions: server.counts().get(Verb::Delete),
        writes_after_restart: None,
    }
}

fn main() {
    let runtime = rt();
    let n = services();
    let mut rows = Vec::new();

    // 1. A cold sync without faults (the baseline of the rows below), then with 20 % of
    // requests throttled, a share of writes failing and watches cut with a tiny history
    // so resumes get 410 — at 20 % and at a heavy 50 % with a cut every 250 ms.
    rows.push(api_faults(
        &runtime,
        n,
        "cold sync without faults (baseline)",
        0.0,
        0.0,
        None,
    ));
    rows.push(api_faults(
        &runtime,
        n,
        "API faults during a cold sync",
        0.2,
        0.2,
        Some(2000),
    ));
    rows.push(api_faults(
        &runtime,
        n,
        "heavy API faults during a cold sync",
        0.2,
        0.5,
        Some(250),
    ));

    // 2. kill -9 in the middle of a cold sync, then a restart.
    {
        let server = runtime.block_on(StandIn::start());
        let ws = Workspace::new(&server, FILE_REGISTRY);
        ws.write_services(&services_file(n, 8080, 0));
        server.faults().set_latency(Duration::from_millis(5));
        let mut child = ws.run();
        while server.objects(Resource::ServiceEntry).len() < n / 3 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        server.faults().clear();
        let present = entries_at(&server, 8080);
        let before = server.counts().get(Verb::Apply);
        let started = Instant::now();
        let child = ws.run();
        let converged = converge(&server, n, 8080, started);
        let writes = server.counts().get(Verb::Apply) - before;
        rows.push(Row {
            scenario: "kill -9 during a cold sync, restart",
            faults: format!("killed with {present} of {n} entries written"),
            converged,
            deletions: server.counts().get(Verb::Delete),
            writes_after_restart: Some((writes, (n - present) as u64)),
        });
        stop(child);
    }

    // 3. Restart of a converged run; then a change flows.
    {
        let server = runtime.block_on(StandIn::start());
        let ws = Workspace::new(&server, FILE_REGISTRY);
        ws.write_services(&services_file(n, 8080, 0));
        let child = ws.run();
        converge(&server, n, 8080, Instant::now());
        stop(child);
        let before = server.counts().writes();
        let child = ws.run();
        // Converged already; give the restarted run time to (not) write.
        std::thread::sleep(Duration::from_secs(3));
        let writes = server.counts().writes() - before;
        let started = Instant::now();
        ws.write_services(&services_file(n, 9090, 0));
        let converged = converge(&server, n, 9090, started);
        rows.push(Row {
            scenario: "restart of a converged run, then every port changes (seconds from the change)",
            faults: "SIGTERM and restart".into(),
            converged,
            deletions: server.counts().get(Verb::Delete),
            writes_after_restart: Some((writes, 0)),
        });
        stop(child);
    }

    // 4. A real registry (etcd) stopped for a while and started again.
    match TestEtcd::start() {
        None => rows.push(Row {
            scenario: "etcd stopped for 10 s and started again",
            faults: "skipped: no etcd (scripts/faults starts one)".into(),
            converged: None,
            deletions: 0,
            writes_after_restart: None,
        }),
        Some(mut etcd) => {
            let server = runtime.block_on(StandIn::start());
            let registry = format!(
                "  - {{name: kv, kind: etcd, address: [\"{}\"], prefix: /services, namespace: mesh, endpoints: inline}}\n",
                etcd.url()
            );
            let ws = Workspace::new(&server, &registry);
            runtime.block_on(put_services(&etcd.url(), n, 8080));
            let child = ws.run();
            converge(&server, n, 8080, Instant::now());
            etcd.stop();
            std::thread::sleep(Duration::from_secs(10));
            let kept = server.objects(Resource::ServiceEntry).len();
            etcd.resume();
            runtime.block_on(put_services(&etcd.url(), n, 9090));
            // From the last write of the changed estate.
            let started = Instant::now();
            let converged = converge(&server, n, 9090, started);
            rows.push(Row {
                scenario: "etcd stopped for 10 s, started, every port changes (seconds from the last write)",
                faults: format!("registry down 10 s ({kept} of {n} entries kept meanwhile)"),
                converged,
                deletions: server.counts().get(Verb::Delete),
                writes_after_restart: None,
            });
            stop(child);
        }
    }

    // 5. A flood of malformed items beside the good ones.
    {
        let server = runtime.block_on(StandIn::start());
        let ws = Workspace::new(&server, FILE_REGISTRY);
        ws.write_services(&services_file(n, 8080, n));
        let started = Instant::now();
        let child = ws.run();
        let converged = converge(&server, n, 8080, started);
        rows.push(Row {
            scenario: "malformed items beside every service",
            faults: format!("{} bad instances, {n} bad services", 2 * n),
            converged,
            deletions: server.counts().get(Verb::Delete),
            writes_after_restart: None,
        });
        stop(child);
    }

    // 6. A mass deletion the guard holds, across a restart and a `once`: the registry
    // shrinks to a quarter; nothing is deleted by the run that held it, by a restarted
    // run, or by a `once` (each judges against the peak the guard kept in its Lease).
    {
        let server = runtime.block_on(StandIn::start());
        let ws = Workspace::new(&server, FILE_REGISTRY);
        ws.write_services(&services_file(n, 8080, 0));
        let child = ws.run();
        converge(&server, n, 8080, Instant::now());
        ws.write_services(&services_file(n / 4, 8080, 0));
        std::thread::sleep(Duration::from_secs(3));
        stop(child);
        let child = ws.run();
        std::thread::sleep(Duration::from_secs(3));
        stop(child);
        let once = Command::new(env!("CARGO_BIN_EXE_registry-sync"))
            .current_dir(ws.path())
            .args(["once", "--config", "sync.yaml"])
            .output()
            .expect("run once");
        let started = Instant::now();
        rows.push(Row {
            scenario: "a mass deletion held, then SIGTERM, a restart and a `once` (once's exit code in the faults column)",
            faults: format!(
                "registry shrinks from {n} to {} services; once exits {}",
                n / 4,
                once.status.code().unwrap_or(-1)
            ),
            converged: converge(&server, n, 8080, started),
            deletions: server.counts().get(Verb::Delete),
            writes_after_restart: None,
        });
    }

    print(&rows);
}

/// Writes `n` services of three instances each into etcd's naming layout.
async fn put_services(url: &str, n: usize, port: u16) {
    let mut client = registry_sync_sources::etcd::EtcdClient::connect_plain(url)
        .await
        .expect("connect to etcd");
    for s in 0..n {
        for i in 1..=3 {
            let key = format!("/services/svc-{s:05}/{i}");
            let value = format!(
                r#"{{"Addr":"10.{}.{}.{i}:{port}","Metadata":{{"protocol":"http"}}}}"#,
                s / 250,
                s % 250
            );
            client.put(key, value).await.expect("write to etcd");
        }
    }
}
