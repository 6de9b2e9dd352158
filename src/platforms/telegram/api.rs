//! The Bot API seam: a wrapper around teloxide's `Bot` that can never be `Debug`-printed (the `Bot`'s own
//! `Debug` shows the token), and the classification of its errors into what the adapter acts on.
//! Error texts are scrubbed of the token before anyone sees them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use teloxide::payloads::{EditMessageTextSetters, SendMessageSetters};
use teloxide::requests::Requester;
use teloxide::types::{BotCommand, ChatAction, ChatId, Me, MessageId, ParseMode, ReplyParameters};
use teloxide::{ApiError, Bot, RequestError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::updates::{self, Batch, DecodeError};
use crate::body::{read_capped, BodyError};

/// At most this many sends and edits are in flight at once; more wait their turn. ("typing" takes no
/// slot: it is only a hint and must never hold text up.)
/// Telegram accepts about 30 messages a second per bot, so a few dozen requests in flight already
/// saturate it from anywhere; without a bound a burst of a thousand replies opens a thousand
/// connections, and their buffers were most of the daemon's peak memory (docs/bench-telegram.md).
/// Long polls do not take a slot.
pub const MAX_WRITES_IN_FLIGHT: usize = 64;

/// The largest `getUpdates` answer read. A message's text is at most 4096 characters (under 48 KiB even
/// written as `\uXXXX` escapes) and an update can carry the message it replies to, so an update stays
/// around 100 KiB and a batch of 100 around 10 MiB; 16 MiB bounds memory just above that. A larger
/// answer is asked for again in smaller batches, so it cannot wedge intake either.
pub const MAX_UPDATES_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A Bot API client. Cheap to clone; its `Debug` shows nothing secret.
#[derive(Clone)]
pub struct Api {
    bot: Bot,
    /// Slots for writes ([`MAX_WRITES_IN_FLIGHT`]), shared by every clone.
    writes: Arc<Semaphore>,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Api(<token hidden>)")
    }
}

/// What went wrong with a Bot API call, in the terms the adapter acts on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiFailure {
    /// Flood control: wait exactly this long before the next request to this chat.
    #[error("flood control: retry after {0:?}")]
    RetryAfter(Duration),
    /// An edit with the text the message already has: counts as success.
    #[error("message is not modified")]
    NotModified,
    /// Telegram found no text left after parsing the entities (HTML that shows nothing): resend as
    /// plain text, or the empty-answer note.
    #[error("the message text is empty")]
    EmptyText,
    /// Telegram rejected the HTML: resend as plain text.
    #[error("Telegram could not parse the formatting")]
    CantParseEntities,
    /// The text is over Telegram's limit: split further.
    #[error("message is too long")]
    TooLong,
    /// The message being edited no longer exists (someone deleted it mid-stream): send a new one.
    #[error("the message to edit is gone")]
    MessageGone,
    /// HTTP 409: another process polls this token.
    #[error("another process is polling this token")]
    Conflict,
    /// HTTP 401/404 on the token: it is wrong or revoked.
    #[error("the bot token was rejected")]
    Unauthorized,
    /// The chat is gone for us (bot blocked, kicked, chat deleted): no point retrying.
    #[error("the chat cannot be written to: {0}")]
    Unreachable(String),
    /// The group became a supergroup with this id: write there instead.
    #[error("the group moved to supergroup {0}")]
    Migrated(i64),
    /// Anything else (network, server), already scrubbed of the token.
    #[error("{0}")]
    Other(String),
}

/// Why one `getUpdates` attempt failed.
enum FetchError {
    /// The answer passed [`MAX_UPDATES_BODY_BYTES`].
    TooLarge,
    /// Anything else.
    Failed(ApiFailure),
}

impl ApiFailure {
    /// Whether a retry could succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RetryAfter(_) | Self::Other(_))
    }
}

