//! Per-user and per-chat usage counters per UTC day (requests, tokens, paid requests), kept in the store
//! for `/usage` and for the per-user daily cap on paid-tier requests.

use serde::{Deserialize, Serialize};

use super::Core;
use crate::clock::utc_day;
use crate::config::Config;
use crate::domain::{AnswerSource, ChatRef, Inbound, Usage, UserRef};
use crate::store::{decode, encode, get_json, DatedNamespace};

/// The store namespace of the counters.
const NS: &str = "core.usage";
/// Counters are kept 35 days and then aged out by the retention sweep: `/usage` and the paid cap read only
/// today, and 35 days still covers a whole calendar month for an operator reading the store after it.
pub(super) const DATED: DatedNamespace = DatedNamespace {
    ns: NS,
    keep_days: 35,
};

/// One day's counters for a user or a chat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCounter {
    /// Requests answered (or attempted) by a model.
    pub requests: u64,
    /// Of those, answered by a paid tier.
    pub paid_requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

fn user_key(day: i64, user: &UserRef) -> String {
    format!("{day}/user/{user}")
}

fn chat_key(day: i64, chat: &ChatRef) -> String {
    format!("{day}/chat/{chat}")
}

/// Today's counters for `user`.
pub(super) fn user_today(core: &Core, user: &UserRef) -> UsageCounter {
    read(core, &user_key(utc_day(core.now_ms()), user))
}

/// Today's counters for `chat`.
pub(super) fn chat_today(core: &Core, chat: &ChatRef) -> UsageCounter {
    read(core, &chat_key(utc_day(core.now_ms()), chat))
}

/// Today's local-API usage, all callers together, from the router's per-user counters (API requests
/// do not pass through the core, so the core's own counters never see them).
pub(super) fn api_today(core: &Core) -> crate::router::usage::UsageRecord {
    let api_user = format!("{}:", crate::domain::Platform::Api);
    let mut total = crate::router::usage::UsageRecord::default();
    let today = crate::router::usage::day_usage(core.store.as_ref(), utc_day(core.now_ms()));
    for (key, rec) in today {
        // Keys are `provider/model/user`; model names may hold `/`, user ids of the API never do.
        if key
            .rsplit_once('/')
            .is_some_and(|(_, user)| user.starts_with(&api_user))
        {
            total.requests += rec.requests;
            total.prompt_tokens += rec.prompt_tokens;
            total.completion_tokens += rec.completion_tokens;
        }
    }
    total
}

fn read(core: &Core, key: &str) -> UsageCounter {
    get_json(core.store.as_ref(), NS, key)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Whether `user` may still be answered by a paid tier today.
pub(super) fn paid_allowed(core: &Core, config: &Config, user: &UserRef) -> bool {
    let cap = u64::from(config.access.user_paid_requests_per_day);
    cap == 0 || super::is_local(user.platform) || user_today(core, user).paid_requests < cap
}

/// Counts one model request (and its tokens) for the sender and the chat.
pub(super) fn record(core: &Core, inbound: &Inbound, source: Option<&AnswerSource>, usage: Usage) {
    let day = utc_day(core.now_ms());
    let paid = source.is_some_and(|s| s.tier.is_paid());
    for key in [
        user_key(day, &inbound.sender.user),
        chat_key(day, &inbound.chat),
    ] {
        let result = core.store.kv_update(NS, &key, &mut |old| {
            let mut counter: UsageCounter = old.and_then(|b| decode(b).ok()).unwrap_or_default();
            counter.requests += 1;
            counter.paid_requests += u64::from(paid);
            counter.prompt_tokens += usage.prompt_tokens;
            counter.completion_tokens += usage.completion_tokens;
            encode(&counter).ok()
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not record usage");
        }
    }
}
