//! Helpers shared by the kube-rs tests.

use std::future::Future;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::Status;
use kube::{Client, Config};
use registry_sync_testing::kube::{Resource, StandIn};
use serde_json::{Value, json};

pub const NS: &str = "mesh";

pub async fn setup() -> (StandIn, Client) {
    let server = StandIn::start().await;
    let client = Client::try_from(server.kube_config()).expect("a client for the stand-in");
    (server, client)
}

/// A client that surfaces 429/503/504 instead of retrying them.
pub fn client_without_retry(server: &StandIn) -> Client {
    let mut config: Config = server.kube_config();
    config.default_retry = false;
    Client::try_from(config).expect("a client for the stand-in")
}

pub fn api(client: &Client, resource: Resource) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, &resource.api_resource())
}

pub fn spec() -> Value {
    json!({
        "hosts": ["orders.shop.consul"],
        "location": "MESH_INTERNAL",
        "resolution": "STATIC",
        "ports": [{"name": "http-8080", "number": 8080, "protocol": "HTTP"}],
        "endpoints": [{"address": "10.0.0.1", "ports": {"http-8080": 8080}}],
    })
}

/// A ServiceEntry as JSON.
pub fn service_entry(name: &str, labels: Value, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    })
}

pub fn dynamic(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("a valid DynamicObject")
}

pub async fn create_se(client: &Client, name: &str, labels: Value) -> DynamicObject {
    api(client, Resource::ServiceEntry)
        .create(
            &PostParams::default(),
            &dynamic(service_entry(name, labels, spec())),
        )
        .await
        .expect("create")
}

pub async fn apply(client: &Client, manager: &str, config: &Value) -> Result<DynamicObject, kube::Error> {
    let name = config["metadata"]["name"].as_str().expect("a name");
    api(client, Resource::ServiceEntry)
        .patch(name, &PatchParams::apply(manager), &Patch::Apply(config))
        .await
}

/// The `Status` of an API error; panics on success or another kind of error.
pub fn status<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

pub fn rv(obj: &DynamicObject) -> u64 {
    obj.metadata
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .expect("a numeric resourceVersion")
}

/// Polls `check` until it holds, for up to 10 seconds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
