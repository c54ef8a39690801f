//! The Cloud Map source against moto, a real AWS API emulator (`scripts/test` installs
//! it and exports `REGISTRY_SYNC_TEST_MOTO_SERVER`). Each test starts its own moto, so
//! tests never see each other's namespaces.

#![cfg(all(feature = "cloudmap", feature = "testing"))]

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use registry_sync_catalog::RegistrySnapshot;
use registry_sync_sources::cloudmap::{CloudMapConfig, CloudMapSource};
use registry_sync_sources::testing::CloudMapWriter;
use registry_sync_testing::servers::{MOTO_REGION, Proxy, TestMoto};
use support::{Watch, instance};

const INTERVAL: Duration = Duration::from_millis(200);

fn source(endpoint: &str, namespaces: &[&str]) -> CloudMapSource {
    let mut config = CloudMapConfig::new(Some(MOTO_REGION.to_string()));
    config.endpoint = Some(endpoint.to_string());
    config.namespaces = namespaces.iter().map(|n| n.to_string()).collect();
    config.interval = INTERVAL;
    CloudMapSource::new("aws", config).with_test_credentials()
}

fn watch(source: CloudMapSource) -> Watch {
    Watch::start(|tx, cancel| source.watch(tx, cancel))
}

fn ip_port(ip: &str, port: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_INSTANCE_IPV4".to_string(), ip.to_string()),
        ("AWS_INSTANCE_PORT".to_string(), port.to_string()),
    ]
}

async fn register(writer: &CloudMapWriter, service: &str, id: &str, attributes: &[(String, String)]) {
    let pairs: Vec<(&str, &str)> = attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    writer.register(service, id, &pairs).await;
}

