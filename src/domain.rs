//! The shared vocabulary every layer may import: who sent what where (`Inbound`), which conversation it
//! belongs to (`ConversationKey`), what the model is asked (`ChatMessage`) and what comes back (`ReplyEvent`).
//! Nothing here knows a platform, provider or storage crate.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::generation::{ImageData, ToolCall, ToolCallDelta};

/// The place a message came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// A Telegram private chat, group or supergroup.
    Telegram,
    /// A Discord DM, guild channel or thread.
    Discord,
    /// `switchboard chat` / `switchboard demo` in a terminal.
    Terminal,
    /// A program calling the local LLM API (Ollama- or OpenAI-compatible).
    Api,
}

impl Platform {
    /// The lowercase name used in identifiers, config lists and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Telegram => "telegram",
            Self::Discord => "discord",
            Self::Terminal => "terminal",
            Self::Api => "api",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of chat a message arrived in; it decides the default conversation scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatKind {
    /// One person and the bot (Telegram private chat, Discord DM, the terminal).
    Direct,
    /// Several people (Telegram group/supergroup, Discord guild channel or thread).
    Group,
}

/// A chat on a platform, e.g. `telegram:-100123`. Used for allow lists, per-chat settings and usage.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChatRef {
    /// The platform the chat lives on.
    pub platform: Platform,
    /// The platform's own chat id, as a string (Discord snowflakes and Telegram ids both fit).
    pub id: String,
}

impl ChatRef {
    /// A chat on `platform` with the platform's id.
    pub fn new(platform: Platform, id: impl Into<String>) -> Self {
        Self {
            platform,
            id: id.into(),
        }
    }
}

impl fmt::Display for ChatRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.platform, self.id)
    }
}

/// A person on a platform, e.g. `discord:80351110224678912`. Used for allow lists, admins and limits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserRef {
    /// The platform the user lives on.
    pub platform: Platform,
    /// The platform's own user id, as a string.
    pub id: String,
}

impl UserRef {
    /// A user on `platform` with the platform's id.
    pub fn new(platform: Platform, id: impl Into<String>) -> Self {
        Self {
            platform,
            id: id.into(),
        }
    }
}

impl fmt::Display for UserRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.platform, self.id)
    }
}

/// The sender of an inbound message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    /// Who they are (for access control and limits).
    pub user: UserRef,
    /// How to call them in a shared chat's history ("Alice"), so the model knows who said what.
    pub display_name: String,
}

/// Identifies one conversation (one history). Built by the core from the chat, the sender and the
/// adapter's hint; opaque to everyone else. Never contains the byte 0xFF (it is UTF-8), which the
/// sled layout uses as a separator.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConversationKey(pub String);

impl ConversationKey {
    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConversationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message a person sent to the bot, already translated from the platform's own types. Serializable:
/// the reply journal keeps it so a question cut short by a crash can be answered again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    /// Where it was said.
    pub chat: ChatRef,
    /// Direct or group chat.
    pub chat_kind: ChatKind,
    /// Who said it.
    pub sender: Sender,
    /// The text, with the bot mention / `@botname` suffix already removed by the adapter.
    pub text: String,
    /// Whether the bot was addressed (always true in direct chats). Unaddressed group messages are ignored.
    pub addressed: bool,
    /// The platform message id this message replies to, if any.
    pub reply_to: Option<String>,
    /// The adapter's choice of conversation within the chat (a Discord thread or reply chain), if it
    /// needs one; `None` means the core's default scope (per chat, per user in direct chats).
    pub thread: Option<String>,
    /// Images and files sent with the message, not yet downloaded: the core fetches them through the
    /// platform's media source. (Defaulted so journal records written before attachments existed
    /// still read.)
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

/// What kind of attachment the platform says a file is (the core checks the bytes themselves).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentKind {
    /// A photo or an image file, for a vision model.
    Image,
    /// A text file (txt, md, code, csv, json), read into the prompt.
    Text,
    /// Anything else (a PDF, a voice note): answered with what the bot can take instead.
    Other,
}

/// An image or file attached to an inbound message, as the platform described it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Image, text file or other.
    pub kind: AttachmentKind,
    /// How the platform's media source finds it again: a Telegram `file_id`, a Discord attachment URL,
    /// a local path in the terminal.
    pub source: String,
    /// The file's name, if it has one (documents and attachments; Telegram photos have none).
    pub name: Option<String>,
    /// The media type the platform announced, if any (checked against the bytes).
    pub media_type: Option<String>,
    /// The size the platform announced, in bytes, if any (a larger download is still cut at the cap).
    pub size: Option<u64>,
}

/// Who wrote a message in a model's context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The system prompt.
    System,
    /// A person.
    User,
    /// The model.
    Assistant,
    /// A tool's result, answering one of the model's tool calls (local API only).
    Tool,
}

