//! The Eureka source against the real Eureka server (Spring Cloud Netflix, built by
//! `scripts/test`): registrations, status overrides and cancels followed through deltas,
//! an instance registered by Spring Cloud's own Eureka client, and the delay Eureka's
//! default response cache causes. Against the stand-in, for what a real server cannot
//! be made to do on cue: a hash mismatch, the one-item-as-object quirk of old servers,
//! 5xx, a stop and resume on the same port.
#![cfg(feature = "eureka")]

use std::time::Duration;

use registry_sync_catalog::{Instance, RegistrySnapshot};
use registry_sync_sources::SourceEvent;
use registry_sync_sources::eureka::{EurekaConfig, EurekaSource};
use registry_sync_testing::servers::{SpringApp, TestEureka, free_port, shared_eureka};
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
    watch_at(server.url())
}

fn watch_at(url: String) -> Watch {
    let mut config = EurekaConfig::new(url);
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
        self.until_within(DEADLINE, what, cond).await
    }

    async fn until_within(
        &mut self,
        limit: Duration,
        what: &str,
        cond: impl Fn(&RegistrySnapshot) -> bool,
    ) -> RegistrySnapshot {
        let deadline = tokio::time::Instant::now() + limit;
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
                Err(_) => panic!("{what}: no matching snapshot within {limit:?}"),
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

/// The data-center block every registration carries: a real server refuses one without
/// its `@class` ("cannot parse request body"), and so does the stand-in.
static DATA_CENTER: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(
    || json!({"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"}),
);

/// An app name no other test on the shared server uses.
fn unique_app(tag: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{tag}-{}-{n}", std::process::id()).to_uppercase()
}

fn instance_of(app: &str, id: &str, ip: &str, port: u16, version: &str) -> serde_json::Value {
    json!({"instanceId": id, "hostName": format!("{id}.local"), "app": app, "ipAddr": ip,
        "status": "UP", "port": {"$": port, "@enabled": "true"}, "securePort": {"$": 443, "@enabled": "false"},
        "metadata": {"version": version}, "dataCenterInfo": DATA_CENTER.clone()})
}

fn orders(id: &str, port: u16, version: &str) -> serde_json::Value {
    json!({"instanceId": id, "hostName": format!("{id}.local"), "app": "ORDERS", "ipAddr": "10.0.0.1",
        "status": "UP", "port": {"$": port, "@enabled": "true"}, "securePort": {"$": 443, "@enabled": "false"},
        "metadata": {"version": version}, "dataCenterInfo": DATA_CENTER.clone()})
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
        Ok(Some(SourceEvent::Failed { error, .. })) => {
            assert!(error.message.contains("eureka"), "{error}");
            assert_eq!(
                error.reason,
                registry_sync_sources::FailureReason::Unreachable,
                "{error}"
            );
        }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_eureka_server_is_followed_through_registrations_status_overrides_and_cancels() {
    let Some(eureka) = shared_eureka() else {
        return;
    };
    let app = unique_app("orders");
    eureka.register(&app, instance_of(&app, "o1", "10.0.0.1", 8080, "v1"));
    let mut w = watch_at(eureka.url.clone());
    w.until("o1 appears", |s| {
        instance(s, &app, "o1").is_some_and(|i| i.healthy)
    })
    .await;
    // A re-registration with another port and metadata.
    eureka.register(&app, instance_of(&app, "o1", "10.0.0.1", 9090, "v2"));
    w.until("port and metadata follow", |s| {
        instance(s, &app, "o1")
            .is_some_and(|i| i.ports[0].number == 9090 && i.labels.get("version").is_some_and(|v| v == "v2"))
    })
    .await;
    eureka.set_status(&app, "o1", "OUT_OF_SERVICE");
    w.until("the status override follows", |s| {
        instance(s, &app, "o1").is_some_and(|i| !i.healthy)
    })
    .await;
    eureka.register(&app, instance_of(&app, "o2", "10.0.0.2", 8080, "v1"));
    w.until("a second instance", |s| instance(s, &app, "o2").is_some())
        .await;
    eureka.cancel(&app, "o1");
    w.until("o1 goes", |s| instance(s, &app, "o1").is_none()).await;
    eureka.cancel(&app, "o2");
    w.until("the app goes with its last instance", |s| {
        !s.services().iter().any(|service| service.name == app)
    })
    .await;
    assert_eq!(w.failures, 0);
}

/// A service registered by Spring Cloud's own Eureka client, with metadata from its
/// configuration, is synced as such, and leaves when the service shuts down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_registered_by_spring_clouds_eureka_client_is_synced_with_its_metadata() {
    let Some(eureka) = shared_eureka() else {
        return;
    };
    let name = unique_app("catalog").to_lowercase();
    let port = free_port();
    let Some(mut service) = SpringApp::start(
        "eureka-client.jar",
        &[
            format!("--spring.application.name={name}"),
            "--server.address=127.0.0.1".into(),
            format!("--server.port={port}"),
            format!("--eureka.client.service-url.defaultZone={}/", eureka.url),
            "--eureka.client.fetch-registry=false".into(),
            "--eureka.instance.prefer-ip-address=true".into(),
            "--eureka.instance.ip-address=127.0.0.1".into(),
            "--eureka.instance.metadata-map.version=v7".into(),
            "--eureka.instance.metadata-map.team=catalog".into(),
        ],
    ) else {
        return;
    };
    let app = name.to_uppercase();
    let mut w = watch_at(eureka.url.clone());
    // A JVM starts, then registers.
    let found = w
        .until_within(Duration::from_secs(90), "the Spring service appears", |s| {
            s.services()
                .iter()
                .any(|service| service.name == app && !service.instances.is_empty())
        })
        .await;
    let synced = &found.services().iter().find(|s| s.name == app).unwrap().instances[0];
    assert!(synced.healthy, "{synced:?}");
    assert_eq!(synced.address.to_string(), "127.0.0.1");
    assert_eq!(synced.ports[0].number, port);
    assert_eq!(synced.labels.get("version").map(String::as_str), Some("v7"));
    assert_eq!(synced.labels.get("team").map(String::as_str), Some("catalog"));

    // Shut down as a pod is: the client cancels its registration.
    tokio::task::block_in_place(|| service.terminate());
    w.until("the Spring service leaves", |s| {
        !s.services().iter().any(|service| service.name == app)
    })
    .await;
}

/// With Eureka's defaults, its read-only response cache is refreshed every 30 s: a
/// registration reaches registry-sync (and every other Eureka client) up to 30 s late.
/// The shared server turns that cache off; this private one keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_eurekas_default_response_cache_a_registration_is_seen_up_to_30_s_late() {
    let Some(eureka) = tokio::task::block_in_place(|| TestEureka::start(&[])) else {
        return;
    };
    let mut w = watch_at(eureka.url());
    // The first fetch fills the read-only cache with an empty registry.
    w.until("the empty registry", |s| s.services().is_empty()).await;
    let started = tokio::time::Instant::now();
    eureka
        .rest()
        .register("ORDERS", instance_of("ORDERS", "o1", "10.0.0.1", 8080, "v1"));
    let (_, apps) = registry_sync_testing::servers::http("GET", &format!("{}/apps", eureka.url()), None);
    let cached = !apps.contains("\"o1\"");
    let view = w
        .until_within(Duration::from_secs(45), "o1 appears", |s| {
            instance(s, "ORDERS", "o1").is_some()
        })
        .await;
    let delay = started.elapsed();
    eprintln!(
        "Eureka defaults: a registration seen after {delay:?} (the response cache served the registry without it: {cached})"
    );
    assert!(instance(&view, "ORDERS", "o1").is_some());
    assert!(
        cached,
        "right after the registration, the cache still served the registry without it"
    );
    assert!(
        delay <= Duration::from_secs(31) + Duration::from_millis(500),
        "{delay:?}"
    );
}
