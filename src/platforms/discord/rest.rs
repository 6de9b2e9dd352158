//! Discord REST for the adapter: building serenity's `Http` (the ONE place that decides between
//! production — Discord itself with serenity's ratelimiter — and the test proxy with the ratelimiter
//! off), and the handful of calls the adapter makes, with `allowed_mentions` empty on every message.
//! Errors carry no URL (interaction tokens live in webhook URLs) and never the bot token.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use serenity::http::{HttpError, LightMethod, Request, Route};
use serenity::model::id::{ApplicationId, ChannelId, GuildId, InteractionId, MessageId};

/// Connect timeout for REST calls: Discord answers a TCP handshake in well under a second; ten covers a
/// congested link without hanging a reply.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-call deadline for one REST call (request and JSON answer, a few KiB): 30 s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle read timeout between response bytes.
const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest REST answer read. Discord answers the adapter's calls with one message or channel object
/// (a few KiB; a message with 2000 characters and embeds stays under 64 KiB); 1 MiB bounds what a
/// broken proxy or server can make one reply buffer.
pub const MAX_REST_BODY_BYTES: usize = 1024 * 1024;
/// Used when a 429 carries no readable `retry_after` (should not happen with Discord).
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Upper bound on one wait: Discord's per-route waits are seconds; a larger value means a broken
/// server or a global ban, and waiting longer would only hold the reply hostage.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The `allowed_mentions` object sent with every message: nothing the model writes can ping
/// `@everyone`, `@here`, a role or a user (replies do not ping their author either).
pub fn no_mentions() -> Value {
    json!({ "parse": [] })
}

/// A REST failure the renderer can act on.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// HTTP 429: wait this long before the next write (the renderer coalesces edits meanwhile).
    #[error("rate limited by Discord for {0:?}")]
    RateLimited(Duration),
    /// Discord refused the call.
    #[error("Discord answered HTTP {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Discord's JSON error message.
        message: String,
    },
    /// The call did not complete (connect, timeout, body).
    #[error("Discord REST call failed: {0}")]
    Transport(String),
    /// An answer that did not decode.
    #[error("unexpected answer from Discord: {0}")]
    Decode(String),
}

/// How REST calls are executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Discord itself, paced by serenity's ratelimiter (which also waits out 429s).
    Production,
    /// The test proxy with serenity's ratelimiter disabled: the adapter honours 429 `retry_after` itself.
    Proxy,
}

/// Builds serenity's `Http` and the reqwest client under it. The only place that can point Discord
/// REST somewhere else: with `proxy_url` set, serenity's ratelimiter MUST be disabled, because serenity
/// ignores the proxy while its ratelimiter is on (serenity issue 1739) and a test would reach the real
/// Discord. Production keeps the ratelimiter and no proxy.
pub fn build_http(
    token: &SecretString,
    proxy_url: Option<&str>,
) -> Result<(serenity::http::Http, reqwest::Client, Mode), RestError> {
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| RestError::Transport(e.without_url().to_string()))?;
    let builder = serenity::http::HttpBuilder::new(token.expose_secret()).client(client.clone());
    Ok(match proxy_url {
        Some(url) => (
            builder.proxy(url).ratelimiter_disabled(true).build(),
            client,
            Mode::Proxy,
        ),
        None => (builder.build(), client, Mode::Production),
    })
}

/// The adapter's REST handle. Deliberately not `Debug`: it holds the token inside `Http`.
pub struct Rest {
    http: std::sync::Arc<serenity::http::Http>,
    client: reqwest::Client,
    mode: Mode,
}

#[derive(Deserialize)]
struct Created {
    id: MessageId,
}

#[derive(Deserialize)]
struct ChannelInfo {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    parent_id: Option<ChannelId>,
}

/// What the adapter needs to know about a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelKind {
    /// Announcement, public or private thread (types 10, 11, 12).
    pub is_thread: bool,
    /// The channel a thread belongs to.
    pub parent: Option<ChannelId>,
}

impl Rest {
    /// Wraps the client's `Http` (shared with the gateway client) and the reqwest client under it.
    pub fn new(
        http: std::sync::Arc<serenity::http::Http>,
        client: reqwest::Client,
        mode: Mode,
    ) -> Self {
        Self { http, client, mode }
    }

