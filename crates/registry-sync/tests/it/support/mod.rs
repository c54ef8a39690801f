//! Shared helpers for the end-to-end tests: a temporary workspace holding a config and a
//! services file, a way to run the real binary, a guard that never leaves a child
//! process behind, and polling with a deadline instead of fixed sleeps.

// Every test binary that includes this module uses a different subset of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

pub mod apiserver;
pub mod standin;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_registry-sync");

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// How often a condition is re-checked while waiting.
pub const POLL: Duration = Duration::from_millis(20);

/// A command with the environment every test uses: default logging, no colours, and
/// none of the variables that would change what the binary reads.
pub fn command(cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("REGISTRY_SYNC_CONFIG")
        .env_remove("REGISTRY_SYNC_LOG_FORMAT")
        .stdin(Stdio::null());
    cmd
}

/// What a finished run of the binary left behind.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Shows both streams, so a failed assertion says what the binary said.
impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs the binary to completion with `args`, from `cwd`.
pub fn registry_sync<I, S>(cwd: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = command(cwd)
        .args(args)
        .output()
        .expect("the registry-sync binary runs");
    Output {
        status: output.status,
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

/// Polls `cond` every [`POLL`] until it holds or `timeout` passes; returns whether it held.
/// One HTTP/1.1 GET of `path` on `address` (the admin endpoint), the whole response.
pub fn http_get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("the admin endpoint accepts");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// Checks `cond` every [`POLL`] for `window`; returns whether it held every time. For
/// asserting that something does *not* happen, which no deadline can prove.
pub fn holds_for(window: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + window;
    while Instant::now() < end {
        if !cond() {
            return false;
        }
        thread::sleep(POLL);
    }
    cond()
}

/// A running `registry-sync`, killed when dropped unless it already exited. Its stderr
/// is collected by a background thread into a buffer the test can read at any time.
pub struct ChildGuard {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl ChildGuard {
    pub fn spawn<I, S>(cwd: &Path, args: I) -> ChildGuard
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        ChildGuard::spawn_with_env(cwd, args, &[])
    }

    /// Like [`ChildGuard::spawn`], with extra environment variables (dummy cloud
    /// credentials for an emulator, say).
    pub fn spawn_with_env<I, S>(cwd: &Path, args: I, env: &[(&str, &str)]) -> ChildGuard
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = command(cwd)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the registry-sync binary starts");
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        let buffer = Arc::clone(&stderr);
        let reader = thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buffer
                        .lock()
                        .expect("stderr buffer lock")
                        .push_str(&String::from_utf8_lossy(&chunk[..n])),
                }
            }
        });
        ChildGuard {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer lock").clone()
    }

    /// Sends SIGTERM through `kill`, as a service manager would.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("`kill` runs");
        assert!(status.success(), "kill -TERM {} failed: {status}", self.pid());
    }

    /// Waits until the file at `path` exists and `cond` holds for its text.
    pub fn await_file(&self, path: &Path, what: &str, cond: impl Fn(&str) -> bool) {
        assert!(
            wait_until(Duration::from_secs(30), || std::fs::read_to_string(path)
                .is_ok_and(|t| cond(&t))),
            "{what}: {} never matched; stderr:\n{}",
            path.display(),
            self.stderr()
        );
    }

    /// What every registry run checks once its registry is down: the failure is logged
    /// within `within`, and the objects in `ws` stay as they were for 2 s.
    pub fn assert_down_and_nothing_deleted(&self, ws: &Workspace, registry: &str, within: Duration) {
        assert!(
            wait_until(within, || self.stderr().contains("registry failing")),
            "the failure of {registry} was never logged; stderr:\n{}",
            self.stderr()
        );
        let kept = ws.out_files();
        assert!(
            holds_for(Duration::from_secs(2), || ws.out_files() == kept),
            "objects changed while {registry} was down"
        );
    }

    /// SIGTERM, and a clean exit within [`DEADLINE`].
    pub fn stop_cleanly(mut self) {
        self.terminate();
        assert!(
            self.wait_timeout(DEADLINE).is_some_and(|s| s.success()),
            "run did not stop cleanly; stderr:\n{}",
            self.stderr()
        );
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().expect("try_wait on the child");
            status.is_some()
        });
        if status.is_some()
            && let Some(reader) = self.reader.take()
        {
            // The pipe is closed once the process is gone, so this ends promptly.
            let _ = reader.join();
        }
        status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

