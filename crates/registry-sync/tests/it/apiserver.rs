//! End-to-end: the real binary's Kubernetes sink against the real kube-apiserver
//! (built from `k8s.io/kubernetes` and started by `scripts/test`, RBAC on, the Istio
//! CRDs with their CEL rules installed). Writes are counted from the server's audit
//! log. Faults a real server cannot be made to show on cue (429, 5xx, stalls,
//! webhooks) stay with the stand-in's tests in `kubernetes.rs`.

use crate::support;

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

/// A registry estate of `count` services in the shapes users' registries hold: IPv4
/// and IPv6 instances with weights, localities, networks and service accounts; host
/// names; unhealthy and draining instances; many ports of every protocol prefix;
/// metadata that is no valid label (too long, spaces, a bad key) beside valid labels;
/// names with capitals, underscores and dots; canaries the selection leaves out; and
/// instances asking for a namespace, allowed or not.
fn estate(ns: &str, count: usize) -> String {
    let mut text = String::from("services:\n");
    let long = "v".repeat(100);
    for i in 0..count {
        let (a, b) = (i / 250, i % 250 + 1);
        let service = match i % 7 {
            0 => format!(
                "  - name: svc-{i}
    labels: {{team: t{a}, tier: backend}}
    instances:
      - {{address: 10.{a}.{b}.1, ports: {{http: 8080, http-admin: 9090}}, weight: 3, locality: eu-west-1/eu-west-1a/rack1, network: vm-net, service_account: sa-{i}, labels: {{version: v1, k8s-namespace: {ns}-payments}}}}
      - {{address: 10.{a}.{b}.2, ports: {{http: 8080, http-admin: 9090}}, weight: 1, locality: eu-west-1/eu-west-1b, labels: {{version: v2, k8s-namespace: {ns}-payments}}}}
      - {{address: 10.{a}.{b}.3, ports: {{http: 8080, http-admin: 9090}}, labels: {{k8s-namespace: kube-system}}}}
"
            ),
            1 => format!(
                "  - name: Grpc_Service.v{i}
    instances:
      - {{address: \"2001:db8::{a:x}:{b:x}:1\", ports: {{grpc: 9000, http2-web: 8443}}}}
      - {{address: \"2001:db8::{a:x}:{b:x}:2\", ports: {{grpc: 9000, http2-web: 8443}}, healthy: false}}
"
            ),
            2 => format!(
                "  - name: external-{i}
    instances:
      - {{address: host-{i}.example.com, ports: {{tcp: 5432}}}}
      - {{address: replica-{i}.example.com, ports: {{tcp: 5432}}, weight: 2}}
"
            ),
            3 => format!(
                "  - name: data-{i}
    instances:
      - {{address: 10.{a}.{b}.10, ports: {{mongo: 27017, redis-cache: 6379, mysql: 3306}}, labels: {{zone: z1, note: \"has spaces\", long: {long}, \"bad key!\": x, \"example.com/owner\": team-{a}}}}}
      - {{address: 10.{a}.{b}.11, ports: {{mongo: 27017, redis-cache: 6379, mysql: 3306}}, labels: {{draining: \"yes\"}}}}
      - {{address: 10.{a}.{b}.12, ports: {{mongo: 27017, redis-cache: 6379, mysql: 3306}}, healthy: false}}
"
            ),
            4 => format!(
                "  - name: svc-{i}-canary
    instances:
      - {{address: 10.{a}.{b}.20, ports: {{http: 8080}}}}
"
            ),
            5 => format!(
                "  - name: edge-{i}
    instances:
      - {{address: 10.{a}.{b}.30, ports: {{http: 80, https: 443, tls: 8443, grpc-web: 9001, http2: 8081, tcp-raw: 7000, udp-dns: 53, mongo-shard: 27018, tcp-metrics: 9102, http-health: 8086}}}}
"
            ),
            _ => format!(
                "  - name: ns-{i}
    namespace: shop
    instances:
      - {{address: 10.{a}.{b}.40, ports: {{http: 8080}}, labels: {{k8s-namespace: {ns}-payments}}}}
"
            ),
        };
        text.push_str(&service);
    }
    // The services the overrides name.
    text.push_str(&format!(
        "  - name: payments
    instances:
      - {{address: 10.200.1.1, ports: {{http: 8080}}, labels: {{k8s-namespace: {ns}-payments, version: v1}}}}
  - name: reports
    instances:
      - {{address: 10.200.4.1, ports: {{tcp: 9000}}}}
"
    ));
    text
}

/// The second registry: services as WorkloadEntries with health in their status.
fn shop(count: usize) -> String {
    let mut text = String::from("services:\n");
    for i in 0..count {
        text.push_str(&format!(
            "  - name: shop-{i}
    instances:
      - {{address: 10.210.{a}.{b}, ports: {{tcp: 5432}}, locality: eu-west-1/eu-west-1a, labels: {{version: v1}}}}
      - {{address: 10.211.{a}.{b}, ports: {{tcp: 5432}}, healthy: false}}
",
            a = i / 250,
            b = i % 250 + 1
        ));
    }
    text
}

/// Every object registry-sync writes for an estate that exercises every mapping rule
/// and control is accepted by the real CRDs (their CEL rules included): the cluster
/// ends up holding exactly what `render` prints, and nothing failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mapping_rule_and_control_at_scale_is_accepted_by_the_real_crds() {
    let c = cluster!("estate");
    for suffix in ["payments", "shop"] {
        c.server.create_namespace(&format!("{}-{suffix}", c.ns)).await;
    }
    let registry_extra = format!(
        "    provenance: true
    select:
      services:
        exclude: [\"*-canary\"]
      instances:
        exclude_metadata: {{draining: \"yes\"}}
    namespace_from: \"{{meta:k8s-namespace}}\"
    allowed_namespaces: [{ns}-payments]
  - name: shop
    kind: file
    path: shop.yaml
    namespace: {ns}-shop
    vip_range: 240.241.0.0/16
    endpoints: workload-entry
    health: status
",
        ns = c.ns
    );
    let extra = "    qps: 0
overrides:
  - name: payments-grpc
    service: payments
    ports:
      - {port: 8080, protocol: GRPC, name: grpc-api, target_port: 18080}
    hosts: [payments.internal]
    export_to: [\".\"]
    labels: {team: payments}
    use_waypoint: payments-wp
  - name: reports-external
    service: reports
    location: mesh-external
    resolution: dns
    endpoints: workload-entry
";
    let ws = c.workspace(&estate(&c.ns, 1400), &registry_extra, extra);
    ws.write("shop.yaml", &shop(300));

    let render = cmd(&ws, &["render"]).await;
    assert_eq!(render.code(), Some(0), "{render}");
    let mut expected: Vec<String> = parse_objects(&render.stdout)
        .iter()
        .map(|o| format!("{} {}/{}", o.kind, o.metadata.namespace, o.metadata.name))
        .collect();
    expected.sort();
    assert!(expected.len() > 2000, "{} objects", expected.len());

    let once = cmd(&ws, &["once"]).await;
    assert_eq!(once.code(), Some(0), "{once}");
    assert!(
        log_counts(&once.stderr, "failed").iter().all(|n| *n == 0),
        "the API server refused objects:\n{}",
        lines_with(&once.stderr, &["WARN"]).join("\n")
    );
    let mut held = Vec::new();
    for resource in [Resource::ServiceEntry, Resource::WorkloadEntry] {
        let all: kube::Api<kube::api::DynamicObject> =
            kube::Api::all_with(c.client.clone(), &resource.api_resource());
        for object in all.list(&Default::default()).await.unwrap().items {
            let namespace = object.metadata.namespace.clone().unwrap_or_default();
            if namespace.starts_with(&c.ns) {
                held.push(format!(
                    "{} {namespace}/{}",
                    object.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default(),
                    object.metadata.name.clone().unwrap_or_default()
                ));
            }
        }
    }
    held.sort();
    assert_eq!(held.len(), expected.len());
    assert_eq!(held, expected);
}

/// The shipped RBAC, from the plain manifests and from the Helm chart, each applied as
/// it is; registry-sync runs with the config it ships under its service account's token,
/// and every request it makes is allowed. Both name fixed namespaces (`registry-sync`,
/// `mesh-external`), so this is the one test that uses them, one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_rbac_allows_every_request_of_run_with_leader_election_and_health_status() {
    let Some(server) = registry_sync_testing::servers::KubeApiServer::shared() else {
        return;
    };
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    under_shipped_rbac(
        &server,
        "the manifests",
        &repo.join("deploy/manifests/registry-sync.yaml"),
    )
    .await;
    let chart = repo.join("deploy/helm/registry-sync");
    let Some(rendered) = registry_sync_testing::servers::helm(&[
        "template",
        "registry-sync",
        chart.to_str().unwrap(),
        "--namespace",
        "registry-sync",
    ]) else {
        return;
    };
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chart.yaml");
    std::fs::write(&path, &rendered.stdout).unwrap();
    under_shipped_rbac(&server, "the Helm chart", &path).await;
}

/// Applies `objects` (what a user installs), runs registry-sync as its service account
/// with the config of its ConfigMap, and fails on any request the API server refused.
async fn under_shipped_rbac(
    server: &registry_sync_testing::servers::KubeApiServer,
    what: &str,
    objects: &std::path::Path,
) {
    // What an earlier installation left: its RBAC, its Lease, its objects.
    for namespace in ["registry-sync", "mesh-external"] {
        server.create_namespace(namespace).await;
        server.kubectl(&[
            "delete",
            "deployments,roles,rolebindings,leases,workloadentries,serviceentries",
            "--all",
            "-n",
            namespace,
            "--ignore-not-found",
        ]);
    }
    server.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        objects.to_str().unwrap(),
    ]);
    let client = server.admin().await;
    let map: serde_json::Value = serde_json::from_str(&server.kubectl(&[
        "get",
        "configmap",
        "registry-sync",
        "-n",
        "registry-sync",
        "-o",
        "json",
    ]))
    .unwrap();
    // The shipped config, reached through a kubeconfig instead of the pod's own
    // service-account mount, its admin ports on free ones, and WorkloadEntries with
    // health in their status so those verbs are exercised too.
    let mut config: serde_json::Value =
        serde_saphyr::from_str(map["data"]["sync.yaml"].as_str().unwrap()).unwrap();
    config["sinks"]["kubernetes"]["kubeconfig"] =
        server.service_account_kubeconfig().display().to_string().into();
    config["admin"] = serde_json::json!({"listen": "127.0.0.1:0", "status_listen": "127.0.0.1:0"});
    assert_eq!(
        config["registries"][0]["namespace"], "mesh-external",
        "{what}: {config}"
    );
    let registry = &mut config["registries"][0];
    registry["endpoints"] = "workload-entry".into();
    registry["health"] = "status".into();
    let ws = Workspace::new();
    ws.write_config(&serde_json::to_string_pretty(&config).unwrap());
    let services = "services:
  - name: orders
    namespace: shop
    instances:
      - {address: 10.1.0.1, ports: {http: 8080}}
      - {address: 10.1.0.2, ports: {http: 8080}}
";
    ws.write_services(services);
    let user = "system:serviceaccount:registry-sync:registry-sync";
    let mark = server.audit_mark();
    let child = ws.spawn_run_with_env(&[
        ("POD_NAMESPACE", "registry-sync"),
        ("POD_NAME", "registry-sync-a"),
    ]);

    let entries: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        client.clone(),
        "mesh-external",
        &Resource::WorkloadEntry.api_resource(),
    );
    let healthy = |entry: &kube::api::DynamicObject| {
        entry.data["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Healthy"))
            .map(|c| c["status"].as_str().unwrap_or_default().to_string())
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let list = entries.list(&Default::default()).await.unwrap().items;
        if list.len() == 2 && list.iter().all(|e| healthy(e).as_deref() == Some("True")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: never synced:\n{}",
            child.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A health flip (a status patch), then the service leaving (deletes).
    ws.write_services_atomically(&services.replacen("8080}}", "8080}, healthy: false}", 1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !entries
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|e| healthy(e).as_deref() == Some("False"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: no status patch:\n{}",
            child.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.stop_cleanly();
    ws.write_services_atomically("services: []\n");
    let confirmed = std::process::Command::new(BIN)
        .args(["once", "--confirm-mass-delete", "--config"])
        .arg(ws.config_path())
        .current_dir(ws.path())
        .env("POD_NAMESPACE", "registry-sync")
        .output()
        .unwrap();
    let confirmed_err = String::from_utf8_lossy(&confirmed.stderr);
    assert_eq!(confirmed.status.code(), Some(0), "{what}: {confirmed_err}");
    assert!(entries.list(&Default::default()).await.unwrap().items.is_empty());

    tokio::time::sleep(AUDIT_SETTLE).await;
    let requests = server.requests_since(mark, |r| r.user == user);
    assert!(
        requests
            .iter()
            .any(|r| r.resource == "leases" && r.verb == "update"),
        "{what}: the lease was renewed under the service account:\n{}",
        describe(&requests)
    );
    assert!(
        requests
            .iter()
            .any(|r| r.subresource == "status" && r.verb == "patch")
    );
    assert!(requests.iter().any(|r| r.verb == "delete"));
    let refused: Vec<_> = requests.into_iter().filter(|r| r.code == 403).collect();
    assert!(
        refused.is_empty(),
        "{what}: the shipped RBAC lacks what these requests need:\n{}",
        describe(&refused)
    );
}

/// Two replicas against a real Lease: one writes, the other waits; when the leader is
/// killed (no chance to release the Lease), the standby takes over once the lease
/// expires and syncs the change made meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_through_a_real_lease_when_the_leader_is_killed() {
    let c = cluster!("leader");
    let ws = c.workspace(&services(8080, true), "", "");
    let config = std::fs::read_to_string(ws.config_path()).unwrap().replace(
        "    leader_election: {enabled: false}\n",
        &format!(
            "    leader_election: {{lease: registry-sync, namespace: {}, lease_duration_seconds: 4}}\n",
            c.ns
        ),
    );
    ws.write_config(&config);
    let mut first = Some(ws.spawn_run_with_env(&[("POD_NAME", "replica-a")]));
    let mut second = Some(ws.spawn_run_with_env(&[("POD_NAME", "replica-b")]));
    c.wait_for(
        Duration::from_secs(30),
        "the first sync",
        first.as_ref(),
        || async { c.names(Resource::ServiceEntry).await.len() == 3 },
    )
    .await;
    let leases: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(c.client.clone(), &c.ns, &Resource::Lease.api_resource());
    let holder = |lease: kube::api::DynamicObject| {
        lease.data["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let leader = holder(leases.get("registry-sync").await.unwrap());
    let (leader_child, standby) = match leader.as_str() {
        "replica-a" => (first.take().unwrap(), second.take().unwrap()),
        "replica-b" => (second.take().unwrap(), first.take().unwrap()),
        other => panic!("the lease is held by {other:?}"),
    };
    // The standby writes nothing while the leader holds the lease.
    assert!(!standby.stderr().contains("applied"), "{}", standby.stderr());

    let _ = std::process::Command::new("kill")
        .args(["-KILL", &leader_child.pid().to_string()])
        .status();
    drop(leader_child);
    ws.write_services_atomically(&services(9090, true));
    c.wait_for(
        Duration::from_secs(30),
        "the standby syncs the change",
        Some(&standby),
        || async {
            c.get(Resource::ServiceEntry, "legacy.orders")
                .await
                .is_some_and(|o| o.data["spec"]["ports"][0]["number"] == 9090)
        },
    )
    .await;
    let now = holder(leases.get("registry-sync").await.unwrap());
    assert_ne!(now, leader, "the standby holds the lease now");
    standby.stop_cleanly();
}

/// A private API server restarted under a running registry-sync: the server answers a
/// watch resumed from before the restart with `410 Gone` (checked here with a bare
/// watch), and registry-sync lists again and carries on: a change made meanwhile is
/// written, and drift after the restart is repaired from the watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_api_server_restart_the_expired_watch_is_listed_again_and_sync_goes_on() {
    let Some(mut private) =
        tokio::task::block_in_place(registry_sync_testing::servers::TestKubeApiServer::start)
    else {
        return;
    };
    private.kubectl(&["create", "namespace", "mesh"]);
    let ws = workspace_for(
        &private.kubeconfig(),
        "restart",
        "mesh",
        "sinks:\n  kubernetes:\n    kubeconfig: KUBECONFIG\n    leader_election: {enabled: false}\n",
    );
    ws.write_services(&services(8080, true));
    let child = ws.spawn_run();
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        private.admin().await,
        "mesh",
        &Resource::ServiceEntry.api_resource(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while api.list(&Default::default()).await.map_or(0, |l| l.items.len()) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never synced:\n{}",
            child.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = api
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();

    tokio::task::block_in_place(|| private.stop());
    ws.write_services_atomically(&services(9090, true));
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| private.resume());
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        private.admin().await,
        "mesh",
        &Resource::ServiceEntry.api_resource(),
    );

    // What a watch resumed from before the restart gets from the real server.
    use futures::StreamExt;
    let mut resumed = api.watch(&Default::default(), &before).await.unwrap().boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), resumed.next()).await;
    let gone = match &first {
        Ok(Some(Ok(kube::api::WatchEvent::Error(e)))) => e.code == 410,
        Ok(Some(Err(kube::Error::Api(e)))) => e.code == 410,
        _ => false,
    };
    assert!(gone, "a watch from before the restart: {first:?}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let orders = api.get_opt("legacy.orders").await.ok().flatten();
        if orders.is_some_and(|o| o.data["spec"]["ports"][0]["number"] == 9090) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change made during the restart never landed:\n{}",
            child.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    private.kubectl(&["delete", "serviceentry", "legacy.payments", "-n", "mesh"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while api.get_opt("legacy.payments").await.ok().flatten().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "drift after the restart was not repaired:\n{}",
            child.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.stop_cleanly();
}
