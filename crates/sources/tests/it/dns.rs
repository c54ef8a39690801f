//! The dns source against a real dnsmasq (`scripts/test` installs it and exports
//! `REGISTRY_SYNC_TEST_DNSMASQ`). dnsmasq reads its records only at start, so every
//! test runs a private one and restarts it with new records to change them; records
//! have a TTL of 1 s.

#![cfg(all(feature = "dns", feature = "testing"))]

use crate::support;

use std::time::{Duration, Instant};

use registry_sync_catalog::{RegistrySnapshot, Service};
use registry_sync_sources::dns::{DnsConfig, DnsSource, SrvName};
use registry_sync_testing::servers::TestDnsmasq;
use support::Watch;

const BILLING: &str = "_http._tcp.billing.example";

fn config(server: &TestDnsmasq, names: &[&str]) -> DnsConfig {
    DnsConfig {
        nameserver: Some(server.address().parse().unwrap()),
        names: names.iter().map(|n| SrvName::parse(n).unwrap()).collect(),
        min_refresh: Duration::from_millis(200),
        max_refresh: Duration::from_secs(300),
    }
}

fn watch(server: &TestDnsmasq, names: &[&str]) -> Watch {
    let source = DnsSource::new("legacy-dns", config(server, names));
    Watch::start(|tx, cancel| source.watch(tx, cancel))
}

fn service<'s>(snapshot: &'s RegistrySnapshot, name: &str) -> Option<&'s Service> {
    snapshot.services().iter().find(|s| s.name == name).map(|s| &**s)
}

/// `(id, port, weight)` of every instance of `name`.
fn instances(snapshot: &RegistrySnapshot, name: &str) -> Vec<(String, u16, Option<u32>)> {
    service(snapshot, name)
        .map(|s| {
            s.instances
                .iter()
                .map(|i| (i.id.clone(), i.ports[0].number, i.weight))
                .collect()
        })
        .unwrap_or_default()
}

