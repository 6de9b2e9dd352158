//! Rendering one reply stream into Telegram messages: "typing" until the first text, then one message
//! edited as deltas arrive (paced per chat, coalescing while it waits), rolling over to new messages at
//! stable split points, and a final edit with the complete text. Flood control (`retry_after`) is obeyed
//! exactly; `MessageNotModified` is success; HTML Telegram rejects is resent as plain text.

use std::borrow::Cow;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use teloxide::types::{ChatId, MessageId};
use tokio::time::{sleep_until, Instant};

use super::api::{Api, ApiFailure};
use super::format::{escape_markdown, markdown_plain, telegram_chunks, Chunk};
use crate::domain::{ReplyEvent, ReplyStream};
use crate::platforms::render::fences_balanced;

/// "typing" shows for about 5 s; repeating it every 4 s keeps it on without gaps.
pub const TYPING_REPEAT: Duration = Duration::from_secs(4);

/// A failed send or edit (network, server) is retried this many times, with the backoff doubling from
/// [`FIRST_BACKOFF`], before the reply is abandoned (about half a minute in all).
pub const MAX_SEND_ATTEMPTS: u32 = 5;
/// The first backoff after a failed send or edit.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Shown when the answer stream ended without a proper end (a bug on our side).
const ENDED_UNEXPECTEDLY: &str =
    "Something went wrong on my side and the answer stopped. Please try again.";
/// Shown for a finished answer with no text at all (Telegram refuses empty messages).
const EMPTY_ANSWER: &str = "(The model returned an empty answer.)";

/// How one reply is shown.
#[derive(Clone, Copy, Debug)]
pub struct ReplySettings {
    /// Edit a message as text arrives; off sends the complete answer once.
    pub streaming: bool,
    /// Minimum time between two updates of this chat's messages.
    pub interval: Duration,
}

/// Per-chat send slots: when the next edit may go (pacing) and until when Telegram told us to wait
/// (`retry_after`). Shared by every reply in the process.
#[derive(Default)]
pub struct Pacer {
    slots: Mutex<HashMap<i64, Slot>>,
}

#[derive(Clone, Copy)]
struct Slot {
    next_edit: Instant,
    blocked_until: Instant,
}

/// Above this many chats the pacer forgets slots that are already free, so the map stays small.
const PACER_SWEEP_AT: usize = 4096;

impl Pacer {
    /// When the next update of `chat`'s messages may be sent.
    pub fn ready_at(&self, chat: i64) -> Instant {
        let now = Instant::now();
        self.lock()
            .get(&chat)
            .map_or(now, |s| s.next_edit.max(s.blocked_until))
    }

    /// Until when Telegram asked us not to write to `chat` (any request, "typing" included).
    pub fn blocked_until(&self, chat: i64) -> Instant {
        let now = Instant::now();
        self.lock().get(&chat).map_or(now, |s| s.blocked_until)
    }

    /// Takes `chat`'s slot for one request (a send or an edit) if it is free now, and then holds the
    /// next one back by `interval`; false if the slot is not free. Checking and taking happen under
    /// one lock, so two replies in one chat never both take the same slot.
    pub fn take(&self, chat: i64, interval: Duration) -> bool {
        let now = Instant::now();
        let mut taken = false;
        self.update(chat, |s| {
            if s.next_edit.max(s.blocked_until) <= now {
                s.next_edit = now + interval;
                taken = true;
            }
        });
        taken
    }

    /// Charges a request to `chat` that went without a slot (a resend right after a rejected one):
    /// the next slot moves back by `interval`.
    pub fn spent(&self, chat: i64, interval: Duration) {
        let now = Instant::now();
        self.update(chat, |s| s.next_edit = s.next_edit.max(now) + interval);
    }

    /// Records flood control on `chat`: nothing goes to it for `wait`.
    pub fn block(&self, chat: i64, wait: Duration) {
        let now = Instant::now();
        self.update(chat, |s| s.blocked_until = s.blocked_until.max(now + wait));
    }

