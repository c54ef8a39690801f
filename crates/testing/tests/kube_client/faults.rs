//! Injected faults as kube-rs sees them, and exact request counts.

use std::time::{Duration, Instant};

use axum::http::Request;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::client::Body;
use registry_sync_testing::kube::{Resource, Verb};
use serde_json::json;

use crate::common::{NS, api, apply, client_without_retry, create_se, service_entry, setup, spec, status};

#[tokio::test]
async fn a_throttled_request_is_a_429_too_many_requests_with_retry_after() {
    let (server, _) = setup().await;
    let client = client_without_retry(&server);
    server.faults().throttle_next(1, 7);
    let err = status(api(&client, Resource::ServiceEntry).get("orders").await);
    assert_eq!((err.code, err.reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(err.details.expect("details").retry_after_seconds, 7);

    server.faults().throttle_next(1, 3);
    let path = format!("/apis/networking.istio.io/v1/namespaces/{NS}/serviceentries");
    let response = client
        .send(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");

    let err = status(api(&client, Resource::ServiceEntry).get("orders").await);
    assert_eq!(err.code, 404, "only the next requests are throttled");
}

#[tokio::test]
async fn kube_default_retry_rides_over_throttled_requests_and_every_attempt_is_counted() {
    let (server, client) = setup().await;
    create_se(&client, "orders", json!({})).await;
    server.reset_counts();
    server.faults().throttle_next(2, 0);
    api(&client, Resource::ServiceEntry)
        .get("orders")
        .await
        .expect("retried until served");
    assert_eq!(server.counts().of(Verb::Get, Resource::ServiceEntry), 3);
}

#[tokio::test]
async fn a_fraction_of_requests_is_throttled_deterministically() {
    let (server, _) = setup().await;
    let client = client_without_retry(&server);
    server.faults().throttle_fraction(0.5, 1);
    let mut throttled = 0;
    for _ in 0..10 {
        if let Err(kube::Error::Api(s)) = api(&client, Resource::ServiceEntry).get("x").await
            && s.code == 429
        {
            throttled += 1;
        }
    }
    assert_eq!(throttled, 5);
}

#[tokio::test]
async fn failing_writes_are_500_internal_errors_that_change_nothing() {
    let (server, client) = setup().await;
    let config = service_entry("orders", json!({}), spec());
    server.faults().fail_next_writes(2);
    let err = status(apply(&client, "registry-sync", &config).await);
    assert_eq!((err.code, err.reason.as_str()), (500, "InternalError"));
    assert!(
        api(&client, Resource::ServiceEntry).get("orders").await.is_err(),
        "reads are not failed"
    );
    let err = status(apply(&client, "registry-sync", &config).await);
    assert_eq!(err.code, 500);
    assert!(server.object(Resource::ServiceEntry, NS, "orders").is_none());
    apply(&client, "registry-sync", &config)
        .await
        .expect("the third write succeeds");
    assert_eq!(server.counts().of(Verb::Apply, Resource::ServiceEntry), 3);
}

#[tokio::test]
async fn latency_delays_every_request() {
    let (server, client) = setup().await;
    server.faults().set_latency(Duration::from_millis(300));
    let started = Instant::now();
    let _ = api(&client, Resource::ServiceEntry).get("orders").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    server.faults().clear();
    let started = Instant::now();
    let _ = api(&client, Resource::ServiceEntry).get("orders").await;
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn a_paused_server_holds_requests_until_it_is_resumed() {
    let (server, client) = setup().await;
    server.faults().pause();
    let api = api(&client, Resource::ServiceEntry);
    let pending = tokio::spawn(async move { api.get("orders").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "held while paused");
    server.faults().resume();
    let result = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("answered once resumed");
    assert_eq!(status(result.unwrap()).code, 404);
}

#[tokio::test]
async fn counts_are_exact_per_verb_and_resource() {
    let (server, client) = setup().await;
    let ses = api(&client, Resource::ServiceEntry);
    let config = service_entry("orders", json!({}), spec());
    apply(&client, "registry-sync", &config).await.unwrap();
    apply(&client, "registry-sync", &config).await.unwrap();
    create_se(&client, "payments", json!({})).await;
    let obj = ses.get("payments").await.unwrap();
    ses.replace("payments", &PostParams::default(), &obj)
        .await
        .unwrap();
    let label = json!({"metadata": {"labels": {"a": "b"}}});
    ses.patch("payments", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    ses.list(&Default::default()).await.unwrap();
    ses.delete("payments", &DeleteParams::default()).await.unwrap();
    let _ = ses.delete("payments", &DeleteParams::default()).await;
    let wes = api(&client, Resource::WorkloadEntry);
    let we = json!({"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
                    "metadata": {"name": "w"}, "spec": {"address": "10.0.0.1"}});
    wes.patch("w", &PatchParams::apply("registry-sync"), &Patch::Apply(&we))
        .await
        .unwrap();

    let c = server.counts();
    let se = Resource::ServiceEntry;
    assert_eq!(
        [
            c.of(Verb::Apply, se),
            c.of(Verb::Create, se),
            c.of(Verb::Get, se),
            c.of(Verb::Update, se)
        ],
        [2, 1, 1, 1]
    );
    assert_eq!(
        [
            c.of(Verb::Patch, se),
            c.of(Verb::List, se),
            c.of(Verb::Delete, se)
        ],
        [1, 1, 2]
    );
    assert_eq!(c.writes_of(se), 7);
    assert_eq!(c.of(Verb::Apply, Resource::WorkloadEntry), 1);
    assert_eq!((c.writes(), c.total()), (8, 10));
}
