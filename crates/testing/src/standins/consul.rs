//! A Consul HTTP API stand-in: one datacenter, agent-side registration, and the two
//! read endpoints registry-sync uses, as blocking queries.
//!
//! Indexes follow Consul's raft index: one counter bumped by every write. The catalog
//! service list answers with the index of the last change to any registration (the
//! services table's index, so it moves even when names and tags stay);
//! `/v1/health/state/<state>` with the index of the last change to any check; `/v1/health/service/<name>` with the index of the last change to that
//! service's instances or checks (kept after deregistration, as Consul's tombstones
//! do). A query with `?index=N` is held until its index moves past `N` or `wait`
//! (default 5m, at most 10m) runs out, and then answers the current data and index —
//! even when the index is now *lower* than `N` after [`ConsulStandIn::reset_index`],
//! which is how a restored snapshot or a new cluster looks to a client.
//!
//! Connections: like Consul, at most [`MAX_CONNS_PER_CLIENT`] open HTTP connections per
//! client address; one more is answered `429 Too Many Requests` and closed
//! ([`ConsulStandIn::connections`] changes the limit and counts refusals).
//!
//! ACLs: with [`ConsulStandIn::require_token`], every request needs that token in
//! `X-Consul-Token` (or `?token=`), else `403 ACL not found`. With
//! [`ConsulStandIn::deny_read`] the token loses read rights on some services: they are
//! filtered out of `200` answers, which say so in `X-Consul-Results-Filtered-By-ACLs`. A `dc` other than the
//! stand-in's own answers `500 No path to datacenter`, as Consul does. Not modelled:
//! namespaces and partitions (the parameters are accepted and ignored, like Consul CE),
//! the jitter Consul adds to `wait`, `?passing`, filters, and any other endpoint.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::standins::server::{Server, lock};
use crate::standins::{Counts, Faults};

pub const DATACENTER: &str = "dc1";
/// Consul's default `limits.http_max_conns_per_client`.
pub const MAX_CONNS_PER_CLIENT: usize = 200;
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);

/// A registered service instance.
#[derive(Clone, Debug)]
struct Registration {
    node: String,
    service: Value,
    name: String,
    tags: Vec<String>,
}

#[derive(Clone, Debug)]
struct Check {
    id: String,
    node: String,
    service_id: String,
    service_name: String,
    status: String,
    modify_index: u64,
}

#[derive(Debug, Default)]
struct Data {
    index: u64,
    catalog_index: u64,
    /// The index of the last change to any check (`/v1/health/state/…`).
    checks_index: u64,
    /// By node, then service id.
    services: BTreeMap<(String, String), Registration>,
    service_index: HashMap<String, u64>,
    checks: BTreeMap<String, Check>,
    nodes: BTreeMap<String, String>,
    token: Option<String>,
    /// Instances by service name, and check ids by instance `(node, service id)`: what
    /// Consul's state store indexes, so a read costs its answer, not the estate.
    by_name: HashMap<String, std::collections::BTreeSet<(String, String)>>,
    by_instance: HashMap<(String, String), std::collections::BTreeSet<String>>,
    /// Services the token may not read: left out of answers, which then carry
    /// `X-Consul-Results-Filtered-By-ACLs: true`, as Consul does for a token without
    /// `service:read` on them.
    unreadable: std::collections::BTreeSet<String>,
}

struct Shared {
    data: Mutex<Data>,
    changed: watch::Sender<u64>,
}

/// The Consul stand-in. Dropping it stops the server.
pub struct ConsulStandIn {
    server: Server,
    shared: Arc<Shared>,
}

pub const NODE: &str = "standin-node";

impl ConsulStandIn {
    /// Starts on a free port of 127.0.0.1, with one node, [`NODE`] at 127.0.0.1.
    pub fn start() -> ConsulStandIn {
        let data = Data {
            index: 1,
            catalog_index: 1,
            nodes: BTreeMap::from([(NODE.to_string(), "127.0.0.1".to_string())]),
            ..Data::default()
        };
        let shared = Arc::new(Shared {
            data: Mutex::new(data),
            changed: watch::channel(0).0,
        });
        let router = Router::new()
            .route("/v1/agent/service/register", put(register))
            .route("/v1/agent/service/deregister/{id}", put(deregister))
            .route("/v1/agent/check/{status}/{id}", put(update_check))
            .route("/v1/catalog/services", get(catalog_services))
            .route("/v1/health/service/{name}", get(health_service))
            .route("/v1/health/state/{state}", get(health_state))
            .route("/v1/status/leader", get(leader))
            .with_state(Arc::clone(&shared));
        let server = Server::start(router, classify);
        server.connections.set_limit(MAX_CONNS_PER_CLIENT);
        ConsulStandIn { server, shared }
    }

