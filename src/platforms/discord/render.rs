//! Streams one reply into Discord: "typing…" until the first text, then one message edited with the
//! growing text at most once per `edit_interval`, continued in new messages past 2000 characters, and a
//! final edit with the complete text. A 429 moves the next write back by exactly `retry_after`; edits
//! are coalesced meanwhile, so the final text always arrives.

use std::time::Duration;

use futures_util::StreamExt;
use serenity::model::id::{ApplicationId, ChannelId, MessageId};
use tokio::time::Instant;

use super::rest::{Rest, RestError};
use crate::domain::{ReplyEvent, ReplyStream};
use crate::platforms::render::split_message;

/// Discord's limit on a message's content, in characters (UTF-16 units to be safe).
pub const MESSAGE_LIMIT: usize = 2000;
/// Discord shows "typing…" for about ten seconds; repeating every eight keeps it on without gaps.
pub const TYPING_REPEAT: Duration = Duration::from_secs(8);
/// Attempts of the final write after non-429 failures (429s are always waited out): a transient error
/// gets two more chances, a permanent one (message deleted, no permission) does not loop.
const FINAL_ATTEMPTS: u32 = 3;
/// Pause between those attempts.
const FINAL_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// Shown when a reply ends with nothing to show.
const EMPTY_ANSWER: &str = "⚠️ The model returned an empty answer. Please try again.";

/// Where a reply goes.
#[derive(Clone, Debug)]
pub enum Target {
    /// A channel message, replying to the user's message.
    Channel {
        /// The channel.
        channel_id: ChannelId,
        /// The message answered (Discord shows the reply link).
        reply_to: Option<MessageId>,
    },
    /// A slash command: the deferred response, then follow-ups.
    Interaction {
        /// The application.
        application_id: ApplicationId,
        /// The interaction token (valid 15 minutes; a secret while valid, never logged).
        token: String,
    },
}

/// What a rendered reply produced.
#[derive(Debug, Default)]
pub struct Rendered {
    /// The ids of the messages posted, in order.
    pub messages: Vec<MessageId>,
    /// The last text of each message.
    pub texts: Vec<String>,
}

struct Renderer<'a> {
    rest: &'a Rest,
    target: Target,
    notices: Vec<String>,
    answer: String,
    failure: Option<String>,
    sent: Vec<(MessageId, String)>,
    next_write: Instant,
    interval: Duration,
    on_posted: &'a (dyn Fn(MessageId) + Send + Sync),
}

/// Renders `stream` to `target`; `on_posted` is called with each new message id as soon as it exists
/// (for the reply-chain map). Returns when the reply is delivered or cannot be.
pub async fn render(
    rest: &Rest,
    target: Target,
    mut stream: ReplyStream,
    edit_interval: Duration,
    on_posted: &(dyn Fn(MessageId) + Send + Sync),
) -> Rendered {
    let mut r = Renderer {
        rest,
        target,
        notices: Vec::new(),
        answer: String::new(),
        failure: None,
        sent: Vec::new(),
        next_write: Instant::now(),
        interval: edit_interval,
        on_posted,
    };
    r.typing().await;
    let mut next_typing = Instant::now() + TYPING_REPEAT;
    let mut dirty = false;
    loop {
        let waiting_for_text = r.sent.is_empty();
        tokio::select! {
            biased;
            event = stream.next() => match event {
                Some(ReplyEvent::Started(_)) => {}
                Some(ReplyEvent::Notice(n)) => { r.notices.push(n); dirty = true; }
                Some(ReplyEvent::Delta(d)) => { r.answer.push_str(&d); dirty = !r.answer.trim().is_empty() || dirty; }
                Some(ReplyEvent::Finished(_)) => break,
                Some(ReplyEvent::Failed(e)) => { r.failure = Some(e.message); break; }
                None => {
                    r.failure = Some("The answer was cut off unexpectedly.".into());
                    break;
                }
            },
            () = tokio::time::sleep_until(r.next_write), if dirty => {
                if r.flush().await.is_ok() { dirty = false; }
            }
            () = tokio::time::sleep_until(next_typing), if waiting_for_text => {
                r.typing().await;
                next_typing = Instant::now() + TYPING_REPEAT;
            }
        }
    }
    r.finish().await;
    Rendered {
        messages: r.sent.iter().map(|(id, _)| *id).collect(),
        texts: r.sent.into_iter().map(|(_, t)| t).collect(),
    }
}

