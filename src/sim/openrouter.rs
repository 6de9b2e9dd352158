//! A simulated OpenRouter: `POST /api/v1/chat/completions` (SSE or JSON), `GET /api/v1/models`,
//! `GET /api/v1/key`, with keys on accounts, per-account daily free quotas that reset at 00:00 UTC on an
//! injected clock, a per-minute limit per account, `openrouter/free` resolving to a concrete model, and
//! the faults of [`super::Fault`].
//!
//! Quota rules (as OpenRouter documents them): the daily quota belongs to the **account**, so two keys
//! on one account share it; every chat request counts, failed ones included; once spent, chat requests
//! answer 429 "free-models-per-day" with `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset` at the next
//! UTC midnight. The per-minute limit is a sliding 60 s window per account answering 429 with
//! `Retry-After`.

use std::collections::HashMap;
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
use crate::clock::{next_utc_midnight, utc_day, SharedClock, SystemClock};
use crate::secrets::fingerprint_str;

/// The path prefix of the API (`base_url()` ends with it).
pub const API_PREFIX: &str = "/api/v1";

/// The router model that picks a free model itself.
pub const FREE_ROUTER_MODEL: &str = "openrouter/free";

/// OpenRouter's documented free-model limit per minute.
pub const DEFAULT_PER_MINUTE: u32 = 20;

/// The per-minute window.
const MINUTE_MS: i64 = 60_000;

/// While "thinking" (first-byte latency) with keep-alives on, a `: OPENROUTER PROCESSING` comment is
/// sent this often, as OpenRouter does, so a client's idle timeout sees activity.
pub const KEEP_ALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// A key the simulator accepts.
#[derive(Clone, Debug)]
pub struct SimKey {
    /// The key string clients send as `Authorization: Bearer <key>`.
    pub key: String,
    /// The account it belongs to; keys on one account share the daily quota and the per-minute limit.
    pub account: String,
    /// Free-model requests per UTC day for the account (50 or 1000 on OpenRouter). When keys of one
    /// account disagree, the first key listed wins.
    pub daily_free_quota: u32,
}

impl SimKey {
    /// A key on `account` with a daily free quota.
    pub fn new(key: impl Into<String>, account: impl Into<String>, daily_free_quota: u32) -> Self {
        Self {
            key: key.into(),
            account: account.into(),
            daily_free_quota,
        }
    }
}

/// A model the simulator lists and serves.
#[derive(Clone, Debug)]
pub struct SimModel {
    /// Its id (e.g. `deepseek/deepseek-chat-v3-0324:free`).
    pub id: String,
    /// Its context window in tokens. Prompts estimated (chars / 4) above it are refused with a
    /// context-length error.
    pub context_length: u64,
    /// Listed with zero prices.
    pub free: bool,
}

impl SimModel {
    /// A free model.
    pub fn free(id: impl Into<String>, context_length: u64) -> Self {
        Self {
            id: id.into(),
            context_length,
            free: true,
        }
    }
}

/// How the simulated OpenRouter behaves.
#[derive(Clone)]
pub struct SimOpenRouterOptions {
    /// Accepted keys. A request with any other key (or none) gets 401 and is recorded as unexpected.
    pub keys: Vec<SimKey>,
    /// Chat requests per account per sliding minute; `None` = unlimited.
    pub per_minute_limit: Option<u32>,
    /// Listed by `/models` and accepted by chat; others answer 404 "No endpoints found".
    pub models: Vec<SimModel>,
    /// The concrete model `openrouter/free` answers with (in the `model` field).
    pub free_router_picks: String,
    /// Reply pacing and length.
    pub reply: ReplyShape,
    /// The UTC clock for quota days and rate windows (inject a `TokioClock` in tests).
    pub clock: SharedClock,
    /// Serve `GET /key`; when false it answers 404 (as OpenAI-compatible servers without it do).
    pub key_endpoint: bool,
    /// Answer `GET /key` in the older `/auth/key` shape: `label`, `usage`, `limit`, `is_free_tier` and
    /// `rate_limit`, without `free_model_daily_requests`.
    pub key_info_legacy: bool,
    /// Refuse any prompt longer than this many characters with a context-length error.
    pub max_prompt_chars: Option<usize>,
}

