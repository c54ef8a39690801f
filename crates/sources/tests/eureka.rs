//! The Eureka source against the Eureka stand-in: full fetch, deltas, the hash check,
//! the one-item-as-object quirk, failures that keep the state.
#![cfg(feature = "eureka")]

use std::time::Duration;

use registry_sync_catalog::{Instance, RegistrySnapshot};
use registry_sync_sources::SourceEvent;
use registry_sync_sources::eureka::{EurekaConfig, EurekaSource};
use registry_sync_testing::standins::eureka::EurekaStandIn;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);

struct Watch {
    rx: mpsc::Receiver<SourceEvent>,
    cancel: CancellationToken,
    failures: usize,
    /// The last view, with every change folded in.
    view: RegistrySnapshot,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn watch(server: &EurekaStandIn) -> Watch {
    let mut config = EurekaConfig::new(server.url());
    config.refresh = Duration::from_millis(100);
    let (tx, rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    tokio::spawn(EurekaSource::new("eureka", config).watch(tx, cancel.clone()));
    Watch {
        rx,
        cancel,
        failures: 0,
        view: RegistrySnapshot::default(),
    }
}

impl Watch {
    async fn until(&mut self, what: &str, cond: impl Fn(&RegistrySnapshot) -> bool) -> RegistrySnapshot {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(SourceEvent::Failed { .. })) => self.failures += 1,
                Ok(Some(event)) => {
                    event.fold_into(&mut self.view);
                    if cond(&self.view) {
                        return self.view.clone();
                    }
                }
                Ok(None) => panic!("{what}: the source ended"),
                Err(_) => panic!("{what}: no matching snapshot within {DEADLINE:?}"),
            }
        }
    }
}

fn instance<'a>(snapshot: &'a RegistrySnapshot, app: &str, id: &str) -> Option<&'a Instance> {
    snapshot
        .services()
        .iter()
        .find(|s| s.name == app)?
        .instances
        .iter()
        .find(|i| i.id == id)
}

fn orders(id: &str, port: u16, version: &str) -> serde_json::Value {
    json!({"instanceId": id, "hostName": format!("{id}.local"), "app": "ORDERS", "ipAddr": "10.0.0.1",
        "status": "UP", "port": {"$": port, "@enabled": "true"}, "securePort": {"$": 443, "@enabled": "false"},
        "metadata": {"version": version}, "dataCenterInfo": {"name": "MyOwn"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_changed_and_cancelled_instances_are_followed_through_deltas() {
    let server = EurekaStandIn::start();
    server.set_single_as_object(true);
    server.register("orders", orders("o1", 8080, "v1")).unwrap();
    let mut w = watch(&server);
    w.until("orders appears", |s| {
        instance(s, "ORDERS", "o1").is_some_and(|i| i.healthy)
    })
    .await;
    server.register("orders", orders("o1", 9090, "v2")).unwrap();
    w.until("port and metadata follow", |s| {
        instance(s, "ORDERS", "o1")
            .is_some_and(|i| i.ports[0].number == 9090 && i.labels.get("version").is_some_and(|v| v == "v2"))
    })
    .await;
    server.set_status("orders", "o1", "OUT_OF_SERVICE");
    w.until("status follows", |s| {
        instance(s, "ORDERS", "o1").is_some_and(|i| !i.healthy)
    })
    .await;
    server.register("orders", orders("o2", 8080, "v1")).unwrap();
    w.until("a second instance", |s| instance(s, "ORDERS", "o2").is_some())
        .await;
    server.cancel("orders", "o1");
    w.until("o1 goes", |s| instance(s, "ORDERS", "o1").is_none())
        .await;
    server.cancel("orders", "o2");
    w.until("the app goes with its last instance", |s| s.services().is_empty())
        .await;
    assert_eq!(w.failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_mismatch_forces_a_full_fetch_that_finds_what_the_delta_missed() {
    let server = EurekaStandIn::start();
    server.register("orders", orders("o1", 8080, "v1")).unwrap();
    let mut w = watch(&server);
    w.until("orders appears", |s| s.services().len() == 1).await;
    let fulls = server.counts().of("apps");
    // A change the delta never shows: only the hash can reveal it.
    server.change_silently("orders", "o1", "DOWN");
    w.until("the full fetch finds it", |s| {
        instance(s, "ORDERS", "o1").is_some_and(|i| !i.healthy)
    })
    .await;
    assert!(server.counts().of("apps") > fulls);
    let fulls = server.counts().of("apps");
    server.wrong_hashcode_next(1);
    tokio::time::timeout(DEADLINE, async {
        while server.counts().of("apps") == fulls {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a wrong hashcode causes a full fetch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_one_failure_that_deletes_nothing_and_the_source_converges_after() {
    let mut server = EurekaStandIn::start();
    server.register("orders", orders("o1", 8080, "v1")).unwrap();
    let mut w = watch(&server);
    w.until("orders appears", |s| s.services().len() == 1).await;
    server.stop();
    match tokio::time::timeout(DEADLINE, w.rx.recv()).await {
        Ok(Some(SourceEvent::Failed { error, .. })) => assert!(error.contains("eureka"), "{error}"),
        other => panic!("expected one failure, got {other:?}"),
    }
    let quiet = tokio::time::timeout(Duration::from_secs(2), w.rx.recv()).await;
    assert!(quiet.is_err(), "an event while the server was down: {quiet:?}");
    server.register("orders", orders("o2", 8080, "v1")).unwrap();
    server.resume();
    let back = w
        .until("converges", |s| instance(s, "ORDERS", "o2").is_some())
        .await;
    assert!(instance(&back, "ORDERS", "o1").is_some());
    server.faults().fail_next(2);
    server.register("orders", orders("o3", 8080, "v1")).unwrap();
    w.until("converges after 5xx", |s| instance(s, "ORDERS", "o3").is_some())
        .await;
    assert_eq!(w.failures, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_apps_are_all_synced_and_an_idle_registry_costs_one_delta_per_refresh() {
    let server = EurekaStandIn::start();
    for n in 0..1000 {
        let mut instance = orders(&format!("i{n}"), 8080, "v1");
        instance["app"] = json!(format!("APP{n}"));
        server.register(&format!("app{n}"), instance).unwrap();
    }
    let mut w = watch(&server);
    w.until("all thousand", |s| s.services().len() == 1000).await;
    let before = server.counts().total();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = server.counts().total() - before;
    eprintln!("eureka: {idle} requests in 2 s idle at refresh 100ms");
    assert!((1..=25).contains(&idle), "{idle} requests in 2 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_counts_exactly_the_requests_eureka_answered() {
    let server = EurekaStandIn::start();
    server.register("orders", orders("o1", 8080, "v1")).unwrap();
    let name = "eureka-requests-counted";
    EurekaSource::new(name, EurekaConfig::new(server.url()))
        .load()
        .await
        .expect("load");
    let sent = registry_sync_sources::requests::Requests::of(name).total();
    assert_eq!(sent, 1, "one full fetch");
    assert_eq!(sent, server.counts().total());
}