impl Api {
    /// A client for `token` against the Bot API at `api_url`. The HTTP client is teloxide's default:
    /// 5 s connect timeout and a 17 s total timeout per request, which bounds every call (long polls
    /// hold for less, see `telegram.poll_timeout_secs`).
    pub fn new(token: &SecretString, api_url: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(api_url)
            .map_err(|e| format!("telegram.api_url `{api_url}` is not a URL ({e})"))?;
        if url.cannot_be_a_base() {
            return Err(format!("telegram.api_url `{api_url}` cannot be a base URL"));
        }
        let bot = Bot::new(token.expose_secret()).set_api_url(url);
        Ok(Self {
            bot,
            writes: Arc::new(Semaphore::new(MAX_WRITES_IN_FLIGHT)),
        })
    }

    /// `getFile`: where a file lies on the Bot API server (`file_path`, valid for an hour) and its
    /// size if Telegram knows it, for [`super::files`] to download.
    pub async fn get_file(&self, file_id: &str) -> Result<(String, Option<u64>), ApiFailure> {
        let file = self
            .bot
            .get_file(teloxide::types::FileId(file_id.to_owned()))
            .await
            .map_err(|e| self.classify(e))?;
        // teloxide reads a missing `file_size` as u32::MAX.
        let size = (file.meta.size != u32::MAX).then_some(u64::from(file.meta.size));
        Ok((file.path, size))
    }

    fn classify(&self, error: RequestError) -> ApiFailure {
        match error {
            RequestError::RetryAfter(s) => ApiFailure::RetryAfter(s.duration()),
            RequestError::MigrateToChatId(chat) => ApiFailure::Migrated(chat.0),
            RequestError::Api(api) => match api {
                ApiError::MessageNotModified => ApiFailure::NotModified,
                ApiError::CantParseEntities(_) => ApiFailure::CantParseEntities,
                ApiError::MessageTextIsEmpty => ApiFailure::EmptyText,
                ApiError::MessageIsTooLong | ApiError::EditedMessageIsTooLong => {
                    ApiFailure::TooLong
                }
                ApiError::MessageToEditNotFound | ApiError::MessageIdInvalid => {
                    ApiFailure::MessageGone
                }
                ApiError::TerminatedByOtherGetUpdates => ApiFailure::Conflict,
                ApiError::InvalidToken => ApiFailure::Unauthorized,
                ApiError::BotBlocked
                | ApiError::BotKicked
                | ApiError::BotKickedFromSupergroup
                | ApiError::ChatNotFound
                | ApiError::UserDeactivated
                | ApiError::CantInitiateConversation
                | ApiError::CantTalkWithBots
                | ApiError::NotEnoughRightsToPostMessages => {
                    ApiFailure::Unreachable(self.scrub(&api.to_string()))
                }
                ApiError::Unknown(text) => {
                    // Telegram words some errors differently from teloxide's table.
                    let lower = text.to_ascii_lowercase();
                    if lower.contains("message is not modified") {
                        ApiFailure::NotModified
                    } else if lower.contains("can't parse entities") {
                        ApiFailure::CantParseEntities
                    } else if lower.contains("text is empty") {
                        ApiFailure::EmptyText
                    } else if lower.contains("too long") {
                        ApiFailure::TooLong
                    } else if lower.contains("message to edit not found") {
                        ApiFailure::MessageGone
                    } else if lower.starts_with("conflict") {
                        ApiFailure::Conflict
                    } else {
                        ApiFailure::Other(self.scrub(&text))
                    }
                }
                other => ApiFailure::Other(self.scrub(&other.to_string())),
            },
            // Its Display quotes the raw answer (users' names and texts): keep only where it broke.
            RequestError::InvalidJson { source, .. } => ApiFailure::Other(format!(
                "the Bot API answer could not be decoded (line {}, column {})",
                source.line(),
                source.column()
            )),
            other => ApiFailure::Other(self.scrub(&other.to_string())),
        }
    }

    /// teloxide already strips URLs from network errors; this is the second belt.
    fn scrub(&self, text: &str) -> String {
        let token = self.bot.token();
        if token.is_empty() {
            text.to_owned()
        } else {
            text.replace(token, "<token>")
        }
    }

