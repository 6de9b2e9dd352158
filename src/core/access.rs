//! Access control and per-user rate limits: allow lists of users and chats (empty = everyone unless
//! `deny_by_default`), admins, and a per-user message rate (governor). The terminal is the operator.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::is_local;
use crate::config::access::AccessConfig;
use crate::domain::{Inbound, UserRef};

/// The polite refusal an unknown user gets (once).
pub const NOT_ALLOWED_MESSAGE: &str =
    "Sorry, I'm not set up to talk with you here. If you think you should have access, ask the bot's operator.";
/// How often the rate limiter forgets idle users (every this many checks), so its memory stays bounded.
const RATE_LIMITER_SWEEP_EVERY: u64 = 4096;

/// Access decisions and the per-user rate limiter.
pub struct Access {
    limiter: RwLock<Option<(u32, DefaultKeyedRateLimiter<String>)>>,
    checks: AtomicU64,
}

impl Access {
    /// Access control for `config`.
    pub fn new(config: &AccessConfig) -> Self {
        Self {
            limiter: RwLock::new(build_limiter(config.user_messages_per_minute)),
            checks: AtomicU64::new(0),
        }
    }

    /// Rebuilds the rate limiter if the rate changed.
    pub fn reload(&self, config: &AccessConfig) {
        let mut limiter = self.limiter.write().unwrap_or_else(|e| e.into_inner());
        if limiter.as_ref().map(|(rate, _)| *rate) != Some(config.user_messages_per_minute) {
            *limiter = build_limiter(config.user_messages_per_minute);
        }
    }

    /// Whether the sender may talk here; `Err` carries the refusal to show.
    pub fn admit(&self, config: &AccessConfig, inbound: &Inbound) -> Result<(), String> {
        if is_local(inbound.chat.platform) {
            return Ok(());
        }
        let user = inbound.sender.user.to_string();
        let chat = inbound.chat.to_string();
        let admin = config.admins.contains(&user);
        let user_ok = if config.allowed_users.is_empty() {
            !config.deny_by_default
        } else {
            config.allowed_users.contains(&user)
        };
        let chat_ok = if config.allowed_chats.is_empty() {
            !config.deny_by_default
        } else {
            config.allowed_chats.contains(&chat)
        };
        // With both lists set, either admits: an allowed person anywhere, or anyone in an allowed chat.
        let admitted = admin
            || match (
                config.allowed_users.is_empty(),
                config.allowed_chats.is_empty(),
            ) {
                (false, false) => user_ok || chat_ok,
                _ => user_ok && chat_ok,
            };
        if admitted {
            Ok(())
        } else {
            Err(NOT_ALLOWED_MESSAGE.to_owned())
        }
    }

    /// Whether `user` is an admin (the terminal's user always is).
    pub fn is_admin(config: &AccessConfig, user: &UserRef) -> bool {
        is_local(user.platform) || config.admins.contains(&user.to_string())
    }

    /// Counts one message against `user`'s rate; false when over the limit.
    pub fn within_rate(&self, user: &UserRef) -> bool {
        if is_local(user.platform) {
            return true;
        }
        let guard = self.limiter.read().unwrap_or_else(|e| e.into_inner());
        let Some((_, limiter)) = guard.as_ref() else {
            return true;
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % RATE_LIMITER_SWEEP_EVERY == 0 {
            limiter.retain_recent();
        }
        limiter.check_key(&user.to_string()).is_ok()
    }
}

fn build_limiter(per_minute: u32) -> Option<(u32, DefaultKeyedRateLimiter<String>)> {
    NonZeroU32::new(per_minute).map(|n| (per_minute, RateLimiter::keyed(Quota::per_minute(n))))
}
