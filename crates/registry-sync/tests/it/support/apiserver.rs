//! Helpers for the end-to-end runs against the real kube-apiserver that `scripts/test`
//! builds and starts. Tests share it: each works in namespaces of its own, under an
//! instance id of its own, and counts the writes the server's audit log shows for them.

use std::time::Duration;

use kube::api::{Api, DynamicObject};
use registry_sync_testing::kube::Resource;
use registry_sync_testing::servers::{KubeApiServer, Request};

use super::{ChildGuard, Workspace};

/// One test's corner of the shared API server.
pub struct Cluster {
    pub server: KubeApiServer,
    /// The namespace the registry's objects go to.
    pub ns: String,
    /// The instance id, unique to the test.
    pub instance: String,
    pub client: kube::Client,
}

impl Cluster {
    /// `None` when the test is skipped (no server outside CI).
    pub async fn new(tag: &str) -> Option<Cluster> {
        let server = KubeApiServer::shared()?;
        let ns = server.namespace(tag).await;
        let client = server.admin().await;
        Some(Cluster {
            instance: ns.clone(),
            server,
            ns,
            client,
        })
    }

    /// A workspace whose config writes the file registry `legacy` into the test's
    /// namespace through `kubeconfig` (the admin's unless a test says otherwise), with
    /// `registry_extra` appended to the registry and `extra` to the config.
    pub fn workspace(&self, services_text: &str, registry_extra: &str, extra: &str) -> Workspace {
        let ws = workspace_for(
            &self.server.admin_kubeconfig(),
            &self.instance,
            &self.ns,
            &format!(
                "{registry_extra}sinks:\n  kubernetes:\n    kubeconfig: KUBECONFIG\n    leader_election: {{enabled: false}}\n{extra}"
            ),
        );
        ws.write_services(services_text);
        ws
    }

    pub fn api(&self, resource: Resource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &resource.api_resource())
    }

    pub async fn names(&self, resource: Resource) -> Vec<String> {
        let mut names: Vec<String> = self
            .api(resource)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect();
        names.sort();
        names
    }

    pub async fn get(&self, resource: Resource, name: &str) -> Option<DynamicObject> {
        self.api(resource).get_opt(name).await.unwrap()
    }

    /// Writes since `mark` on this test's namespaces or naming its instance (its guard's
    /// Lease), by anyone.
    pub fn writes_since(&self, mark: usize) -> Vec<Request> {
        self.server.requests_since(mark, |r| {
            r.is_write() && (r.namespace.starts_with(&self.ns) || r.name.contains(&self.instance))
        })
    }

    /// Waits until `condition` holds, checking every 50 ms, or fails after `limit`.
    pub async fn wait_for<F, Fut>(
        &self,
        limit: Duration,
        what: &str,
        child: Option<&ChildGuard>,
        condition: F,
    ) where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + limit;
        while !condition().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {limit:?}:\n{}",
                child.map(|c| c.stderr()).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A workspace whose config has the file registry `legacy` writing into `ns`, then
/// `rest` with `KUBECONFIG` replaced by `kubeconfig`'s path.
pub fn workspace_for(kubeconfig: &std::path::Path, instance: &str, ns: &str, rest: &str) -> Workspace {
    let ws = Workspace::new();
    ws.write_config(&format!(
        "instance: {instance}
registries:
  - name: legacy
    kind: file
    path: services.yaml
    namespace: {ns}
{}",
        rest.replace("KUBECONFIG", &kubeconfig.display().to_string())
    ));
    ws
}

/// The binary's subcommands are run as against the stand-in: on a blocking thread.
#[allow(unused_imports)] // Test binaries that include the support use a part of it.
pub use super::standin::cmd;

/// A short list of requests for an assertion message.
pub fn describe(requests: &[Request]) -> String {
    requests
        .iter()
        .map(|r| {
            format!(
                "{} {} {}/{}{} by {} → {}",
                r.verb,
                r.resource,
                r.namespace,
                r.name,
                if r.subresource.is_empty() {
                    String::new()
                } else {
                    format!("/{}", r.subresource)
                },
                r.user,
                r.code
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
