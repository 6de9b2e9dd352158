//! A simulated Ollama server (Ollama Cloud with bearer keys, or a local daemon without):
//! `POST /api/chat` (NDJSON stream, or one JSON object with `"stream": false`; images, tools, `think`
//! and `options` checked and answered as [`super::features`] says), `POST /api/embed` and
//! `GET /api/tags`, with per-key request counts and the faults of [`super::Fault`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::json;

use super::control::{Desk, SimControl};
use super::features::{self, Asked, Dialect};
use super::server::{bearer, json, pause, Step};
use super::stream::{self, Piece, Wire};
use super::{
    last_user_message, model_and_messages, prompt_chars, reply_text, Fault, ReplyShape, SimRequest,
};
use crate::secrets::fingerprint_str;

/// How the simulated Ollama behaves.
#[derive(Clone, Debug)]
pub struct SimOllamaOptions {
    /// Accepted bearer keys. Empty = local mode: no key needed (a sent key is ignored). Otherwise a
    /// request with another key or none gets 401 and is recorded as unexpected.
    pub keys: Vec<String>,
    /// Served models (`/api/tags`); others answer 404 `model '…' not found`.
    pub models: Vec<String>,
    /// Reply pacing and length (`keep_alive` does not apply: NDJSON has no comments).
    pub reply: ReplyShape,
    /// Refuse prompts longer than this many characters with a context-length error.
    pub max_prompt_chars: Option<usize>,
    /// Embedding models (`POST /api/embed`); a chat model there answers 400, any other name 404.
    pub embedding_models: Vec<String>,
}

impl Default for SimOllamaOptions {
    /// One key `ollama-sim-1`, the default RC2 models, no delays.
    fn default() -> Self {
        Self {
            keys: vec!["ollama-sim-1".into()],
            models: vec![
                "gpt-oss:120b".into(),
                "kimi-k2.5".into(),
                "deepseek-v3.1:671b".into(),
                "qwen3-next:80b".into(),
            ],
            reply: ReplyShape::default(),
            max_prompt_chars: None,
            embedding_models: vec!["nomic-embed-text-v2-moe".into()],
        }
    }
}

/// A running simulated Ollama. Stops on [`SimControl::shutdown`] or when dropped; its control surface
/// ([`SimControl`]) is reached through `Deref`.
pub struct SimOllama {
    control: SimControl,
}

struct Shared {
    options: SimOllamaOptions,
    desk: Arc<Desk>,
}

impl SimOllama {
    /// Starts the simulator on `127.0.0.1:<free port>`.
    pub async fn start(options: SimOllamaOptions) -> std::io::Result<Self> {
        let desk = Desk::new(options.reply.clone());
        let shared = Arc::new(Shared {
            options,
            desk: desk.clone(),
        });
        let router = axum::Router::new()
            .route("/api/chat", post(chat))
            .route("/api/tags", get(tags))
            .route("/api/embed", post(embed))
            .fallback(fallback)
            .with_state(shared);
        let control = SimControl::serve(router, desk, "").await?;
        Ok(Self { control })
    }
}

impl std::ops::Deref for SimOllama {
    type Target = SimControl;

    fn deref(&self) -> &SimControl {
        &self.control
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    json(status, json!({ "error": message }))
}

impl Shared {
    /// `Ok((key, label))` for an accepted caller; in local mode any caller is accepted.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        method: &str,
        path: &str,
    ) -> Result<(Option<String>, Option<String>), Box<Response>> {
        let key = bearer(headers);
        let keys = &self.options.keys;
        if keys.is_empty() {
            return Ok((key, Some("local".into())));
        }
        if let Some(pos) = key
            .as_deref()
            .and_then(|k| keys.iter().position(|s| s == k))
        {
            return Ok((key, Some(format!("key#{}", pos + 1))));
        }
        self.desk.book.unknown_key(method, path, key.as_deref());
        Err(Box::new(error(StatusCode::UNAUTHORIZED, "unauthorized")))
    }
}

