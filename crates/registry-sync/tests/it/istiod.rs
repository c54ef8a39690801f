//! End-to-end through the real istiod (`pilot-discovery`, built from `istio.io/istio` by
//! `scripts/test`): registry → registry-sync → the real kube-apiserver → istiod → what a
//! sidecar proxy is sent over xDS (its clusters and their endpoints).

use crate::support;

use std::time::Duration;

use registry_sync_mcp::testing::proxy::{Proxy, Seen};
use registry_sync_testing::kube::Resource;
use registry_sync_testing::servers::TestIstiod;
use support::apiserver::*;

/// Whether Envoy takes an endpoint as healthy: istiod sends `UNKNOWN` (0) for an
/// endpoint with no health of its own, and Envoy treats it as healthy, as `HEALTHY` (1).
fn served_healthy(seen: &Seen) -> bool {
    matches!(seen.health, 0 | 1)
}

/// Fails when istiod's log says anything against an object of the namespace `ns` (a
/// refusal, a validation error, a conflict, a dropped config): istiod drops what it
/// does not accept without telling the writer, so its log is where that shows.
fn assert_istiod_took_everything(istiod: &TestIstiod, ns: &str) {
    let log = istiod.log();
    let complaints: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(ns))
        // About the test's own proxy, which has no pod behind it.
        .filter(|line| !line.contains("failed to get proxy service targets"))
        .filter(|line| {
            let lower = line.to_lowercase();
            ["error", "warn", "invalid", "reject", "fail", "conflict", "drop"]
                .iter()
                .any(|word| lower.contains(word))
        })
        .collect();
    assert!(
        complaints.is_empty(),
        "istiod complained about our objects:\n{}",
        complaints.join("\n")
    );
}

/// The test's corner of the shared API server, with the namespace istiod runs in;
/// `None` when the test is skipped (no server outside CI).
async fn istio_cluster(tag: &str) -> Option<Cluster> {
    let c = Cluster::new(tag).await?;
    c.server.create_namespace("istio-system").await;
    Some(c)
}

/// istiod reading the test's API server with `mesh` as its mesh config, and a sidecar
/// of the test's namespace connected to it; `None` when the test is skipped (no istiod
/// outside CI).
async fn istiod_and_proxy(c: &Cluster, mesh: &str, flags: &[&str]) -> Option<(TestIstiod, Proxy)> {
    let istiod =
        tokio::task::block_in_place(|| TestIstiod::start(&c.server.admin_kubeconfig(), mesh, flags))?;
    let node = format!("sidecar~10.9.0.1~app.{ns}~{ns}.svc.cluster.local", ns = c.ns);
    let proxy = Proxy::connect(istiod.xds_address(), &node)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", istiod.log()));
    Some((istiod, proxy))
}

