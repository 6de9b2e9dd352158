//! The OpenRouter / OpenAI-compatible client: `POST {base}/chat/completions` (SSE stream or one JSON
//! answer), `GET {base}/models` and OpenRouter's `GET {base}/key`. One HTTP attempt per call.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use secrecy::SecretString;
use serde::Deserialize;
use tokio::time::Instant;

use super::http::{self, ClientBuildError, Endpoint, Timeouts};
use super::sse::SseParser;
use super::wire::Dialect;
use super::{
    ChatProvider, Completion, EmbedCall, EmbedResult, ProviderError, ProviderRequest,
    ProviderStream,
};
use crate::clock::SharedClock;
use crate::domain::Usage;

/// App attribution headers OpenRouter shows in its rankings (`HTTP-Referer`, `X-Title`).
#[derive(Clone, Debug, Default)]
pub struct Attribution {
    /// Sent as `HTTP-Referer` when set.
    pub referer: Option<String>,
    /// Sent as `X-Title` when set.
    pub title: Option<String>,
}

/// A model listed by `GET /models`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteModel {
    /// The model id, as sent in requests.
    pub id: String,
    /// Its context window in tokens, if listed.
    pub context_length: Option<u64>,
    /// Free to use: both prices are `"0"`, or the id ends in `:free`.
    pub is_free: bool,
    /// What it can do, from `architecture.input_modalities` (`image` → vision) and
    /// `supported_parameters` (`tools`, `reasoning`); `completion` unless it only embeds.
    pub capabilities: crate::generation::Capabilities,
}

/// What OpenRouter's `GET /key` says about a key and its account.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyInfo {
    /// The key's label, unless it contains a key fragment (OpenRouter's default labels do; those are
    /// dropped so no part of a key is ever logged).
    pub label: Option<String>,
    /// Whether the account has never bought credits (50 free requests a day rather than 1000).
    pub is_free_tier: Option<bool>,
    /// Free-model requests per UTC day for the account.
    pub free_daily_limit: Option<u64>,
    /// Free-model requests left today.
    pub free_remaining: Option<u64>,
    /// Free-model requests used today.
    pub free_used: Option<u64>,
    /// The key's credit limit in US dollars, if it has one.
    pub limit: Option<f64>,
    /// Credits left under that limit.
    pub limit_remaining: Option<f64>,
    /// Credits spent in total.
    pub usage: Option<f64>,
}

/// An OpenAI-compatible chat client (OpenRouter by default). Cheap to clone; keys are passed per call.
#[derive(Clone)]
pub struct OpenAiClient {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    endpoint: Endpoint,
    attribution: Attribution,
    /// Which fields its bodies may carry beyond OpenAI's.
    dialect: Dialect,
}

