//! The real kube-apiserver `scripts/test` builds from its Go module and starts
//! (`start_kube_apiserver` in scripts/test-servers.sh): RBAC on, the Istio CRDs
//! installed, and an audit log of every request, which is how a test counts the writes
//! a real server received.
//!
//! Tests share the one server, so each works in namespaces of its own
//! ([`KubeApiServer::namespace`]) and counts only requests on those namespaces or
//! naming its own instance.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};

/// A directory with `admin.kubeconfig`, `registry-sync.kubeconfig` and `audit.log`.
pub const KUBE_VAR: &str = "REGISTRY_SYNC_TEST_KUBE";

/// The shared real API server.
pub struct KubeApiServer {
    dir: PathBuf,
}

/// One request the API server answered, from its audit log.
#[derive(Clone, Debug)]
pub struct Request {
    pub verb: String,
    pub user: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub code: u16,
    pub uri: String,
    /// The client's `User-Agent` (istiod's starts with `pilot-discovery/`).
    pub user_agent: String,
}

impl Request {
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

impl KubeApiServer {
    /// The server `scripts/test` started, or `None` (after printing why) when the test
    /// must be skipped; under CI a missing server fails the test.
    pub fn shared() -> Option<KubeApiServer> {
        super::shared_server(KUBE_VAR).map(|dir| KubeApiServer { dir: dir.into() })
    }

    /// A kubeconfig of a user in `system:masters`.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// A kubeconfig of `system:serviceaccount:registry-sync:registry-sync`, which may do
    /// only what RBAC grants it.
    pub fn service_account_kubeconfig(&self) -> PathBuf {
        self.dir.join("registry-sync.kubeconfig")
    }

    /// A kube client as the admin.
    pub async fn admin(&self) -> kube::Client {
        client_of(&self.admin_kubeconfig()).await
    }

    /// Creates a namespace named after `tag` and unique to this test process and call.
    pub async fn namespace(&self, tag: &str) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        self.create_namespace(&name).await;
        name
    }

    /// Sets the label `key` = `value` on the namespace `name` (what istiod's
    /// `discoverySelectors` select by).
    pub async fn label_namespace(&self, name: &str, key: &str, value: &str) {
        let namespaces: Api<Namespace> = Api::all(self.admin().await);
        let patch = serde_json::json!({"metadata": {"labels": {key: value}}});
        namespaces
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(patch),
            )
            .await
            .unwrap_or_else(|e| panic!("labelling namespace {name}: {e}"));
    }

    /// Creates the namespace `name` (already there is fine).
    pub async fn create_namespace(&self, name: &str) {
        let namespaces: Api<Namespace> = Api::all(self.admin().await);
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}
        }))
        .expect("a namespace");
        match namespaces.create(&PostParams::default(), &namespace).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("creating namespace {name}: {e}"),
        }
    }

    /// Every request the audit log holds so far that `keep` selects.
    pub fn requests(&self, keep: impl Fn(&Request) -> bool) -> Vec<Request> {
        let text = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| event["stage"] == "ResponseComplete")
            .map(|event| {
                let field = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
                Request {
                    verb: field(&event["verb"]),
                    user: field(&event["user"]["username"]),
                    resource: field(&event["objectRef"]["resource"]),
                    subresource: field(&event["objectRef"]["subresource"]),
                    namespace: field(&event["objectRef"]["namespace"]),
                    name: field(&event["objectRef"]["name"]),
                    code: event["responseStatus"]["code"].as_u64().unwrap_or_default() as u16,
                    uri: field(&event["requestURI"]),
                    user_agent: field(&event["userAgent"]),
                }
            })
            .filter(|r| keep(r))
            .collect()
    }

    /// How many requests the audit log holds: a mark to count from.
    pub fn audit_mark(&self) -> usize {
        self.requests(|_| true).len()
    }

    /// The requests after `mark` that `keep` selects.
    pub fn requests_since(&self, mark: usize, keep: impl Fn(&Request) -> bool) -> Vec<Request> {
        self.requests(|_| true)
            .into_iter()
            .skip(mark)
            .filter(|r| keep(r))
            .collect()
    }

    /// Runs the `kubectl` built with the API server, as the admin, and returns its
    /// standard output; panics with its error output when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        kubectl(&self.dir, &self.admin_kubeconfig(), args)
    }
}

