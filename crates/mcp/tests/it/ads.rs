//! The MCP server against a client that reads it as istiod does (tests/support), over
//! real gRPC on loopback.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use registry_sync_mcp::proto;
use registry_sync_mcp::server::{Ads, Observer};
use registry_sync_mcp::sink::McpSink;
use registry_sync_mcp::testing::fixtures::{
    creates, serve_loopback as serve, serve_loopback_as_run, service_entry as entry,
};
use registry_sync_mcp::testing::{Event, Istiod, Profile};
use registry_sync_plan::Plan;
use registry_sync_sinks::AsyncSink;

struct Quiet;
impl Observer for Quiet {}

const QUIET: Duration = Duration::from_millis(300);
const SYNC: Duration = Duration::from_secs(5);

#[tokio::test]
async fn istiod_of_every_profile_syncs_on_every_type_it_asks_for_once_the_set_is_complete() {
    for profile in [Profile::Istio120, Profile::Istio124, Profile::Istio130] {
        let (address, mut sink) = serve().await;
        sink.apply(&creates(vec![entry("orders", &["10.0.0.1"])]))
            .await
            .unwrap();
        let mut istiod = Istiod::connect(
            address,
            profile,
            "sidecar~10.1.0.1~istiod-a.istio-system~istio-system.svc.cluster.local",
        )
        .await;
        // Every other type is answered (empty) at once; the entries wait for the whole set.
        assert!(
            !istiod.wait_synced(QUIET).await,
            "{profile:?}: synced on a partial set"
        );
        assert!(
            istiod.service_entries().is_none(),
            "{profile:?}: entries sent before the set was complete"
        );
        assert_eq!(
            istiod.synced.len(),
            profile.types().len() - 2,
            "{profile:?}: {:?}",
            istiod.synced
        );

        sink.complete();
        assert!(istiod.wait_synced(SYNC).await, "{profile:?}: never synced");
        let entries = istiod.service_entries().expect("served under the URL asked for");
        assert_eq!(entries.keys().collect::<Vec<_>>(), ["mesh/orders"], "{profile:?}");
        let stored = &entries["mesh/orders"];
        assert_eq!(stored.body.type_url, proto::SERVICE_ENTRY_BODY);
        assert!(stored.create_time.is_some());
        let se = proto::ServiceEntry::decode(stored.body.value.as_slice()).unwrap();
        assert_eq!(se.endpoints[0].address, "10.0.0.1");
        assert_eq!(
            istiod.events,
            [Event::Create("mesh/orders".into())],
            "{profile:?}"
        );
    }
}

#[tokio::test]
async fn a_change_is_pushed_as_one_update_and_nothing_is_sent_while_nothing_changes() {
    let (address, mut sink) = serve().await;
    sink.apply(&creates(vec![
        entry("orders", &["10.0.0.1"]),
        entry("billing", &["10.0.0.2"]),
    ]))
    .await
    .unwrap();
    sink.complete();
    let mut istiod = Istiod::connect(
        address,
        Profile::Istio124,
        "sidecar~10.1.0.1~istiod-a.istio-system~istio-system.svc.cluster.local",
    )
    .await;
    assert!(istiod.wait_synced(SYNC).await);
    istiod.events.clear();
    let seen = istiod.responses_seen;
    assert!(!istiod.next(QUIET).await, "a response while nothing changed");

    // The plan the writer makes when one endpoint moves.
    sink.apply(&Plan {
        updates: vec![entry("orders", &["10.0.0.9"])],
        ..Plan::default()
    })
    .await
    .unwrap();
    assert!(istiod.next(SYNC).await, "the change was not pushed");
    assert_eq!(istiod.events, [Event::Update("mesh/orders".into())]);
    assert_eq!(
        istiod.responses_seen,
        seen + 1,
        "one response for the one type that changed"
    );
    assert!(!istiod.next(QUIET).await, "nothing after the push");

    sink.apply(&Plan {
        deletes: vec![entry("billing", &[]).key()],
        ..Plan::default()
    })
    .await
    .unwrap();
    assert!(istiod.next(SYNC).await);
    assert_eq!(istiod.events[1..], [Event::Delete("mesh/billing".into())]);
}

