//! The HTTP plumbing every provider client shares: one pooled rustls `reqwest::Client`, the three
//! timeouts (connect, idle between stream chunks, overall deadline), status → [`ProviderError`] mapping,
//! and turning a streamed body into a [`ProviderStream`] through a [`StreamParser`].
//!
//! Nothing here retries: the router is the only retry loop. Every `reqwest::Error` passes through
//! `without_url()` before it is logged, and no returned error carries a URL or a key.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::sanitize::sanitize_message;
use super::wait::waiting;
use super::{ParsedEvent, ProviderError, ProviderStream, StreamParser};
use crate::body::BodyError;
use crate::clock::SharedClock;
use crate::config::providers::RouterConfig;

/// The largest error body read to classify a failed status. Provider error bodies are a few hundred
/// bytes; the cap stops a misbehaving upstream from making us buffer an HTML page the size of a film.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// The largest JSON body accepted from a non-streaming call. OpenRouter's `/models` is about 1 MiB today;
/// 16 MiB leaves room for growth and still bounds memory.
pub const MAX_JSON_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A `429` whose reset is further away than this is treated as the daily quota, not a per-minute limit:
/// a per-minute window always resets within 60 s, so two minutes leaves room for clock skew.
pub const DAILY_RESET_THRESHOLD_MS: i64 = 120_000;

/// How long an idle pooled connection is kept. Requests come in bursts (one chat turn, then a pause);
/// 90 s reuses TLS sessions across a conversation without holding sockets open for hours.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// TCP keep-alive probes detect a silently dead peer (NAT drop) on long streams before the idle timeout.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// The three limits on every provider call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP + TLS handshake. Short: a host that cannot be reached in seconds is down, try the next one.
    pub connect: Duration,
    /// The longest silence between two body chunks of a stream (keep-alive comments count as activity).
    /// Models can think for a while before the first token, so this is generous; a stream silent for
    /// longer is stalled. It also bounds the wait for a streaming response's head (OpenRouter and
    /// Ollama Cloud send it at once); a local Ollama that must first load a large model may need more.
    pub idle: Duration,
    /// The whole call, from sending the request to the last byte of the body. Bounds a stream that
    /// trickles forever; it is long because a healthy long answer can take minutes.
    pub deadline: Duration,
}

impl Timeouts {
    /// The timeouts configured in `[router]`.
    pub fn from_config(config: &RouterConfig) -> Self {
        Self {
            connect: Duration::from_secs(config.connect_timeout_secs),
            idle: Duration::from_secs(config.idle_timeout_secs),
            deadline: Duration::from_secs(config.deadline_secs),
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self::from_config(&RouterConfig::default())
    }
}

/// The HTTP client could not be built: the base URL does not parse (configs are checked before, so
/// only a caller's own URL), or TLS roots or the resolver could not be initialised.
#[derive(Debug, thiserror::Error)]
#[error("could not build the HTTP client: {0}")]
pub struct ClientBuildError(String);

/// What every provider client holds: its name, base URL, pooled HTTP client, timeouts and clock.
#[derive(Clone)]
pub struct Endpoint {
    /// The provider's configured name (`openrouter`, `ollama-cloud`, a tier's name).
    pub name: String,
    /// The base URL, parsed once: a request parses only its own path, not the scheme and host again
    /// (IDNA included).
    base_url: reqwest::Url,
    /// The pooled client (connect timeout only; see [`build_client`]).
    pub http: reqwest::Client,
    /// Connect, idle and deadline limits.
    pub timeouts: Timeouts,
    /// "Now", for judging whether a 429's reset is far away (daily) or near (per minute).
    pub clock: SharedClock,
}

impl Endpoint {
    /// An endpoint named `name` at `base_url` on the system clock.
    pub fn new(
        name: impl Into<String>,
        base_url: &str,
        timeouts: Timeouts,
    ) -> Result<Self, ClientBuildError> {
        let base_url = reqwest::Url::parse(base_url)
            .map_err(|e| ClientBuildError(format!("the base URL does not parse ({e})")))?;
        Ok(Self {
            name: name.into(),
            base_url,
            http: build_client(&timeouts)?,
            timeouts,
            clock: std::sync::Arc::new(crate::clock::SystemClock),
        })
    }

    /// The same endpoint reading "now" from `clock`.
    #[must_use]
    pub fn with_clock(&self, clock: SharedClock) -> Self {
        Self {
            clock,
            ..self.clone()
        }
    }