    /// Open connections per client and Consul's per-client limit
    /// ([`MAX_CONNS_PER_CLIENT`] unless changed).
    pub fn connections(&self) -> &crate::standins::Connections {
        &self.server.connections
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.address())
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

    /// Drops the server and every connection; the data is kept.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Serves the kept data again on the same port.
    pub fn resume(&mut self) {
        self.server.resume();
    }

    /// Requires this ACL token on every request.
    pub fn require_token(&self, token: &str) {
        lock(&self.shared.data).token = Some(token.to_string());
    }

    /// The token loses (or regains, with an empty list) read rights on these services.
    pub fn deny_read(&self, services: &[&str]) {
        lock(&self.shared.data).unreadable = services.iter().map(|s| s.to_string()).collect();
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// Adds (or moves) a node, for services registered with [`Self::register_on`].
    pub fn set_node(&self, node: &str, address: &str) {
        self.shared.write(|data| {
            data.nodes.insert(node.to_string(), address.to_string());
            let names: Vec<String> = data
                .services
                .values()
                .filter(|r| r.node == node)
                .map(|r| r.name.clone())
                .collect();
            names
        });
    }

    /// Registers a service instance on [`NODE`], as `PUT /v1/agent/service/register`.
    pub fn register(&self, body: Value) -> Result<(), String> {
        self.register_on(NODE, body)
    }

    /// Registers on another node (as `PUT /v1/catalog/register` would).
    pub fn register_on(&self, node: &str, body: Value) -> Result<(), String> {
        self.shared.register(node, body)
    }

    pub fn deregister(&self, service_id: &str) -> bool {
        self.shared.deregister(NODE, service_id)
    }

    /// Sets a check's status: `passing`, `warning` or `critical`.
    pub fn set_check(&self, check_id: &str, status: &str) -> bool {
        self.shared.set_check(check_id, status)
    }

    /// Sets every index to a small value, as after a snapshot restore: every index a
    /// client holds is now ahead of the server's.
    pub fn reset_index(&self) {
        self.shared.write(|data| {
            data.index = 2;
            data.catalog_index = 2;
            for index in data.service_index.values_mut() {
                *index = 2;
            }
            Vec::new()
        });
    }
}

impl Data {
    /// Removes an instance's checks; whether it had any.
    fn remove_checks(&mut self, instance: &(String, String)) -> bool {
        let Some(ids) = self.by_instance.remove(instance) else {
            return false;
        };
        for id in &ids {
            self.checks.remove(id);
        }
        !ids.is_empty()
    }

    fn instances_of<'d>(&'d self, name: &str) -> impl Iterator<Item = &'d Registration> {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|key| self.services.get(key))
    }
}

impl Shared {
    /// Applies a write; `touch` returns the service names whose index moves.
    fn write(&self, touch: impl FnOnce(&mut Data) -> Vec<String>) {
        let mut data = lock(&self.data);
        data.index += 1;
        let index = data.index;
        for name in touch(&mut data) {
            data.service_index.insert(name, index);
        }
        drop(data);
        self.changed.send_modify(|n| *n += 1);
    }

