//! The Ollama-compatible surface (seed 002 with `notes/api.md`'s corrections): chat and generate as
//! NDJSON streams (or one object with `stream: false`), embeddings, model listings, seed 002's provider
//! views, and 501 for the model-management routes a router cannot honour.

pub mod models;
pub mod ndjson;
pub mod wire;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Json};
use serde_json::{json, Value};
use tokio::time::Instant;

use self::ndjson::{Kind, Ndjson, Timing};
use crate::api::auth::Caller;
use crate::api::convert::{completion_request, Ask};
use crate::api::dispatch::{self, not_implemented};
use crate::api::error::{ApiError, Surface};
use crate::api::{json, ApiState};
use crate::domain::{ChatMessage, Role};
use crate::generation::GenerationParams;
use crate::router::EmbedRequest;

/// NDJSON's media type, as Ollama sends it.
const NDJSON: &str = "application/x-ndjson";

/// The Ollama routes.
pub fn routes() -> axum::Router<ApiState> {
    axum::Router::new()
        .route("/", get(models::root).head(models::root))
        .route("/api/version", get(models::version))
        .route("/api/tags", get(models::tags))
        .route("/api/tags/{provider}", get(models::provider_tags))
        .route("/api/show", post(models::show))
        .route("/api/ps", get(models::ps))
        .route("/api/providers", get(models::providers))
        .route(
            "/api/providers/{provider}/stats",
            get(models::provider_stats),
        )
        .route("/api/chat", post(chat))
        .route("/api/generate", post(generate))
        .route("/api/embed", post(embed))
        .route("/api/embeddings", post(embeddings))
        .route("/api/create", any(not_implemented))
        .route("/api/copy", any(not_implemented))
        .route("/api/delete", any(not_implemented))
        .route("/api/pull", any(not_implemented))
        .route("/api/push", any(not_implemented))
        .route("/api/blobs/{digest}", any(not_implemented))
}

/// `POST /api/chat`.
async fn chat(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let req: wire::ChatRequest = json::parse(Surface::Ollama, body)?;
    let (ask, stream) = req.into_ask()?;
    if ask.messages.is_empty() {
        return loaded(&state, &caller, &ask, Kind::Chat);
    }
    answer(
        &state,
        &caller,
        ask,
        Answering {
            kind: Kind::Chat,
            stream,
            arrived,
        },
    )
    .await
}

/// `POST /api/generate`.
async fn generate(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let req: wire::GenerateRequest = json::parse(Surface::Ollama, body)?;
    let empty = req.prompt.is_empty() && req.images.as_ref().is_none_or(Vec::is_empty);
    let (ask, stream) = req.into_ask()?;
    if empty {
        return loaded(&state, &caller, &ask, Kind::Generate);
    }
    answer(
        &state,
        &caller,
        ask,
        Answering {
            kind: Kind::Generate,
            stream,
            arrived,
        },
    )
    .await
}

/// How to answer one chat or generate request.
struct Answering {
    kind: Kind,
    stream: bool,
    arrived: Instant,
}

async fn answer(
    state: &ApiState,
    caller: &Caller,
    ask: Ask,
    how: Answering,
) -> Result<Response, ApiError> {
    let (begun, requested) =
        dispatch::begin_ask(state, Surface::Ollama, caller, ask, how.stream, how.arrived).await?;
    let timing = Timing {
        arrived: how.arrived,
        first: begun.opened.first_at,
    };
    let framing = Ndjson::new(
        how.kind,
        begun.model(&requested),
        models::rfc3339(state.clock.now_ms()),
        timing,
    );
    if how.stream {
        return Ok(dispatch::streamed(state, begun, framing, NDJSON));
    }
    let (answer, source) = dispatch::gathered(state, begun).await?;
    Ok(dispatch::bytes_response(
        framing.whole(&answer),
        source.as_ref(),
    ))
}

/// Ollama's answer to a request without messages or prompt: the model is "loaded" (it exists and the
/// caller may use it), with `done_reason: "load"`. Nothing is asked of a provider.
fn loaded(state: &ApiState, caller: &Caller, ask: &Ask, kind: Kind) -> Result<Response, ApiError> {
    // The model resolution and the key's permissions of a real request (404, 403), on a stand-in
    // message, so a key learns nothing here about a model it may not use.
    let probe = Ask {
        model: ask.model.clone(),
        messages: vec![ChatMessage::new(Role::User, "")],
        params: GenerationParams::default(),
        max_tokens: None,
    };
    completion_request(Surface::Ollama, &*state.router, caller, probe)?;
    let at = models::rfc3339(state.clock.now_ms());
    let body = match kind {
        Kind::Chat => json!({"model": ask.model, "created_at": at,
            "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "load"}),
        Kind::Generate => json!({"model": ask.model, "created_at": at, "response": "",
            "done": true, "done_reason": "load"}),
    };
    Ok(Json(body).into_response())
}

/// Embeds `inputs` with `model` for `caller`.
async fn embed_inputs(
    state: &ApiState,
    caller: &Caller,
    model: String,
    inputs: Vec<String>,
) -> Result<crate::router::Embeddings, ApiError> {
    let request = EmbedRequest {
        user: caller.user(),
        model,
        inputs,
    };
    crate::api::keys::gate::embed(&*state.router, caller, Surface::Ollama, request).await
}

/// `POST /api/embed`.
async fn embed(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let req: wire::EmbedRequest = json::parse(Surface::Ollama, body)?;
    let e = embed_inputs(&state, &caller, req.model, req.input.into_vec()).await?;
    let ns = u64::try_from(arrived.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let body: Value = json!({
        "model": e.source.model,
        "embeddings": e.vectors,
        "total_duration": ns,
        "load_duration": 0,
        "prompt_eval_count": e.prompt_tokens,
    });
    Ok(dispatch::json_response(&body, Some(&e.source)))
}

/// `POST /api/embeddings` (legacy): one vector.
async fn embeddings(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: wire::LegacyEmbedRequest = json::parse(Surface::Ollama, body)?;
    let e = embed_inputs(&state, &caller, req.model, vec![req.prompt]).await?;
    let vector = e.vectors.into_iter().next().unwrap_or_default();
    Ok(dispatch::json_response(
        &json!({ "embedding": vector }),
        Some(&e.source),
    ))
}
