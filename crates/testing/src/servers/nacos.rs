//! A private rnacos (a Nacos server in Rust, 1.x HTTP and 2.x gRPC) and a small
//! writer for Nacos's v1 HTTP open API, for the Nacos tests and bench.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{ask, free_port, log_file, scratch_dir, shared_server, wait_ready};

/// `127.0.0.1:<HTTP port>` of the shared rnacos `scripts/test` started.
pub const NACOS_VAR: &str = "REGISTRY_SYNC_TEST_NACOS";

/// The `rnacos` binary: on `PATH`, else where `cargo install` puts it.
pub fn rnacos_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("rnacos"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| {
        let home = std::env::var_os("HOME").unwrap_or_default();
        PathBuf::from(home).join(".cargo/bin/rnacos")
    })
}

/// Polls `condition` until it holds or `timeout` passes.
fn wait_for(timeout: Duration, condition: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A free HTTP port whose gRPC port (+ 1000, what Nacos clients assume) is free too.
fn free_port_pair() -> u16 {
    loop {
        let http = free_port();
        if http <= 64_535 && std::net::TcpListener::bind(("127.0.0.1", http + 1000)).is_ok() {
            return http;
        }
    }
}

/// A private rnacos on free loopback ports, stopped and restarted at will on the same
/// ports and data directory, killed when dropped.
///
/// Whether persistent instances survive a crash depends on whether rnacos wrote them
/// out before it; tests must not count on it. Its TCP probe of persistent instances is
/// pushed out to a day, so the made-up addresses tests register are never probed.
pub struct TestNacos {
    dir: PathBuf,
    http_port: u16,
    console_port: u16,
    auth: bool,
    child: Option<Child>,
}

impl TestNacos {
    /// Starts one without auth, or returns `None` (skipped) when the shared rnacos is
    /// not configured, which is what says `rnacos` was installed.
    pub fn start() -> Option<TestNacos> {
        TestNacos::start_with(false)
    }

    /// Starts one with open-API auth on; the user `nacos` has the password `nacos`.
    pub fn start_with_auth() -> Option<TestNacos> {
        TestNacos::start_with(true)
    }

    fn start_with(auth: bool) -> Option<TestNacos> {
        shared_server(NACOS_VAR)?;
        let mut nacos = TestNacos {
            dir: scratch_dir("nacos"),
            http_port: free_port_pair(),
            console_port: free_port(),
            auth,
            child: None,
        };
        nacos.resume();
        // Under load a fresh rnacos sometimes never creates its first user (its user
        // store reports a closed mailbox); a new data directory starts it over.
        for _ in 0..3 {
            if !auth || wait_for(Duration::from_secs(15), || nacos.login_works()) {
                return Some(nacos);
            }
            nacos.stop();
            let _ = std::fs::remove_dir_all(nacos.dir.join("data"));
            nacos.resume();
        }
        panic!("rnacos with auth never let its first user log in");
    }

    /// `127.0.0.1:<HTTP port>`, for `address`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// `127.0.0.1:<gRPC port>`.
    pub fn grpc_address(&self) -> String {
        format!("127.0.0.1:{}", self.http_port + 1000)
    }

    pub fn writer(&self) -> NacosWriter {
        NacosWriter::new(&self.address())
    }

    /// Kills the server (as a crash would), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data, and waits until it serves.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "rnacos is already running");
        let binary = rnacos_binary();
        let mut child = Command::new(&binary)
            .env("RNACOS_HTTP_PORT", self.http_port.to_string())
            .env("RNACOS_GRPC_PORT", (self.http_port + 1000).to_string())
            .env("RNACOS_HTTP_CONSOLE_PORT", self.console_port.to_string())
            .env("RNACOS_SDK_HOST", "127.0.0.1")
            .env("RNACOS_CONSOLE_HOST", "127.0.0.1")
            .env("RNACOS_DATA_DIR", self.dir.join("data"))
            .env("RNACOS_ENABLE_OPEN_API_AUTH", self.auth.to_string())
            .env("RNACOS_INIT_ADMIN_USERNAME", "nacos")
            .env("RNACOS_INIT_ADMIN_PASSWORD", "nacos")
            .env("RNACOS_NAMING_PERPETUAL_INSTANCE_PROBE_INTERVAL_SECOND", "86400")
            // Request counters on /metrics, refreshed every second (for the bench).
            .env("RNACOS_METRICS_COLLECT_INTERVAL_SECOND", "1")
            .env("RNACOS_ENV_FILE", self.dir.join("no-env-file"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir, "rnacos.log"))
            .stderr(log_file(&self.dir, "rnacos.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {} (scripts/test installs it): {e}", binary.display()));
        let port = self.http_port;
        let grpc = self.http_port + 1000;
        wait_ready("rnacos", &mut child, || {
            let http = ask(port, b"GET /nacos/v1/ns/service/list HTTP/1.0\r\n\r\n")
                .is_some_and(|a| a.starts_with("HTTP/1.") && !a.is_empty());
            let grpc_open = std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], grpc)),
                Duration::from_millis(200),
            )
            .is_ok();
            http && grpc_open
        });
        self.child = Some(child);
    }

    /// With auth on, whether the initial user can log in yet: rnacos creates it a
    /// moment after it starts serving.
    fn login_works(&self) -> bool {
        let params = [("username", "nacos"), ("password", "nacos")];
        let (_, body) = NacosWriter::new(&self.address()).send("POST", "/nacos/v1/auth/login", &params);
        body.contains("accessToken")
    }
}

