//! The router's reply stream as the API serves it: held until the first piece of content (so a failure
//! before it still gets a real status and the headers name the model that answers), then guarded (the
//! request deadline, the shutdown cut, a stream that ends without its terminal event) so every answer
//! ends in exactly one `Finished` or `Failed`; and, for non-streamed responses, gathered whole.

use std::collections::BTreeMap;
use std::pin::Pin;

use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::domain::{
    AnswerSource, Completion, FailureKind, ReplyEvent, ReplyStream, UserFacingError,
};
use crate::generation::ToolCall;

/// A reply whose first content (or end) has arrived.
pub struct Opened {
    /// The model answering (the last `Started` before the first content).
    pub source: Option<AnswerSource>,
    /// How many `Started` events came before the first content: each after the first is a fallback.
    pub attempts: u32,
    /// When the first content (or the end) arrived.
    pub first_at: Instant,
    /// The first content event, or the terminal event of an empty answer.
    pub first: ReplyEvent,
    /// The rest of the reply.
    pub rest: ReplyStream,
}

/// Why a reply stream stopped early on our side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// `[api].request_deadline_secs` passed.
    Deadline,
    /// The daemon is stopping and the grace passed.
    Shutdown,
}

/// Waits for the first content event of `reply`. `Err` is the failure before any content (the
/// response still has its status to give).
pub async fn open(mut reply: ReplyStream) -> Result<Opened, UserFacingError> {
    let mut source = None;
    let mut attempts = 0;
    while let Some(event) = reply.next().await {
        match event {
            ReplyEvent::Started(s) => {
                attempts += 1;
                source = Some(s);
            }
            // The one-time tier notice is for chat users; an API client sees the tier in headers.
            ReplyEvent::Notice(_) => {}
            ReplyEvent::Failed(failure) => return Err(failure),
            first @ (ReplyEvent::Delta(_)
            | ReplyEvent::Reasoning(_)
            | ReplyEvent::ToolCall(_)
            | ReplyEvent::Finished(_)) => {
                return Ok(Opened {
                    source,
                    attempts,
                    first_at: Instant::now(),
                    first,
                    rest: reply,
                })
            }
        }
    }
    Err(ended_early())
}

/// Why a reply did not open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotOpened {
    /// The router's failure.
    Failed(UserFacingError),
    /// Our own deadline or shutdown came first.
    Cut(Cut),
}

/// [`open`] within `deadline` and before `cut` fires.
pub async fn open_within(
    reply: ReplyStream,
    deadline: Instant,
    cut: &CancellationToken,
) -> Result<Opened, NotOpened> {
    tokio::select! {
        opened = open(reply) => opened.map_err(NotOpened::Failed),
        () = tokio::time::sleep_until(deadline) => Err(NotOpened::Cut(Cut::Deadline)),
        () = cut.cancelled() => Err(NotOpened::Cut(Cut::Shutdown)),
    }
}

/// The failure a [`Cut`] ends a reply with.
pub fn cut_failure(cut: Cut) -> UserFacingError {
    match cut {
        Cut::Deadline => UserFacingError::new(
            FailureKind::Unavailable,
            "the answer took longer than this server's request deadline (api.request_deadline_secs)",
        ),
        Cut::Shutdown => UserFacingError::new(
            FailureKind::ShuttingDown,
            "switchboard is restarting and could not finish this answer; please ask again",
        ),
    }
}

fn ended_early() -> UserFacingError {
    UserFacingError::new(
        FailureKind::Interrupted,
        "the answer ended unexpectedly; please ask again",
    )
}

