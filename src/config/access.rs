//! `[access]`: who may talk to the bot, who administers it, and per-user limits.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Allow lists, admins and per-user limits. Users and chats are written `platform:id`
/// (`telegram:123456`, `discord:80351110224678912`, `terminal:local`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// Users allowed to talk to the bot, in any chat `allowed_chats` admits. Empty: anyone.
    pub allowed_users: Vec<String>,
    /// Chats the bot answers in (a direct chat too: it must be listed once this list is non-empty).
    /// Empty: any chat. With both lists set, a message passes only if its sender and its chat are listed.
    pub allowed_chats: Vec<String>,
    /// With both allow lists empty, refuse everyone but admins instead of allowing everyone. Has no effect
    /// once either list is set: a non-empty list already admits only what it names.
    pub deny_by_default: bool,
    /// Users who may use admin commands (`/system` set, `/model` pick where restricted).
    pub admins: Vec<String>,
    /// Whether `/model <name>` is for admins only.
    pub model_admin_only: bool,
    /// Messages per user per minute; more get a polite "slow down". 0 = unlimited. 12 a minute is far
    /// above a person typing and far below what would drain a free account's 20 requests a minute.
    pub user_messages_per_minute: u32,
    /// Paid-tier answers per user per UTC day; past it, only free tiers answer that user. 0 = unlimited.
    pub user_paid_requests_per_day: u32,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            allowed_users: Vec::new(),
            allowed_chats: Vec::new(),
            deny_by_default: false,
            admins: Vec::new(),
            model_admin_only: true,
            user_messages_per_minute: 12,
            user_paid_requests_per_day: 100,
        }
    }
}

impl AccessConfig {
    /// Checks every entry is `platform:id` with a known platform.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, list) in [
            ("access.allowed_users", &self.allowed_users),
            ("access.allowed_chats", &self.allowed_chats),
            ("access.admins", &self.admins),
        ] {
            for entry in list {
                let ok = entry.split_once(':').is_some_and(|(p, id)| {
                    matches!(p, "telegram" | "discord" | "terminal") && !id.is_empty()
                });
                if !ok {
                    return Err(ConfigError::new(
                        key,
                        format!("`{entry}` is not of the form platform:id"),
                        "write entries like \"telegram:123456\" or \"discord:80351110224678912\"",
                    ));
                }
            }
        }
        Ok(())
    }
}