    /// `getMe`: who the bot is.
    pub async fn get_me(&self) -> Result<Me, ApiFailure> {
        self.bot.get_me().await.map_err(|e| self.classify(e))
    }

    /// Makes long polling possible: if a webhook is set, `getUpdates` is refused, so remove it
    /// (pending updates are kept).
    pub async fn prepare_polling(&self) -> Result<(), ApiFailure> {
        let info = self
            .bot
            .get_webhook_info()
            .await
            .map_err(|e| self.classify(e))?;
        if info.url.is_some() {
            tracing::warn!("a webhook is set for this bot; removing it to use long polling");
            self.bot
                .delete_webhook()
                .await
                .map_err(|e| self.classify(e))?;
        }
        Ok(())
    }

    /// `setMyCommands` with `(name, description)` pairs.
    pub async fn set_commands(&self, commands: Vec<(String, String)>) -> Result<(), ApiFailure> {
        let commands: Vec<BotCommand> = commands
            .into_iter()
            .map(|(name, description)| BotCommand::new(name, description))
            .collect();
        self.bot
            .set_my_commands(commands)
            .await
            .map(|_| ())
            .map_err(|e| self.classify(e))
    }

    /// `getUpdates` from `offset` (acknowledging everything before it), holding up to `timeout_secs`,
    /// for at most `limit` updates (only messages are asked for).
    ///
    /// Called over raw HTTP on teloxide's client (same base URL, timeouts and connection pool) rather than
    /// through teloxide, whose decoding fails the whole batch on one update it cannot read and puts the
    /// raw body (users' names and texts) into its error. See [`updates::decode`]. An answer over
    /// [`MAX_UPDATES_BODY_BYTES`] is asked for again with half the limit.
    pub async fn get_updates(
        &self,
        offset: Option<i32>,
        timeout_secs: u32,
        limit: u8,
    ) -> Result<Batch, ApiFailure> {
        let mut limit = limit.max(1);
        loop {
            match self.fetch_updates(offset, timeout_secs, limit).await {
                Err(FetchError::TooLarge) if limit > 1 => {
                    limit /= 2;
                    tracing::warn!(
                        limit,
                        "telegram: getUpdates answer too large; asking for fewer"
                    );
                }
                Err(FetchError::TooLarge) => {
                    return Err(ApiFailure::Other(format!(
                        "a single update is larger than {MAX_UPDATES_BODY_BYTES} bytes"
                    )))
                }
                Err(FetchError::Failed(failure)) => return Err(failure),
                Ok(batch) => return Ok(batch),
            }
        }
    }