impl Default for SimOpenRouterOptions {
    /// One key `sk-or-sim-1` on account `default` with 50 free requests a day, 20 per minute, three free
    /// models (the config's default list), no delays, the system clock.
    fn default() -> Self {
        Self {
            keys: vec![SimKey::new("sk-or-sim-1", "default", 50)],
            per_minute_limit: Some(DEFAULT_PER_MINUTE),
            models: vec![
                SimModel::free("deepseek/deepseek-chat-v3-0324:free", 163_840),
                SimModel::free("meta-llama/llama-3.3-70b-instruct:free", 131_072),
                SimModel::free("mistralai/mistral-small-3.2-24b-instruct:free", 32_768),
            ],
            free_router_picks: "mistralai/mistral-small-3.2-24b-instruct:free".into(),
            reply: ReplyShape::default(),
            clock: Arc::new(SystemClock),
            key_endpoint: true,
            key_info_legacy: false,
            max_prompt_chars: None,
        }
    }
}

/// A running simulated OpenRouter. Stops on [`Self::shutdown`] or when dropped.
pub struct SimOpenRouter {
    shared: Arc<Shared>,
    running: Running,
}

struct Shared {
    options: Mutex<SimOpenRouterOptions>,
    book: Book,
    accounts: Mutex<HashMap<String, AccountState>>,
    cancel: CancellationToken,
}

#[derive(Default)]
struct AccountState {
    day: i64,
    used: u32,
    /// Times (ms) of accepted chat requests in the last minute.
    minute: std::collections::VecDeque<i64>,
}

