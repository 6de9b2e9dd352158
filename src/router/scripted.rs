//! An in-memory router for the core's tests and benchmarks: it answers at once with a scripted reply
//! (by default the prompt echoed back), and can be told to fail, stall or panic for a given prompt.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use super::{CompletionRequest, LlmRouter, ModelInfo, RouterStatus};
use crate::domain::{
    AnswerSource, Completion, FailureKind, ReplyEvent, ReplyStream, TierName, Usage,
    UserFacingError,
};

/// What the scripted router does with a request.
#[derive(Clone, Debug)]
pub enum Script {
    /// Answer `echo: <prompt>` in one delta.
    Echo,
    /// Answer with these deltas.
    Deltas(Vec<String>),
    /// Answer after sleeping (tokio time) with `echo: <prompt>`.
    Slow(Duration),
    /// Send these deltas, then fail mid-stream (interrupted).
    CutAfter(Vec<String>),
    /// Fail before any delta.
    Unavailable,
    /// Panic while producing the reply.
    Panic,
}

/// A router whose answers are scripted; records every request it saw.
#[derive(Default)]
pub struct ScriptedRouter {
    rules: Mutex<Vec<(String, Script)>>,
    seen: Mutex<Vec<CompletionRequest>>,
    count: AtomicU64,
    /// Benchmarks skip recording: it costs a clone per request and grows without bound.
    unrecorded: bool,
    /// Whether answers are reported as coming from the paid tier.
    paid: bool,
}

impl ScriptedRouter {
    /// A router that echoes every prompt.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A router that echoes every prompt and never records requests (for benchmarks).
    pub fn bench() -> Arc<Self> {
        Arc::new(Self {
            unrecorded: true,
            ..Self::default()
        })
    }

    /// A router that echoes every prompt and reports answers as coming from the paid tier.
    pub fn paid() -> Arc<Self> {
        Arc::new(Self {
            paid: true,
            ..Self::default()
        })
    }

    /// Use `script` for prompts containing `needle` (first matching rule wins; default is `Echo`).
    pub fn on(&self, needle: &str, script: Script) {
        self.rules.lock().unwrap().push((needle.to_owned(), script));
    }

    /// The requests seen so far.
    pub fn requests(&self) -> Vec<CompletionRequest> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests were made.
    pub fn request_count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn source(&self) -> AnswerSource {
        AnswerSource {
            tier: if self.paid {
                TierName::paid()
            } else {
                TierName::free()
            },
            provider: "scripted".into(),
            model: "echo-1".into(),
            key_fingerprint: None,
        }
    }
}

impl LlmRouter for ScriptedRouter {
    fn complete(&self, request: CompletionRequest) -> ReplyStream {
        self.count.fetch_add(1, Ordering::Relaxed);
        let prompt = request.prompt.content.clone();
        let script = {
            let rules = self.rules.lock().unwrap();
            rules
                .iter()
                .find(|(needle, _)| prompt.contains(needle.as_str()))
                .map(|(_, s)| s.clone())
        }
        .unwrap_or(Script::Echo);
        if !self.unrecorded {
            self.seen.lock().unwrap().push(request);
        }
        let source = self.source();
        let finished = |text_len: usize| {
            ReplyEvent::Finished(Completion {
                source: Some(source.clone()),
                usage: Usage {
                    prompt_tokens: 10,
                    completion_tokens: text_len as u64,
                },
                ..Completion::default()
            })
        };
        match script {
            Script::Echo => {
                let text = format!("echo: {prompt}");
                let len = text.len();
                stream::iter(vec![
                    ReplyEvent::Started(source.clone()),
                    ReplyEvent::Delta(text),
                    finished(len),
                ])
                .boxed()
            }
            Script::Deltas(deltas) => {
                let len = deltas.iter().map(String::len).sum();
                let mut events = vec![ReplyEvent::Started(source.clone())];
                events.extend(deltas.into_iter().map(ReplyEvent::Delta));
                events.push(finished(len));
                stream::iter(events).boxed()
            }
            Script::Slow(delay) => {
                let text = format!("echo: {prompt}");
                let started = ReplyEvent::Started(source.clone());
                let done = finished(text.len());
                stream::once(async move { started })
                    .chain(stream::once(async move {
                        tokio::time::sleep(delay).await;
                        ReplyEvent::Delta(text)
                    }))
                    .chain(stream::once(async move { done }))
                    .boxed()
            }
            Script::CutAfter(deltas) => {
                let mut events = vec![ReplyEvent::Started(source)];
                events.extend(deltas.into_iter().map(ReplyEvent::Delta));
                events.push(ReplyEvent::Failed(UserFacingError::new(
                    FailureKind::Interrupted,
                    "The model stopped responding; the answer above is incomplete.",
                )));
                stream::iter(events).boxed()
            }
            Script::Unavailable => stream::iter(vec![ReplyEvent::Failed(UserFacingError::new(
                FailureKind::Unavailable,
                "No model is available right now. Please try again in a few minutes.",
            ))])
            .boxed(),
            Script::Panic => stream::once(async { panic!("scripted panic for a test") }).boxed(),
        }
    }

    fn models(&self) -> Vec<ModelInfo> {
        vec![ModelInfo {
            name: "echo-1".into(),
            tier: TierName::free(),
            provider: "scripted".into(),
            context_window: 8192,
            capabilities: crate::generation::Capabilities {
                completion: true,
                ..Default::default()
            },
        }]
    }

    fn status(&self) -> RouterStatus {
        RouterStatus::default()
    }
}