/// A parsed chat request.
struct ChatCall {
    model: String,
    messages: Vec<serde_json::Value>,
    asked: Asked,
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (key, label) = match shared.authenticate(&headers, "POST", "/api/chat") {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let mut log = SimRequest::new("POST", "/api/chat", 200);
    log.key_fingerprint = key.as_deref().map(fingerprint_str);
    log.account = label;
    log.stream = true;
    let call = match parse(&shared, &mut log, &body) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let fault = shared.desk.book.take_fault(key.as_deref());
    log.fault = fault.clone();
    let chars = prompt_chars(&call.messages);
    if let Some((response, status)) = refusal(&shared.options, &call.model, chars, fault.as_ref()) {
        log.status = status;
        shared.desk.book.record(log);
        return response;
    }
    if fault == Some(Fault::Hang) {
        log.status = 0;
        shared.desk.book.record(log);
        shared.desk.cancel.cancelled().await;
        return shutting_down();
    }
    let stream = log.stream;
    shared.desk.book.record(log);
    reply(&shared.desk, &call, chars, stream, fault).await
}

/// Reads the chat body into `log` (model, stream, cap); an unreadable body is answered 400.
fn parse(shared: &Shared, log: &mut SimRequest, body: &[u8]) -> Result<ChatCall, Box<Response>> {
    let request = shared
        .desk
        .book
        .read_json(log, body)
        .map_err(|message| Box::new(error(StatusCode::BAD_REQUEST, &message)))?;
    let (model, messages) = model_and_messages(&request);
    log.model = Some(model.clone());
    // Ollama streams unless told otherwise.
    log.stream = request.get("stream").and_then(serde_json::Value::as_bool) != Some(false);
    log.max_tokens = request
        .pointer("/options/num_predict")
        .and_then(serde_json::Value::as_u64);
    let asked = features::check(&request, Dialect::Ollama).map_err(|problem| {
        let message = shared.desk.book.invalid(log, &problem);
        Box::new(error(StatusCode::BAD_REQUEST, &message))
    })?;
    log.images.clone_from(&asked.images);
    log.fields.clone_from(&asked.fields);
    Ok(ChatCall {
        model,
        messages,
        asked,
    })
}

/// The error answer (and its status) of a refused chat request: a status fault, an unknown model or a
/// prompt over the limit; `None` when the request is answered.
fn refusal(
    options: &SimOllamaOptions,
    model: &str,
    chars: usize,
    fault: Option<&Fault>,
) -> Option<(Response, u16)> {
    if let Some(refused) = fault.and_then(status_fault) {
        return Some(refused);
    }
    if fault == Some(&Fault::Hang) {
        return None;
    }
    if !options.models.iter().any(|m| m == model) {
        let response = error(StatusCode::NOT_FOUND, &format!("model '{model}' not found"));
        return Some((response, 404));
    }
    options
        .max_prompt_chars
        .is_some_and(|max| chars > max)
        .then(context_400)
}

/// The answer of a fault that replaces the whole response with an error status.
fn status_fault(fault: &Fault) -> Option<(Response, u16)> {
    let (status, message) = match fault {
        Fault::RateLimitPerMinute { retry_after_secs } => {
            let mut r = too_many();
            insert_header(&mut r, "retry-after", &retry_after_secs.to_string());
            return Some((r, 429));
        }
        Fault::RateLimitResetOnly { reset_in_secs } => {
            let mut r = too_many();
            // This simulator has no quota days, so no injected clock: the reset is on the system clock.
            let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
            let reset = now + i64::try_from(*reset_in_secs).unwrap_or(0) * 1000;
            insert_header(&mut r, "x-ratelimit-reset", &reset.to_string());
            insert_header(&mut r, "x-ratelimit-remaining", "0");
            return Some((r, 429));
        }
        Fault::ContextTooLong => return Some(context_400()),
        Fault::Moderated => (
            StatusCode::FORBIDDEN,
            "your input was flagged by moderation",
        ),
        Fault::RateLimitDaily => (
            StatusCode::TOO_MANY_REQUESTS,
            "you've reached your weekly usage limit, please upgrade to continue",
        ),
        Fault::PaymentRequired => (
            StatusCode::PAYMENT_REQUIRED,
            "payment required: no active subscription",
        ),
        Fault::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
        Fault::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "internal server error"),
        _ => return None,
    };
    Some((error(status, message), status.as_u16()))
}

