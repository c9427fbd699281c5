//! The `/metrics` and `/healthz` endpoint every simflow process serves.
//!
//! It only reads shared state; it never touches the broker or the database itself.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Health, Metrics};

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Health,
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn render_health(State(state): State<AppState>) -> impl IntoResponse {
    let status = if state.health.is_healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "healthy": status == StatusCode::OK,
        "components": state.health.snapshot(),
    });
    (status, axum::Json(body))
}

/// Serves the endpoint on `listen` until `shutdown`; returns the bound address.
pub async fn serve(
    listen: &str,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {listen} for /metrics: {error}"))?;
    let address = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(render_health))
        .with_state(AppState { metrics, health });
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "metrics endpoint stopped");
        }
    });
    tracing::info!(%address, "serving /metrics and /healthz");
    Ok((address, task))
}
