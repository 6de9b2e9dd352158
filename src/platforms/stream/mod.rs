//! The one streaming renderer every chat platform uses: "typing" until the first text, then one message
//! edited as deltas arrive (paced per chat, coalescing while it waits), rolling over to new messages at
//! stable split points, capped at a number of messages per reply, and a final edit with the complete
//! text. Replies of one chat start in the order their messages arrived; flood control (`retry_after`)
//! is obeyed exactly; text the platform rejects is resent as plain text, and an answer that shows
//! nothing becomes a short note — never silence. The platform's calls, limits and formatting are
//! behind [`Surface`].

pub mod pacer;
pub mod surface;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::CatchUnwind;
use futures_util::StreamExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{sleep_until, Instant};

pub use self::pacer::{Order, Pacer, Ticket};
pub use self::surface::{Chunk, Draft, Post, Surface, WriteError};
pub use crate::core::Delivery;
use crate::core::JournalTicket;
use crate::domain::{ReplyEvent, ReplyStream};

/// A failed send or edit (network, server) is retried this many times, with the backoff doubling from
/// [`FIRST_BACKOFF`], before the reply is abandoned (about half a minute in all).
pub const MAX_SEND_ATTEMPTS: u32 = 5;
/// The first backoff after a failed send or edit.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// A "typing" call is given up after this long. It is only a hint: teloxide sleeps 10 s after a 5xx
/// before returning, and nothing should wait on that. Typing runs detached and holds no write slot,
/// so even this bound never delays text.
pub const TYPING_TIMEOUT: Duration = Duration::from_secs(3);

/// Shown when the answer stream ended without a proper end (a bug on our side).
const ENDED_UNEXPECTEDLY: &str =
    "Something went wrong on my side and the answer stopped. Please try again.";

/// A write slot the adapter granted ([`Surface::write_slot`]; no permit where it needs none).
struct Granted(Option<OwnedSemaphorePermit>);

/// How one reply is shown.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Edit a message as text arrives; off sends the complete answer once.
    pub streaming: bool,
    /// Minimum time between two requests to this chat.
    pub interval: Duration,
    /// The most messages one reply may produce; the last one then ends with a note that the answer
    /// was cut (see `telegram.max_reply_messages`).
    pub max_messages: usize,
}

/// What every reply of one adapter shares: the chats' pacing slots and reply order.
#[derive(Default)]
pub struct Stage {
    /// Per-chat pacing and flood control.
    pub pacer: Pacer,
    /// Per-chat order of replies.
    pub order: Order,
}

/// One message of the reply as the platform shows it now.
struct Sent<Id> {
    id: Id,
    /// The exact text last set (formatted or plain), to skip edits that change nothing.
    shown: String,
    /// The platform rejected this message's formatting once: it stays plain text.
    plain: bool,
}

/// The reply stream, with panics caught so a bug upstream still ends in a note.
type Events = CatchUnwind<AssertUnwindSafe<ReplyStream>>;

/// One reply being rendered into a chat.
pub struct Reply<S: Surface> {
    surface: Arc<S>,
    stage: Arc<Stage>,
    ticket: Ticket,
    settings: Settings,
    draft: Draft,
    /// Whether the platform is behind the draft.
    dirty: bool,
    /// The reply reached `max_messages` and was cut.
    capped: bool,
    /// Whether the first message still quotes the question (dropped when that is refused).
    reference: bool,
    sent: Vec<Sent<S::Id>>,
    /// The question's reply-journal record: each new message's id is recorded there (not its edits).
    journal: Option<JournalTicket>,
}

impl<S: Surface> Reply<S> {
    /// A reply through `surface`, in the place `ticket` holds in its chat; the first message quotes
    /// the question when `reference` is set (groups).
    pub fn new(
        surface: Arc<S>,
        stage: Arc<Stage>,
        ticket: Ticket,
        settings: Settings,
        reference: bool,
    ) -> Self {
        Self {
            surface,
            stage,
            ticket,
            settings,
            draft: Draft::default(),
            dirty: false,
            capped: false,
            reference,
            sent: Vec::new(),
            journal: None,
        }
    }

    /// Records every message this reply posts in `ticket`'s journal record, so start-up recovery can
    /// find a reply a crash cut short.
    #[must_use]
    pub fn journaled(mut self, ticket: Option<JournalTicket>) -> Self {
        self.journal = ticket;
        self
    }