pub const CONFIG_FILE: &str = "sync.yaml";
pub const SERVICES_FILE: &str = "services.yaml";
pub const OUT_DIR: &str = "out";

/// A temporary directory holding `sync.yaml`, `services.yaml` and (once synced) `out/`,
/// removed when dropped.
pub struct Workspace {
    dir: tempfile::TempDir,
}

/// The config most tests use: one file registry `legacy` into namespace `mesh`, with
/// a files sink at `out/`.
pub const FILES_SINK_CONFIG: &str = "\
registries:
  - name: legacy
    kind: file
    path: services.yaml
    namespace: mesh
sinks:
  files:
    dir: out
";

impl Workspace {
    pub fn new() -> Workspace {
        Workspace {
            dir: tempfile::Builder::new()
                .prefix("registry-sync-e2e-")
                .tempdir()
                .expect("a temporary directory"),
        }
    }

    /// A workspace with [`FILES_SINK_CONFIG`] and the given services file.
    pub fn with_services(services: &str) -> Workspace {
        let ws = Workspace::new();
        ws.write_config(FILES_SINK_CONFIG);
        ws.write_services(services);
        ws
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join(CONFIG_FILE)
    }

    pub fn services_path(&self) -> PathBuf {
        self.path().join(SERVICES_FILE)
    }

    pub fn out_dir(&self) -> PathBuf {
        self.path().join(OUT_DIR)
    }

    pub fn write_config(&self, text: &str) {
        self.write(CONFIG_FILE, text);
    }

    /// `check` on `config` exits 1 and names the failing registry (`what`, e.g.
    /// `registry kv (etcd): FAILED`) and the address it could not reach.
    pub fn check_fails_naming(&self, config: &str, what: &str, address: &str) {
        self.write_config(config);
        let output = self.cmd("check");
        assert_eq!(output.code(), Some(1), "{output}");
        assert!(
            output.stdout.contains(what) && output.stdout.contains(address),
            "{output}"
        );
    }

    /// Writes `services.yaml` in place (truncate, then write).
    pub fn write_services(&self, text: &str) {
        self.write(SERVICES_FILE, text);
    }

    /// Replaces `services.yaml` the way careful writers and editors do: a temporary file
    /// in the same directory, renamed over it.
    pub fn write_services_atomically(&self, text: &str) {
        let tmp = self.path().join(".services.yaml.tmp");
        std::fs::write(&tmp, text).expect("write the temporary services file");
        std::fs::rename(&tmp, self.services_path()).expect("rename the services file into place");
    }

    /// Replaces a file relative to the workspace through a temporary file and a rename.
    pub fn write_atomically(&self, relative: &str, text: &str) {
        let tmp = self.path().join(format!(".{relative}.tmp"));
        std::fs::write(&tmp, text).expect("write the temporary file");
        std::fs::rename(&tmp, self.path().join(relative)).expect("rename the file into place");
    }

