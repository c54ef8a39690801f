//! Leader election against the API server stand-in: one leader at a time, a standby
//! takes over, a leader cut off from the API server stops writing before anyone else
//! can start.

use crate::support;

use std::collections::BTreeSet;
use std::time::Duration;

use registry_sync_istio::Desired;
use registry_sync_kubernetes::{KubeSink, KubeSinkSettings, LeaderSettings, Leadership, leader};
use registry_sync_plan::{Owner, plan};
use registry_sync_sinks::{AsyncSink, SinkError};
use registry_sync_testing::kube::{Resource, StandIn, Verb};
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const LEASE: Duration = Duration::from_secs(2);

fn settings(identity: &str) -> LeaderSettings {
    LeaderSettings {
        namespace: "registry-sync".into(),
        lease_name: "registry-sync".into(),
        identity: identity.into(),
        lease_duration: LEASE,
        retry_period: Duration::from_millis(200),
    }
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP forwarder to the stand-in that can be cut, to take one replica off the network.
struct Cable {
    url: String,
    cut: CancellationToken,
}

async fn cable(target: std::net::SocketAddr) -> Cable {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let cut = CancellationToken::new();
    let stop = cut.clone();
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => return },
            };
            let stop = stop.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(target).await else {
                    return;
                };
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                }
            });
        }
    });
    Cable { url, cut }
}

fn client_via(server: &StandIn, url: Option<&str>) -> kube::Client {
    let mut config = server.kube_config();
    if let Some(url) = url {
        config.cluster_url = url.parse().unwrap();
    }
    config.connect_timeout = Some(Duration::from_millis(300));
    config.read_timeout = Some(Duration::from_millis(500));
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn exactly_one_replica_leads_and_a_standby_takes_over_when_it_stops() {
    let server = StandIn::start().await;
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let a = leader::start(client_via(&server, None), settings("a"), stop_a.clone());
    wait_for("a leads", Duration::from_secs(5), || a.is_leader()).await;
    let b = leader::start(client_via(&server, None), settings("b"), stop_b.clone());
    // b keeps trying for a while and must not win while a renews.
    let watch_until = Instant::now() + LEASE * 2;
    while Instant::now() < watch_until {
        assert!(!(a.is_leader() && b.is_leader()), "two leaders at once");
        assert!(!b.is_leader(), "b took the lease while a renewed it");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let stopped = Instant::now();
    stop_a.cancel();
    wait_for("b leads after a stops", LEASE * 3, || b.is_leader()).await;
    assert!(
        stopped.elapsed() < LEASE,
        "a released its lease, so b did not wait out the lease: {:?}",
        stopped.elapsed()
    );
    assert!(!a.is_leader());
    stop_b.cancel();
}

#[tokio::test]
async fn a_leader_cut_off_stops_writing_before_its_lease_can_pass_to_another() {
    let server = StandIn::start().await;
    let link = cable(server.addr()).await;
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let a = leader::start(
        client_via(&server, Some(&link.url)),
        settings("a"),
        stop_a.clone(),
    );
    wait_for("a leads", Duration::from_secs(5), || a.is_leader()).await;
    let b = leader::start(client_via(&server, None), settings("b"), stop_b.clone());

    link.cut.cancel();
    let mut a_stopped_at = None;
    let deadline = Instant::now() + LEASE * 4;
    while !b.is_leader() {
        if a_stopped_at.is_none() && !a.is_leader() {
            a_stopped_at = Some(Instant::now());
        }
        assert!(Instant::now() < deadline, "b never took over");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(a_stopped_at.is_some(), "a still believed it led when b took over");
    assert!(!a.is_leader());
    stop_a.cancel();
    stop_b.cancel();
}

async fn sink(server: &StandIn, leadership: Leadership) -> KubeSink {
    let settings = KubeSinkSettings {
        namespaces: BTreeSet::from(["mesh".to_string()]),
        qps: 0.0,
        ..Default::default()
    };
    KubeSink::connect(client_via(server, None), settings, Some(leadership))
        .await
        .unwrap()
}

#[tokio::test]
async fn only_the_leader_writes_and_a_failover_writes_nothing_twice() {
    let server = StandIn::start().await;
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let a = leader::start(client_via(&server, None), settings("a"), stop_a.clone());
    wait_for("a leads", Duration::from_secs(5), || a.is_leader()).await;
    let b = leader::start(client_via(&server, None), settings("b"), stop_b.clone());
    let (mut sink_a, mut sink_b) = (sink(&server, a.clone()).await, sink(&server, b.clone()).await);
    let desired: Desired = desired(&[entry("x", &[]), entry("y", &[])]);
    let scope = scope();
    let owner = Owner::new("default");
    server.reset_counts();

    let plan_b = plan(&desired, sink_b.held(), &owner, &scope);
    assert!(
        matches!(
            sink_b.apply(&plan_b).await,
            Err(SinkError::Unavailable {
                why: registry_sync_sinks::Unavailability::NotLeader,
                ..
            })
        ),
        "a standby refuses to write"
    );
    let plan_a = plan(&desired, sink_a.held(), &owner, &scope);
    assert_eq!(sink_a.apply(&plan_a).await.unwrap().created, 2);

    stop_a.cancel();
    wait_for("b leads", LEASE * 3, || b.is_leader()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        sink_b.refresh().await;
        if sink_b.held().len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "b's view never saw a's objects");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let plan_after = plan(&desired, sink_b.held(), &owner, &scope);
    assert!(
        plan_after.is_empty(),
        "the new leader has nothing to redo: {plan_after:?}"
    );
    assert_eq!(
        server.counts().of(Verb::Apply, Resource::ServiceEntry),
        2,
        "every object was written exactly once"
    );
    stop_b.cancel();
}
