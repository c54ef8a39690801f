//! HTTP routing: resource paths, discovery and `/version`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};

use crate::kube::counts::Verb;
use crate::kube::ops::{self, PatchKind, WriteOpts, Written};
use crate::kube::resource::Resource;
use crate::kube::selector::Selectors;
use crate::kube::state::Shared;
use crate::kube::status::{ApiError, json_response};
use crate::kube::util::lock;
use crate::kube::watch::{self, WatchRequest};

type Q = Query<HashMap<String, String>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/healthz", get(ok))
        .route("/readyz", get(ok))
        .route("/livez", get(ok))
        .route("/api", get(api_versions))
        .route("/api/v1", get(core_v1))
        .route("/apis", get(groups))
        .route("/apis/{group}/{version}", get(discovery))
        .route("/apis/{group}/{version}/{plural}", any(cluster_collection))
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}",
            any(collection),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}",
            any(item),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}/status",
            any(status_item),
        )
        .fallback(|| async { ApiError::path_not_found() })
        .layer(middleware::from_fn_with_state(shared.clone(), fault_layer))
        .with_state(shared)
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
}

fn is_watch(query: Option<&str>) -> bool {
    query
        .unwrap_or("")
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1")
}

fn classify_parts(method: &Method, uri: &Uri, ct: &str) -> Option<(Verb, String)> {
    let segs: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    // A subresource is counted under `<plural>/<subresource>`, as audit logs name it.
    if let ["apis", _, _, "namespaces", _, plural, _, subresource] = segs.as_slice() {
        let verb = match method.as_str() {
            "GET" => Verb::Get,
            "PUT" => Verb::Update,
            "PATCH" => Verb::Patch,
            _ => return None,
        };
        return Some((verb, format!("{plural}/{subresource}")));
    }
    let (plural, named) = match segs.as_slice() {
        ["apis", _, _, plural] | ["api", _, plural] if *plural != "namespaces" => (*plural, false),
        ["apis", _, _, "namespaces", _, plural] | ["api", _, "namespaces", _, plural] => (*plural, false),
        ["apis", _, _, "namespaces", _, plural, _] | ["api", _, "namespaces", _, plural, _] => {
            (*plural, true)
        }
        _ => return None,
    };
    let verb = match (method.as_str(), named) {
        ("GET", false) if is_watch(uri.query()) => Verb::Watch,
        ("GET", false) => Verb::List,
        ("GET", true) => Verb::Get,
        ("POST", _) => Verb::Create,
        ("PUT", _) => Verb::Update,
        ("PATCH", _) if ct == "application/apply-patch+yaml" => Verb::Apply,
        ("PATCH", _) => Verb::Patch,
        ("DELETE", _) => Verb::Delete,
        _ => return None,
    };
    Some((verb, plural.to_string()))
}

/// The verb and resource plural of a request, for counting (the Content-Type tells
/// apply from other patches); `None` for non-resource paths such as discovery.
pub(crate) fn classify_request(req: &Request) -> Option<(Verb, String)> {
    classify_parts(req.method(), req.uri(), content_type(req.headers()))
}

fn resource(group: &str, version: &str, plural: &str) -> Result<Resource, ApiError> {
    Resource::from_path(group, version, plural).ok_or_else(ApiError::path_not_found)
}

fn written(w: Written) -> Response {
    let code = StatusCode::from_u16(w.code).unwrap_or(StatusCode::OK);
    let mut response = json_response(code, &w.body);
    for warning in w.warnings {
        let text = format!("299 - {}", Value::from(warning));
        if let Ok(v) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}

fn write_opts(q: &HashMap<String, String>, headers: &HeaderMap, default_manager: bool) -> WriteOpts {
    let manager = match q.get("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => m.clone(),
        None if default_manager => headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|m| !m.is_empty())
            .unwrap_or("unknown")
            .to_string(),
        None => String::new(),
    };
    WriteOpts {
        manager,
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        strict: q.get("fieldValidation").is_some_and(|v| v == "Strict"),
        force: q.get("force").is_some_and(|f| f == "true"),
    }
}

fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body of the request was not valid JSON: {e}")))
}

fn yaml_or_json_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).or_else(|_| {
        serde_saphyr::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    })
}

async fn cluster_collection(
    State(shared): State<Arc<Shared>>,
    Path((group, version, plural)): Path<(String, String, String)>,
    method: Method,
    Query(q): Q,
) -> Response {
    let resource = match resource(&group, &version, &plural) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if method != Method::GET {
        return ApiError::method_not_allowed(method.as_str()).into_response();
    }
    read_collection(shared, resource, None, &q)
}

