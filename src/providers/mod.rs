//! Provider wire clients: OpenRouter / OpenAI-compatible (`POST /chat/completions`, SSE) and Ollama
//! (`POST /api/chat`, NDJSON), with pure stream parsers. A client makes exactly one HTTP attempt per call:
//! the router is the only retry loop. This file is the seam the router uses ([`ChatProvider`]).
//!
//! | module | owns |
//! |---|---|
//! | [`openai`] | `OpenAiClient`: `/chat/completions` (SSE), `/models`, OpenRouter's `/key` |
//! | [`ollama`] | `OllamaClient`: `/api/chat` (NDJSON), `/api/tags` |
//! | [`http`] | the pooled client, [`http::Timeouts`] (connect, idle, deadline), status → error mapping |
//! | [`sse`], [`ndjson`] | pure incremental stream parsers ([`StreamParser`]) |
//! | [`wire`] | request bodies in both formats (messages, images, tools, sampling, reasoning) |
//! | [`lines`], [`sanitize`] | byte line splitting; making provider messages safe to carry |
//! | [`wait`] | how long a request waited on providers (for the API's own-overhead metric) |

pub mod http;
mod item;
pub mod lines;
pub mod ndjson;
pub mod ollama;
pub mod openai;
pub mod sanitize;
pub mod sse;
pub mod wait;
pub mod wire;

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use secrecy::SecretString;

use crate::domain::{ChatMessage, Usage};
use crate::generation::{GenerationParams, ToolCallDelta};

/// One chat request to one model on one provider.
#[derive(Clone, Debug)]
pub struct ProviderRequest {
    /// The model name, sent exactly as configured (never rewritten).
    pub model: String,
    /// The full context (system prompt, history, newest user turn), already fitted to the window.
    pub messages: Vec<ChatMessage>,
    /// The most tokens the answer may have (`max_tokens` / Ollama's `num_predict`); `None` sends no cap.
    pub max_tokens: Option<u32>,
    /// Sampling, tools, output format and reasoning, written in the provider's wire format (fields a
    /// provider has no place for are dropped).
    pub params: GenerationParams,
}

/// One embeddings request to one model on one provider.
#[derive(Clone, Debug)]
pub struct EmbedCall {
    /// The embedding model, as configured.
    pub model: String,
    /// The texts, in order.
    pub inputs: Vec<String>,
}

/// A provider's embeddings, one vector per input in order.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbedResult {
    /// The model that answered, as the provider named it.
    pub model: Option<String>,
    /// One vector per input.
    pub vectors: Vec<Vec<f32>>,
    /// Prompt tokens, if reported.
    pub prompt_tokens: Option<u64>,
}

impl EmbedResult {
    /// A provider's embeddings answer checked: an `error` in the body is that error, and there must be
    /// one vector per input (a short answer would shift every later vector onto the wrong text).
    pub(crate) fn checked(
        error: Option<serde_json::Value>,
        model: Option<String>,
        vectors: Vec<Vec<f32>>,
        prompt_tokens: Option<u64>,
        inputs: usize,
    ) -> Result<Self, ProviderError> {
        if let Some(error) = error {
            return Err(http::map_stream_error(&error));
        }
        if vectors.len() != inputs {
            let message = format!("{} embeddings for {inputs} inputs", vectors.len());
            return Err(ProviderError::Malformed(message));
        }
        Ok(Self {
            model,
            vectors,
            prompt_tokens,
        })
    }
}

/// One step of a provider's streamed answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderEvent {
    /// The provider named the model that is answering (`openrouter/free` resolves to a real model).
    Model(String),
    /// The next piece of text.
    Delta(String),
    /// The next piece of the model's reasoning (OpenRouter `delta.reasoning`, Ollama `message.thinking`).
    Reasoning(String),
    /// The next piece of a tool call.
    ToolCall(ToolCallDelta),
    /// The answer is complete (`[DONE]` / `finish_reason` / `"done": true` seen).
    Done {
        /// Token usage, if reported.
        usage: Usage,
        /// Why the model stopped (`stop`, `length`, …), if reported.
        finish_reason: Option<String>,
    },
}

/// Why a provider call failed. Each variant has its own reaction in the router's error taxonomy.
/// Messages here are already sanitized: no URL, no key, at most a short excerpt of the provider's message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// HTTP 429. `daily` is true when the provider says the daily quota is spent (the router then keeps the
    /// account out until the UTC reset); otherwise it is a per-minute limit.
    #[error("rate limited (daily quota: {daily})")]
    RateLimited {
        /// `Retry-After`, if sent.
        retry_after: Option<Duration>,
        /// `X-RateLimit-Reset` (epoch ms), if sent.
        reset_at_ms: Option<i64>,
        /// Whether the daily quota is exhausted.
        daily: bool,
    },
    /// HTTP 402: no credits / negative balance.
    #[error("payment required")]
    PaymentRequired,
    /// HTTP 401/403: the key is wrong or lacks permission.
    #[error("unauthorized (HTTP {status})")]
    Unauthorized {
        /// 401 or 403.
        status: u16,
    },
    /// HTTP 403 from a content filter (OpenRouter moderation: "your input was flagged"): this request was
    /// declined, the key is fine. Another model may accept it.
    #[error("declined by the provider's moderation")]
    Refused,
    /// The prompt does not fit the model's context window.
    #[error("context length exceeded")]
    ContextTooLong,
    /// The model does not exist on this provider (HTTP 404 or an equivalent error).
    #[error("model not found")]
    ModelNotFound,
    /// HTTP 5xx or another unexpected status.
    #[error("upstream error (HTTP {status})")]
    Upstream {
        /// The status code.
        status: u16,
    },
    /// The connection could not be made (refused, DNS, TLS).
    #[error("connection failed")]
    Connect,
    /// The connect timeout, or the overall deadline, passed.
    #[error("timed out")]
    Timeout,
    /// The stream sent nothing for longer than the idle timeout.
    #[error("stream stalled")]
    Stalled,
    /// The stream ended without its end marker.
    #[error("stream truncated")]
    Truncated,
    /// The provider reported an error inside the stream (an `error` field in an SSE/NDJSON event).
    #[error("provider error mid-stream: {message}")]
    MidStream {
        /// The provider's message, shortened and free of URLs.
        message: String,
    },
    /// The response could not be understood.
    #[error("malformed response: {0}")]
    Malformed(String),
}

