//! `/health` and `/metrics` for operators: whether any tier can answer (503 when none can), uptime,
//! version and each tier's and account's state; and the Prometheus text exposition.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::ApiState;
use crate::router::RouterStatus;

/// The operator routes.
pub fn routes() -> axum::Router<ApiState> {
    axum::Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
}

/// Whether some tier could answer now: enabled, with an account that is ready.
pub fn can_answer(status: &RouterStatus) -> bool {
    status
        .tiers
        .iter()
        .any(|t| t.enabled && t.accounts.iter().any(|a| a.state.starts_with("ready")))
}

async fn health(State(state): State<ApiState>) -> Response {
    let status = state.router.status();
    let ok = can_answer(&status);
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "uptime_secs": state.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "tiers": status.tiers,
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let text = state.metrics.render(&state.router.status());
    let mut response = text.into_response();
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