async fn collection(
    State(shared): State<Arc<Shared>>,
    Path((group, version, ns, plural)): Path<(String, String, String, String)>,
    method: Method,
    Query(q): Q,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let resource = match resource(&group, &version, &plural) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match method {
        Method::GET => read_collection(shared, resource, Some(ns), &q),
        Method::POST => {
            let opts = write_opts(&q, &headers, true);
            let result =
                json_body(&body).and_then(|b| ops::create(&mut shared.store(), resource, &ns, b, &opts));
            result.map_or_else(IntoResponse::into_response, written)
        }
        other => ApiError::method_not_allowed(other.as_str()).into_response(),
    }
}

fn read_collection(
    shared: Arc<Shared>,
    resource: Resource,
    ns: Option<String>,
    q: &HashMap<String, String>,
) -> Response {
    let selectors = match Selectors::parse(
        q.get("labelSelector").map(String::as_str),
        q.get("fieldSelector").map(String::as_str),
    ) {
        Ok(s) => s,
        Err(e) => return ApiError::bad_request(e).into_response(),
    };
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let resource_version = match q.get("resourceVersion").map(String::as_str) {
            None | Some("") | Some("0") => None,
            Some(rv) => match rv.parse::<u64>() {
                Ok(rv) => Some(rv),
                Err(_) => {
                    return ApiError::bad_request(format!("resourceVersion: Invalid value: \"{rv}\""))
                        .into_response();
                }
            },
        };
        let req = WatchRequest {
            resource,
            namespace: ns,
            selectors,
            resource_version,
            send_initial_events: q.get("sendInitialEvents").is_some_and(|v| v == "true"),
            bookmarks: q.get("allowWatchBookmarks").is_some_and(|v| v == "true"),
            timeout: q
                .get("timeoutSeconds")
                .and_then(|t| t.parse().ok())
                .map(Duration::from_secs),
        };
        let body = watch::start(shared, req);
        return (
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response();
    }
    let limit = q.get("limit").and_then(|l| l.parse().ok());
    let page = {
        let store = shared.store();
        ops::list(
            &store,
            resource,
            ns.as_deref(),
            &selectors,
            limit,
            q.get("continue").map(String::as_str),
        )
    };
    let (items, rv, token, remaining) = match page {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut o| {
            o["apiVersion"] = resource.api_version().into();
            o["kind"] = resource.kind().into();
            o
        })
        .collect();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(token) = token {
        metadata["continue"] = token.into();
        metadata["remainingItemCount"] = remaining.into();
    }
    let list = json!({
        "apiVersion": resource.api_version(),
        "kind": resource.list_kind(),
        "metadata": metadata,
        "items": items,
    });
    json_response(StatusCode::OK, &list)
}

async fn item(
    State(shared): State<Arc<Shared>>,
    Path((group, version, ns, plural, name)): Path<(String, String, String, String, String)>,
    method: Method,
    Query(q): Q,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let resource = match resource(&group, &version, &plural) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let result = match method {
        Method::GET => return get_item(&shared, resource, &ns, &name),
        Method::PUT => {
            let opts = write_opts(&q, &headers, true);
            json_body(&body).and_then(|b| ops::update(&mut shared.store(), resource, &ns, &name, b, &opts))
        }
        Method::PATCH => patch(&shared, resource, &ns, &name, &q, &headers, &body),
        Method::DELETE => {
            let options = if body.is_empty() {
                Ok(json!({}))
            } else {
                json_body(&body)
            };
            let dry_run = q.get("dryRun").is_some_and(|d| d == "All")
                || options
                    .as_ref()
                    .is_ok_and(|o| o.get("dryRun") == Some(&json!(["All"])));
            options
                .and_then(|o| ops::delete(&mut shared.store(), resource, &ns, &name, &o, dry_run))
                .map(|body| Written {
                    code: 200,
                    body,
                    warnings: Vec::new(),
                })
        }
        other => Err(ApiError::method_not_allowed(other.as_str())),
    };
    result.map_or_else(IntoResponse::into_response, written)
}

/// The stored object, or 404.
fn get_item(shared: &Shared, resource: Resource, ns: &str, name: &str) -> Response {
    let found = shared.store().get(resource, ns, name);
    match found {
        Some(obj) => json_response(StatusCode::OK, &obj),
        None => ApiError::not_found(resource, name).into_response(),
    }
}