impl std::ops::Deref for Inner {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl std::fmt::Debug for OpenAiClient {
    // The base URL may carry credentials in exotic setups; keep it out of Debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl OpenAiClient {
    /// A client named `name` for the API at `base_url` (e.g. `https://openrouter.ai/api/v1`).
    pub fn new(
        name: impl Into<String>,
        base_url: &str,
        timeouts: Timeouts,
        attribution: Attribution,
    ) -> Result<Self, ClientBuildError> {
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint: Endpoint::new(name, base_url, timeouts)?,
                attribution,
                dialect: Dialect::OpenRouter,
            }),
        })
    }

    /// The OpenRouter client from `[openrouter]` (base URL, `HTTP-Referer`, `X-Title`) and the
    /// `[router]` timeouts, named `openrouter`.
    pub fn openrouter(
        config: &crate::config::providers::OpenRouterConfig,
        router: &crate::config::providers::RouterConfig,
    ) -> Result<Self, ClientBuildError> {
        let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.to_owned());
        Self::new(
            "openrouter",
            &config.base_url,
            Timeouts::from_config(router),
            Attribution {
                referer: non_empty(&config.referer),
                title: non_empty(&config.title),
            },
        )
    }

    /// The same client reading "now" from `clock` (used to judge whether a 429's reset is daily).
    #[must_use]
    pub fn with_clock(self, clock: SharedClock) -> Self {
        self.changed(|inner| inner.endpoint = inner.endpoint.with_clock(clock))
    }

    /// The same client writing bodies in `dialect` (OpenRouter's unless told otherwise).
    #[must_use]
    pub fn with_dialect(self, dialect: Dialect) -> Self {
        self.changed(|inner| inner.dialect = dialect)
    }

    /// A copy of this client with `change` made to its settings.
    fn changed(&self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Inner::clone(&self.inner);
        change(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&SecretString>,
    ) -> reqwest::RequestBuilder {
        let inner = &self.inner;
        let mut builder = inner.endpoint.request(method, path, key);
        if let Some(referer) = &inner.attribution.referer {
            builder = builder.header("HTTP-Referer", referer);
        }
        if let Some(title) = &inner.attribution.title {
            builder = builder.header("X-Title", title);
        }
        builder
    }

    fn deadline(&self) -> Instant {
        self.inner.deadline()
    }

    /// One non-streamed answer.
    pub async fn complete(
        &self,
        key: Option<&SecretString>,
        request: ProviderRequest,
    ) -> Result<Completion, ProviderError> {
        let deadline = self.deadline();
        let body = super::wire::openai_body(&request, false, self.inner.dialect);
        let builder = self
            .request(reqwest::Method::POST, "/chat/completions", key)
            .json(&body);
        let answer: CompletionBody = self.inner.fetch_json(builder, deadline).await?;
        if let Some(error) = answer.error {
            return Err(http::map_stream_error(&error));
        }
        let choice = answer
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| ProviderError::Malformed("answer without choices".into()))?;
        let usage = answer.usage.unwrap_or_default();
        Ok(Completion {
            text: choice.message.and_then(|m| m.content).unwrap_or_default(),
            model: answer.model,
            usage: Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
            },
            finish_reason: choice.finish_reason,
        })
    }

    /// `GET /models`: the models this endpoint offers.
    pub async fn models(
        &self,
        key: Option<&SecretString>,
    ) -> Result<Vec<RemoteModel>, ProviderError> {
        let deadline = self.deadline();
        let builder = self.request(reqwest::Method::GET, "/models", key);
        let list: ModelList = self.inner.fetch_json(builder, deadline).await?;
        Ok(list
            .data
            .into_iter()
            .map(|m| {
                let priced_zero = m
                    .pricing
                    .as_ref()
                    .is_some_and(|p| is_zero(p.prompt.as_ref()) && is_zero(p.completion.as_ref()));
                let capabilities = m.capabilities();
                RemoteModel {
                    is_free: priced_zero || m.id.ends_with(":free"),
                    capabilities,
                    context_length: m.context_length,
                    id: m.id,
                }
            })
            .collect())
    }

    /// OpenRouter's `GET /key`: the key's account and its free-model quota. `Ok(None)` when the endpoint
    /// does not exist here (404): the quota is then unknown, which is not a failure.
    pub async fn key_info(
        &self,
        key: Option<&SecretString>,
    ) -> Result<Option<KeyInfo>, ProviderError> {
        let deadline = self.deadline();
        let builder = self.request(reqwest::Method::GET, "/key", key);
        let response = match http::send(builder, deadline, deadline, &self.inner.clock).await {
            Ok(r) => r,
            Err(ProviderError::ModelNotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let body: KeyBody = http::read_json(response, deadline).await?;
        let d = body.data;
        let free = d.free_model_daily_requests.unwrap_or_default();
        Ok(Some(KeyInfo {
            label: d.label.filter(|l| !l.contains("sk-") && !l.contains("...")),
            is_free_tier: d.is_free_tier,
            free_daily_limit: free.limit,
            free_remaining: free.remaining,
            free_used: free.used,
            limit: d.limit,
            limit_remaining: d.limit_remaining,
            usage: d.usage,
        }))
    }
}

fn is_zero(price: Option<&serde_json::Value>) -> bool {
    match price {
        Some(serde_json::Value::String(s)) => s.parse::<f64>().is_ok_and(|v| v == 0.0),
        Some(serde_json::Value::Number(n)) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

impl ChatProvider for OpenAiClient {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn embed(
        &self,
        key: Option<&SecretString>,
        call: EmbedCall,
    ) -> BoxFuture<'static, Result<EmbedResult, ProviderError>> {
        let deadline = self.deadline();
        let body = serde_json::json!({"model": call.model, "input": call.inputs});
        let builder = self
            .request(reqwest::Method::POST, "/embeddings", key)
            .json(&body);
        let endpoint = Arc::clone(&self.inner);
        Box::pin(async move {
            // The answer is read under the JSON body cap (`http::MAX_JSON_BODY_BYTES`): 16 MiB holds
            // hundreds of 1536-dimension vectors, and a larger one fails this call, not the process.
            let answer: EmbedBody = endpoint.fetch_json(builder, deadline).await?;
            let mut data = answer.data;
            data.sort_by_key(|d| d.index);
            EmbedResult::checked(
                answer.error,
                answer.model,
                data.into_iter().map(|d| d.embedding).collect(),
                answer.usage.map(|u| u.prompt_tokens),
                call.inputs.len(),
            )
        })
    }

    fn chat_stream(
        &self,
        key: Option<&SecretString>,
        request: ProviderRequest,
    ) -> BoxFuture<'static, Result<ProviderStream, ProviderError>> {
        let deadline = self.deadline();
        let whole = request.params.whole;
        let body = super::wire::openai_body(&request, !whole, self.inner.dialect);
        let mut builder = self.request(reqwest::Method::POST, "/chat/completions", key);
        if !whole {
            builder = builder.header(reqwest::header::ACCEPT, "text/event-stream");
        }
        let builder = builder.json(&body);
        let clock = self.inner.clock.clone();
        let idle = self.inner.timeouts.idle;
        Box::pin(async move {
            if whole {
                return http::whole_answer(builder, deadline, &clock, SseParser::whole_answer)
                    .await;
            }
            let head_by = Instant::now() + idle;
            let response = http::send(builder, head_by, deadline, &clock).await?;
            Ok(http::event_stream(
                response,
                SseParser::new(),
                idle,
                deadline,
            ))
        })
    }
}

#[derive(Deserialize)]
struct EmbedBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    data: Vec<EmbedItem>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct EmbedItem {
    #[serde(default)]
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct CompletionBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<CompletionChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    #[serde(default)]
    message: Option<CompletionMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct CompletionMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[derive(Deserialize)]
struct ModelList {
    #[serde(default)]
    data: Vec<WireModel>,
}

#[derive(Deserialize)]
struct WireModel {
    id: String,
    #[serde(default)]
    context_length: Option<u64>,
    #[serde(default)]
    pricing: Option<WirePricing>,
    #[serde(default)]
    architecture: Option<WireArchitecture>,
    #[serde(default)]
    supported_parameters: Vec<String>,
}

#[derive(Deserialize)]
struct WireArchitecture {
    #[serde(default)]
    input_modalities: Vec<String>,
    #[serde(default)]
    output_modalities: Vec<String>,
}

impl WireModel {
    fn capabilities(&self) -> crate::generation::Capabilities {
        let arch = self.architecture.as_ref();
        let has = |list: Option<&Vec<String>>, what: &str| {
            list.is_some_and(|l| l.iter().any(|x| x == what))
        };
        let embedding = has(arch.map(|a| &a.output_modalities), "embeddings");
        let param = |p: &str| self.supported_parameters.iter().any(|x| x == p);
        crate::generation::Capabilities {
            completion: !embedding,
            tools: param("tools"),
            vision: has(arch.map(|a| &a.input_modalities), "image"),
            thinking: param("reasoning") || param("include_reasoning"),
            embedding,
        }
    }
}

#[derive(Deserialize)]
struct WirePricing {
    #[serde(default)]
    prompt: Option<serde_json::Value>,
    #[serde(default)]
    completion: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct KeyBody {
    data: KeyData,
}

#[derive(Deserialize)]
struct KeyData {
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    is_free_tier: Option<bool>,
    #[serde(default)]
    limit: Option<f64>,
    #[serde(default)]
    limit_remaining: Option<f64>,
    #[serde(default)]
    usage: Option<f64>,
    #[serde(default)]
    free_model_daily_requests: Option<FreeDaily>,
}

#[derive(Deserialize, Default)]
struct FreeDaily {
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    remaining: Option<u64>,
    #[serde(default)]
    used: Option<u64>,
}