/// The events after the first, ending in exactly one `Finished` or `Failed`: a stream that stops
/// without one, passes `deadline` or sees `cut` ends with a `Failed`. `Started` and `Notice` are
/// dropped (the answering model is already known).
pub fn guarded(
    opened_first: ReplyEvent,
    rest: ReplyStream,
    deadline: Instant,
    cut: CancellationToken,
) -> BoxStream<'static, ReplyEvent> {
    // The deadline's timer and the cut's waiter are made once and kept across events: made afresh for
    // every event, each wait would register and drop a timer.
    struct State {
        first: Option<ReplyEvent>,
        rest: ReplyStream,
        done: bool,
        deadline: Pin<Box<tokio::time::Sleep>>,
        cut: Pin<Box<WaitForCancellationFutureOwned>>,
    }
    let state = State {
        done: false,
        first: Some(opened_first),
        rest,
        deadline: Box::pin(tokio::time::sleep_until(deadline)),
        cut: Box::pin(cut.cancelled_owned()),
    };
    stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let event = match s.first.take() {
            Some(first) => first,
            None => loop {
                let next = tokio::select! {
                    biased;
                    next = s.rest.next() => next,
                    () = s.cut.as_mut() => Some(ReplyEvent::Failed(cut_failure(Cut::Shutdown))),
                    () = s.deadline.as_mut() => Some(ReplyEvent::Failed(cut_failure(Cut::Deadline))),
                };
                match next {
                    Some(ReplyEvent::Started(_) | ReplyEvent::Notice(_)) => {}
                    Some(event) => break event,
                    None => break ReplyEvent::Failed(ended_early()),
                }
            },
        };
        s.done = matches!(event, ReplyEvent::Finished(_) | ReplyEvent::Failed(_));
        Some((event, s))
    })
    .boxed()
}

/// A whole answer, gathered for a non-streamed response.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answer {
    /// The text.
    pub content: String,
    /// The reasoning text.
    pub thinking: String,
    /// Tool calls by index, assembled from their pieces.
    pub tool_calls: Vec<ToolCall>,
    /// How it ended well.
    pub completion: Completion,
}

impl Answer {
    /// Gathers `events` (a [`guarded`] stream) into an answer, or the failure that ended it.
    pub async fn gather(
        mut events: BoxStream<'static, ReplyEvent>,
    ) -> Result<Self, UserFacingError> {
        let mut answer = Self::default();
        let mut calls = ToolCalls::default();
        while let Some(event) = events.next().await {
            match event {
                ReplyEvent::Delta(t) => answer.content.push_str(&t),
                ReplyEvent::Reasoning(t) => answer.thinking.push_str(&t),
                ReplyEvent::ToolCall(d) => calls.push(&d),
                ReplyEvent::Finished(c) => {
                    answer.completion = c;
                    answer.tool_calls = calls.finish();
                    return Ok(answer);
                }
                ReplyEvent::Failed(f) => return Err(f),
                ReplyEvent::Started(_) | ReplyEvent::Notice(_) => {}
            }
        }
        Err(ended_early())
    }

    /// The finish reason a client sees: the provider's, else `tool_calls` when calls were made,
    /// else `stop`.
    pub fn finish_reason(&self) -> String {
        finish_reason(&self.completion, !self.tool_calls.is_empty())
    }
}

/// The provider's finish reason, else `tool_calls` when the answer made calls, else `stop`.
pub fn finish_reason(completion: &Completion, made_calls: bool) -> String {
    completion.finish_reason.clone().unwrap_or_else(|| {
        if made_calls {
            "tool_calls".into()
        } else {
            "stop".into()
        }
    })
}

/// Tool-call pieces put back together by index (OpenAI streams a call's arguments in pieces).
#[derive(Debug, Default)]
pub struct ToolCalls {
    calls: BTreeMap<u32, ToolCall>,
}

impl ToolCalls {
    /// Adds one piece.
    pub fn push(&mut self, delta: &crate::generation::ToolCallDelta) {
        let call = self.calls.entry(delta.index).or_insert_with(|| ToolCall {
            id: String::new(),
            name: String::new(),
            arguments: String::new(),
        });
        if let Some(id) = &delta.id {
            call.id.clone_from(id);
        }
        if let Some(name) = &delta.name {
            call.name.clone_from(name);
        }
        call.arguments.push_str(&delta.arguments);
    }

