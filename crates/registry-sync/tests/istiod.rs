//! End-to-end through the real istiod (`pilot-discovery`, built from `istio.io/istio` by
//! `scripts/test`): registry → registry-sync → the real kube-apiserver → istiod → what a
//! sidecar proxy is sent over xDS (its clusters and their endpoints).

mod support;

use std::time::Duration;

use registry_sync_mcp::testing::proxy::{Proxy, Seen};
use registry_sync_testing::servers::TestIstiod;
use support::apiserver::*;

/// Whether Envoy takes an endpoint as healthy: istiod sends `UNKNOWN` (0) for an
/// endpoint with no health of its own, and Envoy treats it as healthy, as `HEALTHY` (1).
fn served_healthy(seen: &Seen) -> bool {
    matches!(seen.health, 0 | 1)
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
    let Some(c) = Cluster::new("istiod").await else {
        return;
    };
    c.server.create_namespace("istio-system").await;
    // Hosts of this test's own: istiod reads every namespace of the shared API server.
    let hosts = format!("    hosts: \"{{service}}.{}.legacy\"\n", c.ns);
    let ws = c.workspace(&estate(8080, true, true), &hosts, "");
    let first = cmd(&ws, &["once"]).await;
    assert_eq!(first.code(), Some(0), "{first}");

    let Some(istiod) =
        tokio::task::block_in_place(|| TestIstiod::start(&c.server.admin_kubeconfig(), "{}\n", &[]))
    else {
        return;
    };
    let node = format!("sidecar~10.9.0.1~app.{ns}~{ns}.svc.cluster.local", ns = c.ns);
    let mut proxy = Proxy::connect(istiod.xds_address(), &node)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", istiod.log()));
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
}