#[tokio::test]
async fn two_istiods_get_the_same_set_and_a_reconnecting_one_sees_no_change() {
    let (address, mut sink) = serve().await;
    sink.apply(&creates(vec![entry("orders", &["10.0.0.1"])]))
        .await
        .unwrap();
    sink.complete();
    let mut a = Istiod::connect(
        address,
        Profile::Istio124,
        "sidecar~10.1.0.1~istiod-a.istio-system~istio-system.svc.cluster.local",
    )
    .await;
    let mut b = Istiod::connect(
        address,
        Profile::Istio130,
        "sidecar~10.1.0.2~istiod-b.istio-system~istio-system.svc.cluster.local",
    )
    .await;
    assert!(a.wait_synced(SYNC).await);
    assert!(b.wait_synced(SYNC).await);
    let version = |i: &Istiod| i.service_entries().unwrap()["mesh/orders"].version.clone();
    assert_eq!(version(&a), version(&b));

    // A new stream (istiod reconnecting) is answered again in full; the same versions
    // make its store change nothing.
    let mut again = Istiod::connect(
        address,
        Profile::Istio124,
        "sidecar~10.1.0.1~istiod-a.istio-system~istio-system.svc.cluster.local",
    )
    .await;
    again.store = a.store.clone();
    assert!(again.wait_synced(SYNC).await);
    assert!(again.events.is_empty(), "{:?}", again.events);
}

#[tokio::test]
async fn an_object_istiod_would_drop_is_refused_and_the_last_good_version_stays_served() {
    let (address, mut sink) = serve().await;
    sink.apply(&creates(vec![entry("orders", &["10.0.0.1"])]))
        .await
        .unwrap();
    sink.complete();
    let mut istiod = Istiod::connect(
        address,
        Profile::Istio124,
        "sidecar~10.1.0.1~istiod-a.istio-system~istio-system.svc.cluster.local",
    )
    .await;
    assert!(istiod.wait_synced(SYNC).await);
    istiod.events.clear();

    // A host name where STATIC resolution needs an IP: istiod's validation drops it.
    let report = sink
        .apply(&Plan {
            updates: vec![entry("orders", &["orders-1.example.com"])],
            creates: vec![entry("billing", &["10.0.0.2"])],
            ..Plan::default()
        })
        .await
        .unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0.name, "orders");
    assert!(report.failed[0].1.contains("STATIC"), "{report:?}");
    assert_eq!(report.created, 1);
    assert!(istiod.next(SYNC).await);
    assert_eq!(istiod.events, [Event::Create("mesh/billing".into())]);
    let orders = &istiod.service_entries().unwrap()["mesh/orders"];
    let se = proto::ServiceEntry::decode(orders.body.value.as_slice()).unwrap();
    assert_eq!(se.endpoints[0].address, "10.0.0.1", "the last good version stays");
}

fn certificates() -> (Vec<u8>, registry_sync_mcp::server::ServerTls) {
    let ca = registry_sync_testing::tls::TestCa::new();
    let server = ca.issue(&["registry-sync.istio-system.svc"]);
    (
        ca.pem().as_bytes().to_vec(),
        registry_sync_mcp::server::ServerTls {
            cert_pem: server.cert_pem.into_bytes(),
            key_pem: server.key_pem.into_bytes(),
            files: None,
            client_ca_pem: None,
        },
    )
}

/// A TLS server on loopback serving `mesh/orders`, complete; its address, and the sink
/// to keep while it serves.
async fn serve_tls_with_orders(
    tls: &registry_sync_mcp::server::ServerTls,
) -> (std::net::SocketAddr, McpSink) {
    let (address, mut sink) =
        serve_loopback_as_run(registry_sync_mcp::server::DEFAULT_MAX_STREAMS, Some(tls)).await;
    sink.apply(&creates(vec![entry("orders", &["10.0.0.1"])]))
        .await
        .unwrap();
    sink.complete();
    (address, sink)
}

#[tokio::test]
async fn istiod_dialing_with_simple_tls_syncs_and_a_name_the_certificate_lacks_is_refused() {
    let (ca, tls) = certificates();
    let (address, _sink) = serve_tls_with_orders(&tls).await;

    let mut istiod = Istiod::connect_tls(
        address,
        &ca,
        "registry-sync.istio-system.svc",
        Profile::Istio130,
        "sidecar~x",
    )
    .await
    .expect("the TLS handshake succeeds");
    assert!(istiod.wait_synced(SYNC).await);
    assert!(istiod.service_entries().unwrap().contains_key("mesh/orders"));

    let wrong = Istiod::connect_tls(address, &ca, "elsewhere.example", Profile::Istio130, "sidecar~y").await;
    assert!(
        wrong.is_err(),
        "a certificate without the dialled name must be refused"
    );

    let bad = registry_sync_mcp::server::ServerTls {
        cert_pem: b"not a certificate".to_vec(),
        key_pem: tls.key_pem.clone(),
        files: None,
        client_ca_pem: None,
    };
    let (_, offers) = McpSink::new();
    let refused = registry_sync_mcp::server::Serving::bind(
        "127.0.0.1:0".parse().unwrap(),
        Ads::new(offers, Arc::new(Quiet)),
        Some(&bad),
    )
    .await;
    assert!(refused.is_err(), "a bad certificate fails at start");
}

