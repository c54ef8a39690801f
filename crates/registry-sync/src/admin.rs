//! The admin endpoint of `run`: `/` (the status page, `?q=` to search), `/status.json`
//! (the same data), `/metrics` (Prometheus text), `/healthz` (the process serves) and
//! `/readyz` (the first complete sync is done). Read-only: every route is a GET.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use registry_sync_writer::Ready;

use crate::metrics::Metrics;

/// Searches served at once; more are answered 503 with `Retry-After`.
const CONCURRENT_SEARCHES: usize = 2;

#[derive(serde::Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: Option<String>,
}

/// What one listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routes {
    /// `/metrics`, `/healthz`, `/readyz` and the status page.
    All,
    /// `/metrics`, `/healthz` and `/readyz`: for the kubelet and Prometheus.
    Probes,
    /// The status page (`/`, `/status.json`): for an operator.
    Page,
}

/// Binds `listen` and serves `routes` until `cancel` fires. Binding errors are returned
/// at once so a port clash stops the start-up with a clear message.
pub async fn serve(
    listen: SocketAddr,
    metrics: Metrics,
    ready: Ready,
    cancel: CancellationToken,
    routes: Routes,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let (page, json) = (metrics.status.clone(), metrics.status.clone());
    let searches = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_SEARCHES));
    let page_routes = Router::new()
        .route(
            "/",
            get(move |Query(query): Query<SearchQuery>| {
                let board = page.clone();
                let searches = Arc::clone(&searches);
                async move {
                    let q = query
                        .q
                        .as_deref()
                        .map(str::trim)
                        .filter(|q| !q.is_empty())
                        .map(|q| crate::status::bounded_query(q).to_string());
                    let found = match &q {
                        None => None,
                        Some(q) => {
                            // A search of a large service is long work: a few at a time,
                            // on the blocking pool, never on the workers that carry
                            // registry updates, writes, probes and the Lease.
                            let Ok(_permit) = searches.try_acquire() else {
                                return (
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    [(header::RETRY_AFTER, "1")],
                                    "too many searches at once; try again in a moment\n",
                                )
                                    .into_response();
                            };
                            let (board, q) = (board.clone(), q.clone());
                            tokio::task::spawn_blocking(move || board.search(&q)).await.ok()
                        }
                    };
                    let html = crate::status::render(&board.snapshot(), q.as_deref(), found.as_ref());
                    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
                }
            }),
        )
        .route(
            "/status.json",
            get(move || {
                let board = json.clone();
                async move {
                    let body = serde_json::to_string_pretty(&board.snapshot()).unwrap_or_default();
                    ([(header::CONTENT_TYPE, "application/json")], body)
                }
            }),
        );
    let probe_routes = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n").into_response()
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "waiting for the first complete sync\n",
                        )
                            .into_response()
                    }
                }
            }),
        );
    let router = match routes {
        Routes::All => page_routes.merge(probe_routes),
        Routes::Probes => probe_routes,
        Routes::Page => page_routes,
    };
    tokio::spawn(async move {
        let shutdown = async move { cancel.cancelled().await };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("admin endpoint stopped: {e}");
        }
    });
    let what = match routes {
        Routes::All => "serving /metrics, /healthz, /readyz and the status page (/, /status.json)",
        Routes::Probes => "serving /metrics, /healthz and /readyz",
        Routes::Page => "serving the status page (/, /status.json)",
    };
    tracing::info!(address = %bound, "{what}");
    Ok(bound)
}