/// Two instances of `orders` (the second one's health given), and `payments`.
fn estate(orders_port: u16, second_healthy: bool, with_payments: bool) -> String {
    let mut text = format!(
        "services:
  - name: orders
    instances:
      - {{address: 10.0.0.1, ports: {{http: {orders_port}}}, locality: eu-west-1/eu-west-1a/rack1, weight: 3}}
      - {{address: 10.0.0.2, ports: {{http: {orders_port}}}, healthy: {second_healthy}}}
"
    );
    if with_payments {
        text.push_str(
            "  - name: payments
    instances:
      - {address: 10.0.1.1, ports: {grpc: 9000}}
",
        );
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_instances_reach_a_proxys_endpoints_through_the_api_server_and_istiod() {
    let Some(c) = istio_cluster("istiod").await else {
        return;
    };
    // Hosts of this test's own: istiod reads every namespace of the shared API server.
    let hosts = format!("    hosts: \"{{service}}.{}.legacy\"\n", c.ns);
    let ws = c.workspace(&estate(8080, true, true), &hosts, "");
    let first = cmd(&ws, &["once"]).await;
    assert_eq!(first.code(), Some(0), "{first}");

    let Some((istiod, mut proxy)) = istiod_and_proxy(&c, "{}\n", &[]).await else {
        return;
    };
    let orders = Proxy::cluster_name(&format!("orders.{}.legacy", c.ns), 8080);
    let payments = Proxy::cluster_name(&format!("payments.{}.legacy", c.ns), 9000);
    let arrived = proxy
        .until(Duration::from_secs(60), |p| {
            p.endpoints(&orders).len() == 2 && !p.endpoints(&payments).is_empty()
        })
        .await;
    assert!(
        arrived,
        "the proxy never got both clusters' endpoints; clusters: {:?}\nistiod:\n{}",
        proxy.clusters.keys().collect::<Vec<_>>(),
        istiod.log()
    );
    let got = proxy.endpoints(&orders);
    assert_eq!(
        got.iter()
            .map(|s| (&s.address[..], s.port, served_healthy(s)))
            .collect::<Vec<_>>(),
        [("10.0.0.1", 8080, true), ("10.0.0.2", 8080, true)],
        "{got:?}"
    );
    let first: &Seen = &got[0];
    assert_eq!(first.locality, "eu-west-1/eu-west-1a/rack1", "{got:?}");
    assert_eq!(first.weight, Some(3), "{got:?}");

    // One instance turns unhealthy, and payments leaves the registry.
    ws.write_services(&estate(8080, false, false));
    let once = cmd(&ws, &["once"]).await;
    assert_eq!(once.code(), Some(0), "{once}");
    let followed = proxy
        .until(Duration::from_secs(30), |p| {
            !p.clusters.contains_key(&payments)
                && !p
                    .endpoints(&orders)
                    .iter()
                    .any(|s| s.address == "10.0.0.2" && served_healthy(s))
        })
        .await;
    assert!(
        followed,
        "orders: {:?}; clusters: {:?}",
        proxy.endpoints(&orders),
        proxy.clusters.keys().collect::<Vec<_>>()
    );
    assert!(
        proxy
            .endpoints(&orders)
            .iter()
            .any(|s| s.address == "10.0.0.1" && served_healthy(s)),
        "the healthy instance stays served: {:?}",
        proxy.endpoints(&orders)
    );

    // istiod gives each entry an address of its own by patching its status (its IP
    // auto-allocation); registry-sync leaves that alone, and with nothing changed in
    // the registry it writes nothing.
    let allocated = || async {
        let names = c.names(Resource::ServiceEntry).await;
        let mut all = !names.is_empty();
        for name in &names {
            let entry = c.get(Resource::ServiceEntry, name).await;
            all &= entry.is_some_and(|e| {
                e.data["status"]["addresses"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            });
        }
        all
    };
    c.wait_for(
        Duration::from_secs(60),
        "istiod allocates every entry an address",
        None,
        allocated,
    )
    .await;
    let mark = c.server.audit_mark();
    let again = cmd(&ws, &["once"]).await;
    assert_eq!(again.code(), Some(0), "{again}");
    let ours: Vec<_> = c
        .writes_since(mark)
        .into_iter()
        .filter(|r| !r.user_agent.starts_with("pilot-discovery"))
        .collect();
    assert!(
        ours.is_empty(),
        "registry-sync wrote with nothing changed:\n{}",
        describe(&ours)
    );
    assert_istiod_took_everything(&istiod, &c.ns);
}

/// Through the MCP sink: istiod reads registry-sync as an `xds://` config source (with
/// `k8s://` beside it), and a proxy gets the endpoints; registry-sync restarts on the
/// same port (its served set kept in `state_dir`) and the proxy's endpoints never
/// disappear meanwhile; a change after the restart reaches the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_mcp_sink_a_proxy_keeps_its_endpoints_across_a_registry_sync_restart() {
    let Some(c) = istio_cluster("istiod-mcp").await else {
        return;
    };
    let port = registry_sync_testing::servers::free_port();
    let ws = support::Workspace::new();
    ws.write_config(&format!(
        "instance: {ns}
registries:
  - name: legacy
    kind: file
    path: services.yaml
    namespace: {ns}
    hosts: \"{{service}}.{ns}.legacy\"
sinks:
  mcp:
    listen: 127.0.0.1:{port}
    state_dir: state
",
        ns = c.ns
    ));
    ws.write_services(&estate(8080, true, true));
    let child = ws.spawn_run();
    let listening = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    assert!(
        support::wait_until(Duration::from_secs(30), listening),
        "the MCP server never listened:\n{}",
        child.stderr()
    );
    let mesh = format!("configSources:\n  - address: xds://127.0.0.1:{port}\n  - address: k8s://\n");
    let Some((istiod, mut proxy)) = istiod_and_proxy(&c, &mesh, &[]).await else {
        return;
    };
    let orders = Proxy::cluster_name(&format!("orders.{}.legacy", c.ns), 8080);
    assert!(
        proxy
            .until(Duration::from_secs(60), |p| p.endpoints(&orders).len() == 2)
            .await,
        "never served over MCP; clusters: {:?}\nistiod:\n{}\nregistry-sync:\n{}",
        proxy.clusters.keys().collect::<Vec<_>>(),
        istiod.log(),
        child.stderr()
    );

    // Restart registry-sync; follow everything the proxy is sent meanwhile.
    tokio::task::block_in_place(|| child.stop_cleanly());
    let child = ws.spawn_run();
    let mut fewest = usize::MAX;
    let window = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < window {
        proxy.next(Duration::from_millis(200)).await;
        fewest = fewest.min(proxy.endpoints(&orders).len());
    }
    assert_eq!(
        fewest, 2,
        "the proxy lost endpoints while registry-sync restarted"
    );
    assert!(listening(), "{}", child.stderr());

    // The restarted process serves changes.
    ws.write_services_atomically(&estate(9090, true, true));
    let moved = Proxy::cluster_name(&format!("orders.{}.legacy", c.ns), 9090);
    assert!(
        proxy
            .until(Duration::from_secs(60), |p| p.endpoints(&moved).len() == 2
                && !p.clusters.contains_key(&orders))
            .await,
        "the change after the restart never reached the proxy; clusters: {:?}\nistiod:\n{}\nregistry-sync:\n{}",
        proxy.clusters.keys().collect::<Vec<_>>(),
        istiod.log(),
        child.stderr()
    );
    assert_istiod_took_everything(&istiod, &c.ns);
}

/// Through the files sink: istiod reads its output directory with `--configDir`, a real
/// reader of the files it writes, and a proxy gets the endpoints and their changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_files_sink_istiod_reads_the_directory_and_a_proxy_gets_the_endpoints() {
    let Some(c) = istio_cluster("istiod-files").await else {
        return;
    };
    let ws = support::Workspace::new();
    ws.write_config(&format!(
        "registries:
  - name: legacy
    kind: file
    path: services.yaml
    namespace: {ns}
    hosts: \"{{service}}.{ns}.legacy\"
sinks:
  files:
    dir: out
",
        ns = c.ns
    ));
    ws.write_services(&estate(8080, true, true));
    let once = cmd(&ws, &["once"]).await;
    assert_eq!(once.code(), Some(0), "{once}");
    let out = ws.out_dir();
    let configdir = ["--configDir", out.to_str().unwrap()];
    let Some((istiod, mut proxy)) = istiod_and_proxy(&c, "{}\n", &configdir).await else {
        return;
    };
    let orders = Proxy::cluster_name(&format!("orders.{}.legacy", c.ns), 8080);
    assert!(
        proxy
            .until(Duration::from_secs(60), |p| p.endpoints(&orders).len() == 2)
            .await,
        "istiod never served the files; clusters: {:?}\nistiod:\n{}",
        proxy.clusters.keys().collect::<Vec<_>>(),
        istiod.log()
    );

    // istiod watches the directory: a change written by the sink reaches the proxy.
    ws.write_services(&estate(8080, false, false));
    let once = cmd(&ws, &["once"]).await;
    assert_eq!(once.code(), Some(0), "{once}");
    let payments = Proxy::cluster_name(&format!("payments.{}.legacy", c.ns), 9000);
    assert!(
        proxy
            .until(Duration::from_secs(60), |p| {
                !p.clusters.contains_key(&payments)
                    && !p
                        .endpoints(&orders)
                        .iter()
                        .any(|s| s.address == "10.0.0.2" && served_healthy(s))
            })
            .await,
        "the change in the directory never reached the proxy; orders: {:?}\nistiod:\n{}",
        proxy.endpoints(&orders),
        istiod.log()
    );
    assert_istiod_took_everything(&istiod, &c.ns);
}

/// `etcdctl` against the shared etcd, as an operator or a service's registration does.
fn etcdctl(url: &str, args: &[&str]) {
    let output = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .args(args)
        .output()
        .expect("run etcdctl (installed with etcd)");
    assert!(
        output.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A real registry all the way to a proxy: instances registered in etcd (in etcd's own
/// `naming/endpoints` format) reach a proxy's EDS through `run`, the API server and
/// istiod; a new port and a deregistration follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_registrations_reach_a_proxy_through_run_the_api_server_and_istiod() {
    let Some(etcd) = registry_sync_testing::servers::shared_server(registry_sync_testing::servers::ETCD_VAR)
    else {
        return;
    };
    let Some(c) = istio_cluster("istiod-etcd").await else {
        return;
    };
    let prefix = format!("/{}", c.ns);
    let put = |id: &str, addr: &str| {
        etcdctl(
            &etcd,
            &[
                "put",
                &format!("{prefix}/orders/{id}"),
                &format!("{{\"Addr\":\"{addr}\",\"Metadata\":{{\"protocol\":\"http\"}}}}"),
            ],
        )
    };
    put("1", "10.0.2.1:8080");
    put("2", "10.0.2.2:8080");
    let ws = support::Workspace::new();
    ws.write_config(&format!(
        "instance: {ns}
registries:
  - name: kv
    kind: etcd
    address: {etcd}
    prefix: {prefix}
    namespace: {ns}
    hosts: \"{{service}}.{ns}.kv\"
sinks:
  kubernetes:
    kubeconfig: {kubeconfig}
    leader_election: {{enabled: false}}
",
        ns = c.ns,
        kubeconfig = c.server.admin_kubeconfig().display()
    ));
    let child = ws.spawn_run();
    let Some((istiod, mut proxy)) = istiod_and_proxy(&c, "{}\n", &[]).await else {
        return;
    };
    let host = format!("orders.{}.kv", c.ns);
    let addresses = |p: &Proxy, port: u16| -> Vec<(String, u32)> {
        p.endpoints(&Proxy::cluster_name(&host, port))
            .into_iter()
            .map(|s| (s.address, s.port))
            .collect()
    };
    assert!(
        proxy
            .until(Duration::from_secs(60), |p| addresses(p, 8080).len() == 2)
            .await,
        "clusters: {:?}\nregistry-sync:\n{}\nistiod:\n{}",
        proxy.clusters.keys().collect::<Vec<_>>(),
        child.stderr(),
        istiod.log()
    );
    assert_eq!(
        addresses(&proxy, 8080),
        [("10.0.2.1".to_string(), 8080), ("10.0.2.2".to_string(), 8080)]
    );

    // A third instance registers; the second leaves.
    put("3", "10.0.2.3:8080");
    etcdctl(&etcd, &["del", &format!("{prefix}/orders/2")]);
    assert!(
        proxy
            .until(Duration::from_secs(30), |p| addresses(p, 8080)
                == [("10.0.2.1".to_string(), 8080), ("10.0.2.3".to_string(), 8080)])
            .await,
        "{:?}\n{}",
        addresses(&proxy, 8080),
        child.stderr()
    );
    // Every instance leaves: the cluster goes.
    etcdctl(&etcd, &["del", "--prefix", &format!("{prefix}/")]);
    let cluster = Proxy::cluster_name(&host, 8080);
    assert!(
        proxy
            .until(Duration::from_secs(30), |p| !p.clusters.contains_key(&cluster))
            .await,
        "the cluster of a service that left is still there:\n{}",
        child.stderr()
    );
    assert_istiod_took_everything(&istiod, &c.ns);
}

/// WorkloadEntries with health in their status (`endpoints: workload-entry`,
/// `health: status`): the proxy gets the entries' endpoints through the ServiceEntry's
/// selector, an unhealthy instance is not served as healthy, and over a minute of steady
/// state neither istiod nor registry-sync writes a status (they do not fight over the
/// `Healthy` condition); a recovery reaches the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_entries_reach_a_proxy_through_the_selector_with_their_health_and_no_status_fight() {
    let Some(c) = istio_cluster("istiod-we").await else {
        return;
    };
    let registry = format!(
        "    hosts: \"{{service}}.{}.legacy\"\n    endpoints: workload-entry\n    health: status\n",
        c.ns
    );
    let ws = c.workspace(&estate(8080, false, false), &registry, "");
    let child = ws.spawn_run();
    let Some((istiod, mut proxy)) = istiod_and_proxy(&c, "{}\n", &[]).await else {
        return;
    };
    let orders = Proxy::cluster_name(&format!("orders.{}.legacy", c.ns), 8080);
    let healthy_addresses = |p: &Proxy| -> Vec<String> {
        p.endpoints(&orders)
            .into_iter()
            .filter(served_healthy)
            .map(|s| s.address)
            .collect()
    };
    assert!(
        proxy
            .until(Duration::from_secs(60), |p| healthy_addresses(p) == ["10.0.0.1"])
            .await,
        "orders: {:?}\nregistry-sync:\n{}\nistiod:\n{}",
        proxy.endpoints(&orders),
        child.stderr(),
        istiod.log()
    );

    // A minute of steady state: no one writes a WorkloadEntry or its status, and
    // registry-sync writes nothing at all. (istiod itself writes objects of its own
    // into every namespace, and a ServiceEntry's status when it allocates addresses:
    // that is not about health.)
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mark = c.server.audit_mark();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let writes: Vec<_> = c
        .writes_since(mark)
        .into_iter()
        .filter(|w| w.resource == "workloadentries" || !w.user_agent.starts_with("pilot-discovery/"))
        .collect();
    assert!(
        writes.is_empty(),
        "writes in a minute of steady state:\n{}",
        describe(&writes)
    );

    // The unhealthy instance recovers.
    ws.write_services_atomically(&estate(8080, true, false));
    assert!(
        proxy
            .until(Duration::from_secs(30), |p| healthy_addresses(p)
                == ["10.0.0.1", "10.0.0.2"])
            .await,
        "orders: {:?}\n{}",
        proxy.endpoints(&orders),
        child.stderr()
    );
    assert_istiod_took_everything(&istiod, &c.ns);
}

/// The names of the objects of namespace `ns` in istiod's config store, as its
/// `/debug/configz` lists them (the MCP sources' objects with the cluster's).
fn stored_by_istiod(istiod: &TestIstiod, ns: &str) -> std::collections::BTreeSet<String> {
    fn walk(value: &serde_json::Value, ns: &str, names: &mut std::collections::BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(meta) = map.get("metadata")
                    && meta["namespace"] == ns
                    && let Some(name) = meta["name"].as_str()
                {
                    names.insert(name.to_string());
                }
                map.values().for_each(|v| walk(v, ns, names));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, ns, names)),
            _ => {}
        }
    }
    let mut names = std::collections::BTreeSet::new();
    if let Ok(configz) = serde_json::from_str::<serde_json::Value>(&istiod.debug("/debug/configz")) {
        walk(&configz, ns, &mut names);
    }
    names
}

