//! Simulated OpenRouter and Ollama servers on 127.0.0.1 for the demo, tests and benchmarks.
//!
//! Both are real HTTP servers (axum, bound to `127.0.0.1:0`) speaking the real wire formats, so the real
//! clients in [`crate::providers`] talk to them unchanged. Start one, point a client at its `base_url()`,
//! and inspect what it saw:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use switchboard::sim::openrouter::{SimKey, SimOpenRouter, SimOpenRouterOptions};
//! use switchboard::sim::Fault;
//! let sim = SimOpenRouter::start(SimOpenRouterOptions {
//!     keys: vec![SimKey::new("sk-test-1", "alice", 50), SimKey::new("sk-test-2", "alice", 50)],
//!     ..SimOpenRouterOptions::default()
//! })
//! .await?;
//! sim.push_fault(Fault::ServerError); // the next chat request answers 500
//! // … point `OpenAiClient::new("openrouter", &sim.base_url(), …)` at it …
//! assert!(sim.unexpected().is_empty());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Behaviour common to both:
//! - Every request is logged ([`SimRequest`]): path, key fingerprint, account, model, status.
//! - Anything a correct client never sends (unknown route, unknown or missing key, unreadable body) is
//!   answered loudly (404/401/400 with a message naming the problem) **and** recorded in `unexpected()`,
//!   which tests should assert empty.
//! - Faults: [`Fault`]s are injected per chat request. `push_fault` queues a one-shot fault for the next
//!   chat request, `push_key_fault` for the next chat request with that key, `set_fault` applies one to
//!   every chat request until cleared. Key faults win over queued ones, queued over the standing one.
//!   Only chat requests consume faults (`/models`, `/key`, `/api/tags` never do).
//! - Replies are deterministic: `"[model] You said: <last user message>."` and then
//!   [`ReplyShape::sentences`] fixed sentences, streamed [`ReplyShape::words_per_chunk`] words at a time.
//!   [`ReplyShape::default`] has no delays (tests, benchmarks); [`ReplyShape::demo`] streams visibly.
//! - Beyond text (`features`): with `tools` defined, a last user message `call get_weather
//!   {"city":"Paris"}` is answered with that tool call (OpenAI: arguments split over deltas; Ollama:
//!   whole); tool results after the last user message are quoted; each image (base64, decoded and
//!   recorded as [`SimImage`]) adds "I see an image of N bytes."; asked reasoning streams first; the
//!   OpenAI-style usage chunk comes only with `stream_options.include_usage`. A field of the wrong type
//!   is a 400 and an `unexpected()` entry. Embedding models answer deterministic 8-dimension vectors.
//! - Delays use tokio time, so tests with paused time run them instantly and deterministically.

mod control;
mod features;
pub mod ollama;
pub mod openrouter;
mod server;
mod stream;

pub use control::SimControl;

use std::time::Duration;

use crate::domain::Role;

/// A fault to inject into a chat request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 429 for the per-minute limit, with `Retry-After: retry_after_secs` and an
    /// `X-RateLimit-Reset` that many seconds ahead.
    RateLimitPerMinute {
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// HTTP 429 for the per-minute limit with only `X-RateLimit-Reset` (epoch ms, that many seconds
    /// ahead) and `X-RateLimit-Remaining: 0`, no `Retry-After`: the client must take the wait from the
    /// reset time.
    RateLimitResetOnly {
        /// Seconds until the reset.
        reset_in_secs: u64,
    },
    /// HTTP 429 saying the daily (free-models-per-day) quota is spent, reset at the next 00:00 UTC.
    RateLimitDaily,
    /// HTTP 402: no credits.
    PaymentRequired,
    /// HTTP 401: the key is refused (the request is still a known key: not "unexpected").
    Unauthorized,
    /// HTTP 403 from OpenRouter's moderation: "… requires moderation … your input was flagged", with
    /// `metadata.reasons` and `metadata.flagged_input`. The key is fine; this request is declined.
    Moderated,
    /// HTTP 500.
    ServerError,
    /// Never answers: no response head until the simulator shuts down.
    Hang,
    /// Sends the head and this many deltas, then nothing more while keeping the connection open.
    StallAfter(usize),
    /// Sends the head and this many deltas, then closes the body without the end marker.
    TruncateAfter(usize),
    /// Sends this many deltas, then an error event in the stream (an SSE data event with an `error`
    /// object, or an NDJSON `{"error": …}` line), then ends.
    MidStreamError {
        /// Deltas before the error.
        after: usize,
        /// The error message.
        message: String,
    },
    /// Like `MidStreamError`, but the error carries a status `code` (OpenRouter sends e.g. 429 or 402
    /// inside the stream when the upstream fails that way after the response head).
    MidStreamStatus {
        /// Deltas before the error.
        after: usize,
        /// The status code in the error object.
        code: u16,
        /// The error message.
        message: String,
    },
    /// HTTP 400 "maximum context length exceeded", whatever the prompt.
    ContextTooLong,
    /// Sends this many deltas, then an event that never ends, as fast as the client reads: SSE `data:`
    /// lines without the blank line that would end the event, or (NDJSON) one line without its newline.
    /// A client with unbounded buffers grows until it is killed; see [`EndlessStats`].
    Unterminated {
        /// Deltas before the endless event.
        after: usize,
    },
}

