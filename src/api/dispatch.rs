//! One model request from either surface, after parsing: hand it to the router, hold the response
//! until the first content (a failure before it gets a real status), then stream it through the
//! surface's framing or gather it whole. The answering model goes into the `x-switchboard-*` headers.
//!
//! While waiting for the first token nothing is sent, not even a keep-alive: the status is not known
//! until then (a rate limit must still be a 429). The request deadline bounds the wait.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::stream::{BoxStream, StreamExt};
use tokio::time::Instant;

use super::auth::Caller;
use super::convert::{completion_request, Ask};
use super::error::{ApiError, Surface};
use super::keys::gate::Ticket;
use super::reply::{self, Answer, Cut, NotOpened, Opened};
use super::stream::{self, Framing, Served};
use super::ApiState;
use crate::domain::{AnswerSource, ReplyEvent};
use crate::providers::wait::measured;
use crate::router::CompletionRequest;

/// A request the router has begun to answer.
pub struct Begun {
    /// The held reply.
    pub opened: Opened,
    /// When the request arrived.
    pub arrived: Instant,
    /// When it must end.
    pub deadline: Instant,
    /// Its surface.
    pub surface: Surface,
    /// The caller's key reservation, settled when the answer ends.
    pub ticket: Option<Ticket>,
    /// Time spent waiting on providers so far (every attempt), not switchboard's own.
    pub waited: Duration,
}

impl Begun {
    /// The model that answers (the router's report; `requested` when it gave none, as for an answer
    /// switchboard wrote itself).
    pub fn model(&self, requested: &str) -> String {
        self.opened
            .source
            .as_ref()
            .map_or_else(|| requested.to_owned(), |s| s.model.clone())
    }
}

/// Resolves `ask` for `caller`, sends it to the router and waits for its first content; also returns
/// the model name the client asked for. An answer that will not `stream` is asked of the provider
/// whole ([`crate::generation::GenerationParams::whole`]).
pub async fn begin_ask(
    state: &ApiState,
    surface: Surface,
    caller: &Caller,
    mut ask: Ask,
    stream: bool,
    arrived: Instant,
) -> Result<(Begun, String), ApiError> {
    ask.params.whole = !stream;
    let requested = ask.model.clone();
    let request = completion_request(surface, &*state.router, caller, ask)?;
    Ok((
        begin(state, caller, surface, request, arrived).await?,
        requested,
    ))
}

/// Admits `request` against the caller's key limits (429 when one is reached), sends it to the router
/// and waits for its first content.
pub async fn begin(
    state: &ApiState,
    caller: &Caller,
    surface: Surface,
    request: CompletionRequest,
    arrived: Instant,
) -> Result<Begun, ApiError> {
    let deadline = arrived + Duration::from_secs(state.deadline_secs());
    let mut ticket = caller
        .gate
        .0
        .as_ref()
        .map(|gate| gate.admit(surface, &request))
        .transpose()?;
    // What the client sees never carries a loaded secret (a provider or proxy may echo a key), even one
    // split across two deltas.
    let reply = crate::secrets::scrub_reply(state.router.complete(request));
    let (opened, waited) = measured(reply::open_within(reply, deadline, &state.cut)).await;
    let opened = opened.map_err(|why| match why {
        NotOpened::Failed(f) => ApiError::from_failure(surface, &f),
        // Nothing came from the model before the deadline: the gateway timed out.
        NotOpened::Cut(Cut::Deadline) => ApiError::new(
            surface,
            StatusCode::GATEWAY_TIMEOUT,
            reply::cut_failure(Cut::Deadline).message,
        ),
        NotOpened::Cut(Cut::Shutdown) => {
            ApiError::from_failure(surface, &reply::cut_failure(Cut::Shutdown))
        }
    })?;
    let (provider, tier) = names(opened.source.as_ref());
    state
        .metrics
        .first_chunk(provider, tier, arrived.elapsed(), opened.attempts);
    if let Some(t) = ticket.as_mut() {
        t.started(opened.source.as_ref());
    }
    Ok(Begun {
        opened,
        arrived,
        deadline,
        surface,
        ticket,
        waited,
    })
}

fn names(source: Option<&AnswerSource>) -> (&str, &str) {
    source.map_or(("switchboard", "none"), |s| {
        (s.provider.as_str(), s.tier.0.as_str())
    })
}

