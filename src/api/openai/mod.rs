//! The OpenAI-compatible surface: chat completions (JSON or SSE), legacy completions, the model list
//! and embeddings, with errors in OpenAI's `{"error": {...}}` shape so the SDKs raise their own types.

pub mod sse;
pub mod wire;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde_json::{json, Value};
use tokio::time::Instant;

use self::sse::{Kind, Sse, UsageOut};
use crate::api::auth::Caller;
use crate::api::catalog::{self, Entry};
use crate::api::convert::Ask;
use crate::api::dispatch;
use crate::api::error::{ApiError, Surface};
use crate::api::reply::Answer;
use crate::api::{json, ApiState};
use crate::router::EmbedRequest;

/// SSE's media type.
const EVENT_STREAM: &str = "text/event-stream";

/// The OpenAI routes (under `/v1`).
pub fn routes() -> axum::Router<ApiState> {
    axum::Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(list_models))
        // Model ids contain slashes (`meta-llama/llama-3.3-70b-instruct:free`).
        .route("/v1/models/{*id}", get(get_model))
        .route("/v1/embeddings", post(embeddings))
}

/// A fresh response id (`chatcmpl-…`, `cmpl-…`).
fn response_id(prefix: &str) -> String {
    format!(
        "{prefix}-{:016x}{:08x}",
        fastrand::u64(..),
        fastrand::u32(..)
    )
}

/// `POST /v1/chat/completions`.
async fn chat_completions(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    respond::<wire::ChatRequest>(&state, &caller, body, Kind::Chat).await
}

/// `POST /v1/completions`.
async fn completions(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    respond::<wire::CompletionRequest>(&state, &caller, body, Kind::Completion).await
}

/// Reads a request of type `R` and answers it as `kind`.
async fn respond<R: wire::OpenAiRequest>(
    state: &ApiState,
    caller: &Caller,
    body: Result<Bytes, BytesRejection>,
    kind: Kind,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let req: R = wire::read(json::parse_value(Surface::OpenAi, body)?)?;
    let (ask, stream, usage) = req.into_ask()?;
    let how = Answering {
        kind,
        stream,
        usage,
        arrived,
    };
    answer(state, caller, ask, how).await
}

/// How to answer one request.
struct Answering {
    kind: Kind,
    stream: bool,
    usage: bool,
    arrived: Instant,
}

async fn answer(
    state: &ApiState,
    caller: &Caller,
    ask: Ask,
    how: Answering,
) -> Result<Response, ApiError> {
    let (begun, requested) =
        dispatch::begin_ask(state, Surface::OpenAi, caller, ask, how.stream, how.arrived).await?;
    let id = response_id(match how.kind {
        Kind::Chat => "chatcmpl",
        Kind::Completion => "cmpl",
    });
    let created = state.clock.now_ms() / 1000;
    let model = begun.model(&requested);
    if how.stream {
        let framing = Sse::new(how.kind, id, created, model, how.usage);
        return Ok(dispatch::streamed(state, begun, framing, EVENT_STREAM));
    }
    let (answer, source) = dispatch::gathered(state, begun).await?;
    let body = whole(how.kind, &id, created, &model, &answer);
    Ok(dispatch::json_response(&body, source.as_ref()))
}

/// A non-streamed answer in OpenAI's shape.
fn whole(kind: Kind, id: &str, created: i64, model: &str, answer: &Answer) -> Value {
    let usage = UsageOut::from(answer.completion.usage);
    let finish = answer.finish_reason();
    match kind {
        Kind::Chat => {
            let mut message = json!({"role": "assistant", "content": answer.content});
            if !answer.tool_calls.is_empty() {
                if answer.content.is_empty() {
                    message["content"] = Value::Null;
                }
                message["tool_calls"] = answer
                    .tool_calls
                    .iter()
                    .map(|c| {
                        json!({"id": c.id, "type": "function",
                               "function": {"name": c.name, "arguments": c.arguments}})
                    })
                    .collect();
            }
            if !answer.thinking.is_empty() {
                message["reasoning"] = json!(answer.thinking);
            }
            json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
                "usage": usage,
            })
        }
        Kind::Completion => json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": answer.content, "logprobs": null, "finish_reason": finish}],
            "usage": usage,
        }),
    }
}

fn model_object(e: &Entry, created: i64) -> Value {
    json!({"id": e.name, "object": "model", "created": created, "owned_by": e.provider})
}

fn started_secs(state: &ApiState) -> i64 {
    let up = i64::try_from(state.started.elapsed().as_secs()).unwrap_or(0);
    state.clock.now_ms() / 1000 - up
}

/// `GET /v1/models`: what the caller may use.
async fn list_models(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    let created = started_secs(&state);
    let data: Vec<Value> = catalog::entries(&*state.router, &caller)
        .iter()
        .map(|e| model_object(e, created))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// `GET /v1/models/{id}`.
async fn get_model(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    catalog::find(&*state.router, &caller, &id)
        .map(|e| Json(model_object(&e, started_secs(&state))))
        .ok_or_else(|| ApiError::unknown_model(Surface::OpenAi, &id))
}

/// `POST /v1/embeddings`.
async fn embeddings(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: wire::EmbeddingsRequest = json::parse(Surface::OpenAi, body)?;
    let request = EmbedRequest {
        user: caller.user(),
        model: req.model,
        inputs: req.input.into_vec(),
    };
    let e =
        crate::api::keys::gate::embed(&*state.router, &caller, Surface::OpenAi, request).await?;
    let data: Vec<Value> = e
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = req.encoding_format.write(v);
            json!({"object": "embedding", "embedding": embedding, "index": i})
        })
        .collect();
    let body = json!({
        "object": "list", "data": data, "model": e.source.model,
        "usage": {"prompt_tokens": e.prompt_tokens, "total_tokens": e.prompt_tokens},
    });
    Ok(dispatch::json_response(&body, Some(&e.source)))
}