    fn register(&self, node: &str, body: Value) -> Result<(), String> {
        let Value::Object(body) = body else {
            return Err("Request decode failed: the body must be a JSON object".into());
        };
        let field = |name: &str| body.get(name).filter(|v| !v.is_null());
        let Some(name) = field("Name").and_then(Value::as_str).map(str::to_string) else {
            return Err("Missing service name".into());
        };
        let id = field("ID").and_then(Value::as_str).unwrap_or(&name).to_string();
        let port = match field("Port") {
            None => 0,
            Some(port) => port
                .as_i64()
                .ok_or("Request decode failed: Port must be a number")?,
        };
        let tags: Vec<String> = match field("Tags") {
            None => Vec::new(),
            Some(Value::Array(tags)) => tags
                .iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect(),
            Some(_) => return Err("Request decode failed: Tags must be a list".into()),
        };
        let weights = field("Weights")
            .cloned()
            .unwrap_or(json!({"Passing": 1, "Warning": 1}));
        let service = json!({
            "ID": id,
            "Service": name,
            "Tags": tags,
            "Address": field("Address").cloned().unwrap_or(json!("")),
            "Meta": field("Meta").cloned().unwrap_or(json!({})),
            "Port": port,
            "Weights": weights,
            "Kind": field("Kind").cloned().unwrap_or(json!("")),
            "TaggedAddresses": field("TaggedAddresses").cloned().unwrap_or(json!({})),
            "EnableTagOverride": false,
        });
        let mut checks: Vec<&Map<String, Value>> = Vec::new();
        if let Some(Value::Object(check)) = field("Check") {
            checks.push(check);
        }
        if let Some(Value::Array(list)) = field("Checks") {
            checks.extend(list.iter().filter_map(Value::as_object));
        }
        let new_checks: Vec<Check> = checks
            .iter()
            .enumerate()
            .map(|(n, check)| Check {
                id: check.get("CheckID").and_then(Value::as_str).map_or_else(
                    || match n {
                        0 => format!("service:{id}"),
                        n => format!("service:{id}:{}", n + 1),
                    },
                    str::to_string,
                ),
                node: node.to_string(),
                service_id: id.clone(),
                service_name: name.clone(),
                // Consul starts a check critical unless told otherwise.
                status: check
                    .get("Status")
                    .and_then(Value::as_str)
                    .unwrap_or("critical")
                    .to_string(),
                modify_index: 0,
            })
            .collect();
        self.write(|data| {
            data.nodes
                .entry(node.to_string())
                .or_insert_with(|| "127.0.0.1".into());
            let key = (node.to_string(), id.clone());
            let mut touched = vec![name.clone()];
            // Consul's catalog index is the services table's: any change to a
            // registration moves it (the list itself may look the same); only a
            // re-registration that changes nothing leaves it.
            let catalog_changed = match data.services.get(&key) {
                Some(old) => {
                    touched.push(old.name.clone());
                    old.name != name || old.tags != tags || old.service != service
                }
                None => true,
            };
            if catalog_changed {
                data.catalog_index = data.index;
            }
            let index = data.index;
            let removed = data.remove_checks(&key);
            if removed || !new_checks.is_empty() {
                data.checks_index = index;
            }
            for mut check in new_checks {
                check.modify_index = index;
                data.by_instance
                    .entry(key.clone())
                    .or_default()
                    .insert(check.id.clone());
                data.checks.insert(check.id.clone(), check);
            }
            if let Some(old) = data.services.get(&key)
                && old.name != name
                && let Some(keys) = data.by_name.get_mut(&old.name)
            {
                keys.remove(&key);
            }
            data.by_name.entry(name.clone()).or_default().insert(key.clone());
            data.services.insert(
                key,
                Registration {
                    node: node.to_string(),
                    service,
                    name,
                    tags,
                },
            );
            touched
        });
        Ok(())
    }

    fn deregister(&self, node: &str, id: &str) -> bool {
        let mut found = false;
        self.write(|data| {
            let key = (node.to_string(), id.to_string());
            let Some(old) = data.services.remove(&key) else {
                return Vec::new();
            };
            found = true;
            if let Some(keys) = data.by_name.get_mut(&old.name) {
                keys.remove(&key);
            }
            if data.remove_checks(&key) {
                data.checks_index = data.index;
            }
            data.catalog_index = data.index;
            vec![old.name]
        });
        found
    }

    fn set_check(&self, check_id: &str, status: &str) -> bool {
        let mut found = false;
        self.write(|data| match data.checks.get_mut(check_id) {
            Some(check) if check.status != status => {
                found = true;
                check.status = status.to_string();
                check.modify_index = data.index;
                data.checks_index = data.index;
                vec![check.service_name.clone()]
            }
            Some(_) => {
                found = true;
                Vec::new()
            }
            None => Vec::new(),
        });
        found
    }

