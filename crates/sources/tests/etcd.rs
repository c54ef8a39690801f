//! The etcd source against a real etcd (`scripts/test` starts one and exports
//! `REGISTRY_SYNC_TEST_ETCD`). Each test works under its own key prefix; the tests
//! that stop the server or cut the network use a private etcd or a proxy.

#![cfg(all(feature = "etcd", feature = "testing"))]

mod support;

use std::sync::Arc;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use registry_sync_sources::etcd::{EtcdConfig, EtcdSource, ValueFormat};
use registry_sync_sources::testing::{ETCD_VAR, Proxy, TestEtcd, shared_server};
use support::{Watch, instance, unique};

fn config(url: &str, prefix: &str) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![url.to_string()],
        prefix: prefix.to_string(),
        credentials: None,
        tls: None,
        format: ValueFormat::NamingEndpoints,
    }
}

async fn client(url: &str) -> Client {
    Client::connect([url], None)
        .await
        .expect("connect to the test etcd")
}

async fn put(client: &mut Client, key: &str, value: &str) {
    client.put(key, value, None).await.expect("put a key");
}

async fn delete(client: &mut Client, key: &str) {
    client.delete(key, None).await.expect("delete a key");
}

fn endpoint(addr: &str, metadata: &str) -> String {
    format!(r#"{{"Addr":"{addr}","Metadata":{metadata}}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_instance_appears_and_follows_port_metadata_health_and_weight_changes() {
    let Some(url) = shared_server(ETCD_VAR) else {
        return;
    };
    let prefix = unique("/registry-sync-test/follow");
    let mut etcd = client(&url).await;
    let mut watch = Watch::start_etcd(EtcdSource::new("kv", config(&url, &prefix)));
    watch
        .until("the empty first view", |s| s.services().is_empty())
        .await;

    let key = format!("{prefix}/orders/one");
    put(&mut etcd, &key, &endpoint("10.0.0.1:8080", r#"{"version":"v1"}"#)).await;
    let snap = watch
        .until("orders appears", |s| instance(s, "orders", "one").is_some())
        .await;
    let one = instance(&snap, "orders", "one").unwrap();
    assert_eq!(
        (one.address.to_string(), one.ports[0].number),
        ("10.0.0.1".into(), 8080)
    );

    put(&mut etcd, &key, &endpoint("10.0.0.1:9090", r#"{"version":"v1"}"#)).await;
    watch
        .until("the port changes", |s| {
            instance(s, "orders", "one").is_some_and(|i| i.ports[0].number == 9090)
        })
        .await;
    put(
        &mut etcd,
        &key,
        &endpoint("10.0.0.1:9090", r#"{"version":"v2","protocol":"grpc"}"#),
    )
    .await;
    watch
        .until("the metadata changes", |s| {
            instance(s, "orders", "one").is_some_and(|i| i.labels.get("version").is_some_and(|v| v == "v2"))
        })
        .await;
    put(
        &mut etcd,
        &key,
        &endpoint("10.0.0.1:9090", r#"{"healthy":false}"#),
    )
    .await;
    watch
        .until("the instance turns unhealthy", |s| {
            instance(s, "orders", "one").is_some_and(|i| !i.healthy)
        })
        .await;
    put(&mut etcd, &key, &endpoint("10.0.0.1:9090", r#"{"weight":7}"#)).await;
    watch
        .until("the weight changes", |s| {
            instance(s, "orders", "one").is_some_and(|i| i.healthy && i.weight == Some(7))
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistering_an_instance_removes_it_and_deleting_the_last_key_removes_the_service() {
    let Some(url) = shared_server(ETCD_VAR) else {
        return;
    };
    let prefix = unique("/registry-sync-test/delete");
    let mut etcd = client(&url).await;
    put(
        &mut etcd,
        &format!("{prefix}/orders/a"),
        &endpoint("10.0.0.1:80", "{}"),
    )
    .await;
    put(
        &mut etcd,
        &format!("{prefix}/orders/b"),
        &endpoint("10.0.0.2:80", "{}"),
    )
    .await;
    put(
        &mut etcd,
        &format!("{prefix}/payments/a"),
        &endpoint("10.0.1.1:80", "{}"),
    )
    .await;
    let mut watch = Watch::start_etcd(EtcdSource::new("kv", config(&url, &prefix)));
    watch
        .until("both services are listed", |s| s.services().len() == 2)
        .await;

    delete(&mut etcd, &format!("{prefix}/orders/b")).await;
    let snap = watch
        .until("instance b is gone", |s| instance(s, "orders", "b").is_none())
        .await;
    assert!(instance(&snap, "orders", "a").is_some());
    delete(&mut etcd, &format!("{prefix}/payments/a")).await;
    let snap = watch
        .until("payments is gone", |s| {
            s.services().iter().all(|svc| svc.name != "payments")
        })
        .await;
    assert_eq!(snap.services().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_and_values_are_skipped_one_by_one_with_reasons_while_good_ones_sync() {
    let Some(url) = shared_server(ETCD_VAR) else {
        return;
    };
    let prefix = unique("/registry-sync-test/bad");
    let mut etcd = client(&url).await;
    let mut watch = Watch::start_etcd(EtcdSource::new("kv", config(&url, &prefix)));
    watch
        .until("the empty first view", |s| s.services().is_empty())
        .await;
    put(&mut etcd, &format!("{prefix}/orders/json"), "{not json").await;
    put(
        &mut etcd,
        &format!("{prefix}/orders/zero"),
        &endpoint("10.0.0.1:0", "{}"),
    )
    .await;
    put(
        &mut etcd,
        &format!("{prefix}/orders/big"),
        &endpoint("10.0.0.1:65536", "{}"),
    )
    .await;
    put(
        &mut etcd,
        &format!("{prefix}/orders/addr"),
        &endpoint("10.0.0.300:80", "{}"),
    )
    .await;
    put(
        &mut etcd,
        &format!("{prefix}/no-instance-id"),
        &endpoint("10.0.0.1:80", "{}"),
    )
    .await;
    put(
        &mut etcd,
        &format!("{prefix}/orders/good"),
        &endpoint("10.0.0.1:80", "{}"),
    )
    .await;
    let snap = watch
        .until("the good instance arrives", |s| {
            instance(s, "orders", "good").is_some()
        })
        .await;
    assert_eq!(
        snap.services()[0].instances.len(),
        1,
        "only the good instance is kept"
    );
    let reasons: Vec<String> = snap.skipped.iter().map(ToString::to_string).collect();
    assert_eq!(reasons.len(), 5, "{reasons:#?}");
    for needle in ["\"json\"", "\"zero\"", "\"big\"", "\"addr\"", "no-instance-id"] {
        assert!(
            reasons.iter().any(|r| r.contains(needle) && r.contains("\"kv\"")),
            "{needle}: {reasons:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_in_one_transaction_is_one_snapshot_and_unchanged_services_keep_their_arc() {
    let Some(url) = shared_server(ETCD_VAR) else {
        return;
    };
    let prefix = unique("/registry-sync-test/burst");
    let mut etcd = client(&url).await;
    put(
        &mut etcd,
        &format!("{prefix}/steady/a"),
        &endpoint("10.0.0.1:80", "{}"),
    )
    .await;
    let mut watch = Watch::start_etcd(EtcdSource::new("kv", config(&url, &prefix)));
    let first = watch.until("steady is listed", |s| s.services().len() == 1).await;
    let puts: Vec<TxnOp> = (0..50)
        .map(|i| {
            TxnOp::put(
                format!("{prefix}/busy/{i}"),
                endpoint(&format!("10.0.1.{i}:80"), "{}"),
                None,
            )
        })
        .collect();
    let txn = Txn::new()
        .when([Compare::version(
            format!("{prefix}/steady/a"),
            CompareOp::Greater,
            0,
        )])
        .and_then(puts);
    etcd.txn(txn).await.expect("the transaction");
    let next = watch.next_snapshot().await;
    let busy = next
        .services()
        .iter()
        .find(|s| s.name == "busy")
        .expect("busy arrived");
    assert_eq!(
        busy.instances.len(),
        50,
        "all 50 instances of one revision arrive in one snapshot"
    );
    assert!(
        Arc::ptr_eq(&first.services()[0], &next.services()[1]),
        "steady is handed over unchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_services_are_all_listed_and_followed() {
    let Some(url) = shared_server(ETCD_VAR) else {
        return;
    };
    let prefix = unique("/registry-sync-test/many");
    let mut etcd = client(&url).await;
    for i in 0..600 {
        put(
            &mut etcd,
            &format!("{prefix}/svc-{i:04}/a"),
            &endpoint("10.0.0.1:80", "{}"),
        )
        .await;
    }
    let mut watch = Watch::start_etcd(EtcdSource::new("kv", config(&url, &prefix)));
    watch
        .until("600 listed (more than one page)", |s| s.services().len() == 600)
        .await;
    for i in 600..1000 {
        put(
            &mut etcd,
            &format!("{prefix}/svc-{i:04}/a"),
            &endpoint("10.0.0.1:80", "{}"),
        )
        .await;
    }
    watch
        .until("all 1000 followed", |s| s.services().len() == 1000)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_is_reported_once_and_the_watch_resumes_with_what_was_missed() {
    let Some(url) = shared_server(ETCD_VAR) else {
        return;
    };
    let prefix = unique("/registry-sync-test/cut");
    let proxy = Proxy::start(url.trim_start_matches("http://"));
    let mut etcd = client(&url).await;
    put(
        &mut etcd,
        &format!("{prefix}/orders/a"),
        &endpoint("10.0.0.1:80", "{}"),
    )
    .await;
    let proxied = format!("http://{}", proxy.address());
    let mut watch = Watch::start_etcd(EtcdSource::new("kv", config(&proxied, &prefix)));
    watch.until("orders is listed", |s| s.services().len() == 1).await;

    proxy.cut();
    watch.until_failed().await;
    // The registry keeps changing while registry-sync cannot see it.
    put(
        &mut etcd,
        &format!("{prefix}/orders/b"),
        &endpoint("10.0.0.2:80", "{}"),
    )
    .await;
    delete(&mut etcd, &format!("{prefix}/orders/a")).await;
    proxy.restore();
    let snap = watch
        .until("the missed changes arrive", |s| {
            instance(s, "orders", "b").is_some() && instance(s, "orders", "a").is_none()
        })
        .await;
    assert_eq!(snap.services()[0].instances.len(), 1);
    watch.assert_failures(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_history_after_a_disconnect_forces_a_relist_that_converges() {
    let Some(url) = shared_server(ETCD_VAR) else {
        return;
    };
    let prefix = unique("/registry-sync-test/compact");
    let proxy = Proxy::start(url.trim_start_matches("http://"));
    let mut etcd = client(&url).await;
    put(
        &mut etcd,
        &format!("{prefix}/orders/a"),
        &endpoint("10.0.0.1:80", "{}"),
    )
    .await;
    let proxied = format!("http://{}", proxy.address());
    let mut watch = Watch::start_etcd(EtcdSource::new("kv", config(&proxied, &prefix)));
    watch.until("orders is listed", |s| s.services().len() == 1).await;

    proxy.cut();
    watch.until_failed().await;
    put(
        &mut etcd,
        &format!("{prefix}/payments/a"),
        &endpoint("10.0.1.1:80", "{}"),
    )
    .await;
    delete(&mut etcd, &format!("{prefix}/orders/a")).await;
    let response = etcd
        .put(format!("{prefix}-marker"), "x", None)
        .await
        .expect("put");
    let revision = response.header().expect("a header").revision();
    etcd.compact(revision, None).await.expect("compact the history");
    proxy.restore();
    let snap = watch
        .until("the relisted state", |s| {
            s.services().len() == 1 && s.services()[0].name == "payments"
        })
        .await;
    assert!(instance(&snap, "payments", "a").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_reported_once_keeps_the_state_and_a_restart_converges() {
    let Some(mut server) = TestEtcd::start() else {
        return;
    };
    let url = server.url();
    let mut etcd = client(&url).await;
    put(&mut etcd, "/svc/orders/a", &endpoint("10.0.0.1:80", "{}")).await;
    let mut watch = Watch::start_etcd(EtcdSource::new("kv", config(&url, "/svc")));
    watch.until("orders is listed", |s| s.services().len() == 1).await;

    server.stop();
    watch.until_failed().await;
    watch.assert_quiet_for_a_while().await;
    server.resume();
    let mut etcd = client(&url).await;
    put(&mut etcd, "/svc/orders/b", &endpoint("10.0.0.2:80", "{}")).await;
    let snap = watch
        .until("both instances after the restart", |s| {
            instance(s, "orders", "a").is_some() && instance(s, "orders", "b").is_some()
        })
        .await;
    assert_eq!(snap.services().len(), 1);
    watch.assert_failures(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_reads_the_prefix_once_and_an_unreachable_server_is_an_error_naming_the_registry() {
    let Some(url) = shared_server(ETCD_VAR) else {
        return;
    };
    let prefix = unique("/registry-sync-test/load");
    let mut etcd = client(&url).await;
    put(
        &mut etcd,
        &format!("{prefix}/orders/a"),
        &endpoint("10.0.0.1:80", "{}"),
    )
    .await;
    let snapshot = EtcdSource::new("kv", config(&url, &prefix))
        .load()
        .await
        .expect("load");
    assert!(instance(&snapshot, "orders", "a").is_some());

    let closed = format!("http://127.0.0.1:{}", registry_sync_sources::testing::free_port());
    let error = EtcdSource::new("kv", config(&closed, &prefix))
        .load()
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("\"kv\"") && message.contains(&closed),
        "{message}"
    );
}