/// Runs the `kubectl` in the shared server's directory `dir` with `kubeconfig`.
fn kubectl(dir: &Path, kubeconfig: &Path, args: &[&str]) -> String {
    let kubectl = dir.join("kubectl");
    let output = std::process::Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", kubectl.display()));
    super::checked_stdout(output, &format!("kubectl {}", args.join(" ")))
}

async fn client_of(path: &Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    kube::Client::try_from(config).expect("a kube client")
}

/// A private kube-apiserver on an etcd of its own, stopped and restarted at will on the
/// same port and data, for tests that restart the API server. It reuses the shared
/// server's binaries, keys, tokens and serving certificate (issued for 127.0.0.1, so
/// valid on any port) and installs the same CRDs.
pub struct TestKubeApiServer {
    shared: PathBuf,
    etcd: super::TestEtcd,
    dir: PathBuf,
    port: u16,
    child: Option<std::process::Child>,
}

impl TestKubeApiServer {
    /// Starts one, ready and with the Istio CRDs established; `None` when the test is
    /// skipped (no shared server outside CI).
    pub fn start() -> Option<TestKubeApiServer> {
        let shared = KubeApiServer::shared()?.dir;
        let etcd = super::TestEtcd::start()?;
        let dir = super::scratch_dir("kube-apiserver");
        let mut server = TestKubeApiServer {
            shared,
            etcd,
            dir,
            port: super::free_port(),
            child: None,
        };
        let admin = std::fs::read_to_string(server.shared.join("tokens.csv"))
            .expect("the shared server's tokens")
            .lines()
            .find(|line| line.contains(",admin,"))
            .and_then(|line| line.split(',').next().map(str::to_string))
            .expect("an admin token");
        std::fs::write(
            server.kubeconfig(),
            format!(
                "apiVersion: v1
kind: Config
clusters: [{{name: test, cluster: {{server: \"https://127.0.0.1:{}\", certificate-authority: \"{}\"}}}}]
users: [{{name: test, user: {{token: \"{admin}\"}}}}]
contexts: [{{name: test, context: {{cluster: test, user: test, namespace: default}}}}]
current-context: test
",
                server.port,
                server.shared.join("certs/apiserver.crt").display()
            ),
        )
        .expect("write a kubeconfig");
        server.resume();
        let crds = server.shared.join("istio-crds.yaml");
        server.kubectl(&["apply", "--server-side", "-f", crds.to_str().unwrap()]);
        server.kubectl(&[
            "wait",
            "--for",
            "condition=Established",
            "--timeout",
            "60s",
            "crd/serviceentries.networking.istio.io",
            "crd/workloadentries.networking.istio.io",
        ]);
        Some(server)
    }

    /// An admin's kubeconfig for this server.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    pub async fn admin(&self) -> kube::Client {
        client_of(&self.kubeconfig()).await
    }

    /// Runs the shared `kubectl` against this server; panics when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        kubectl(&self.shared, &self.kubeconfig(), args)
    }

    /// Kills the server (its etcd keeps running).
    pub fn stop(&mut self) {
        super::kill(&mut self.child);
    }

    /// Starts the server (again) on the same port and etcd, and waits until it is ready.
    pub fn resume(&mut self) {
        let file = |name: &str| self.shared.join(name).display().to_string();
        let mut child = std::process::Command::new(self.shared.join("kube-apiserver"))
            .args(["--etcd-servers", &self.etcd.url()])
            .args(["--cert-dir", &file("certs")])
            .args(["--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1"])
            .args(["--secure-port", &self.port.to_string()])
            .args([
                "--service-cluster-ip-range",
                "10.0.0.0/24",
                "--endpoint-reconciler-type",
                "none",
            ])
            .args([
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
            ])
            .args(["--service-account-key-file", &file("service-account.pub")])
            .args(["--service-account-signing-key-file", &file("service-account.key")])
            .args(["--token-auth-file", &file("tokens.csv")])
            .args(["--authorization-mode", "RBAC"])
            .stdin(std::process::Stdio::null())
            .stdout(super::log_file(&self.dir, "kube-apiserver.log"))
            .stderr(super::log_file(&self.dir, "kube-apiserver.log"))
            .spawn()
            .expect("start kube-apiserver");
        let readyz = |kubeconfig: &Path| {
            std::process::Command::new(self.shared.join("kubectl"))
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["get", "--raw", "/readyz"])
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout.trim_ascii() == b"ok")
        };
        let kubeconfig = self.kubeconfig();
        super::wait_ready("kube-apiserver", &mut child, || readyz(&kubeconfig));
        self.child = Some(child);
    }
}

impl Drop for TestKubeApiServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
