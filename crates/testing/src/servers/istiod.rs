//! The real istiod (`pilot-discovery`, built from `istio.io/istio` by `scripts/test`),
//! started per test against an API server with a mesh config of the test's choosing,
//! every port on loopback; killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{free_port, kill, log_file, scratch_dir, shared_server, wait_ready};

/// The `pilot-discovery` binary.
pub const ISTIOD_VAR: &str = "REGISTRY_SYNC_TEST_ISTIOD_BIN";

pub struct TestIstiod {
    child: Option<Child>,
    dir: PathBuf,
    grpc_port: u16,
    http_port: u16,
}

impl TestIstiod {
    /// Starts one reading the API server of `kubeconfig` (which must hold the namespace
    /// `istio-system`), with `mesh_config` (YAML) and `extra` flags (`--configDir`, …);
    /// `None` when the test is skipped (no istiod outside CI).
    pub fn start(kubeconfig: &Path, mesh_config: &str, extra: &[&str]) -> Option<TestIstiod> {
        let binary = shared_server(ISTIOD_VAR)?;
        let dir = scratch_dir("istiod");
        std::fs::write(dir.join("mesh.yaml"), mesh_config).expect("write the mesh config");
        let (grpc_port, http_port) = (free_port(), free_port());
        let address = |port: u16| format!("127.0.0.1:{port}");
        let mut child = Command::new(binary)
            .arg("discovery")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--meshConfig")
            .arg(dir.join("mesh.yaml"))
            .args(["--domain", "cluster.local"])
            .args(["--grpcAddr", &address(grpc_port)])
            .args(["--secureGRPCAddr", &address(free_port())])
            .args(["--httpAddr", &address(http_port)])
            .args(["--httpsAddr", &address(free_port())])
            .args(["--monitoringAddr", &address(free_port())])
            .args(["--ctrlz_port", &free_port().to_string()])
            .args(["--ctrlz_address", "127.0.0.1"])
            .args(extra)
            .env("POD_NAMESPACE", "istio-system")
            .env(
                "POD_NAME",
                format!("istiod-{}", dir.file_name().unwrap_or_default().to_string_lossy()),
            )
            .env("KUBECONFIG", kubeconfig)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log_file(&dir, "istiod.log"))
            .stderr(log_file(&dir, "istiod.log"))
            .spawn()
            .expect("start pilot-discovery");
        let ready = format!("http://127.0.0.1:{http_port}/ready");
        wait_ready("istiod", &mut child, || {
            std::net::TcpStream::connect(("127.0.0.1", http_port)).is_ok()
                && super::http("GET", &ready, None).0 == 200
        });
        Some(TestIstiod {
            child: Some(child),
            dir,
            grpc_port,
            http_port,
        })
    }

    /// The plaintext xDS address a sidecar dials.
    pub fn xds_address(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.grpc_port).into()
    }

    /// istiod's debug endpoint `path` (e.g. `/debug/configz`), over its HTTP port.
    pub fn debug(&self, path: &str) -> String {
        super::http("GET", &format!("http://127.0.0.1:{}{path}", self.http_port), None).1
    }

    /// What istiod logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("istiod.log")).unwrap_or_default()
    }
}

impl Drop for TestIstiod {
    fn drop(&mut self) {
        kill(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