    /// Renders `stream` until it ends and its final text is shown, or sending failed for good (then
    /// logged at WARN and reported as [`Delivery::Undelivered`]).
    pub async fn run(mut self, stream: ReplyStream) -> Delivery {
        let mut events: Option<Events> = Some(AssertUnwindSafe(stream).catch_unwind());
        let mut attempts = 0u32;
        let far = || Instant::now() + Duration::from_secs(86_400);
        // "typing" is due at once but comes after ready text in the `biased` select below: an answer
        // that is already there is sent without a typing call first (one write less per reply).
        let mut typing_at = Instant::now();
        // The flush time has come; the write slot is awaited in the select below, so deltas that arrive
        // meanwhile still join this write instead of needing another edit after it.
        let mut due = false;
        loop {
            if self.draft.finished {
                events = None; // A capped reply stops the model too.
                if !self.dirty {
                    return self.verdict();
                }
            }
            let chat = self.surface.chat();
            let want_flush = self.dirty && (self.settings.streaming || self.draft.finished);
            let my_turn = !self.sent.is_empty() || self.ticket.is_due();
            let flush_at = if want_flush && my_turn {
                self.stage.pacer.ready_at(chat)
            } else {
                far()
            };
            // Until the first message is really sent (it may wait for its turn, the pacer or flood
            // control after the text exists), "typing" is the only sign the bot is on it.
            let want_typing = self.sent.is_empty();
            let typing_due = typing_at.max(self.stage.pacer.blocked_until(chat));
            tokio::select! {
                biased;
                event = async { events.as_mut().expect("guarded").next().await }, if events.is_some() => {
                    self.on_event(event);
                }
                () = self.ticket.due(), if want_flush && !my_turn => {}
                () = sleep_until(flush_at), if want_flush && my_turn && !due => due = true,
                permit = self.surface.write_slot(), if want_flush && my_turn && due => {
                    due = false;
                    match self.flush(Some(Granted(permit))).await {
                        Ok(done) => {
                            attempts = 0;
                            self.dirty = !done;
                        }
                        Err(e) => {
                            if !self.on_write_error(e, &mut attempts) {
                                return Delivery::Undelivered;
                            }
                        }
                    }
                }
                () = sleep_until(typing_due), if want_typing => {
                    self.spawn_typing();
                    typing_at = Instant::now() + self.surface.typing_repeat();
                }
            }
        }
    }

    /// What the finished reply means for the conversation's history.
    fn verdict(&self) -> Delivery {
        if self.capped {
            Delivery::Undelivered
        } else {
            Delivery::Delivered
        }
    }

    /// Acts on a failed flush; false when the reply is given up.
    fn on_write_error(&mut self, error: WriteError, attempts: &mut u32) -> bool {
        let chat = self.surface.chat();
        match error {
            WriteError::Moved => {
                // The question and any messages sent belong to the old chat: start afresh.
                self.reference = false;
                self.sent.clear();
            }
            WriteError::RetryAfter(wait) => {
                tracing::info!(
                    chat,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "flood control; edits coalesce until then"
                );
                self.stage.pacer.block(chat, wait);
            }
            WriteError::Transient(e) if *attempts + 1 < MAX_SEND_ATTEMPTS => {
                let backoff = FIRST_BACKOFF * 2u32.pow(*attempts);
                *attempts += 1;
                tracing::warn!(chat, error = %e, attempt = *attempts, "sending a reply failed; retrying");
                self.stage.pacer.block(chat, backoff);
            }
            e => {
                tracing::warn!(
                    chat,
                    error = %e,
                    messages_shown = self.sent.len(),
                    "giving up on a reply: the user did not get its final text (recorded as undelivered)"
                );
                return false;
            }
        }
        true
    }

    /// Starts one "typing" call, detached: it never holds a write slot and never delays text.
    fn spawn_typing(&self) {
        let surface = self.surface.clone();
        let stage = self.stage.clone();
        tokio::spawn(async move {
            let chat = surface.chat();
            match tokio::time::timeout(TYPING_TIMEOUT, surface.typing()).await {
                Ok(Ok(())) => {}
                Ok(Err(WriteError::RetryAfter(wait))) => stage.pacer.block(chat, wait),
                Ok(Err(e)) => tracing::debug!(chat, error = %e, "typing indicator failed"),
                Err(_) => tracing::debug!(chat, "typing indicator timed out"),
            }
        });
    }