fn service<'s>(
    snapshot: &'s RegistrySnapshot,
    name: &str,
) -> Option<&'s Arc<registry_sync_catalog::Service>> {
    snapshot.services().iter().find(|s| s.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_instance_appears_and_follows_port_attribute_health_and_removal() {
    let Some(moto) = TestMoto::start() else { return };
    let writer = CloudMapWriter::new(&moto.url());
    let namespace = writer.namespace("demo.local").await;
    let orders = writer.service(&namespace, "orders", true).await;
    let stable = writer.service(&namespace, "stable", false).await;
    register(&writer, &stable, "s-1", &ip_port("10.0.9.1", "7000")).await;
    let mut watch = watch(source(&moto.url(), &["demo.local"]));
    let first = watch
        .until("stable appears", |s| instance(s, "stable", "s-1").is_some())
        .await;
    let orders_entry = service(&first, "orders").expect("a service with no instance is listed");
    assert!(orders_entry.instances.is_empty());
    assert_eq!(orders_entry.namespace.as_deref(), Some("demo.local"));

    let mut attributes = ip_port("10.0.0.1", "8080");
    attributes.push(("protocol".into(), "http".into()));
    register(&writer, &orders, "o-1", &attributes).await;
    let snap = watch
        .until("orders has o-1", |s| instance(s, "orders", "o-1").is_some())
        .await;
    let one = instance(&snap, "orders", "o-1").unwrap();
    assert_eq!(one.address.to_string(), "10.0.0.1");
    assert_eq!(one.ports[0].number, 8080);
    assert_eq!(one.labels.get("protocol").map(String::as_str), Some("http"));
    assert!(
        Arc::ptr_eq(
            service(&first, "stable").unwrap(),
            service(&snap, "stable").unwrap()
        ),
        "an unchanged service is handed over as the same Arc"
    );

    let mut moved = ip_port("10.0.0.1", "9090");
    moved.push(("protocol".into(), "grpc".into()));
    register(&writer, &orders, "o-1", &moved).await;
    watch
        .until("the port and the protocol follow", |s| {
            instance(s, "orders", "o-1").is_some_and(|i| {
                i.ports[0].number == 9090 && i.labels.get("protocol").map(String::as_str) == Some("grpc")
            })
        })
        .await;

    writer.set_health(&orders, "o-1", false).await;
    let snap = watch
        .until("the unhealthy instance leaves", |s| {
            instance(s, "orders", "o-1").is_none()
        })
        .await;
    assert!(
        service(&snap, "orders").is_some(),
        "a service with no healthy instance is kept"
    );
    writer.set_health(&orders, "o-1", true).await;
    watch
        .until("healthy again", |s| instance(s, "orders", "o-1").is_some())
        .await;

    register(&writer, &orders, "o-2", &ip_port("10.0.0.2", "9090")).await;
    writer.deregister(&orders, "o-1").await;
    watch
        .until("o-1 is replaced by o-2", |s| {
            instance(s, "orders", "o-1").is_none() && instance(s, "orders", "o-2").is_some()
        })
        .await;

    writer.deregister(&orders, "o-2").await;
    writer.delete_service(&orders).await;
    let snap = watch
        .until("orders is gone", |s| service(s, "orders").is_none())
        .await;
    assert!(instance(&snap, "stable", "s-1").is_some());
    watch.assert_failures(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_instances_are_skipped_one_by_one_with_reasons() {
    let Some(moto) = TestMoto::start() else { return };
    let writer = CloudMapWriter::new(&moto.url());
    let namespace = writer.namespace("demo.local").await;
    let web = writer.service(&namespace, "web", false).await;
    register(&writer, &web, "bad-ip", &ip_port("300.1.1.1", "80")).await;
    register(&writer, &web, "bad-port", &ip_port("10.0.0.1", "0")).await;
    register(
        &writer,
        &web,
        "no-port",
        &[("AWS_INSTANCE_IPV4".to_string(), "10.0.0.1".to_string())],
    )
    .await;
    let mut huge = ip_port("10.0.0.4", "80");
    for n in 0..80 {
        huge.push((format!("k{n}"), "y".repeat(1000)));
    }
    register(&writer, &web, "huge", &huge).await;
    register(&writer, &web, "good", &ip_port("10.0.0.5", "80")).await;

    let snapshot = source(&moto.url(), &[]).load().await.expect("load");
    let web_entry = service(&snapshot, "web").expect("web is listed");
    let ids: Vec<&str> = web_entry.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["good"]);
    let mut refused: Vec<(&str, &str)> = snapshot
        .skipped
        .iter()
        .map(|s| (s.instance.as_deref().unwrap_or_default(), s.reason.as_str()))
        .collect();
    refused.sort();
    let names: Vec<&str> = refused.iter().map(|(id, _)| *id).collect();
    assert_eq!(names, ["bad-ip", "bad-port", "huge", "no-port"], "{refused:#?}");
    assert!(
        refused.iter().all(|(_, reason)| reason.len() < 300),
        "{refused:#?}"
    );
    assert!(snapshot.skipped.iter().all(|s| s.service == "demo.local/web"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_and_services_select_what_is_read_and_names_stay_apart_per_namespace() {
    let Some(moto) = TestMoto::start() else { return };
    let writer = CloudMapWriter::new(&moto.url());
    let a = writer.namespace("a.local").await;
    let b = writer.namespace("b.local").await;
    for (namespace, ip) in [(&a, "10.0.1.1"), (&b, "10.0.2.1")] {
        for name in ["api", "db"] {
            let id = writer.service(namespace, name, false).await;
            register(&writer, &id, "i-1", &ip_port(ip, "80")).await;
        }
    }

    let everything = source(&moto.url(), &[]).load().await.expect("load");
    let mut keys: Vec<String> = everything
        .services()
        .iter()
        .map(|s| s.key().to_string())
        .collect();
    keys.sort();
    assert_eq!(keys, ["a.local/api", "a.local/db", "b.local/api", "b.local/db"]);
    let b_api = everything
        .services()
        .iter()
        .find(|s| s.key().to_string() == "b.local/api")
        .unwrap();
    assert_eq!(b_api.instances[0].address.to_string(), "10.0.2.1");

    let mut config = CloudMapConfig::new(Some(MOTO_REGION.to_string()));
    config.endpoint = Some(moto.url());
    config.namespaces = vec!["a.local".into(), "missing.local".into()];
    config.services = vec!["db".into()];
    let selected = CloudMapSource::new("aws", config).with_test_credentials();
    let only = selected.load().await.expect("load");
    let keys: Vec<String> = only.services().iter().map(|s| s.key().to_string()).collect();
    assert_eq!(keys, ["a.local/db"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cloud_map_fails_once_keeps_the_state_and_converges_after() {
    let Some(moto) = TestMoto::start() else { return };
    let writer = CloudMapWriter::new(&moto.url());
    let namespace = writer.namespace("demo.local").await;
    let orders = writer.service(&namespace, "orders", false).await;
    register(&writer, &orders, "o-1", &ip_port("10.0.0.1", "80")).await;
    let proxy = Proxy::start(&moto.address());
    let mut watch = watch(source(&format!("http://{}", proxy.address()), &[]));
    watch
        .until("o-1 appears", |s| instance(s, "orders", "o-1").is_some())
        .await;

    proxy.cut();
    let error = watch.until_failed().await;
    assert!(
        error.contains("registry \"aws\"") && error.contains("cannot reach Cloud Map"),
        "{error}"
    );
    assert!(!error.contains("testing"), "credentials never appear: {error}");
    register(&writer, &orders, "o-2", &ip_port("10.0.0.2", "80")).await;
    watch.assert_quiet_for_a_while().await;
    watch.assert_failures(1);

    proxy.restore();
    watch
        .until("o-2 after the outage", |s| {
            instance(s, "orders", "o-1").is_some() && instance(s, "orders", "o-2").is_some()
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_services_are_all_read_and_an_idle_round_changes_nothing() {
    let Some(moto) = TestMoto::start() else { return };
    let writer = CloudMapWriter::new(&moto.url());
    let namespace = writer.namespace("big.local").await;
    let mut tasks = tokio::task::JoinSet::new();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(8));
    for n in 0..1000 {
        let (writer, namespace, semaphore) = (writer.clone(), namespace.clone(), Arc::clone(&semaphore));
        tasks.spawn(async move {
            let _permit = semaphore.acquire().await;
            let id = writer.service(&namespace, &format!("svc-{n:04}"), false).await;
            let ip = format!("10.1.{}.{}", n / 250, n % 250 + 1);
            let pairs = [("AWS_INSTANCE_IPV4", ip.as_str()), ("AWS_INSTANCE_PORT", "8080")];
            writer.register(&id, "i-1", &pairs).await;
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a writer task");
    }

    let mut watch = watch(source(&moto.url(), &["big.local"]));
    let first = watch
        .until("all 1000 services with their instance", |s| {
            s.services().len() == 1000 && s.instance_count() == 1000
        })
        .await;
    assert!(first.skipped.is_empty(), "{:?}", first.skipped);
    let svc_500 = first.services().iter().find(|s| s.name == "svc-0500").unwrap();
    assert_eq!(svc_500.instances[0].address.to_string(), "10.1.2.1");

    // One new service: the next snapshot hands over every other service as the same Arc.
    let target = first
        .services()
        .iter()
        .position(|s| s.name == "svc-0007")
        .unwrap();
    let fresh = writer.service(&namespace, "svc-new", false).await;
    register(&writer, &fresh, "i-1", &ip_port("10.9.9.9", "80")).await;
    let next = watch
        .until("the new service", |s| instance(s, "svc-new", "i-1").is_some())
        .await;
    assert_eq!(next.services().len(), 1001);
    assert!(Arc::ptr_eq(&first.services()[target], &next.services()[target]));
    watch.assert_failures(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_counts_every_call_it_sends_to_aws() {
    let Some(moto) = TestMoto::start() else { return };
    let writer = CloudMapWriter::new(&moto.url());
    let namespace = writer.namespace("requests.local").await;
    let web = writer.service(&namespace, "web", false).await;
    register(&writer, &web, "w-1", &ip_port("10.0.0.1", "80")).await;
    let mut config = CloudMapConfig::new(Some(MOTO_REGION.to_string()));
    config.endpoint = Some(moto.url());
    let name = "cloudmap-requests-counted";
    let snapshot = CloudMapSource::new(name, config)
        .with_test_credentials()
        .load()
        .await
        .expect("load");
    assert_eq!(snapshot.instance_count(), 1);
    // ListNamespaces, ListServices of the namespace, DiscoverInstances of web.
    let sent = registry_sync_sources::requests::Requests::of(name).total();
    assert!(sent >= 3, "{sent}");
}
