//! Usage accounting: requests and tokens per provider, model, user and UTC day, and the paid tier's daily
//! request count and estimated spend. Counters live in the store (the dated namespace [`USAGE_NS`], aged out
//! by the retention sweep) so they survive restarts; the paid-day totals (in [`super::quota::NS`]) are also
//! cached in memory for the cap check on every request.

use serde::{Deserialize, Serialize};

use super::quota::NS;
use crate::config::providers::Price;
use crate::domain::{Usage, UserRef};
use crate::store::{decode, encode, DatedNamespace, Store};

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

/// The store namespace of the per-day usage counters; every key starts with its UTC day number.
pub const USAGE_NS: &str = "router.usage";

/// The usage counters are kept 35 days, then aged out by the retention sweep: nothing in switchboard reads
/// past today, and 35 days still covers a whole calendar month for an operator reading the store (the same
/// horizon as the core's per-user counters).
pub const USAGE_DATED: DatedNamespace = DatedNamespace {
    ns: USAGE_NS,
    keep_days: 35,
};

/// The prefix under which releases before [`USAGE_NS`] kept usage counters in [`NS`]; removed at start-up.
const LEGACY_USAGE_PREFIX: &str = "usage/";

/// The store key of one usage counter. `/` inside names is kept: keys are only ever read by prefix.
pub fn usage_key(day: i64, provider: &str, model: &str, user: &UserRef) -> String {
    format!("{day}/{provider}/{model}/{user}")
}

/// Declares the usage namespace to the store's retention sweep and as counters the store may coalesce,
/// and removes counters an older release
/// wrote into the router's own namespace, where no sweep could ever age them.
pub fn prepare(store: &dyn Store) {
    store.declare_dated(USAGE_DATED);
    // Pure counters: held in memory between periodic writes (store::coalesce), not rewritten per turn.
    store.declare_counters(USAGE_NS);
    let legacy = store.kv_scan(NS, LEGACY_USAGE_PREFIX).unwrap_or_default();
    for (key, _) in legacy {
        if let Err(e) = store.kv_remove(NS, &key) {
            tracing::warn!("old usage counter not removed: {e}");
            return;
        }
    }
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
    let result = store.kv_update(USAGE_NS, &key, &mut |old| {
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
    let prefix = format!("{day}/");
    store
        .kv_scan(USAGE_NS, &prefix)
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
    use crate::store::StateStore;

    #[test]
    fn counters_are_dated_and_old_layout_counters_are_removed() {
        let store = MemoryStore::new();
        store
            .kv_put(NS, "usage/7/openrouter/m/telegram:1", b"{}")
            .unwrap();
        store.kv_put(NS, "paid/day", b"{}").unwrap();
        prepare(&store);
        assert!(store.dated_namespaces().contains(&USAGE_DATED));
        assert!(store.kv_scan(NS, LEGACY_USAGE_PREFIX).unwrap().is_empty());
        assert!(store.kv_get(NS, "paid/day").unwrap().is_some());
        let alice = UserRef::new(Platform::Telegram, "1");
        record(&store, 7, "openrouter", "m:free", &alice, Usage::default());
        let keys: Vec<String> = store
            .kv_scan(USAGE_NS, "")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["7/openrouter/m:free/telegram:1"]);
        crate::store::prune_dated(&store, 60 * 86_400_000).unwrap();
        assert!(store.kv_scan(USAGE_NS, "").unwrap().is_empty());
    }

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
