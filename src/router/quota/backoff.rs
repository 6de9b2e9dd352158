//! Pure helpers of the quota policy: the per-minute backoff with jitter and the daily free-request limit
//! inferred from what `GET /key` reports.

use std::time::Duration;

/// OpenRouter's free requests per UTC day for an account that never bought credits (`is_free_tier`).
pub const FREE_TIER_DAILY_REQUESTS: u64 = 50;
/// OpenRouter's free requests per UTC day once an account bought at least 10 credits.
pub const CREDITED_DAILY_REQUESTS: u64 = 1000;

/// The daily free-request limit of an OpenRouter account: as reported, else inferred from `is_free_tier`
/// (older `GET /auth/key` answers lack `free_model_daily_requests` but say whether credits were bought).
pub fn free_daily_limit(reported: Option<u64>, is_free_tier: Option<bool>) -> Option<u64> {
    reported.or_else(|| {
        is_free_tier.map(|free| {
            if free {
                FREE_TIER_DAILY_REQUESTS
            } else {
                CREDITED_DAILY_REQUESTS
            }
        })
    })
}

/// The first per-minute backoff when a 429 names no wait: a few seconds lets a burst pass.
const BACKOFF_BASE_MS: u64 = 2_000;
/// The longest per-minute backoff: a per-minute window never needs more than a minute to clear.
const BACKOFF_MAX_MS: u64 = 60_000;

/// How long to cool an account down after the `step`-th consecutive per-minute 429 that named no wait:
/// exponential from 2 s, capped at 60 s, with "equal jitter" (half fixed, half random by `jitter` in
/// `[0, 1)`) so several accounts rate-limited together do not come back in lock step.
pub fn backoff_with_jitter(step: u32, jitter: f64) -> Duration {
    let exp = BACKOFF_BASE_MS
        .saturating_mul(1u64 << step.min(16))
        .min(BACKOFF_MAX_MS);
    let half = exp / 2;
    let jitter = jitter.clamp(0.0, 1.0);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let extra = (half as f64 * jitter) as u64;
    Duration::from_millis(half + extra)
}
