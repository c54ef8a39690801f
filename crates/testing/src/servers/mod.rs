//! Real servers for tests, started on loopback ports and stopped on drop.
//!
//! `scripts/test` installs etcd and ZooKeeper, starts one shared instance of each and
//! exports `REGISTRY_SYNC_TEST_ETCD` / `REGISTRY_SYNC_TEST_ZOOKEEPER`. Tests that only
//! need a server use the shared one through [`shared_server`]; tests that stop and
//! restart a server start a private one ([`TestEtcd`], [`TestZookeeper`]) on free
//! loopback ports, so they never disturb each other. Every process is killed, and its
//! directory removed, when its guard is dropped.
//!
//! Without the variables a test is skipped with a message saying how to run it — except
//! under CI (`CI` set), where a missing server is a failure: a green run must mean the
//! registry was really tested.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const ETCD_VAR: &str = "REGISTRY_SYNC_TEST_ETCD";
pub const ZOOKEEPER_VAR: &str = "REGISTRY_SYNC_TEST_ZOOKEEPER";
/// The path of the `dnsmasq` binary that `scripts/test` installed and checked.
pub const DNSMASQ_VAR: &str = "REGISTRY_SYNC_TEST_DNSMASQ";
/// The path of the `helm` binary that `scripts/test` built from `helm.sh/helm/v4`.
pub const HELM_VAR: &str = "REGISTRY_SYNC_TEST_HELM";

/// Runs the real `helm` with `args` and returns its output; `None` when the test is
/// skipped (no `helm` outside CI).
pub fn helm(args: &[&str]) -> Option<std::process::Output> {
    let helm = shared_server(HELM_VAR)?;
    Some(
        Command::new(&helm)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {helm}: {e}")),
    )
}

mod apiserver;
pub use apiserver::{KUBE_VAR, KubeApiServer, Request, TestKubeApiServer};

mod istiod;
pub use istiod::{ISTIOD_VAR, TestIstiod};

mod spring;
pub use spring::{EUREKA_VAR, EurekaRest, SPRING_VAR, SpringApp, TestEureka, http, shared_eureka};

mod moto;
pub use moto::{MOTO_ENV, MOTO_REGION, MOTO_SERVER_VAR, MOTO_VAR, TestMoto};

mod nacos;
pub use nacos::{NACOS_VAR, NacosInstance, NacosWriter, TestNacos, rnacos_binary};

/// How long a private server may take to become ready (ZooKeeper's JVM takes ~2 s).
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// The shared server's address from `var`, or `None` (after printing why) when the
/// test must be skipped. Panics under CI, where skipping would hide a missing server.
pub fn shared_server(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Some(value),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{var} is not set, but CI is: this test needs a real server. Run the tests through scripts/test, which installs and starts it"
        ),
        _ => {
            eprintln!("skipped: {var} not set; run scripts/test to test against a real server");
            None
        }
    }
}

/// A free TCP port on 127.0.0.1, as the kernel hands one out.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    listener.local_addr().expect("a bound address").port()
}

