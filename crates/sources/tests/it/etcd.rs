//! The etcd source against a real etcd (`scripts/test` starts one and exports
//! `REGISTRY_SYNC_TEST_ETCD`). Each test works under its own key prefix; the tests
//! that stop the server or cut the network use a private etcd or a proxy.

#![cfg(all(feature = "etcd", feature = "testing"))]

use crate::support;

use std::sync::Arc;

use registry_sync_sources::etcd::{EtcdClient as Client, EtcdConfig, EtcdSource, ValueFormat};
use registry_sync_testing::servers::{ETCD_VAR, Proxy, TestEtcd, shared_server};
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
    Client::connect_plain(url)
        .await
        .expect("connect to the test etcd")
}

async fn put(client: &mut Client, key: &str, value: &str) {
    client.put(key, value).await.expect("put a key");
}

async fn delete(client: &mut Client, key: &str) {
    client.delete(key).await.expect("delete a key");
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
    let puts: Vec<(String, String)> = (0..50)
        .map(|i| {
            (
                format!("{prefix}/busy/{i}"),
                endpoint(&format!("10.0.1.{i}:80"), "{}"),
            )
        })
        .collect();
    etcd.put_all(puts).await.expect("the transaction");
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
    let revision = etcd.put(format!("{prefix}-marker"), "x").await.expect("put");
    etcd.compact(revision).await.expect("compact the history");
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

    let closed = format!("http://127.0.0.1:{}", registry_sync_testing::servers::free_port());
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

/// etcd with authentication on: `root`, and `reader` with read rights on `/services/`.
fn etcd_with_users() -> Option<TestEtcd> {
    // Tokens expire after 2 s without use, so a test can outlive one.
    let etcd = TestEtcd::start_with(&["--auth-token-ttl", "2"])?;
    etcd.etcdctl(&["user", "add", "root:root-secret-1", "--interactive=false"]);
    etcd.etcdctl(&["role", "add", "reader"]);
    etcd.etcdctl(&[
        "role",
        "grant-permission",
        "reader",
        "--prefix=true",
        "read",
        "/services/",
    ]);
    etcd.etcdctl(&["user", "add", "reader:reader-secret-2", "--interactive=false"]);
    etcd.etcdctl(&["user", "grant-role", "reader", "reader"]);
    etcd.etcdctl(&["user", "add", "nobody:nobody-secret-3", "--interactive=false"]);
    etcd.etcdctl(&["auth", "enable"]);
    Some(etcd)
}

fn as_user(url: &str, user: &str, password_file: &std::path::Path) -> EtcdConfig {
    EtcdConfig {
        credentials: Some(registry_sync_sources::secret::Credentials {
            username: user.into(),
            password: registry_sync_sources::secret::SecretSource::File(password_file.into()),
        }),
        ..config(url, "/services")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_reads_with_its_password_and_a_wrong_password_or_missing_rights_is_an_error_without_it() {
    let Some(etcd) = etcd_with_users() else {
        return;
    };
    let url = etcd.url();
    let mut root = Client::connect_as(&url, "root", "root-secret-1")
        .await
        .expect("root signs in");
    put(&mut root, "/services/orders/a", &endpoint("10.0.0.1:80", "{}")).await;
    let dir = tempfile::tempdir().unwrap();
    let password = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        path
    };

    let reader = password("reader", "reader-secret-2");
    let snapshot = EtcdSource::new("kv", as_user(&url, "reader", &reader))
        .load()
        .await
        .expect("the reader lists what it may read");
    assert!(instance(&snapshot, "orders", "a").is_some());

    // A wrong password, and a user without read rights: errors naming the registry and
    // what etcd said, never the password.
    for (user, file, secret, said) in [
        ("reader", "wrong", "not-the-secret-4", "authentication failed"),
        ("nobody", "nobody", "nobody-secret-3", "permission denied"),
    ] {
        let path = password(file, secret);
        let message = EtcdSource::new("kv", as_user(&url, user, &path))
            .load()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("\"kv\"") && message.contains(said),
            "{user}: {message}"
        );
        assert!(!message.contains(secret), "the password leaked: {message}");
    }

    // A token that expired while the client sat idle is renewed on the next request.
    let mut idle = Client::connect_as(&url, "reader", "reader-secret-2")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(idle.count("/services/").await.expect("signed in again"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watching_user_keeps_following_changes_past_its_tokens_lifetime() {
    let Some(etcd) = etcd_with_users() else {
        return;
    };
    let url = etcd.url();
    let mut root = Client::connect_as(&url, "root", "root-secret-1").await.unwrap();
    put(&mut root, "/services/orders/a", &endpoint("10.0.0.1:80", "{}")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reader");
    std::fs::write(&path, "reader-secret-2").unwrap();
    let mut watch = Watch::start_etcd(EtcdSource::new("kv", as_user(&url, "reader", &path)));
    watch.until("orders is listed", |s| s.services().len() == 1).await;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    put(&mut root, "/services/payments/a", &endpoint("10.0.1.1:80", "{}")).await;
    watch.until("payments arrives", |s| s.services().len() == 2).await;
    watch.assert_failures(0);
}

/// A CA, and a server and a client certificate it signed: PEM of the CA, server cert,
/// server key, client cert, client key.
fn certificates() -> [String; 5] {
    let ca = registry_sync_testing::tls::TestCa::new();
    let server = ca.issue(&["127.0.0.1"]);
    let client = ca.issue(&["registry-sync"]);
    [
        ca.pem().to_string(),
        server.cert_pem,
        server.key_pem,
        client.cert_pem,
        client.key_pem,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_clusters_ca_and_a_client_certificate_lists_and_without_either_it_is_an_error() {
    let [ca, server_cert, server_key, client_cert, client_key] = certificates();
    let Some(etcd) = TestEtcd::start_tls(&ca, &server_cert, &server_key) else {
        return;
    };
    let mut plain = client(&etcd.url()).await;
    put(&mut plain, "/services/orders/a", &endpoint("10.0.0.1:80", "{}")).await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let ca_file = file("ca.pem", &ca);
    let identity = Some((file("client.pem", &client_cert), file("client.key", &client_key)));
    let tls_url = etcd.tls_url().unwrap();
    let over_tls =
        |client: Option<(std::path::PathBuf, std::path::PathBuf)>, ca_file: std::path::PathBuf| EtcdConfig {
            tls: Some(registry_sync_sources::etcd::TlsFiles { ca_file, client }),
            ..config(&tls_url, "/services")
        };

    let snapshot = EtcdSource::new("kv", over_tls(identity.clone(), ca_file.clone()))
        .load()
        .await
        .expect("TLS with a client certificate");
    assert!(instance(&snapshot, "orders", "a").is_some());

    let without_identity = EtcdSource::new("kv", over_tls(None, ca_file.clone()))
        .load()
        .await;
    let message = without_identity
        .expect_err("etcd wants a client certificate")
        .to_string();
    assert!(
        message.contains("\"kv\"") && message.contains(&tls_url),
        "{message}"
    );

    let [other_ca, ..] = certificates();
    let wrong_ca = file("other-ca.pem", &other_ca);
    let message = EtcdSource::new("kv", over_tls(identity, wrong_ca))
        .load()
        .await
        .expect_err("a server certificate another CA signed")
        .to_string();
    assert!(
        message.contains("\"kv\"") && message.contains("cannot connect"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_one_member_down_is_read_and_followed_through_the_others() {
    let Some(url) = shared_server(ETCD_VAR) else {
        return;
    };
    let prefix = unique("/registry-sync-test/members");
    let mut etcd = client(&url).await;
    put(
        &mut etcd,
        &format!("{prefix}/orders/a"),
        &endpoint("10.0.0.1:80", "{}"),
    )
    .await;
    // The first member listed is down; the second is up.
    let down = format!("http://127.0.0.1:{}", registry_sync_testing::servers::free_port());
    let mut members = config(&down, &prefix);
    members.endpoints.push(url.clone());

    let snapshot = EtcdSource::new("kv", members.clone())
        .load()
        .await
        .expect("read through the member that is up");
    assert!(instance(&snapshot, "orders", "a").is_some());

    let mut watch = Watch::start_etcd(EtcdSource::new("kv", members));
    watch.until("orders is listed", |s| s.services().len() == 1).await;
    put(
        &mut etcd,
        &format!("{prefix}/payments/a"),
        &endpoint("10.0.1.1:80", "{}"),
    )
    .await;
    watch.until("payments arrives", |s| s.services().len() == 2).await;
    watch.assert_failures(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_member_in_use_goes_away_the_next_one_takes_over_and_nothing_is_missed() {
    let Some(url) = shared_server(ETCD_VAR) else {
        return;
    };
    let prefix = unique("/registry-sync-test/failover");
    let mut etcd = client(&url).await;
    put(
        &mut etcd,
        &format!("{prefix}/orders/a"),
        &endpoint("10.0.0.1:80", "{}"),
    )
    .await;
    // Two members with the same data: a proxy in front of the server, and the server.
    let proxy = Proxy::start(url.trim_start_matches("http://"));
    let mut members = config(&format!("http://{}", proxy.address()), &prefix);
    members.endpoints.push(url.clone());
    let mut watch = Watch::start_etcd(EtcdSource::new("kv", members));
    watch.until("orders is listed", |s| s.services().len() == 1).await;

    proxy.cut();
    put(
        &mut etcd,
        &format!("{prefix}/payments/a"),
        &endpoint("10.0.1.1:80", "{}"),
    )
    .await;
    let snap = watch
        .until("payments arrives through the other member", |s| {
            s.services().len() == 2
        })
        .await;
    assert!(instance(&snap, "orders", "a").is_some(), "orders was kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_a_small_prefix_is_one_range_request() {
    let Some(url) = shared_server(ETCD_VAR) else {
        return;
    };
    let prefix = unique("/registry-sync-test/requests");
    let mut kv = client(&url).await;
    put(
        &mut kv,
        &format!("{prefix}/orders/i-1"),
        &endpoint("10.0.0.1:8080", "{}"),
    )
    .await;
    let name = unique("etcd-requests");
    let snapshot = EtcdSource::new(&name, config(&url, &prefix))
        .load()
        .await
        .expect("load");
    assert_eq!(snapshot.instance_count(), 1);
    assert_eq!(registry_sync_sources::requests::Requests::of(&name).total(), 1);
}
