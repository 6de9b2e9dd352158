//! Quota bookkeeping per account: requests per minute, free requests per UTC day, cooldowns and disabled
//! keys. Everything lives in one in-memory [`AccountBook`] behind the router's mutex (a routing decision
//! is a scan over a few integers per account), and every change is written through to the store as a
//! small JSON value per account, so a restart does not re-spend requests on exhausted accounts. Each
//! record carries a version bumped on every change; a write of an older version than the stored one is
//! skipped, so turns racing to persist after releasing the lock never put an older record over a newer.

use std::time::Duration;

use crate::clock::{next_utc_midnight, utc_day};
use crate::store::{self, Store};

mod backoff;
mod record;

pub use backoff::{
    backoff_with_jitter, free_daily_limit, CREDITED_DAILY_REQUESTS, FREE_TIER_DAILY_REQUESTS,
};
use record::roll_day;
pub use record::{account_store_key, write_newer, AccountRecord, Hold, Persist, Versioned, NS};

/// The per-minute window of the requests-per-minute limit.
const MINUTE_MS: i64 = 60_000;

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
    /// Whether the operator was already warned that this key's account is out of credits (402); cleared
    /// when the key answers again or the configuration is reloaded, so the warning comes once per outage.
    pub warned_no_credits: bool,
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

/// Every account and key the router knows, with their quota state.
#[derive(Clone, Debug, Default)]
pub struct AccountBook {
    /// The accounts.
    pub accounts: Vec<Account>,
    /// The keys.
    pub keys: Vec<KeyEntry>,
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
            warned_no_credits: false,
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
                    tracing::warn!(account = %account.label, "router state unreadable, starting fresh: {e}");
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
    #[inline]
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
        self.reserve_avoiding(accounts, spread, cursor, now_ms, &[])
    }

    /// [`Self::reserve`], never with one of the keys in `avoid` (keys that failed earlier in the same
    /// turn): an account is picked only if it is ready and has another usable key.
    pub fn reserve_avoiding(
        &mut self,
        accounts: &[usize],
        spread: Spread,
        cursor: &mut usize,
        now_ms: i64,
        avoid: &[usize],
    ) -> Option<Reserved> {
        let chosen = match spread {
            Spread::InOrder => accounts
                .iter()
                .copied()
                .find(|&a| self.usable(a, now_ms, avoid))?,
            Spread::LeastUsed => {
                let n = accounts.len();
                let today = utc_day(now_ms);
                let mut best: Option<(u64, usize)> = None;
                for i in 0..n {
                    let a = accounts[(*cursor + i) % n];
                    if !self.usable(a, now_ms, avoid) {
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
        let key = self.next_key(chosen, avoid)?;
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

    /// Whether one of `accounts` is ready with a usable key not in `avoid`. Does not change anything.
    pub fn any_usable(&self, accounts: &[usize], now_ms: i64, avoid: &[usize]) -> bool {
        accounts.iter().any(|&a| self.usable(a, now_ms, avoid))
    }

    #[inline]
    fn usable(&self, account: usize, now_ms: i64, avoid: &[usize]) -> bool {
        // `Ready` already means some key is not rejected: the key scan is only needed when keys are
        // avoided (the routing decision's hot path has none).
        self.availability(account, now_ms) == Availability::Ready
            && (avoid.is_empty()
                || self.accounts[account]
                    .keys
                    .iter()
                    .any(|k| self.keys[*k].rejected.is_none() && !avoid.contains(k)))
    }

    fn next_key(&mut self, account: usize, avoid: &[usize]) -> Option<usize> {
        let a = &mut self.accounts[account];
        let n = a.keys.len();
        for i in 0..n {
            let k = a.keys[(a.next_key + i) % n];
            if self.keys[k].rejected.is_none() && !avoid.contains(&k) {
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

    /// Puts every rejected key back in rotation (after a config reload); a later 402 is news again.
    pub fn clear_rejections(&mut self) {
        for k in &mut self.keys {
            k.rejected = None;
            k.warned_no_credits = false;
        }
    }

    /// Records that `key` met a 402. Returns true the first time since it last answered (or since a
    /// reload), so the caller warns exactly once per outage.
    pub fn note_no_credits(&mut self, key: usize) -> bool {
        !std::mem::replace(&mut self.keys[key].warned_no_credits, true)
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

#[cfg(test)]
mod tests;
