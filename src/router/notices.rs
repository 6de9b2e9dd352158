//! What the user is told about routing: why a tier did not answer ([`TierOutcome`]), the one-time paid
//! notice, the one-time "this free account is out of requests, moving on" notice, and the friendly final
//! messages when nothing answered, a model declined, or a reply was cut.

use crate::clock::next_utc_midnight;

/// Why a tier did not answer, for the notices and the final "unavailable" message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TierOutcome {
    /// Not tried (an earlier tier answered or it was never reached).
    Untried,
    /// Every account's daily quota is spent.
    QuotaUsedUp,
    /// Accounts are at their per-minute limit.
    Busy,
    /// Accounts are out of credits.
    NoCredits,
    /// Every key was rejected.
    KeysRejected,
    /// Providers failed (5xx, timeouts, missing models, …).
    Failing,
    /// The provider's content filter declined this message.
    Refused,
    /// Policy: free only.
    FreeOnly,
    /// Policy: the paid tier is off.
    PaidOff,
    /// This user's paid cap is reached.
    UserCap,
    /// The global paid cap is reached.
    GlobalCap,
}

/// Shown when every model that was asked declined the message (a content filter flagged it).
/// The answer to every message when no model tier is usable at all (no key set, or no model listed):
/// waiting will not help, the operator has to add keys.
pub const NO_MODELS_MESSAGE: &str = "No model is set up, so I cannot answer: no model keys are \
     configured. The operator adds one — OPENROUTER_API_KEY_1 (free tier) or OLLAMA_API_KEY (paid tier) in \
     the environment, or a [[tiers]] entry with key_env — and restarts; `switchboard check` shows what is \
     missing.";

pub(super) const DECLINED_MESSAGE: &str =
    "The provider declined this message (its content filter flagged it), so there is no answer. Try rephrasing it.";

/// Shown when a reply is cut after it started.
pub(super) const INTERRUPTED_MESSAGE: &str =
    "The model stopped answering mid-reply, so this answer is incomplete. Send your message again to retry.";

/// The store key (in the router namespace) of a conversation's "paid notice shown" flag.
pub(super) fn paid_notice_key(conversation: &impl std::fmt::Display) -> String {
    format!("notice/{conversation}")
}

/// The store key of the last "account out of free requests" notice a conversation was shown; its value
/// names the account and the UTC day, so each account's outage is told once per conversation and day
/// while the store keeps one small value per conversation.
pub(super) fn out_notice_key(conversation: &impl std::fmt::Display) -> String {
    format!("notice-out/{conversation}")
}

/// The paid notice: why the free tiers did not answer, and who answers instead.
pub(super) fn paid_notice(free: TierOutcome, explicit: bool, model: &str, display: &str) -> String {
    format!(
        "{} — answering with {model} on {display}.",
        notice_reason(free, explicit)
    )
}

/// The notice when a free account's daily quota is spent and the next account answers: account labels
/// only, never key material. `until_ms` is when the spent account is back.
pub(super) fn out_of_free_notice(spent: &str, until_ms: i64, now_ms: i64, next: &str) -> String {
    let until = if until_ms <= next_utc_midnight(now_ms) {
        "00:00 UTC".to_owned()
    } else {
        chrono::DateTime::from_timestamp_millis(until_ms)
            .map_or_else(|| "later".into(), |t| t.format("%H:%M UTC").to_string())
    };
    format!(
        "{} is out of free requests until {until} — moving to {}.",
        spoken(spent),
        spoken(next)
    )
}

/// How an account is named to users: an account labelled by its key's variable, `OPENROUTER_API_KEY_2`,
/// is "key 2" (`OPENROUTER_API_KEY` alone is "key 1"); a configured account label is used as is.
fn spoken(label: &str) -> String {
    match label.strip_prefix("OPENROUTER_API_KEY") {
        Some("") => "key 1".to_owned(),
        Some(n) => n
            .strip_prefix('_')
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .map_or_else(|| label.to_owned(), |n| format!("key {n}")),
        None => label.to_owned(),
    }
}

/// The reason shown in the paid notice, from what happened to the free tiers.
fn notice_reason(free: TierOutcome, explicit: bool) -> &'static str {
    if explicit {
        return "You picked a paid model";
    }
    match free {
        TierOutcome::QuotaUsedUp => "Free quota is used up until 00:00 UTC",
        TierOutcome::Busy => "The free models are at their per-minute limit",
        TierOutcome::NoCredits => "The free accounts are out of credits",
        TierOutcome::KeysRejected => "The free tier's keys were rejected",
        TierOutcome::Failing => "The free models are not answering right now",
        TierOutcome::Refused => "The free models declined this message",
        _ => "No free tier is configured",
    }
}

/// The friendly message when nothing could answer.
pub(super) fn unavailable_message(free: TierOutcome, paid: TierOutcome) -> String {
    let free_part = match free {
        TierOutcome::QuotaUsedUp => "The free quota is used up until 00:00 UTC",
        TierOutcome::Busy => "The free models are busy right now",
        TierOutcome::NoCredits | TierOutcome::KeysRejected => "The free tier is unavailable",
        TierOutcome::Failing => "The free models are not answering right now",
        _ => "No free model is available",
    };
    let paid_part = match paid {
        TierOutcome::FreeOnly | TierOutcome::PaidOff => " and the paid models are switched off",
        TierOutcome::UserCap => " and you reached today's limit for the paid models",
        TierOutcome::GlobalCap => " and today's paid-model budget is spent",
        TierOutcome::Untried => "",
        _ => " and the paid models are not answering either",
    };
    let when = if free == TierOutcome::QuotaUsedUp && paid != TierOutcome::Failing {
        "after 00:00 UTC"
    } else {
        "in a minute"
    };
    format!("{free_part}{paid_part}. Please try again {when}.")
}
