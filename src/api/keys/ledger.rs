//! The usage ledger: per key and UTC day, requests answered, failed and refused, prompt and completion
//! tokens (with how many of them were estimates), and a breakdown by tier, provider and model with the
//! estimated cost. Kept in memory and written through the [`StateStore`] at most once per second per
//! key and day (the flush loop coalesces: a busy key costs one write a second, not one per request).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::clock::{utc_day, DAY_MS};
use crate::domain::Usage;
use crate::store::{StateStore, StoreError};

/// The store namespace: `<key id>/<day number>` → [`DayUsage`] as JSON.
pub const NAMESPACE: &str = "api_key_usage";

/// One model's share of a day.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelUsage {
    /// Its tier (`free`, `paid`).
    pub tier: String,
    /// Its provider.
    pub provider: String,
    /// The model.
    pub model: String,
    /// Answered requests.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Estimated cost in US dollars from the configured prices.
    pub cost_usd: f64,
}

/// One key's use on one UTC day.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DayUsage {
    /// The UTC date, `YYYY-MM-DD`.
    pub date: String,
    /// Requests answered to the end.
    pub answered: u64,
    /// Requests admitted that failed (upstream, deadline, a client gone mid-answer).
    pub failed: u64,
    /// Requests the key's own limits or permissions refused (403, 429).
    pub refused: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Of those tokens, how many were switchboard's estimate because upstream reported none.
    pub estimated_tokens: u64,
    /// Estimated cost in US dollars.
    pub cost_usd: f64,
    /// By `tier/provider/model`.
    pub models: BTreeMap<String, ModelUsage>,
    /// When the key was last used (ms since the epoch).
    pub last_used_ms: Option<i64>,
}

/// How one admitted request ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Whether it was answered to the end.
    pub answered: bool,
    /// Tokens used (upstream's count or an estimate).
    pub usage: Usage,
    /// Whether `usage` is an estimate.
    pub estimated: bool,
    /// Who answered, if anyone began to: `(tier, provider, model)`.
    pub source: Option<(String, String, String)>,
    /// Estimated cost in US dollars.
    pub cost_usd: f64,
}