    fn on_event(&mut self, event: Option<std::thread::Result<ReplyEvent>>) {
        let chat = self.surface.chat();
        match event {
            // A chat sends no tools, and reasoning is not shown.
            Some(Ok(
                ReplyEvent::Started(_) | ReplyEvent::Reasoning(_) | ReplyEvent::ToolCall(_),
            )) => return,
            Some(Ok(ReplyEvent::Notice(notice))) => self.draft.notices.push(notice),
            Some(Ok(ReplyEvent::Delta(delta))) => {
                if delta.is_empty() {
                    return;
                }
                self.draft.answer.push_str(&delta);
            }
            Some(Ok(ReplyEvent::Finished(_))) => self.draft.finished = true,
            Some(Ok(ReplyEvent::Failed(error))) => {
                self.draft.failure = Some(error.message);
                self.draft.finished = true;
            }
            Some(Err(_panic)) => {
                tracing::error!(chat, "the reply stream panicked");
                self.draft.failure = Some(ENDED_UNEXPECTEDLY.to_owned());
                self.draft.finished = true;
            }
            None => {
                tracing::error!(chat, "the reply stream ended without finishing");
                self.draft.failure = Some(ENDED_UNEXPECTEDLY.to_owned());
                self.draft.finished = true;
            }
        }
        self.dirty = true;
    }

    /// Brings the platform up to date with the reply: edits messages whose text changed, sends new
    /// ones, in order. Each request takes its own pacing slot: when one flush needs several (an edit
    /// that closes a message and the new message after it), or another reply in the chat took the
    /// slot, it stops and returns `Ok(false)`; the rest goes when the next slot is free.
    async fn flush(&mut self, mut held: Option<Granted>) -> Result<bool, WriteError> {
        let chunks = self.chunks();
        for (i, chunk) in chunks.iter().enumerate() {
            if Self::blank(chunk) {
                // Platforms refuse blank messages; only a trailing remnant (or the start of a streamed
                // answer, like an opened code block) can be blank.
                continue;
            }
            if !self.needs_update(i, chunk) {
                continue;
            }
            let Some(_permit) = self.slot(held.take()).await else {
                return Ok(false);
            };
            match self.put_chunk(i, chunk).await {
                Err(WriteError::Gone) => {
                    // Someone deleted this message mid-stream: the reply goes on from here in new
                    // messages (a send cannot hit a missing message, so this runs once).
                    tracing::info!(
                        chat = self.surface.chat(),
                        "a message of the reply was deleted; continuing in a new one"
                    );
                    self.sent.truncate(i);
                    self.spent();
                    self.put_chunk(i, chunk).await?;
                }
                result => result?,
            }
            self.ticket.release();
        }
        Ok(true)
    }

