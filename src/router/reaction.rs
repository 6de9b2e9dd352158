//! The error taxonomy: what the router learns from each [`ProviderError`] and where the turn goes next.
//! [`reaction`] is one exhaustive `match` with no wildcard, so a new error variant does not compile until
//! someone decides what it means; [`Shared::react`] applies it to the account state.

use std::time::Duration;

use super::accounts::{Lease, Shared};
use super::policy::{Policy, Tier};
use super::quota::backoff_with_jitter;
use crate::providers::ProviderError;

/// What the account state learns from an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Learn {
    /// Nothing about the account or the model.
    Nothing,
    /// The account's daily quota is spent: out until 00:00 UTC.
    DailyQuotaSpent,
    /// A per-minute limit: out for the named wait, until the named reset, or for a backoff.
    RateLimited {
        retry_after: Option<Duration>,
        reset_at_ms: Option<i64>,
    },
    /// 402: the account is out for the payment cooldown, and the operator is warned once.
    NoCredits,
    /// 401/403: the key is out until a reload, and the operator is told loudly once.
    KeyRejected { status: u16 },
    /// The model does not exist there: skipped for an hour.
    ModelMissing,
}

/// Where the turn goes after an error before the first token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Same model, another account (this one is now held or rejected).
    Account,
    /// This key failed for now (5xx, timeout, stall): avoid it for the rest of the turn, so the tier's
    /// other keys are tried before a paid request is spent. The next model goes to another key; on the
    /// tier's last model the same model is retried on another key.
    OtherKey,
    /// Skip to the next model (the model is failing or its answers cannot be read).
    Model,
    /// Send again with a smaller context, or move on if it cannot shrink.
    Refit,
    /// The provider's content filter declined this request: try the next model (the key is fine).
    Declined,
    /// The endpoint cannot be reached at all: skip the rest of its candidates for this turn (every
    /// other model and key there would only fail the same way, one connect timeout each).
    EndpointDown,
}

/// The reaction to one error: what is learned, and where the turn goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Reaction {
    /// What the account state learns.
    pub learn: Learn,
    /// Where the turn goes.
    pub next: Next,
}

/// The reaction table: every provider error before the first token, and what the router does about it.
pub(super) fn reaction(error: &ProviderError) -> Reaction {
    let (learn, next) = match *error {
        ProviderError::RateLimited { daily: true, .. } => (Learn::DailyQuotaSpent, Next::Account),
        ProviderError::RateLimited {
            retry_after,
            reset_at_ms,
            daily: false,
        } => (
            Learn::RateLimited {
                retry_after,
                reset_at_ms,
            },
            Next::Account,
        ),
        ProviderError::PaymentRequired => (Learn::NoCredits, Next::Account),
        ProviderError::Unauthorized { status } => (Learn::KeyRejected { status }, Next::Account),
        ProviderError::Refused => (Learn::Nothing, Next::Declined),
        ProviderError::ContextTooLong => (Learn::Nothing, Next::Refit),
        ProviderError::ModelNotFound => (Learn::ModelMissing, Next::Model),
        ProviderError::Connect => (Learn::Nothing, Next::EndpointDown),
        ProviderError::Upstream { .. }
        | ProviderError::Timeout
        | ProviderError::Stalled
        | ProviderError::Truncated
        | ProviderError::MidStream { .. } => (Learn::Nothing, Next::OtherKey),
        ProviderError::Malformed(_) => (Learn::Nothing, Next::Model),
    };
    Reaction { learn, next }
}

impl Shared {
    /// Applies the reaction to `error` on the leased account: a hold it records is flushed to disk before
    /// the turn goes on. Returns where the turn goes next.
    pub async fn react(
        &self,
        policy: &Policy,
        tier: &Tier,
        model: &str,
        lease: Lease,
        error: &ProviderError,
        now: i64,
    ) -> Next {
        tracing::info!(tier = %tier.name, provider = %tier.provider_name, model, "provider call failed: {error}");
        let Reaction { learn, next } = reaction(error);
        let cooldown = policy.switches.payment_cooldown;
        let persist = {
            let mut st = self.lock();
            let book = &mut st.book;
            match learn {
                Learn::DailyQuotaSpent => Some(book.hold_daily(lease.account, now)),
                Learn::RateLimited {
                    retry_after,
                    reset_at_ms,
                } => {
                    let step = book.accounts[lease.account].record.backoff_step;
                    let (until, backed_off) = rate_limit_until(retry_after, reset_at_ms, step, now);
                    Some(book.hold_rate_limited(lease.account, until, backed_off))
                }
                Learn::NoCredits => Some(book.hold_no_credits(lease.account, now, cooldown)),
                Learn::KeyRejected { .. } | Learn::ModelMissing | Learn::Nothing => None,
            }
        };
        if let Some(p) = persist {
            self.write(&p);
            self.flush().await;
        }
        match learn {
            Learn::NoCredits => self.warn_no_credits(lease.key, cooldown.as_secs()),
            Learn::KeyRejected { status } => self.reject(lease.key, status),
            Learn::ModelMissing => self.mark_missing(tier, model, now),
            Learn::DailyQuotaSpent | Learn::RateLimited { .. } | Learn::Nothing => {}
        }
        next
    }
}

/// Until when a per-minute 429 holds an account, and whether that was a backoff step: the provider's
/// `Retry-After` wins, then its reset time, else an exponential backoff with jitter.
fn rate_limit_until(
    retry_after: Option<Duration>,
    reset_at_ms: Option<i64>,
    backoff_step: u32,
    now: i64,
) -> (i64, bool) {
    match (retry_after, reset_at_ms) {
        (Some(wait), _) => (
            now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2),
            false,
        ),
        (None, Some(reset)) if reset > now => (reset, false),
        _ => {
            let wait = backoff_with_jitter(backoff_step, fastrand::f64());
            (now + i64::try_from(wait.as_millis()).unwrap_or(0), true)
        }
    }
}
