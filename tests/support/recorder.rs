//! A router wrapper that keeps every request on its way to the real router, so a test can check what
//! the core asked (prompts, images) while the real router and simulators answer.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use switchboard::domain::ReplyStream;
use switchboard::router::{CompletionRequest, LlmRouter, ModelInfo, RouterStatus};

/// Keeps every request, then passes it to `inner`.
pub struct Recorder {
    pub inner: Arc<dyn LlmRouter>,
    pub seen: Mutex<Vec<CompletionRequest>>,
}

impl Recorder {
    /// A recorder in front of `inner`.
    pub fn new(inner: Arc<dyn LlmRouter>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            seen: Mutex::default(),
        })
    }
}

impl LlmRouter for Recorder {
    fn complete(&self, request: CompletionRequest) -> ReplyStream {
        self.seen.lock().unwrap().push(request.clone());
        self.inner.complete(request)
    }

    fn models(&self) -> Vec<ModelInfo> {
        self.inner.models()
    }

    fn status(&self) -> RouterStatus {
        self.inner.status()
    }
}
