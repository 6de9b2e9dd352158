//! `[discord]`: the Discord adapter's settings (the token is a secret: `DISCORD_BOT_TOKEN`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::telegram::GroupPolicy;
use super::ConfigError;

/// The smallest `edit_interval_ms` accepted against Discord: Discord allows about one edit a second per
/// message (its per-route buckets refill at that pace), and editing faster only earns 429s that delay the
/// reply's final text. Against a loopback fake (`proxy_url`, tests and benchmarks) no such limit exists,
/// so there any interval, zero included, is accepted.
pub const MIN_EDIT_INTERVAL_MS: u64 = 1000;

/// Discord settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscordConfig {
    /// Run the adapter when a token is present.
    pub enabled: bool,
    /// For tests only: send REST calls through this proxy base URL with serenity's ratelimiter off
    /// (serenity ignores a proxy unless its ratelimiter is disabled). Must be a loopback address (a fake
    /// Discord on this machine); unset in production.
    pub proxy_url: Option<String>,
    /// Default policy in guild channels.
    pub guild_policy: GroupPolicy,
    /// Per guild or channel id overrides of the policy.
    pub policies: BTreeMap<String, GroupPolicy>,
    /// Guilds the bot answers in (empty: all).
    pub allowed_guilds: Vec<String>,
    /// Roles whose members may talk to the bot (empty: everyone).
    pub allowed_roles: Vec<String>,
    /// Register slash commands in these guilds (instant); empty registers them globally.
    pub command_guilds: Vec<String>,
    /// Minimum milliseconds between edits of a streamed reply; at least [`MIN_EDIT_INTERVAL_MS`]
    /// against Discord.
    pub edit_interval_ms: u64,
    /// The most messages one reply may produce; a longer answer ends in the last with a note that it
    /// was cut. 20 messages of 2,000 characters hold what Telegram's 10 do (about 40,000 characters),
    /// beyond any chat answer, while a runaway model cannot flood a channel. 0 is read as 1.
    pub max_reply_messages: usize,
}

impl Default for DiscordConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            proxy_url: None,
            guild_policy: GroupPolicy::Mention,
            policies: BTreeMap::new(),
            allowed_guilds: Vec::new(),
            allowed_roles: Vec::new(),
            command_guilds: Vec::new(),
            edit_interval_ms: 1000,
            max_reply_messages: 20,
        }
    }
}

impl DiscordConfig {
    /// Checks the proxy URL (loopback only: with it serenity's ratelimiter is off, which is safe only
    /// against a fake on this machine) and the edit pacing.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.proxy_url {
            super::validate_url("discord.proxy_url", url)?;
            if !is_loopback_url(url) {
                return Err(ConfigError::new(
                    "discord.proxy_url",
                    format!("`{url}` is not a loopback address; the proxy turns off serenity's rate limiter and exists only for a fake Discord in tests"),
                    "remove proxy_url to talk to Discord, or point it at 127.0.0.1, [::1] or localhost",
                ));
            }
        } else if self.edit_interval_ms < MIN_EDIT_INTERVAL_MS {
            return Err(ConfigError::new(
                "discord.edit_interval_ms",
                format!(
                    "{} ms is below Discord's pace of about one edit a second per message",
                    self.edit_interval_ms
                ),
                format!("set it to {MIN_EDIT_INTERVAL_MS} or more"),
            ));
        }
        Ok(())
    }
}

/// Whether an `http(s)://` URL's host is loopback: `localhost`, 127.0.0.0/8 or `::1`. A URL with user
/// info (`http://127.0.0.1@example.org`) is refused, since its real host is after the `@`.
fn is_loopback_url(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_proxy(url: &str) -> DiscordConfig {
        DiscordConfig {
            proxy_url: Some(url.to_owned()),
            ..DiscordConfig::default()
        }
    }

    #[test]
    fn the_proxy_must_be_loopback() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.3.4.5",
            "http://localhost:1/api",
            "http://[::1]:9000",
        ] {
            assert!(with_proxy(ok).validate().is_ok(), "{ok}");
        }
        for bad in [
            "https://discord.com",
            "http://10.0.0.1:8080",
            "http://127.0.0.1@evil.example",
            "http://127.0.0.1.example.org",
            "http://[::2]:80",
        ] {
            let error = with_proxy(bad).validate().unwrap_err();
            assert_eq!(error.key, "discord.proxy_url", "{bad}");
        }
    }

    #[test]
    fn edits_are_paced_at_least_once_a_second_against_discord() {
        let mut config = DiscordConfig {
            edit_interval_ms: 200,
            ..DiscordConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().key,
            "discord.edit_interval_ms"
        );
        config.edit_interval_ms = MIN_EDIT_INTERVAL_MS;
        assert!(config.validate().is_ok());
        // Against a loopback fake the pace is free (tests and benchmarks).
        let mut fake = with_proxy("http://127.0.0.1:1");
        fake.edit_interval_ms = 0;
        assert!(fake.validate().is_ok());
    }
}
