//! A Eureka REST API stand-in (`/eureka/apps...`), JSON only.
//!
//! Registrations live until cancelled (no lease expiry). Every change — register,
//! status override, cancel — goes into a recently-changed queue kept for three minutes,
//! as Eureka's `retentionTimeInMSInDeltaQueue`; `/apps/delta` answers that queue, each
//! instance with its `actionType`, and the `apps__hashcode` of the whole registry (not
//! of the delta), as the server does. With [`EurekaStandIn::set_single_as_object`] a
//! list of one application or instance is written as the item itself, the quirk of
//! Eureka's JSON codec. Not modelled: XML, lease expiry and self-preservation, peer
//! replication, `lastDirtyTimestamp` conflict rules, VIP queries.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use crate::standins::server::{Server, lock};
use crate::standins::{Counts, Faults};

const RETENTION: Duration = Duration::from_secs(180);

#[derive(Default)]
struct Data {
    /// By upper-case app name, then instance id.
    apps: BTreeMap<String, BTreeMap<String, Value>>,
    recent: VecDeque<(Instant, Value)>,
    version: u64,
}

#[derive(Default)]
struct Shared {
    data: Mutex<Data>,
    single_as_object: AtomicBool,
    wrong_hashcode: AtomicU64,
}

/// The Eureka stand-in. Dropping it stops the server.
pub struct EurekaStandIn {
    server: Server,
    shared: Arc<Shared>,
}

impl EurekaStandIn {
    pub fn start() -> EurekaStandIn {
        let shared = Arc::new(Shared::default());
        let router = Router::new()
            .route("/eureka/apps", get(full))
            .route("/eureka/apps/", get(full))
            .route("/eureka/apps/delta", get(delta))
            .route("/eureka/apps/{app}", post(register))
            .route("/eureka/apps/{app}/{id}", put(heartbeat).delete(cancel))
            .route(
                "/eureka/apps/{app}/{id}/status",
                put(set_status).delete(clear_status),
            )
            .with_state(Arc::clone(&shared));
        EurekaStandIn {
            server: Server::start(router, classify),
            shared,
        }
    }

    /// The service URL: `http://127.0.0.1:<port>/eureka`.
    pub fn url(&self) -> String {
        format!("http://{}/eureka", self.server.address())
    }

    pub fn address(&self) -> SocketAddr {
        self.server.address()
    }

    pub fn faults(&self) -> &Faults {
        &self.server.faults
    }

    pub fn counts(&self) -> &Counts {
        &self.server.counts
    }

    pub fn stop(&mut self) {
        self.server.stop();
    }

    pub fn resume(&mut self) {
        self.server.resume();
    }

    /// Writes lists of one as the item itself, as Eureka's JSON codec does.
    pub fn set_single_as_object(&self, on: bool) {
        self.shared.single_as_object.store(on, Ordering::Relaxed);
    }

    /// The next `n` deltas carry a wrong `apps__hashcode`.
    pub fn wrong_hashcode_next(&self, n: u64) {
        self.shared.wrong_hashcode.store(n, Ordering::Relaxed);
    }

    /// Changes an instance without a trace in the delta queue, as a missed delta looks.
    pub fn change_silently(&self, app: &str, id: &str, status: &str) -> bool {
        let mut data = lock(&self.shared.data);
        match data
            .apps
            .get_mut(&app.to_ascii_uppercase())
            .and_then(|a| a.get_mut(id))
        {
            Some(instance) => {
                instance["status"] = json!(status);
                true
            }
            None => false,
        }
    }

    /// Registers as `POST /eureka/apps/<APP>` with `{"instance": ...}`.
    pub fn register(&self, app: &str, instance: Value) -> Result<(), String> {
        self.shared.register(app, json!({ "instance": instance }))
    }

    pub fn cancel(&self, app: &str, id: &str) -> bool {
        self.shared.cancel(app, id)
    }

    /// Overrides an instance's status (`OUT_OF_SERVICE`, `UP`, ...).
    pub fn set_status(&self, app: &str, id: &str, status: &str) -> bool {
        self.shared.set_status(app, id, status)
    }
}

