//! Ollama's model and server listings: `/api/tags`, `/api/show`, `/api/ps`, `/api/version`, and seed
//! 002's provider views (`/api/providers`, `/api/providers/{provider}/stats`, `/api/tags/{provider}`).
//! Filled from the router's real model metadata (context length, capabilities).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::wire::ShowRequest;
use crate::api::auth::Caller;
use crate::api::catalog::{self, Entry};
use crate::api::error::{ApiError, Surface};
use crate::api::{json, ApiState};

/// An RFC 3339 timestamp for `ms` since the epoch.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// When the server started, as wall time (listings' `modified_at`).
fn started_at(state: &ApiState) -> String {
    let up = i64::try_from(state.started.elapsed().as_millis()).unwrap_or(0);
    rfc3339(state.clock.now_ms() - up)
}

fn details(e: &Entry) -> Value {
    let family = e.family();
    json!({
        "parent_model": "",
        "format": "remote",
        "family": family,
        "families": [family],
        "parameter_size": e.parameter_size(),
        "quantization_level": "",
    })
}

fn tag(e: &Entry, modified_at: &str) -> Value {
    json!({
        "name": e.name,
        "model": e.name,
        "modified_at": modified_at,
        "size": 0,
        "digest": e.digest(),
        "details": details(e),
    })
}

/// `GET /api/tags`.
pub async fn tags(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    let at = started_at(&state);
    let models: Vec<Value> = catalog::entries(&*state.router, &caller)
        .iter()
        .map(|e| tag(e, &at))
        .collect();
    Json(json!({ "models": models }))
}

/// `GET /api/tags/{provider}`: the models one provider serves.
pub async fn provider_tags(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(provider): Path<String>,
) -> Response {
    let at = started_at(&state);
    let models: Vec<Value> = catalog::entries(&*state.router, &caller)
        .iter()
        .filter(|e| e.provider == provider)
        .map(|e| tag(e, &at))
        .collect();
    if models.is_empty() {
        return unknown_provider(&provider);
    }
    Json(json!({ "models": models })).into_response()
}

fn unknown_provider(provider: &str) -> Response {
    ApiError::new(
        Surface::Ollama,
        StatusCode::NOT_FOUND,
        format!("provider '{provider}' not found; GET /api/providers lists them"),
    )
    .into_response()
}

/// `POST /api/show`.
pub async fn show(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: ShowRequest = json::parse(Surface::Ollama, body)?;
    let Some(name) = req.model.or(req.name).filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_field(
            Surface::Ollama,
            "model",
            "model is required",
        ));
    };
    let entry = catalog::find(&*state.router, &caller, &name)
        .ok_or_else(|| ApiError::unknown_model(Surface::Ollama, &name))?;
    let family = entry.family();
    let ctx = entry.context_window;
    let served_by = entry.tier.as_ref().map_or_else(
        || "switchboard's router".to_owned(),
        |t| format!("the {t} tier via {}", entry.provider),
    );
    Ok(Json(json!({
        "modelfile": format!("# {name}, served by {served_by}\nFROM {name}\nPARAMETER num_ctx {ctx}\n"),
        "parameters": format!("num_ctx                        {ctx}"),
        // No `.Suffix`: fill-in-the-middle is not offered (no upstream takes a suffix).
        "template": "{{ .Prompt }}",
        "details": details(&entry),
        "model_info": {
            "general.architecture": family,
            "general.basename": name,
            format!("{family}.context_length"): ctx,
        },
        "capabilities": entry.capability_names(),
        "modified_at": started_at(&state),
    })))
}

/// `GET /api/ps`: every model the caller may use counts as loaded (nothing to load here).
pub async fn ps(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    // A day ahead: clients show it as the keep-alive expiry; hosted models never unload.
    let expires = rfc3339(state.clock.now_ms() + 86_400_000);
    let models: Vec<Value> = catalog::entries(&*state.router, &caller)
        .iter()
        .filter(|e| e.tier.is_some())
        .map(|e| {
            json!({
                "name": e.name,
                "model": e.name,
                "size": 0,
                "digest": e.digest(),
                "details": details(e),
                "expires_at": expires,
                "size_vram": 0,
            })
        })
        .collect();
    Json(json!({ "models": models }))
}

/// `GET /api/version`.
pub async fn version() -> Json<Value> {
    Json(json!({ "version": env!("CARGO_PKG_VERSION") }))
}

/// `GET /` and `HEAD /`.
pub async fn root() -> &'static str {
    "Ollama is running"
}

/// `GET /api/providers`: each provider with its tiers, models and accounts.
pub async fn providers(State(state): State<ApiState>) -> Json<Value> {
    let models = state.router.models();
    let status = state.router.status();
    let mut names: Vec<String> = models.iter().map(|m| m.provider.clone()).collect();
    names.extend(
        status
            .tiers
            .iter()
            .flat_map(|t| t.accounts.iter().map(|a| a.provider.clone())),
    );
    names.sort();
    names.dedup();
    let list: Vec<Value> = names
        .iter()
        .map(|p| {
            let mut tiers: Vec<String> = models
                .iter()
                .filter(|m| &m.provider == p)
                .map(|m| m.tier.0.clone())
                .collect();
            tiers.dedup();
            json!({
                "name": p,
                "tiers": tiers,
                "models": models.iter().filter(|m| &m.provider == p).count(),
                "accounts": status.tiers.iter().flat_map(|t| &t.accounts).filter(|a| &a.provider == p).count(),
            })
        })
        .collect();
    Json(json!({ "providers": list }))
}

/// `GET /api/providers/{provider}/stats`: the provider's tiers with their use today and its accounts.
pub async fn provider_stats(
    State(state): State<ApiState>,
    Path(provider): Path<String>,
) -> Response {
    let status = state.router.status();
    let tiers: Vec<Value> = status
        .tiers
        .iter()
        .filter_map(|t| {
            let accounts: Vec<_> = t
                .accounts
                .iter()
                .filter(|a| a.provider == provider)
                .collect();
            (!accounts.is_empty()).then(|| {
                json!({
                    "tier": t.name,
                    "enabled": t.enabled,
                    "requests_today": t.requests_today,
                    "daily_cap": t.daily_cap,
                    "estimated_cost_usd": t.estimated_cost_usd,
                    "accounts": accounts,
                })
            })
        })
        .collect();
    let known = !tiers.is_empty() || state.router.models().iter().any(|m| m.provider == provider);
    if !known {
        return unknown_provider(&provider);
    }
    Json(json!({ "provider": provider, "tiers": tiers })).into_response()
}
