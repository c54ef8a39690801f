//! The admin endpoint of `run`: `/` (the status page, `?q=` to search), `/status.json`
//! (the same data), `/metrics` (Prometheus text), `/healthz` (the process serves) and
//! `/readyz` (the first complete sync is done). Read-only: every route is a GET.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

#[derive(serde::Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: Option<String>,
}

/// Binds `listen` and serves until `cancel` fires. Binding errors are returned at once
/// so a port clash stops the start-up with a clear message.
pub async fn serve(
    listen: SocketAddr,
    metrics: Metrics,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let ready = metrics.clone();
    let (page, json) = (metrics.status.clone(), metrics.status.clone());
    let router = Router::new()
        .route(
            "/",
            get(move |Query(query): Query<SearchQuery>| {
                let board = page.clone();
                async move {
                    let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
                    let found = q.map(|q| board.search(q));
                    let html = crate::status::render(&board.snapshot(), q, found.as_ref());
                    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html)
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
        )
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
    tokio::spawn(async move {
        let shutdown = async move { cancel.cancelled().await };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("admin endpoint stopped: {e}");
        }
    });
    tracing::info!(address = %bound, "serving /metrics, /healthz, /readyz and the status page (/, /status.json)");
    Ok(bound)
}
