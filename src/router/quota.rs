//! Quota bookkeeping per account: requests per minute, free requests per UTC day, cooldowns and disabled
//! keys. Everything lives in one in-memory [`AccountBook`] behind the router's mutex (a routing decision
//! is a scan over a few integers per account), and every change is written through to the store as a
//! small JSON value per account, so a restart does not re-spend requests on exhausted accounts.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::{next_utc_midnight, utc_day};
use crate::store::{self, Store};

/// The store namespace of all router state.
pub const NS: &str = "router";
/// The per-minute window of the requests-per-minute limit.
const MINUTE_MS: i64 = 60_000;

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

    /// Picks a ready account among `accounts` and reserves one request on it (counting it against the
    /// minute and the day before it is sent: OpenRouter counts failed attempts too). Returns the account
    /// and the key to use. `cursor` is the tier's round-robin position for [`Spread::LeastUsed`].
    pub fn reserve(
        &mut self,
        accounts: &[usize],
        spread: Spread,
        cursor: &mut usize,
        now_ms: i64,
    ) -> Option<(usize, usize, Persist)> {
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
        Some((chosen, key, self.persist(chosen)))
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

    /// The account's record as a store write.
    pub fn persist(&self, account: usize) -> Persist {
        let a = &self.accounts[account];
        (account_store_key(&a.provider, &a.label), a.record.clone())
    }

    /// A request on the account succeeded: the per-minute backoff starts over.
    pub fn succeeded(&mut self, account: usize) -> Option<Persist> {
        let rec = &mut self.accounts[account].record;
        if rec.backoff_step == 0 && rec.hold.is_none() {
            return None;
        }
        rec.backoff_step = 0;
        rec.hold = None;
        rec.hold_until_ms = 0;
        Some(self.persist(account))
    }

    /// Holds the account for a per-minute 429 until `until_ms`.
    pub fn hold_rate_limited(
        &mut self,
        account: usize,
        until_ms: i64,
        backed_off: bool,
    ) -> Persist {
        let rec = &mut self.accounts[account].record;
        rec.hold = Some(Hold::RateLimited);
        rec.hold_until_ms = until_ms;
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
        rec.hold = Some(Hold::DailyExhausted);
        rec.hold_until_ms = next_utc_midnight(now_ms);
        self.persist(account)
    }

    /// The account has no credits (402): out for `cooldown`.
    pub fn hold_no_credits(&mut self, account: usize, now_ms: i64, cooldown: Duration) -> Persist {
        let rec = &mut self.accounts[account].record;
        rec.hold = Some(Hold::NoCredits);
        rec.hold_until_ms = now_ms + i64::try_from(cooldown.as_millis()).unwrap_or(i64::MAX / 2);
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
                rec.hold = Some(Hold::DailyExhausted);
                rec.hold_until_ms = next_utc_midnight(now_ms);
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
            .map(|_| b.reserve(&all, Spread::InOrder, &mut c, NOON).map(|p| p.0))
            .collect();
        assert_eq!(picks, [Some(0), Some(0), Some(1), Some(1), None]);
        assert_eq!(b.availability(0, NOON), Availability::Exhausted);
        let tomorrow = next_utc_midnight(NOON);
        assert_eq!(b.availability(0, tomorrow), Availability::Ready);
        assert_eq!(b.left_today(0, tomorrow), Some(2));
        assert_eq!(
            b.reserve(&all, Spread::InOrder, &mut c, tomorrow)
                .map(|p| p.0),
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
            .map(|_| b.reserve(&all, Spread::LeastUsed, &mut c, NOON).unwrap().0)
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
                b.reserve(&all, Spread::LeastUsed, &mut c, NOON).unwrap().0,
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
            .map(|_| b.reserve(&[a], Spread::InOrder, &mut c, NOON).map(|p| p.1))
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
        let (_, _, p) = b.reserve(&[0], Spread::InOrder, &mut c, NOON).unwrap();
        store::put_json(&store, NS, &p.0, &p.1).unwrap();
        let p = b.hold_no_credits(0, NOON, Duration::from_secs(3600));
        store::put_json(&store, NS, &p.0, &p.1).unwrap();
        let mut again = book(1, Some(20), Some(50));
        again.load(&store);
        assert_eq!(again.accounts[0].record, b.accounts[0].record);
        assert_eq!(
            again.availability(0, NOON + 1),
            Availability::Held(Hold::NoCredits, NOON + 3_600_000)
        );
    }
}
