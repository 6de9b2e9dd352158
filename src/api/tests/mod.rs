//! The API's tests: byte-exact framing goldens and the chunking property ([`framing`]), and HTTP
//! behaviour against a fake router on 127.0.0.1 ([`http`]).

mod framing;
mod http;
mod overhead;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};

use crate::domain::{AnswerSource, Completion, ReplyEvent, ReplyStream, TierName, Usage};
use crate::generation::Capabilities;
use crate::router::{CompletionRequest, LlmRouter, ModelInfo, RouterStatus};

/// A router that replays scripted event lists (one per request, in order; the last repeats), can hold
/// a stream open after its events, and counts streams dropped before their end.
#[derive(Default)]
pub struct FakeRouter {
    scripts: Mutex<VecDeque<Vec<ReplyEvent>>>,
    /// After its events, the stream stays open (a slow upstream) instead of ending.
    pub hold_open: std::sync::atomic::AtomicBool,
    /// Streams dropped (the request cancelled).
    pub dropped: Arc<AtomicUsize>,
    /// Requests seen.
    pub seen: Mutex<Vec<CompletionRequest>>,
    /// Before its events, each stream waits this long as switchboard's own time (a queue)…
    pub queue_wait: std::time::Duration,
    /// …and then this long on a "provider" (counted by [`crate::providers::wait::waiting`]).
    pub upstream_wait: std::time::Duration,
}

/// Counts a drop.
struct DropFlag(Arc<AtomicUsize>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl FakeRouter {
    /// A router answering every request with `events`.
    pub fn answering(events: Vec<ReplyEvent>) -> Arc<Self> {
        let r = Self::default();
        r.scripts.lock().unwrap().push_back(events);
        Arc::new(r)
    }
}

/// The free model `m-free` on OpenRouter.
pub fn free_source() -> AnswerSource {
    AnswerSource {
        tier: TierName::free(),
        provider: "openrouter".into(),
        model: "m-free".into(),
        key_fingerprint: None,
    }
}

/// A finished answer with usage 3 + 2.
pub fn finished() -> ReplyEvent {
    ReplyEvent::Finished(Completion {
        source: Some(free_source()),
        usage: Usage {
            prompt_tokens: 3,
            completion_tokens: 2,
        },
        usage_estimated: false,
        finish_reason: Some("stop".into()),
    })
}

impl LlmRouter for FakeRouter {
    fn complete(&self, request: CompletionRequest) -> ReplyStream {
        self.seen.lock().unwrap().push(request);
        let events = {
            let mut scripts = self.scripts.lock().unwrap();
            if scripts.len() > 1 {
                scripts.pop_front().unwrap()
            } else {
                scripts.front().cloned().unwrap_or_default()
            }
        };
        let (queue, upstream) = (self.queue_wait, self.upstream_wait);
        let waits = if queue.is_zero() && upstream.is_zero() {
            stream::empty().boxed()
        } else {
            stream::once(async move {
                tokio::time::sleep(queue).await;
                crate::providers::wait::waiting(tokio::time::sleep(upstream)).await;
            })
            .filter_map(|()| std::future::ready(None::<ReplyEvent>))
            .boxed()
        };
        let flag = DropFlag(self.dropped.clone());
        let hold = self.hold_open.load(Ordering::SeqCst);
        let tail = if hold {
            stream::pending().boxed()
        } else {
            stream::empty().boxed()
        };
        waits
            .chain(stream::iter(events))
            .chain(tail)
            .map(move |e| {
                let _ = &flag;
                e
            })
            .boxed()
    }

    fn models(&self) -> Vec<ModelInfo> {
        let caps = Capabilities {
            completion: true,
            tools: true,
            ..Capabilities::default()
        };
        vec![
            ModelInfo {
                name: "m-free".into(),
                tier: TierName::free(),
                provider: "openrouter".into(),
                context_window: 131_072,
                capabilities: caps,
            },
            ModelInfo {
                name: "vendor/m-paid-70b".into(),
                tier: TierName::paid(),
                provider: "ollama-cloud".into(),
                context_window: 32_768,
                capabilities: caps,
            },
        ]
    }

    fn status(&self) -> RouterStatus {
        RouterStatus::default()
    }
}