    /// Executes one request and returns the JSON body (or `Null` for 204).
    async fn call(&self, request: Request<'_>) -> Result<Value, RestError> {
        let response = match self.mode {
            Mode::Production => self.http.request(request).await.map_err(map_serenity)?,
            Mode::Proxy => {
                let built = request
                    .build(&self.client, self.http.token(), self.http.proxy.as_deref())
                    .map_err(map_serenity)?
                    .build()
                    .map_err(|e| RestError::Transport(e.without_url().to_string()))?;
                let response = self
                    .client
                    .execute(built)
                    .await
                    .map_err(|e| RestError::Transport(e.without_url().to_string()))?;
                if !response.status().is_success() {
                    return Err(error_from_response(response).await);
                }
                response
            }
        };
        let bytes = crate::body::read_capped(response, MAX_REST_BODY_BYTES)
            .await
            .map_err(|e| RestError::Transport(e.to_string()))?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| RestError::Decode(e.to_string()))
    }

    /// The JSON body of a request, as serenity's `Request::body` takes it (an `Option`).
    #[allow(clippy::unnecessary_wraps)]
    fn body(value: &Value) -> Option<Vec<u8>> {
        Some(serde_json::to_vec(value).unwrap_or_default())
    }

    /// Posts a message (a reply to `reply_to` if given) and returns its id.
    pub async fn create_message(
        &self,
        channel_id: ChannelId,
        content: &str,
        reply_to: Option<MessageId>,
    ) -> Result<MessageId, RestError> {
        let mut body = json!({ "content": content, "allowed_mentions": no_mentions() });
        if let Some(id) = reply_to {
            body["message_reference"] = json!({ "message_id": id, "fail_if_not_exists": false });
        }
        let request = Request::new(Route::ChannelMessages { channel_id }, LightMethod::Post)
            .body(Self::body(&body));
        created_id(self.call(request).await?)
    }

    /// Replaces a message's text.
    pub async fn edit_message(
        &self,
        channel_id: ChannelId,
        message_id: MessageId,
        content: &str,
    ) -> Result<(), RestError> {
        let body = json!({ "content": content, "allowed_mentions": no_mentions() });
        let route = Route::ChannelMessage {
            channel_id,
            message_id,
        };
        self.call(Request::new(route, LightMethod::Patch).body(Self::body(&body)))
            .await
            .map(drop)
    }

    /// Shows "typing…" in a channel for about ten seconds.
    pub async fn typing(&self, channel_id: ChannelId) -> Result<(), RestError> {
        self.call(Request::new(
            Route::ChannelTyping { channel_id },
            LightMethod::Post,
        ))
        .await
        .map(drop)
    }

    /// Whether a channel is a thread (and its parent).
    pub async fn channel_kind(&self, channel_id: ChannelId) -> Result<ChannelKind, RestError> {
        let value = self
            .call(Request::new(
                Route::Channel { channel_id },
                LightMethod::Get,
            ))
            .await?;
        let info: ChannelInfo =
            serde_json::from_value(value).map_err(|e| RestError::Decode(e.to_string()))?;
        Ok(ChannelKind {
            is_thread: matches!(info.kind, 10..=12),
            parent: info.parent_id,
        })
    }

    /// Replaces the application's slash commands, globally or in one guild.
    pub async fn register_commands(
        &self,
        application_id: ApplicationId,
        guild_id: Option<GuildId>,
        commands: &Value,
    ) -> Result<(), RestError> {
        let route = match guild_id {
            Some(guild_id) => Route::GuildCommands {
                application_id,
                guild_id,
            },
            None => Route::Commands { application_id },
        };
        self.call(Request::new(route, LightMethod::Put).body(Self::body(commands)))
            .await
            .map(drop)
    }

    /// Acknowledges a slash command with "thinking…" (a deferred response, type 5).
    pub async fn defer_interaction(
        &self,
        interaction_id: InteractionId,
        token: &str,
    ) -> Result<(), RestError> {
        let route = Route::InteractionResponse {
            interaction_id,
            token,
        };
        let body = json!({ "type": 5 });
        self.call(Request::new(route, LightMethod::Post).body(Self::body(&body)))
            .await
            .map(drop)
    }

    /// Answers a slash command at once with `content` (a channel-message response, type 4).
    pub async fn respond_interaction(
        &self,
        interaction_id: InteractionId,
        token: &str,
        content: &str,
    ) -> Result<(), RestError> {
        let route = Route::InteractionResponse {
            interaction_id,
            token,
        };
        let body = json!({
            "type": 4,
            "data": { "content": content, "allowed_mentions": no_mentions() },
        });
        self.call(Request::new(route, LightMethod::Post).body(Self::body(&body)))
            .await
            .map(drop)
    }

    /// Edits the deferred response (`message_id = None`) or a follow-up; returns the message id.
    pub async fn edit_interaction_message(
        &self,
        application_id: ApplicationId,
        token: &str,
        message_id: Option<MessageId>,
        content: &str,
    ) -> Result<MessageId, RestError> {
        let route = match message_id {
            None => Route::WebhookOriginalInteractionResponse {
                application_id,
                token,
            },
            Some(message_id) => Route::WebhookFollowupMessage {
                application_id,
                token,
                message_id,
            },
        };
        let body = json!({ "content": content, "allowed_mentions": no_mentions() });
        created_id(
            self.call(Request::new(route, LightMethod::Patch).body(Self::body(&body)))
                .await?,
        )
    }

    /// Posts a follow-up message to a slash command; returns its id.
    pub async fn interaction_followup(
        &self,
        application_id: ApplicationId,
        token: &str,
        content: &str,
    ) -> Result<MessageId, RestError> {
        let route = Route::WebhookFollowupMessages {
            application_id,
            token,
        };
        let body = json!({ "content": content, "allowed_mentions": no_mentions() });
        created_id(
            self.call(Request::new(route, LightMethod::Post).body(Self::body(&body)))
                .await?,
        )
    }
}

