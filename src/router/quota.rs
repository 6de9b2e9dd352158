//! Quota bookkeeping per account: requests per minute, free requests per UTC day, cooldowns and disabled
//! keys. Everything lives in one in-memory [`AccountBook`] behind the router's mutex (a routing decision
//! is a scan over a few integers per account), and every change is written through to the store as a
//! small JSON value per account, so a restart does not re-spend requests on exhausted accounts. Each
//! record carries a version bumped on every change; a write of an older version than the stored one is
//! skipped, so turns racing to persist after releasing the lock never put an older record over a newer.

use std::collections::VecDeque;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::{next_utc_midnight, utc_day};
use crate::store::{self, Store, StoreError};

/// The store namespace of all router state.
pub const NS: &str = "router";
/// The per-minute window of the requests-per-minute limit.
const MINUTE_MS: i64 = 60_000;
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

/// A request reserved on an account by [`AccountBook::reserve`].
#[derive(Clone, Debug)]
pub struct Reserved {
    /// The account.
    pub account: usize,
    /// The key to send with.
    pub key: usize,
    /// The account's hold sequence when the request started (pass it to [`AccountBook::succeeded`]).
    pub ticket: u64,
    /// The store write of the reservation.
    pub persist: Persist,
}

/// One account: a quota shared by one or more keys.
#[derive(Clone, Debug)]
pub struct Account {
    /// The provider name (`openrouter`, `ollama-cloud`, an extra tier's name).
    pub provider: String,
    /// The account label: the configured account name, else the key's variable name.
    pub label: String,
    /// Indices into [`AccountBook::keys`].
    pub keys: Vec<usize>,
    /// Requests per minute allowed, if limited.
    pub per_minute: Option<u32>,
    /// The configured daily limit (overrides what `GET /key` says), if any.
    pub configured_daily_limit: Option<u64>,
    /// The persisted state.
    pub record: AccountRecord,
    /// The next key to use (round robin over the account's keys).
    next_key: usize,
}

/// One key. The secret itself is kept outside the book, indexed the same way.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    /// Where it came from (`OPENROUTER_API_KEY_2`), safe to log.
    pub name: String,
    /// Its fingerprint, `None` for a keyless endpoint (local Ollama).
    pub fingerprint: Option<String>,
    /// The account it belongs to.
    pub account: usize,
    /// `Some(401|403)` once the provider rejected it: out until the config is reloaded.
    pub rejected: Option<u16>,
}

/// Whether an account can take a request now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    /// It can.
    Ready,
    /// Its per-minute budget is spent until then.
    MinuteFull(i64),
    /// Held for a reason until then.
    Held(Hold, i64),
    /// Its daily quota is spent (our own count reached the limit).
    Exhausted,
    /// Every key of it was rejected (401/403).
    Rejected(u16),
}

/// How a tier spreads requests over its accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spread {
    /// Use the first ready account in order (drain one free account before touching the next, so the
    /// others keep their per-minute budget for bursts).
    InOrder,
    /// Use the ready account with the fewest requests today (paid keys: spread the load and the bill).
    LeastUsed,
}

/// A change to write through to the store: the account's store key and its new record.
pub type Persist = (String, AccountRecord);

/// Every account and key the router knows, with their quota state.
#[derive(Clone, Debug, Default)]
pub struct AccountBook {
    /// The accounts.
    pub accounts: Vec<Account>,
    /// The keys.
    pub keys: Vec<KeyEntry>,
}

/// The store key of an account's record.
pub fn account_store_key(provider: &str, label: &str) -> String {
    format!("acct/{provider}/{label}")
}

impl AccountBook {
    /// Adds an account (or returns the existing one with that provider and label).
    pub fn account(
        &mut self,
        provider: &str,
        label: &str,
        per_minute: Option<u32>,
        configured_daily_limit: Option<u64>,
    ) -> usize {
        if let Some(i) = self
            .accounts
            .iter()
            .position(|a| a.provider == provider && a.label == label)
        {
            return i;
        }
        self.accounts.push(Account {
            provider: provider.to_owned(),
            label: label.to_owned(),
            keys: Vec::new(),
            per_minute,
            configured_daily_limit,
            record: AccountRecord::default(),
            next_key: 0,
        });
        self.accounts.len() - 1
    }