    /// Writes any file relative to the workspace, creating its directory.
    pub fn write(&self, relative: impl AsRef<Path>, text: &str) {
        let path = self.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create the file's directory");
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Runs `registry-sync <subcommand> --config sync.yaml` from the workspace.
    pub fn cmd(&self, subcommand: &str) -> Output {
        registry_sync(
            self.path(),
            [
                OsStr::new(subcommand),
                OsStr::new("--config"),
                self.config_path().as_os_str(),
            ],
        )
    }

    /// Runs `registry-sync <subcommand> --config sync.yaml` with extra environment
    /// variables.
    pub fn cmd_with_env(&self, subcommand: &str, env: &[(&str, &str)]) -> Output {
        let output = command(self.path())
            .args([subcommand, "--config"])
            .arg(self.config_path())
            .envs(env.iter().copied())
            .output()
            .expect("the registry-sync binary runs");
        Output {
            status: output.status,
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        }
    }

    /// Starts `registry-sync run --config sync.yaml` with extra environment variables.
    pub fn spawn_run_with_env(&self, env: &[(&str, &str)]) -> ChildGuard {
        ChildGuard::spawn_with_env(
            self.path(),
            [
                OsStr::new("run"),
                OsStr::new("--config"),
                self.config_path().as_os_str(),
            ],
            env,
        )
    }

    /// Starts `registry-sync run --config sync.yaml` from the workspace.
    pub fn spawn_run(&self) -> ChildGuard {
        ChildGuard::spawn(
            self.path(),
            [
                OsStr::new("run"),
                OsStr::new("--config"),
                self.config_path().as_os_str(),
            ],
        )
    }

    /// The path of the file the files sink uses for an object of namespace `mesh`.
    pub fn object_file(&self, kind: &str, name: &str) -> PathBuf {
        self.out_dir().join(format!("mesh.{kind}.{name}.yaml"))
    }

    /// The file of ServiceEntry `mesh/<name>`.
    pub fn service_entry_file(&self, name: &str) -> PathBuf {
        self.object_file("serviceentry", name)
    }

    /// The current content of a file, `None` when it does not exist.
    pub fn read(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    /// Every file in `out/`, by name. The files sink's in-flight temporary files
    /// (`.registry-sync.<pid>.<n>.tmp`, renamed over their object file a moment later)
    /// are left out: one may be listed and gone before it is read. A rewrite still
    /// shows, as a new inode or modification time of the object file. The guard's memory
    /// (`.registry-sync-guard`) is no object: it is left out too.
    pub fn out_files(&self) -> BTreeMap<String, FileState> {
        let mut files = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(self.out_dir()) else {
            return files;
        };
        for entry in entries {
            let entry = entry.expect("a directory entry");
            let name = entry.file_name().into_string().expect("a UTF-8 file name");
            if name.starts_with(".registry-sync.") && name.ends_with(".tmp") || name == ".registry-sync-guard"
            {
                continue;
            }
            files.insert(name, FileState::of(&entry.path()));
        }
        files
    }
}

/// What identifies one version of a file: a rewrite (atomic rename or in place) changes
/// the inode or the modification time, and any change of content changes the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileState {
    pub bytes: Vec<u8>,
    pub inode: u64,
    pub modified: SystemTime,
}

impl FileState {
    pub fn of(path: &Path) -> FileState {
        let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
        FileState {
            bytes: std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
            inode: meta.ino(),
            modified: meta.modified().expect("a modification time"),
        }
    }
}

/// The values of every `key=<number>` field in log text, e.g. `created=3`.
pub fn log_counts(log: &str, key: &str) -> Vec<u64> {
    let needle = format!("{key}=");
    let mut counts = Vec::new();
    for (at, _) in log.match_indices(&needle) {
        // Only whole field names: `created=` but not `uncreated=`.
        let before = log[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let digits: String = log[at + needle.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(n) = digits.parse() {
            counts.push(n);
        }
    }
    counts
}

/// The lines of `log` that contain every one of `needles`.
pub fn lines_with<'a>(log: &'a str, needles: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .collect()
}

/// The part of a generated Istio object the tests look at. Unknown fields are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Debug, Deserialize)]
pub struct Metadata {
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// ServiceEntry and WorkloadEntry specs in one shape: a ServiceEntry lists its ports, a
/// WorkloadEntry maps port names to numbers.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    pub location: Option<String>,
    pub resolution: Option<String>,
    pub ports: Option<Ports>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    pub workload_selector: Option<Selector>,
    #[serde(default)]
    pub export_to: Vec<String>,
    /// WorkloadEntry only.
    pub address: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Ports {
    List(Vec<ServicePort>),
    Map(BTreeMap<String, u32>),
}

#[derive(Debug, Deserialize)]
pub struct ServicePort {
    pub number: u32,
    pub protocol: String,
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub address: String,
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub network: Option<String>,
    pub locality: Option<String>,
    pub weight: Option<u32>,
    pub service_account: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Selector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Object {
    /// The ServicePorts of a ServiceEntry (empty for a WorkloadEntry).
    pub fn service_ports(&self) -> &[ServicePort] {
        match &self.spec.ports {
            Some(Ports::List(ports)) => ports,
            _ => &[],
        }
    }
}

/// Parses multi-document YAML into objects, failing the test with the text when it is
/// not exactly that.
pub fn parse_objects(yaml: &str) -> Vec<Object> {
    // The default budget suits configuration files, not an estate of thousands.
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 1_000_000;
    budget.max_nodes = 50_000_000;
    budget.max_events = 100_000_000;
    serde_saphyr::from_multiple_with_options(yaml, serde_saphyr::options! { budget: Some(budget) })
        .unwrap_or_else(|e| panic!("not a stream of Istio objects: {e}\n--- text ---\n{yaml}"))
}

/// Parses a file holding exactly one object.
pub fn parse_object(path: &Path) -> Object {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut objects = parse_objects(&text);
    assert_eq!(objects.len(), 1, "{} holds one object:\n{text}", path.display());
    objects.remove(0)
}

// ---------------------------------------------------------------------------------
// Estates and expectations shared by the test files.

pub fn quickstart_config() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/quickstart/sync.yaml"
    ))
}

/// Runs `render` on the bundled quick-start, from a scratch directory.
pub fn render_quickstart() -> Output {
    let scratch = Workspace::new();
    let config = quickstart_config();
    registry_sync(
        scratch.path(),
        [OsStr::new("render"), OsStr::new("--config"), config.as_os_str()],
    )
}

/// `count` services `s0`, `s1`, … of one instance each.
pub fn services_of(count: usize) -> String {
    (0..count).fold(String::from("services:\n"), |text, n| {
        text + &format!(
            "  - name: s{n}\n    instances:\n      - {{address: 10.0.1.{n}, ports: {{http: 8080}}}}\n"
        )
    })
}

/// A small estate: `orders` (two instances, port `orders_port`), optionally `payments`,
/// and `reports` on a host name.
pub fn services(orders_port: u16, with_payments: bool) -> String {
    let mut text = format!(
        "services:
  - name: orders
    instances:
      - address: 10.0.0.1
        ports: {{http: {orders_port}}}
      - address: 10.0.0.2
        ports: {{http: {orders_port}}}
"
    );
    if with_payments {
        text.push_str(
            "  - name: payments
    instances:
      - address: 10.0.1.1
        ports: {https: 8443}
",
        );
    }
    text.push_str(
        "  - name: reports
    instances:
      - address: reports-1.example.com
        ports: {tcp: 9000}
",
    );
    text
}

/// The files `once` writes for `services(_, with_payments)`.
pub fn expected_files(with_payments: bool) -> BTreeSet<String> {
    let mut names = vec!["legacy.orders", "legacy.reports"];
    if with_payments {
        names.push("legacy.payments");
    }
    names
        .into_iter()
        .map(|name| format!("mesh.serviceentry.{name}.yaml"))
        .collect()
}

pub fn file_names(ws: &Workspace) -> BTreeSet<String> {
    ws.out_files().into_keys().collect()
}

/// Asserts that no `created=`, `updated=` or `deleted=` count in `log` is above zero.
pub fn assert_log_reports_no_writes(log: &str) {
    for key in ["created", "updated", "deleted"] {
        let counts = log_counts(log, key);
        assert!(
            counts.iter().all(|&n| n == 0),
            "the log reports {key}={counts:?} where nothing should have been written:\n{log}"
        );
    }
}

pub fn find<'a>(objects: &'a [Object], kind: &str, name: &str) -> &'a Object {
    objects
        .iter()
        .find(|o| o.kind == kind && o.metadata.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", names(objects)))
}

pub fn names(objects: &[Object]) -> Vec<String> {
    objects
        .iter()
        .map(|o| format!("{} {}/{}", o.kind, o.metadata.namespace, o.metadata.name))
        .collect()
}

/// A user's own ServiceEntry under the name registry-sync would give `payments`.
pub const HAND_MADE: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: legacy.payments
  namespace: mesh
spec:
  hosts: [payments.example.com]
  resolution: DNS
  ports:
  - {number: 443, protocol: TLS, name: tls}
";
