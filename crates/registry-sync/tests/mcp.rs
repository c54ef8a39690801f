//! `registry-sync run` serving istiod over MCP-over-xDS, read by the test client that
//! behaves as istiod's (crates/mcp `testing`).

mod support;

use std::time::Duration;

use prost::Message;
use registry_sync_mcp::proto;
use registry_sync_mcp::testing::{Event, Istiod, Profile};
use support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(port: u16) -> String {
    format!(
        "registries:\n  - name: legacy\n    kind: file\n    path: services.yaml\n    namespace: mesh\nsinks:\n  mcp: {{listen: \"127.0.0.1:{port}\"}}\n"
    )
}

const NODE: &str = "sidecar~10.1.0.1~istiod-a.istio-system~istio-system.svc.cluster.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_reads_what_render_prints_and_gets_a_change_pushed_as_one_update() {
    let port = free_port();
    let ws = Workspace::new();
    ws.write_services(&services(8080, true));
    ws.write_config(&config(port));
    let expected: Vec<String> = parse_objects(&ws.cmd("render").stdout)
        .iter()
        .filter(|o| o.kind == "ServiceEntry")
        .map(|o| format!("{}/{}", o.metadata.namespace, o.metadata.name))
        .collect();
    assert_eq!(expected.len(), 3);

    let mut child = ws.spawn_run();
    assert!(
        wait_until(DEADLINE, || std::net::TcpStream::connect(("127.0.0.1", port))
            .is_ok()),
        "the MCP server never listened; stderr:\n{}",
        child.stderr()
    );
    let mut istiod = Istiod::connect(([127, 0, 0, 1], port).into(), Profile::Istio124, NODE).await;
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
    assert!(
        child.stderr().contains("istiod connected to the MCP server"),
        "a log line names the client; stderr:\n{}",
        child.stderr()
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
