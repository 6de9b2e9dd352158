//! The Ollama client (Ollama Cloud with a bearer key, or a local daemon without): `POST {base}/api/chat`
//! (NDJSON stream or one JSON answer) and `GET {base}/api/tags`. Model names are sent exactly as configured.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use secrecy::SecretString;
use serde::Deserialize;
use tokio::time::Instant;

use super::http::{self, ClientBuildError, Endpoint, Timeouts};
use super::ndjson::{Line, NdjsonParser};
use super::{
    parse_all, ChatProvider, Completion, EmbedCall, EmbedResult, ProviderError, ProviderRequest,
    ProviderStream,
};
use crate::clock::SharedClock;
use crate::domain::Usage;

/// An Ollama chat client. Cheap to clone; keys are passed per call (`None` for a local daemon).
#[derive(Clone)]
pub struct OllamaClient {
    inner: Arc<Endpoint>,
}

impl std::fmt::Debug for OllamaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OllamaClient")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl OllamaClient {
    /// A client named `name` for the Ollama server at `base_url` (without `/api`, e.g.
    /// `https://ollama.com` or `http://localhost:11434`).
    pub fn new(
        name: impl Into<String>,
        base_url: &str,
        timeouts: Timeouts,
    ) -> Result<Self, ClientBuildError> {
        Ok(Self {
            inner: Arc::new(Endpoint::new(name, base_url, timeouts)?),
        })
    }

    /// The Ollama Cloud client from `[ollama]` and the `[router]` timeouts, named `ollama-cloud`.
    pub fn cloud(
        config: &crate::config::providers::OllamaConfig,
        router: &crate::config::providers::RouterConfig,
    ) -> Result<Self, ClientBuildError> {
        Self::new(
            "ollama-cloud",
            &config.base_url,
            Timeouts::from_config(router),
        )
    }

    /// The same client reading "now" from `clock` (used to judge whether a 429's reset is far away).
    #[must_use]
    pub fn with_clock(self, clock: SharedClock) -> Self {
        Self {
            inner: Arc::new(self.inner.with_clock(clock)),
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&SecretString>,
    ) -> reqwest::RequestBuilder {
        self.inner.request(method, path, key)
    }

    fn deadline(&self) -> Instant {
        self.inner.deadline()
    }

    /// One non-streamed answer (`"stream": false`; Ollama streams when it is omitted).
    pub async fn complete(
        &self,
        key: Option<&SecretString>,
        request: ProviderRequest,
    ) -> Result<Completion, ProviderError> {
        let deadline = self.deadline();
        let body = chat_body(&request, false);
        let builder = self
            .request(reqwest::Method::POST, "/api/chat", key)
            .json(&body);
        let answer: Line = self.inner.fetch_json(builder, deadline).await?;
        if let Some(error) = answer.error {
            return Err(http::map_stream_error(&error));
        }
        if !answer.done {
            return Err(ProviderError::Truncated);
        }
        Ok(Completion {
            text: answer.message.and_then(|m| m.content).unwrap_or_default(),
            model: answer.model,
            usage: Usage {
                prompt_tokens: answer.prompt_eval_count.unwrap_or(0),
                completion_tokens: answer.eval_count.unwrap_or(0),
            },
            finish_reason: answer.done_reason,
        })
    }

    /// `GET /api/tags`: the names of the models this server offers.
    pub async fn tags(&self, key: Option<&SecretString>) -> Result<Vec<String>, ProviderError> {
        let deadline = self.deadline();
        let builder = self.request(reqwest::Method::GET, "/api/tags", key);
        let tags: Tags = self.inner.fetch_json(builder, deadline).await?;
        Ok(tags.models.into_iter().map(|m| m.name).collect())
    }
}

impl ChatProvider for OllamaClient {
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
            .request(reqwest::Method::POST, "/api/embed", key)
            .json(&body);
        let endpoint = Arc::clone(&self.inner);
        Box::pin(async move {
            // Read under the JSON body cap (`http::MAX_JSON_BODY_BYTES`), as every whole answer is.
            let answer: EmbedBody = endpoint.fetch_json(builder, deadline).await?;
            EmbedResult::checked(
                answer.error,
                answer.model,
                answer.embeddings,
                answer.prompt_eval_count,
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
        let body = chat_body(&request, !whole);
        let builder = self
            .request(reqwest::Method::POST, "/api/chat", key)
            .json(&body);
        let clock = self.inner.clock.clone();
        let idle = self.inner.timeouts.idle;
        Box::pin(async move {
            if whole {
                // `"stream": false` answers with the one final object, which the NDJSON parser reads
                // as a stream of one line.
                return http::whole_answer(builder, deadline, &clock, |body| {
                    parse_all(NdjsonParser::new(), [body])
                })
                .await;
            }
            let head_by = Instant::now() + idle;
            let response = http::send(builder, head_by, deadline, &clock).await?;
            Ok(http::event_stream(
                response,
                NdjsonParser::new(),
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
    embeddings: Vec<Vec<f32>>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Tags {
    #[serde(default)]
    models: Vec<TagModel>,
}

#[derive(Deserialize)]
struct TagModel {
    name: String,
}

/// The request body for this provider's wire format ([`super::wire`]).
fn chat_body(request: &ProviderRequest, stream: bool) -> serde_json::Value {
    super::wire::ollama_body(request, stream)
}