impl Role {
    /// The role's wire name (`system`, `user`, `assistant`), the same for OpenAI and Ollama.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }
}

/// One message of the context sent to a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// What was written.
    pub content: String,
    /// Images attached to it (user messages). Never stored with history: bytes live only in the request.
    #[serde(skip)]
    pub images: Vec<ImageData>,
    /// The tool calls an assistant message made (local API only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the id of the call it answers (and, for Ollama, the tool's name in
    /// `tool_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For a `tool` message: the function's name, when the client gave it (Ollama `tool_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
}

impl ChatMessage {
    /// A plain text message with `role` and `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            images: Vec::new(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            tool_name: None,
        }
    }
}

/// Token counts reported by a provider (zero when it reported none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens in the answer.
    pub completion_tokens: u64,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// Which tier answered, as the user sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TierName(pub String);

impl TierName {
    /// The free tier (OpenRouter free models).
    pub fn free() -> Self {
        Self("free".into())
    }
    /// The paid tier (Ollama Cloud RC2 models).
    pub fn paid() -> Self {
        Self("paid".into())
    }
    /// Whether requests in this tier cost money (anything but `free` and `local`).
    pub fn is_paid(&self) -> bool {
        !matches!(self.0.as_str(), "free" | "local")
    }
}

impl fmt::Display for TierName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who is answering: reported when a model starts and again when it finishes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerSource {
    /// `free`, `paid` or an extra tier's name.
    pub tier: TierName,
    /// `openrouter`, `ollama-cloud`, `ollama-local`, … (the configured provider name).
    pub provider: String,
    /// The model that answered, as the provider reported it (`openrouter/free` resolves to a real model).
    pub model: String,
    /// The fingerprint of the key used (never the key), if the provider needs one.
    pub key_fingerprint: Option<String>,
}

/// How a reply ended badly; adapters may style them differently, users always get `message`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// No provider could answer (all down, out of quota, or paid tier capped/off).
    Unavailable,
    /// The answer started and was cut short (provider failure mid-stream).
    Interrupted,
    /// The user cancelled with `/cancel`.
    Cancelled,
    /// The daemon is shutting down and the deadline passed.
    ShuttingDown,
    /// Access denied or a limit was hit.
    Refused,
    /// A bug on our side (a contained panic or an internal error).
    Internal,
    /// The model asked for is not one the router knows (local API: 404).
    UnknownModel,
    /// Every candidate is at a rate or quota limit; `retry_after` says when one frees (local API: 429).
    RateLimited,
    /// The request cannot be served as asked (a model that cannot take images or tools, a prompt too
    /// long for every model; local API: 400).
    BadRequest,
}

/// A reason safe to show a user: no URL, key, or raw provider body ever goes in here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserFacingError {
    /// What went wrong, as a category.
    pub kind: FailureKind,
    /// A short friendly sentence for the user.
    pub message: String,
    /// When asking again may succeed (a per-minute limit, or the free quota's UTC-midnight reset), if
    /// known; the local API sends it as `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<std::time::Duration>,
}

impl UserFacingError {
    /// A failure of `kind` with a friendly `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same failure, saying when to ask again.
    #[must_use]
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
}

/// How a reply ended well. `Completion::default()` is a reply switchboard wrote itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// Who answered; `None` for replies the core wrote itself (command output).
    pub source: Option<AnswerSource>,
    /// Token usage of this answer.
    pub usage: Usage,
    /// Whether `usage` is switchboard's estimate because the provider reported none.
    pub usage_estimated: bool,
    /// Why the model stopped (`stop`, `length`, `tool_calls`), if known.
    pub finish_reason: Option<String>,
}

/// One step of a reply, in order: at most one `Started`, any `Notice`s and `Delta`s, then exactly one of
/// `Finished` or `Failed`. The router produces them for model answers; the core for commands and refusals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyEvent {
    /// A model has been picked and the request sent; adapters keep showing "typing" until the first delta.
    Started(AnswerSource),
    /// A one-line note to show the user before the answer (e.g. the switch to the paid tier).
    Notice(String),
    /// The next piece of the answer.
    Delta(String),
    /// The next piece of the model's reasoning ("thinking"); the bots do not show it, the local API
    /// passes it on (`message.thinking`, `delta.reasoning`).
    Reasoning(String),
    /// The next piece of a tool call (local API only; a bot never sends tools).
    ToolCall(ToolCallDelta),
    /// The answer is complete.
    Finished(Completion),
    /// The reply ended without a complete answer (possibly after some deltas).
    Failed(UserFacingError),
}

/// A boxed stream of reply events, as handed from router to core and from core to adapters.
pub type ReplyStream = futures_util::stream::BoxStream<'static, ReplyEvent>;
