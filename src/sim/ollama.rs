//! A simulated Ollama server (Ollama Cloud with bearer keys, or a local daemon without):
//! `POST /api/chat` (NDJSON stream, or one JSON object with `"stream": false`) and `GET /api/tags`,
//! with per-key request counts and the faults of [`super::Fault`].

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::server::{bearer, json, lock, pause, scripted_body, Book, Running, Step};
use super::{
    last_user_message, prompt_chars, reply_chunks, reply_text, Fault, ReplyShape, SimRequest,
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
        }
    }
}

/// A running simulated Ollama. Stops on [`Self::shutdown`] or when dropped.
pub struct SimOllama {
    shared: Arc<Shared>,
    running: Running,
}

struct Shared {
    options: Mutex<SimOllamaOptions>,
    book: Book,
    cancel: CancellationToken,
}

impl SimOllama {
    /// Starts the simulator on `127.0.0.1:<free port>`.
    pub async fn start(options: SimOllamaOptions) -> std::io::Result<Self> {
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            options: Mutex::new(options),
            book: Book::default(),
            cancel: cancel.clone(),
        });
        let router = axum::Router::new()
            .route("/api/chat", post(chat))
            .route("/api/tags", get(tags))
            .fallback(fallback)
            .with_state(shared.clone());
        let running = Running::serve(router, cancel).await?;
        Ok(Self { shared, running })
    }

    /// The base URL without `/api`, e.g. `http://127.0.0.1:PORT` (what `[ollama] base_url` takes).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.running.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<SimRequest> {
        lock(&self.shared.book.requests).clone()
    }

    /// Chat requests (any status) made with `key`.
    pub fn requests_for_key(&self, key: &str) -> usize {
        let fp = fingerprint_str(key);
        lock(&self.shared.book.requests)
            .iter()
            .filter(|r| r.is_chat() && r.key_fingerprint.as_deref() == Some(fp.as_str()))
            .count()
    }

    /// Chat requests (any status) in total.
    pub fn chat_requests(&self) -> usize {
        lock(&self.shared.book.requests)
            .iter()
            .filter(|r| r.is_chat())
            .count()
    }

    /// What the endless bodies of [`super::Fault::Unterminated`] sent so far.
    pub fn endless(&self) -> super::EndlessStats {
        self.shared.book.endless.stats()
    }

    /// Requests no correct client would make (unknown route or key, unreadable body). Assert it empty.
    pub fn unexpected(&self) -> Vec<String> {
        lock(&self.shared.book.unexpected).clone()
    }

    /// Applies `fault` to every chat request until cleared with `None`.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.shared.book.set_fault(fault);
    }

    /// Queues a one-shot `fault` for the next chat request.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.book.push_fault(fault);
    }

    /// Queues a one-shot `fault` for the next chat request made with `key`.
    pub fn push_key_fault(&self, key: &str, fault: Fault) {
        self.shared.book.push_key_fault(key, fault);
    }

    /// Changes reply pacing and length from now on.
    pub fn set_reply_shape(&self, reply: ReplyShape) {
        lock(&self.shared.options).reply = reply;
    }

    /// Stops the server: hanging and stalled answers end, the port closes.
    pub async fn shutdown(&self) {
        self.running.shutdown().await;
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
        let keys = lock(&self.options).keys.clone();
        if keys.is_empty() {
            return Ok((key, Some("local".into())));
        }
        if let Some(pos) = key
            .as_deref()
            .and_then(|k| keys.iter().position(|s| s == k))
        {
            return Ok((key, Some(format!("key#{}", pos + 1))));
        }
        let fp = key.as_deref().map(fingerprint_str);
        self.book.unexpected(format!(
            "{method} {path} with unknown key {}",
            fp.as_deref().unwrap_or("(none)")
        ));
        self.book.record(SimRequest {
            method: method.into(),
            path: path.into(),
            key_fingerprint: fp,
            account: None,
            model: None,
            stream: false,
            status: 401,
            fault: None,
            referer: None,
            title: None,
            max_tokens: None,
        });
        Err(Box::new(error(StatusCode::UNAUTHORIZED, "unauthorized")))
    }
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (key, label) = match shared.authenticate(&headers, "POST", "/api/chat") {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let mut log = SimRequest {
        method: "POST".into(),
        path: "/api/chat".into(),
        key_fingerprint: key.as_deref().map(fingerprint_str),
        account: label,
        model: None,
        stream: true,
        status: 200,
        fault: None,
        referer: None,
        title: None,
        max_tokens: None,
    };
    let request: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            shared
                .book
                .unexpected(format!("POST /api/chat: body is not JSON: {e}"));
            log.status = 400;
            shared.book.record(log);
            return error(
                StatusCode::BAD_REQUEST,
                &format!("simulator: body is not JSON: {e}"),
            );
        }
    };
    let model = request
        .get("model")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_owned();
    let messages = request
        .get("messages")
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    log.model = Some(model.clone());
    // Ollama streams unless told otherwise.
    log.stream = request.get("stream").and_then(serde_json::Value::as_bool) != Some(false);
    log.max_tokens = request
        .pointer("/options/num_predict")
        .and_then(serde_json::Value::as_u64);
    let fault = shared.book.take_fault(key.as_deref());
    log.fault = fault.clone();
    let options = lock(&shared.options).clone();

    let status_fault = match &fault {
        Some(Fault::RateLimitPerMinute { retry_after_secs }) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests, please slow down",
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
            Some((r, 429))
        }
        Some(Fault::RateLimitResetOnly { reset_in_secs }) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests, please slow down",
            );
            // This simulator has no quota days, so no injected clock: the reset is on the system clock.
            let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
            let reset = now + i64::try_from(*reset_in_secs).unwrap_or(0) * 1000;
            for (name, value) in [
                ("x-ratelimit-reset", reset.to_string()),
                ("x-ratelimit-remaining", "0".to_owned()),
            ] {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    r.headers_mut().insert(name, v);
                }
            }
            Some((r, 429))
        }
        Some(Fault::Moderated) => Some((
            error(
                StatusCode::FORBIDDEN,
                "your input was flagged by moderation",
            ),
            403,
        )),
        Some(Fault::RateLimitDaily) => Some((
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "you've reached your weekly usage limit, please upgrade to continue",
            ),
            429,
        )),
        Some(Fault::PaymentRequired) => Some((
            error(
                StatusCode::PAYMENT_REQUIRED,
                "payment required: no active subscription",
            ),
            402,
        )),
        Some(Fault::Unauthorized) => Some((error(StatusCode::UNAUTHORIZED, "unauthorized"), 401)),
        Some(Fault::ServerError) => Some((
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error"),
            500,
        )),
        Some(Fault::ContextTooLong) => Some(context_400()),
        _ => None,
    };
    if let Some((response, status)) = status_fault {
        log.status = status;
        shared.book.record(log);
        return response;
    }
    if fault == Some(Fault::Hang) {
        log.status = 0;
        shared.book.record(log);
        shared.cancel.cancelled().await;
        return error(StatusCode::SERVICE_UNAVAILABLE, "simulator shutting down");
    }
    if !options.models.contains(&model) {
        log.status = 404;
        shared.book.record(log);
        return error(StatusCode::NOT_FOUND, &format!("model '{model}' not found"));
    }
    let chars = prompt_chars(&messages);
    if options.max_prompt_chars.is_some_and(|max| chars > max) {
        let (r, status) = context_400();
        log.status = status;
        shared.book.record(log);
        return r;
    }
    let stream = log.stream;
    shared.book.record(log);

    let text = reply_text(
        &model,
        &last_user_message(&messages),
        options.reply.sentences,
    );
    let chunks = reply_chunks(&text, options.reply.words_per_chunk);
    let prompt_tokens = (chars as u64).div_ceil(4);
    let eval_count = text.split_whitespace().count();
    if !pause(options.reply.first_byte_latency, &shared.cancel).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, "simulator shutting down");
    }
    let done_line = |content: &str| {
        json!({"model": model, "created_at": "2025-01-01T00:00:00Z",
               "message": {"role": "assistant", "content": content},
               "done": true, "done_reason": "stop", "total_duration": 1_000_000,
               "load_duration": 1000, "prompt_eval_count": prompt_tokens,
               "prompt_eval_duration": 1000, "eval_count": eval_count, "eval_duration": 1000})
    };
    if !stream {
        return json(StatusCode::OK, done_line(&text));
    }
    let line = |v: serde_json::Value| Step::Send(Bytes::from(format!("{v}\n")));
    let cut_after = match &fault {
        Some(Fault::StallAfter(n) | Fault::TruncateAfter(n)) => Some(*n),
        Some(
            Fault::MidStreamError { after, .. }
            | Fault::MidStreamStatus { after, .. }
            | Fault::Unterminated { after },
        ) => Some(*after),
        _ => None,
    };
    let mut steps = Vec::new();
    for (i, piece) in chunks.iter().enumerate() {
        if cut_after == Some(i) {
            break;
        }
        if i > 0 {
            steps.push(Step::Sleep(options.reply.chunk_delay));
        }
        steps.push(line(
            json!({"model": model, "created_at": "2025-01-01T00:00:00Z",
                               "message": {"role": "assistant", "content": piece}, "done": false}),
        ));
    }
    match fault {
        Some(Fault::StallAfter(_)) => steps.push(Step::Stall),
        Some(Fault::TruncateAfter(_)) => {}
        Some(Fault::Unterminated { .. }) => steps.push(Step::Endless(super::endless_piece(false))),
        Some(Fault::MidStreamError { message, .. }) => {
            steps.push(line(json!({ "error": message })))
        }
        Some(Fault::MidStreamStatus { code, message, .. }) => {
            steps.push(line(json!({ "error": {"code": code, "message": message} })))
        }
        _ => steps.push(line(done_line(""))),
    }
    let mut response = Response::new(scripted_body(
        steps,
        shared.cancel.clone(),
        shared.book.endless.clone(),
    ));
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
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
    shared.book.record(SimRequest {
        method: "GET".into(),
        path: "/api/tags".into(),
        key_fingerprint: key.as_deref().map(fingerprint_str),
        account: label,
        model: None,
        stream: false,
        status: 200,
        fault: None,
        referer: None,
        title: None,
        max_tokens: None,
    });
    let models: Vec<serde_json::Value> = lock(&shared.options)
        .models
        .iter()
        .map(|m| json!({"name": m, "model": m, "modified_at": "2025-01-01T00:00:00Z", "size": 0}))
        .collect();
    json(StatusCode::OK, json!({ "models": models }))
}

async fn fallback(State(shared): State<Arc<Shared>>, method: Method, uri: Uri) -> Response {
    let what = format!("{method} {} (no such route)", uri.path());
    shared.book.unexpected(what.clone());
    shared.book.record(SimRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        key_fingerprint: None,
        account: None,
        model: None,
        stream: false,
        status: 404,
        fault: None,
        referer: None,
        title: None,
        max_tokens: None,
    });
    error(StatusCode::NOT_FOUND, &format!("simulator: {what}"))
}
