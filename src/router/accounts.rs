//! The router's mutable state and its persistence: the account book (quotas, holds, rejected keys) with
//! the keys' secrets, the per-tier cursors, missing models, the paid day's counters, and every store
//! write of that state. A routing decision takes one short mutex hold over it; store writes happen
//! after the lock is released (versioned, so a late write of an older record is skipped). What every
//! request changes (its count, a cleared backoff) is written by a task of its own
//! ([`Shared::write_soon`]), off the request's way; a hold learned from an error is written before the
//! turn goes on, and flushed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use secrecy::SecretString;

use super::free_first::{ProviderSet, QuotaProbe};
use super::notices::TierOutcome;
use super::policy::{ModelSpec, Policy, Sticky, Tier, TierIdx, OLLAMA_CLOUD, OPENROUTER};
use super::quota::{write_newer, AccountBook, Availability, Hold, Persist, Reserved, NS};
use super::usage::{self, PaidDay, PAID_DAY_KEY};
use crate::clock::{next_utc_midnight, utc_day, SharedClock};
use crate::config::{Config, Secrets};
use crate::domain::{ConversationKey, Usage, UserRef};
use crate::secrets::NamedSecret;
use crate::store::{self, Store};

/// A model the provider said does not exist is skipped this long before it is tried again (providers
/// add and remove free models; an hour keeps a missing one from costing a request per turn).
const MODEL_MISSING_RETRY_MS: i64 = 3_600_000;

/// One request reserved for one attempt: the account it counts against, the key it is sent with, and
/// the account's hold sequence when it started (see [`AccountBook::succeeded`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Lease {
    /// The account (index in the book).
    pub account: usize,
    /// The key (index in the book and in the secrets).
    pub key: usize,
    /// The account's hold sequence when the request started.
    pub ticket: u64,
}

/// A free account passed over because its daily quota is spent, and the account that answers instead.
pub(super) struct SpentAccount {
    /// The spent account's label.
    pub label: String,
    /// When the spent account is back.
    pub until_ms: i64,
    /// The label of the account that answers instead.
    pub next_label: String,
}

/// Requests a tier answered on one UTC day (for `/status`).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct DayCount {
    /// The UTC day number.
    pub day: i64,
    /// Requests counted on it.
    pub requests: u64,
}

/// Mutable state behind one mutex: quotas, cursors, missing models and daily counters.
pub(super) struct State {
    /// Accounts, keys and their quota state.
    pub book: AccountBook,
    /// Round-robin positions, by tier index.
    pub cursors: Vec<usize>,
    /// (provider, model) → until when it is skipped.
    pub missing: HashMap<(String, String), i64>,
    /// The paid day's counters (cached; persisted under `paid/day`).
    pub paid: PaidDay,
    /// Requests today, by tier name.
    pub tier_requests: HashMap<String, DayCount>,
    /// Accounts whose spent daily quota was logged, with the UTC day it was logged for.
    pub out_logged: HashMap<usize, i64>,
}

/// Everything a turn shares with the router: clock, store, policy, state and secrets.
pub(super) struct Shared {
    /// The clock of quota days and cooldowns.
    pub clock: SharedClock,
    /// Where the state is persisted.
    pub store: Arc<dyn Store>,
    /// The policy in force (swapped by a reload).
    pub policy: RwLock<Arc<Policy>>,
    /// The mutable state.
    pub state: Mutex<State>,
    /// Secrets by key index of the account book (`None` for keyless endpoints).
    pub secrets: Vec<Option<SecretString>>,
    /// OpenRouter's `GET /key`, if any.
    pub probe: Option<Arc<dyn QuotaProbe>>,
    /// The clients, for a reload to rebuild the policy over.
    pub providers: ProviderSet,
    /// What provider model listings said about models (capabilities, context windows).
    pub learned: super::select::LearnedModels,
}

/// The account book built from the configured keys, with their secrets indexed like its keys.
pub(super) struct KeyRing {
    /// The accounts and keys.
    pub book: AccountBook,
    /// Each key's secret, by key index (`None` for a keyless endpoint).
    pub secrets: Vec<Option<SecretString>>,
}