    /// Holds until `index_of` moves past `min` or `wait` runs out, then answers.
    async fn blocking(
        &self,
        min: u64,
        wait: Duration,
        answer: impl Fn(&Data) -> (u64, Value, bool),
    ) -> Response {
        let mut changes = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (index, body, filtered) = answer(&lock(&self.data));
            if min == 0 || index > min {
                return reply(index, body, filtered);
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return reply(index, body, filtered) },
                () = tokio::time::sleep_until(deadline) => {
                    let (index, body, filtered) = answer(&lock(&self.data));
                    return reply(index, body, filtered);
                }
            }
        }
    }

    /// The ACL and datacenter checks every request goes through.
    fn admit(&self, headers: &HeaderMap, query: &HashMap<String, String>) -> Result<(), Refusal> {
        if let Some(required) = &lock(&self.data).token {
            let given = headers
                .get("x-consul-token")
                .and_then(|v| v.to_str().ok())
                .or_else(|| query.get("token").map(String::as_str));
            if given != Some(required.as_str()) {
                return Err((StatusCode::FORBIDDEN, "ACL not found"));
            }
        }
        match query.get("dc") {
            Some(dc) if !dc.is_empty() && dc != DATACENTER => {
                Err((StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter"))
            }
            _ => Ok(()),
        }
    }
}

/// A refused request: the status and Consul's message.
type Refusal = (StatusCode, &'static str);

fn reply(index: u64, body: Value, filtered: bool) -> Response {
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    let headers = response.headers_mut();
    if filtered {
        headers.insert(
            "x-consul-results-filtered-by-acls",
            HeaderValue::from_static("true"),
        );
    }
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("x-consul-index", HeaderValue::from(index.max(1)));
    headers.insert("x-consul-knownleader", HeaderValue::from_static("true"));
    response
}

/// Go durations as Consul reads `wait`: `5s`, `300ms`, `5m`, `1m30s`.
fn parse_wait(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        total += match &rest[..unit_end] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number * 60),
            "h" => Duration::from_secs(number * 3600),
            _ => return None,
        };
        rest = &rest[unit_end..];
    }
    Some(total)
}

/// `index` and `wait` of a blocking query; a malformed one is a 400, as in Consul.
fn blocking_params(query: &HashMap<String, String>) -> Result<(u64, Duration), Refusal> {
    let index = match query.get("index") {
        None => 0,
        Some(i) => i
            .parse()
            .map_err(|_| (StatusCode::BAD_REQUEST, "Invalid index"))?,
    };
    let wait = match query.get("wait") {
        None => DEFAULT_WAIT,
        Some(w) => parse_wait(w).ok_or((StatusCode::BAD_REQUEST, "Invalid wait time"))?,
    };
    Ok((index, wait.min(MAX_WAIT)))
}

type SharedState = State<Arc<Shared>>;

async fn register(
    State(shared): SharedState,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Err(refusal) = shared.admit(&headers, &query) {
        return refusal.into_response();
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(error) => {
            return (StatusCode::BAD_REQUEST, format!("Request decode failed: {error}")).into_response();
        }
    };
    match shared.register(NODE, body) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => (StatusCode::BAD_REQUEST, error).into_response(),
    }
}

async fn deregister(
    State(shared): SharedState,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refusal) = shared.admit(&headers, &query) {
        return refusal.into_response();
    }
    match shared.deregister(NODE, &id) {
        true => StatusCode::OK.into_response(),
        false => (StatusCode::NOT_FOUND, format!("Unknown service ID {id:?}")).into_response(),
    }
}

