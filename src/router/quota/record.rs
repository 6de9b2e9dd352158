//! The persisted side of the account book: one small versioned JSON record per account, the write that
//! never lets an older copy overwrite a newer one, and the day roll-over of a record's counters.

use std::collections::VecDeque;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::utc_day;
use crate::store::{self, Store, StoreError};

/// The store namespace of all router state.
pub const NS: &str = "router";
/// Why an account is held out of rotation for a while.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// A per-minute 429: back soon.
    RateLimited,
    /// The daily free quota is spent: back at 00:00 UTC.
    DailyExhausted,
    /// 402: no credits: back after the configured payment cooldown.
    NoCredits,
}

/// The persisted state of one account (one quota).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// The UTC day number `used_today` counts.
    pub day: i64,
    /// Requests sent today (failed attempts count: OpenRouter counts them too).
    pub used_today: u64,
    /// The daily limit learned from `GET /key` (50 or 1000 on OpenRouter), if any.
    pub learned_daily_limit: Option<u64>,
    /// Why the account is held, if it is.
    pub hold: Option<Hold>,
    /// Until when (ms since the epoch).
    pub hold_until_ms: i64,
    /// Consecutive per-minute 429s without a `Retry-After`, for the exponential backoff.
    pub backoff_step: u32,
    /// Send times within the last minute, oldest first (at most the per-minute limit).
    pub recent_ms: VecDeque<i64>,
    /// Bumped on every change, so a stale write is recognised and skipped (see [`write_newer`]).
    #[serde(default)]
    pub version: u64,
    /// Bumped every time a hold is set, so a success can tell a hold set while its request was in flight
    /// (kept) from one that was already there when it started (cleared).
    #[serde(default)]
    pub hold_seq: u64,
}

/// A stored value with a version that grows with every change.
pub trait Versioned {
    /// The version of this value.
    fn version(&self) -> u64;
}

impl Versioned for AccountRecord {
    fn version(&self) -> u64 {
        self.version
    }
}

/// Writes `value` at `key` unless the store already holds the same or a newer version. Routing state is
/// copied under the router's lock and written after releasing it; two turns can reach the store in the
/// other order, and the older copy must not win.
pub fn write_newer<T: Serialize + DeserializeOwned + Versioned>(
    store: &dyn Store,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    let bytes = store::encode(value)?;
    store.kv_update(NS, key, &mut |old| {
        let stored = old.and_then(|b| store::decode::<T>(b).ok());
        match (old, stored) {
            (Some(old), Some(stored)) if stored.version() >= value.version() => Some(old.to_vec()),
            _ => Some(bytes.clone()),
        }
    })?;
    Ok(())
}

/// A change to write through to the store: the account's store key and its new record.
pub type Persist = (String, AccountRecord);

/// The store key of an account's record.
pub fn account_store_key(provider: &str, label: &str) -> String {
    format!("acct/{provider}/{label}")
}

/// Starts a new count when the UTC day changed since the record was last touched.
pub(super) fn roll_day(rec: &mut AccountRecord, now_ms: i64) {
    let today = utc_day(now_ms);
    if rec.day != today {
        rec.day = today;
        rec.used_today = 0;
        if rec.hold == Some(Hold::DailyExhausted) && rec.hold_until_ms <= now_ms {
            rec.hold = None;
        }
    }
}