impl KeyRing {
    /// One account per OpenRouter key (or per configured account label), one per Ollama Cloud key, and
    /// one per extra tier; then their persisted state.
    pub fn build(
        config: &Config,
        secrets: &Secrets,
        providers: &ProviderSet,
        store: &dyn Store,
    ) -> Self {
        let mut ring = Self {
            book: AccountBook::default(),
            secrets: Vec::new(),
        };
        if providers.openrouter.is_some() {
            let or = &config.openrouter;
            let per_minute = (or.requests_per_minute > 0).then_some(or.requests_per_minute);
            let daily =
                (or.free_requests_per_day > 0).then_some(u64::from(or.free_requests_per_day));
            for key in &secrets.openrouter_keys {
                let label = or.accounts.get(&key.name).unwrap_or(&key.name);
                let a = ring.book.account(OPENROUTER, label, per_minute, daily);
                ring.add(a, &key.name, Some(key));
            }
        }
        if providers.ollama.is_some() {
            for key in &secrets.ollama_keys {
                let a = ring.book.account(OLLAMA_CLOUD, &key.name, None, None);
                ring.add(a, &key.name, Some(key));
            }
        }
        for tier in &config.tiers {
            let Some((_, key)) = providers.extra.get(&tier.name) else {
                continue;
            };
            let a = ring.book.account(&tier.name, "default", None, None);
            let name = key.as_ref().map_or("(no key)", |k| k.name.as_str());
            ring.add(a, name, key.as_ref());
        }
        ring.book.load(store);
        ring
    }

    fn add(&mut self, account: usize, name: &str, key: Option<&NamedSecret>) {
        self.book
            .add_key(account, name, key.map(NamedSecret::fingerprint));
        self.secrets.push(key.map(|k| k.value.clone()));
    }
}

