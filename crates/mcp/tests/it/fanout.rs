//! The server with several istiods at once and over time: one that stops reading, pings
//! that keep coming, revisions, a client that never ACKs, and istiod's first dial.

use std::sync::Arc;
use std::time::Duration;

use registry_sync_istio::IstioObject;
use registry_sync_mcp::testing::fixtures::{
    creates, serve_loopback, serve_loopback_as_run, serve_loopback_with, service_entry, updates,
};
use registry_sync_mcp::testing::{Dial, Event, Istiod, Profile, REVISION_LABEL};
use registry_sync_sinks::AsyncSink;

const SYNC: Duration = Duration::from_secs(10);
const NODE: &str = "sidecar~10.1.0.1~istiod-a.istio-system~istio-system.svc.cluster.local";

#[tokio::test]
async fn a_client_that_stops_reading_holds_back_no_push_to_the_others() {
    let (address, mut sink) = serve_loopback().await;
    // ~3 MiB a set: past istiod's 1 MiB HTTP/2 windows, so an unread stream fills up.
    let addresses: Vec<String> = (0..4).map(|i| format!("10.0.{i}.1")).collect();
    let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let objects: Vec<_> = (0..5_000)
        .map(|n| service_entry(&format!("svc-{n:05}"), &addresses))
        .collect();
    sink.apply(&creates(objects)).await.unwrap();
    sink.complete();

    let stuck = Istiod::connect(address, Profile::Istio124, "sidecar~stuck").await;
    let mut reader = Istiod::connect(address, Profile::Istio124, NODE).await;
    assert!(reader.wait_synced(SYNC).await);
    reader.events.clear();
    for n in 0..10u8 {
        let moved = format!("10.9.0.{n}");
        sink.apply(&updates(vec![service_entry("svc-00000", &[&moved])]))
            .await
            .unwrap();
        assert!(
            reader.next(SYNC).await,
            "change {n} never reached the reading client"
        );
        let stored = &reader.service_entries().unwrap()["mesh/svc-00000"];
        let entry =
            <registry_sync_mcp::proto::ServiceEntry as prost::Message>::decode(stored.body.value.as_slice())
                .unwrap();
        assert_eq!(entry.endpoints[0].address, moved);
    }
    assert_eq!(reader.events.len(), 10, "{:?}", reader.events);
    assert_eq!(stuck.responses_seen, 0, "the stuck client read nothing");
}

#[tokio::test]
async fn pings_every_100_ms_for_18_seconds_are_answered_and_the_stream_stays_open() {
    // istiod pings every 30 s and gives up after 10 s without an answer; this client
    // sends as many pings as three minutes at 1 s, and gives each 1 s.
    let (address, mut sink) = serve_loopback().await;
    sink.apply(&creates(vec![service_entry("orders", &["10.0.0.1"])]))
        .await
        .unwrap();
    sink.complete();
    let mut dial = Dial::new(Profile::Istio124, NODE);
    dial.keepalive_interval = Duration::from_millis(100);
    dial.keepalive_timeout = Duration::from_secs(1);
    let mut istiod = Istiod::dial(address, dial).await.unwrap();
    assert!(istiod.wait_synced(SYNC).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(18);
    while tokio::time::Instant::now() < deadline {
        assert!(
            !istiod.next(Duration::from_secs(1)).await,
            "a response while nothing changed"
        );
        assert!(!istiod.broken, "the connection closed under pings");
    }
    sink.apply(&updates(vec![service_entry("orders", &["10.0.0.2"])]))
        .await
        .unwrap();
    assert!(istiod.next(SYNC).await, "the change after the pings never came");
    assert_eq!(istiod.events.last(), Some(&Event::Update("mesh/orders".into())));
}

fn labelled(name: &str, revision: &str) -> Arc<IstioObject> {
    let object = service_entry(name, &["10.0.0.3"]);
    let mut meta = object.metadata.clone();
    meta.labels.insert(REVISION_LABEL.into(), revision.into());
    Arc::new(IstioObject::new(meta, object.spec.clone()))
}

#[tokio::test]
async fn istiods_of_two_revisions_share_every_unlabelled_entry_and_each_keeps_only_its_own_labelled_one() {
    let (address, mut sink) = serve_loopback().await;
    sink.apply(&creates(vec![
        service_entry("orders", &["10.0.0.1"]),
        labelled("for-canary", "canary"),
    ]))
    .await
    .unwrap();
    sink.complete();
    let mut stable = Istiod::connect(address, Profile::Istio124, NODE).await;
    let mut dial = Dial::new(
        Profile::Istio124,
        "sidecar~10.1.0.2~istiod-canary.istio-system~istio-system.svc.cluster.local",
    );
    dial.revision = "canary".into();
    let mut canary = Istiod::dial(address, dial).await.unwrap();
    assert!(stable.wait_synced(SYNC).await);
    assert!(canary.wait_synced(SYNC).await);
    let names = |i: &Istiod| i.service_entries().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&stable), ["mesh/orders"]);
    assert_eq!(names(&canary), ["mesh/for-canary", "mesh/orders"]);
    assert_eq!(
        stable.service_entries().unwrap()["mesh/orders"].version,
        canary.service_entries().unwrap()["mesh/orders"].version
    );
    assert!(stable.dropped.is_empty() && canary.dropped.is_empty());
}

