//! End-to-end: the real binary with the Kubernetes sink against the API server
//! stand-in (test support; no kube-apiserver can be installed here), reached through a
//! kubeconfig file exactly as a cluster would be.

use crate::support;

use std::time::Duration;

use registry_sync_testing::kube::{Resource, StandIn, Verb};
use support::standin::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_creates_the_objects_and_a_second_once_writes_nothing() {
    let server = StandIn::start().await;
    let ws = workspace(&server, &services(8080, true), "");
    let first = cmd(&ws, &["once"]).await;
    assert_eq!(first.code(), Some(0), "{first}");
    assert_eq!(
        object_names(&server, Resource::ServiceEntry),
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
    assert_eq!(object_names(&server, Resource::ServiceEntry).len(), 3);
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
    assert!(object_names(&server, Resource::ServiceEntry).is_empty());
}

/// Starts `run` in the workspace and waits until its three ServiceEntries are written.
async fn run_until_synced(server: &StandIn, ws: &Workspace) -> ChildGuard {
    let child = spawn_run(ws).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while object_names(server, Resource::ServiceEntry).len() < 3 {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_erosion_stays_held_for_the_next_process_through_the_guards_lease() {
    let server = StandIn::start().await;
    let ws = workspace(&server, &services_of(20), "");
    assert_eq!(cmd(&ws, &["once"]).await.code(), Some(0));
    ws.write_services(&services_of(11));
    assert_eq!(cmd(&ws, &["once"]).await.code(), Some(0), "20 → 11 goes ahead");
    ws.write_services(&services_of(8));
    for attempt in 0..2 {
        let held = cmd(&ws, &["once"]).await;
        assert_eq!(held.code(), Some(3), "attempt {attempt}\n{held}");
        assert!(held.stderr.contains("leave 8 of its 20 objects"), "{held}");
        assert_eq!(object_names(&server, Resource::ServiceEntry).len(), 11);
    }
    let lease = server
        .object(Resource::Lease, "default", "registry-sync-guard-e2e")
        .expect("the guard keeps its memory in a Lease of the installation");
    let memory = lease["metadata"]["annotations"]["registry-sync.io/guard-memory"]
        .as_str()
        .unwrap();
    assert!(memory.contains("legacy\theld\t"), "{memory}");
    assert_eq!(lease["metadata"]["labels"]["registry-sync.io/instance"], "e2e");

    let confirmed = cmd(&ws, &["once", "--confirm-mass-delete"]).await;
    assert_eq!(confirmed.code(), Some(0), "{confirmed}");
    assert_eq!(object_names(&server, Resource::ServiceEntry).len(), 8);
    let cleared = server
        .object(Resource::Lease, "default", "registry-sync-guard-e2e")
        .unwrap();
    assert_eq!(
        cleared["metadata"]["annotations"]["registry-sync.io/guard-memory"],
        ""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_left_in_a_namespace_the_config_no_longer_names_are_found_and_deleted() {
    let server = StandIn::start().await;
    let ws = workspace(&server, &services(8080, true), "");
    assert_eq!(cmd(&ws, &["once"]).await.code(), Some(0));
    let in_mesh = |server: &StandIn| {
        server
            .objects(Resource::ServiceEntry)
            .iter()
            .filter(|o| o["metadata"]["namespace"] == "mesh")
            .count()
    };
    assert_eq!(in_mesh(&server), 3);
    let moved = std::fs::read_to_string(ws.config_path())
        .unwrap()
        .replace("namespace: mesh", "namespace: team-a");
    ws.write_config(&moved);

    let plan = cmd(&ws, &["plan"]).await;
    assert_eq!(plan.code(), Some(2), "{plan}");
    assert!(
        plan.stdout.contains("+ ServiceEntry team-a/legacy.orders")
            && plan.stdout.contains("= waits ServiceEntry mesh/legacy.orders"),
        "the old namespace is still looked at:\n{plan}"
    );
    let once = cmd(&ws, &["once"]).await;
    assert_eq!(once.code(), Some(0), "{once}");
    assert_eq!(in_mesh(&server), 0, "nothing is left behind in the old namespace");
    assert_eq!(object_names(&server, Resource::ServiceEntry).len(), 3);
    let remembered = server
        .object(Resource::Lease, "default", "registry-sync-guard-e2e")
        .unwrap();
    assert_eq!(
        remembered["metadata"]["annotations"]["registry-sync.io/namespaces"],
        "team-a"
    );
    assert_eq!(cmd(&ws, &["plan"]).await.code(), Some(0));
}