    /// Whether no piece arrived.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The calls in index order; a call without an id gets `call_<index>`.
    pub fn finish(&mut self) -> Vec<ToolCall> {
        std::mem::take(&mut self.calls)
            .into_iter()
            .map(|(index, mut call)| {
                if call.id.is_empty() {
                    call.id = format!("call_{index}");
                }
                call
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::TierName;
    use crate::generation::ToolCallDelta;

    fn source(model: &str) -> AnswerSource {
        AnswerSource {
            tier: TierName::free(),
            provider: "openrouter".into(),
            model: model.into(),
            key_fingerprint: None,
        }
    }

    fn reply(events: Vec<ReplyEvent>) -> ReplyStream {
        stream::iter(events).boxed()
    }

    #[tokio::test]
    async fn open_waits_for_content_and_keeps_the_last_started() {
        let opened = open(reply(vec![
            ReplyEvent::Started(source("a")),
            ReplyEvent::Notice("switching".into()),
            ReplyEvent::Started(source("b")),
            ReplyEvent::Delta("hi".into()),
            ReplyEvent::Finished(Completion::default()),
        ]))
        .await
        .unwrap();
        assert_eq!(opened.source.unwrap().model, "b");
        assert_eq!(opened.attempts, 2);
        assert_eq!(opened.first, ReplyEvent::Delta("hi".into()));
    }

    #[tokio::test]
    async fn a_failure_before_content_is_an_error_and_an_empty_stream_is_interrupted() {
        let failure = UserFacingError::new(FailureKind::RateLimited, "later");
        let got = open(reply(vec![
            ReplyEvent::Started(source("a")),
            ReplyEvent::Failed(failure.clone()),
        ]))
        .await;
        assert_eq!(got.err(), Some(failure));
        let got = open(reply(vec![])).await;
        assert_eq!(got.err().map(|f| f.kind), Some(FailureKind::Interrupted));
    }

    #[tokio::test(start_paused = true)]
    async fn guarded_ends_a_silent_stream_at_the_deadline_and_a_stream_without_end_as_interrupted()
    {
        let silent = stream::pending().boxed();
        let deadline = Instant::now() + Duration::from_secs(5);
        let events: Vec<_> = guarded(
            ReplyEvent::Delta("a".into()),
            silent,
            deadline,
            CancellationToken::new(),
        )
        .collect()
        .await;
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[1], ReplyEvent::Failed(f) if f.message.contains("deadline")));
        let events: Vec<_> = guarded(
            ReplyEvent::Delta("a".into()),
            reply(vec![ReplyEvent::Delta("b".into())]),
            deadline,
            CancellationToken::new(),
        )
        .collect()
        .await;
        assert!(matches!(&events[2], ReplyEvent::Failed(f) if f.kind == FailureKind::Interrupted));
    }

    #[tokio::test]
    async fn gather_assembles_tool_calls_from_pieces() {
        let piece = |id: Option<&str>, name: Option<&str>, args: &str| {
            ReplyEvent::ToolCall(ToolCallDelta {
                index: 0,
                id: id.map(str::to_owned),
                name: name.map(str::to_owned),
                arguments: args.into(),
            })
        };
        let events = reply(vec![
            piece(Some("c1"), Some("weather"), "{\"ci"),
            piece(None, None, "ty\": \"Oslo\"}"),
            ReplyEvent::Finished(Completion::default()),
        ]);
        let answer = Answer::gather(events).await.unwrap();
        assert_eq!(
            answer.tool_calls,
            vec![ToolCall {
                id: "c1".into(),
                name: "weather".into(),
                arguments: "{\"city\": \"Oslo\"}".into()
            }]
        );
        assert_eq!(answer.finish_reason(), "tool_calls");
    }
}
