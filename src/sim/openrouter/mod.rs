//! A simulated OpenRouter: `POST /api/v1/chat/completions` (SSE or JSON; images, tools, reasoning and
//! sampling fields checked and answered as [`super::features`] says), `POST /api/v1/embeddings`,
//! `GET /api/v1/models` (with capabilities), `GET /api/v1/key`, with keys on accounts, per-account daily free quotas that reset at 00:00 UTC on an
//! injected clock, a per-minute limit per account, `openrouter/free` resolving to a concrete model, and
//! the faults of [`super::Fault`].
//!
//! Quota rules (as OpenRouter documents them): the daily quota belongs to the **account**, so two keys
//! on one account share it; every chat request counts, failed ones included; once spent, chat requests
//! answer 429 "free-models-per-day" with `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset` at the next
//! UTC midnight. The per-minute limit is a sliding 60 s window per account answering 429 with
//! `Retry-After`.

mod chat;
mod info;
mod quota;
mod sse;

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::json;

use super::control::{Desk, SimControl};
use super::server::{bearer, json};
use super::ReplyShape;
use crate::clock::{SharedClock, SystemClock};

/// The path prefix of the API (`base_url()` ends with it).
pub const API_PREFIX: &str = "/api/v1";

/// The router model that picks a free model itself.
pub const FREE_ROUTER_MODEL: &str = "openrouter/free";

/// OpenRouter's documented free-model limit per minute.
pub const DEFAULT_PER_MINUTE: u32 = 20;

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
    /// What `/models` says it can do: `vision` lists `image` in `architecture.input_modalities`,
    /// `tools` and `thinking` list `tools` and `reasoning` in `supported_parameters`.
    pub capabilities: crate::generation::Capabilities,
}

impl SimModel {
    /// A free model that takes text only.
    pub fn free(id: impl Into<String>, context_length: u64) -> Self {
        Self {
            id: id.into(),
            context_length,
            free: true,
            capabilities: crate::generation::Capabilities {
                completion: true,
                ..Default::default()
            },
        }
    }

    /// The same model taking images too.
    #[must_use]
    pub fn with_vision(mut self) -> Self {
        self.capabilities.vision = true;
        self
    }

    /// The same model taking tools too.
    #[must_use]
    pub fn with_tools(mut self) -> Self {
        self.capabilities.tools = true;
        self
    }

    /// The same model reasoning too.
    #[must_use]
    pub fn with_reasoning(mut self) -> Self {
        self.capabilities.thinking = true;
        self
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
    /// Embedding models (`POST /embeddings`); any other model there answers 404.
    pub embedding_models: Vec<String>,
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
            embedding_models: vec!["openai/text-embedding-3-small".into()],
        }
    }
}

/// A running simulated OpenRouter. Stops on [`SimControl::shutdown`] or when dropped; its control
/// surface ([`SimControl`]) is reached through `Deref`.
pub struct SimOpenRouter {
    shared: Arc<Shared>,
    control: SimControl,
}

/// What the route handlers share.
struct Shared {
    options: SimOpenRouterOptions,
    desk: Arc<Desk>,
    accounts: quota::Accounts,
}

impl SimOpenRouter {
    /// Starts the simulator on `127.0.0.1:<free port>`.
    pub async fn start(options: SimOpenRouterOptions) -> std::io::Result<Self> {
        let desk = Desk::new(options.reply.clone());
        let shared = Arc::new(Shared {
            options,
            desk: desk.clone(),
            accounts: quota::Accounts::default(),
        });
        let router = axum::Router::new()
            .route(&format!("{API_PREFIX}/chat/completions"), post(chat::chat))
            .route(&format!("{API_PREFIX}/models"), get(info::models))
            .route(&format!("{API_PREFIX}/embeddings"), post(info::embeddings))
            .route(&format!("{API_PREFIX}/key"), get(info::key_info))
            .fallback(info::fallback)
            .with_state(shared.clone());
        let control = SimControl::serve(router, desk, API_PREFIX).await?;
        Ok(Self { shared, control })
    }

    /// Chat requests (any status) made with any key of `account`.
    pub fn requests_for_account(&self, account: &str) -> usize {
        self.control
            .count_chats(|r| r.account.as_deref() == Some(account))
    }

    /// Free requests `account` has used in the current UTC day (failed attempts included).
    pub fn daily_used(&self, account: &str) -> u32 {
        let now = self.shared.options.clock.now_ms();
        self.shared.accounts.used_today(account, now)
    }
}

impl std::ops::Deref for SimOpenRouter {
    type Target = SimControl;

    fn deref(&self) -> &SimControl {
        &self.control
    }
}

/// An accepted caller: its key, the account it is on, and the account's daily free quota.
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
        let keys = &self.options.keys;
        let found = key.as_deref().and_then(|k| {
            let sim_key = keys.iter().find(|s| s.key == k)?;
            let quota = keys
                .iter()
                .find(|s| s.account == sim_key.account)
                .map_or(sim_key.daily_free_quota, |first| first.daily_free_quota);
            Some(Caller {
                key: k.to_owned(),
                account: sim_key.account.clone(),
                quota,
            })
        });
        found.ok_or_else(|| {
            self.desk.book.unknown_key(method, path, key.as_deref());
            Box::new(json(
                StatusCode::UNAUTHORIZED,
                json!({"error": {"message": "simulator: unknown or missing API key", "code": 401}}),
            ))
        })
    }
}

/// OpenRouter's error body: `{"error": {"message", "code"}}` with the status as the code.
fn error(status: StatusCode, message: &str) -> Response {
    json(
        status,
        json!({"error": {"message": message, "code": status.as_u16()}}),
    )
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn set_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
}
