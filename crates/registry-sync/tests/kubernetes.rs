//! End-to-end: the real binary with the Kubernetes sink against the API server
//! stand-in (test support; no kube-apiserver can be installed here), reached through a
//! kubeconfig file exactly as a cluster would be.

mod support;

use std::time::Duration;

use registry_sync_testing::kube::{Resource, StandIn, Verb};
use support::*;

/// A workspace whose config writes to the stand-in, with the given extra config text.
fn workspace(server: &StandIn, services_text: &str, extra: &str) -> Workspace {
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
async fn cmd(ws: &Workspace, args: &[&str]) -> Output {
    let dir = ws.path().to_path_buf();
    let mut full = args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    full.push("--config".into());
    full.push(ws.config_path().display().to_string());
    tokio::task::spawn_blocking(move || registry_sync(&dir, full))
        .await
        .unwrap()
}

fn names(server: &StandIn, resource: Resource) -> Vec<String> {
    let mut names: Vec<String> = server
        .objects(resource)
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_creates_the_objects_and_a_second_once_writes_nothing() {
    let server = StandIn::start().await;
    let ws = workspace(&server, &services(8080, true), "");
    let first = cmd(&ws, &["once"]).await;
    assert_eq!(first.code(), Some(0), "{first}");
    assert_eq!(
        names(&server, Resource::ServiceEntry),
        ["legacy.orders", "legacy.payments", "legacy.reports"]
    );
    let object = server
        .object(Resource::ServiceEntry, "mesh", "legacy.orders")
        .unwrap();
    assert_eq!(
        object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "registry-sync"
    );
    assert_eq!(object["metadata"]["labels"]["registry-sync.io/instance"], "e2e");

    server.reset_counts();
    let second = cmd(&ws, &["once"]).await;
    assert_eq!(second.code(), Some(0), "{second}");
    assert_eq!(
        server.counts().writes(),
        0,
        "a restart with nothing changed writes nothing:\n{second}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_against_the_cluster_shows_the_diff_and_writes_nothing() {
    let server = StandIn::start().await;
    let ws = workspace(&server, &services(8080, true), "");
    let before = cmd(&ws, &["plan"]).await;
    assert_eq!(before.code(), Some(2), "{before}");
    assert_eq!(
        before
            .stdout
            .lines()
            .filter(|l| l.starts_with("+ ServiceEntry mesh/"))
            .count(),
        3,
        "{before}"
    );
    assert_eq!(server.counts().writes(), 0, "plan never writes");

    assert_eq!(cmd(&ws, &["once"]).await.code(), Some(0));
    ws.write_services(&services(9090, false));
    let after = cmd(&ws, &["plan"]).await;
    assert_eq!(after.code(), Some(2), "{after}");
    assert!(
        after
            .stdout
            .contains("~ ServiceEntry mesh/legacy.orders (update)"),
        "{after}"
    );
    assert!(
        after
            .stdout
            .contains("- ServiceEntry mesh/legacy.payments (delete)"),
        "{after}"
    );
    assert!(after.stdout.contains("1 unchanged"), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_fails_deletes_nothing_in_the_cluster() {
    let server = StandIn::start().await;
    let ws = workspace(&server, &services(8080, true), "");
    assert_eq!(cmd(&ws, &["once"]).await.code(), Some(0));
    ws.write_services("services: [this is not\n");
    server.reset_counts();
    let broken = cmd(&ws, &["once"]).await;
    assert_eq!(broken.code(), Some(1), "{broken}");
    assert_eq!(server.counts().get(Verb::Delete), 0);
    assert_eq!(names(&server, Resource::ServiceEntry).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mass_deletion_guard_holds_until_confirmed() {
    let server = StandIn::start().await;
    let ws = workspace(&server, &services(8080, true), "");
    assert_eq!(cmd(&ws, &["once"]).await.code(), Some(0));
    ws.write_services("services: []\n");

    let held = cmd(&ws, &["once"]).await;
    assert_eq!(held.code(), Some(3), "{held}");
    assert_eq!(server.counts().get(Verb::Delete), 0, "{held}");
    assert!(held.stderr.contains("mass change held back"), "{held}");
    let plan = cmd(&ws, &["plan"]).await;
    assert!(plan.stdout.contains("changes held back"), "{plan}");
    assert!(plan.stdout.contains("--confirm-mass-delete"), "{plan}");

    let confirmed = cmd(&ws, &["once", "--confirm-mass-delete"]).await;
    assert_eq!(confirmed.code(), Some(0), "{confirmed}");
    assert_eq!(server.counts().get(Verb::Delete), 3);
    assert!(names(&server, Resource::ServiceEntry).is_empty());
}

/// Starts `run` in the workspace and waits until its three ServiceEntries are written.
async fn run_until_synced(server: &StandIn, ws: &Workspace) -> ChildGuard {
    let dir = ws.path().to_path_buf();
    let config = ws.config_path();
    let child = tokio::task::spawn_blocking(move || {
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
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while names(server, Resource::ServiceEntry).len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never synced:\n{}",
            child.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_the_registry_into_the_cluster_and_coalesces_bursts() {
    let server = StandIn::start().await;
    let ws = workspace(&server, &services(8080, true), "admin:\n  listen: 127.0.0.1:0\n");
    let mut child = run_until_synced(&server, &ws).await;

    // The admin endpoint: ready after the first complete sync, metrics exposed.
    let address = child
        .stderr()
        .lines()
        .find(|l| l.contains("serving /metrics"))
        .and_then(|l| l.split("address=").nth(1))
        .map(|a| a.trim().to_string())
        .expect("the admin address is logged");
    let get = |path: &str| http_get(&address, path);
    // The objects can land a moment before the pass that wrote them reports back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ready = get("/readyz");
        if ready.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {ready}\n{}",
            child.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    let metrics = get("/metrics");
    assert!(
        metrics.contains("registry_sync_registry_up{registry=\"legacy\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("registry_sync_sink_writes_total{sink=\"kubernetes\",verb=\"create\",result=\"ok\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("registry_sync_propagation_seconds_count"),
        "{metrics}"
    );

    // A burst of 50 port changes: the last one wins, and far fewer than 50 writes land.
    server.reset_counts();
    for port in 9000..9050 {
        ws.write_services_atomically(&services(port, true));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let orders = server
            .object(Resource::ServiceEntry, "mesh", "legacy.orders")
            .unwrap();
        if orders["spec"]["ports"][0]["number"] == 9049 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the last change never arrived:\n{}",
            child.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let applies = server.counts().get(Verb::Apply);
    assert!(
        (1..50).contains(&applies),
        "{applies} writes for a burst of 50 changes"
    );

    child.terminate();
    let status = tokio::task::spawn_blocking(move || child.wait_timeout(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(status.map(|s| s.code()), Some(Some(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_run_while_the_api_server_stalls_a_pass() {
    let server = StandIn::start().await;
    let ws = workspace(&server, &services(8080, true), "");
    let mut child = run_until_synced(&server, &ws).await;
    // The API server stops answering; a change starts a pass that hangs on it.
    server.faults().pause();
    ws.write_services_atomically(&services(8181, true));
    tokio::time::sleep(Duration::from_millis(500)).await;

    child.terminate();
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait_timeout(Duration::from_secs(10));
        (status, child.stderr())
    })
    .await
    .unwrap();
    server.faults().resume();
    let (status, stderr) = status;
    assert_eq!(
        status.map(|s| s.code()),
        Some(Some(0)),
        "run did not stop within 10 s of SIGTERM while the API server stalled:\n{stderr}"
    );
}

fn service_entries(server: &StandIn) -> kube::Api<kube::api::DynamicObject> {
    let client = kube::Client::try_from(server.kube_config()).unwrap();
    kube::Api::namespaced_with(client, "mesh", &Resource::ServiceEntry.api_resource())
}

/// Waits until `condition` holds for the stand-in, or fails after `limit`.
async fn wait_for(limit: Duration, what: &str, child: &ChildGuard, condition: impl Fn() -> bool) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owned_object_deleted_or_edited_in_the_api_is_written_back_from_the_watch() {
    let server = StandIn::start().await;
    let ws = workspace(&server, &services(8080, true), "");
    let child = run_until_synced(&server, &ws).await;
    let api = service_entries(&server);

    // Someone deletes an object registry-sync owns: the watch reports it and the
    // writer creates it again, long before the 5-minute resync.
    api.delete("legacy.orders", &Default::default()).await.unwrap();
    wait_for(Duration::from_secs(2), "the deleted object back", &child, || {
        server
            .object(Resource::ServiceEntry, "mesh", "legacy.orders")
            .is_some()
    })
    .await;

    // Someone edits one by hand: the edit is undone.
    let edit =
        serde_json::json!({"spec": {"ports": [{"number": 1, "name": "http-edit", "protocol": "HTTP"}]}});
    api.patch(
        "legacy.payments",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&edit),
    )
    .await
    .unwrap();
    wait_for(Duration::from_secs(2), "the hand edit undone", &child, || {
        server
            .object(Resource::ServiceEntry, "mesh", "legacy.payments")
            .is_some_and(|o| o["spec"]["ports"][0]["number"] != 1)
    })
    .await;

    // Once repaired, the echo of the repair writes nothing more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.reset_counts();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.counts().writes(), 0, "{}", child.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_refused_for_good_is_quarantined_while_other_changes_flow() {
    let server = StandIn::start().await;
    let ws = workspace(&server, &services(8080, true), "");
    let child = run_until_synced(&server, &ws).await;
    // A webhook refuses every write of one object from now on.
    server
        .faults()
        .deny_admission("legacy.orders", "denied by policy");
    ws.write_services_atomically(&services(9090, true));
    wait_for(Duration::from_secs(10), "the quarantine logged", &child, || {
        child.stderr().contains("quarantined")
    })
    .await;
    // A later change of another object is not held up by the refused one.
    let mut text = services(9090, true);
    text.push_str(
        "  - name: billing\n    instances:\n      - address: 10.0.0.9\n        ports: {http: 7070}\n",
    );
    ws.write_services_atomically(&text);
    wait_for(Duration::from_secs(5), "billing created", &child, || {
        server
            .object(Resource::ServiceEntry, "mesh", "legacy.billing")
            .is_some()
    })
    .await;
    let orders = server
        .object(Resource::ServiceEntry, "mesh", "legacy.orders")
        .unwrap();
    assert_eq!(
        orders["spec"]["ports"][0]["number"], 8080,
        "the refused write never landed"
    );
    // Lifted: the quarantined object goes through on a later try (its backoff has
    // grown to a few seconds by now).
    server.faults().clear();
    wait_for(
        Duration::from_secs(30),
        "orders written after the webhook relents",
        &child,
        || {
            server
                .object(Resource::ServiceEntry, "mesh", "legacy.orders")
                .is_some_and(|o| o["spec"]["ports"][0]["number"] == 9090)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_follow_a_mapped_namespace_and_are_read_back_from_it() {
    let server = StandIn::start().await;
    let in_namespace = |namespace: &str| {
        format!(
            "services:
  - name: payments
    instances:
      - {{address: 10.0.1.1, ports: {{http: 8080}}, labels: {{k8s-namespace: {namespace}}}}}
"
        )
    };
    let ws = workspace(&server, &in_namespace("payments"), "");
    let config = std::fs::read_to_string(ws.config_path()).unwrap().replace(
        "    namespace: mesh\n",
        "    namespace: mesh\n    namespace_from: \"{meta:k8s-namespace}\"\n    allowed_namespaces: [payments, billing]\n",
    );
    ws.write_config(&config);

    let first = cmd(&ws, &["once"]).await;
    assert_eq!(first.code(), Some(0), "{first}");
    assert!(
        server
            .object(Resource::ServiceEntry, "payments", "legacy.payments")
            .is_some()
    );
    server.reset_counts();
    let second = cmd(&ws, &["once"]).await;
    assert_eq!(second.code(), Some(0), "{second}");
    assert_eq!(
        server.counts().writes(),
        0,
        "the mapped namespace is read back, so nothing is written again:\n{second}"
    );

    // The service moves: created in the new namespace, deleted from the old one.
    ws.write_services(&in_namespace("billing"));
    let moved = cmd(&ws, &["once"]).await;
    assert_eq!(moved.code(), Some(0), "{moved}");
    assert!(
        server
            .object(Resource::ServiceEntry, "billing", "legacy.payments")
            .is_some()
    );
    assert!(
        server
            .object(Resource::ServiceEntry, "payments", "legacy.payments")
            .is_none(),
        "the object left in the old namespace is deleted"
    );
}

/// Two instances of `orders`, each healthy or not.
fn orders_with_health(first: bool, second: bool) -> String {
    format!(
        "services:
  - name: orders
    instances:
      - {{address: 10.0.0.1, ports: {{http: 8080}}, healthy: {first}}}
      - {{address: 10.0.0.2, ports: {{http: 8080}}, healthy: {second}}}
"
    )
}

fn health_workspace(server: &StandIn, services_text: &str) -> Workspace {
    let ws = workspace(server, services_text, "");
    let config = std::fs::read_to_string(ws.config_path()).unwrap().replace(
        "    namespace: mesh\n",
        "    namespace: mesh\n    endpoints: workload-entry\n    health: status\n",
    );
    ws.write_config(&config);
    ws
}

/// Each WorkloadEntry's address and its `Healthy` condition.
fn health_of(server: &StandIn) -> Vec<(String, String)> {
    let mut health: Vec<(String, String)> = server
        .objects(Resource::WorkloadEntry)
        .iter()
        .map(|o| {
            let healthy = o["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Healthy"))
                .map_or("absent".to_string(), |c| {
                    c["status"].as_str().unwrap_or("").to_string()
                });
            (o["spec"]["address"].as_str().unwrap_or("").to_string(), healthy)
        })
        .collect();
    health.sort();
    health
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_flip_costs_one_status_patch_and_keeps_the_conditions_of_others() {
    let server = StandIn::start().await;
    let ws = health_workspace(&server, &orders_with_health(true, true));
    let first = cmd(&ws, &["once"]).await;
    assert_eq!(first.code(), Some(0), "{first}");
    assert_eq!(
        health_of(&server),
        [
            ("10.0.0.1".into(), "True".into()),
            ("10.0.0.2".into(), "True".into())
        ]
    );
    for entry in server.objects(Resource::WorkloadEntry) {
        assert_eq!(
            entry["metadata"]["annotations"]["proxy.istio.io/health-checks-enabled"],
            "true"
        );
    }

    // istiod (or anyone) keeps a condition of its own on the second entry.
    let name = server
        .objects(Resource::WorkloadEntry)
        .iter()
        .find(|o| o["spec"]["address"] == "10.0.0.2")
        .and_then(|o| o["metadata"]["name"].as_str().map(str::to_string))
        .unwrap();
    let client = kube::Client::try_from(server.kube_config()).unwrap();
    let entries: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(client, "mesh", &Resource::WorkloadEntry.api_resource());
    let current = entries.get_status(&name).await.unwrap();
    let mut conditions = current.data["status"]["conditions"].as_array().unwrap().clone();
    conditions.push(serde_json::json!({"type": "Reconciled", "status": "True", "reason": "istiod"}));
    entries
        .patch_status(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"status": {"conditions": conditions}})),
        )
        .await
        .unwrap();

    server.reset_counts();
    ws.write_services(&orders_with_health(true, false));
    let flipped = cmd(&ws, &["once"]).await;
    assert_eq!(flipped.code(), Some(0), "{flipped}");
    let counts = server.counts();
    assert_eq!(
        counts.writes_of(Resource::WorkloadEntry),
        0,
        "no entry is rewritten"
    );
    assert_eq!(counts.writes_of(Resource::ServiceEntry), 0);
    assert_eq!(
        counts.status_writes_of(Resource::WorkloadEntry),
        1,
        "one status patch"
    );
    assert_eq!(
        health_of(&server),
        [
            ("10.0.0.1".into(), "True".into()),
            ("10.0.0.2".into(), "False".into())
        ]
    );
    let kept = server.object(Resource::WorkloadEntry, "mesh", &name).unwrap();
    let types: Vec<&str> = kept["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(types, ["Healthy", "Reconciled"], "istiod's condition is kept");

    server.reset_counts();
    let again = cmd(&ws, &["once"]).await;
    assert_eq!(again.code(), Some(0), "{again}");
    assert_eq!(
        server.counts().writes(),
        0,
        "nothing changed, nothing written:\n{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_turning_unhealthy_at_once_is_held_back_in_status_too() {
    let server = StandIn::start().await;
    let five: String = std::iter::once("services:\n  - name: orders\n    instances:\n".to_string())
        .chain((1..=6).map(|n| format!("      - {{address: 10.0.0.{n}, ports: {{http: 8080}}}}\n")))
        .collect();
    let ws = health_workspace(&server, &five);
    assert_eq!(cmd(&ws, &["once"]).await.code(), Some(0));
    server.reset_counts();
    ws.write_services(&five.replace("8080}}", "8080}, healthy: false}"));
    let held = cmd(&ws, &["once"]).await;
    assert_eq!(held.code(), Some(3), "{held}");
    assert_eq!(
        server.counts().status_writes_of(Resource::WorkloadEntry),
        0,
        "{held}"
    );
    assert!(health_of(&server).iter().all(|(_, h)| h == "True"));
    let plan = cmd(&ws, &["plan"]).await;
    assert!(plan.stdout.contains("changes held back"), "{plan}");

    let confirmed = cmd(&ws, &["once", "--confirm-mass-delete"]).await;
    assert_eq!(confirmed.code(), Some(0), "{confirmed}");
    assert!(health_of(&server).iter().all(|(_, h)| h == "False"));
    assert_eq!(
        server.objects(Resource::WorkloadEntry).len(),
        6,
        "nothing deleted"
    );
}