/// The objects the sink's pre-check refuses and those it serves, served to the real
/// istiod as they are (the pre-check skipped): istiod stores exactly the second kind,
/// and the pre-check and the test client's checks (what the MCP tests hold the sink
/// against) each give the real istiod's verdict on every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sinks_pre_check_and_the_test_client_give_the_real_istiods_verdict_on_each_object() {
    use registry_sync_mcp::testing::Profile;
    use registry_sync_mcp::testing::cases::{self, istiod_verdict};
    use registry_sync_mcp::validate::refusal;

    let Some(c) = istio_cluster("istiod-verdicts").await else {
        return;
    };
    let expected: Vec<(&str, bool)> = cases::refused()
        .iter()
        .map(|(why, _)| (*why, false))
        .chain(cases::stored().iter().map(|(what, _)| (*what, true)))
        .collect();
    let objects: Vec<_> = cases::refused()
        .into_iter()
        .chain(cases::stored())
        .enumerate()
        .map(|(i, (_, object))| {
            let mut meta = object.metadata.clone();
            meta.namespace = c.ns.clone();
            meta.name = format!("case-{i}");
            registry_sync_istio::IstioObject::new(meta, object.spec.clone())
        })
        .collect();
    let address = registry_sync_mcp::testing::fixtures::serve_unchecked(&objects).await;
    let mesh = format!("configSources:\n  - address: xds://{address}\n  - address: k8s://\n");
    let Some(istiod) =
        tokio::task::block_in_place(|| TestIstiod::start(&c.server.admin_kubeconfig(), &mesh, &[]))
    else {
        return;
    };
    let should_store = expected.iter().filter(|(_, stored)| *stored).count();
    let mut stored = Default::default();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        stored = stored_by_istiod(&istiod, &c.ns);
        if stored.len() >= should_store {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A refused object would have arrived in the same response as the stored ones.
    let mut disagreements = Vec::new();
    for (i, ((what, expected), object)) in expected.iter().zip(&objects).enumerate() {
        let verdict = |stores: bool| if stores { "stores" } else { "refuses" };
        let real = stored.contains(&format!("case-{i}"));
        let sink = refusal(object).is_none();
        let client = istiod_verdict(Profile::Istio130, object).is_none();
        if real != *expected || sink != real || client != real {
            disagreements.push(format!(
                "{what}: the real istiod {}, the sink's pre-check {}, the test client {}",
                verdict(real),
                verdict(sink),
                verdict(client)
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "verdicts differ from the real istiod's:\n{}\nistiod stored: {stored:?}\n/debug/configz begins: {}\nistiod:\n{}",
        disagreements.join("\n"),
        istiod
            .debug("/debug/configz")
            .chars()
            .take(3000)
            .collect::<String>(),
        istiod.log()
    );
}