/// The UTC date of day number `day`.
pub fn date_of(day: i64) -> String {
    chrono::DateTime::from_timestamp_millis(day * DAY_MS)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn store_key(id: &str, day: i64) -> String {
    format!("{id}/{day:08}")
}

/// The ledger of every key.
pub struct Ledger {
    store: Arc<dyn StateStore>,
    days: Mutex<HashMap<(String, i64), DayUsage>>,
    dirty: Mutex<HashSet<(String, i64)>>,
}

impl Ledger {
    /// A ledger over `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self {
            store,
            days: Mutex::new(HashMap::new()),
            dirty: Mutex::new(HashSet::new()),
        }
    }

    fn with_day<R>(&self, id: &str, now_ms: i64, f: impl FnOnce(&mut DayUsage) -> R) -> R {
        let day = utc_day(now_ms);
        let k = (id.to_owned(), day);
        let mut days = self
            .days
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = days.entry(k.clone()).or_insert_with(|| {
            let stored: Option<DayUsage> =
                crate::store::get_json(&*self.store, NAMESPACE, &store_key(id, day))
                    .ok()
                    .flatten();
            stored.unwrap_or_else(|| DayUsage {
                date: date_of(day),
                ..DayUsage::default()
            })
        });
        entry.last_used_ms = Some(now_ms);
        let out = f(entry);
        drop(days);
        self.dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(k);
        out
    }

    /// Counts a refusal by the key's own limits or permissions.
    pub fn refused(&self, id: &str, now_ms: i64) {
        self.with_day(id, now_ms, |d| d.refused += 1);
    }

    /// Counts an admitted request's end.
    pub fn record(&self, id: &str, now_ms: i64, outcome: &Outcome) {
        self.with_day(id, now_ms, |d| {
            if outcome.answered {
                d.answered += 1;
            } else {
                d.failed += 1;
            }
            d.prompt_tokens += outcome.usage.prompt_tokens;
            d.completion_tokens += outcome.usage.completion_tokens;
            if outcome.estimated {
                d.estimated_tokens += outcome.usage.total();
            }
            d.cost_usd += outcome.cost_usd;
            if let Some((tier, provider, model)) = &outcome.source {
                let m = d
                    .models
                    .entry(format!("{tier}/{provider}/{model}"))
                    .or_insert_with(|| ModelUsage {
                        tier: tier.clone(),
                        provider: provider.clone(),
                        model: model.clone(),
                        ..ModelUsage::default()
                    });
                m.requests += u64::from(outcome.answered);
                m.prompt_tokens += outcome.usage.prompt_tokens;
                m.completion_tokens += outcome.usage.completion_tokens;
                m.cost_usd += outcome.cost_usd;
            }
        });
    }

    /// Today's figures for `id`, without counting a use.
    pub fn today(&self, id: &str, now_ms: i64) -> DayUsage {
        self.days(id, now_ms, 1).pop().unwrap_or_default()
    }

    /// The last `n` days for `id`, newest first (days without use included, with zeros).
    pub fn days(&self, id: &str, now_ms: i64, n: u32) -> Vec<DayUsage> {
        let today = utc_day(now_ms);
        let memory = self
            .days
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (0..i64::from(n))
            .map(|back| {
                let day = today - back;
                memory
                    .get(&(id.to_owned(), day))
                    .cloned()
                    .unwrap_or_else(|| {
                        crate::store::get_json(&*self.store, NAMESPACE, &store_key(id, day))
                            .ok()
                            .flatten()
                            .unwrap_or_else(|| DayUsage {
                                date: date_of(day),
                                ..DayUsage::default()
                            })
                    })
            })
            .collect()
    }

    /// Writes every day changed since the last flush, and forgets days before yesterday from memory
    /// (they are in the store). Called once a second by the daemon and once at shutdown.
    pub fn flush(&self, now_ms: i64) -> Result<usize, StoreError> {
        let dirty: Vec<(String, i64)> = std::mem::take(
            &mut *self
                .dirty
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_iter()
        .collect();
        let mut written = 0;
        for k in &dirty {
            let value = self
                .days
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(k)
                .cloned();
            if let Some(v) = value {
                crate::store::put_json(&*self.store, NAMESPACE, &store_key(&k.0, k.1), &v)?;
                written += 1;
            }
        }
        let cutoff = utc_day(now_ms) - 1;
        let dirty_now = self
            .dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        self.days
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|k, _| k.1 >= cutoff || dirty_now.contains(k));
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn a_day_is_counted_coalesced_and_read_back_from_the_store() {
        let store = Arc::new(MemoryStore::new());
        let ledger = Ledger::new(store.clone());
        let now = 20_000 * DAY_MS + 5;
        let outcome = Outcome {
            answered: true,
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
            },
            estimated: true,
            source: Some(("free".into(), "openrouter".into(), "m".into())),
            cost_usd: 0.0,
        };
        ledger.record("abc", now, &outcome);
        ledger.record(
            "abc",
            now,
            &Outcome {
                answered: false,
                ..outcome.clone()
            },
        );
        ledger.refused("abc", now);
        assert_eq!(ledger.flush(now).unwrap(), 1);
        assert_eq!(ledger.flush(now).unwrap(), 0);
        let fresh = Ledger::new(store);
        let day = fresh.today("abc", now);
        assert_eq!((day.answered, day.failed, day.refused), (1, 1, 1));
        assert_eq!(
            (
                day.prompt_tokens,
                day.completion_tokens,
                day.estimated_tokens
            ),
            (6, 4, 10)
        );
        assert_eq!(day.models["free/openrouter/m"].requests, 1);
        assert_eq!(day.date, "2024-10-04");
        let days = fresh.days("abc", now + DAY_MS, 2);
        assert_eq!(days[0].answered, 0);
        assert_eq!(days[1].answered, 1);
    }
}