    async fn fetch_updates(
        &self,
        offset: Option<i32>,
        timeout_secs: u32,
        limit: u8,
    ) -> Result<Batch, FetchError> {
        let mut body = serde_json::json!({
            "timeout": timeout_secs,
            "limit": limit,
            "allowed_updates": ["message"],
        });
        if let Some(offset) = offset {
            body["offset"] = offset.into();
        }
        let mut url = self.bot.api_url();
        url.path_segments_mut()
            .map_err(|()| {
                FetchError::Failed(ApiFailure::Other(
                    "telegram.api_url cannot be a base".into(),
                ))
            })?
            .push(&format!("bot{}", self.bot.token()))
            .push("getUpdates");
        let response = self
            .bot
            .client()
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| FetchError::Failed(self.transport(e)))?;
        let status = response.status();
        let body = match read_capped(response, MAX_UPDATES_BODY_BYTES).await {
            Ok(body) => body,
            Err(BodyError::TooLarge { .. }) => return Err(FetchError::TooLarge),
            Err(BodyError::Read(e)) => return Err(FetchError::Failed(self.transport(e))),
        };
        updates::decode(&body).map_err(|e| {
            FetchError::Failed(match e {
                DecodeError::Api(error) => self.classify(error),
                DecodeError::Unreadable(what) => ApiFailure::Other(format!(
                    "getUpdates answered HTTP {}, {what}",
                    status.as_u16()
                )),
            })
        })
    }

    /// A network failure, with neither URL (it holds the token) nor body.
    fn transport(&self, error: reqwest::Error) -> ApiFailure {
        ApiFailure::Other(self.scrub(&error.without_url().to_string()))
    }

    /// One of the [`MAX_WRITES_IN_FLIGHT`] write slots; the renderer holds it around each send or edit
    /// (and takes the chat's pacing slot only once it has it).
    pub async fn write_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.writes.clone().acquire_owned().await.ok()
    }

    /// Sends `text` (HTML when `html`), optionally as a reply; returns the new message's id. The caller
    /// holds a [`Self::write_slot`].
    pub async fn send_text(
        &self,
        chat: ChatId,
        text: &str,
        html: bool,
        reply_to: Option<MessageId>,
    ) -> Result<MessageId, ApiFailure> {
        let mut request = self.bot.send_message(chat, text);
        if html {
            request = request.parse_mode(ParseMode::Html);
        }
        if let Some(id) = reply_to {
            request =
                request.reply_parameters(ReplyParameters::new(id).allow_sending_without_reply());
        }
        request.await.map(|m| m.id).map_err(|e| self.classify(e))
    }

    /// Replaces a message's text (HTML when `html`). The caller holds a [`Self::write_slot`].
    pub async fn edit_text(
        &self,
        chat: ChatId,
        id: MessageId,
        text: &str,
        html: bool,
    ) -> Result<(), ApiFailure> {
        let mut request = self.bot.edit_message_text(chat, id, text);
        if html {
            request = request.parse_mode(ParseMode::Html);
        }
        request.await.map(|_| ()).map_err(|e| self.classify(e))
    }

    /// Shows "typing…" in `chat` (for about 5 s, or until the bot sends a message). Takes no write slot.
    pub async fn typing(&self, chat: ChatId) -> Result<(), ApiFailure> {
        self.bot
            .send_chat_action(chat, ChatAction::Typing)
            .await
            .map(|_| ())
            .map_err(|e| self.classify(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let api = Api::new(
            &SecretString::from("123456:CANARY-token-never-print"),
            "http://127.0.0.1:9",
        )
        .unwrap();
        assert!(!format!("{api:?}").contains("CANARY"));
        assert_eq!(
            api.scrub("failed at /bot123456:CANARY-token-never-print/GetMe"),
            "failed at /bot<token>/GetMe"
        );
    }

    #[test]
    fn errors_map_to_actions() {
        let api = Api::new(&SecretString::from("1:x"), "http://127.0.0.1:9").unwrap();
        let unknown = |text: &str| RequestError::Api(ApiError::Unknown(text.into()));
        let cases = [
            (
                RequestError::RetryAfter(teloxide::types::Seconds::from_seconds(5)),
                ApiFailure::RetryAfter(Duration::from_secs(5)),
            ),
            (
                RequestError::Api(ApiError::MessageNotModified),
                ApiFailure::NotModified,
            ),
            (
                RequestError::Api(ApiError::CantParseEntities(
                    "Bad Request: can't parse entities: x".into(),
                )),
                ApiFailure::CantParseEntities,
            ),
            (
                RequestError::Api(ApiError::TerminatedByOtherGetUpdates),
                ApiFailure::Conflict,
            ),
            (
                unknown("Bad Request: message is not modified"),
                ApiFailure::NotModified,
            ),
            (
                RequestError::Api(ApiError::MessageToEditNotFound),
                ApiFailure::MessageGone,
            ),
            // HTML that shows nothing after entity parsing: resent as plain text, never retried as is.
            (
                RequestError::Api(ApiError::MessageTextIsEmpty),
                ApiFailure::EmptyText,
            ),
            (
                unknown("Bad Request: text must be non-empty; message text is empty"),
                ApiFailure::EmptyText,
            ),
        ];
        for (error, action) in cases {
            assert_eq!(api.classify(error), action);
        }
        assert!(!ApiFailure::MessageGone.is_transient());
        assert!(!ApiFailure::EmptyText.is_transient());
    }
}