impl Shared {
    /// The state, even if a panicking holder poisoned the lock (the state stays consistent: every change
    /// under it is a few assignments).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The policy in force (a reload swaps it; a turn keeps the one it started with).
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(
            &self
                .policy
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Writes an account record through to the store.
    pub fn write(&self, persist: &Persist) {
        write_record(self.store.as_ref(), persist);
    }

    /// Writes an account record from a task of its own, which runs once the current one yields: for
    /// what every request changes (its count at the reservation; the backoff, or an expired hold,
    /// cleared at its first token), so the store write (about a sixth of what switchboard itself
    /// spends on a request) is not on the way to the provider or the client. The record is
    /// versioned, so two such writes landing out of order keep the newer. What a crash can lose is no
    /// more than before: sled makes a write durable only at its next flush (every 500 ms) anyway, and
    /// a count lost that way costs at most a request the provider refuses (429) and the router learns
    /// from. Outside a tokio runtime (tools, synchronous tests) it writes at once.
    pub fn write_soon(&self, persist: Persist) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let store = Arc::clone(&self.store);
                runtime.spawn(async move { write_record(store.as_ref(), &persist) });
            }
            Err(_) => self.write(&persist),
        }
    }

    fn write_paid(&self, paid: &PaidDay) {
        if let Err(e) = write_newer(self.store.as_ref(), PAID_DAY_KEY, paid) {
            tracing::warn!("paid counter not written: {e}");
        }
    }

    /// Makes the state just written durable: a hold must survive a crash right after it was learned
    /// (sled alone would lose the last half second), or the restarted router spends on it again.
    pub async fn flush(&self) {
        if let Err(e) = self.store.flush().await {
            tracing::warn!("router state not flushed: {e}");
        }
    }

    /// Takes a key out of rotation for a 401/403, with one loud error the first time.
    pub fn reject(&self, key: usize, status: u16) {
        if let Some((name, fp)) = self.first_news(key, |book| book.reject_key(key, status)) {
            tracing::error!(
                key = %name,
                fingerprint = %fp,
                "API key REJECTED by the provider (HTTP {status}): it is out of rotation until the configuration is reloaded (SIGHUP). Replace or remove it; run `switchboard check`."
            );
        }
    }

    /// Warns once per outage that a key's account is out of credits (402), naming the key and its
    /// fingerprint; the key's next success or a reload arms the warning again.
    pub fn warn_no_credits(&self, key: usize, cooldown_secs: u64) {
        if let Some((name, fp)) = self.first_news(key, |book| book.note_no_credits(key)) {
            tracing::warn!(
                key = %name,
                fingerprint = %fp,
                "API key's account is OUT OF CREDITS (HTTP 402): it is out of rotation for {cooldown_secs} s, then tried again. Add credits or remove the key."
            );
        }
    }

    /// Records something about `key` under the lock; when `record` says it is news, returns the key's
    /// name and fingerprint for the one log line (written after the lock is released).
    fn first_news(
        &self,
        key: usize,
        record: impl FnOnce(&mut AccountBook) -> bool,
    ) -> Option<(String, String)> {
        let mut st = self.lock();
        if !record(&mut st.book) {
            return None;
        }
        let k = &st.book.keys[key];
        Some((k.name.clone(), k.fingerprint.clone().unwrap_or_default()))
    }

    /// Reserves a request on a ready account of tier `t`, with a key not in `avoid` when the tier has
    /// one (else with any usable key: another model may still work on it). On `Err`, says why no account
    /// was ready.
    pub fn reserve(
        &self,
        t: TierIdx,
        tier: &Tier,
        now: i64,
        avoid: &[usize],
    ) -> Result<Lease, TierOutcome> {
        let (reserved, paid_write) = {
            let mut st = self.lock();
            let State {
                book,
                cursors,
                paid,
                tier_requests,
                ..
            } = &mut *st;
            let cursor = &mut cursors[t.0];
            let reserved = book
                .reserve_avoiding(&tier.accounts, tier.spread, cursor, now, avoid)
                .or_else(|| {
                    (!avoid.is_empty())
                        .then(|| book.reserve(&tier.accounts, tier.spread, cursor, now))
                        .flatten()
                });
            match reserved {
                Some(reserved) => {
                    let today = utc_day(now);
                    let count = tier_requests.entry(tier.name.0.clone()).or_default();
                    if count.day != today {
                        *count = DayCount {
                            day: today,
                            requests: 0,
                        };
                    }
                    count.requests += 1;
                    let paid_write = tier.paid.then(|| count_paid(paid, today));
                    (Ok(reserved), paid_write)
                }
                None => (Err(why_unavailable(book, &tier.accounts, now)), None),
            }
        };
        let Reserved {
            account,
            key,
            ticket,
            persist,
        } = reserved?;
        self.write_soon(persist);
        if let Some(p) = paid_write {
            self.write_paid(&p);
        }
        Ok(Lease {
            account,
            key,
            ticket,
        })
    }

    /// Whether tier `tier` has a ready account with a usable key not in `avoid`.
    pub fn has_other_key(&self, tier: &Tier, now: i64, avoid: &[usize]) -> bool {
        self.lock().book.any_usable(&tier.accounts, now, avoid)
    }

    /// The free account of `tier` the lease's account was picked after because its daily quota is
    /// spent, if any (the nearest one before it). Logs it at INFO once per account and UTC day, with
    /// its label and fingerprint, so the operator sees each free account run out.
    pub fn spent_before(&self, tier: &Tier, lease: Lease, now: i64) -> Option<SpentAccount> {
        let mut st = self.lock();
        let pos = tier.accounts.iter().position(|&a| a == lease.account)?;
        let (spent, until_ms) = tier.accounts[..pos].iter().rev().find_map(|&a| {
            match st.book.availability(a, now) {
                Availability::Exhausted => Some((a, next_utc_midnight(now))),
                Availability::Held(Hold::DailyExhausted, until) => Some((a, until)),
                _ => None,
            }
        })?;
        let today = utc_day(now);
        let first_today = st.out_logged.insert(spent, today) != Some(today);
        let book = &st.book;
        let out = SpentAccount {
            label: book.accounts[spent].label.clone(),
            until_ms,
            next_label: book.accounts[lease.account].label.clone(),
        };
        if first_today {
            let fingerprints: Vec<&str> = book.accounts[spent]
                .keys
                .iter()
                .filter_map(|&k| book.keys[k].fingerprint.as_deref())
                .collect();
            tracing::info!(
                account = %out.label,
                fingerprint = %fingerprints.join(","),
                next = %out.next_label,
                "free account is out of free requests for today: moving to the next account"
            );
        }
        Some(out)
    }

    /// When tier `tier`'s first account held back only by its per-minute limit frees up, if one will.
    pub fn soonest_minute_free(&self, tier: &Tier, now: i64) -> Option<i64> {
        self.lock().book.soonest_minute_free(&tier.accounts, now)
    }

    /// Whether the provider said recently that this model does not exist.
    pub fn model_missing(&self, tier: &Tier, model: &str, now: i64) -> bool {
        let st = self.lock();
        st.missing
            .get(&(tier.provider_name.clone(), model.to_owned()))
            .is_some_and(|&until| until > now)
    }

    /// Skips a model the provider said does not exist for [`MODEL_MISSING_RETRY_MS`].
    pub fn mark_missing(&self, tier: &Tier, model: &str, now: i64) {
        self.lock().missing.insert(
            (tier.provider_name.clone(), model.to_owned()),
            now + MODEL_MISSING_RETRY_MS,
        );
    }

    /// The leased request's first token arrived: the account's backoff starts over, an expired or older
    /// hold is cleared, and the key's 402 warning is armed again.
    pub fn succeeded(&self, lease: Lease) {
        let now = self.clock.now_ms();
        let p = {
            let mut st = self.lock();
            st.book.keys[lease.key].warned_no_credits = false;
            st.book.succeeded(lease.account, lease.ticket, now)
        };
        if let Some(p) = p {
            self.write_soon(p);
        }
    }

    /// Whether a flag is set in the router namespace.
    pub fn kv_flag(&self, key: &str) -> bool {
        matches!(self.store.kv_get(NS, key), Ok(Some(_)))
    }

    /// Sets a flag in the router namespace.
    pub fn set_flag(&self, key: &str) {
        self.kv_put(key, &[1]);
    }

    /// Reads a small value in the router namespace.
    pub fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        self.store.kv_get(NS, key).ok().flatten()
    }

    /// Writes a small value in the router namespace.
    pub fn kv_put(&self, key: &str, value: &[u8]) {
        if let Err(e) = self.store.kv_put(NS, key, value) {
            tracing::warn!("router flag not written: {e}");
        }
    }

    /// Records an answered request's usage, and for a priced paid model its estimated cost (warning once
    /// a day when the estimate passes the alert threshold).
    pub fn account_usage(
        &self,
        policy: &Policy,
        tier: &Tier,
        model: &ModelSpec,
        real_model: &str,
        user: &UserRef,
        usage: Usage,
    ) {
        let day = utc_day(self.clock.now_ms());
        let provider = &tier.provider_name;
        usage::record(self.store.as_ref(), day, provider, real_model, user, usage);
        if !tier.paid {
            return;
        }
        let Some(price) = policy
            .prices
            .get(&model.name)
            .or_else(|| policy.prices.get(real_model))
        else {
            return;
        };
        let cost = usage::cost(*price, usage);
        let limit = policy.switches.paid_spend_alert_usd;
        let (paid, alert) = {
            let mut st = self.lock();
            roll_paid_day(&mut st.paid, day);
            st.paid.cost_usd += cost;
            st.paid.version += 1;
            let alert = limit > 0.0 && !st.paid.alerted && st.paid.cost_usd >= limit;
            if alert {
                st.paid.alerted = true;
            }
            (st.paid, alert)
        };
        if alert {
            tracing::warn!(
                spent_usd = paid.cost_usd,
                alert_usd = limit,
                "estimated paid-tier spend today passed the alert threshold"
            );
        }
        self.write_paid(&paid);
    }
}