/// What the endless bodies of [`Fault::Unterminated`] did: how many started, how many are still being
/// written (the client has not hung up), and how many bytes they sent in all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndlessStats {
    /// Endless bodies started.
    pub started: usize,
    /// Endless bodies still being written.
    pub open: usize,
    /// Bytes of endless bodies sent so far (handed to the connection).
    pub bytes_sent: u64,
}

/// The piece an endless body repeats: 1 KiB. The SSE form is a `data:` line, the NDJSON form has no
/// newline at all.
fn endless_piece(sse: bool) -> bytes::Bytes {
    const PIECE: usize = 1024;
    let mut piece = if sse { b"data: ".to_vec() } else { Vec::new() };
    piece.resize(PIECE - 1, b'x');
    piece.push(if sse { b'\n' } else { b'x' });
    bytes::Bytes::from(piece)
}

/// How a simulated answer is shaped and paced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyShape {
    /// Delay before the first byte of the answer (a model "thinking"). With keep-alives on, the
    /// response head and a keep-alive comment come first (as OpenRouter does).
    pub first_byte_latency: Duration,
    /// Delay between two streamed chunks.
    pub chunk_delay: Duration,
    /// Words per streamed delta (at least 1).
    pub words_per_chunk: usize,
    /// Fixed sentences after the echo line; raise it for long replies in benchmarks.
    pub sentences: usize,
    /// Send `: OPENROUTER PROCESSING` comment lines (SSE only) before the first and between chunks.
    pub keep_alive: bool,
}

impl Default for ReplyShape {
    /// No delays at all: for tests and benchmarks.
    fn default() -> Self {
        Self {
            first_byte_latency: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            words_per_chunk: 3,
            sentences: 3,
            keep_alive: false,
        }
    }
}

impl ReplyShape {
    /// Paced like a real model, so the demo shows streaming.
    pub fn demo() -> Self {
        Self {
            first_byte_latency: Duration::from_millis(400),
            chunk_delay: Duration::from_millis(40),
            words_per_chunk: 2,
            sentences: 4,
            keep_alive: true,
        }
    }

    /// No delays and `sentences` sentences: long answers as fast as the machine can stream them.
    pub fn zero_latency(sentences: usize) -> Self {
        Self {
            sentences,
            ..Self::default()
        }
    }
}

/// One request a simulator received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimRequest {
    /// HTTP method.
    pub method: String,
    /// The request path (e.g. `/api/v1/chat/completions`).
    pub path: String,
    /// The fingerprint ([`crate::secrets::fingerprint_str`]) of the bearer key, if one was sent.
    pub key_fingerprint: Option<String>,
    /// The account the key belongs to (OpenRouter), or the key's position `key#N` (Ollama).
    pub account: Option<String>,
    /// The requested model, for chat requests.
    pub model: Option<String>,
    /// Whether a streamed answer was asked for (chat requests).
    pub stream: bool,
    /// The status answered (200 for a stream even if a stream fault cut it later; 0 for `Hang`).
    pub status: u16,
    /// The injected fault, if one applied.
    pub fault: Option<Fault>,
    /// The `HTTP-Referer` header sent with a chat request (OpenRouter attribution).
    pub referer: Option<String>,
    /// The `X-Title` header sent with a chat request (OpenRouter attribution).
    pub title: Option<String>,
    /// The answer's length cap the client sent: `max_tokens` (OpenAI-compatible) or
    /// `options.num_predict` (Ollama).
    pub max_tokens: Option<u64>,
    /// The images the request carried, decoded (chat requests).
    pub images: Vec<SimImage>,
    /// The chat body's top-level fields other than `model` and `messages`, as sent (sampling,
    /// `tools`, `reasoning`/`think`, `stream_options`, pass-through extras …).
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// The texts an embeddings request asked for.
    pub embed_inputs: Vec<String>,
}

