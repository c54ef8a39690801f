//! Helpers for the end-to-end runs against the Kubernetes API server stand-in.

use std::time::Duration;

use registry_sync_testing::kube::{Resource, StandIn};

use super::{ChildGuard, Output, Workspace, registry_sync};

/// A workspace whose config writes to the stand-in, with the given extra config text.
pub fn workspace(server: &StandIn, services_text: &str, extra: &str) -> Workspace {
    let ws = Workspace::new();
    ws.write(
        "kubeconfig",
        &format!(
            "apiVersion: v1
kind: Config
clusters: [{{name: standin, cluster: {{server: \"{}\"}}}}]
users: [{{name: test, user: {{}}}}]
contexts: [{{name: test, context: {{cluster: standin, user: test, namespace: default}}}}]
current-context: test
",
            server.url()
        ),
    );
    ws.write_config(&format!(
        "instance: e2e
registries:
  - name: legacy
    kind: file
    path: services.yaml
    namespace: mesh
sinks:
  kubernetes:
    kubeconfig: kubeconfig
    leader_election: {{enabled: false}}
{extra}"
    ));
    ws.write_services(services_text);
    ws
}

/// Runs a subcommand on a blocking thread, so the in-process stand-in keeps serving.
pub async fn cmd(ws: &Workspace, args: &[&str]) -> Output {
    let dir = ws.path().to_path_buf();
    let mut full = args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    full.push("--config".into());
    full.push(ws.config_path().display().to_string());
    tokio::task::spawn_blocking(move || registry_sync(&dir, full))
        .await
        .unwrap()
}

pub fn object_names(server: &StandIn, resource: Resource) -> Vec<String> {
    let mut names: Vec<String> = server
        .objects(resource)
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

/// Waits until `condition` holds for the stand-in, or fails after `limit`.
pub async fn wait_for(limit: Duration, what: &str, child: &ChildGuard, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}:\n{}",
            child.stderr()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts `run` in the workspace from a blocking thread (the stand-in keeps serving).
pub async fn spawn_run(ws: &Workspace) -> ChildGuard {
    let dir = ws.path().to_path_buf();
    let config = ws.config_path();
    tokio::task::spawn_blocking(move || {
        ChildGuard::spawn(
            &dir,
            [
                std::ffi::OsStr::new("run"),
                std::ffi::OsStr::new("--config"),
                config.as_os_str(),
            ],
        )
    })
    .await
    .unwrap()
}