fn too_many() -> Response {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "too many requests, please slow down",
    )
}

fn insert_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
}

fn shutting_down() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "simulator shutting down")
}

/// The reply after the thinking delay: one JSON object, or NDJSON lines with the stream `fault` applied.
async fn reply(
    desk: &Desk,
    call: &ChatCall,
    chars: usize,
    stream: bool,
    fault: Option<Fault>,
) -> Response {
    let shape = desk.reply();
    let last_user = last_user_message(&call.messages);
    let text = reply_text(&call.model, &last_user, shape.sentences);
    let plan = features::plan(&call.asked, &call.model, &last_user, text);
    // Ollama sends a tool call whole, in one piece.
    let chunks = stream::pieces(&plan, call.asked.reasoning, shape.words_per_chunk, 0);
    if !pause(shape.first_byte_latency, &desk.cancel).await {
        return shutting_down();
    }
    let said = chunks.iter().map(|p| match p {
        Piece::Text(t) | Piece::Reasoning(t) => t.split_whitespace().count(),
        Piece::Call { arguments, .. } => arguments.split_whitespace().count().max(1),
    });
    let wire = Ndjson {
        model: &call.model,
        prompt_tokens: (chars as u64).div_ceil(4),
        eval_count: said.sum(),
        chunk_delay: shape.chunk_delay,
    };
    if !stream {
        let mut done = wire.done_line("");
        done["message"] = whole_message(&chunks);
        return json(StatusCode::OK, done);
    }
    let steps = stream::script(&wire, Vec::new(), &chunks, fault);
    stream::streamed(desk, steps, "application/x-ndjson")
}

/// Ollama's NDJSON wire: one JSON object a line, the last with `"done": true`.
struct Ndjson<'a> {
    model: &'a str,
    prompt_tokens: u64,
    eval_count: usize,
    chunk_delay: std::time::Duration,
}

impl Ndjson<'_> {
    fn done_line(&self, content: &str) -> serde_json::Value {
        json!({"model": self.model, "created_at": "2025-01-01T00:00:00Z",
               "message": {"role": "assistant", "content": content},
               "done": true, "done_reason": "stop", "total_duration": 1_000_000,
               "load_duration": 1000, "prompt_eval_count": self.prompt_tokens,
               "prompt_eval_duration": 1000, "eval_count": self.eval_count, "eval_duration": 1000})
    }
}

fn line(v: &serde_json::Value) -> Step {
    Step::Send(Bytes::from(format!("{v}\n")))
}

impl Wire for Ndjson<'_> {
    const SSE: bool = false;

    fn delta(&self, _index: usize, piece: &Piece) -> Step {
        line(
            &json!({"model": self.model, "created_at": "2025-01-01T00:00:00Z",
                     "message": message(piece), "done": false}),
        )
    }

    fn gap(&self, steps: &mut Vec<Step>) {
        steps.push(Step::Sleep(self.chunk_delay));
    }

    fn error(&self, code: Option<u16>, message: &str) -> Step {
        match code {
            None => line(&json!({ "error": message })),
            Some(code) => line(&json!({ "error": {"code": code, "message": message} })),
        }
    }

    fn end(&self, steps: &mut Vec<Step>) {
        steps.push(line(&self.done_line("")));
    }
}

