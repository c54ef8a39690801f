//! The ZooKeeper source against a real ZooKeeper (`scripts/test` starts one and
//! exports `REGISTRY_SYNC_TEST_ZOOKEEPER`), in both layouts. Each test works under its
//! own root; the tests that stop the server or cut the network use a private
//! ZooKeeper or a proxy.

#![cfg(all(feature = "zookeeper", feature = "testing"))]

use crate::support;

use std::time::Duration;

use registry_sync_sources::secret::{Credentials, SecretSource};
use registry_sync_sources::zookeeper::{ZkLayout, ZookeeperConfig, ZookeeperSource};
use registry_sync_testing::servers::{Proxy, TestZookeeper, ZOOKEEPER_VAR, shared_server};
use support::{Watch, instance, unique};
use zookeeper_client::{Acls, Client, CreateMode};

fn config(address: &str, layout: ZkLayout, root: &str) -> ZookeeperConfig {
    ZookeeperConfig {
        address: address.to_string(),
        chroot: None,
        layout,
        root: root.to_string(),
        credentials: None,
        session_timeout: Duration::from_secs(10),
    }
}

async fn client(address: &str) -> Client {
    Client::connector()
        .connect(address)
        .await
        .expect("connect to the test ZooKeeper")
}

async fn mkdir(zk: &Client, path: &str) {
    zk.mkdir(path, &CreateMode::Persistent.with_acls(Acls::anyone_all()))
        .await
        .expect("create the path");
}

async fn create(zk: &Client, path: &str, data: &[u8]) {
    zk.create(path, data, &CreateMode::Persistent.with_acls(Acls::anyone_all()))
        .await
        .unwrap_or_else(|e| panic!("create {path}: {e}"));
}

async fn delete(zk: &Client, path: &str) {
    zk.delete(path, None)
        .await
        .unwrap_or_else(|e| panic!("delete {path}: {e}"));
}

/// A Dubbo provider node name: the URL, encoded as Java's `URLEncoder` does.
fn provider(url: &str) -> String {
    const ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'.')
        .remove(b'-')
        .remove(b'_')
        .remove(b'*');
    percent_encoding::utf8_percent_encode(url, ENCODE).to_string()
}

/// Creates the provider node for `url` under `<root>/<interface>/providers`.
async fn register(zk: &Client, root: &str, interface: &str, url: &str) -> String {
    let path = format!("{root}/{interface}/providers/{}", provider(url));
    create(zk, &path, b"").await;
    path
}

const DEMO: &str = "com.example.DemoService";