fn scratch_dir(kind: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("registry-sync-test-{kind}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// Sends `request` to `port` and returns what the server answered before closing.
fn ask(port: u16, request: &[u8]) -> Option<String> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(request).ok()?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    Some(answer)
}

/// A command's standard output; panics with its error output when it failed.
fn checked_stdout(output: std::process::Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Kills a server's process, if it runs, and reaps it.
fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn wait_ready(what: &str, child: &mut Child, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + READY_DEADLINE;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited before it was ready ({status}); see its log in the test's scratch directory"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} was not ready within {READY_DEADLINE:?}");
}

fn log_file(dir: &std::path::Path, name: &str) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// A private etcd, stopped and restarted at will on the same ports and data.
pub struct TestEtcd {
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    /// Flags beyond the ports and data directory, e.g. `--auth-token-ttl`.
    extra: Vec<String>,
    /// A second client listener that speaks only TLS and wants a client certificate.
    tls_port: Option<u16>,
}

impl TestEtcd {
    /// Starts one, or returns `None` (skipped) when the shared etcd is not configured,
    /// which is what says the `etcd` binary was installed.
    pub fn start() -> Option<TestEtcd> {
        TestEtcd::start_with(&[])
    }

    /// As [`TestEtcd::start`], with more flags for the server.
    pub fn start_with(extra: &[&str]) -> Option<TestEtcd> {
        shared_server(ETCD_VAR)?;
        let mut etcd = TestEtcd {
            dir: scratch_dir("etcd"),
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls_port: None,
        };
        etcd.resume();
        Some(etcd)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// As [`TestEtcd::start`], plus a TLS listener ([`TestEtcd::tls_url`]) with this
    /// server certificate and key (PEM), taking only clients with a certificate `ca`
    /// signed.
    pub fn start_tls(ca: &str, cert: &str, key: &str) -> Option<TestEtcd> {
        shared_server(ETCD_VAR)?;
        let dir = scratch_dir("etcd");
        for (name, pem) in [("ca.pem", ca), ("server.pem", cert), ("server.key", key)] {
            std::fs::write(dir.join(name), pem).expect("write a TLS file");
        }
        let path = |name: &str| dir.join(name).display().to_string();
        let mut etcd = TestEtcd {
            extra: vec![
                "--cert-file".into(),
                path("server.pem"),
                "--key-file".into(),
                path("server.key"),
                "--trusted-ca-file".into(),
                path("ca.pem"),
                "--client-cert-auth".into(),
            ],
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
            tls_port: Some(free_port()),
        };
        etcd.resume();
        Some(etcd)
    }

    /// The TLS listener of [`TestEtcd::start_tls`].
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port.map(|port| format!("https://127.0.0.1:{port}"))
    }

    /// Runs `etcdctl` against this server, as an operator would; panics when it fails.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.url()))
            .args(args)
            .output()
            .expect("run etcdctl (installed with etcd)");
        checked_stdout(output, &format!("etcdctl {args:?}"))
    }

    /// Kills the server (as a crash would), keeping its data.
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts the server again on the same ports and data, and waits until it serves.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        // The plain listener stays for the readiness check and for writers.
        let client = match self.tls_port {
            Some(tls) => format!("http://127.0.0.1:{},https://127.0.0.1:{tls}", self.client_port),
            None => format!("http://127.0.0.1:{}", self.client_port),
        };
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir, "etcd.log"))
            .stderr(log_file(&self.dir, "etcd.log"))
            .spawn()
            .expect("start etcd (scripts/test installs it)");
        let port = self.client_port;
        wait_ready("etcd", &mut child, || {
            ask(port, b"GET /health HTTP/1.0\r\n\r\n").is_some_and(|a| a.contains("\"health\":\"true\""))
        });
        self.child = Some(child);
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private ZooKeeper, stopped and restarted at will on the same port and data.
pub struct TestZookeeper {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl TestZookeeper {
    /// Starts one, or returns `None` (skipped) when the shared ZooKeeper is not
    /// configured, which is what says ZooKeeper and Java were installed.
    pub fn start() -> Option<TestZookeeper> {
        shared_server(ZOOKEEPER_VAR)?;
        let dir = scratch_dir("zookeeper");
        let port = free_port();
        let config = format!(
            "tickTime=2000\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
             admin.enableServer=false\n4lw.commands.whitelist=ruok,stat,srvr,mntr\nmaxClientCnxns=0\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("zoo.cfg"), config).expect("write zoo.cfg");
        let mut zookeeper = TestZookeeper {
            dir,
            port,
            child: None,
        };
        zookeeper.resume();
        Some(zookeeper)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data, and waits until it serves.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "ZooKeeper is already running");
        let classpath = format!("{}:/usr/share/java/zookeeper.jar", self.dir.display());
        let mut child = Command::new("java")
            .args(["-Xmx256m", "-cp", &classpath])
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(self.dir.join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir, "zookeeper.log"))
            .stderr(log_file(&self.dir, "zookeeper.log"))
            .spawn()
            .expect("start ZooKeeper with java (scripts/test installs it)");
        let port = self.port;
        wait_ready("ZooKeeper", &mut child, || {
            ask(port, b"ruok").is_some_and(|answer| answer.contains("imok"))
        });
        self.child = Some(child);
    }
}