impl SimOpenRouter {
    /// Starts the simulator on `127.0.0.1:<free port>`.
    pub async fn start(options: SimOpenRouterOptions) -> std::io::Result<Self> {
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            options: Mutex::new(options),
            book: Book::default(),
            accounts: Mutex::new(HashMap::new()),
            cancel: cancel.clone(),
        });
        let router = axum::Router::new()
            .route(&format!("{API_PREFIX}/chat/completions"), post(chat))
            .route(&format!("{API_PREFIX}/models"), get(models))
            .route(&format!("{API_PREFIX}/key"), get(key_info))
            .fallback(fallback)
            .with_state(shared.clone());
        let running = Running::serve(router, cancel).await?;
        Ok(Self { shared, running })
    }

    /// The API base URL, e.g. `http://127.0.0.1:PORT/api/v1` (what `[openrouter] base_url` takes).
    pub fn base_url(&self) -> String {
        format!("http://{}{API_PREFIX}", self.running.addr)
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

    /// Chat requests (any status) made with any key of `account`.
    pub fn requests_for_account(&self, account: &str) -> usize {
        lock(&self.shared.book.requests)
            .iter()
            .filter(|r| r.is_chat() && r.account.as_deref() == Some(account))
            .count()
    }

    /// Free requests `account` has used in the current UTC day (failed attempts included).
    pub fn daily_used(&self, account: &str) -> u32 {
        let today = utc_day(lock(&self.shared.options).clock.now_ms());
        lock(&self.shared.accounts)
            .get(account)
            .filter(|a| a.day == today)
            .map_or(0, |a| a.used)
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

struct Caller {
    key: String,
    account: String,
    quota: u32,
}

impl Shared {
    /// The caller's key and account, or the 401 for an unknown or missing key (recorded as unexpected).
    fn authenticate(
        &self,
        headers: &HeaderMap,
        method: &str,
        path: &str,
    ) -> Result<Caller, Box<Response>> {
        let key = bearer(headers);
        let options = lock(&self.options);
        let found = key.as_deref().and_then(|k| {
            let sim_key = options.keys.iter().find(|s| s.key == k)?;
            let quota = options
                .keys
                .iter()
                .find(|s| s.account == sim_key.account)
                .map_or(sim_key.daily_free_quota, |first| first.daily_free_quota);
            Some(Caller {
                key: k.to_owned(),
                account: sim_key.account.clone(),
                quota,
            })
        });
        drop(options);
        found.ok_or_else(|| {
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
            Box::new(json(
                StatusCode::UNAUTHORIZED,
                json!({"error": {"message": "simulator: unknown or missing API key", "code": 401}}),
            ))
        })
    }
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let path = format!("{API_PREFIX}/chat/completions");
    let caller = match shared.authenticate(&headers, "POST", &path) {
        Ok(c) => c,
        Err(response) => return *response,
    };
    let mut log = SimRequest {
        method: "POST".into(),
        path: path.clone(),
        key_fingerprint: Some(fingerprint_str(&caller.key)),
        account: Some(caller.account.clone()),
        model: None,
        stream: false,
        status: 200,
        fault: None,
        referer: header(&headers, "http-referer"),
        title: header(&headers, "x-title"),
        max_tokens: None,
    };
    let request: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            shared
                .book
                .unexpected(format!("POST {path}: body is not JSON: {e}"));
            log.status = 400;
            shared.book.record(log);
            return json(
                StatusCode::BAD_REQUEST,
                json!({"error": {"message": format!("simulator: body is not JSON: {e}"), "code": 400}}),
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
    log.stream = request.get("stream").and_then(serde_json::Value::as_bool) == Some(true);
    log.max_tokens = request
        .get("max_tokens")
        .and_then(serde_json::Value::as_u64);
    let fault = shared.book.take_fault(Some(&caller.key));
    log.fault = fault.clone();
    let (response, status) = answer(&shared, &caller, &model, &messages, log.stream, fault);
    log.status = status;
    shared.book.record(log);
    match response {
        Answer::Now(r) => r,
        Answer::Hang => {
            shared.cancel.cancelled().await;
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": {"message": "simulator shutting down", "code": 503}}),
            )
        }
        Answer::After(delay, r) => {
            pause(delay, &shared.cancel).await;
            r
        }
    }
}

enum Answer {
    Now(Response),
    After(std::time::Duration, Response),
    Hang,
}

fn error(status: StatusCode, message: &str) -> Response {
    json(
        status,
        json!({"error": {"message": message, "code": status.as_u16()}}),
    )
}

/// Decides the answer to a chat request (quota bookkeeping included) and its status for the log.
fn answer(
    shared: &Shared,
    caller: &Caller,
    model: &str,
    messages: &[serde_json::Value],
    stream: bool,
    fault: Option<Fault>,
) -> (Answer, u16) {
    let options = lock(&shared.options).clone();
    let now = options.clock.now_ms();
    let today = utc_day(now);
    let midnight = next_utc_midnight(now);

    // Every request counts toward the daily quota, failed ones included (as OpenRouter does).
    let (used_before, minute_blocked) = {
        let mut accounts = lock(&shared.accounts);
        let account = accounts.entry(caller.account.clone()).or_default();
        if account.day != today {
            account.day = today;
            account.used = 0;
        }
        let used_before = account.used;
        account.used = account.used.saturating_add(1);
        while account
            .minute
            .front()
            .is_some_and(|t| now - *t >= MINUTE_MS)
        {
            account.minute.pop_front();
        }
        let blocked = match options.per_minute_limit {
            Some(limit) if account.minute.len() >= limit as usize => {
                account.minute.front().copied()
            }
            _ => {
                account.minute.push_back(now);
                None
            }
        };
        (used_before, blocked)
    };

    let daily_429 = || {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day",
        );
        set_header(&mut r, "X-RateLimit-Limit", caller.quota.to_string());
        set_header(&mut r, "X-RateLimit-Remaining", "0".into());
        set_header(&mut r, "X-RateLimit-Reset", midnight.to_string());
        (Answer::Now(r), 429)
    };
    let minute_429 = |reset_at: i64| {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit exceeded: free-models-per-min.",
        );
        let secs = ((reset_at - now).max(0) + 999) / 1000;
        set_header(&mut r, "Retry-After", secs.max(1).to_string());
        set_header(
            &mut r,
            "X-RateLimit-Limit",
            options.per_minute_limit.unwrap_or(0).to_string(),
        );
        set_header(&mut r, "X-RateLimit-Remaining", "0".into());
        set_header(&mut r, "X-RateLimit-Reset", reset_at.to_string());
        (Answer::Now(r), 429)
    };
    let context_400 = || {
        (
            Answer::Now(error(
                StatusCode::BAD_REQUEST,
                "This endpoint's maximum context length is exceeded: please reduce the length of the messages.",
            )),
            400,
        )
    };

    let mut stream_fault = None;
    match fault {
        Some(Fault::RateLimitPerMinute { retry_after_secs }) => {
            let reset = now + i64::try_from(retry_after_secs).unwrap_or(0) * 1000;
            return minute_429(reset);
        }
        Some(Fault::RateLimitResetOnly { reset_in_secs }) => {
            let (Answer::Now(mut r), status) =
                minute_429(now + i64::try_from(reset_in_secs).unwrap_or(0) * 1000)
            else {
                unreachable!("minute_429 answers at once")
            };
            r.headers_mut().remove("retry-after");
            return (Answer::Now(r), status);
        }
        Some(Fault::RateLimitDaily) => return daily_429(),
        Some(Fault::Moderated) => {
            let body = json!({"error": {
                "code": 403,
                "message": format!("{model} requires moderation on OpenInference. Your input was flagged for \"harassment\". No credits were charged."),
                "metadata": {"reasons": ["harassment"], "flagged_input": last_user_message(messages),
                             "provider_name": "OpenInference", "model_slug": model},
            }});
            return (Answer::Now(json(StatusCode::FORBIDDEN, body)), 403);
        }
        Some(Fault::PaymentRequired) => {
            return (
                Answer::Now(error(
                    StatusCode::PAYMENT_REQUIRED,
                    "Insufficient credits. This account never purchased credits.",
                )),
                402,
            )
        }
        Some(Fault::Unauthorized) => {
            return (
                Answer::Now(error(StatusCode::UNAUTHORIZED, "User not found.")),
                401,
            )
        }
        Some(Fault::ServerError) => {
            return (
                Answer::Now(error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                )),
                500,
            )
        }
        Some(Fault::Hang) => return (Answer::Hang, 0),
        Some(Fault::ContextTooLong) => return context_400(),
        Some(other) => stream_fault = Some(other),
        None => {}
    }

    if used_before >= caller.quota {
        return daily_429();
    }
    if let Some(oldest) = minute_blocked {
        return minute_429(oldest + MINUTE_MS);
    }
    let answering = if model == FREE_ROUTER_MODEL {
        options.free_router_picks.clone()
    } else {
        model.to_owned()
    };
    let Some(sim_model) = options.models.iter().find(|m| m.id == answering) else {
        return (
            Answer::Now(error(
                StatusCode::NOT_FOUND,
                &format!("No endpoints found for {model}."),
            )),
            404,
        );
    };
    let chars = prompt_chars(messages);
    let too_long = options.max_prompt_chars.is_some_and(|max| chars > max)
        || (chars as u64).div_ceil(4) > sim_model.context_length;
    if too_long {
        return context_400();
    }

    let text = reply_text(
        &answering,
        &last_user_message(messages),
        options.reply.sentences,
    );
    let chunks = reply_chunks(&text, options.reply.words_per_chunk);
    let usage = json!({
        "prompt_tokens": (chars as u64).div_ceil(4),
        "completion_tokens": text.split_whitespace().count(),
        "total_tokens": (chars as u64).div_ceil(4) + text.split_whitespace().count() as u64,
    });
    if !stream {
        let body = json!({
            "id": "gen-sim",
            "object": "chat.completion",
            "created": now / 1000,
            "model": answering,
            "provider": "Simulator",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage,
        });
        return (
            Answer::After(options.reply.first_byte_latency, json(StatusCode::OK, body)),
            200,
        );
    }
    let steps = sse_script(
        &options.reply,
        &answering,
        now,
        &chunks,
        &usage,
        stream_fault,
    );
    let mut response = Response::new(scripted_body(
        steps,
        shared.cancel.clone(),
        shared.book.endless.clone(),
    ));
    set_header(&mut response, "content-type", "text/event-stream".into());
    set_header(&mut response, "cache-control", "no-cache".into());
    let delay = if options.reply.keep_alive {
        std::time::Duration::ZERO // The latency is spent inside the body, after a keep-alive.
    } else {
        options.reply.first_byte_latency
    };
    (Answer::After(delay, response), 200)
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn set_header(response: &mut Response, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(name, v);
    }
}