#[tokio::test]
async fn a_set_larger_than_grpcs_default_message_limit_reaches_istiod_whole() {
    let (address, mut sink) = serve().await;
    let addresses: Vec<String> = (0..10).map(|i| format!("10.0.{i}.1")).collect();
    let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let objects: Vec<_> = (0..16_000)
        .map(|n| entry(&format!("svc-{n:05}"), &addresses))
        .collect();
    sink.apply(&creates(objects)).await.unwrap();
    sink.complete();
    let mut istiod = Istiod::connect(address, Profile::Istio124, "sidecar~big").await;
    assert!(
        istiod.wait_synced(Duration::from_secs(30)).await,
        "broken: {}",
        istiod.broken
    );
    let entries = istiod.service_entries().unwrap();
    assert_eq!(entries.len(), 16_000);
    // gRPC refuses messages over 4 MiB unless both ends are told otherwise, as istiod is.
    let bodies: usize = entries.values().map(|e| e.body.value.len()).sum();
    assert!(
        bodies > 4 << 20,
        "the set is only {bodies} bytes: not past the default limit"
    );
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_to_the_next_istiod_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let name = "registry-sync.istio-system.svc";
    let write = |ca: &registry_sync_testing::tls::TestCa| {
        let issued = ca.issue(&[name]);
        // As a Secret volume updates: the new files appear whole.
        for (path, pem) in [(&key, &issued.key_pem), (&cert, &issued.cert_pem)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, pem).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    };
    let (old_ca, new_ca) = (
        registry_sync_testing::tls::TestCa::new(),
        registry_sync_testing::tls::TestCa::new(),
    );
    write(&old_ca);
    let tls = registry_sync_mcp::server::ServerTls {
        cert_pem: std::fs::read(&cert).unwrap(),
        key_pem: std::fs::read(&key).unwrap(),
        files: Some((cert.clone(), key.clone())),
        client_ca_pem: None,
    };
    let (address, _sink) = serve_tls_with_orders(&tls).await;
    let trusting = |ca: &registry_sync_testing::tls::TestCa| ca.pem().as_bytes().to_vec();
    let mut first = Istiod::connect_tls(address, &trusting(&old_ca), name, Profile::Istio130, "sidecar~a")
        .await
        .expect("the first certificate is served");
    assert!(first.wait_synced(SYNC).await);

    write(&new_ca);
    let mut renewed = None;
    for _ in 0..100 {
        if let Ok(istiod) =
            Istiod::connect_tls(address, &trusting(&new_ca), name, Profile::Istio130, "sidecar~b").await
        {
            renewed = Some(istiod);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut renewed = renewed.expect("the new certificate is served within the check interval");
    assert!(renewed.wait_synced(SYNC).await);
    assert!(
        Istiod::connect_tls(address, &trusting(&old_ca), name, Profile::Istio130, "sidecar~c")
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    // A pair that does not load leaves the last good one served.
    std::fs::write(&cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        Istiod::connect_tls(address, &trusting(&new_ca), name, Profile::Istio130, "sidecar~d")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn with_a_client_ca_only_a_client_with_a_certificate_it_issued_is_served() {
    let (ca, mut tls) = certificates();
    let clients = registry_sync_testing::tls::TestCa::new();
    tls.client_ca_pem = Some(clients.pem().as_bytes().to_vec());
    let (address, _sink) = serve_tls_with_orders(&tls).await;
    let name = "registry-sync.istio-system.svc";
    let anonymous = Istiod::connect_tls(address, &ca, name, Profile::Istio130, "sidecar~a").await;
    assert!(anonymous.is_err(), "a client without a certificate is refused");
    let stranger = registry_sync_testing::tls::TestCa::new().issue(&["istiod.istio-system.svc"]);
    let strange = Istiod::connect_tls_as(
        address,
        &ca,
        name,
        Some((stranger.cert_pem.as_bytes(), stranger.key_pem.as_bytes())),
        Profile::Istio130,
        "sidecar~b",
    )
    .await;
    assert!(strange.is_err(), "a certificate of another CA is refused");
    let istiod_cert = clients.issue(&["istiod.istio-system.svc"]);
    let mut istiod = Istiod::connect_tls_as(
        address,
        &ca,
        name,
        Some((istiod_cert.cert_pem.as_bytes(), istiod_cert.key_pem.as_bytes())),
        Profile::Istio130,
        "sidecar~c",
    )
    .await
    .expect("a certificate of the client CA is served");
    assert!(istiod.wait_synced(SYNC).await);
}
