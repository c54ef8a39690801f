//! End-to-end: the real binary's Kubernetes sink against the real kube-apiserver
//! (built from `k8s.io/kubernetes` and started by `scripts/test`, RBAC on, the Istio
//! CRDs with their CEL rules installed). Writes are counted from the server's audit
//! log. Faults a real server cannot be made to show on cue (429, 5xx, stalls,
//! webhooks) stay with the stand-in's tests in `kubernetes.rs`.

mod support;

use std::time::Duration;

use registry_sync_testing::kube::Resource;
use support::apiserver::*;
use support::*;

/// The shared server, or return: the test is skipped outside CI without one.
macro_rules! cluster {
    ($tag:expr) => {
        match Cluster::new($tag).await {
            Some(cluster) => cluster,
            None => return,
        }
    };
}

/// What a late audit event needs to reach the log before it is read.
const AUDIT_SETTLE: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_creates_what_the_real_api_server_accepts_and_a_second_once_writes_nothing() {
    let c = cluster!("once");
    let ws = c.workspace(&services(8080, true), "", "");
    let mark = c.server.audit_mark();
    let first = cmd(&ws, &["once"]).await;
    assert_eq!(first.code(), Some(0), "{first}");
    assert_eq!(
        c.names(Resource::ServiceEntry).await,
        ["legacy.orders", "legacy.payments", "legacy.reports"]
    );
    tokio::time::sleep(AUDIT_SETTLE).await;
    let applies: Vec<_> = c
        .writes_since(mark)
        .into_iter()
        .filter(|r| r.resource == "serviceentries")
        .collect();
    assert_eq!(
        applies
            .iter()
            .map(|r| (r.verb.as_str(), r.code))
            .collect::<Vec<_>>(),
        [("patch", 201); 3],
        "one apply each, created:\n{}",
        describe(&applies)
    );
    let orders = c.get(Resource::ServiceEntry, "legacy.orders").await.unwrap();
    let labels = orders.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "registry-sync");
    assert_eq!(labels["registry-sync.io/instance"], c.instance);
    let managers: Vec<(String, String)> = orders
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.manager.unwrap_or_default(), m.operation.unwrap_or_default()))
        .collect();
    assert_eq!(
        managers,
        [("registry-sync".to_string(), "Apply".to_string())],
        "written by server-side apply under one field manager"
    );

    tokio::time::sleep(AUDIT_SETTLE).await;
    let mark = c.server.audit_mark();
    let second = cmd(&ws, &["once"]).await;
    assert_eq!(second.code(), Some(0), "{second}");
    tokio::time::sleep(AUDIT_SETTLE).await;
    let writes = c.writes_since(mark);
    assert!(
        writes.is_empty(),
        "a restart with nothing changed writes nothing, but the server saw:\n{}",
        describe(&writes)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_deleted_or_edited_with_kubectl_are_written_back_and_the_repair_is_not_repeated() {
    let c = cluster!("drift");
    let ws = c.workspace(&services(8080, true), "", "");
    let child = ws.spawn_run();
    c.wait_for(
        Duration::from_secs(20),
        "the first sync",
        Some(&child),
        || async { c.names(Resource::ServiceEntry).await.len() == 3 },
    )
    .await;

    c.server
        .kubectl(&["delete", "serviceentry", "legacy.orders", "-n", &c.ns]);
    c.wait_for(
        Duration::from_secs(5),
        "the deleted object back",
        Some(&child),
        || async { c.get(Resource::ServiceEntry, "legacy.orders").await.is_some() },
    )
    .await;

    // What `kubectl edit` sends: an update of the whole object with one port changed.
    let mut edited = c.get(Resource::ServiceEntry, "legacy.payments").await.unwrap();
    edited.data["spec"]["ports"][0]["number"] = serde_json::json!(1);
    c.api(Resource::ServiceEntry)
        .replace("legacy.payments", &Default::default(), &edited)
        .await
        .unwrap();
    c.wait_for(
        Duration::from_secs(5),
        "the hand edit undone",
        Some(&child),
        || async {
            c.get(Resource::ServiceEntry, "legacy.payments")
                .await
                .is_some_and(|o| o.data["spec"]["ports"][0]["number"] != 1)
        },
    )
    .await;

    // Once repaired, the echo of the repair writes nothing more.
    tokio::time::sleep(AUDIT_SETTLE).await;
    let mark = c.server.audit_mark();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = c.writes_since(mark);
    assert!(writes.is_empty(), "{}\n{}", describe(&writes), child.stderr());
    child.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_object_with_our_name_is_never_touched_and_the_rest_is_written() {
    let c = cluster!("conflict");
    let users = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: legacy.payments, namespace: {ns}}}
spec:
  hosts: [payments.example.com]
  ports: [{{number: 443, name: https, protocol: HTTPS}}]
  resolution: DNS
",
        ns = c.ns
    );
    let path = std::env::temp_dir().join(format!("{}-users.yaml", c.ns));
    std::fs::write(&path, users).unwrap();
    c.server.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    let before = c.get(Resource::ServiceEntry, "legacy.payments").await.unwrap();

    let ws = c.workspace(&services(8080, true), "", "");
    let mark = c.server.audit_mark();
    let once = cmd(&ws, &["once"]).await;
    assert_eq!(once.code(), Some(0), "{once}");
    assert!(
        lines_with(&once.stderr, &["WARN", "legacy.payments", "conflict"]).len() == 1,
        "the conflict is warned about:\n{once}"
    );
    let after = c.get(Resource::ServiceEntry, "legacy.payments").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the user's object was written"
    );
    assert_eq!(
        c.names(Resource::ServiceEntry).await,
        ["legacy.orders", "legacy.payments", "legacy.reports"]
    );
    tokio::time::sleep(AUDIT_SETTLE).await;
    let on_it: Vec<_> = c
        .writes_since(mark)
        .into_iter()
        .filter(|r| r.name == "legacy.payments")
        .collect();
    assert!(on_it.is_empty(), "{}", describe(&on_it));

    // Not ours to delete either, when the registry drops the service.
    ws.write_services(&services(8080, false));
    let dropped = cmd(&ws, &["once"]).await;
    assert_eq!(dropped.code(), Some(0), "{dropped}");
    assert!(c.get(Resource::ServiceEntry, "legacy.payments").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_erosion_stays_held_across_processes_through_a_real_lease() {
    let c = cluster!("guard");
    let ws = c.workspace(&services_of(20), "", "");
    assert_eq!(cmd(&ws, &["once"]).await.code(), Some(0));
    ws.write_services(&services_of(11));
    assert_eq!(cmd(&ws, &["once"]).await.code(), Some(0), "20 → 11 goes ahead");
    ws.write_services(&services_of(8));
    for attempt in 0..2 {
        let held = cmd(&ws, &["once"]).await;
        assert_eq!(held.code(), Some(3), "attempt {attempt}\n{held}");
        assert!(held.stderr.contains("leave 8 of its 20 objects"), "{held}");
        assert_eq!(c.names(Resource::ServiceEntry).await.len(), 11);
    }
    let leases: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(c.client.clone(), "default", &Resource::Lease.api_resource());
    let lease = leases
        .get(&format!("registry-sync-guard-{}", c.instance))
        .await
        .expect("the guard keeps its memory in a Lease of the installation");
    let annotations = lease.metadata.annotations.unwrap_or_default();
    assert!(
        annotations["registry-sync.io/guard-memory"].contains("legacy\theld\t"),
        "{annotations:?}"
    );

    let confirmed = cmd(&ws, &["once", "--confirm-mass-delete"]).await;
    assert_eq!(confirmed.code(), Some(0), "{confirmed}");
    assert_eq!(c.names(Resource::ServiceEntry).await.len(), 8);
}