fn created_id(value: Value) -> Result<MessageId, RestError> {
    serde_json::from_value::<Created>(value)
        .map(|c| c.id)
        .map_err(|e| RestError::Decode(e.to_string()))
}

/// Maps serenity's error without its URL or any header.
fn map_serenity(error: serenity::Error) -> RestError {
    match error {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => {
            if response.status_code.as_u16() == 429 {
                // serenity's ratelimiter waits out 429s that carry `Retry-After`; one without it
                // reaches us and gets a short default pause.
                RestError::RateLimited(DEFAULT_RETRY_AFTER)
            } else {
                RestError::Status {
                    status: response.status_code.as_u16(),
                    message: response.error.message,
                }
            }
        }
        serenity::Error::Http(HttpError::Request(e)) => {
            RestError::Transport(e.without_url().to_string())
        }
        serenity::Error::Json(e) => RestError::Decode(e.to_string()),
        other => RestError::Transport(format!("serenity: {}", error_kind(&other))),
    }
}

/// A short name for errors whose Display might carry a URL.
fn error_kind(error: &serenity::Error) -> &'static str {
    match error {
        serenity::Error::Http(_) => "http error",
        serenity::Error::Gateway(_) => "gateway error",
        serenity::Error::Model(_) => "model error",
        _ => "error",
    }
}

/// Reads a non-success answer in proxy mode: 429 → `RateLimited(retry_after)` (body's `retry_after`
/// in seconds, else the `Retry-After` header), anything else → `Status`.
async fn error_from_response(response: reqwest::Response) -> RestError {
    let status = response.status().as_u16();
    let header = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok());
    let body: Value = crate::body::read_capped(response, MAX_REST_BODY_BYTES)
        .await
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    if status == 429 {
        let secs = body
            .get("retry_after")
            .and_then(Value::as_f64)
            .or(header)
            .filter(|s| s.is_finite() && *s >= 0.0);
        let wait = secs.map_or(DEFAULT_RETRY_AFTER, Duration::from_secs_f64);
        return RestError::RateLimited(wait.min(MAX_RETRY_AFTER));
    }
    RestError::Status {
        status,
        message: body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("no message")
            .to_owned(),
    }
}

#[derive(Deserialize)]
struct GatewayInfo {
    url: String,
}

impl Rest {
    /// For the test proxy only: checks that `GET /gateway` answers with a gateway that is not Discord's.
    /// serenity silently falls back to `wss://gateway.discord.gg` when that call fails, which a test must
    /// never reach.
    pub async fn preflight_gateway(&self) -> Result<(), RestError> {
        let value = self
            .call(Request::new(Route::Gateway, LightMethod::Get))
            .await?;
        let info: GatewayInfo =
            serde_json::from_value(value).map_err(|e| RestError::Decode(e.to_string()))?;
        if info.url.contains("discord.gg") || info.url.contains("discord.com") {
            return Err(RestError::Decode(
                "the proxy pointed at the real Discord gateway".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_keeps_the_ratelimiter_and_no_proxy() {
        let token = SecretString::from("not-a-real-token");
        let (http, _, mode) = build_http(&token, None).unwrap();
        assert_eq!(mode, Mode::Production);
        assert!(http.ratelimiter.is_some(), "serenity's ratelimiter is on");
        assert!(http.proxy.is_none(), "no proxy: requests go to Discord");
    }

    #[test]
    fn the_test_proxy_turns_the_ratelimiter_off_or_it_would_be_ignored() {
        let token = SecretString::from("not-a-real-token");
        let (http, _, mode) = build_http(&token, Some("http://127.0.0.1:9")).unwrap();
        assert_eq!(mode, Mode::Proxy);
        assert!(http.ratelimiter.is_none());
        assert_eq!(http.proxy.as_deref(), Some("http://127.0.0.1:9"));
    }
}