    /// Adds a key to account `account`; returns its index.
    pub fn add_key(&mut self, account: usize, name: &str, fingerprint: Option<String>) -> usize {
        self.keys.push(KeyEntry {
            name: name.to_owned(),
            fingerprint,
            account,
            rejected: None,
        });
        let id = self.keys.len() - 1;
        self.accounts[account].keys.push(id);
        id
    }

    /// Loads every account's persisted record from the store (a restart keeps quota and cooldowns).
    pub fn load(&mut self, store: &dyn Store) {
        for account in &mut self.accounts {
            let key = account_store_key(&account.provider, &account.label);
            match store::get_json::<AccountRecord>(store, NS, &key) {
                Ok(Some(record)) => account.record = record,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(account = %account.label, "router state unreadable, starting fresh: {e}")
                }
            }
        }
    }

    /// The daily limit in force for an account: configured, else learned, else unknown.
    pub fn daily_limit(&self, account: usize) -> Option<u64> {
        let a = &self.accounts[account];
        a.configured_daily_limit.or(a.record.learned_daily_limit)
    }

    /// Requests left today, if the limit is known.
    pub fn left_today(&self, account: usize, now_ms: i64) -> Option<u64> {
        let a = &self.accounts[account];
        let used = if a.record.day == utc_day(now_ms) {
            a.record.used_today
        } else {
            0
        };
        self.daily_limit(account).map(|l| l.saturating_sub(used))
    }

    /// Whether the account can take a request at `now_ms`. Does not change anything.
    pub fn availability(&self, account: usize, now_ms: i64) -> Availability {
        let a = &self.accounts[account];
        let rejected = a
            .keys
            .iter()
            .try_fold(0u16, |_, &k| self.keys[k].rejected.ok_or(()));
        if let (Ok(status), false) = (rejected, a.keys.is_empty()) {
            return Availability::Rejected(status);
        }
        let today = utc_day(now_ms);
        if let Some(hold) = a.record.hold {
            // A daily hold ends with the day it was set on, whatever the stored instant says.
            if a.record.hold_until_ms > now_ms {
                return Availability::Held(hold, a.record.hold_until_ms);
            }
        }
        if a.record.day == today {
            if let Some(limit) = self.daily_limit(account) {
                if a.record.used_today >= limit {
                    return Availability::Exhausted;
                }
            }
        }
        if let Some(per_minute) = a.per_minute {
            let recent = &a.record.recent_ms;
            let in_window = recent.iter().filter(|&&t| t > now_ms - MINUTE_MS).count();
            if in_window >= per_minute as usize {
                // The oldest send in the window leaves it one minute after it was made.
                let oldest = recent
                    .iter()
                    .find(|&&t| t > now_ms - MINUTE_MS)
                    .copied()
                    .unwrap_or(now_ms);
                return Availability::MinuteFull(oldest + MINUTE_MS);
            }
        }
        Availability::Ready
    }

    /// When the first of `accounts` that is held back only by a per-minute limit (its window is full or a
    /// per-minute 429 cools it down) can take a request again; `None` if none will before something else
    /// (the day's quota, a 402, a rejected key) keeps it out.
    pub fn soonest_minute_free(&self, accounts: &[usize], now_ms: i64) -> Option<i64> {
        accounts
            .iter()
            .filter_map(|&a| match self.availability(a, now_ms) {
                Availability::MinuteFull(until) | Availability::Held(Hold::RateLimited, until) => {
                    (self.availability(a, until) == Availability::Ready).then_some(until)
                }
                _ => None,
            })
            .min()
    }

    /// Picks a ready account among `accounts` and reserves one request on it (counting it against the
    /// minute and the day before it is sent: OpenRouter counts failed attempts too). Returns the account
    /// and the key to use. `cursor` is the tier's round-robin position for [`Spread::LeastUsed`].
    pub fn reserve(
        &mut self,
        accounts: &[usize],
        spread: Spread,
        cursor: &mut usize,
        now_ms: i64,
    ) -> Option<Reserved> {
        let chosen = match spread {
            Spread::InOrder => accounts
                .iter()
                .copied()
                .find(|&a| self.availability(a, now_ms) == Availability::Ready)?,
            Spread::LeastUsed => {
                let n = accounts.len();
                let today = utc_day(now_ms);
                let mut best: Option<(u64, usize)> = None;
                for i in 0..n {
                    let a = accounts[(*cursor + i) % n];
                    if self.availability(a, now_ms) != Availability::Ready {
                        continue;
                    }
                    let rec = &self.accounts[a].record;
                    let used = if rec.day == today { rec.used_today } else { 0 };
                    if !matches!(best, Some((u, _)) if u <= used) {
                        best = Some((used, a));
                    }
                }
                *cursor = (*cursor + 1) % n.max(1);
                best?.1
            }
        };
        let key = self.next_key(chosen)?;
        let account = &mut self.accounts[chosen];
        roll_day(&mut account.record, now_ms);
        account.record.used_today += 1;
        if let Some(per_minute) = account.per_minute {
            let recent = &mut account.record.recent_ms;
            while recent.front().is_some_and(|&t| t <= now_ms - MINUTE_MS) {
                recent.pop_front();
            }
            recent.push_back(now_ms);
            while recent.len() > per_minute as usize {
                recent.pop_front();
            }
        }
        let ticket = account.record.hold_seq;
        Some(Reserved {
            account: chosen,
            key,
            ticket,
            persist: self.persist(chosen),
        })
    }

    fn next_key(&mut self, account: usize) -> Option<usize> {
        let a = &mut self.accounts[account];
        let n = a.keys.len();
        for i in 0..n {
            let k = a.keys[(a.next_key + i) % n];
            if self.keys[k].rejected.is_none() {
                a.next_key = (a.next_key + i + 1) % n;
                return Some(k);
            }
        }
        None
    }

    /// The account's record as a store write, with its version bumped (call it after every change).
    pub fn persist(&mut self, account: usize) -> Persist {
        let a = &mut self.accounts[account];
        a.record.version += 1;
        (account_store_key(&a.provider, &a.label), a.record.clone())
    }

    /// A request on the account, reserved with `ticket`, succeeded: the per-minute backoff starts over.
    /// A hold is cleared only if it has expired or was already there when that request started: a 429
    /// or 402 another turn recorded while this request was in flight is newer news and stays.
    pub fn succeeded(&mut self, account: usize, ticket: u64, now_ms: i64) -> Option<Persist> {
        let rec = &mut self.accounts[account].record;
        let clear_hold =
            rec.hold.is_some() && (rec.hold_until_ms <= now_ms || rec.hold_seq == ticket);
        if rec.backoff_step == 0 && !clear_hold {
            return None;
        }
        rec.backoff_step = 0;
        if clear_hold {
            rec.hold = None;
            rec.hold_until_ms = 0;
        }
        Some(self.persist(account))
    }

    /// Sets a hold on a record (every hold goes through here, so its sequence always moves).
    fn set_hold(rec: &mut AccountRecord, hold: Hold, until_ms: i64) {
        rec.hold = Some(hold);
        rec.hold_until_ms = until_ms;
        rec.hold_seq += 1;
    }

    /// Holds the account for a per-minute 429 until `until_ms`.
    pub fn hold_rate_limited(
        &mut self,
        account: usize,
        until_ms: i64,
        backed_off: bool,
    ) -> Persist {
        let rec = &mut self.accounts[account].record;
        Self::set_hold(rec, Hold::RateLimited, until_ms);
        if backed_off {
            rec.backoff_step = rec.backoff_step.saturating_add(1);
        }
        self.persist(account)
    }

    /// The account's daily quota is spent: out until the next 00:00 UTC.
    pub fn hold_daily(&mut self, account: usize, now_ms: i64) -> Persist {
        let limit = self.daily_limit(account);
        let rec = &mut self.accounts[account].record;
        roll_day(rec, now_ms);
        // The provider's word wins over our count: nothing is left today.
        if let Some(limit) = limit {
            rec.used_today = rec.used_today.max(limit);
        }
        Self::set_hold(rec, Hold::DailyExhausted, next_utc_midnight(now_ms));
        self.persist(account)
    }

    /// The account has no credits (402): out for `cooldown`.
    pub fn hold_no_credits(&mut self, account: usize, now_ms: i64, cooldown: Duration) -> Persist {
        let rec = &mut self.accounts[account].record;
        let until = now_ms + i64::try_from(cooldown.as_millis()).unwrap_or(i64::MAX / 2);
        Self::set_hold(rec, Hold::NoCredits, until);
        self.persist(account)
    }

    /// The key was rejected (401/403): out until the config is reloaded. Returns true the first time,
    /// so the caller warns loudly exactly once.
    pub fn reject_key(&mut self, key: usize, status: u16) -> bool {
        let first = self.keys[key].rejected.is_none();
        self.keys[key].rejected = Some(status);
        first
    }

    /// Puts every rejected key back in rotation (after a config reload).
    pub fn clear_rejections(&mut self) {
        for k in &mut self.keys {
            k.rejected = None;
        }
    }

    /// Learns an account's quota from `GET /key`: the daily limit and what is left today. The provider's
    /// count wins over ours (it also sees other programs using the account).
    pub fn learn(
        &mut self,
        account: usize,
        limit: Option<u64>,
        remaining: Option<u64>,
        now_ms: i64,
    ) -> Persist {
        let rec = &mut self.accounts[account].record;
        roll_day(rec, now_ms);
        if let Some(limit) = limit {
            rec.learned_daily_limit = Some(limit);
        }
        let limit = self.daily_limit(account);
        let rec = &mut self.accounts[account].record;
        if let (Some(limit), Some(remaining)) = (limit, remaining) {
            rec.used_today = limit.saturating_sub(remaining);
            if remaining == 0 {
                Self::set_hold(rec, Hold::DailyExhausted, next_utc_midnight(now_ms));
            } else if rec.hold == Some(Hold::DailyExhausted) {
                rec.hold = None;
                rec.hold_until_ms = 0;
            }
        }
        self.persist(account)
    }
}