/// The status subresource: GET the object, PATCH its status alone.
async fn status_item(
    State(shared): State<Arc<Shared>>,
    Path((group, version, ns, plural, name)): Path<(String, String, String, String, String)>,
    method: Method,
    Query(q): Q,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let resource = match resource(&group, &version, &plural) {
        Ok(r) if r.has_status_subresource() => r,
        Ok(_) => return ApiError::path_not_found().into_response(),
        Err(e) => return e.into_response(),
    };
    let result = match method {
        Method::GET => return get_item(&shared, resource, &ns, &name),
        Method::PATCH => {
            let kind = match content_type(&headers) {
                "application/merge-patch+json" => Ok(PatchKind::Merge),
                "application/json-patch+json" => Ok(PatchKind::Json),
                other => Err(ApiError::unsupported_media_type(other)),
            };
            let opts = write_opts(&q, &headers, true);
            kind.and_then(|kind| {
                let patch = json_body(&body)?;
                ops::patch_status(&mut shared.store(), resource, &ns, &name, kind, patch, &opts)
            })
        }
        other => Err(ApiError::method_not_allowed(other.as_str())),
    };
    result.map_or_else(IntoResponse::into_response, written)
}

fn patch(
    shared: &Shared,
    resource: Resource,
    ns: &str,
    name: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Written, ApiError> {
    let kind = match content_type(headers) {
        "application/apply-patch+yaml" => {
            let opts = write_opts(q, headers, false);
            let applied = yaml_or_json_body(body)?;
            return ops::server_side_apply(&mut shared.store(), resource, ns, name, applied, &opts);
        }
        "application/merge-patch+json" => PatchKind::Merge,
        "application/json-patch+json" => PatchKind::Json,
        "application/strategic-merge-patch+json" if resource.accepts_strategic_merge() => {
            PatchKind::Strategic
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    let opts = write_opts(q, headers, true);
    let patch = json_body(body)?;
    ops::patch(&mut shared.store(), resource, ns, name, kind, patch, &opts)
}

async fn ok() -> &'static str {
    "ok"
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "major": "1",
            "minor": "33",
            "gitVersion": "v1.33.0-registry-sync-kube-standin",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.24",
            "compiler": "gc",
            "platform": "linux/amd64",
        }),
    )
}

async fn api_versions() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        }),
    )
}

async fn core_v1() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": []}),
    )
}

async fn groups() -> Response {
    let mut names: Vec<&str> = Resource::ALL.iter().map(|r| r.group()).collect();
    names.dedup();
    let groups: Vec<Value> = names
        .into_iter()
        .map(|g| {
            let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

async fn discovery(Path((group, version)): Path<(String, String)>) -> Response {
    let served = Resource::in_group_version(&group, &version);
    if served.is_empty() {
        return ApiError::path_not_found().into_response();
    }
    let verbs = ["create", "delete", "get", "list", "patch", "update", "watch"];
    let mut resources = Vec::new();
    for r in served {
        resources.push(json!({
            "name": r.plural(),
            "singularName": r.singular(),
            "namespaced": true,
            "kind": r.kind(),
            "verbs": verbs,
            "shortNames": r.short_names(),
        }));
    }
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": format!("{group}/{version}"),
            "resources": resources,
        }),
    )
}

/// The middleware in front of every route: counting, pause, latency, 429s, failing writes.
async fn fault_layer(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let class = classify_request(&req);
    if let Some((verb, plural)) = &class {
        shared.count(*verb, plural);
    }
    tokio::select! {
        () = shared.faults.unpaused() => {}
        () = shared.shutdown.cancelled() => return ApiError::internal("server shutting down").into_response(),
    }
    let latency = *lock(&shared.faults.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(retry_after) = shared.faults.take_throttle() {
        return ApiError::too_many_requests(retry_after).into_response();
    }
    if class.as_ref().is_some_and(|(verb, _)| verb.is_write()) {
        let name = req.uri().path().rsplit('/').next().unwrap_or_default();
        if let Some(reason) = lock(&shared.faults.denied).get(name) {
            return ApiError::denied_by_webhook("policy.example.com", reason).into_response();
        }
    }
    if class.as_ref().is_some_and(|(verb, _)| verb.is_write()) && shared.faults.take_write_failure() {
        return ApiError::internal("etcdserver: request timed out (injected fault)").into_response();
    }
    next.run(req).await
}
