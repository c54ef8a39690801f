//! The Nacos source against a real Nacos server: rnacos, which speaks Nacos's 1.x HTTP
//! and 2.x gRPC protocols (`scripts/test` installs it, starts one and exports
//! `REGISTRY_SYNC_TEST_NACOS`). Each test on the shared server works in a Nacos
//! namespace of its own; the tests that stop the server or turn auth on start a
//! private one.

#![cfg(all(feature = "nacos", feature = "testing"))]

use crate::support;

use std::time::Duration;

use registry_sync_catalog::{Instance, RegistrySnapshot};
use registry_sync_sources::nacos::{CLUSTER_LABEL, NacosConfig, NacosSource};
use registry_sync_sources::secret::{Credentials, SecretSource};
use registry_sync_testing::servers::{NACOS_VAR, NacosInstance, NacosWriter, TestNacos, shared_server};
use support::{Watch, unique};

/// A config for one namespace that lists services every second, so that a service's
/// creation and removal are seen quickly.
fn config(address: &str, namespace_id: &str) -> NacosConfig {
    let mut config = NacosConfig::new(address);
    config.namespace_id = namespace_id.to_string();
    config.interval = Duration::from_secs(1);
    config
}

fn watch(source: NacosSource) -> Watch {
    Watch::start(|tx, cancel| source.watch(tx, cancel))
}

/// The instance of `service` at `ip`, if the snapshot has it.
fn at<'s>(snapshot: &'s RegistrySnapshot, service: &str, ip: &str) -> Option<&'s Instance> {
    snapshot
        .services()
        .iter()
        .find(|s| s.name == service)?
        .instances
        .iter()
        .find(|i| i.address.to_string() == ip)
}

/// Extra registration parameters, what must then hold, and its description.
type Change = (
    &'static [(&'static str, &'static str)],
    fn(Option<&Instance>) -> bool,
    &'static str,
);

fn has_service(snapshot: &RegistrySnapshot, service: &str) -> bool {
    snapshot.services().iter().any(|s| s.name == service)
}

