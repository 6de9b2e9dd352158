//! The control surface both simulators share, written once: the request log, fault injection, the reply
//! shape, the endless-body tally, the base URL and shutdown. [`super::openrouter::SimOpenRouter`] and
//! [`super::ollama::SimOllama`] reach it through `Deref`, so `sim.push_fault(…)` reads the same on both.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::server::{lock, Book, Running};
use super::{EndlessStats, Fault, ReplyShape, SimRequest};
use crate::secrets::fingerprint_str;

/// What the request handlers share with the control surface: the book, the live reply shape and the
/// token that ends hanging and stalled answers.
pub(crate) struct Desk {
    /// The log, the "unexpected" list and the fault queues.
    pub book: Book,
    /// Reply pacing and length, changeable while the server runs.
    reply: Mutex<ReplyShape>,
    /// Cancelled by `shutdown` (or drop).
    pub cancel: CancellationToken,
}

impl Desk {
    /// A fresh desk answering with `reply`.
    pub fn new(reply: ReplyShape) -> Arc<Self> {
        Arc::new(Self {
            book: Book::default(),
            reply: Mutex::new(reply),
            cancel: CancellationToken::new(),
        })
    }

    /// The reply shape in force now.
    pub fn reply(&self) -> ReplyShape {
        lock(&self.reply).clone()
    }
}

/// A simulator's control surface: inspect what it saw, inject faults, reshape replies, stop it.
pub struct SimControl {
    desk: Arc<Desk>,
    running: Running,
    base_url: String,
}

impl SimControl {
    /// Serves `router` on `127.0.0.1:<free port>`; the base URL is the address followed by `api_prefix`.
    pub(crate) async fn serve(
        router: axum::Router,
        desk: Arc<Desk>,
        api_prefix: &str,
    ) -> std::io::Result<Self> {
        let running = Running::serve(router, desk.cancel.clone()).await?;
        let base_url = format!("http://{}{api_prefix}", running.addr);
        Ok(Self {
            desk,
            running,
            base_url,
        })
    }

    /// The API base URL clients take: `http://127.0.0.1:PORT/api/v1` for OpenRouter (what
    /// `[openrouter] base_url` takes), `http://127.0.0.1:PORT` without `/api` for Ollama.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<SimRequest> {
        lock(&self.desk.book.requests).clone()
    }

    /// Chat requests (any status) made with `key`.
    pub fn requests_for_key(&self, key: &str) -> usize {
        let fp = fingerprint_str(key);
        self.count_chats(|r| r.key_fingerprint.as_deref() == Some(fp.as_str()))
    }

    /// Chat requests (any status) in total.
    pub fn chat_requests(&self) -> usize {
        self.count_chats(|_| true)
    }

    /// Chat requests (any status) that `pick` accepts.
    pub(crate) fn count_chats(&self, pick: impl Fn(&SimRequest) -> bool) -> usize {
        lock(&self.desk.book.requests)
            .iter()
            .filter(|r| r.is_chat() && pick(r))
            .count()
    }

    /// What the endless bodies of [`super::Fault::Unterminated`] sent so far.
    pub fn endless(&self) -> EndlessStats {
        self.desk.book.endless.stats()
    }

    /// Requests no correct client would make (unknown route or key, unreadable body). Assert it empty.
    pub fn unexpected(&self) -> Vec<String> {
        lock(&self.desk.book.unexpected).clone()
    }

    /// Applies `fault` to every chat request until cleared with `None`.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.desk.book.set_fault(fault);
    }

    /// Queues a one-shot `fault` for the next chat request.
    pub fn push_fault(&self, fault: Fault) {
        self.desk.book.push_fault(fault);
    }

    /// Queues a one-shot `fault` for the next chat request made with `key`.
    pub fn push_key_fault(&self, key: &str, fault: Fault) {
        self.desk.book.push_key_fault(key, fault);
    }

    /// Changes reply pacing and length from now on.
    pub fn set_reply_shape(&self, reply: ReplyShape) {
        *lock(&self.desk.reply) = reply;
    }

    /// Stops the server: hanging and stalled answers end, the port closes.
    pub async fn shutdown(&self) {
        self.running.shutdown().await;
    }
}
