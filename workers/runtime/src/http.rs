//! The `/metrics`, `/livez`, `/readyz` and `/healthz` endpoints every simflow process serves.
//!
//! `/livez` answers 200 while the process serves at all (restart it when this fails);
//! `/readyz` answers 200 only when every health component is ready (database reachable and
//! migrated, each worker consuming from a broker that is not blocking publishers) and 503 with
//! each component's reason otherwise; `/healthz` is `/readyz` (kept for existing probes).
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
    state.metrics.record_health(&state.health);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn render_live() -> impl IntoResponse {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({ "live": true })),
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
        "ready": status == StatusCode::OK,
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
        .route("/readyz", get(render_health))
        .route("/livez", get(render_live))
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