impl Shared {
    fn changed(data: &mut Data, action: &str, instance: &Value) {
        let mut entry = instance.clone();
        entry["actionType"] = json!(action);
        let now = Instant::now();
        data.recent.push_back((now, entry));
        while data
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RETENTION)
        {
            data.recent.pop_front();
        }
        data.version += 1;
    }

    fn register(&self, app: &str, body: Value) -> Result<(), String> {
        let app = app.to_ascii_uppercase();
        let Some(Value::Object(mut instance)) = body.get("instance").cloned() else {
            return Err("the body must be {\"instance\": {...}}".into());
        };
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        // The real server's JSON reader needs the data-center block's type; without it
        // the registration is refused with `400` "cannot parse request body".
        if text(instance.get("dataCenterInfo").and_then(|d| d.get("@class"))).is_none() {
            return Err("cannot parse request body".into());
        }
        let id = text(instance.get("instanceId"))
            .or_else(|| text(instance.get("hostName")))
            .ok_or("the instance needs instanceId or hostName")?;
        instance.insert("instanceId".into(), json!(id));
        instance.insert("app".into(), json!(app));
        instance.entry("status").or_insert(json!("UP"));
        instance.entry("overriddenStatus").or_insert(json!("UNKNOWN"));
        let instance = Value::Object(instance);
        let mut data = lock(&self.data);
        let action = match data.apps.get(&app).and_then(|a| a.get(&id)) {
            Some(_) => "MODIFIED",
            None => "ADDED",
        };
        data.apps.entry(app).or_default().insert(id, instance.clone());
        Self::changed(&mut data, action, &instance);
        Ok(())
    }

    fn cancel(&self, app: &str, id: &str) -> bool {
        let app = app.to_ascii_uppercase();
        let mut data = lock(&self.data);
        let Some(instances) = data.apps.get_mut(&app) else {
            return false;
        };
        let Some(instance) = instances.remove(id) else {
            return false;
        };
        if instances.is_empty() {
            data.apps.remove(&app);
        }
        Self::changed(&mut data, "DELETED", &instance);
        true
    }

    fn set_status(&self, app: &str, id: &str, status: &str) -> bool {
        let mut data = lock(&self.data);
        let Some(instance) = data
            .apps
            .get_mut(&app.to_ascii_uppercase())
            .and_then(|a| a.get_mut(id))
        else {
            return false;
        };
        instance["status"] = json!(status);
        instance["overriddenStatus"] = json!(status);
        let instance = instance.clone();
        Self::changed(&mut data, "MODIFIED", &instance);
        true
    }

    fn hashcode(data: &Data) -> String {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for instance in data.apps.values().flat_map(BTreeMap::values) {
            *counts
                .entry(instance["status"].as_str().unwrap_or("UNKNOWN").to_string())
                .or_default() += 1;
        }
        counts.iter().map(|(s, n)| format!("{s}_{n}_")).collect()
    }

    /// `{"applications": {...}}` of the given instances, grouped by app.
    fn answer(&self, data: &Data, instances: Vec<&Value>, hashcode: String) -> Response {
        let single = self.single_as_object.load(Ordering::Relaxed);
        let list = |mut items: Vec<Value>| match items.len() {
            1 if single => items.remove(0),
            _ => Value::Array(items),
        };
        let mut by_app: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for instance in instances {
            let app = instance["app"].as_str().unwrap_or_default().to_string();
            by_app.entry(app).or_default().push(instance.clone());
        }
        let apps: Vec<Value> = by_app
            .into_iter()
            .map(|(name, instances)| json!({"name": name, "instance": list(instances)}))
            .collect();
        let body = json!({"applications": {
            "versions__delta": data.version.to_string(),
            "apps__hashcode": hashcode,
            "application": list(apps),
        }});
        let mut response = (StatusCode::OK, body.to_string()).into_response();
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        response
    }
}

type St = State<Arc<Shared>>;

async fn full(State(shared): St) -> Response {
    let data = lock(&shared.data);
    let instances: Vec<&Value> = data.apps.values().flat_map(BTreeMap::values).collect();
    shared.answer(&data, instances, Shared::hashcode(&data))
}

async fn delta(State(shared): St) -> Response {
    let data = lock(&shared.data);
    let instances: Vec<&Value> = data.recent.iter().map(|(_, v)| v).collect();
    let mut hashcode = Shared::hashcode(&data);
    let wrong = shared
        .wrong_hashcode
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    if wrong {
        hashcode.push_str("WRONG_1_");
    }
    shared.answer(&data, instances, hashcode)
}

async fn register(State(shared): St, Path(app): Path<String>, body: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    match shared.register(&app, body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => (StatusCode::BAD_REQUEST, error).into_response(),
    }
}

async fn heartbeat(State(shared): St, Path((app, id)): Path<(String, String)>) -> Response {
    let data = lock(&shared.data);
    match data.apps.get(&app.to_ascii_uppercase()).and_then(|a| a.get(&id)) {
        Some(_) => StatusCode::OK.into_response(),
        // The client re-registers on 404.
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn cancel(State(shared): St, Path((app, id)): Path<(String, String)>) -> Response {
    match shared.cancel(&app, &id) {
        true => StatusCode::OK.into_response(),
        false => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn set_status(
    State(shared): St,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(value) = query.get("value") else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match shared.set_status(&app, &id, value) {
        true => StatusCode::OK.into_response(),
        false => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn clear_status(
    State(shared): St,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let value = query.get("value").map_or("UP", String::as_str);
    match shared.set_status(&app, &id, value) {
        true => StatusCode::OK.into_response(),
        false => StatusCode::NOT_FOUND.into_response(),
    }
}

fn classify(path: &str) -> String {
    match path.trim_end_matches('/') {
        "/eureka/apps" => "apps".into(),
        "/eureka/apps/delta" => "apps/delta".into(),
        _ => "apps/instance".into(),
    }
}