async fn update_check(
    State(shared): SharedState,
    Path((status, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refusal) = shared.admit(&headers, &query) {
        return refusal.into_response();
    }
    let status = match status.as_str() {
        "pass" => "passing",
        "warn" => "warning",
        "fail" => "critical",
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    match shared.set_check(&id, status) {
        true => StatusCode::OK.into_response(),
        false => (StatusCode::NOT_FOUND, format!("Unknown check ID {id:?}")).into_response(),
    }
}

async fn catalog_services(
    State(shared): SharedState,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refusal) = shared.admit(&headers, &query) {
        return refusal.into_response();
    }
    let (min, wait) = match blocking_params(&query) {
        Ok(params) => params,
        Err(refusal) => return refusal.into_response(),
    };
    shared
        .blocking(min, wait, |data| {
            let mut services: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            let mut filtered = false;
            for registration in data.services.values() {
                if data.unreadable.contains(&registration.name) {
                    filtered = true;
                    continue;
                }
                let tags = services.entry(&registration.name).or_default();
                tags.extend(registration.tags.iter().map(String::as_str));
                tags.sort_unstable();
                tags.dedup();
            }
            (data.catalog_index, json!(services), filtered)
        })
        .await
}

async fn health_service(
    State(shared): SharedState,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refusal) = shared.admit(&headers, &query) {
        return refusal.into_response();
    }
    let (min, wait) = match blocking_params(&query) {
        Ok(params) => params,
        Err(refusal) => return refusal.into_response(),
    };
    shared
        .blocking(min, wait, |data| {
            let filtered = data.unreadable.contains(&name);
            let entries: Vec<Value> = data
                .instances_of(&name)
                .filter(|_| !filtered)
                .map(|r| health_entry(data, r))
                .collect();
            let index = data
                .service_index
                .get(&name)
                .copied()
                .unwrap_or(data.catalog_index);
            (index, Value::Array(entries), filtered)
        })
        .await
}

/// `GET /v1/health/state/<state>`: every check in that state (`any`: all), node checks
/// (`serfHealth`, one per node) included, blocking on the index of the last check change.
async fn health_state(
    State(shared): SharedState,
    Path(state): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refusal) = shared.admit(&headers, &query) {
        return refusal.into_response();
    }
    if !matches!(state.as_str(), "any" | "passing" | "warning" | "critical") {
        return (StatusCode::BAD_REQUEST, "Invalid check state").into_response();
    }
    let (min, wait) = match blocking_params(&query) {
        Ok(params) => params,
        Err(refusal) => return refusal.into_response(),
    };
    shared
        .blocking(min, wait, |data| {
            let mut filtered = false;
            let mut checks: Vec<Value> = data
                .nodes
                .keys()
                .map(|node| {
                    json!({"Node": node, "CheckID": "serfHealth", "Name": "Serf Health Status",
                        "Status": "passing", "ServiceID": "", "ServiceName": "", "ModifyIndex": 1})
                })
                .collect();
            for c in data.checks.values() {
                if data.unreadable.contains(&c.service_name) {
                    filtered = true;
                    continue;
                }
                checks.push(json!({
                    "Node": c.node, "CheckID": c.id, "Name": format!("Service '{}' check", c.service_name),
                    "Status": c.status, "ServiceID": c.service_id, "ServiceName": c.service_name,
                    "ModifyIndex": c.modify_index,
                }));
            }
            checks.retain(|c| state == "any" || c["Status"] == state.as_str());
            (data.checks_index.max(1), Value::Array(checks), filtered)
        })
        .await
}

fn health_entry(data: &Data, registration: &Registration) -> Value {
    let node_address = data.nodes.get(&registration.node).cloned().unwrap_or_default();
    let service_id = registration.service["ID"].as_str().unwrap_or_default();
    let mut checks = vec![json!({
        "Node": registration.node, "CheckID": "serfHealth", "Name": "Serf Health Status",
        "Status": "passing", "ServiceID": "", "ServiceName": "",
    })];
    let instance = (registration.node.clone(), service_id.to_string());
    checks.extend(
        data.by_instance
            .get(&instance)
            .into_iter()
            .flatten()
            .filter_map(|id| data.checks.get(id))
            .map(|c| {
                json!({
                    "Node": c.node, "CheckID": c.id, "Name": format!("Service '{}' check", c.service_name),
                    "Status": c.status, "ServiceID": c.service_id, "ServiceName": c.service_name,
                })
            }),
    );
    json!({
        "Node": {
            "Node": registration.node,
            "Address": node_address,
            "Datacenter": DATACENTER,
            "TaggedAddresses": {"lan": node_address, "wan": node_address},
            "Meta": {},
        },
        "Service": registration.service,
        "Checks": checks,
    })
}

async fn leader() -> Response {
    reply(1, json!("127.0.0.1:8300"), false)
}

fn classify(path: &str) -> String {
    let path = path.trim_start_matches("/v1/");
    let mut parts = path.split('/');
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => format!("{a}/{b}"),
        _ => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_consul_reads_wait() {
        assert_eq!(parse_wait("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_wait("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_wait("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_wait("5"), None);
        assert_eq!(parse_wait("x"), None);
    }
}
