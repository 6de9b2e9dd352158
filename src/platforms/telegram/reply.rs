//! Telegram's side of the shared streaming renderer ([`crate::platforms::stream`]): the model's
//! Markdown as Telegram HTML with a plain-text fallback, messages cut to the 4096 limit by their
//! rendered length, and sends, edits and "typing" through [`Api`]. A group that became a supergroup
//! is followed to its new id.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use teloxide::types::{ChatId, MessageId};
use tokio::sync::OwnedSemaphorePermit;

use super::api::{Api, ApiFailure};
use super::format::{
    escape_markdown, html_shows_nothing, markdown_plain, shows_nothing, telegram_chunks,
};
use crate::platforms::render::fences_balanced;
use crate::platforms::stream::{Chunk, Draft, Post, Surface, WriteError};

/// "typing" shows for about 5 s; repeating it every 4 s keeps it on without gaps.
pub const TYPING_REPEAT: Duration = Duration::from_secs(4);

/// Shown for a finished answer with nothing visible in it (Telegram refuses empty messages).
const EMPTY_ANSWER: &str = "(The model returned an empty answer.)";

/// One reply's chat on Telegram.
pub struct TelegramSurface {
    api: Api,
    /// The chat; changes once if the group is migrated to a supergroup mid-reply.
    chat: AtomicI64,
    /// The question, quoted by the first message (groups).
    reply_to: Option<MessageId>,
}

impl TelegramSurface {
    /// Replies into `chat`; the first message quotes `reply_to` if given.
    pub fn new(api: Api, chat: ChatId, reply_to: Option<MessageId>) -> Self {
        Self {
            api,
            chat: AtomicI64::new(chat.0),
            reply_to,
        }
    }

    fn chat_id(&self) -> ChatId {
        ChatId(self.chat.load(Ordering::Relaxed))
    }

    /// The renderer's view of a Bot API failure.
    fn map(&self, failure: ApiFailure) -> WriteError {
        match failure {
            ApiFailure::RetryAfter(wait) => WriteError::RetryAfter(wait),
            ApiFailure::NotModified => WriteError::NotModified,
            ApiFailure::CantParseEntities | ApiFailure::TooLong | ApiFailure::EmptyText => {
                WriteError::Rejected(failure.to_string())
            }
            ApiFailure::MessageGone => WriteError::Gone,
            ApiFailure::Migrated(to) => {
                let from = self.chat.swap(to, Ordering::Relaxed);
                tracing::info!(from, to, "the group became a supergroup; answering there");
                WriteError::Moved
            }
            ApiFailure::Other(e) => WriteError::Transient(e),
            e @ (ApiFailure::Conflict | ApiFailure::Unauthorized | ApiFailure::Unreachable(_)) => {
                WriteError::Permanent(e.to_string())
            }
        }
    }
}

impl Surface for TelegramSurface {
    type Id = MessageId;

    fn chat(&self) -> i64 {
        self.chat.load(Ordering::Relaxed)
    }

    /// Notices in italics, the answer, a failure note (closing a code block the answer left open), or
    /// the empty-answer note when the finished answer shows nothing once rendered (`>`, an empty
    /// code block, `[](…)`).
    fn compose(&self, draft: &Draft) -> String {
        let mut md = String::new();
        for notice in &draft.notices {
            md.push('_');
            md.push_str(&escape_markdown(notice));
            md.push_str("_\n\n");
        }
        // Rendering the whole answer once more is only worth it for the final text.
        let blank = draft.finished && shows_nothing(&draft.answer);
        if !blank {
            md.push_str(&draft.answer);
        }
        if let Some(failure) = &draft.failure {
            if !fences_balanced(&draft.answer) {
                md.push_str("\n```");
            }
            if !md.trim().is_empty() {
                md.push_str("\n\n");
            }
            md.push_str("⚠️ ");
            md.push_str(&escape_markdown(failure));
        } else if blank {
            md.push_str(EMPTY_ANSWER);
        }
        md
    }

    fn chunks(&self, markdown: &str) -> Vec<Chunk> {
        telegram_chunks(markdown)
            .into_iter()
            .map(|c| {
                // HTML that shows nothing is refused by Telegram ("message text is empty").
                let visible = match &c.html {
                    Some(html) => !html_shows_nothing(html),
                    None => !c.markdown.trim().is_empty(),
                };
                Chunk {
                    rich: c.html.filter(|_| visible),
                    markdown: c.markdown,
                    visible,
                }
            })
            .collect()
    }

    fn plain(&self, markdown: &str) -> String {
        markdown_plain(markdown)
    }

    fn empty_note(&self) -> &'static str {
        EMPTY_ANSWER
    }

    fn typing_repeat(&self) -> Duration {
        TYPING_REPEAT
    }

    async fn write_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.api.write_slot().await
    }

    async fn send(&self, post: Post<'_>) -> Result<MessageId, WriteError> {
        let reply_to = self.reply_to.filter(|_| post.reference);
        self.api
            .send_text(self.chat_id(), post.text, post.rich, reply_to)
            .await
            .map_err(|e| self.map(e))
    }

    async fn edit(
        &self,
        _index: usize,
        id: MessageId,
        text: &str,
        rich: bool,
    ) -> Result<(), WriteError> {
        self.api
            .edit_text(self.chat_id(), id, text, rich)
            .await
            .map_err(|e| self.map(e))
    }

    async fn typing(&self) -> Result<(), WriteError> {
        self.api
            .typing(self.chat_id())
            .await
            .map_err(|e| self.map(e))
    }
}
