//! The streamed response body: a surface's framing ([`Framing`]: NDJSON lines or SSE events) applied
//! to a guarded reply, one write per event, with the metrics of how it ended. Dropping the body (the
//! client hung up) drops the reply stream, which cancels the upstream request at once.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::time::Instant;

use super::metrics::{AbortCause, Metrics};
use crate::domain::{FailureKind, ReplyEvent};

/// How a surface writes reply events onto the wire.
pub trait Framing: Send + 'static {
    /// Bytes sent before the first event (OpenAI's role-first chunk); none by default.
    fn open(&mut self, _out: &mut Vec<u8>) {}

    /// Appends the bytes for `event` to `out` (possibly none, e.g. a tool-call piece Ollama sends
    /// whole at the end). `Finished` writes the final object(s); `Failed` the error event.
    fn event(&mut self, event: &ReplyEvent, out: &mut Vec<u8>);
}

/// What the metrics need to know about one streamed answer.
pub struct Served {
    /// `ollama` or `openai`.
    pub surface: &'static str,
    /// The answering provider.
    pub provider: String,
    /// The answering tier.
    pub tier: String,
    /// When the request arrived.
    pub arrived: Instant,
    /// Where to record.
    pub metrics: Arc<Metrics>,
}

/// Records a client disconnect when the body is dropped before its last event.
struct Guard {
    served: Served,
    ended: bool,
}

impl Guard {
    fn end(&mut self, event: &ReplyEvent) {
        match event {
            ReplyEvent::Finished(c) => {
                self.ended = true;
                let s = &self.served;
                s.metrics
                    .finished(&s.provider, &s.tier, s.arrived.elapsed(), c.usage);
            }
            ReplyEvent::Failed(f) => {
                self.ended = true;
                let cause = match f.kind {
                    FailureKind::ShuttingDown => AbortCause::Shutdown,
                    // The request deadline's failure (reply::cut_failure); an upstream cut is
                    // `Interrupted`.
                    FailureKind::Unavailable => AbortCause::Deadline,
                    _ => AbortCause::Upstream,
                };
                self.served.metrics.abort(self.served.surface, cause);
            }
            _ => {}
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.ended {
            self.served
                .metrics
                .abort(self.served.surface, AbortCause::ClientDisconnect);
        }
    }
}

/// The bytes `framing` writes for `events`, one chunk per event that writes any.
pub fn framed(
    mut framing: impl Framing,
    events: BoxStream<'static, ReplyEvent>,
) -> BoxStream<'static, Bytes> {
    let mut opening = Vec::new();
    framing.open(&mut opening);
    let opening = (!opening.is_empty()).then(|| Bytes::from(opening));
    let body = events.filter_map(move |event| {
        let mut out = Vec::with_capacity(256);
        framing.event(&event, &mut out);
        std::future::ready((!out.is_empty()).then(|| Bytes::from(out)))
    });
    stream::iter(opening).chain(body).boxed()
}

/// The response body for `events` framed by `framing`, recording how the answer ended.
pub fn body(framing: impl Framing, events: BoxStream<'static, ReplyEvent>, served: Served) -> Body {
    let mut guard = Guard {
        served,
        ended: false,
    };
    let watched = events
        .map(move |event| {
            guard.end(&event);
            event
        })
        .boxed();
    Body::from_stream(framed(framing, watched).map(Ok::<_, Infallible>))
}