const TWO_TARGETS: &str = "\
srv-host=_http._tcp.billing.example,a.billing.example,8080,10,5
srv-host=_http._tcp.billing.example,b.billing.example,8081,10,0
srv-host=_http._tcp.billing.example,backup.billing.example,9000,20,1
host-record=a.billing.example,10.0.0.1
host-record=b.billing.example,10.0.0.2,fd00::2
host-record=backup.billing.example,10.0.0.9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_and_address_records_become_a_service_with_one_instance_per_address_and_srv_weights() {
    let Some(server) = TestDnsmasq::start(TWO_TARGETS) else {
        return;
    };
    let mut watch = watch(&server, &[BILLING]);
    let snapshot = watch
        .until("billing appears", |s| service(s, "billing.example").is_some())
        .await;
    assert_eq!(
        instances(&snapshot, "billing.example"),
        [
            ("a.billing.example:8080/10.0.0.1".to_string(), 8080, Some(5)),
            ("b.billing.example:8081/10.0.0.2".to_string(), 8081, Some(1)),
            ("b.billing.example:8081/fd00::2".to_string(), 8081, Some(1)),
        ],
        "the backup priority is not published and weight 0 becomes 1"
    );
    let billing = service(&snapshot, "billing.example").unwrap();
    assert_eq!(billing.instances[0].ports[0].name, "http");
    assert!(snapshot.skipped.is_empty(), "{:?}", snapshot.skipped);

    let once = DnsSource::new("legacy-dns", config(&server, &[BILLING]))
        .load()
        .await
        .expect("load");
    assert_eq!(once, snapshot, "a one-off read sees what the watch sees");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_record_is_seen_after_its_ttl_and_a_removed_target_goes() {
    let Some(mut server) = TestDnsmasq::start(TWO_TARGETS) else {
        return;
    };
    let mut watch = watch(&server, &[BILLING]);
    watch
        .until("billing appears", |s| instances(s, "billing.example").len() == 3)
        .await;

    server.restart(
        "srv-host=_http._tcp.billing.example,a.billing.example,9090,10,7
host-record=a.billing.example,10.0.0.1",
    );
    let changed = Instant::now();
    let snapshot = watch
        .until("the port and weight change and b goes", |s| {
            instances(s, "billing.example")
                == [("a.billing.example:9090/10.0.0.1".to_string(), 9090, Some(7))]
        })
        .await;
    assert!(
        changed.elapsed() < Duration::from_secs(10),
        "a 1 s TTL took {:?} to be refreshed",
        changed.elapsed()
    );
    assert!(snapshot.skipped.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_srv_name_removes_its_service_and_a_dot_target_keeps_it_without_instances() {
    let other = "srv-host=_grpc._tcp.orders.example,o.example,7000\nhost-record=o.example,10.0.1.1";
    let Some(mut server) = TestDnsmasq::start(&format!("{TWO_TARGETS}\n{other}")) else {
        return;
    };
    let names = [BILLING, "_grpc._tcp.orders.example"];
    let mut watch = watch(&server, &names);
    watch.until("both appear", |s| s.services().len() == 2).await;

    server.restart(&format!("srv-host=_http._tcp.billing.example,.\n{other}"));
    let snapshot = watch
        .until("billing has no instances", |s| {
            service(s, "billing.example").is_some_and(|b| b.instances.is_empty())
        })
        .await;
    assert_eq!(instances(&snapshot, "orders.example").len(), 1);

    server.restart(other);
    watch
        .until("billing is removed", |s| service(s, "billing.example").is_none())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_does_not_resolve_is_skipped_with_its_reason() {
    let records = "\
srv-host=_http._tcp.billing.example,a.billing.example,8080
srv-host=_http._tcp.billing.example,missing.billing.example,8080
host-record=a.billing.example,10.0.0.1";
    let Some(server) = TestDnsmasq::start(records) else {
        return;
    };
    let mut watch = watch(&server, &[BILLING]);
    let snapshot = watch
        .until("billing appears", |s| service(s, "billing.example").is_some())
        .await;
    assert_eq!(instances(&snapshot, "billing.example").len(), 1);
    let reasons: Vec<String> = snapshot.skipped.iter().map(|s| s.to_string()).collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("missing.billing.example:8080") && reasons[0].contains("does not exist"),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_one_failure_that_keeps_every_service_and_a_restart_converges() {
    let Some(mut server) = TestDnsmasq::start(TWO_TARGETS) else {
        return;
    };
    let mut watch = watch(&server, &[BILLING]);
    watch
        .until("billing appears", |s| instances(s, "billing.example").len() == 3)
        .await;

    server.stop();
    let error = watch.until_failed().await;
    assert!(
        error.contains("legacy-dns") && error.contains(BILLING) && error.contains(&server.address()),
        "the failure names the registry, the name and the server: {error}"
    );
    watch.assert_quiet_for_a_while().await;
    watch.assert_failures(1);

    server.restart(
        "srv-host=_http._tcp.billing.example,a.billing.example,8080\nhost-record=a.billing.example,10.0.0.1",
    );
    watch
        .until("billing converges", |s| {
            instances(s, "billing.example").len() == 1
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_srv_names_are_all_synced() {
    let count = 1000;
    let mut records = String::new();
    let mut names = Vec::new();
    for i in 0..count {
        records.push_str(&format!(
            "srv-host=_http._tcp.svc{i}.example,host{}.example,{}\n",
            i % 50,
            8000 + i
        ));
        names.push(format!("_http._tcp.svc{i}.example"));
    }
    for h in 0..50 {
        records.push_str(&format!("host-record=host{h}.example,10.2.0.{}\n", h + 1));
    }
    let Some(server) = TestDnsmasq::start(&records) else {
        return;
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut watch = watch(&server, &names);
    let snapshot = watch.until("all services", |s| s.services().len() == count).await;
    eprintln!("1,000 SRV names synced in {:?}", started.elapsed());
    assert_eq!(snapshot.instance_count(), count);
    assert!(
        snapshot.skipped.is_empty(),
        "{:?}",
        &snapshot.skipped[..3.min(snapshot.skipped.len())]
    );
    assert_eq!(
        instances(&snapshot, "svc999.example"),
        [("host49.example:8999/10.2.0.50".to_string(), 8999, Some(1))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_name_that_fails_from_the_start_does_not_hold_back_the_others() {
    // Queries under broken.test go to an upstream that is not there: they fail, while
    // billing.example is answered.
    let records = format!("{TWO_TARGETS}\nserver=/broken.test/127.0.0.1#9");
    let Some(server) = TestDnsmasq::start(&records) else {
        return;
    };
    let mut w = watch(&server, &[BILLING, "_http._tcp.orders.broken.test"]);
    let first = w
        .until("billing syncs", |s| service(s, "billing.example").is_some())
        .await;
    assert!(
        first.unknown.iter().any(|k| k.name == "orders.broken.test"),
        "the failing name is unknown, not absent: {:?}",
        first.unknown
    );
    assert!(service(&first, "orders.broken.test").is_none());

    let snapshot = DnsSource::new(
        "legacy-dns",
        config(&server, &[BILLING, "_http._tcp.orders.broken.test"]),
    )
    .load()
    .await
    .expect("once: the good name loads");
    assert!(service(&snapshot, "billing.example").is_some());
    assert!(snapshot.unknown.iter().any(|k| k.name == "orders.broken.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_counts_every_query_it_sends() {
    let Some(server) = TestDnsmasq::start(
        "srv-host=_http._tcp.billing.example,a.billing.example,8080,10,5\nhost-record=a.billing.example,10.0.0.1",
    ) else {
        return;
    };
    let name = "dns-requests-counted";
    DnsSource::new(name, config(&server, &[BILLING]))
        .load()
        .await
        .expect("load");
    // The SRV name, then the A and AAAA of its one target.
    assert_eq!(registry_sync_sources::requests::Requests::of(name).total(), 3);
}
