//! End-to-end: health kept in WorkloadEntry status (`health: status`) with the real
//! binary against the API server stand-in: a flip is one status patch, others'
//! conditions survive, a mass flip is held back, and a departed instance drains.

use crate::support;

use std::time::Duration;

use registry_sync_testing::kube::{Resource, StandIn};
use support::standin::*;
use support::*;

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

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, h)| (a.to_string(), h.to_string()))
        .collect()
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
    let six: String = std::iter::once("services:\n  - name: orders\n    instances:\n".to_string())
        .chain((1..=6).map(|n| format!("      - {{address: 10.0.0.{n}, ports: {{http: 8080}}}}\n")))
        .collect();
    let ws = health_workspace(&server, &six);
    assert_eq!(cmd(&ws, &["once"]).await.code(), Some(0));
    server.reset_counts();
    ws.write_services(&six.replace("8080}}", "8080}, healthy: false}"));
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

fn one_of_orders() -> String {
    "services:
  - name: orders
    instances:
      - {address: 10.0.0.1, ports: {http: 8080}}
"
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departed_instance_drains_unhealthy_and_goes_after_the_delay_unless_it_returns() {
    let server = StandIn::start().await;
    let ws = health_workspace(&server, &orders_with_health(true, true));
    let config = std::fs::read_to_string(ws.config_path()).unwrap().replace(
        "    health: status\n",
        "    health: status\n    drain_delay: 2s\n",
    );
    ws.write_config(&config);
    let child = spawn_run(&ws).await;
    let both_healthy = || health_of(&server) == pairs(&[("10.0.0.1", "True"), ("10.0.0.2", "True")]);
    // A new entry is healthy before it is written whole (with its checks on).
    let checks_on = || {
        server
            .objects(Resource::WorkloadEntry)
            .iter()
            .all(|o| o["metadata"]["annotations"]["proxy.istio.io/health-checks-enabled"] == "true")
    };
    wait_for(
        Duration::from_secs(15),
        "both entries healthy, with their checks on",
        &child,
        || both_healthy() && checks_on(),
    )
    .await;

    // The second instance deregisters: its entry stays, unhealthy.
    server.reset_counts();
    ws.write_services_atomically(&one_of_orders());
    let draining = || health_of(&server) == pairs(&[("10.0.0.1", "True"), ("10.0.0.2", "False")]);
    wait_for(
        Duration::from_secs(10),
        "the departed entry marked unhealthy",
        &child,
        draining,
    )
    .await;

    // It comes back within the delay: the same entry is healthy again, nothing was
    // deleted or created, only two status patches were written.
    ws.write_services_atomically(&orders_with_health(true, true));
    wait_for(
        Duration::from_secs(10),
        "the returned entry healthy",
        &child,
        both_healthy,
    )
    .await;
    let counts = server.counts();
    assert_eq!(
        counts.writes_of(Resource::WorkloadEntry),
        0,
        "no create, rewrite or delete: {counts:?}\n{}",
        child.stderr()
    );
    assert_eq!(counts.status_writes_of(Resource::WorkloadEntry), 2);

    // It leaves for good: unhealthy first, deleted once the delay is over.
    ws.write_services_atomically(&one_of_orders());
    wait_for(
        Duration::from_secs(10),
        "the departed entry marked unhealthy",
        &child,
        draining,
    )
    .await;
    wait_for(
        Duration::from_secs(15),
        "the drained entry deleted",
        &child,
        || health_of(&server) == [("10.0.0.1".into(), "True".into())],
    )
    .await;
    child.stop_cleanly();
}

/// Every stored state of a WorkloadEntry after `after` in which istiod would take a
/// healthy instance for unhealthy: health checks on, and no `Healthy=True` condition.
fn unhealthy_looking_states(server: &StandIn, after: u64) -> Vec<serde_json::Value> {
    server
        .states_after(Resource::WorkloadEntry, after)
        .into_iter()
        .filter(|o| o["metadata"]["annotations"]["proxy.istio.io/health-checks-enabled"] == "true")
        .filter(|o| {
            !o["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Healthy" && c["status"] == "True"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_instance_never_looks_unhealthy_to_istiod_when_health_checks_turn_on() {
    let server = StandIn::start().await;
    // Created with health in status: each entry is made, given its condition, and only
    // then has its checks turned on.
    let ws = health_workspace(&server, &orders_with_health(true, true));
    let start = server.resource_version();
    let first = cmd(&ws, &["once"]).await;
    assert_eq!(first.code(), Some(0), "{first}");
    assert_eq!(health_of(&server).len(), 2);
    assert_eq!(
        unhealthy_looking_states(&server, start),
        Vec::<serde_json::Value>::new()
    );
    assert_eq!(
        cmd(&ws, &["plan"]).await.code(),
        Some(0),
        "written whole in one once"
    );

    // Entries written before `health: status` was turned on get their condition before
    // the update that turns their checks on.
    let server = StandIn::start().await;
    let ws = workspace(&server, &orders_with_health(true, true), "");
    let config = std::fs::read_to_string(ws.config_path()).unwrap().replace(
        "    namespace: mesh\n",
        "    namespace: mesh\n    endpoints: workload-entry\n",
    );
    ws.write_config(&config);
    assert_eq!(cmd(&ws, &["once"]).await.code(), Some(0));
    let before = server.resource_version();
    let ws_health = health_workspace(&server, &orders_with_health(true, true));
    std::fs::copy(ws_health.config_path(), ws.config_path()).unwrap();
    let turned_on = cmd(&ws, &["once"]).await;
    assert_eq!(turned_on.code(), Some(0), "{turned_on}");
    assert_eq!(
        health_of(&server),
        [
            ("10.0.0.1".into(), "True".into()),
            ("10.0.0.2".into(), "True".into())
        ]
    );
    assert_eq!(
        unhealthy_looking_states(&server, before),
        Vec::<serde_json::Value>::new()
    );
}