/// Starts a new count when the UTC day changed since the record was last touched.
fn roll_day(rec: &mut AccountRecord, now_ms: i64) {
    let today = utc_day(now_ms);
    if rec.day != today {
        rec.day = today;
        rec.used_today = 0;
        if rec.hold == Some(Hold::DailyExhausted) && rec.hold_until_ms <= now_ms {
            rec.hold = None;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::DAY_MS;

    const NOON: i64 = 20_000 * DAY_MS + DAY_MS / 2;

    fn book(accounts: usize, per_minute: Option<u32>, daily: Option<u64>) -> AccountBook {
        let mut b = AccountBook::default();
        for i in 0..accounts {
            let a = b.account("openrouter", &format!("acct{i}"), per_minute, daily);
            b.add_key(a, &format!("K{i}"), Some(format!("fp:{i}")));
        }
        b
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        assert_eq!(backoff_with_jitter(0, 0.0), Duration::from_secs(1));
        assert_eq!(
            backoff_with_jitter(0, 0.999_999),
            Duration::from_millis(1_999)
        );
        assert_eq!(backoff_with_jitter(1, 0.0), Duration::from_secs(2));
        assert_eq!(backoff_with_jitter(3, 1.0), Duration::from_secs(16));
        assert_eq!(backoff_with_jitter(10, 1.0), Duration::from_secs(60));
        assert_eq!(backoff_with_jitter(u32::MAX, 0.0), Duration::from_secs(30));
    }

    #[test]
    fn in_order_drains_accounts_and_resets_at_midnight() {
        let mut b = book(2, None, Some(2));
        let all = [0, 1];
        let mut c = 0;
        let picks: Vec<_> = (0..5)
            .map(|_| {
                b.reserve(&all, Spread::InOrder, &mut c, NOON)
                    .map(|r| r.account)
            })
            .collect();
        assert_eq!(picks, [Some(0), Some(0), Some(1), Some(1), None]);
        assert_eq!(b.availability(0, NOON), Availability::Exhausted);
        let tomorrow = next_utc_midnight(NOON);
        assert_eq!(b.availability(0, tomorrow), Availability::Ready);
        assert_eq!(b.left_today(0, tomorrow), Some(2));
        assert_eq!(
            b.reserve(&all, Spread::InOrder, &mut c, tomorrow)
                .map(|r| r.account),
            Some(0)
        );
    }

    #[test]
    fn per_minute_window_blocks_until_the_oldest_leaves() {
        let mut b = book(1, Some(2), None);
        let mut c = 0;
        assert!(b.reserve(&[0], Spread::InOrder, &mut c, NOON).is_some());
        assert!(b
            .reserve(&[0], Spread::InOrder, &mut c, NOON + 10)
            .is_some());
        assert_eq!(
            b.availability(0, NOON + 20),
            Availability::MinuteFull(NOON + MINUTE_MS)
        );
        assert_eq!(b.availability(0, NOON + MINUTE_MS), Availability::Ready);
    }

    #[test]
    fn least_used_spreads_and_rejected_keys_are_skipped() {
        let mut b = book(3, None, None);
        let all = [0, 1, 2];
        let mut c = 0;
        let picks: Vec<_> = (0..6)
            .map(|_| {
                b.reserve(&all, Spread::LeastUsed, &mut c, NOON)
                    .unwrap()
                    .account
            })
            .collect();
        let mut counts = [0; 3];
        for p in picks {
            counts[p] += 1;
        }
        assert_eq!(counts, [2, 2, 2]);
        assert!(b.reject_key(1, 401));
        assert!(!b.reject_key(1, 401));
        assert_eq!(b.availability(1, NOON), Availability::Rejected(401));
        for _ in 0..4 {
            assert_ne!(
                b.reserve(&all, Spread::LeastUsed, &mut c, NOON)
                    .unwrap()
                    .account,
                1
            );
        }
        b.clear_rejections();
        assert_eq!(b.availability(1, NOON), Availability::Ready);
    }

    #[test]
    fn two_keys_share_one_account() {
        let mut b = AccountBook::default();
        let a = b.account("openrouter", "team", None, Some(3));
        b.add_key(a, "K1", None);
        b.add_key(a, "K2", None);
        let mut c = 0;
        let keys: Vec<_> = (0..4)
            .map(|_| {
                b.reserve(&[a], Spread::InOrder, &mut c, NOON)
                    .map(|r| r.key)
            })
            .collect();
        assert_eq!(keys, [Some(0), Some(1), Some(0), None]);
    }

    #[test]
    fn learning_from_key_info_sets_used_and_holds() {
        let mut b = book(1, None, None);
        b.learn(0, Some(50), Some(0), NOON);
        assert_eq!(
            b.availability(0, NOON),
            Availability::Held(Hold::DailyExhausted, next_utc_midnight(NOON))
        );
        b.learn(0, Some(50), Some(7), NOON);
        assert_eq!(b.left_today(0, NOON), Some(7));
        assert_eq!(b.availability(0, NOON), Availability::Ready);
    }

    #[test]
    fn state_round_trips_through_the_store() {
        let store = crate::store::memory::MemoryStore::new();
        let mut b = book(1, Some(20), Some(50));
        let mut c = 0;
        let p = b
            .reserve(&[0], Spread::InOrder, &mut c, NOON)
            .unwrap()
            .persist;
        write_newer(&store, &p.0, &p.1).unwrap();
        let p = b.hold_no_credits(0, NOON, Duration::from_secs(3600));
        write_newer(&store, &p.0, &p.1).unwrap();
        let mut again = book(1, Some(20), Some(50));
        again.load(&store);
        assert_eq!(again.accounts[0].record, b.accounts[0].record);
        assert_eq!(
            again.availability(0, NOON + 1),
            Availability::Held(Hold::NoCredits, NOON + 3_600_000)
        );
    }

    #[test]
    fn a_late_success_keeps_a_hold_set_while_it_was_in_flight() {
        let mut b = book(1, None, None);
        let mut c = 0;
        // Turn A reserves, then turn B reserves and gets a per-minute 429 while A is still streaming.
        let a = b.reserve(&[0], Spread::InOrder, &mut c, NOON).unwrap();
        let _b = b.reserve(&[0], Spread::InOrder, &mut c, NOON).unwrap();
        b.hold_rate_limited(0, NOON + 30_000, true);
        assert!(
            b.succeeded(0, a.ticket, NOON + 10).is_some(),
            "backoff reset"
        );
        assert_eq!(b.accounts[0].record.backoff_step, 0);
        assert_eq!(
            b.availability(0, NOON + 10),
            Availability::Held(Hold::RateLimited, NOON + 30_000)
        );
        // A request that started after the hold was set (it had expired) clears it.
        let later = b
            .reserve(&[0], Spread::InOrder, &mut c, NOON + 30_000)
            .unwrap();
        assert!(b.succeeded(0, later.ticket, NOON + 30_001).is_some());
        assert_eq!(b.accounts[0].record.hold, None);
        // An expired hold is cleared whoever succeeds.
        b.hold_rate_limited(0, NOON + 40_000, false);
        assert!(b.succeeded(0, a.ticket, NOON + 40_000).is_some());
        assert_eq!(b.accounts[0].record.hold, None);
        assert!(
            b.succeeded(0, a.ticket, NOON + 40_001).is_none(),
            "nothing to do"
        );
    }

    #[test]
    fn a_stale_record_never_overwrites_a_newer_one() {
        let store = crate::store::memory::MemoryStore::new();
        let mut b = book(1, Some(20), Some(50));
        let mut c = 0;
        // Two turns copy the record under the lock, then reach the store in the other order.
        let older = b
            .reserve(&[0], Spread::InOrder, &mut c, NOON)
            .unwrap()
            .persist;
        let newer = b.hold_daily(0, NOON + 1);
        assert!(newer.1.version > older.1.version);
        write_newer(&store, &newer.0, &newer.1).unwrap();
        write_newer(&store, &older.0, &older.1).unwrap();
        let stored: AccountRecord = store::get_json(&store, NS, &newer.0).unwrap().unwrap();
        assert_eq!(stored, newer.1);
        // A reloaded book continues from the stored version, so its writes are not mistaken for stale.
        let mut again = book(1, Some(20), Some(50));
        again.load(&store);
        let next = again.succeeded(0, 0, NOON + DAY_MS).unwrap();
        write_newer(&store, &next.0, &next.1).unwrap();
        let stored: AccountRecord = store::get_json(&store, NS, &next.0).unwrap().unwrap();
        assert_eq!(stored.hold, None);
    }

    #[test]
    fn soonest_minute_free_ignores_accounts_out_for_the_day() {
        let mut b = book(3, Some(1), Some(1));
        let mut c = 0;
        b.reserve(&[0], Spread::InOrder, &mut c, NOON).unwrap(); // full for the minute and the day
        b.hold_rate_limited(1, NOON + 4_000, false);
        b.hold_rate_limited(2, NOON + 9_000, false);
        assert_eq!(b.soonest_minute_free(&[0, 1, 2], NOON), Some(NOON + 4_000));
        assert_eq!(b.soonest_minute_free(&[0, 2], NOON), Some(NOON + 9_000));
        assert_eq!(b.soonest_minute_free(&[0], NOON), None);
    }

    #[test]
    fn the_daily_limit_is_inferred_from_the_free_tier_flag() {
        assert_eq!(free_daily_limit(Some(7), Some(true)), Some(7));
        assert_eq!(free_daily_limit(None, Some(true)), Some(50));
        assert_eq!(free_daily_limit(None, Some(false)), Some(1000));
        assert_eq!(free_daily_limit(None, None), None);
    }
}