impl Drop for TestZookeeper {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private dnsmasq serving the records a test gives it, on a free loopback port.
///
/// dnsmasq reads its records only at start, so [`TestDnsmasq::restart`] with new
/// records is how a test changes them. Records are dnsmasq configuration lines
/// (`srv-host=…`, `host-record=…`); names under `example` that no record names are
/// answered `NXDOMAIN` (`local=/example/`), others `REFUSED`. Every record has a TTL of
/// 1 s (`local-ttl=1`), so a change is visible quickly.
pub struct TestDnsmasq {
    binary: String,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl TestDnsmasq {
    /// Starts one, or returns `None` (skipped) when `REGISTRY_SYNC_TEST_DNSMASQ` is not
    /// set (a failure under CI).
    pub fn start(records: &str) -> Option<TestDnsmasq> {
        let binary = shared_server(DNSMASQ_VAR)?;
        let mut dnsmasq = TestDnsmasq {
            binary,
            dir: scratch_dir("dnsmasq"),
            port: free_port(),
            child: None,
        };
        dnsmasq.resume(records);
        Some(dnsmasq)
    }

    /// `127.0.0.1:<port>`, for `nameserver`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server: queries then fail (the port is closed).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs and starts it on the same port with `records`.
    pub fn restart(&mut self, records: &str) {
        self.stop();
        self.resume(records);
    }

    fn resume(&mut self, records: &str) {
        let config = format!(
            "port={port}\nlisten-address=127.0.0.1\nbind-interfaces\nlocal-ttl=1\nlocal=/example/\n{records}\n",
            port = self.port
        );
        let path = self.dir.join("dnsmasq.conf");
        std::fs::write(&path, config).expect("write dnsmasq.conf");
        let mut child = Command::new(&self.binary)
            .args(["--no-resolv", "--no-hosts", "--keep-in-foreground", "--pid-file="])
            .arg("--user=root")
            .arg(format!("--conf-file={}", path.display()))
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir, "dnsmasq.log"))
            .stderr(log_file(&self.dir, "dnsmasq.log"))
            .spawn()
            .expect("start dnsmasq (scripts/test installs dnsmasq-base)");
        let port = self.port;
        wait_ready("dnsmasq", &mut child, || {
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
        });
        self.child = Some(child);
    }
}

impl Drop for TestDnsmasq {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy on a free loopback port in front of a server, which a test can cut
/// (every connection dropped, nothing accepted) and restore on the same port: a
/// network failure between registry-sync and a registry that keeps running and keeps
/// changing meanwhile.
pub struct Proxy {
    port: u16,
    target: SocketAddr,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    /// Bumped by every cut; an accept loop of an older generation stops.
    generation: u64,
    connections: Vec<TcpStream>,
}

impl Proxy {
    /// Starts forwarding `127.0.0.1:<free port>` to `target` (`host:port`).
    pub fn start(target: &str) -> Proxy {
        let target = std::net::ToSocketAddrs::to_socket_addrs(target)
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("{target:?} is not host:port"));
        let proxy = Proxy {
            port: free_port(),
            target,
            state: Default::default(),
        };
        proxy.restore();
        proxy
    }

    /// Where clients connect: `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Drops every connection and stops accepting new ones.
    pub fn cut(&self) {
        let mut state = self.state.lock().expect("proxy state");
        state.generation += 1;
        for connection in state.connections.drain(..) {
            let _ = connection.shutdown(std::net::Shutdown::Both);
        }
        drop(state);
        // Wakes the accept loop so it sees the new generation and closes the port.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }

    /// Accepts and forwards again, on the same port.
    pub fn restore(&self) {
        let deadline = Instant::now() + READY_DEADLINE;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(listener) => break listener,
                Err(e) if Instant::now() > deadline => panic!("the proxy cannot listen again: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let generation = self.state.lock().expect("proxy state").generation;
        let state = std::sync::Arc::clone(&self.state);
        let target = self.target;
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let mut guard = state.lock().expect("proxy state");
                if guard.generation != generation {
                    return;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                for stream in [&client, &server] {
                    if let Ok(clone) = stream.try_clone() {
                        guard.connections.push(clone);
                    }
                }
                drop(guard);
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
    }
}

/// Copies `from` to `to` on a thread until either side closes.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Both);
        let _ = from.shutdown(std::net::Shutdown::Both);
    });
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}