impl Drop for TestNacos {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes to a Nacos server through its v1 HTTP open API (blocking). Instances are
/// registered **persistent** (`ephemeral=false`) unless `extra` says otherwise, so they
/// do not expire without heartbeats.
#[derive(Clone, Debug)]
pub struct NacosWriter {
    address: String,
    /// The access token sent with every request, once logged in.
    token: Option<String>,
}

/// One instance to register; `extra` are further v1 parameters such as
/// `("weight", "2")`, `("healthy", "false")`, `("enabled", "false")`,
/// `("clusterName", "east")` or `("metadata", "{\"protocol\":\"http\"}")`.
#[derive(Clone, Debug)]
pub struct NacosInstance<'a> {
    pub namespace_id: &'a str,
    pub group: &'a str,
    pub service: &'a str,
    pub ip: &'a str,
    pub port: u32,
    pub extra: &'a [(&'a str, &'a str)],
}

impl NacosWriter {
    pub fn new(address: &str) -> NacosWriter {
        NacosWriter {
            address: address.to_string(),
            token: None,
        }
    }

    /// Logs in (a server with auth on) and sends the token from then on; panics when
    /// the server refuses.
    /// A fresh server creates its first user a moment after it starts serving, so a
    /// refusal is retried for a while.
    pub fn login(mut self, username: &str, password: &str) -> NacosWriter {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let params = [("username", username), ("password", password)];
            let (status, body) = self.send("POST", "/nacos/v1/auth/login", &params);
            let token = body
                .split("\"accessToken\":\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next());
            if let Some(token) = token {
                self.token = Some(token.to_string());
                return self;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "login refused: {status} {body}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Registers or updates an instance; panics unless the server says `ok`.
    pub fn put(&self, instance: &NacosInstance<'_>) {
        let port = instance.port.to_string();
        let mut params = vec![
            ("namespaceId", instance.namespace_id),
            ("groupName", instance.group),
            ("serviceName", instance.service),
            ("ip", instance.ip),
            ("port", port.as_str()),
        ];
        if !instance.extra.iter().any(|(k, _)| *k == "ephemeral") {
            params.push(("ephemeral", "false"));
        }
        params.extend_from_slice(instance.extra);
        self.expect_ok("POST", "/nacos/v1/ns/instance", &params);
    }

    /// Deregisters an instance; panics unless the server says `ok`.
    pub fn delete(&self, namespace_id: &str, group: &str, service: &str, ip: &str, port: u32) {
        let port = port.to_string();
        let params = [
            ("namespaceId", namespace_id),
            ("groupName", group),
            ("serviceName", service),
            ("ip", ip),
            ("port", port.as_str()),
            ("ephemeral", "false"),
        ];
        self.expect_ok("DELETE", "/nacos/v1/ns/instance", &params);
    }

    /// Removes a service (it must have no instances left); panics unless the server
    /// says `ok`.
    pub fn delete_service(&self, namespace_id: &str, group: &str, service: &str) {
        let params = [
            ("namespaceId", namespace_id),
            ("groupName", group),
            ("serviceName", service),
        ];
        self.expect_ok("DELETE", "/nacos/v1/ns/service", &params);
    }

    /// Sends a request and returns the status line and body.
    pub fn send(&self, method: &str, path: &str, params: &[(&str, &str)]) -> (String, String) {
        let token = self.token.as_deref().map(|t| ("accessToken", t));
        let query: Vec<String> = params
            .iter()
            .chain(token.as_ref())
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        let request = format!(
            "{method} {path}?{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            query.join("&"),
            self.address
        );
        let port = self
            .address
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("the address is host:port");
        let answer = ask(port, request.as_bytes()).unwrap_or_default();
        let status = answer.lines().next().unwrap_or_default().to_string();
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        (status, body.to_string())
    }

    fn expect_ok(&self, method: &str, path: &str, params: &[(&str, &str)]) {
        let (status, body) = self.send(method, path, params);
        assert!(
            status.contains(" 200") && body.contains("ok"),
            "{method} {path} {params:?} → {status} {body}"
        );
    }
}

/// Percent-encodes a query parameter (everything but unreserved characters).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
