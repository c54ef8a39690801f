//! `registry-sync run` serving istiod over MCP-over-xDS, read by the test client that
//! behaves as istiod's (crates/mcp `testing`).

use crate::support;

use std::time::Duration;

use prost::Message;
use registry_sync_mcp::proto;
use registry_sync_mcp::testing::{Event, Istiod, Profile};
use support::*;

const CONFIG: &str = "\
registries:
  - name: legacy
    kind: file
    path: services.yaml
    namespace: mesh
sinks:
  mcp: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
";

const NODE: &str = "sidecar~10.1.0.1~istiod-a.istio-system~istio-system.svc.cluster.local";

/// The address a log line of `child` names after `address=`.
fn logged_address(child: &ChildGuard, line: &str) -> Option<String> {
    child
        .stderr()
        .lines()
        .find(|l| l.contains(line))
        .and_then(|l| l.split("address=").nth(1))
        .map(|a| a.split_whitespace().next().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_reads_what_render_prints_and_gets_a_change_pushed_as_one_update() {
    let ws = Workspace::new();
    ws.write_services(&services(8080, true));
    ws.write_config(CONFIG);
    let expected: Vec<String> = parse_objects(&ws.cmd("render").stdout)
        .iter()
        .filter(|o| o.kind == "ServiceEntry")
        .map(|o| format!("{}/{}", o.metadata.namespace, o.metadata.name))
        .collect();
    assert_eq!(expected.len(), 3);

    let mut child = ws.spawn_run();
    let mut mcp = None;
    assert!(
        wait_until(DEADLINE, || {
            mcp = logged_address(&child, "MCP-over-xDS config source");
            mcp.is_some()
        }),
        "the MCP server never listened; stderr:\n{}",
        child.stderr()
    );
    let mcp: std::net::SocketAddr = mcp.unwrap().parse().unwrap();
    let admin = logged_address(&child, "serving /metrics").expect("the admin address is logged");
    let mut istiod = Istiod::connect(mcp, Profile::Istio124, NODE).await;
    assert!(
        istiod.wait_synced(DEADLINE).await,
        "never synced; stderr:\n{}",
        child.stderr()
    );
    let served: Vec<String> = istiod.service_entries().unwrap().keys().cloned().collect();
    assert_eq!(served, expected);
    let orders = &istiod.service_entries().unwrap()["mesh/legacy.orders"];
    let se = proto::ServiceEntry::decode(orders.body.value.as_slice()).unwrap();
    assert_eq!(se.ports[0].number, 8080);
    // The line is written by the stream's task, which may run after the first response.
    assert!(
        wait_until(DEADLINE, || child
            .stderr()
            .contains("istiod connected to the MCP server")),
        "a log line names the client; stderr:\n{}",
        child.stderr()
    );

    // The ACK of the last response may still be on its way.
    let acked = format!("registry_sync_mcp_acked_version{{node=\"{NODE}\",type=\"ServiceEntry\"");
    assert!(
        wait_until(DEADLINE, || http_get(&admin, "/metrics").contains(&acked)),
        "{}",
        http_get(&admin, "/metrics")
    );
    let metrics = http_get(&admin, "/metrics");
    assert!(metrics.contains("registry_sync_mcp_clients 1"), "{metrics}");
    assert!(
        metrics.contains("registry_sync_mcp_pushes_total{type=\"other\"}"),
        "{metrics}"
    );

    istiod.events.clear();
    ws.write_services_atomically(&services(9090, true));
    assert!(istiod.next(DEADLINE).await, "the change was never pushed");
    assert_eq!(istiod.events, [Event::Update("mesh/legacy.orders".into())]);
    let orders = &istiod.service_entries().unwrap()["mesh/legacy.orders"];
    let se = proto::ServiceEntry::decode(orders.body.value.as_slice()).unwrap();
    assert_eq!(se.ports[0].number, 9090);
    assert!(
        !istiod.next(Duration::from_millis(500)).await,
        "nothing more while nothing changes"
    );

    child.terminate();
    assert!(child.wait_timeout(DEADLINE).is_some(), "run stops after SIGTERM");
}

const TWO_REGISTRIES: &str = "\
registries:
  - name: legacy
    kind: file
    path: services.yaml
    namespace: mesh
  - name: billing
    kind: file
    path: billing.yaml
    namespace: mesh
sinks:
  mcp: {listen: 127.0.0.1:0}
";

async fn connected(child: &ChildGuard) -> Istiod {
    let mut mcp = None;
    assert!(
        wait_until(DEADLINE, || {
            mcp = logged_address(child, "MCP-over-xDS config source");
            mcp.is_some()
        }),
        "the MCP server never listened; stderr:\n{}",
        child.stderr()
    );
    Istiod::connect(mcp.unwrap().parse().unwrap(), Profile::Istio124, NODE).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_entries_reach_istiod_before_every_registry_has_been_read_and_a_failing_one_keeps_its_own() {
    let ws = Workspace::new();
    ws.write_services(&services(8080, true));
    ws.write_config(TWO_REGISTRIES);
    // billing.yaml does not exist yet: that registry cannot be read.
    let mut child = ws.spawn_run();
    let mut istiod = connected(&child).await;
    assert!(
        !istiod.wait_synced(Duration::from_secs(2)).await,
        "istiod synced while a registry was unread; stderr:\n{}",
        child.stderr()
    );
    assert!(
        istiod.service_entries().is_none(),
        "a partial set would delete billing's entries in istiod: {:?}",
        istiod.service_entries()
    );

    ws.write_atomically(
        "billing.yaml",
        "services:\n  - name: invoices\n    instances:\n      - address: 10.0.2.1\n        ports: {http: 8080}\n",
    );
    assert!(
        istiod.wait_synced(DEADLINE).await,
        "never synced; stderr:\n{}",
        child.stderr()
    );
    let served: Vec<String> = istiod.service_entries().unwrap().keys().cloned().collect();
    assert_eq!(
        served,
        [
            "mesh/billing.invoices",
            "mesh/legacy.orders",
            "mesh/legacy.payments",
            "mesh/legacy.reports"
        ]
    );

    // The legacy file breaks: its registry fails and keeps its objects; nothing is sent
    // that would delete them in istiod.
    istiod.events.clear();
    ws.write_services_atomically("services: [this is not\n");
    assert!(
        wait_until(DEADLINE, || child.stderr().contains("legacy")
            && child.stderr().to_lowercase().contains("error")),
        "the broken file was never reported; stderr:\n{}",
        child.stderr()
    );
    while istiod.next(Duration::from_millis(500)).await {}
    assert!(istiod.events.is_empty(), "{:?}", istiod.events);
    assert_eq!(istiod.service_entries().unwrap().len(), 4);

    child.terminate();
    assert!(child.wait_timeout(DEADLINE).is_some(), "run stops after SIGTERM");
}

/// `run` with both registries readable, its MCP server on a port of its own (one port
/// for every process of a test, as a Service gives istiod) with `more` keys, and an
/// istiod synced on its four entries.
async fn synced_on_one_port(more: &str) -> (Workspace, std::net::SocketAddr, ChildGuard, Istiod) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let ws = Workspace::new();
    ws.write_services(&services(8080, true));
    ws.write(
        "billing.yaml",
        "services:\n  - name: invoices\n    instances:\n      - address: 10.0.2.1\n        ports: {http: 8080}\n",
    );
    ws.write_config(&TWO_REGISTRIES.replace(
        "  mcp: {listen: 127.0.0.1:0}\n",
        &format!("  mcp: {{listen: \"{address}\"{more}}}\n"),
    ));
    let first = ws.spawn_run();
    assert!(
        wait_until(DEADLINE, || std::net::TcpStream::connect(address).is_ok()),
        "{}",
        first.stderr()
    );
    let mut istiod = Istiod::connect(address, Profile::Istio124, NODE).await;
    assert!(istiod.wait_synced(DEADLINE).await, "{}", first.stderr());
    assert_eq!(istiod.service_entries().unwrap().len(), 4);
    (ws, address, first, istiod)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_registry_sync_never_shows_istiod_a_partial_set_and_changes_nothing_it_had() {
    let (ws, address, mut first, mut istiod) = synced_on_one_port("").await;
    istiod.events.clear();

    // Restarted with the billing registry unreadable for a while: the new process holds
    // the entry types back rather than answer without billing's entries.
    first.terminate();
    assert!(first.wait_timeout(DEADLINE).is_some());
    while istiod.next(Duration::from_millis(200)).await {}
    assert!(istiod.broken, "the stream ends with the process");
    std::fs::rename(ws.path().join("billing.yaml"), ws.path().join("billing.later")).unwrap();
    let second = ws.spawn_run();
    assert!(istiod.reconnect(address, DEADLINE).await, "{}", second.stderr());
    while istiod.next(Duration::from_secs(2)).await {}
    assert!(
        istiod.events.is_empty(),
        "istiod's store changed: {:?}",
        istiod.events
    );

    // Once billing is read, the whole set comes, with the same versions: nothing changes.
    std::fs::rename(ws.path().join("billing.later"), ws.path().join("billing.yaml")).unwrap();
    let entries = istiod.profile.service_entry().to_string();
    let answered = |i: &Istiod| i.answers.get(&entries).copied().unwrap_or(0);
    let before = answered(&istiod);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while answered(&istiod) == before && tokio::time::Instant::now() < deadline {
        istiod.next(Duration::from_millis(100)).await;
    }
    assert!(
        answered(&istiod) > before,
        "the full set never came; stderr:\n{}",
        second.stderr()
    );
    assert!(
        istiod.events.is_empty(),
        "a restart changed istiod's store: {:?}",
        istiod.events
    );
    assert_eq!(istiod.service_entries().unwrap().len(), 4);
    second.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_its_state_serves_istiod_at_once_what_it_served_while_registries_are_down() {
    let (ws, address, mut first, mut istiod) = synced_on_one_port(", state_dir: state").await;
    // The state is written within a second of the last change.
    assert!(
        wait_until(DEADLINE, || ws.path().join("state/served").exists()),
        "{}",
        first.stderr()
    );
    std::thread::sleep(Duration::from_millis(1200));
    first.terminate();
    assert!(first.wait_timeout(DEADLINE).is_some());
    while istiod.next(Duration::from_millis(200)).await {}

    // Both registries are unreadable at the restart: one file broken, one gone.
    ws.write_services_atomically("services: [this is not\n");
    std::fs::remove_file(ws.path().join("billing.yaml")).unwrap();
    istiod.events.clear();
    let second = ws.spawn_run();
    assert!(istiod.reconnect(address, DEADLINE).await, "{}", second.stderr());
    let entries = istiod.profile.service_entry().to_string();
    let answered = |i: &Istiod| i.answers.get(&entries).copied().unwrap_or(0);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while answered(&istiod) == 0 && tokio::time::Instant::now() < deadline {
        istiod.next(Duration::from_millis(100)).await;
    }
    assert!(
        answered(&istiod) > 0,
        "the restarted process did not answer with the set it kept; stderr:\n{}",
        second.stderr()
    );
    while istiod.next(Duration::from_millis(500)).await {}
    assert_eq!(istiod.service_entries().unwrap().len(), 4, "{}", second.stderr());
    assert!(
        istiod.events.is_empty(),
        "a restart changed istiod's store: {:?}",
        istiod.events
    );
    second.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_down_at_start_holds_istiod_back_only_for_the_initial_wait() {
    let ws = Workspace::new();
    ws.write_services(&services(8080, true));
    // billing.yaml never exists.
    ws.write_config(&TWO_REGISTRIES.replace(
        "  mcp: {listen: 127.0.0.1:0}\n",
        "  mcp: {listen: 127.0.0.1:0, initial_wait: 2s}\nadmin: {listen: 127.0.0.1:0}\n",
    ));
    let child = ws.spawn_run();
    let mut istiod = connected(&child).await;
    assert!(
        istiod.wait_synced(DEADLINE).await,
        "istiod never got an answer; stderr:\n{}",
        child.stderr()
    );
    let served: Vec<String> = istiod.service_entries().unwrap().keys().cloned().collect();
    assert_eq!(
        served,
        [
            "mesh/legacy.orders",
            "mesh/legacy.payments",
            "mesh/legacy.reports"
        ]
    );
    assert!(
        child.stderr().contains("have not answered since start") && child.stderr().contains("billing"),
        "{}",
        child.stderr()
    );
    // Ready, so that a Service sends istiod to it.
    let admin = logged_address(&child, "serving /metrics").expect("the admin address is logged");
    assert!(
        wait_until(DEADLINE, || http_get(&admin, "/readyz")
            .starts_with("HTTP/1.1 200")),
        "{}",
        child.stderr()
    );
}