    /// A request to the base URL with `path` appended to its path (a trailing `/` of the base is not
    /// doubled), with the bearer key when one is given.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&SecretString>,
    ) -> reqwest::RequestBuilder {
        let mut url = self.base_url.clone();
        url.set_path(&format!(
            "{}{path}",
            self.base_url.path().trim_end_matches('/')
        ));
        with_bearer(self.http.request(method, url), key)
    }

    /// The deadline of a call starting now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeouts.deadline
    }

    /// Sends a non-streamed call and reads its one JSON answer, headers and body both by `deadline`.
    pub async fn fetch_json<T: DeserializeOwned>(
        &self,
        builder: reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Result<T, ProviderError> {
        let response = send(builder, deadline, deadline, &self.clock).await?;
        read_json(response, deadline).await
    }
}

/// Builds the pooled rustls client every provider uses.
///
/// Only the connect timeout is set on the client. A total `reqwest` timeout would cut long healthy
/// streams, so the deadline and the idle timeout are enforced per call by this module instead.
pub fn build_client(timeouts: &Timeouts) -> Result<reqwest::Client, ClientBuildError> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(timeouts.connect)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_keepalive(TCP_KEEPALIVE)
        .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ClientBuildError(e.without_url().to_string()))
}

/// Adds `Authorization: Bearer <key>` when a key is given.
pub(crate) fn with_bearer(
    builder: reqwest::RequestBuilder,
    key: Option<&SecretString>,
) -> reqwest::RequestBuilder {
    match key {
        Some(key) => builder.bearer_auth(key.expose_secret()),
        None => builder,
    }
}

/// Sends `request`, waiting for the response head until `head_by` (→ `Stalled`) or the overall
/// `deadline` (→ `Timeout`), whichever is first, and turns a non-success status into its
/// [`ProviderError`].
///
/// Streaming calls pass `head_by = now + idle`: a streaming server sends its head (and keep-alives) at
/// once, so a silent one is as stalled as a silent stream, and waiting the whole deadline before trying
/// the next candidate would leave the user staring at "typing…" for minutes. Non-streaming calls pass
/// the deadline, since their head only comes with the whole answer.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    head_by: Instant,
    deadline: Instant,
    clock: &SharedClock,
) -> Result<reqwest::Response, ProviderError> {
    let wake = head_by.min(deadline);
    let response = match waiting(tokio::time::timeout_at(wake, request.send())).await {
        Err(_) if wake < deadline => return Err(ProviderError::Stalled),
        Err(_) => return Err(ProviderError::Timeout),
        Ok(Err(e)) => return Err(send_error(e)),
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let headers = response.headers().clone();
    let body = read_limited(response, deadline, MAX_ERROR_BODY_BYTES)
        .await
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body);
    Err(map_status(status.as_u16(), &headers, &body, clock.now_ms()))
}

/// Reads a whole JSON body (bounded by [`MAX_JSON_BODY_BYTES`] and the deadline).
pub(crate) async fn read_json<T: DeserializeOwned>(
    response: reqwest::Response,
    deadline: Instant,
) -> Result<T, ProviderError> {
    let body = read_limited(response, deadline, MAX_JSON_BODY_BYTES).await?;
    serde_json::from_slice(&body).map_err(|e| {
        // serde quotes offending values; sanitize in case a body echoes anything sensitive.
        ProviderError::Malformed(sanitize_message(&format!("unexpected JSON: {e}")))
    })
}

async fn read_limited(
    response: reqwest::Response,
    deadline: Instant,
    limit: usize,
) -> Result<Vec<u8>, ProviderError> {
    let read = tokio::time::timeout_at(deadline, crate::body::read_capped(response, limit));
    match waiting(read).await {
        Err(_) => Err(ProviderError::Timeout),
        Ok(Err(BodyError::Read(e))) => Err(body_error(e)),
        Ok(Err(BodyError::TooLarge { .. })) => {
            Err(ProviderError::Malformed("response body too large".into()))
        }
        Ok(Ok(body)) => Ok(body),
    }
}

