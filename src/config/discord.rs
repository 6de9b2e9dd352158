//! `[discord]`: the Discord adapter's settings (the token is a secret: `DISCORD_BOT_TOKEN`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::telegram::GroupPolicy;
use super::ConfigError;

/// Discord settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscordConfig {
    /// Run the adapter when a token is present.
    pub enabled: bool,
    /// For tests only: send REST calls through this proxy base URL with serenity's ratelimiter off
    /// (serenity ignores a proxy unless its ratelimiter is disabled). Unset in production.
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
    /// Minimum milliseconds between edits of a streamed reply (Discord: about one edit a second).
    pub edit_interval_ms: u64,
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
        }
    }
}

impl DiscordConfig {
    /// Checks the proxy URL.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.proxy_url {
            super::validate_url("discord.proxy_url", url)?;
        }
        Ok(())
    }
}