/// The stream of one answer: events until `Done`, or an error. A stream that ends without `Done` has
/// already yielded `Err(Truncated)` as its last item.
pub type ProviderStream = BoxStream<'static, Result<ProviderEvent, ProviderError>>;

/// A provider client. Implementations hold a base URL, timeouts and a `reqwest::Client`; keys are passed
/// per call so one client serves every key of a provider.
pub trait ChatProvider: Send + Sync + 'static {
    /// The provider's configured name (`openrouter`, `ollama-cloud`, a `[[tiers]]` name).
    fn name(&self) -> &str;

    /// Starts a streamed chat. The future resolves once the response head arrived (status checked), so
    /// HTTP-level errors (429, 402, 401, 5xx, connect, timeout) come back here, before any event.
    fn chat_stream(
        &self,
        key: Option<&SecretString>,
        request: ProviderRequest,
    ) -> BoxFuture<'static, Result<ProviderStream, ProviderError>>;

    /// Embeds texts (OpenAI-compatible `POST /embeddings`, Ollama `POST /api/embed`). One HTTP attempt;
    /// the default is a provider that has no embeddings.
    fn embed(
        &self,
        key: Option<&SecretString>,
        call: EmbedCall,
    ) -> BoxFuture<'static, Result<EmbedResult, ProviderError>> {
        let _ = (key, call);
        Box::pin(async { Err(ProviderError::ModelNotFound) })
    }
}

/// One parsed item of a stream, as a parser yields it.
pub type ParsedEvent = Result<ProviderEvent, ProviderError>;

/// A pure, incremental stream parser: bytes in, events out, identical under any chunking of the input.
/// After it has emitted `Done` or an error it is finished and ignores further input.
pub trait StreamParser: Send + 'static {
    /// Feeds the next chunk of the body, appending the events it completes to `out`.
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<ParsedEvent>);
    /// The body ended: appends `Done` if the answer was complete, otherwise `Err(Truncated)` (or nothing
    /// if the parser had already finished).
    fn finish(&mut self, out: &mut Vec<ParsedEvent>);
    /// Whether `Done` or an error has been emitted.
    fn is_finished(&self) -> bool;
}

/// Runs `parser` over `chunks` and the end of stream; for tests and benchmarks.
pub fn parse_all<'a, P: StreamParser>(
    mut parser: P,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<ParsedEvent> {
    let mut out = Vec::new();
    for chunk in chunks {
        parser.feed(chunk, &mut out);
    }
    parser.finish(&mut out);
    out
}

/// The laws every [`StreamParser`]'s property tests check, written once.
#[cfg(test)]
pub(crate) mod parser_laws {
    use proptest::prelude::*;

    use super::{ParsedEvent, ProviderEvent};

    /// `bytes` cut into consecutive chunks at `cuts` (each taken modulo `bytes.len() + 1`, in order).
    pub fn chunks(bytes: &[u8], cuts: Vec<usize>) -> Vec<&[u8]> {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for c in cuts {
            chunks.push(&bytes[last..c]);
            last = c;
        }
        chunks.push(&bytes[last..]);
        chunks
    }

    /// Fails unless `out` ends in exactly one terminal item (`Done` or an error), which is the last one.
    pub fn ends_in_one_terminal_item(out: &[ParsedEvent]) -> Result<(), TestCaseError> {
        let terminal = |e: &ParsedEvent| matches!(e, Err(_) | Ok(ProviderEvent::Done { .. }));
        prop_assert_eq!(out.iter().filter(|e| terminal(e)).count(), 1);
        prop_assert!(terminal(out.last().unwrap()));
        Ok(())
    }
}

/// A whole (non-streamed) answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The answer text.
    pub text: String,
    /// The model that answered, as the provider named it.
    pub model: Option<String>,
    /// Token usage (zero if not reported).
    pub usage: Usage,
    /// Why the model stopped, if reported.
    pub finish_reason: Option<String>,
}

/// Builds the client for an extra `[[tiers]]` entry: [`openai::OpenAiClient`] (no attribution headers)
/// or [`ollama::OllamaClient`], named after the tier, reading "now" from `clock`.
pub fn client_for_tier(
    tier: &crate::config::providers::ExtraTierConfig,
    timeouts: http::Timeouts,
    clock: crate::clock::SharedClock,
) -> Result<std::sync::Arc<dyn ChatProvider>, http::ClientBuildError> {
    use crate::config::providers::ProviderKind;
    Ok(match tier.kind {
        ProviderKind::Openai => std::sync::Arc::new(
            openai::OpenAiClient::new(
                tier.name.clone(),
                &tier.base_url,
                timeouts,
                openai::Attribution::default(),
            )?
            .with_dialect(wire::Dialect::OpenAi)
            .with_clock(clock),
        ),
        ProviderKind::Ollama => std::sync::Arc::new(
            ollama::OllamaClient::new(tier.name.clone(), &tier.base_url, timeouts)?
                .with_clock(clock),
        ),
    })
}