/// A whole (non-streamed) answer as the events a stream would give: `request` sent, its head waited for
/// until `deadline` (it comes only with the whole answer), the body read in one piece (bounded by
/// [`MAX_JSON_BODY_BYTES`] and `deadline`) and handed to `parse`. A body that cannot be read is the one
/// error event, so the router can still fall back.
pub(crate) async fn whole_answer(
    request: reqwest::RequestBuilder,
    deadline: Instant,
    clock: &SharedClock,
    parse: impl FnOnce(&[u8]) -> Vec<ParsedEvent>,
) -> Result<ProviderStream, ProviderError> {
    let response = send(request, deadline, deadline, clock).await?;
    let events = match read_limited(response, deadline, MAX_JSON_BODY_BYTES).await {
        Ok(body) => parse(&body),
        Err(e) => vec![Err(e)],
    };
    Ok(futures_util::stream::iter(events).boxed())
}

/// Maps an error from sending a request (before any response) to a [`ProviderError`].
pub(crate) fn send_error(error: reqwest::Error) -> ProviderError {
    let error = error.without_url();
    tracing::debug!(error = %error, "provider request failed");
    if error.is_timeout() {
        ProviderError::Timeout
    } else {
        // Refused, DNS, TLS, or the connection closed before a response head: nothing was received.
        ProviderError::Connect
    }
}

/// Maps an error while reading a body to a [`ProviderError`]: the connection was cut mid-answer.
pub(crate) fn body_error(error: reqwest::Error) -> ProviderError {
    let error = error.without_url();
    tracing::debug!(error = %error, "provider body read failed");
    if error.is_timeout() {
        ProviderError::Timeout
    } else {
        ProviderError::Truncated
    }
}

/// Classifies a failed HTTP status from its headers and (already read) body.
///
/// 429 → `RateLimited` (with `Retry-After` in seconds or as an HTTP date, and `X-RateLimit-Reset` epoch ms;
/// `daily` when the message names a per-day quota or the remaining count is 0 with a reset more than
/// [`DAILY_RESET_THRESHOLD_MS`] away); 402 → `PaymentRequired`; 403 from a content filter → `Refused`;
/// 401/403 → `Unauthorized`; 400/413 naming the context length → `ContextTooLong`; 404 →
/// `ModelNotFound`; anything else → `Upstream`.
pub fn map_status(status: u16, headers: &HeaderMap, body: &str, now_ms: i64) -> ProviderError {
    let rate = RateHeaders {
        retry_after: header_str(headers, "retry-after").and_then(|v| retry_after(v, now_ms)),
        reset_at_ms: header_str(headers, "x-ratelimit-reset")
            .and_then(|v| v.trim().parse::<i64>().ok())
            // OpenRouter sends epoch milliseconds; some OpenAI-compatible servers send seconds.
            // Any value below 10^11 cannot be a millisecond timestamp after 1973.
            .map(|v| if v < 100_000_000_000 { v * 1000 } else { v }),
        remaining_zero: header_str(headers, "x-ratelimit-remaining")
            .and_then(|v| v.trim().parse::<i64>().ok())
            == Some(0),
    };
    classify(status, &error_text(body), &rate, now_ms)
}

