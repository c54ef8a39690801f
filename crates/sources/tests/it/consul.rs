//! The Consul source against the Consul stand-in: blocking queries follow every kind
//! of change, failures keep the state, an index reset and ACL tokens are handled.
#![cfg(feature = "consul")]

use std::time::Duration;

use registry_sync_catalog::RegistrySnapshot;
use registry_sync_sources::SourceEvent;
use registry_sync_sources::consul::{ConsulConfig, ConsulSource};
use registry_sync_sources::secret::SecretSource;
use registry_sync_testing::standins::consul::ConsulStandIn;
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

fn watch(config: ConsulConfig) -> Watch {
    let (tx, rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    tokio::spawn(ConsulSource::new("consul", config).watch(tx, cancel.clone()));
    Watch {
        rx,
        cancel,
        failures: 0,
        view: RegistrySnapshot::default(),
    }
}

fn config(server: &ConsulStandIn) -> ConsulConfig {
    let mut config = ConsulConfig::new(server.url());
    config.wait = Duration::from_secs(2);
    config
}

impl Watch {
    /// The first snapshot that satisfies `cond`, counting failures on the way.
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

    /// Folds in whatever arrives for `how_long`, counting failures.
    async fn follow(&mut self, how_long: Duration) {
        let deadline = tokio::time::Instant::now() + how_long;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            match event {
                SourceEvent::Failed { .. } => self.failures += 1,
                event => {
                    event.fold_into(&mut self.view);
                }
            }
        }
    }

    async fn failed(&mut self) -> String {
        match tokio::time::timeout(DEADLINE, self.rx.recv()).await {
            Ok(Some(SourceEvent::Failed { error, .. })) => error.message,
            Ok(Some(event)) => panic!("a view while failing: {event:?}"),
            _ => panic!("no failure reported"),
        }
    }
}

fn instance<'a>(
    snapshot: &'a RegistrySnapshot,
    service: &str,
    id: &str,
) -> Option<&'a registry_sync_catalog::Instance> {
    snapshot
        .services()
        .iter()
        .find(|s| s.name == service)?
        .instances
        .iter()
        .find(|i| i.id == id)
}