/// The `message` of a streamed line carrying `piece`.
fn message(piece: &Piece) -> serde_json::Value {
    match piece {
        Piece::Text(text) => json!({"role": "assistant", "content": text}),
        Piece::Reasoning(text) => json!({"role": "assistant", "content": "", "thinking": text}),
        Piece::Call {
            name, arguments, ..
        } => {
            let arguments: serde_json::Value =
                serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
            json!({"role": "assistant", "content": "",
                   "tool_calls": [{"function": {"name": name, "arguments": arguments}}]})
        }
    }
}

/// The `message` of a non-streamed answer: all pieces joined.
fn whole_message(pieces: &[Piece]) -> serde_json::Value {
    let mut content = String::new();
    let mut thinking = String::new();
    let mut calls = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => content.push_str(t),
            Piece::Reasoning(t) => thinking.push_str(t),
            Piece::Call { .. } => calls.extend(
                message(piece)["tool_calls"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            ),
        }
    }
    let mut out = json!({"role": "assistant", "content": content});
    if !thinking.is_empty() {
        out["thinking"] = thinking.into();
    }
    if !calls.is_empty() {
        out["tool_calls"] = calls.into();
    }
    out
}

fn context_400() -> (Response, u16) {
    (
        error(
            StatusCode::BAD_REQUEST,
            "the input length exceeds the context length",
        ),
        400,
    )
}

async fn tags(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let (key, label) = match shared.authenticate(&headers, "GET", "/api/tags") {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let mut log = SimRequest::new("GET", "/api/tags", 200);
    log.key_fingerprint = key.as_deref().map(fingerprint_str);
    log.account = label;
    shared.desk.book.record(log);
    let models: Vec<serde_json::Value> = shared
        .options
        .models
        .iter()
        .map(|m| json!({"name": m, "model": m, "modified_at": "2025-01-01T00:00:00Z", "size": 0}))
        .collect();
    json(StatusCode::OK, json!({ "models": models }))
}

/// `POST /api/embed`: `{model, input: string | [string]}` → `{model, embeddings, …}`, deterministic
/// vectors; a chat model cannot embed (400), an unknown one is 404, as Ollama answers.
async fn embed(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (key, label) = match shared.authenticate(&headers, "POST", "/api/embed") {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let mut log = SimRequest::new("POST", "/api/embed", 200);
    log.key_fingerprint = key.as_deref().map(fingerprint_str);
    log.account = label;
    let book = &shared.desk.book;
    let request = match book.read_json(&log, &body) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let (model, _) = model_and_messages(&request);
    log.model = Some(model.clone());
    let inputs = match features::embed_inputs(&request, "input") {
        Ok(inputs) => inputs,
        Err(problem) => return error(StatusCode::BAD_REQUEST, &book.invalid(&log, &problem)),
    };
    log.embed_inputs.clone_from(&inputs);
    let options = &shared.options;
    let refused = if options.models.contains(&model) {
        Some((
            StatusCode::BAD_REQUEST,
            format!("\"{model}\" does not support embeddings"),
        ))
    } else if !options.embedding_models.contains(&model) {
        Some((
            StatusCode::NOT_FOUND,
            format!("model \"{model}\" not found, try pulling it first"),
        ))
    } else {
        None
    };
    if let Some((status, message)) = refused {
        log.status = status.as_u16();
        book.record(log);
        return error(status, &message);
    }
    book.record(log);
    let tokens: usize = inputs.iter().map(|i| i.split_whitespace().count()).sum();
    let embeddings: Vec<Vec<f32>> = inputs.iter().map(|i| features::embedding(i)).collect();
    json(
        StatusCode::OK,
        json!({"model": model, "embeddings": embeddings, "total_duration": 1_000_000,
               "load_duration": 1000, "prompt_eval_count": tokens}),
    )
}

async fn fallback(State(shared): State<Arc<Shared>>, method: Method, uri: Uri) -> Response {
    let message = shared.desk.book.unknown_route(&method, &uri);
    error(StatusCode::NOT_FOUND, &message)
}