/// Classifies an `error` value that arrived inside a stream (an SSE data event, an NDJSON line) or in a
/// `200` body. When its `code` is a status with its own reaction (429, 402, 401, 403) it gets the same
/// class as that HTTP status, so a mid-stream rate limit cools the account down like a 429 response
/// would; anything else is [`ProviderError::MidStream`] with the provider's (sanitized) message.
pub fn map_stream_error(error: &serde_json::Value) -> ProviderError {
    let code = error.get("code").and_then(|c| match c {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    match code.and_then(|c| u16::try_from(c).ok()) {
        Some(status @ (429 | 402 | 401 | 403)) => {
            // No headers inside a stream: the reset time is unknown, so "now" does not matter.
            classify(status, &error_value_text(error), &RateHeaders::default(), 0)
        }
        _ => ProviderError::MidStream {
            message: sanitize_message(&super::sse::error_message(error)),
        },
    }
}

/// The rate-limit headers of a 429 (none inside a stream).
#[derive(Debug, Default)]
struct RateHeaders {
    retry_after: Option<Duration>,
    reset_at_ms: Option<i64>,
    remaining_zero: bool,
}

/// Words a provider's 429 message uses for a per-day (or longer) quota, as opposed to a per-minute one.
const DAILY_WORDS: [&str; 5] = [
    "per-day",
    "per day",
    "daily",
    "free-models-per-day",
    "weekly",
];

/// Words in a 403's message that mean a content filter declined this request (OpenRouter: "… requires
/// moderation … your input was flagged"), not that the key is bad.
const MODERATION_WORDS: [&str; 2] = ["moderation", "flagged"];

/// Words in a 400/413's message that mean the prompt is longer than the model's context window.
const CONTEXT_WORDS: [&str; 6] = [
    "context length",
    "context_length",
    "maximum context",
    "context window",
    "too many tokens",
    "prompt is too long",
];

/// The taxonomy shared by HTTP statuses and in-stream error codes. `text` is the provider's message.
fn classify(status: u16, text: &str, rate: &RateHeaders, now_ms: i64) -> ProviderError {
    let message = text.to_ascii_lowercase();
    let says = |words: &[&str]| words.iter().any(|w| message.contains(w));
    match status {
        429 => {
            let far_reset = rate
                .reset_at_ms
                .is_some_and(|r| r - now_ms > DAILY_RESET_THRESHOLD_MS);
            ProviderError::RateLimited {
                retry_after: rate.retry_after,
                reset_at_ms: rate.reset_at_ms,
                daily: says(&DAILY_WORDS) || (rate.remaining_zero && far_reset),
            }
        }
        402 => ProviderError::PaymentRequired,
        403 if says(&MODERATION_WORDS) => ProviderError::Refused,
        401 | 403 => ProviderError::Unauthorized { status },
        400 | 413 if says(&CONTEXT_WORDS) => ProviderError::ContextTooLong,
        404 => ProviderError::ModelNotFound,
        _ => {
            tracing::debug!(status, message = %sanitize_message(&message), "provider error status");
            ProviderError::Upstream { status }
        }
    }
}

/// `Retry-After`: delay seconds, or an HTTP date (RFC 9110 allows both) turned into the wait from `now_ms`.
fn retry_after(value: &str, now_ms: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(crate::clock::until(now_ms, at.timestamp_millis()))
}

/// The message of an error body: `error.message`, `error` as a string, or the raw body.
fn error_text(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => match v.get("error") {
            Some(e) => error_value_text(e),
            None => body.to_owned(),
        },
        Err(_) => body.to_owned(),
    }
}

/// The readable text of an `error` value, with the details OpenRouter adds in `error.metadata`.
fn error_value_text(error: &serde_json::Value) -> String {
    let mut text = super::sse::error_message(error);
    // OpenRouter puts the upstream's own words in `error.metadata.raw`.
    if let Some(raw) = error.pointer("/metadata/raw").and_then(|r| r.as_str()) {
        text.push(' ');
        text.push_str(raw);
    }
    // Its moderation errors carry `metadata.flagged_input` and `metadata.reasons`.
    if error.pointer("/metadata/flagged_input").is_some() {
        text.push_str(" (flagged)");
    }
    text
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Turns a successful streaming response into events via `parser`, enforcing the idle timeout between
/// chunks (→ `Stalled`) and the overall `deadline` (→ `Timeout`). The stream ends right after `Done` or
/// the first error; dropping it closes the connection.
pub(crate) fn event_stream<P: StreamParser>(
    response: reqwest::Response,
    parser: P,
    idle: Duration,
    deadline: Instant,
) -> ProviderStream {
    let state = StreamState {
        body: response.bytes_stream().boxed(),
        parser,
        pending: VecDeque::new(),
        idle,
        deadline,
        cut: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(event) = st.pending.pop_front() {
                return Some((event, st));
            }
            if st.cut || st.parser.is_finished() {
                return None;
            }
            // The idle timer restarts on every chunk, but never reaches past the overall deadline.
            let wake = (Instant::now() + st.idle).min(st.deadline);
            let mut out = Vec::new();
            match waiting(tokio::time::timeout_at(wake, st.body.next())).await {
                Err(_) => {
                    st.cut = true;
                    let error = if wake >= st.deadline {
                        ProviderError::Timeout
                    } else {
                        ProviderError::Stalled
                    };
                    return Some((Err(error), st));
                }
                Ok(Some(Ok(bytes))) => st.parser.feed(&bytes, &mut out),
                Ok(Some(Err(e))) => {
                    st.cut = true;
                    return Some((Err(body_error(e)), st));
                }
                Ok(None) => st.parser.finish(&mut out),
            }
            st.pending.extend(out);
        }
    })
    .boxed()
}

struct StreamState<P> {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: P,
    pending: VecDeque<ParsedEvent>,
    idle: Duration,
    deadline: Instant,
    /// The body was abandoned (timeout or read error) after yielding that error.
    cut: bool,
}

#[cfg(test)]
mod tests;
