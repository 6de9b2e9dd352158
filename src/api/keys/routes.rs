//! `GET /v1/usage` (the calling key's own figures: today and the last 30 days, what is left of its
//! limits, the free tier's state and its reset) and `GET /usage` (every key, for operators).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Keys;
use crate::api::auth::Caller;
use crate::api::error::{ApiError, Surface};
use crate::api::ApiState;
use crate::clock::next_utc_midnight;

/// The days `/v1/usage` returns: the "today and the last 30 days".
const OWN_DAYS: u32 = 31;

/// The usage routes.
pub fn routes() -> axum::Router<ApiState> {
    axum::Router::new()
        .route("/v1/usage", get(own_usage))
        .route("/usage", get(all_usage))
}

fn internal(surface: Surface, e: &super::KeyError) -> ApiError {
    tracing::warn!(error = %e, "reading the usage ledger failed");
    ApiError::new(
        surface,
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "the usage ledger could not be read",
    )
}

fn limits_json(snapshot: &super::admission::Snapshot) -> Value {
    let one = |f: Option<(u64, u64, std::time::Duration)>| {
        f.map(|(limit, remaining, reset)| {
            json!({"limit": limit, "remaining": remaining, "reset_secs": reset.as_secs()})
        })
    };
    json!({"requests": one(snapshot.requests), "tokens": one(snapshot.tokens)})
}

/// `GET /v1/usage`.
async fn own_usage(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let now = state.clock.now_ms();
    let free: Vec<Value> = state
        .router
        .status()
        .tiers
        .into_iter()
        .filter(|t| !t.name.is_paid())
        .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
        .collect();
    let free_tier = json!({"tiers": free, "resets_at_ms": next_utc_midnight(now)});
    let Some(gate) = &caller.gate.0 else {
        return Ok(Json(json!({
            "key": caller.id, "days": [], "limits": null, "free_tier": free_tier,
        })));
    };
    let usage = gate
        .keys()
        .usage(Some(gate.id()), OWN_DAYS)
        .map_err(|e| internal(Surface::OpenAi, &e))?;
    let (record, days) = usage.into_iter().next().unwrap_or_default();
    Ok(Json(json!({
        "key": record.id, "name": record.name, "today": days.first(), "days": days,
        "limits": limits_json(&gate.snapshot()), "free_tier": free_tier,
    })))
}

/// `?days=N` on `/usage`.
#[derive(Debug, Deserialize)]
struct Days {
    days: Option<u32>,
}

/// `GET /usage` (operators; the middleware has checked).
async fn all_usage(
    keys: Option<Extension<Arc<Keys>>>,
    Query(q): Query<Days>,
) -> Result<Json<Value>, ApiError> {
    let Some(Extension(keys)) = keys else {
        return Ok(Json(json!({"keys": []})));
    };
    let usage = keys
        .usage(None, q.days.unwrap_or(1))
        .map_err(|e| internal(Surface::Operator, &e))?;
    let list: Vec<Value> = usage
        .into_iter()
        .map(|(r, days)| json!({"key": r.id, "name": r.name, "revoked": r.revoked_ms.is_some(), "days": days}))
        .collect();
    Ok(Json(json!({"keys": list})))
}