    fn update(&self, chat: i64, f: impl FnOnce(&mut Slot)) {
        let now = Instant::now();
        let mut slots = self.lock();
        if slots.len() >= PACER_SWEEP_AT {
            slots.retain(|_, s| s.next_edit > now || s.blocked_until > now);
        }
        let slot = slots.entry(chat).or_insert(Slot {
            next_edit: now,
            blocked_until: now,
        });
        f(slot);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One message of the reply as Telegram shows it now.
struct Sent {
    id: MessageId,
    /// The exact text last set (HTML or plain), to skip edits that change nothing.
    shown: String,
    /// Telegram rejected this message's HTML once: it stays plain text.
    plain: bool,
}

/// One reply being rendered into a chat.
pub struct Reply {
    api: Api,
    pacer: Arc<Pacer>,
    chat: ChatId,
    reply_to: Option<MessageId>,
    settings: ReplySettings,
    notices: Vec<String>,
    answer: String,
    failure: Option<String>,
    finished: bool,
    dirty: bool,
    sent: Vec<Sent>,
}

impl Reply {
    /// A reply into `chat`; the first message replies to `reply_to` if given (groups).
    pub fn new(
        api: Api,
        pacer: Arc<Pacer>,
        chat: ChatId,
        reply_to: Option<MessageId>,
        settings: ReplySettings,
    ) -> Self {
        Self {
            api,
            pacer,
            chat,
            reply_to,
            settings,
            notices: Vec::new(),
            answer: String::new(),
            failure: None,
            finished: false,
            dirty: false,
            sent: Vec::new(),
        }
    }

    /// Renders `stream` until it ends and its final text is shown (or sending failed for good).
    pub async fn run(mut self, stream: ReplyStream) {
        let mut stream = AssertUnwindSafe(stream).catch_unwind();
        let mut chat = self.chat.0;
        let mut typing_at = Instant::now();
        let mut attempts = 0u32;
        let far = || Instant::now() + Duration::from_secs(86_400);
        loop {
            if self.finished && !self.dirty {
                return;
            }
            let want_flush = self.dirty && (self.settings.streaming || self.finished);
            let flush_at = if want_flush {
                self.pacer.ready_at(chat)
            } else {
                far()
            };
            // Until the first message is really sent (it may wait on the pacer or flood control after
            // the text exists), "typing" is the only sign the bot is on it.
            let want_typing = self.sent.is_empty();
            let typing_due = if want_typing {
                typing_at.max(self.pacer.blocked_until(chat))
            } else {
                far()
            };
            tokio::select! {
                biased;
                event = stream.next(), if !self.finished => self.on_event(event),
                () = sleep_until(flush_at), if want_flush => match self.flush().await {
                    Ok(done) => {
                        attempts = 0;
                        self.dirty = !done;
                    }
                    Err(ApiFailure::Migrated(to)) => {
                        tracing::info!(from = chat, to, "the group became a supergroup; answering there");
                        self.chat = ChatId(to);
                        chat = to;
                        self.reply_to = None; // the question's id belongs to the old chat
                        self.sent.clear(); // so are any messages already sent: start afresh there
                    }
                    Err(ApiFailure::RetryAfter(wait)) => {
                        tracing::info!(chat, wait_ms = wait.as_millis() as u64, "telegram flood control; edits coalesce until then");
                        self.pacer.block(chat, wait);
                    }
                    Err(e) if e.is_transient() && attempts + 1 < MAX_SEND_ATTEMPTS => {
                        let backoff = FIRST_BACKOFF * 2u32.pow(attempts);
                        attempts += 1;
                        tracing::warn!(chat, error = %e, attempt = attempts, "sending a reply failed; retrying");
                        self.pacer.block(chat, backoff);
                    }
                    Err(e) => {
                        tracing::warn!(chat, error = %e, "giving up on a reply");
                        return;
                    }
                },
                () = sleep_until(typing_due), if want_typing => {
                    match self.api.typing(self.chat).await {
                        Err(ApiFailure::RetryAfter(wait)) => self.pacer.block(chat, wait),
                        Err(e) => tracing::debug!(chat, error = %e, "typing indicator failed"),
                        Ok(()) => {}
                    }
                    typing_at = Instant::now() + TYPING_REPEAT;
                }
            }
        }
    }

    fn on_event(&mut self, event: Option<std::thread::Result<ReplyEvent>>) {
        match event {
            Some(Ok(ReplyEvent::Started(_))) => {}
            Some(Ok(ReplyEvent::Notice(notice))) => {
                self.notices.push(notice);
                self.dirty = true;
            }
            Some(Ok(ReplyEvent::Delta(delta))) => {
                if !delta.is_empty() {
                    self.answer.push_str(&delta);
                    self.dirty = true;
                }
            }
            Some(Ok(ReplyEvent::Finished(_))) => {
                self.finished = true;
                self.dirty = true;
            }
            Some(Ok(ReplyEvent::Failed(error))) => {
                self.failure = Some(error.message);
                self.finished = true;
                self.dirty = true;
            }
            Some(Err(_panic)) => {
                tracing::error!(chat = self.chat.0, "the reply stream panicked");
                self.failure = Some(ENDED_UNEXPECTEDLY.to_owned());
                self.finished = true;
                self.dirty = true;
            }
            None => {
                tracing::error!(
                    chat = self.chat.0,
                    "the reply stream ended without finishing"
                );
                self.failure = Some(ENDED_UNEXPECTEDLY.to_owned());
                self.finished = true;
                self.dirty = true;
            }
        }
    }

    /// The whole reply as Markdown: notices in italics, the answer, a failure note.
    fn compose(&self) -> String {
        let mut md = String::new();
        for notice in &self.notices {
            md.push('_');
            md.push_str(&escape_markdown(notice));
            md.push_str("_\n\n");
        }
        md.push_str(&self.answer);
        if let Some(failure) = &self.failure {
            if !fences_balanced(&self.answer) {
                md.push_str("\n```");
            }
            if !md.trim().is_empty() {
                md.push_str("\n\n");
            }
            md.push_str("⚠️ ");
            md.push_str(&escape_markdown(failure));
        } else if self.finished && md.trim().is_empty() {
            md.push_str(EMPTY_ANSWER);
        }
        md
    }

    /// Brings Telegram up to date with the reply: edits messages whose text changed, sends new ones,
    /// in order. Each request takes its own pacer slot: when one flush needs several (an edit that
    /// closes a message and the new message after it), or another reply in the chat took the slot,
    /// it stops and returns `Ok(false)`; the rest goes when the next slot is free.
    async fn flush(&mut self) -> Result<bool, ApiFailure> {
        let markdown = self.compose();
        let chunks = telegram_chunks(&markdown);
        for (i, chunk) in chunks.iter().enumerate() {
            if chunk.markdown.trim().is_empty() {
                continue; // Telegram refuses blank messages; only a trailing remnant can be blank.
            }
            if !self.needs_update(i, chunk) {
                continue;
            }
            if !self.pacer.take(self.chat.0, self.settings.interval) {
                return Ok(false);
            }
            match self.put_chunk(i, chunk).await {
                Err(ApiFailure::MessageGone) => {
                    // Someone deleted this message mid-stream: the reply goes on from here in new
                    // messages (a send cannot hit a missing message, so this runs once).
                    tracing::info!(
                        chat = self.chat.0,
                        "a message of the reply was deleted; continuing in a new one"
                    );
                    self.sent.truncate(i);
                    self.pacer.spent(self.chat.0, self.settings.interval);
                    self.put_chunk(i, chunk).await?;
                }
                result => result?,
            }
        }
        Ok(true)
    }

    /// What message `i` should show for `chunk`: its HTML, or plain text once Telegram rejected it.
    fn target<'c>(&self, i: usize, chunk: &'c Chunk) -> (Cow<'c, str>, bool) {
        let forced_plain = self.sent.get(i).is_some_and(|s| s.plain);
        match &chunk.html {
            Some(h) if !forced_plain && !h.trim().is_empty() => (Cow::Borrowed(h.as_str()), true),
            _ => (Cow::Owned(markdown_plain(&chunk.markdown)), false),
        }
    }

    /// Whether message `i` does not show `chunk` yet (or does not exist).
    fn needs_update(&self, i: usize, chunk: &Chunk) -> bool {
        let (text, _) = self.target(i, chunk);
        self.sent.get(i).is_none_or(|s| s.shown != text)
    }

    /// Shows `chunk` as message `i`: HTML unless Telegram rejects it, then plain text.
    async fn put_chunk(&mut self, i: usize, chunk: &Chunk) -> Result<(), ApiFailure> {
        let (text, html) = self.target(i, chunk);
        match self.put(i, &text, html).await {
            Err(ApiFailure::CantParseEntities | ApiFailure::TooLong) if html => {
                tracing::warn!(
                    chat = self.chat.0,
                    "Telegram rejected the formatting; sending plain text"
                );
                self.pacer.spent(self.chat.0, self.settings.interval);
                self.put(i, &markdown_plain(&chunk.markdown), false).await?;
                if let Some(s) = self.sent.get_mut(i) {
                    s.plain = true;
                }
                Ok(())
            }
            result => result,
        }
    }

    /// Sets message `i` to `text`: an edit if it exists, else a new message.
    async fn put(&mut self, i: usize, text: &str, html: bool) -> Result<(), ApiFailure> {
        if let Some(sent) = self.sent.get_mut(i) {
            match self.api.edit_text(self.chat, sent.id, text, html).await {
                Ok(()) | Err(ApiFailure::NotModified) => {
                    sent.shown = text.to_owned();
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else {
            let reply_to = if i == 0 { self.reply_to } else { None };
            self.api
                .send_text(self.chat, text, html, reply_to)
                .await
                .map(|id| {
                    self.sent.push(Sent {
                        id,
                        shown: text.to_owned(),
                        plain: !html,
                    });
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOT: Duration = Duration::from_millis(3500);

    #[tokio::test(start_paused = true)]
    async fn one_request_per_slot_and_charges_add_up() {
        let pacer = Pacer::default();
        let t0 = Instant::now();
        assert!(pacer.take(-1, SLOT));
        // The slot is gone until the interval has passed, for every reply in the chat.
        assert!(!pacer.take(-1, SLOT));
        assert_eq!(pacer.ready_at(-1), t0 + SLOT);
        assert!(pacer.take(-2, SLOT), "chats are paced apart");
        // A resend without a slot pushes the next one back by another interval.
        pacer.spent(-1, SLOT);
        assert_eq!(pacer.ready_at(-1), t0 + 2 * SLOT);
        tokio::time::advance(2 * SLOT).await;
        assert!(pacer.take(-1, SLOT));
        // Idle time is not banked: after a long pause the chat still gets one request per slot.
        tokio::time::advance(10 * SLOT).await;
        assert!(pacer.take(-1, SLOT) && !pacer.take(-1, SLOT));
        // Flood control holds the slot exactly as long as Telegram said.
        tokio::time::advance(SLOT).await;
        pacer.block(-1, Duration::from_secs(5));
        assert!(!pacer.take(-1, SLOT));
        assert_eq!(pacer.ready_at(-1), Instant::now() + Duration::from_secs(5));
    }
}