/// Starts a fresh paid day when the UTC day changed (the version keeps growing).
fn roll_paid_day(paid: &mut PaidDay, day: i64) {
    if paid.day != day {
        *paid = PaidDay {
            day,
            version: paid.version,
            ..PaidDay::default()
        };
    }
}

/// Counts one paid request today; returns the record to write.
fn count_paid(paid: &mut PaidDay, today: i64) -> PaidDay {
    roll_paid_day(paid, today);
    paid.requests += 1;
    paid.version += 1;
    *paid
}

/// Why none of `accounts` could take a request.
fn why_unavailable(book: &AccountBook, accounts: &[usize], now: i64) -> TierOutcome {
    let states: Vec<Availability> = accounts
        .iter()
        .map(|&a| book.availability(a, now))
        .collect();
    if states.iter().any(|s| {
        matches!(
            s,
            Availability::MinuteFull(_) | Availability::Held(Hold::RateLimited, _)
        )
    }) {
        TierOutcome::Busy
    } else if states
        .iter()
        .any(|s| matches!(s, Availability::Held(Hold::NoCredits, _)))
    {
        TierOutcome::NoCredits
    } else if !states.is_empty()
        && states
            .iter()
            .all(|s| matches!(s, Availability::Rejected(_)))
    {
        TierOutcome::KeysRejected
    } else {
        TierOutcome::QuotaUsedUp
    }
}

/// Writes `persist` unless the store holds a newer version; a failure is logged (the book in memory
/// stays right, and the next write of the account carries the change).
fn write_record(store: &dyn Store, (key, record): &Persist) {
    if let Err(e) = write_newer(store, key, record) {
        tracing::warn!("router state not written: {e}");
    }
}

/// The paid-day totals as persisted (or a fresh day).
pub(super) fn load_paid(store: &dyn Store) -> PaidDay {
    store::get_json::<PaidDay>(store, NS, PAID_DAY_KEY)
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn sticky_key(conversation: &ConversationKey) -> String {
    format!("sticky/{conversation}")
}

/// The model that last answered in this conversation, if remembered.
pub(super) fn load_sticky(store: &dyn Store, conversation: &ConversationKey) -> Option<Sticky> {
    store::get_json(store, NS, &sticky_key(conversation))
        .ok()
        .flatten()
}

/// Remembers the model that answered (written only when it changed).
pub(super) fn remember_sticky(store: &dyn Store, conversation: &ConversationKey, sticky: &Sticky) {
    if load_sticky(store, conversation).as_ref() == Some(sticky) {
        return;
    }
    if let Err(e) = store::put_json(store, NS, &sticky_key(conversation), sticky) {
        tracing::warn!("sticky model not written: {e}");
    }
}