#[tokio::test]
async fn mesh_config_is_answered_empty_and_a_client_that_never_acks_still_gets_every_change() {
    let (address, mut sink) = serve_loopback().await;
    sink.apply(&creates(vec![service_entry("orders", &["10.0.0.1"])]))
        .await
        .unwrap();
    sink.complete();
    let mut silent = Istiod::connect(address, Profile::Istio130, NODE).await;
    silent.acks = false;
    assert!(silent.wait_synced(SYNC).await);
    assert_eq!(silent.answers.get("core/v1alpha1/MeshConfig"), Some(&1));
    assert!(
        silent
            .store
            .get("core/v1alpha1/MeshConfig")
            .is_none_or(|s| s.is_empty()),
        "MeshConfig is not ours to serve"
    );
    for n in 2..5u8 {
        let moved = format!("10.0.0.{n}");
        sink.apply(&updates(vec![service_entry("orders", &[&moved])]))
            .await
            .unwrap();
        assert!(
            silent.next(SYNC).await,
            "change {n} waited for an ACK that never comes"
        );
    }
    assert_eq!(silent.events.len(), 4, "{:?}", silent.events);
}

#[tokio::test]
async fn istiods_first_dial_fails_while_the_server_is_not_up_which_makes_istiod_exit() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let first = Istiod::dial(address, Dial::new(Profile::Istio124, NODE)).await;
    assert!(first.is_err(), "nothing listens, yet the dial succeeded");
}

#[tokio::test]
async fn streams_past_the_limit_are_refused_and_a_slot_frees_when_one_ends() {
    let (address, mut sink) = serve_loopback_with(2).await;
    sink.apply(&creates(vec![service_entry("orders", &["10.0.0.1"])]))
        .await
        .unwrap();
    sink.complete();
    let mut first = Istiod::connect(address, Profile::Istio124, NODE).await;
    let mut second = Istiod::connect(address, Profile::Istio124, "sidecar~b").await;
    assert!(first.wait_synced(SYNC).await && second.wait_synced(SYNC).await);
    let third = Istiod::dial(address, Dial::new(Profile::Istio124, "sidecar~c")).await;
    let refused = match third {
        Err(status) => status,
        Ok(mut third) => {
            assert!(
                !third.wait_synced(Duration::from_secs(2)).await,
                "a third stream was served"
            );
            assert!(third.broken, "the third stream ends");
            tonic::Status::resource_exhausted("ended")
        }
    };
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    drop(second);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(mut client) = Istiod::dial(address, Dial::new(Profile::Istio124, "sidecar~d")).await
            && client.wait_synced(Duration::from_secs(1)).await
        {
            again = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "the freed slot is served again");
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_even_without_a_stream() {
    let (address, mut sink) = serve_loopback_as_run(1, None).await;
    sink.apply(&creates(vec![service_entry("orders", &["10.0.0.1"])]))
        .await
        .unwrap();
    sink.complete();
    // A client that opens a connection and says nothing holds the only one.
    let idle = tokio::net::TcpStream::connect(address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = Istiod::dial(address, Dial::new(Profile::Istio124, NODE)).await;
    assert!(
        refused.is_err() || !refused.unwrap().wait_synced(Duration::from_secs(2)).await,
        "a connection past the limit is served"
    );
    drop(idle);
    let mut served = None;
    for _ in 0..50 {
        if let Ok(mut istiod) = Istiod::dial(address, Dial::new(Profile::Istio124, NODE)).await
            && istiod.wait_synced(Duration::from_secs(1)).await
        {
            served = Some(istiod);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served.is_some(), "the freed connection is served again");
}
