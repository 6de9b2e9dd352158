//! Discord's side of the shared streaming renderer ([`crate::platforms::stream`]): the model's
//! Markdown as Discord renders it, cut at 2000 characters with code fences closed and reopened,
//! posted and edited in a channel or a slash command's interaction, and "typing…", through [`Rest`].

use std::sync::Arc;
use std::time::Duration;

use serenity::model::id::{ApplicationId, ChannelId, MessageId};
use tokio::sync::OwnedSemaphorePermit;

use super::rest::{Rest, RestError};
use crate::domain::ReplyStream;
use crate::platforms::stream::{
    Chunk, Delivery, Draft, Post, Reply, Settings, Stage, Surface, Ticket, WriteError,
};

/// Discord's limit on a message's content, in characters (UTF-16 units to be safe).
pub const MESSAGE_LIMIT: usize = 2000;
/// Discord shows "typing…" for about ten seconds; repeating every eight keeps it on without gaps.
pub const TYPING_REPEAT: Duration = Duration::from_secs(8);
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
        /// The channel the command was used in (its pacing and reply order).
        channel_id: ChannelId,
        /// The application.
        application_id: ApplicationId,
        /// The interaction token (valid 15 minutes; a secret while valid, never logged).
        token: String,
    },
}

/// Called with each new message id as soon as it exists (for the reply-chain map).
pub type OnPosted = Box<dyn Fn(MessageId) + Send + Sync>;

/// Renders `stream` to `target` in the place `ticket` holds in the channel; returns whether the final
/// text was delivered.
pub async fn render(
    rest: Arc<Rest>,
    stage: Arc<Stage>,
    ticket: Ticket,
    target: Target,
    stream: ReplyStream,
    settings: Settings,
    on_posted: OnPosted,
) -> Delivery {
    let reference = matches!(
        target,
        Target::Channel {
            reply_to: Some(_),
            ..
        }
    );
    let surface = Arc::new(DiscordSurface {
        rest,
        target,
        on_posted,
    });
    Reply::new(surface, stage, ticket, settings, reference)
        .run(stream)
        .await
}

/// One reply's place on Discord.
struct DiscordSurface {
    rest: Arc<Rest>,
    target: Target,
    on_posted: OnPosted,
}

impl DiscordSurface {
    fn channel_id(&self) -> ChannelId {
        match &self.target {
            Target::Channel { channel_id, .. } | Target::Interaction { channel_id, .. } => {
                *channel_id
            }
        }
    }
}

/// The renderer's view of a REST failure. `editing`: a 404 means the message is gone.
fn map(error: &RestError, editing: bool) -> WriteError {
    match error {
        RestError::RateLimited(wait) => WriteError::RetryAfter(*wait),
        // 400: the content itself (empty, too long, a bad form) — resend it another way.
        RestError::Status { status: 400, .. } => WriteError::Rejected(error.to_string()),
        RestError::Status { status: 404, .. } if editing => WriteError::Gone,
        RestError::Status { status, .. } if *status >= 500 => {
            WriteError::Transient(error.to_string())
        }
        RestError::Transport(_) => WriteError::Transient(error.to_string()),
        // 401/403/404 and answers we cannot read: a retry of the same call will not help.
        RestError::Status { .. } | RestError::Decode(_) => WriteError::Permanent(error.to_string()),
    }
}

impl Surface for DiscordSurface {
    type Id = MessageId;

    fn chat(&self) -> i64 {
        i64::try_from(self.channel_id().get()).unwrap_or(i64::MAX)
    }

    /// Notices in italics, the answer, a failure note, or the empty-answer note for a finished reply
    /// with nothing in it.
    fn compose(&self, draft: &Draft) -> String {
        let mut out = String::new();
        for n in &draft.notices {
            out.push('*');
            out.push_str(n.trim());
            out.push_str("*\n");
        }
        if !draft.notices.is_empty() && !draft.answer.is_empty() {
            out.push('\n');
        }
        out.push_str(draft.answer.trim_end());
        if let Some(f) = &draft.failure {
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str("⚠️ ");
            out.push_str(f.trim());
        }
        if draft.finished && out.trim().is_empty() {
            EMPTY_ANSWER.clone_into(&mut out);
        }
        out
    }

    fn chunks(&self, markdown: &str) -> Vec<Chunk> {
        Chunk::markdown_split(markdown, MESSAGE_LIMIT)
    }

    /// Discord parses nothing it could reject: the plain form is the text itself, posted without the
    /// reply reference.
    fn plain(&self, markdown: &str) -> String {
        markdown.to_owned()
    }

    fn empty_note(&self) -> &'static str {
        EMPTY_ANSWER
    }

    fn typing_repeat(&self) -> Duration {
        TYPING_REPEAT
    }

    /// serenity's rate limiter queues requests itself; no slot of ours is needed.
    async fn write_slot(&self) -> Option<OwnedSemaphorePermit> {
        None
    }

    async fn send(&self, post: Post<'_>) -> Result<MessageId, WriteError> {
        let posted = match &self.target {
            Target::Channel {
                channel_id,
                reply_to,
            } => {
                let reply_to = reply_to.filter(|_| post.reference);
                self.rest
                    .create_message(*channel_id, post.text, reply_to)
                    .await
            }
            Target::Interaction {
                application_id,
                token,
                ..
            } if post.index == 0 => {
                self.rest
                    .edit_interaction_message(*application_id, token, None, post.text)
                    .await
            }
            Target::Interaction {
                application_id,
                token,
                ..
            } => {
                self.rest
                    .interaction_followup(*application_id, token, post.text)
                    .await
            }
        };
        let id = posted.map_err(|e| map(&e, false))?;
        (self.on_posted)(id);
        Ok(id)
    }

    async fn edit(
        &self,
        index: usize,
        id: MessageId,
        text: &str,
        _rich: bool,
    ) -> Result<(), WriteError> {
        let edited = match &self.target {
            Target::Channel { channel_id, .. } => {
                self.rest.edit_message(*channel_id, id, text).await
            }
            Target::Interaction {
                application_id,
                token,
                ..
            } => {
                let which = if index == 0 { None } else { Some(id) };
                self.rest
                    .edit_interaction_message(*application_id, token, which, text)
                    .await
                    .map(drop)
            }
        };
        edited.map_err(|e| map(&e, true))
    }

    async fn typing(&self) -> Result<(), WriteError> {
        match &self.target {
            Target::Channel { channel_id, .. } => self
                .rest
                .typing(*channel_id)
                .await
                .map_err(|e| map(&e, false)),
            Target::Interaction { .. } => Ok(()),
        }
    }
}