    /// The reply cut into messages; past `max_messages` the answer is shortened so that it fits with
    /// a note saying it was cut, and the reply ends there.
    fn chunks(&mut self) -> Vec<Chunk> {
        let chunks = self.surface.chunks(&self.surface.compose(&self.draft));
        let cap = self.settings.max_messages.max(1);
        if chunks.len() <= cap || self.capped {
            return chunks;
        }
        tracing::info!(
            chat = self.surface.chat(),
            cap,
            "a reply reached the message cap; cutting it there"
        );
        self.capped = true;
        self.draft.finished = true;
        self.draft.failure = Some(format!(
            "The answer was cut here: it reached the limit of {cap} messages per reply."
        ));
        // The longest prefix of the answer that fits in `cap` messages with the note.
        let answer = std::mem::take(&mut self.draft.answer);
        let ends: Vec<usize> = answer
            .char_indices()
            .map(|(i, _)| i)
            .chain([answer.len()])
            .collect();
        let (mut lo, mut hi) = (0, ends.len() - 1);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            answer[..ends[mid]].clone_into(&mut self.draft.answer);
            if self
                .surface
                .chunks(&self.surface.compose(&self.draft))
                .len()
                <= cap
            {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        answer[..ends[lo]].clone_into(&mut self.draft.answer);
        self.surface.chunks(&self.surface.compose(&self.draft))
    }

    /// Whether `chunk` would show nothing.
    fn blank(chunk: &Chunk) -> bool {
        !chunk.visible || chunk.markdown.trim().is_empty()
    }

    /// Waits for a write slot, then takes the chat's pacing slot right before the request goes (so
    /// two requests to one chat are never closer than the interval, however long the wait for a
    /// write slot was). `None`: another reply of the chat took the pacing slot meanwhile.
    async fn slot(&self, held: Option<Granted>) -> Option<Granted> {
        let permit = match held {
            Some(Granted(permit)) => permit,
            None => self.surface.write_slot().await,
        };
        self.stage
            .pacer
            .take(self.surface.chat(), self.settings.interval)
            .then_some(Granted(permit))
    }

    /// Charges a request that went without a slot of its own (a resend right after a refused one).
    fn spent(&self) {
        self.stage
            .pacer
            .spent(self.surface.chat(), self.settings.interval);
    }

    /// What message `i` should show for `chunk`: the formatted text, or plain text once the platform
    /// rejected it.
    fn target(&self, i: usize, chunk: &Chunk) -> (String, bool) {
        let forced_plain = self.sent.get(i).is_some_and(|s| s.plain);
        match &chunk.rich {
            Some(r) if !forced_plain && !r.trim().is_empty() => (r.clone(), true),
            _ => (self.surface.plain(&chunk.markdown), false),
        }
    }

    /// Whether message `i` does not show `chunk` yet (or does not exist).
    fn needs_update(&self, i: usize, chunk: &Chunk) -> bool {
        let (text, _) = self.target(i, chunk);
        self.sent.get(i).is_none_or(|s| s.shown != text)
    }

    /// Shows `chunk` as message `i`: formatted; if the platform rejects that (or refuses the first
    /// post outright), as plain text; if that is rejected too, the empty-answer note.
    async fn put_chunk(&mut self, i: usize, chunk: &Chunk) -> Result<(), WriteError> {
        let (text, rich) = self.target(i, chunk);
        let first_post = self.sent.is_empty();
        let error = match self.put(i, &text, rich).await {
            Err(WriteError::Rejected(e)) => e,
            Err(WriteError::Permanent(e)) if first_post && rich => e,
            result => return result,
        };
        let chat = self.surface.chat();
        tracing::warn!(chat, error = %error, "the platform rejected the reply's text; sending plain text");
        let plain = self.surface.plain(&chunk.markdown);
        let mut result = Err(WriteError::Rejected(error));
        if !plain.trim().is_empty() && (rich || plain != text) {
            self.spent();
            result = self.put(i, &plain, false).await;
        }
        if let Err(WriteError::Rejected(e)) = &result {
            tracing::warn!(chat, error = %e, "plain text was rejected too; sending the empty-answer note");
            self.spent();
            result = self.put(i, self.surface.empty_note(), false).await;
        }
        result?;
        if let Some(s) = self.sent.get_mut(i) {
            s.plain = true;
        }
        Ok(())
    }

    /// Sets message `i` to `text`: an edit if it exists, else a new message.
    async fn put(&mut self, i: usize, text: &str, rich: bool) -> Result<(), WriteError> {
        if let Some(sent) = self.sent.get_mut(i) {
            return match self.surface.edit(i, sent.id, text, rich).await {
                Ok(()) | Err(WriteError::NotModified) => {
                    text.clone_into(&mut sent.shown);
                    Ok(())
                }
                Err(e) => Err(e),
            };
        }
        // A new message is marked in the journal before it is posted and named after: a crash between
        // the platform creating it and its id being durable leaves the mark, and recovery then notes
        // the question instead. Two flushes per new message, never one per edit.
        if let Some(journal) = &self.journal {
            journal.posting(true);
            journal.flush().await;
        }
        let posted = self.post(i, text, rich).await;
        let id = match (posted, &self.journal) {
            (Ok(id), Some(journal)) => {
                journal.bot_message(&id.to_string());
                journal.flush().await;
                id
            }
            (Ok(id), None) => id,
            (Err(e), journal) => {
                if let Some(journal) = journal {
                    journal.posting(false);
                }
                return Err(e);
            }
        };
        self.sent.push(Sent {
            id,
            shown: text.to_owned(),
            plain: !rich,
        });
        Ok(())
    }

    /// Posts message `i`. A first message the platform refuses as a reply to the question (the
    /// question was deleted, no permission to read history) is posted again without the reference.
    async fn post(&mut self, i: usize, text: &str, rich: bool) -> Result<S::Id, WriteError> {
        let reference = i == 0 && self.reference;
        let post = Post {
            index: i,
            text,
            rich,
            reference,
        };
        match self.surface.send(post).await {
            Err(WriteError::Permanent(e)) if reference => {
                tracing::warn!(
                    chat = self.surface.chat(),
                    error = %e,
                    "the reply could not quote the question; posting it without the reference"
                );
                self.reference = false;
                self.spent();
                let post = Post {
                    reference: false,
                    ..post
                };
                self.surface.send(post).await
            }
            result => result,
        }
    }
}

#[cfg(test)]
mod tests;
