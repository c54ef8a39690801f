//! A private moto server (an AWS API emulator serving Cloud Map) and a small client
//! that writes to it, for the Cloud Map tests and bench.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use aws_sdk_servicediscovery::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_servicediscovery::types::{CustomHealthStatus, HealthCheckCustomConfig};

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

/// Writes namespaces, services and instances to a Cloud Map API, as an operator or
/// an ECS agent would.
#[derive(Clone)]
pub struct CloudMapWriter {
    sdk: aws_sdk_servicediscovery::Client,
}

impl CloudMapWriter {
    pub fn new(endpoint: &str) -> CloudMapWriter {
        let config = aws_sdk_servicediscovery::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(MOTO_REGION))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .endpoint_url(endpoint)
            .interceptor(crate::cloudmap::StripDataPrefix::for_endpoint(endpoint))
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        CloudMapWriter {
            sdk: aws_sdk_servicediscovery::Client::from_conf(config),
        }
    }

    /// Creates an HTTP namespace and returns its id.
    pub async fn namespace(&self, name: &str) -> String {
        self.sdk
            .create_http_namespace()
            .name(name)
            .send()
            .await
            .expect("CreateHttpNamespace");
        let listing = self.sdk.list_namespaces().send().await.expect("ListNamespaces");
        listing
            .namespaces
            .unwrap_or_default()
            .into_iter()
            .find(|n| n.name.as_deref() == Some(name))
            .and_then(|n| n.id)
            .expect("the namespace just created is listed")
    }

    /// Creates a service in a namespace and returns its id; with `custom_health` its
    /// instances' health is set through [`CloudMapWriter::set_health`].
    pub async fn service(&self, namespace_id: &str, name: &str, custom_health: bool) -> String {
        let mut request = self.sdk.create_service().namespace_id(namespace_id).name(name);
        if custom_health {
            request = request.health_check_custom_config(HealthCheckCustomConfig::builder().build());
        }
        let created = request.send().await.expect("CreateService");
        created
            .service
            .and_then(|s| s.id)
            .expect("CreateService returns the service id")
    }

    /// Registers an instance, replacing one of the same id. Cloud Map updates an
    /// instance registered again under its id; moto appends a second one, so this
    /// deregisters first.
    pub async fn register(&self, service_id: &str, instance_id: &str, attributes: &[(&str, &str)]) {
        let _ = self
            .sdk
            .deregister_instance()
            .service_id(service_id)
            .instance_id(instance_id)
            .send()
            .await;
        let attributes: HashMap<String, String> = attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.sdk
            .register_instance()
            .service_id(service_id)
            .instance_id(instance_id)
            .set_attributes(Some(attributes))
            .send()
            .await
            .expect("RegisterInstance");
    }

    pub async fn deregister(&self, service_id: &str, instance_id: &str) {
        self.sdk
            .deregister_instance()
            .service_id(service_id)
            .instance_id(instance_id)
            .send()
            .await
            .expect("DeregisterInstance");
    }

    /// Sets a custom health check's status.
    pub async fn set_health(&self, service_id: &str, instance_id: &str, healthy: bool) {
        let status = if healthy {
            CustomHealthStatus::Healthy
        } else {
            CustomHealthStatus::Unhealthy
        };
        self.sdk
            .update_instance_custom_health_status()
            .service_id(service_id)
            .instance_id(instance_id)
            .status(status)
            .send()
            .await
            .expect("UpdateInstanceCustomHealthStatus");
    }

    /// The instances revision of a service, as `DiscoverInstancesRevision` says.
    pub async fn revision(&self, namespace: &str, service: &str) -> i64 {
        self.sdk
            .discover_instances_revision()
            .namespace_name(namespace)
            .service_name(service)
            .send()
            .await
            .expect("DiscoverInstancesRevision")
            .instances_revision
            .unwrap_or_default()
    }

    pub async fn delete_service(&self, service_id: &str) {
        self.sdk
            .delete_service()
            .id(service_id)
            .send()
            .await
            .expect("DeleteService");
    }
}