/// One image a chat request carried, as the simulator decoded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimImage {
    /// The SHA-256 of the decoded bytes, in lowercase hex.
    pub sha256: String,
    /// How many bytes it decoded to.
    pub bytes: usize,
}

impl SimRequest {
    /// A request with nothing known yet beyond its method, path and status.
    pub(crate) fn new(method: impl Into<String>, path: impl Into<String>, status: u16) -> Self {
        Self {
            method: method.into(),
            path: path.into(),
            key_fingerprint: None,
            account: None,
            model: None,
            stream: false,
            status,
            fault: None,
            referer: None,
            title: None,
            max_tokens: None,
            images: Vec::new(),
            fields: serde_json::Map::new(),
            embed_inputs: Vec::new(),
        }
    }

    /// Whether this was a chat request (`/chat/completions` or `/api/chat`).
    pub fn is_chat(&self) -> bool {
        self.path.ends_with("/chat/completions") || self.path == "/api/chat"
    }
}

/// Fixed sentences that follow the echo line, cycled.
const FILLER: [&str; 6] = [
    "This answer comes from a simulated provider, so nothing left this machine.",
    "Each piece of it arrives as its own streamed chunk, so you can watch the reply grow.",
    "The words are deterministic, which keeps tests and benchmarks repeatable.",
    "Ask the same thing again and you get the same reply, apart from the model name.",
    "A real model would think harder; this one echoes and elaborates.",
    "That is all the simulator has to say about it for now.",
];

/// The echoed user text is cut here so one huge prompt does not make a huge reply.
const ECHO_MAX_CHARS: usize = 120;

/// The deterministic reply of `model` to a conversation whose last user message is `last_user`.
pub fn reply_text(model: &str, last_user: &str, sentences: usize) -> String {
    let mut echo: String = last_user.split_whitespace().collect::<Vec<_>>().join(" ");
    if echo.chars().count() > ECHO_MAX_CHARS {
        echo = echo.chars().take(ECHO_MAX_CHARS).collect::<String>() + "…";
    }
    let echo = echo.trim_end_matches(['.', '!', '?']);
    let mut text = format!("[{model}] You said: {echo}.");
    for i in 0..sentences {
        text.push(' ');
        text.push_str(FILLER[i % FILLER.len()]);
    }
    text
}

/// Splits `text` into deltas of `words_per_chunk` words (each keeps its trailing space), so the
/// concatenation of the deltas is exactly `text`.
pub fn reply_chunks(text: &str, words_per_chunk: usize) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    words
        .chunks(words_per_chunk.max(1))
        .map(<[&str]>::concat)
        .collect()
}

/// The `model` and `messages` of a chat body (empty when missing).
fn model_and_messages(request: &serde_json::Value) -> (String, Vec<serde_json::Value>) {
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
    (model, messages)
}

/// The last user message of a wire `messages` array (empty if none).
fn last_user_message(messages: &[serde_json::Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(|r| r.as_str()) == Some(Role::User.as_str()))
        .and_then(|m| m.get("content"))
        .map(features::content_text)
        .unwrap_or_default()
}

/// Characters of all message contents (the simulators' prompt-size measure).
fn prompt_chars(messages: &[serde_json::Value]) -> usize {
    messages
        .iter()
        .filter_map(|m| m.get("content"))
        .map(|c| features::content_text(c).chars().count())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_deterministic_and_chunks_rejoin() {
        let text = reply_text("m", "  hello   there. ", 2);
        assert_eq!(
            text,
            format!("[m] You said: hello there. {} {}", FILLER[0], FILLER[1])
        );
        let chunks = reply_chunks(&text, 2);
        assert!(chunks.len() > 5);
        assert_eq!(chunks.concat(), text);
    }
}
