//! Access control and per-user rate limits: allow lists of users and chats (each non-empty list must
//! pass; both empty = everyone unless `deny_by_default`), admins, and a per-user message rate (governor).
//! The terminal is the operator.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

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
    /// Users told "slow down" since their last admitted message: they are not told again until the
    /// limiter lets one of their messages through (the window freed), so a burst gets one answer.
    told: Mutex<HashSet<String>>,
}

/// What the per-user rate limit says about one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    /// Within the limit: answer it.
    Within,
    /// Over the limit, the first time in this window: say "slow down" once.
    OverTell,
    /// Over the limit and already told: stay silent until the window frees.
    OverSilent,
}

impl Access {
    /// Access control for `config`.
    pub fn new(config: &AccessConfig) -> Self {
        Self {
            limiter: RwLock::new(build_limiter(config.user_messages_per_minute)),
            checks: AtomicU64::new(0),
            told: Mutex::default(),
        }
    }

    /// Rebuilds the rate limiter if the rate changed.
    pub fn reload(&self, config: &AccessConfig) {
        let mut limiter = self
            .limiter
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
        if admitted(config, &user, &chat) {
            Ok(())
        } else {
            Err(NOT_ALLOWED_MESSAGE.to_owned())
        }
    }

    /// Whether `user` is an admin (the terminal's user always is).
    pub fn is_admin(config: &AccessConfig, user: &UserRef) -> bool {
        is_local(user.platform) || config.admins.contains(&user.to_string())
    }

    /// Counts one message against `user`'s rate: whether to answer it, say "slow down" (once per
    /// window) or stay silent.
    pub fn rate(&self, user: &UserRef) -> Rate {
        if is_local(user.platform) {
            return Rate::Within;
        }
        let guard = self
            .limiter
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((_, limiter)) = guard.as_ref() else {
            return Rate::Within;
        };
        let mut told = self
            .told
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.checks.fetch_add(1, Ordering::Relaxed) % RATE_LIMITER_SWEEP_EVERY == 0 {
            limiter.retain_recent();
            // Bounded memory too: forgetting who was told costs at most one more "slow down" each.
            told.clear();
        }
        let key = user.to_string();
        if limiter.check_key(&key).is_ok() {
            told.remove(&key);
            Rate::Within
        } else if told.insert(key) {
            Rate::OverTell
        } else {
            Rate::OverSilent
        }
    }
}

/// The allow-list decision for `user` (`platform:id`) writing in `chat`. Admins are always admitted.
/// Each non-empty list is a restriction that must pass: `allowed_users` says who, `allowed_chats` says
/// where, and with both set a listed user is answered only in a listed chat. An empty list leaves its
/// dimension open; `deny_by_default` matters only when both lists are empty (then nobody but admins).
/// Lists narrow access and never widen it, so adding an entry to one list can never let in someone the
/// other list keeps out.
fn admitted(config: &AccessConfig, user: &str, chat: &str) -> bool {
    if config.admins.iter().any(|a| a == user) {
        return true;
    }
    let (users, chats) = (&config.allowed_users, &config.allowed_chats);
    if users.is_empty() && chats.is_empty() {
        return !config.deny_by_default;
    }
    let user_ok = users.is_empty() || users.iter().any(|u| u == user);
    let chat_ok = chats.is_empty() || chats.iter().any(|c| c == chat);
    user_ok && chat_ok
}

fn build_limiter(per_minute: u32) -> Option<(u32, DefaultKeyedRateLimiter<String>)> {
    NonZeroU32::new(per_minute).map(|n| (per_minute, RateLimiter::keyed(Quota::per_minute(n))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(users: &[&str], chats: &[&str], deny: bool) -> AccessConfig {
        AccessConfig {
            allowed_users: users.iter().map(|s| (*s).to_owned()).collect(),
            allowed_chats: chats.iter().map(|s| (*s).to_owned()).collect(),
            deny_by_default: deny,
            admins: vec!["telegram:9".into()],
            ..AccessConfig::default()
        }
    }

    #[test]
    fn empty_lists_follow_deny_by_default_and_admins_always_pass() {
        assert!(admitted(
            &config(&[], &[], false),
            "telegram:1",
            "telegram:-5"
        ));
        assert!(!admitted(
            &config(&[], &[], true),
            "telegram:1",
            "telegram:-5"
        ));
        assert!(admitted(
            &config(&[], &[], true),
            "telegram:9",
            "telegram:-5"
        ));
        assert!(admitted(
            &config(&["telegram:2"], &["telegram:-6"], true),
            "telegram:9",
            "telegram:-5"
        ));
    }

    #[test]
    fn a_non_empty_list_restricts_only_its_own_dimension_whatever_deny_by_default() {
        for deny in [false, true] {
            let users = config(&["telegram:1"], &[], deny);
            assert!(admitted(&users, "telegram:1", "telegram:1"), "deny={deny}");
            assert!(admitted(&users, "telegram:1", "telegram:-5"), "deny={deny}");
            assert!(
                !admitted(&users, "telegram:2", "telegram:-5"),
                "deny={deny}"
            );
            let chats = config(&[], &["telegram:-5"], deny);
            assert!(admitted(&chats, "telegram:2", "telegram:-5"), "deny={deny}");
            assert!(!admitted(&chats, "telegram:2", "telegram:2"), "deny={deny}");
        }
    }

    #[test]
    fn with_both_lists_a_listed_user_is_answered_only_in_a_listed_chat() {
        let both = config(&["telegram:1"], &["telegram:-5"], false);
        assert!(admitted(&both, "telegram:1", "telegram:-5"));
        assert!(!admitted(&both, "telegram:1", "telegram:-6"));
        assert!(!admitted(&both, "telegram:2", "telegram:-5"));
    }
}
