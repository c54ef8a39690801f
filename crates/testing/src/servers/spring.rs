//! The real Java programs `scripts/test` builds from tools/spring with Maven: the
//! Eureka server (Spring Cloud Netflix) and services that register through Spring
//! Cloud's own Eureka and ZooKeeper discovery clients, as users' services do.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, log_file, scratch_dir, shared_server, wait_ready};

/// The shared Eureka server's `/eureka` URL, with its response cache off.
pub const EUREKA_VAR: &str = "REGISTRY_SYNC_TEST_EUREKA";
/// The directory holding `eureka-server.jar`, `eureka-client.jar`, `zookeeper-client.jar`.
pub const SPRING_VAR: &str = "REGISTRY_SYNC_TEST_SPRING";

/// Sends one HTTP/1.1 request to a loopback `url` and returns the status and body.
pub fn http(method: &str, url: &str, body: Option<&serde_json::Value>) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect to {host}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send a request");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer.as_str(), ""));
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked { dechunk(body) } else { body.to_string() };
    (status, body)
}

/// The body of a response sent in chunks (Go's servers chunk every large answer).
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
    body
}

/// Eureka's REST API, as a client that is not a JVM uses it.
pub struct EurekaRest {
    pub url: String,
}

impl EurekaRest {
    /// Registers `instance` (an `InstanceInfo` in Eureka's JSON) under `app`.
    pub fn register(&self, app: &str, instance: serde_json::Value) {
        let (status, body) = http(
            "POST",
            &format!("{}/apps/{app}", self.url),
            Some(&serde_json::json!({ "instance": instance })),
        );
        assert_eq!(status, 204, "registering {app}: {body}");
    }

    /// Overrides an instance's status (`OUT_OF_SERVICE`, `UP`, …).
    pub fn set_status(&self, app: &str, id: &str, value: &str) {
        let (status, body) = http(
            "PUT",
            &format!("{}/apps/{app}/{id}/status?value={value}", self.url),
            None,
        );
        assert_eq!(status, 200, "status of {app}/{id}: {body}");
    }

    pub fn cancel(&self, app: &str, id: &str) {
        let (status, body) = http("DELETE", &format!("{}/apps/{app}/{id}", self.url), None);
        assert_eq!(status, 200, "cancelling {app}/{id}: {body}");
    }
}

/// The shared Eureka server, or `None` when the test is skipped.
pub fn shared_eureka() -> Option<EurekaRest> {
    shared_server(EUREKA_VAR).map(|url| EurekaRest { url })
}

fn jar(name: &str) -> Option<PathBuf> {
    shared_server(SPRING_VAR).map(|dir| PathBuf::from(dir).join(name))
}

/// A Java program of tools/spring, killed (and its directory removed) on drop.
pub struct SpringApp {
    child: Child,
    dir: PathBuf,
}

impl SpringApp {
    /// Starts `jar` (e.g. `eureka-client.jar`) with Spring `args` (`--key=value`).
    pub fn start(jar_name: &str, args: &[String]) -> Option<SpringApp> {
        let jar = jar(jar_name)?;
        let dir = scratch_dir("spring");
        let child = Command::new("java")
            .arg("-Xmx192m")
            .arg("-jar")
            .arg(&jar)
            .arg("--spring.main.banner-mode=off")
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log_file(&dir, "app.log"))
            .stderr(log_file(&dir, "app.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", jar.display()));
        Some(SpringApp { child, dir })
    }

    /// What the program logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("app.log")).unwrap_or_default()
    }

    /// Stops it as Kubernetes would (SIGTERM), waiting for a graceful shutdown, in
    /// which Spring Cloud's clients deregister.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the Spring application did not stop within 30 s:\n{}", self.log());
    }
}

impl Drop for SpringApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private Eureka server, for tests that need its defaults; killed on drop.
pub struct TestEureka {
    app: SpringApp,
    port: u16,
}

impl TestEureka {
    /// Starts one with only what a single server needs (no peers), plus `args`.
    pub fn start(args: &[&str]) -> Option<TestEureka> {
        let port = free_port();
        let mut all = vec![
            "--server.address=127.0.0.1".to_string(),
            format!("--server.port={port}"),
            "--eureka.client.register-with-eureka=false".into(),
            "--eureka.client.fetch-registry=false".into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let mut app = SpringApp::start("eureka-server.jar", &all)?;
        let url = format!("http://127.0.0.1:{port}/eureka/apps");
        wait_ready("a Eureka server", &mut app.child, || {
            TcpStream::connect(("127.0.0.1", port)).is_ok() && http("GET", &url, None).0 == 200
        });
        Some(TestEureka { app, port })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/eureka", self.port)
    }

    pub fn rest(&self) -> EurekaRest {
        EurekaRest { url: self.url() }
    }

    pub fn log(&self) -> String {
        self.app.log()
    }
}
