//! The streamed response body: a surface's framing ([`Framing`]: NDJSON lines or SSE events) applied
//! to a guarded reply, with the metrics of how it ended. Every event that is ready goes out in one
//! write; nothing waits for a later one. Dropping the body (the client hung up) drops the reply
//! stream, which cancels the upstream request at once.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use futures_util::stream::{BoxStream, Stream, StreamExt};
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

/// A chunk stops taking more ready events at this size, so a large backlog still leaves in pieces the
/// client can start on (and the buffer stays small).
const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// Scheduler turns without a new event after which gathered events are sent (see [`framed`]).
/// Measured in the daemon (one worker): the next chunk of a read already received reaches the stream
/// two turns after the previous one was taken; after one turn nothing has arrived, so one turn
/// gathered nothing (16 writes per 16-delta answer either way) and two gather the burst (2 writes).
/// In the API benchmark that cut the daemon's CPU in the 2,000-stream phase by 10–15 % and its RSS
/// with 1,000 streams open from 82–100 MB to 74–77 MB.
const GATHER_TURNS: u8 = 2;

/// The bytes `framing` writes for `events`: each chunk holds every event that was ready when it was
/// asked for (up to [`MAX_CHUNK_BYTES`]). A provider's read often carries a dozen small deltas; one
/// write for them instead of a dozen spares a syscall and a client wake-up each, and no event ever
/// waits for one that has not arrived.
///
/// "Ready" includes what is a scheduler turn or two away: hyper hands a provider's response body over
/// one HTTP chunk at a time, each after the previous one was taken, so the rest of a read that carried
/// a dozen deltas arrives one delta at a time. After the first chunk (the answer's first token, which
/// never waits), events are gathered while they keep coming: the stream gives the tasks already woken
/// a turn (a self-wake, no timer) and sends once [`GATHER_TURNS`] turns in a row brought nothing. A
/// model streaming token by token pays those turns (microseconds) per token; a burst leaves in one or
/// two writes instead of one per delta.
pub fn framed(
    mut framing: impl Framing,
    events: BoxStream<'static, ReplyEvent>,
) -> BoxStream<'static, Bytes> {
    let mut opening = Vec::new();
    framing.open(&mut opening);
    Batched {
        framing: Box::new(framing),
        events,
        pending: opening,
        ended: false,
        sent_any: false,
        idle_turns: 0,
    }
    .boxed()
}

/// [`framed`]'s stream.
struct Batched<F> {
    // Boxed so the stream is `Unpin` whatever the framing holds.
    framing: Box<F>,
    events: BoxStream<'static, ReplyEvent>,
    /// Bytes framed but not yet handed out (the opening, before the first poll).
    pending: Vec<u8>,
    ended: bool,
    /// Whether a chunk has gone out (the first one never waits a turn).
    sent_any: bool,
    /// Turns given in a row that brought no event.
    idle_turns: u8,
}

impl<F: Framing> Stream for Batched<F> {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = &mut *self;
        let mut framed_any = false;
        while !this.ended && this.pending.len() < MAX_CHUNK_BYTES {
            match this.events.poll_next_unpin(cx) {
                Poll::Ready(Some(event)) => {
                    this.framing.event(&event, &mut this.pending);
                    framed_any = true;
                }
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => break,
            }
        }
        if !this.pending.is_empty() {
            if framed_any {
                this.idle_turns = 0;
            }
            let full = this.ended || this.pending.len() >= MAX_CHUNK_BYTES;
            if this.sent_any && !full && this.idle_turns < GATHER_TURNS {
                // More of the same burst may be a turn away (see `framed`): let the woken tasks run.
                this.idle_turns += 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.sent_any = true;
            return Poll::Ready(Some(Bytes::from(std::mem::take(&mut this.pending))));
        }
        if this.ended {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
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
