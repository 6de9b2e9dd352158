//! The seam between the shared streaming renderer and one platform: how a reply is written (the
//! platform's Markdown dialect or HTML, its escaping and plain-text fallback), cut to the platform's
//! limit, and sent, edited and announced ("typing"). Telegram and Discord each implement [`Surface`]
//! thinly over their API clients; everything else about streaming lives in [`super`].

use std::future::Future;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

/// What the reply consists of so far, for [`Surface::compose`].
#[derive(Debug, Default)]
pub struct Draft {
    /// One-line notes shown before the answer (e.g. the switch to the paid tier).
    pub notices: Vec<String>,
    /// The model's answer (Markdown) so far.
    pub answer: String,
    /// Why the reply ended badly, shown after the answer.
    pub failure: Option<String>,
    /// Whether the reply has ended (finished, failed, or cut at the message cap).
    pub finished: bool,
}

/// One message of a reply, cut by the platform's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The Markdown this message shows (also the base of the plain-text fallback).
    pub markdown: String,
    /// The formatted text to send, or `None` when it must go as plain text.
    pub rich: Option<String>,
    /// Whether it shows anything at all once rendered (`>` or an opened code block alone do not):
    /// such a message is not sent (platforms refuse it), and a finished answer that shows nothing
    /// is composed as the empty-answer note instead.
    pub visible: bool,
}

impl Chunk {
    /// `markdown` cut at `limit` UTF-16 units, for a platform that sends Markdown as it is (its
    /// formatted form is the text itself).
    pub fn markdown_split(markdown: &str, limit: usize) -> Vec<Self> {
        crate::platforms::render::split_message(markdown, limit)
            .into_iter()
            .map(|c| Self {
                rich: Some(c.clone()),
                visible: !c.trim().is_empty(),
                markdown: c,
            })
            .collect()
    }
}

/// A write the platform refused, in the terms the renderer acts on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Rate limited: nothing goes to this chat for exactly this long.
    #[error("rate limited: retry after {0:?}")]
    RetryAfter(Duration),
    /// An edit with the text the message already has: counts as success.
    #[error("the message is not modified")]
    NotModified,
    /// The platform rejected the text itself (formatting it cannot parse, empty after parsing, too
    /// long): resend it as plain text.
    #[error("the text was rejected: {0}")]
    Rejected(String),
    /// The message being edited no longer exists (deleted mid-stream): continue in a new one.
    #[error("the message to edit is gone")]
    Gone,
    /// The chat moved (a Telegram group became a supergroup); the surface now writes to the new one:
    /// start afresh there.
    #[error("the chat moved")]
    Moved,
    /// A failure a retry could fix (network, server).
    #[error("{0}")]
    Transient(String),
    /// A failure a retry will not fix (no permission, chat gone, bad reference).
    #[error("{0}")]
    Permanent(String),
}

/// A new message to post.
#[derive(Clone, Copy, Debug)]
pub struct Post<'a> {
    /// Its place in the reply (0 for the first message).
    pub index: usize,
    /// The text as the platform expects it.
    pub text: &'a str,
    /// Whether `text` is formatted (HTML for Telegram) or plain.
    pub rich: bool,
    /// Whether it quotes the question (only the first message ever does).
    pub reference: bool,
}

/// One platform's side of a streamed reply. Calls return `Send` futures so a reply can run on any
/// worker thread.
pub trait Surface: Send + Sync + 'static {
    /// The platform's message id (its `Display` form is what the reply journal records).
    type Id: Copy + Send + Sync + std::fmt::Display + 'static;

    /// The chat written to, as the key of its pacing slot and reply order.
    fn chat(&self) -> i64;

    /// The whole reply as this platform's Markdown: notices, the answer, a failure note, and the
    /// empty-answer note when the finished answer shows nothing.
    fn compose(&self, draft: &Draft) -> String;

    /// Cuts `markdown` into messages that fit the platform's limit after rendering. Boundaries before
    /// the last message do not move as text is appended.
    fn chunks(&self, markdown: &str) -> Vec<Chunk>;

    /// `markdown` as plain text, for when the platform rejects the formatted text.
    fn plain(&self, markdown: &str) -> String;

    /// Shown (as plain text) when nothing of the answer could be shown at all.
    fn empty_note(&self) -> &'static str;

    /// How long "typing" shows for, less a margin: it is repeated this often.
    fn typing_repeat(&self) -> Duration;

    /// One of the adapter's slots for a request in flight (`None` where the platform needs none). The
    /// renderer takes the chat's pacing slot only once it holds this, right before the request goes.
    fn write_slot(&self) -> impl Future<Output = Option<OwnedSemaphorePermit>> + Send;

    /// Posts a new message and returns its id.
    fn send(&self, post: Post<'_>) -> impl Future<Output = Result<Self::Id, WriteError>> + Send;

    /// Replaces the text of message `index` (`id`).
    fn edit(
        &self,
        index: usize,
        id: Self::Id,
        text: &str,
        rich: bool,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Shows "typing…". Never holds a write slot; the renderer bounds it with a short timeout.
    fn typing(&self) -> impl Future<Output = Result<(), WriteError>> + Send;
}