impl Renderer<'_> {
    /// The whole reply as it should look now.
    fn display(&self) -> String {
        let mut out = String::new();
        for n in &self.notices {
            out.push('*');
            out.push_str(n.trim());
            out.push_str("*\n");
        }
        if !self.notices.is_empty() && !self.answer.is_empty() {
            out.push('\n');
        }
        out.push_str(self.answer.trim_end());
        if let Some(f) = &self.failure {
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str("⚠️ ");
            out.push_str(f.trim());
        }
        if out.trim().is_empty() {
            out = EMPTY_ANSWER.to_owned();
        }
        out
    }

    async fn typing(&self) {
        if let Target::Channel { channel_id, .. } = &self.target {
            if let Err(e) = self.rest.typing(*channel_id).await {
                tracing::debug!(error = %e, "discord: typing indicator failed");
            }
        }
    }

    /// Brings the posted messages in line with the current text. On a 429 the next write is moved back
    /// by `retry_after` and the error returned; the caller tries again with whatever text is current then.
    async fn flush(&mut self) -> Result<(), RestError> {
        let chunks = split_message(&self.display(), MESSAGE_LIMIT);
        let result = self.write_chunks(&chunks).await;
        let now = Instant::now();
        self.next_write = match &result {
            Err(RestError::RateLimited(wait)) => {
                tracing::debug!(?wait, "discord: rate limited, delaying the next edit");
                now + *wait
            }
            _ => now + self.interval,
        };
        if let Err(e) = &result {
            if !matches!(e, RestError::RateLimited(_)) {
                tracing::warn!(error = %e, "discord: could not update a reply");
            }
        }
        result
    }

    async fn write_chunks(&mut self, chunks: &[String]) -> Result<(), RestError> {
        for (i, chunk) in chunks.iter().enumerate() {
            if let Some((id, text)) = self.sent.get(i) {
                if text != chunk {
                    let id = *id;
                    self.edit(i, id, chunk).await?;
                    self.sent[i].1.clone_from(chunk);
                }
            } else {
                let id = self.post(i, chunk).await?;
                self.sent.push((id, chunk.clone()));
                (self.on_posted)(id);
            }
        }
        Ok(())
    }

    async fn post(&self, index: usize, content: &str) -> Result<MessageId, RestError> {
        match &self.target {
            Target::Channel {
                channel_id,
                reply_to,
            } => {
                // Only the first message is a reply; continuations follow it.
                let reply_to = if index == 0 { *reply_to } else { None };
                self.rest
                    .create_message(*channel_id, content, reply_to)
                    .await
            }
            Target::Interaction {
                application_id,
                token,
            } if index == 0 => {
                self.rest
                    .edit_interaction_message(*application_id, token, None, content)
                    .await
            }
            Target::Interaction {
                application_id,
                token,
            } => {
                self.rest
                    .interaction_followup(*application_id, token, content)
                    .await
            }
        }
    }

    async fn edit(&self, index: usize, id: MessageId, content: &str) -> Result<(), RestError> {
        match &self.target {
            Target::Channel { channel_id, .. } => {
                self.rest.edit_message(*channel_id, id, content).await
            }
            Target::Interaction {
                application_id,
                token,
            } => {
                let which = if index == 0 { None } else { Some(id) };
                self.rest
                    .edit_interaction_message(*application_id, token, which, content)
                    .await
                    .map(drop)
            }
        }
    }

    /// Writes the complete text: waits out 429s (exactly `retry_after` each), retries other failures a
    /// few times.
    async fn finish(&mut self) {
        let mut failures = 0;
        loop {
            tokio::time::sleep_until(self.next_write).await;
            match self.flush().await {
                Ok(()) => return,
                Err(RestError::RateLimited(_)) => {}
                Err(e) => {
                    failures += 1;
                    if failures >= FINAL_ATTEMPTS {
                        tracing::error!(error = %e, "discord: giving up on delivering a reply");
                        return;
                    }
                    self.next_write = Instant::now() + FINAL_RETRY_PAUSE;
                }
            }
        }
    }
}