/// The SSE body of an answer, with the stream faults applied.
fn sse_script(
    shape: &ReplyShape,
    model: &str,
    now_ms: i64,
    chunks: &[String],
    usage: &serde_json::Value,
    fault: Option<Fault>,
) -> Vec<Step> {
    let created = now_ms / 1000;
    let event = |v: serde_json::Value| Step::Send(Bytes::from(format!("data: {v}\n\n")));
    let keep_alive = || Step::Send(Bytes::from_static(b": OPENROUTER PROCESSING\n\n"));
    let chunk = |choices: serde_json::Value| {
        json!({"id": "gen-sim", "object": "chat.completion.chunk", "created": created,
               "model": model, "provider": "Simulator", "choices": choices})
    };
    let mut steps = Vec::new();
    if shape.keep_alive {
        steps.push(keep_alive());
        let mut left = shape.first_byte_latency;
        while !left.is_zero() {
            let step = left.min(KEEP_ALIVE_EVERY);
            steps.push(Step::Sleep(step));
            left -= step;
            if !left.is_zero() {
                steps.push(keep_alive());
            }
        }
    }
    let cut_after = match &fault {
        Some(Fault::StallAfter(n) | Fault::TruncateAfter(n)) => Some(*n),
        Some(
            Fault::MidStreamError { after, .. }
            | Fault::MidStreamStatus { after, .. }
            | Fault::Unterminated { after },
        ) => Some(*after),
        _ => None,
    };
    for (i, text) in chunks.iter().enumerate() {
        if cut_after == Some(i) {
            break;
        }
        if i > 0 {
            steps.push(Step::Sleep(shape.chunk_delay));
            if shape.keep_alive && !shape.chunk_delay.is_zero() {
                steps.push(keep_alive());
            }
        }
        let delta = if i == 0 {
            json!({"role": "assistant", "content": text})
        } else {
            json!({"content": text})
        };
        steps.push(event(chunk(
            json!([{"index": 0, "delta": delta, "finish_reason": null}]),
        )));
    }
    match fault {
        Some(Fault::StallAfter(_)) => steps.push(Step::Stall),
        Some(Fault::TruncateAfter(_)) => {}
        Some(Fault::Unterminated { .. }) => steps.push(Step::Endless(super::endless_piece(true))),
        Some(Fault::MidStreamError { message, .. }) => {
            let mut error_chunk =
                chunk(json!([{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]));
            error_chunk["error"] = json!({"code": "server_error", "message": message});
            steps.push(event(error_chunk));
        }
        Some(Fault::MidStreamStatus { code, message, .. }) => {
            let mut error_chunk =
                chunk(json!([{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]));
            error_chunk["error"] = json!({"code": code, "message": message});
            steps.push(event(error_chunk));
        }
        _ => {
            steps.push(event(chunk(
                json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
            )));
            let mut usage_chunk = chunk(json!([]));
            usage_chunk["usage"] = usage.clone();
            steps.push(event(usage_chunk));
            steps.push(Step::Send(Bytes::from_static(b"data: [DONE]\n\n")));
        }
    }
    steps
}

async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    // `/models` is public on OpenRouter: no key needed, but a sent key must be a known one.
    let key = bearer(&headers);
    let account = match &key {
        Some(_) => match shared.authenticate(&headers, "GET", &format!("{API_PREFIX}/models")) {
            Ok(c) => Some(c.account),
            Err(r) => return *r,
        },
        None => None,
    };
    let options = lock(&shared.options).clone();
    let data: Vec<serde_json::Value> = options
        .models
        .iter()
        .map(|m| {
            let price = if m.free { "0" } else { "0.000001" };
            json!({"id": m.id, "name": m.id, "context_length": m.context_length,
                   "pricing": {"prompt": price, "completion": price}})
        })
        .collect();
    shared.book.record(SimRequest {
        method: "GET".into(),
        path: format!("{API_PREFIX}/models"),
        key_fingerprint: key.as_deref().map(fingerprint_str),
        account,
        model: None,
        stream: false,
        status: 200,
        fault: None,
        referer: None,
        title: None,
        max_tokens: None,
    });
    json(StatusCode::OK, json!({ "data": data }))
}

async fn key_info(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let path = format!("{API_PREFIX}/key");
    let caller = match shared.authenticate(&headers, "GET", &path) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let (key_endpoint, legacy, now) = {
        let o = lock(&shared.options);
        (o.key_endpoint, o.key_info_legacy, o.clock.now_ms())
    };
    let status = if key_endpoint { 200 } else { 404 };
    shared.book.record(SimRequest {
        method: "GET".into(),
        path,
        key_fingerprint: Some(fingerprint_str(&caller.key)),
        account: Some(caller.account.clone()),
        model: None,
        stream: false,
        status,
        fault: None,
        referer: None,
        title: None,
        max_tokens: None,
    });
    if !key_endpoint {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    if legacy {
        return json(
            StatusCode::OK,
            json!({"data": {
                "label": format!("simulated key on {}", caller.account),
                "usage": 0,
                "limit": null,
                "is_free_tier": caller.quota < 1000,
                "rate_limit": {"requests": 20, "interval": "10s"},
            }}),
        );
    }
    let used = {
        let accounts = lock(&shared.accounts);
        accounts
            .get(&caller.account)
            .filter(|a| a.day == utc_day(now))
            .map_or(0, |a| a.used)
    };
    json(
        StatusCode::OK,
        json!({"data": {
            "label": format!("simulated key on {}", caller.account),
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
