//! Usage accounting: requests and tokens per provider, model, user and UTC day, and the paid tier's daily
//! request count and estimated spend. Counters live in the store (namespace [`super::quota::NS`]) so they
//! survive restarts; the paid-day totals are also cached in memory for the cap check on every request.

use serde::{Deserialize, Serialize};

use super::quota::NS;
use crate::config::providers::Price;
use crate::domain::{Usage, UserRef};
use crate::store::{decode, encode, Store};

/// Tokens per million, the unit prices are quoted in.
const TOKENS_PER_PRICE_UNIT: f64 = 1_000_000.0;

/// One usage counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Answered requests.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

/// The paid tier's totals for one UTC day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PaidDay {
    /// The UTC day number.
    pub day: i64,
    /// Paid requests sent (each costs, answered or not).
    pub requests: u64,
    /// Estimated spend in US dollars from the configured prices.
    pub cost_usd: f64,
    /// Whether the daily spend alert was already logged.
    pub alerted: bool,
    /// Bumped on every change, so a stale write is skipped (see [`super::quota::write_newer`]).
    #[serde(default)]
    pub version: u64,
}

impl super::quota::Versioned for PaidDay {
    fn version(&self) -> u64 {
        self.version
    }
}

/// The store key of the paid-day totals.
pub const PAID_DAY_KEY: &str = "paid/day";

/// The store key of one usage counter. `/` inside names is kept: keys are only ever read by prefix.
pub fn usage_key(day: i64, provider: &str, model: &str, user: &UserRef) -> String {
    format!("usage/{day}/{provider}/{model}/{user}")
}

/// Adds one answered request with `usage` to its counter.
pub fn record(
    store: &dyn Store,
    day: i64,
    provider: &str,
    model: &str,
    user: &UserRef,
    usage: Usage,
) {
    let key = usage_key(day, provider, model, user);
    let result = store.kv_update(NS, &key, &mut |old| {
        let mut rec: UsageRecord = old.and_then(|b| decode(b).ok()).unwrap_or_default();
        rec.requests += 1;
        rec.prompt_tokens += usage.prompt_tokens;
        rec.completion_tokens += usage.completion_tokens;
        encode(&rec).ok()
    });
    if let Err(e) = result {
        tracing::warn!("usage counter not written: {e}");
    }
}

/// Every usage counter of UTC day `day`, as (`provider/model/user`, counter).
pub fn day_usage(store: &dyn Store, day: i64) -> Vec<(String, UsageRecord)> {
    let prefix = format!("usage/{day}/");
    store
        .kv_scan(NS, &prefix)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| Some((k[prefix.len()..].to_owned(), decode(&v).ok()?)))
        .collect()
}

/// The estimated cost of `usage` at `price`, in US dollars.
#[allow(clippy::cast_precision_loss)]
pub fn cost(price: Price, usage: Usage) -> f64 {
    (price.prompt * usage.prompt_tokens as f64 + price.completion * usage.completion_tokens as f64)
        / TOKENS_PER_PRICE_UNIT
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Platform;
    use crate::store::memory::MemoryStore;

    #[test]
    fn counters_add_up_per_user_and_day() {
        let store = MemoryStore::new();
        let alice = UserRef::new(Platform::Telegram, "1");
        let u = Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
        };
        record(&store, 7, "openrouter", "m:free", &alice, u);
        record(&store, 7, "openrouter", "m:free", &alice, u);
        record(&store, 8, "openrouter", "m:free", &alice, u);
        let day = day_usage(&store, 7);
        assert_eq!(day.len(), 1);
        assert_eq!(day[0].0, "openrouter/m:free/telegram:1");
        assert_eq!(
            day[0].1,
            UsageRecord {
                requests: 2,
                prompt_tokens: 20,
                completion_tokens: 10
            }
        );
        let c = cost(
            Price {
                prompt: 1.0,
                completion: 2.0,
            },
            Usage {
                prompt_tokens: 1_000_000,
                completion_tokens: 500_000,
            },
        );
        assert!((c - 2.0).abs() < 1e-9);
    }
}
