//! `[telegram]`: the Telegram adapter's settings (the token is a secret: `TELEGRAM_BOT_TOKEN`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{validate_url, ConfigError};

/// When the bot answers in a group chat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupPolicy {
    /// When mentioned, replied to, or given a command.
    #[default]
    Mention,
    /// Only when replied to, or given a command.
    Reply,
    /// Every message.
    All,
}

/// Telegram settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelegramConfig {
    /// Run the adapter when a token is present.
    pub enabled: bool,
    /// Bot API base URL (a self-hosted Bot API server, or a fake in tests).
    pub api_url: String,
    /// Default policy in groups.
    pub group_policy: GroupPolicy,
    /// Minimum milliseconds between requests (sends and edits) of streamed replies in private chats
    /// (Telegram: about one message a second per chat).
    pub edit_interval_private_ms: u64,
    /// Minimum milliseconds between requests (sends and edits) in groups. Telegram allows 20 messages a
    /// minute per group, which is 3000 ms; the default 3500 (about 17 a minute) leaves a margin for the
    /// bursts the pacer allows (a plain-text resend goes at once after a rejected send) and for clock
    /// differences between us and Telegram.
    pub edit_interval_group_ms: u64,
    /// Stream replies by editing a message; off sends the answer once, complete.
    pub streaming: bool,
    /// The most messages one reply may produce; a longer answer ends in the last with a note that it
    /// was cut. 10 messages hold about 40,000 characters (some 10,000 tokens): beyond any chat answer
    /// and any `max_tokens` sized for chat, so only a runaway model meets it, and it cannot flood a
    /// chat (each message costs a flood-control slot, and every edit of it another). 0 is read as 1.
    pub max_reply_messages: usize,
    /// Per-chat overrides by chat id.
    pub chats: BTreeMap<String, TelegramChatConfig>,
    /// The bot's @username for mention matching; `None` uses what `getMe` reports.
    pub bot_username: Option<String>,
    /// Long-poll hold in seconds. Must stay below the HTTP client's 17 s total timeout (teloxide's
    /// default, tuned for long runs), or every idle poll would end in a timeout error.
    pub poll_timeout_secs: u32,
}

/// The longest long-poll hold accepted: 2 s under the client's 17 s total timeout.
pub const MAX_POLL_TIMEOUT_SECS: u32 = 15;

/// Per-chat overrides.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelegramChatConfig {
    /// This chat's group policy.
    pub policy: Option<GroupPolicy>,
    /// Whether to stream in this chat.
    pub streaming: Option<bool>,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            api_url: "https://api.telegram.org".into(),
            group_policy: GroupPolicy::Mention,
            edit_interval_private_ms: 1000,
            edit_interval_group_ms: 3500,
            streaming: true,
            max_reply_messages: 10,
            chats: BTreeMap::new(),
            bot_username: None,
            poll_timeout_secs: 10,
        }
    }
}

impl TelegramConfig {
    /// Checks the URL and the poll hold.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.poll_timeout_secs > MAX_POLL_TIMEOUT_SECS {
            return Err(ConfigError::new(
                "telegram.poll_timeout_secs",
                format!(
                    "{} is above {MAX_POLL_TIMEOUT_SECS}",
                    self.poll_timeout_secs
                ),
                "set it to 10 (the HTTP client gives up after 17 s)",
            ));
        }
        validate_url("telegram.api_url", &self.api_url)
    }

    /// The group policy in force for `chat_id`.
    pub fn policy(&self, chat_id: &str) -> GroupPolicy {
        self.chats
            .get(chat_id)
            .and_then(|c| c.policy)
            .unwrap_or(self.group_policy)
    }

    /// Whether replies stream (paced edits) in `chat_id`.
    pub fn streaming(&self, chat_id: &str) -> bool {
        self.chats
            .get(chat_id)
            .and_then(|c| c.streaming)
            .unwrap_or(self.streaming)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Env};

    #[test]
    fn the_example_config_parses_and_per_chat_overrides_apply() {
        let text = include_str!("../../config/switchboard.example.toml");
        let config = parse(text, "example", &Env::default()).unwrap();
        assert_eq!(config.telegram.poll_timeout_secs, 10);
        let config = parse(
            "[telegram]\ngroup_policy = \"reply\"\n[telegram.chats.\"-100\"]\npolicy = \"all\"\nstreaming = false\n",
            "<test>",
            &Env::default(),
        )
        .unwrap();
        assert_eq!(config.telegram.policy("-100"), GroupPolicy::All);
        assert_eq!(config.telegram.policy("-200"), GroupPolicy::Reply);
        assert!(!config.telegram.streaming("-100") && config.telegram.streaming("-200"));
        let err = parse(
            "[telegram]\npoll_timeout_secs = 30\n",
            "<test>",
            &Env::default(),
        )
        .unwrap_err();
        assert_eq!(err.key, "telegram.poll_timeout_secs");
    }
}