fn instance<'a>(
    ns: &'a str,
    service: &'a str,
    ip: &'a str,
    port: u32,
    extra: &'a [(&'a str, &'a str)],
) -> NacosInstance<'a> {
    NacosInstance {
        namespace_id: ns,
        group: "DEFAULT_GROUP",
        service,
        ip,
        port,
        extra,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_appears_and_follows_port_metadata_weight_enabled_and_deregistration() {
    let Some(address) = shared_server(NACOS_VAR) else {
        return;
    };
    let ns = unique("follow");
    let nacos = NacosWriter::new(&address);
    nacos.put(&instance(
        &ns,
        "orders",
        "10.0.0.1",
        8080,
        &[("metadata", r#"{"version":"v1"}"#)],
    ));
    let mut watch = watch(NacosSource::new("nacos", config(&address, &ns)));
    let snap = watch
        .until("orders appears", |s| at(s, "orders", "10.0.0.1").is_some())
        .await;
    let one = at(&snap, "orders", "10.0.0.1").unwrap();
    assert_eq!(one.ports[0].number, 8080);
    assert_eq!(one.labels.get("version").map(String::as_str), Some("v1"));
    assert_eq!(one.weight, Some(100), "Nacos weight 1.0 is 100");
    assert!(one.healthy);
    assert_eq!(
        snap.services()[0].namespace,
        None,
        "DEFAULT_GROUP is no namespace"
    );

    nacos.put(&instance(
        &ns,
        "orders",
        "10.0.0.1",
        9090,
        &[("metadata", r#"{"version":"v1"}"#)],
    ));
    nacos.delete(&ns, "DEFAULT_GROUP", "orders", "10.0.0.1", 8080);
    watch
        .until("the port changes", |s| {
            at(s, "orders", "10.0.0.1").is_some_and(|i| i.ports[0].number == 9090)
                && s.services()[0].instances.len() == 1
        })
        .await;
    let meta = r#"{"version":"v2","protocol":"grpc"}"#;
    nacos.put(&instance(
        &ns,
        "orders",
        "10.0.0.1",
        9090,
        &[("metadata", meta), ("clusterName", "east")],
    ));
    let snap = watch
        .until("the metadata changes", |s| {
            at(s, "orders", "10.0.0.1").is_some_and(|i| i.labels.get("version").is_some_and(|v| v == "v2"))
        })
        .await;
    let one = at(&snap, "orders", "10.0.0.1").unwrap();
    assert_eq!(one.labels.get("protocol").map(String::as_str), Some("grpc"));
    assert_eq!(one.labels.get(CLUSTER_LABEL).map(String::as_str), Some("east"));

    // rnacos keeps what an update leaves out, so each change is undone explicitly
    // (and it takes weight 1 for "not given": the normal weight here is 2).
    let changes: [Change; 3] = [
        (
            &[("weight", "0.5")],
            |i| i.is_some_and(|i| i.weight == Some(50) && i.healthy),
            "weight 0.5 is 50",
        ),
        (
            &[("weight", "0")],
            |i| i.is_some_and(|i| i.weight == Some(0)),
            "weight 0 stays, without traffic",
        ),
        // rnacos leaves disabled instances out of its answers; Nacos marks them.
        (
            &[("enabled", "false")],
            |i| i.is_none_or(|i| !i.healthy),
            "disabled is not healthy",
        ),
    ];
    let normal = [
        ("metadata", meta),
        ("clusterName", "east"),
        ("weight", "2"),
        ("enabled", "true"),
    ];
    for (extra, holds, what) in changes {
        let mut params: Vec<(&str, &str)> = normal
            .iter()
            .filter(|(k, _)| extra.iter().all(|(e, _)| e != k))
            .copied()
            .collect();
        params.extend_from_slice(extra);
        nacos.put(&instance(&ns, "orders", "10.0.0.1", 9090, &params));
        watch.until(what, |s| holds(at(s, "orders", "10.0.0.1"))).await;
        nacos.put(&instance(&ns, "orders", "10.0.0.1", 9090, &normal));
        watch
            .until(&format!("back to normal after: {what}"), |s| {
                at(s, "orders", "10.0.0.1").is_some_and(|i| i.healthy && i.weight == Some(200))
            })
            .await;
    }

    nacos.put(&instance(&ns, "orders", "10.0.0.2", 9090, &[]));
    nacos.delete(&ns, "DEFAULT_GROUP", "orders", "10.0.0.1", 9090);
    watch
        .until("10.0.0.2 replaces 10.0.0.1", |s| {
            at(s, "orders", "10.0.0.2").is_some() && at(s, "orders", "10.0.0.1").is_none()
        })
        .await;
    nacos.delete(&ns, "DEFAULT_GROUP", "orders", "10.0.0.2", 9090);
    watch
        .until("orders stays, without instances", |s| {
            s.services()
                .iter()
                .any(|svc| svc.name == "orders" && svc.instances.is_empty())
        })
        .await;
    nacos.delete_service(&ns, "DEFAULT_GROUP", "orders");
    watch.until("orders is gone", |s| !has_service(s, "orders")).await;
    watch.assert_failures(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_instance_without_heartbeats_leaves_by_the_servers_own_push() {
    // Nacos removes an ephemeral instance whose heartbeats stop (after ~30 s): a
    // change no client wrote, which only a push can tell.
    let Some(address) = shared_server(NACOS_VAR) else {
        return;
    };
    let ns = unique("expiry");
    let nacos = NacosWriter::new(&address);
    nacos.put(&instance(&ns, "orders", "10.0.5.1", 80, &[]));
    nacos.put(&instance(&ns, "orders", "10.0.5.2", 80, &[("ephemeral", "true")]));
    let mut watch = watch(NacosSource::new("nacos", config(&address, &ns)));
    watch
        .until("both", |s| {
            at(s, "orders", "10.0.5.1").is_some() && at(s, "orders", "10.0.5.2").is_some()
        })
        .await;
    watch
        .until("the silent one is gone", |s| {
            at(s, "orders", "10.0.5.2").is_none() && at(s, "orders", "10.0.5.1").is_some_and(|i| i.healthy)
        })
        .await;
    watch.assert_failures(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_is_listed_by_default_and_groups_narrow_the_watch() {
    let Some(address) = shared_server(NACOS_VAR) else {
        return;
    };
    let ns = unique("groups");
    let nacos = NacosWriter::new(&address);
    for (group, service, ip) in [
        ("DEFAULT_GROUP", "orders", "10.0.1.1"),
        ("SHOP", "orders", "10.0.1.2"),
        ("SHOP", "carts", "10.0.1.3"),
    ] {
        nacos.put(&NacosInstance {
            namespace_id: &ns,
            group,
            service,
            ip,
            port: 80,
            extra: &[],
        });
    }
    let mut all = watch(NacosSource::new("nacos", config(&address, &ns)));
    let snap = all.until("three services", |s| s.services().len() == 3).await;
    let keys: Vec<String> = snap.services().iter().map(|s| s.key().to_string()).collect();
    assert_eq!(keys, ["orders", "SHOP/carts", "SHOP/orders"]);

    let mut shop_config = config(&address, &ns);
    shop_config.groups = vec!["SHOP".into()];
    shop_config.services = vec!["carts".into()];
    let snap = NacosSource::new("nacos", shop_config).load().await.unwrap();
    let keys: Vec<String> = snap.services().iter().map(|s| s.key().to_string()).collect();
    assert_eq!(keys, ["SHOP/carts"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_instances_are_skipped_with_reasons_and_the_rest_syncs() {
    let Some(address) = shared_server(NACOS_VAR) else {
        return;
    };
    let ns = unique("bad");
    let nacos = NacosWriter::new(&address);
    nacos.put(&instance(&ns, "orders", "300.1.1.1", 80, &[]));
    nacos.put(&instance(&ns, "orders", "10.0.2.1", 70000, &[]));
    nacos.put(&instance(&ns, "orders", "10.0.2.2", 80, &[]));
    let snap = NacosSource::new("nacos", config(&address, &ns))
        .load()
        .await
        .unwrap();
    let ips: Vec<String> = snap.services()[0]
        .instances
        .iter()
        .map(|i| i.address.to_string())
        .collect();
    assert_eq!(ips, ["10.0.2.2"]);
    let reasons: Vec<&str> = snap.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("300.1.1.1")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("70000")), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_reported_once_the_state_is_kept_and_a_restart_converges() {
    let Some(mut server) = TestNacos::start() else {
        return;
    };
    let nacos = server.writer();
    nacos.put(&instance("public", "orders", "10.0.3.1", 80, &[]));
    let mut watch = watch(NacosSource::new("nacos", config(&server.address(), "public")));
    watch
        .until("orders appears", |s| at(s, "orders", "10.0.3.1").is_some())
        .await;

    server.stop();
    let error = watch.until_failed().await;
    assert!(
        error.contains("registry \"nacos\"") && error.contains(&server.address()),
        "{error}"
    );
    watch.assert_quiet_for_a_while().await;
    watch.assert_failures(1);

    // rnacos may or may not have kept 10.0.3.1 across the crash; whatever it says
    // after the restart is what the source must converge to.
    server.resume();
    nacos.put(&instance("public", "payments", "10.0.3.2", 80, &[]));
    nacos.put(&instance("public", "orders", "10.0.3.3", 80, &[]));
    watch
        .until("both services after the restart", |s| {
            at(s, "payments", "10.0.3.2").is_some() && at(s, "orders", "10.0.3.3").is_some()
        })
        .await;
    // Pushes work again after the reconnect, not only the relist.
    nacos.put(&instance("public", "orders", "10.0.3.3", 8080, &[]));
    nacos.delete("public", "DEFAULT_GROUP", "orders", "10.0.3.3", 80);
    watch
        .until("the push after the restart", |s| {
            at(s, "orders", "10.0.3.3").is_some_and(|i| i.ports[0].number == 8080)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_services_are_all_synced() {
    let Some(address) = shared_server(NACOS_VAR) else {
        return;
    };
    let ns = unique("thousand");
    let nacos = NacosWriter::new(&address);
    let names: Vec<String> = (0..1000).map(|n| format!("svc-{n:04}")).collect();
    for (n, name) in names.iter().enumerate() {
        let ip = format!("10.1.{}.{}", n / 250, n % 250 + 1);
        nacos.put(&instance(&ns, name, &ip, 8080, &[]));
    }
    let mut watch = watch(NacosSource::new("nacos", config(&address, &ns)));
    let snap = watch
        .until("1000 services", |s| {
            s.services().len() == 1000 && s.services().iter().all(|svc| svc.instances.len() == 1)
        })
        .await;
    assert!(snap.skipped.is_empty(), "{:?}", snap.skipped);
    // A push for one of them is still seen among the thousand subscriptions.
    nacos.put(&instance(&ns, "svc-0500", "10.9.9.9", 8080, &[]));
    watch
        .until("a second instance of svc-0500", |s| {
            at(s, "svc-0500", "10.9.9.9").is_some()
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_the_source_logs_in_and_a_wrong_password_never_shows_in_the_error() {
    let Some(server) = TestNacos::start_with_auth() else {
        return;
    };
    let nacos = server.writer().login("nacos", "nacos");
    nacos.put(&instance("public", "orders", "10.0.4.1", 80, &[]));
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");

    std::fs::write(&password, "nacos\n").unwrap();
    let mut good = config(&server.address(), "public");
    good.credentials = Some(Credentials {
        username: "nacos".into(),
        password: SecretSource::File(password.clone()),
    });
    let snap = NacosSource::new("nacos", good.clone()).load().await.unwrap();
    assert!(at(&snap, "orders", "10.0.4.1").is_some());
    let mut watch = watch(NacosSource::new("nacos", good));
    watch
        .until("orders through a watch with a token", |s| {
            at(s, "orders", "10.0.4.1").is_some()
        })
        .await;

    std::fs::write(&password, "Wr0ng-Pa55word\n").unwrap();
    let mut bad = config(&server.address(), "public");
    bad.credentials = Some(Credentials {
        username: "nacos".into(),
        password: SecretSource::File(password),
    });
    let error = NacosSource::new("nacos", bad)
        .load()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("username") && error.contains("password_file"),
        "{error}"
    );
    assert!(!error.contains("Wr0ng-Pa55word"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_an_error_that_names_the_registry_and_address() {
    let address = format!("127.0.0.1:{}", registry_sync_testing::servers::free_port());
    let error = NacosSource::new("nacos", config(&address, "public"))
        .load()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("registry \"nacos\"") && error.contains(&address),
        "{error}"
    );
    assert!(error.contains("check `address`"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_counts_the_catalog_and_the_instance_requests() {
    let Some(address) = shared_server(NACOS_VAR) else {
        return;
    };
    let ns = unique("requests");
    NacosWriter::new(&address).put(&instance(&ns, "orders", "10.0.2.2", 80, &[]));
    let name = unique("nacos-requests");
    let snap = NacosSource::new(&name, config(&address, &ns))
        .load()
        .await
        .unwrap();
    assert_eq!(snap.services().len(), 1);
    // At least a catalog page and the instances of orders.
    let sent = registry_sync_sources::requests::Requests::of(&name).total();
    assert!(sent >= 2, "{sent}");
}