fn dubbo_url(port: u16, extra: &str) -> String {
    format!("dubbo://10.0.0.1:{port}/{DEMO}?application=demo&side=provider&version=1.0.0{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dubbo_provider_appears_and_follows_port_weight_health_and_parameter_changes() {
    let Some(address) = shared_server(ZOOKEEPER_VAR) else {
        return;
    };
    let root = unique("/rs-test-dubbo-follow");
    let zk = client(&address).await;
    mkdir(&zk, &format!("{root}/{DEMO}/providers")).await;
    let mut watch = Watch::start_zookeeper(ZookeeperSource::new(
        "dubbo",
        config(&address, ZkLayout::Dubbo, &root),
    ));
    watch
        .until("the service with no provider", |s| s.services().len() == 1)
        .await;

    let id = "10.0.0.1:20880?version=1.0.0";
    let first = register(&zk, &root, DEMO, &dubbo_url(20880, "&weight=100")).await;
    let snap = watch
        .until("the provider appears", |s| instance(s, DEMO, id).is_some())
        .await;
    let one = instance(&snap, DEMO, id).unwrap();
    assert_eq!(
        (one.ports[0].name.as_str(), one.ports[0].number, one.weight),
        ("dubbo", 20880, Some(100))
    );

    // Dubbo changes a provider by replacing its node.
    delete(&zk, &first).await;
    register(
        &zk,
        &root,
        DEMO,
        &dubbo_url(20881, "&weight=5&enabled=false&tag=canary"),
    )
    .await;
    let moved = "10.0.0.1:20881?version=1.0.0";
    let snap = watch
        .until("the changed provider", |s| {
            instance(s, DEMO, moved).is_some() && instance(s, DEMO, id).is_none()
        })
        .await;
    let moved = instance(&snap, DEMO, moved).unwrap();
    assert_eq!(moved.weight, Some(5));
    assert!(!moved.healthy);
    assert_eq!(moved.labels.get("tag").map(String::as_str), Some("canary"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistering_a_dubbo_provider_removes_it_and_deleting_the_interface_removes_the_service() {
    let Some(address) = shared_server(ZOOKEEPER_VAR) else {
        return;
    };
    let root = unique("/rs-test-dubbo-delete");
    let zk = client(&address).await;
    mkdir(&zk, &format!("{root}/{DEMO}/providers")).await;
    mkdir(&zk, &format!("{root}/com.example.Other/providers")).await;
    let a = register(&zk, &root, DEMO, &dubbo_url(20880, "")).await;
    register(&zk, &root, DEMO, &dubbo_url(20881, "")).await;
    let other = register(
        &zk,
        &root,
        "com.example.Other",
        "tri://10.0.1.1:50051/com.example.Other",
    )
    .await;
    let mut watch = Watch::start_zookeeper(ZookeeperSource::new(
        "dubbo",
        config(&address, ZkLayout::Dubbo, &root),
    ));
    watch
        .until("two services", |s| {
            s.services().len() == 2 && s.instance_count() == 3
        })
        .await;

    delete(&zk, &a).await;
    watch
        .until("one provider left", |s| s.instance_count() == 2)
        .await;
    delete(&zk, &other).await;
    delete(&zk, &format!("{root}/com.example.Other/providers")).await;
    delete(&zk, &format!("{root}/com.example.Other")).await;
    let snap = watch.until("Other is gone", |s| s.services().len() == 1).await;
    assert_eq!(snap.services()[0].name, DEMO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_dubbo_urls_are_skipped_with_reasons_and_consumers_are_ignored() {
    let Some(address) = shared_server(ZOOKEEPER_VAR) else {
        return;
    };
    let root = unique("/rs-test-dubbo-bad");
    let zk = client(&address).await;
    mkdir(&zk, &format!("{root}/{DEMO}/providers")).await;
    register(&zk, &root, DEMO, "dubbo://10.0.0.1:0/x").await;
    register(&zk, &root, DEMO, "dubbo://10.0.0.300:20880/x").await;
    register(&zk, &root, DEMO, "not a url").await;
    register(&zk, &root, DEMO, "consumer://10.0.0.9/x?side=consumer").await;
    register(&zk, &root, DEMO, &dubbo_url(20880, "")).await;
    let snapshot = ZookeeperSource::new("dubbo", config(&address, ZkLayout::Dubbo, &root))
        .load()
        .await
        .expect("load");
    assert_eq!(snapshot.instance_count(), 1);
    let reasons: Vec<String> = snapshot.skipped.iter().map(ToString::to_string).collect();
    assert_eq!(reasons.len(), 3, "{reasons:#?}");
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("\"dubbo\"") && r.contains(DEMO)),
        "{reasons:#?}"
    );
}

const SPRING: &str = r#"{"name":"orders","id":"ID","address":"10.0.0.1","port":PORT,"sslPort":null,
  "payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"orders",
             "name":"orders","metadata":{"instance_status":"STATUS","version":"VERSION"}},
  "registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":{"parts":[]}}"#;

fn spring(id: &str, port: u16, status: &str, version: &str) -> Vec<u8> {
    SPRING
        .replace("ID", id)
        .replace("PORT", &port.to_string())
        .replace("STATUS", status)
        .replace("VERSION", version)
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curator_instance_appears_follows_data_changes_and_disappears_with_its_node() {
    let Some(address) = shared_server(ZOOKEEPER_VAR) else {
        return;
    };
    let root = unique("/rs-test-curator");
    let zk = client(&address).await;
    mkdir(&zk, &format!("{root}/orders")).await;
    let mut watch = Watch::start_zookeeper(ZookeeperSource::new(
        "spring",
        config(&address, ZkLayout::Curator, &root),
    ));
    watch
        .until("orders with no instance", |s| s.services().len() == 1)
        .await;

    let node = format!("{root}/orders/a1");
    create(&zk, &node, &spring("a1", 8080, "UP", "v1")).await;
    let snap = watch
        .until("a1 appears", |s| instance(s, "orders", "a1").is_some())
        .await;
    assert_eq!(instance(&snap, "orders", "a1").unwrap().ports[0].name, "http");
    zk.set_data(&node, &spring("a1", 9090, "OUT_OF_SERVICE", "v2"), None)
        .await
        .expect("set data");
    let snap = watch
        .until("a1 changes", |s| {
            instance(s, "orders", "a1").is_some_and(|i| i.ports[0].number == 9090)
        })
        .await;
    let a1 = instance(&snap, "orders", "a1").unwrap();
    assert!(!a1.healthy);
    assert_eq!(a1.labels.get("version").map(String::as_str), Some("v2"));
    create(&zk, &format!("{root}/orders/bad"), b"{not json").await;
    let snap = watch
        .until("the bad node is reported", |s| !s.skipped.is_empty())
        .await;
    assert!(snap.skipped[0].to_string().contains("not valid JSON"));

    delete(&zk, &node).await;
    watch
        .until("a1 is gone", |s| instance(s, "orders", "a1").is_none())
        .await;
    delete(&zk, &format!("{root}/orders/bad")).await;
    delete(&zk, &format!("{root}/orders")).await;
    watch.until("orders is gone", |s| s.services().is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_dubbo_services_are_all_read_and_followed() {
    let Some(address) = shared_server(ZOOKEEPER_VAR) else {
        return;
    };
    let root = unique("/rs-test-dubbo-many");
    let zk = client(&address).await;
    for i in 0..1000 {
        let interface = format!("com.example.S{i:04}");
        mkdir(&zk, &format!("{root}/{interface}/providers")).await;
        if i < 600 {
            register(
                &zk,
                &root,
                &interface,
                &format!("dubbo://10.0.0.1:20880/{interface}"),
            )
            .await;
        }
    }
    let mut watch = Watch::start_zookeeper(ZookeeperSource::new(
        "dubbo",
        config(&address, ZkLayout::Dubbo, &root),
    ));
    watch
        .until("1000 services, 600 providers", |s| {
            s.services().len() == 1000 && s.instance_count() == 600
        })
        .await;
    for i in 600..1000 {
        let interface = format!("com.example.S{i:04}");
        register(
            &zk,
            &root,
            &interface,
            &format!("dubbo://10.0.0.1:20880/{interface}"),
        )
        .await;
    }
    watch
        .until("1000 providers", |s| s.instance_count() == 1000)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_is_reported_once_and_the_reconnect_reads_what_was_missed() {
    let Some(address) = shared_server(ZOOKEEPER_VAR) else {
        return;
    };
    let root = unique("/rs-test-dubbo-cut");
    let proxy = Proxy::start(&address);
    let zk = client(&address).await;
    mkdir(&zk, &format!("{root}/{DEMO}/providers")).await;
    let a = register(&zk, &root, DEMO, &dubbo_url(20880, "")).await;
    let source = ZookeeperSource::new("dubbo", config(&proxy.address(), ZkLayout::Dubbo, &root));
    let mut watch = Watch::start_zookeeper(source);
    watch.until("the provider", |s| s.instance_count() == 1).await;

    proxy.cut();
    watch.until_failed().await;
    delete(&zk, &a).await;
    register(&zk, &root, DEMO, &dubbo_url(20881, "")).await;
    proxy.restore();
    watch
        .until("what changed meanwhile", |s| {
            instance(s, DEMO, "10.0.0.1:20881?version=1.0.0").is_some() && s.instance_count() == 1
        })
        .await;
    register(&zk, &root, DEMO, &dubbo_url(20882, "")).await;
    watch
        .until("the watch works again", |s| s.instance_count() == 2)
        .await;
    watch.assert_failures(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_reported_once_keeps_the_state_and_a_restart_converges() {
    let Some(mut server) = TestZookeeper::start() else {
        return;
    };
    let address = server.address();
    let zk = client(&address).await;
    mkdir(&zk, &format!("/dubbo/{DEMO}/providers")).await;
    register(&zk, "/dubbo", DEMO, &dubbo_url(20880, "")).await;
    drop(zk);
    let mut watch = Watch::start_zookeeper(ZookeeperSource::new(
        "dubbo",
        config(&address, ZkLayout::Dubbo, "/dubbo"),
    ));
    watch.until("the provider", |s| s.instance_count() == 1).await;

    server.stop();
    watch.until_failed().await;
    watch.assert_quiet_for_a_while().await;
    server.resume();
    let zk = client(&address).await;
    register(&zk, "/dubbo", DEMO, &dubbo_url(20881, "")).await;
    watch
        .until("both providers after the restart", |s| s.instance_count() == 2)
        .await;
    register(&zk, "/dubbo", DEMO, &dubbo_url(20882, "")).await;
    watch
        .until("the watch works again", |s| s.instance_count() == 3)
        .await;
    watch.assert_failures(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_credentials_and_a_chroot_reach_nodes_that_anonymous_clients_cannot_read() {
    let Some(address) = shared_server(ZOOKEEPER_VAR) else {
        return;
    };
    let chroot = unique("/rs-test-chroot");
    let owner = Client::connector()
        .with_auth("digest", b"sync:s3cret")
        .connect(&address)
        .await
        .expect("connect with credentials");
    let private = CreateMode::Persistent.with_acls(Acls::creator_all());
    owner
        .mkdir(&format!("{chroot}/dubbo/{DEMO}/providers"), &private)
        .await
        .expect("mkdir");
    let node = format!(
        "{chroot}/dubbo/{DEMO}/providers/{}",
        provider(&dubbo_url(20880, ""))
    );
    owner.create(&node, b"", &private).await.expect("create");

    let mut config = config(&address, ZkLayout::Dubbo, "/dubbo");
    config.chroot = Some(chroot);
    let anonymous = ZookeeperSource::new("dubbo", config.clone())
        .load()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        anonymous.contains("not authorized") && anonymous.contains("username"),
        "{anonymous}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("password"), "s3cret\n").unwrap();
    config.credentials = Some(Credentials {
        username: "sync".into(),
        password: SecretSource::File(dir.path().join("password")),
    });
    let snapshot = ZookeeperSource::new("dubbo", config)
        .load()
        .await
        .expect("load with credentials");
    assert_eq!(snapshot.instance_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_the_client_may_not_read_fails_the_read_instead_of_dropping_its_service() {
    let Some(address) = shared_server(ZOOKEEPER_VAR) else {
        return;
    };
    let root = unique("/rs-test-noauth");
    let zk = client(&address).await;
    mkdir(&zk, &format!("{root}/{DEMO}/providers")).await;
    register(&zk, &root, DEMO, &dubbo_url(20880, "")).await;
    // Another team's interface, readable only by its owner (a digest ACL).
    let owner = Client::connector()
        .with_auth("digest", b"other-team:pw")
        .connect(&address)
        .await
        .expect("connect with credentials");
    mkdir(&zk, &format!("{root}/com.example.Private")).await;
    owner
        .create(
            &format!("{root}/com.example.Private/providers"),
            b"",
            &CreateMode::Persistent.with_acls(Acls::creator_all()),
        )
        .await
        .expect("create the private providers node");

    let error = ZookeeperSource::new("dubbo", config(&address, ZkLayout::Dubbo, &root))
        .load()
        .await
        .expect_err("an unreadable node is not an absent one")
        .to_string();
    assert!(error.contains("not authorized"), "{error}");
    assert!(error.contains("com.example.Private"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_root_is_a_failure_and_an_empty_root_is_an_empty_registry() {
    let Some(address) = shared_server(ZOOKEEPER_VAR) else {
        return;
    };
    let root = unique("/rs-test-no-root");
    let error = ZookeeperSource::new("dubbo", config(&address, ZkLayout::Dubbo, &root))
        .load()
        .await
        .expect_err("a missing root is not an empty registry")
        .to_string();
    assert!(error.contains("does not exist"), "{error}");
    assert!(error.contains(&root), "{error}");

    mkdir(&client(&address).await, &root).await;
    let snapshot = ZookeeperSource::new("dubbo", config(&address, ZkLayout::Dubbo, &root))
        .load()
        .await
        .expect("an existing, empty root");
    assert!(snapshot.services().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_counts_the_session_and_each_operation() {
    let Some(address) = shared_server(ZOOKEEPER_VAR) else {
        return;
    };
    let root = unique("/rs-test-requests");
    let zk = client(&address).await;
    mkdir(&zk, &format!("{root}/{DEMO}/providers")).await;
    register(&zk, &root, DEMO, &dubbo_url(20880, "")).await;
    let name = unique("zookeeper-requests");
    ZookeeperSource::new(&name, config(&address, ZkLayout::Dubbo, &root))
        .load()
        .await
        .expect("load");
    // The session, the root's children, one multi-read of every `providers` node.
    assert_eq!(registry_sync_sources::requests::Requests::of(&name).total(), 3);
}

/// A service registered by Spring Cloud ZooKeeper discovery (Curator's service
/// discovery, as Spring services register themselves) is read with its address, port
/// and metadata, and leaves with its ephemeral node when the service shuts down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_registered_by_spring_cloud_zookeeper_discovery_is_synced_with_its_metadata() {
    let Some(address) = shared_server(ZOOKEEPER_VAR) else {
        return;
    };
    let root = unique("/rs-test-spring");
    let port = registry_sync_testing::servers::free_port();
    let Some(mut service) = registry_sync_testing::servers::SpringApp::start(
        "zookeeper-client.jar",
        &[
            "--spring.application.name=payments".into(),
            "--server.address=127.0.0.1".into(),
            format!("--server.port={port}"),
            format!("--spring.cloud.zookeeper.connect-string={address}"),
            format!("--spring.cloud.zookeeper.discovery.root={root}"),
            "--spring.cloud.zookeeper.discovery.instance-host=127.0.0.1".into(),
            "--spring.cloud.zookeeper.discovery.metadata.version=v3".into(),
            "--spring.cloud.zookeeper.discovery.metadata.team=payments".into(),
        ],
    ) else {
        return;
    };
    // A JVM starts, then registers: wait for its node before following it.
    let zk = client(&address).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while zk
        .list_children(&format!("{root}/payments"))
        .await
        .map_or(true, |children| children.is_empty())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never registered; the service's log:\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut watch = Watch::start_zookeeper(ZookeeperSource::new(
        "spring",
        config(&address, ZkLayout::Curator, &root),
    ));
    let view = watch
        .until("the Spring service", |s| {
            s.services()
                .iter()
                .any(|s| s.name == "payments" && !s.instances.is_empty())
        })
        .await;
    let synced = &view
        .services()
        .iter()
        .find(|s| s.name == "payments")
        .unwrap()
        .instances[0];
    assert!(synced.healthy, "{synced:?}");
    assert_eq!(synced.address.to_string(), "127.0.0.1");
    assert_eq!(synced.ports[0].number, port);
    assert_eq!(synced.labels.get("version").map(String::as_str), Some("v3"));
    assert_eq!(synced.labels.get("team").map(String::as_str), Some("payments"));

    tokio::task::block_in_place(|| service.terminate());
    watch
        .until("the Spring service leaves", |s| {
            s.services()
                .iter()
                .all(|s| s.name != "payments" || s.instances.is_empty())
        })
        .await;
}