fn web(id: &str, port: u16, version: &str) -> serde_json::Value {
    json!({"ID": id, "Name": "web", "Address": "10.0.0.1", "Port": port,
        "Meta": {"version": version, "protocol": "http"}, "Weights": {"Passing": 5, "Warning": 1},
        "Check": {"CheckID": format!("check-{id}"), "TTL": "30s", "Status": "passing"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_changed_and_deregistered_instances_are_followed_through_blocking_queries() {
    let server = ConsulStandIn::start();
    server.register(web("web-1", 8080, "v1")).unwrap();
    let mut w = watch(config(&server));
    let first = w
        .until("web appears", |s| {
            instance(s, "web", "standin-node/web-1").is_some()
        })
        .await;
    let one = instance(&first, "web", "standin-node/web-1").unwrap();
    assert_eq!(
        (one.ports[0].number, one.weight, one.healthy),
        (8080, Some(5), true)
    );

    server.register(web("web-1", 9090, "v2")).unwrap();
    w.until("port and meta follow", |s| {
        instance(s, "web", "standin-node/web-1")
            .is_some_and(|i| i.ports[0].number == 9090 && i.labels.get("version").is_some_and(|v| v == "v2"))
    })
    .await;
    server.set_check("check-web-1", "critical");
    w.until("health follows", |s| {
        instance(s, "web", "standin-node/web-1").is_some_and(|i| !i.healthy)
    })
    .await;

    server.register(web("web-2", 8080, "v1")).unwrap();
    w.until("a second instance", |s| {
        instance(s, "web", "standin-node/web-2").is_some()
    })
    .await;
    assert!(server.deregister("web-1"));
    let after = w
        .until("web-1 goes", |s| {
            instance(s, "web", "standin-node/web-1").is_none()
        })
        .await;
    assert!(instance(&after, "web", "standin-node/web-2").is_some());

    assert!(server.deregister("web-2"));
    w.until("the service goes with its last instance", |s| {
        s.services().is_empty()
    })
    .await;
    assert_eq!(w.failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_one_failure_that_deletes_nothing_and_the_source_converges_after() {
    let mut server = ConsulStandIn::start();
    server.register(web("web-1", 8080, "v1")).unwrap();
    let mut w = watch(config(&server));
    w.until("web appears", |s| s.services().len() == 1).await;

    server.stop();
    let error = w.failed().await;
    assert!(
        error.contains("consul") && error.contains(&server.url()),
        "{error}"
    );
    // Nothing else arrives while it is down: no snapshot, no second failure.
    let quiet = tokio::time::timeout(Duration::from_secs(2), w.rx.recv()).await;
    assert!(quiet.is_err(), "an event while the server was down: {quiet:?}");

    server.register(web("web-2", 8080, "v1")).unwrap();
    server.resume();
    let back = w
        .until("converges", |s| {
            instance(s, "web", "standin-node/web-2").is_some()
        })
        .await;
    assert!(instance(&back, "web", "standin-node/web-1").is_some());
    assert_eq!(w.failures, 0, "one failure only");

    server.faults().fail_next(3);
    server.register(web("web-3", 8080, "v1")).unwrap();
    w.until("converges after 5xx", |s| {
        instance(s, "web", "standin-node/web-3").is_some()
    })
    .await;
    // The answer that carries web-3 may come before or after the requests the 500s hit,
    // and a good answer between two of them ends a failure: at least one report, never
    // more than the three failed requests, and the view kept.
    w.follow(Duration::from_secs(3)).await;
    assert!((1..=3).contains(&w.failures), "{} failures", w.failures);
    assert!(instance(&w.view, "web", "standin-node/web-3").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_that_goes_backwards_resets_the_query_and_later_changes_are_seen() {
    let server = ConsulStandIn::start();
    server.register(web("web-1", 8080, "v1")).unwrap();
    let mut config = config(&server);
    config.wait = Duration::from_millis(500);
    let mut w = watch(config);
    w.until("web appears", |s| s.services().len() == 1).await;
    server.reset_index();
    server.register(web("web-1", 8081, "v1")).unwrap();
    w.until("the change after the reset", |s| {
        instance(s, "web", "standin-node/web-1").is_some_and(|i| i.ports[0].number == 8081)
    })
    .await;
    server.register(web("web-2", 8080, "v1")).unwrap();
    w.until("and the next one", |s| {
        instance(s, "web", "standin-node/web-2").is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_token_is_sent_and_a_refused_one_fails_without_showing_it() {
    let server = ConsulStandIn::start();
    server.require_token("s3cret-token");
    server.register(web("web-1", 8080, "v1")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "wrong-token\n").unwrap();
    let mut config = config(&server);
    config.token = Some(SecretSource::File(path.clone()));
    let mut w = watch(config);
    let error = w.failed().await;
    assert!(error.contains("token_file") && error.contains("403"), "{error}");
    assert!(!error.contains("wrong-token"), "{error}");
    // A rotated token is read at the next retry.
    std::fs::write(&path, "s3cret-token\n").unwrap();
    w.until("the right token reads", |s| s.services().len() == 1)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_services_are_all_synced_and_an_idle_estate_costs_almost_no_requests() {
    let server = ConsulStandIn::start();
    for n in 0..1000 {
        server
            .register(json!({"ID": format!("svc-{n}"), "Name": format!("svc-{n}"), "Address": "10.0.0.1", "Port": 8000 + n}))
            .unwrap();
    }
    let mut config = ConsulConfig::new(server.url());
    config.wait = Duration::from_secs(300);
    let mut w = watch(config);
    let snapshot = w.until("all thousand", |s| s.services().len() == 1000).await;
    assert_eq!(snapshot.instance_count(), 1000);
    // Every task's first blocking query may still be on its way; then measure.
    let mut before = server.counts().total();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = server.counts().total();
        if now == before {
            break;
        }
        before = now;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = server.counts().total() - before;
    eprintln!("consul: {idle} requests in 3 s with 1000 idle services (wait 5m)");
    assert!(idle <= 3, "{idle} requests while nothing changed");

    server
        .register(json!({"ID": "svc-7", "Name": "svc-7", "Address": "10.0.0.2", "Port": 7}))
        .unwrap();
    w.until("one change in a thousand", |s| {
        instance(s, "svc-7", "standin-node/svc-7").is_some_and(|i| i.ports[0].number == 7)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_reads_everything_once_and_names_the_registry_when_unreachable() {
    let server = ConsulStandIn::start();
    server.register(web("web-1", 8080, "v1")).unwrap();
    server
        .register(json!({"ID": "p", "Name": "web-sidecar-proxy", "Kind": "connect-proxy", "Port": 21000}))
        .unwrap();
    let snapshot = ConsulSource::new("consul", config(&server)).load().await.unwrap();
    let names: Vec<_> = snapshot.services().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web"], "proxies are not services of the mesh");

    let mut wrong_dc = config(&server);
    wrong_dc.datacenter = Some("dc9".into());
    let error = ConsulSource::new("consul", wrong_dc)
        .load()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("No path to datacenter"), "{error}");
    drop(server);
    let closed = ConsulConfig::new("http://127.0.0.1:1");
    let error = ConsulSource::new("consul", closed)
        .load()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("registry \"consul\"") && error.contains("check `address`"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_filtered_by_acls_is_a_failure_that_keeps_the_services_not_a_deletion() {
    let server = ConsulStandIn::start();
    server.register(web("web-1", 8080, "v1")).unwrap();
    let mut other = web("api-1", 9090, "v1");
    other["Name"] = json!("api");
    server.register(other).unwrap();
    let mut w = watch(config(&server));
    w.until("both services", |s| s.services().len() == 2).await;

    // The token loses its rights on one service: Consul answers 200 without it. The
    // filtered catalog fails the registry; a filtered health answer makes api unknown.
    // Either way api is never given up.
    server.deny_read(&["api"]);
    let error = loop {
        match tokio::time::timeout(DEADLINE, w.rx.recv()).await {
            Ok(Some(SourceEvent::Failed { error, .. })) => break error,
            Ok(Some(event)) => {
                event.fold_into(&mut w.view);
                let view = &w.view;
                assert!(
                    view.services().iter().any(|s| s.name == "api")
                        || view.unknown.iter().any(|k| k.name == "api"),
                    "api was given up: {view:?}"
                )
            }
            other => panic!("no failure reported: {other:?}"),
        }
    };
    assert_eq!(
        error.reason,
        registry_sync_sources::FailureReason::Denied,
        "{error}"
    );
    assert!(error.message.contains("filtered"), "{error}");
    assert!(
        error.message.contains("X-Consul-Results-Filtered-By-ACLs"),
        "{error}"
    );

    // Rights come back: the full view flows again, nothing was ever emitted without api.
    server.deny_read(&[]);
    let back = w.until("both services again", |s| s.services().len() == 2).await;
    assert!(back.services().iter().any(|s| s.name == "api"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_service_that_cannot_be_read_keeps_its_state_while_the_others_sync_on() {
    let server = ConsulStandIn::start();
    server.register(web("web-1", 8080, "v1")).unwrap();
    let mut api = web("api-1", 9090, "v1");
    api["Name"] = json!("api");
    server.register(api).unwrap();
    // api fails from the start: never read.
    server.faults().fail_path("/v1/health/service/api");
    let mut w = watch(config(&server));
    let first = w
        .until("web syncs although api fails", |s| {
            instance(s, "web", "standin-node/web-1").is_some()
        })
        .await;
    assert!(
        first.unknown.iter().any(|k| k.name == "api"),
        "api is unknown, not absent: {:?}",
        first.unknown
    );
    assert!(first.services().iter().all(|s| s.name != "api"));

    // web keeps following while api still fails.
    server.register(web("web-1", 8181, "v2")).unwrap();
    let moved = w
        .until("web follows", |s| {
            instance(s, "web", "standin-node/web-1").is_some_and(|i| i.ports[0].number == 8181)
        })
        .await;
    assert!(moved.unknown.iter().any(|k| k.name == "api"));

    server.faults().heal_path("/v1/health/service/api");
    w.until("api readable again", |s| {
        s.unknown.is_empty() && s.services().iter().any(|s| s.name == "api")
    })
    .await;
}

fn many(n: usize) -> impl Iterator<Item = serde_json::Value> {
    (0..n).map(|i| {
        json!({"ID": format!("svc-{i:04}-1"), "Name": format!("svc-{i:04}"), "Address": "10.0.0.1",
            "Port": 8000 + (i % 1000) as u16,
            "Check": {"CheckID": format!("check-{i:04}"), "TTL": "30s", "Status": "passing"}})
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_services_than_consul_allows_connections_all_sync_and_follow_changes() {
    const SERVICES: usize = 5_000;
    let server = ConsulStandIn::start();
    let start = std::time::Instant::now();
    for body in many(SERVICES) {
        server.register(body).unwrap();
    }
    eprintln!("registered {SERVICES} in {:?}", start.elapsed());
    let start = std::time::Instant::now();
    let mut w = watch(config(&server));
    let first = w
        .until("every service, none unknown", |s| {
            s.services().len() == SERVICES && s.unknown.is_empty()
        })
        .await;
    assert_eq!(first.instance_count(), SERVICES);
    eprintln!(
        "first view of {SERVICES} services in {:?}: {} health, {} catalog, {} state requests, at most {} connections open",
        start.elapsed(),
        server.counts().of("health/service"),
        server.counts().of("catalog/services"),
        server.counts().of("health/state"),
        server.connections().peak(),
    );
    let start = std::time::Instant::now();
    assert_eq!(
        server.connections().refused(),
        0,
        "never over Consul's per-client limit"
    );
    // Idle pooled connections count against Consul's limit as much as busy ones.
    assert!(
        server.connections().peak() <= registry_sync_sources::consul::DEFAULT_MAX_CONNECTIONS,
        "peak {} connections open at once",
        server.connections().peak()
    );

    // A health change and a port change of a service far down the list both arrive.
    server.set_check("check-4977", "critical");
    w.until("health of svc-4977", |s| {
        instance(s, "svc-4977", "standin-node/svc-4977-1").is_some_and(|i| !i.healthy)
    })
    .await;
    eprintln!("a health change in {:?}", start.elapsed());
    let start = std::time::Instant::now();
    let mut moved = many(SERVICES).nth(4981).unwrap();
    moved["Port"] = json!(9999);
    server.register(moved).unwrap();
    w.until("port of svc-4981", |s| {
        instance(s, "svc-4981", "standin-node/svc-4981-1").is_some_and(|i| i.ports[0].number == 9999)
    })
    .await;
    eprintln!("a port change in {:?}", start.elapsed());
    assert_eq!(server.connections().refused(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_counts_exactly_the_requests_consul_answered() {
    let server = ConsulStandIn::start();
    server.register(web("w1", 8080, "v1")).unwrap();
    let name = "consul-requests-counted";
    ConsulSource::new(name, config(&server))
        .load()
        .await
        .expect("load");
    let sent = registry_sync_sources::requests::Requests::of(name).total();
    assert!(sent > 0);
    assert_eq!(
        sent,
        server.counts().total(),
        "every request the stand-in saw, no more"
    );
}
