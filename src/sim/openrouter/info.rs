//! The routes beside chat: `GET /api/v1/models` (public, a sent key must be known), `GET /api/v1/key`
//! (current or legacy shape, or 404 when switched off) and the fallback for unknown routes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::json;

use super::{error, Shared, API_PREFIX};
use crate::secrets::fingerprint_str;
use crate::sim::server::{bearer, json};
use crate::sim::{features, SimRequest};

pub(super) async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    // `/models` is public on OpenRouter: no key needed, but a sent key must be a known one.
    let key = bearer(&headers);
    let account = match &key {
        Some(_) => match shared.authenticate(&headers, "GET", &format!("{API_PREFIX}/models")) {
            Ok(c) => Some(c.account),
            Err(r) => return *r,
        },
        None => None,
    };
    let data: Vec<serde_json::Value> = shared
        .options
        .models
        .iter()
        .map(|m| {
            let price = if m.free { "0" } else { "0.000001" };
            let mut inputs = vec!["text"];
            if m.capabilities.vision {
                inputs.push("image");
            }
            let mut parameters = vec!["max_tokens", "temperature", "top_p", "stop", "seed"];
            if m.capabilities.tools {
                parameters.extend(["tools", "tool_choice"]);
            }
            if m.capabilities.thinking {
                parameters.extend(["reasoning", "include_reasoning"]);
            }
            json!({"id": m.id, "name": m.id, "context_length": m.context_length,
                   "architecture": {"input_modalities": inputs, "output_modalities": ["text"]},
                   "supported_parameters": parameters,
                   "pricing": {"prompt": price, "completion": price}})
        })
        .collect();
    let mut log = SimRequest::new("GET", format!("{API_PREFIX}/models"), 200);
    log.key_fingerprint = key.as_deref().map(fingerprint_str);
    log.account = account;
    shared.desk.book.record(log);
    json(StatusCode::OK, json!({ "data": data }))
}

pub(super) async fn key_info(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let path = format!("{API_PREFIX}/key");
    let caller = match shared.authenticate(&headers, "GET", &path) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let options = &shared.options;
    let mut log = SimRequest::new("GET", path, if options.key_endpoint { 200 } else { 404 });
    log.key_fingerprint = Some(fingerprint_str(&caller.key));
    log.account = Some(caller.account.clone());
    shared.desk.book.record(log);
    if !options.key_endpoint {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let label = format!("simulated key on {}", caller.account);
    if options.key_info_legacy {
        return json(
            StatusCode::OK,
            json!({"data": {
                "label": label,
                "usage": 0,
                "limit": null,
                "is_free_tier": caller.quota < 1000,
                "rate_limit": {"requests": 20, "interval": "10s"},
            }}),
        );
    }
    let used = shared
        .accounts
        .used_today(&caller.account, options.clock.now_ms());
    json(
        StatusCode::OK,
        json!({"data": {
            "label": label,
            "limit": null,
            "limit_remaining": null,
            "limit_reset": null,
            "usage": 0,
            "usage_daily": 0,
            "is_free_tier": caller.quota < 1000,
            "free_model_daily_requests": {
                "limit": caller.quota,
                "remaining": caller.quota.saturating_sub(used),
                "used": used,
            },
        }}),
    )
}

pub(super) async fn fallback(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
) -> Response {
    let message = shared.desk.book.unknown_route(&method, &uri);
    error(StatusCode::NOT_FOUND, &message)
}

/// `POST /api/v1/embeddings`: `{model, input: string | [string]}` → OpenAI's list of embeddings,
/// deterministic vectors; a model that is not an embedding model is 404, as OpenRouter answers.
pub(super) async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let path = format!("{API_PREFIX}/embeddings");
    let caller = match shared.authenticate(&headers, "POST", &path) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let mut log = SimRequest::new("POST", path, 200);
    log.key_fingerprint = Some(fingerprint_str(&caller.key));
    log.account = Some(caller.account);
    let book = &shared.desk.book;
    let request = match book.read_json(&log, &body) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let model = request
        .get("model")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    log.model = Some(model.clone());
    let inputs = match features::embed_inputs(&request, "input") {
        Ok(inputs) => inputs,
        Err(problem) => return error(StatusCode::BAD_REQUEST, &book.invalid(&log, &problem)),
    };
    log.embed_inputs.clone_from(&inputs);
    if !shared.options.embedding_models.contains(&model) {
        log.status = 404;
        book.record(log);
        return error(StatusCode::NOT_FOUND, &format!("Model {model} not found"));
    }
    book.record(log);
    let tokens: usize = inputs.iter().map(|i| i.split_whitespace().count()).sum();
    let data: Vec<serde_json::Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": features::embedding(text)}))
        .collect();
    json(
        StatusCode::OK,
        json!({"object": "list", "data": data, "model": model,
               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}
