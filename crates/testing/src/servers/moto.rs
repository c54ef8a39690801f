//! A private moto server (an AWS API emulator serving Cloud Map), for the Cloud Map
//! tests and bench; the client that writes to it is the sources crate's
//! (`registry_sync_sources::testing::CloudMapWriter`), which shares its interceptor.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{ask, free_port, log_file, scratch_dir, shared_server, wait_ready};

/// The URL of the shared moto server `scripts/test` started.
pub const MOTO_VAR: &str = "REGISTRY_SYNC_TEST_MOTO";
/// The `moto_server` binary `scripts/test` installed and checked.
pub const MOTO_SERVER_VAR: &str = "REGISTRY_SYNC_TEST_MOTO_SERVER";
/// The region every test uses; moto keeps one state per region.
pub const MOTO_REGION: &str = "us-east-1";

/// The dummy credentials tests give moto (it checks no signature), for a child
/// process's environment.
pub const MOTO_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_SESSION_TOKEN", "testing"),
    ("AWS_REGION", MOTO_REGION),
    // No instance metadata lookups on a machine that is not in AWS.
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// A private moto on a free loopback port, killed when dropped. Its state lives in
/// memory only: a stopped moto comes back empty.
pub struct TestMoto {
    binary: String,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl TestMoto {
    /// Starts one, or returns `None` (skipped) when `REGISTRY_SYNC_TEST_MOTO_SERVER` is
    /// not set (a failure under CI).
    pub fn start() -> Option<TestMoto> {
        let binary = shared_server(MOTO_SERVER_VAR)?;
        let mut moto = TestMoto {
            binary,
            dir: scratch_dir("moto"),
            port: free_port(),
            child: None,
        };
        moto.resume();
        Some(moto)
    }

    /// `http://127.0.0.1:<port>`, for `endpoint`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`, for a [`super::Proxy`] in front of it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many HTTP requests the server has answered since it was first started, from
    /// its request log (moto has no request counter of its own).
    pub fn requests(&self) -> usize {
        std::fs::read_to_string(self.dir.join("moto.log")).map_or(0, |log| {
            log.lines().filter(|line| line.contains(" HTTP/1.1\" ")).count()
        })
    }

    /// Kills the server; its state is lost.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (empty) on the same port and waits until it serves.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "moto is already running");
        let mut child = Command::new(&self.binary)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir, "moto.log"))
            .stderr(log_file(&self.dir, "moto.log"))
            .spawn()
            .expect("start moto_server (scripts/test installs it)");
        let port = self.port;
        wait_ready("moto", &mut child, || {
            ask(port, b"GET /moto-api/ HTTP/1.0\r\n\r\n").is_some_and(|a| a.starts_with("HTTP/1.1 200"))
        });
        self.child = Some(child);
    }
}

impl Drop for TestMoto {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
