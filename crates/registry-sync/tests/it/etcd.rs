//! End-to-end: `registry-sync run` follows a real etcd into the files sink, keeps the
//! objects while etcd is down and converges when it is back. Needs the servers that
//! `scripts/test` starts; skipped with a message otherwise (a failure under CI).

use crate::support;

use std::time::Duration;

use registry_sync_testing::servers::TestEtcd;
use support::*;

fn config(url: &str) -> String {
    format!(
        "registries:
  - name: kv
    kind: etcd
    address: [\"{url}\"]
    prefix: /services
    namespace: mesh
    endpoints: inline
sinks:
  files:
    dir: out
"
    )
}

/// Writes (or, with `None`, deletes) one key through a short-lived client.
fn set(url: &str, key: &str, value: Option<&str>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = registry_sync_sources::etcd::EtcdClient::connect_plain(url)
            .await
            .expect("connect to etcd");
        match value {
            Some(value) => client.put(key, value).await.map(drop),
            None => client.delete(key).await.map(drop),
        }
        .expect("write to etcd");
    });
}

#[test]
fn run_follows_etcd_into_files_keeps_them_while_etcd_is_down_and_converges_after() {
    let Some(mut etcd) = TestEtcd::start() else { return };
    let url = etcd.url();
    let ws = Workspace::new();
    ws.write_config(&config(&url));
    set(
        &url,
        "/services/orders/a",
        Some(r#"{"Addr":"10.0.0.1:8080","Metadata":{"protocol":"http"}}"#),
    );
    let child = ws.spawn_run();
    let orders = ws.service_entry_file("kv.orders");

    child.await_file(&orders, "orders appears", |t| {
        t.contains("10.0.0.1") && t.contains("http-8080")
    });
    let object = parse_object(&orders);
    assert_eq!(object.spec.hosts, ["orders.kv"]);

    set(
        &url,
        "/services/orders/a",
        Some(r#"{"Addr":"10.0.0.1:9090","Metadata":{"protocol":"http"}}"#),
    );
    child.await_file(&orders, "the port follows", |t| t.contains("http-9090"));
    set(
        &url,
        "/services/orders/b",
        Some(r#"{"Addr":"10.0.0.2:9090","Metadata":{"protocol":"http"}}"#),
    );
    set(&url, "/services/orders/a", None);
    child.await_file(&orders, "a is replaced by b", |t| {
        t.contains("10.0.0.2") && !t.contains("10.0.0.1")
    });

    // etcd goes away: nothing is deleted, the failure is logged.
    etcd.stop();
    child.assert_down_and_nothing_deleted(&ws, "etcd", Duration::from_secs(30));

    etcd.resume();
    set(&url, "/services/payments/a", Some(r#"{"Addr":"10.0.1.1:8443"}"#));
    child.await_file(
        &ws.service_entry_file("kv.payments"),
        "payments after the restart",
        |t| t.contains("10.0.1.1"),
    );
    assert!(orders.exists(), "orders was kept across the outage");

    set(&url, "/services/orders/b", None);
    assert!(
        wait_until(Duration::from_secs(30), || !orders.exists()),
        "orders was never deleted after its last key went; stderr:\n{}",
        child.stderr()
    );
    child.stop_cleanly();
}

#[test]
fn check_reports_an_unreachable_etcd_naming_the_registry() {
    let ws = Workspace::new();
    let closed = format!("http://127.0.0.1:{}", registry_sync_testing::servers::free_port());
    ws.check_fails_naming(&config(&closed), "registry kv (etcd): FAILED", &closed);
}