/// The rest of the answer as guarded events.
fn events(
    state: &ApiState,
    begun: Begun,
) -> (BoxStream<'static, ReplyEvent>, Served, Option<AnswerSource>) {
    let Begun {
        opened,
        arrived,
        deadline,
        surface,
        ticket,
        waited: _,
    } = begun;
    let (provider, tier) = names(opened.source.as_ref());
    let served = Served {
        surface: surface.as_str(),
        provider: provider.to_owned(),
        tier: tier.to_owned(),
        arrived,
        metrics: state.metrics.clone(),
    };
    let events = reply::guarded(opened.first, opened.rest, deadline, state.cut.clone());
    // The key's reservation settles on the terminal event, or as failed when the stream is dropped.
    let events = match ticket {
        Some(mut ticket) => {
            futures_util::StreamExt::boxed(futures_util::StreamExt::map(events, move |event| {
                ticket.observe(&event);
                event
            }))
        }
        None => events,
    };
    (events, served, opened.source)
}

/// The streamed response: status 200, `content_type`, the answering model's headers, the framed body.
pub fn streamed(
    state: &ApiState,
    begun: Begun,
    framing: impl Framing,
    content_type: &'static str,
) -> Response {
    let (surface, arrived, waited) = (begun.surface, begun.arrived, begun.waited);
    let (events, served, source) = events(state, begun);
    let mut response = Response::new(stream::body(framing, events, served));
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(content_type));
    // Proxies (nginx) buffer responses unless told not to; a buffered stream arrives all at once.
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    source_headers(source.as_ref(), headers);
    own_time(state, surface, arrived, waited);
    response
}

/// Records switchboard's own share of a request that began to answer: its time so far (to the first
/// byte when streamed, to the whole answer when not) less the time spent waiting on providers
/// ([`measured`]). Waiting for an account to free up counts as switchboard's: the client waits for it.
fn own_time(state: &ApiState, surface: Surface, arrived: Instant, waited: Duration) {
    let own = arrived.elapsed().saturating_sub(waited);
    state.metrics.overhead(surface.as_str(), own);
}

/// The whole answer, for a non-streamed response; a failure at any point is still a status.
pub async fn gathered(
    state: &ApiState,
    begun: Begun,
) -> Result<(Answer, Option<AnswerSource>), ApiError> {
    let (surface, arrived, waited_to_first) = (begun.surface, begun.arrived, begun.waited);
    let (events, served, source) = events(state, begun);
    let watched = events
        .map(move |event| {
            if let ReplyEvent::Finished(c) = &event {
                let s = &served;
                s.metrics
                    .finished(&s.provider, &s.tier, s.arrived.elapsed(), c.usage);
            }
            event
        })
        .boxed();
    let (answer, waited) = measured(Answer::gather(watched)).await;
    let answer = answer.map_err(|f| ApiError::from_failure(surface, &f))?;
    own_time(state, surface, arrived, waited_to_first + waited);
    Ok((answer, source))
}

/// A JSON response with the answering model's headers.
pub fn json_response(body: &impl serde::Serialize, source: Option<&AnswerSource>) -> Response {
    bytes_response(serde_json::to_vec(body).unwrap_or_default(), source)
}

/// Serialized JSON as a response with the answering model's headers.
pub fn bytes_response(bytes: Vec<u8>, source: Option<&AnswerSource>) -> Response {
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    source_headers(source, headers);
    response
}

/// `x-switchboard-tier`, `-provider` and `-model`: who actually answered.
pub fn source_headers(source: Option<&AnswerSource>, headers: &mut HeaderMap) {
    let Some(s) = source else { return };
    for (name, value) in [
        ("x-switchboard-tier", s.tier.0.as_str()),
        ("x-switchboard-provider", s.provider.as_str()),
        ("x-switchboard-model", s.model.as_str()),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
}

/// 501 for the model-management routes a proxy cannot honour (create, copy, delete, pull, push, blobs).
pub async fn not_implemented() -> ApiError {
    ApiError::new(
        Surface::Ollama,
        StatusCode::NOT_IMPLEMENTED,
        "switchboard routes to hosted models and does not manage local ones; this endpoint is not available",
    )
}
