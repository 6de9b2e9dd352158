//! Client API keys (issue 14): the key records and their store, authentication of a presented key, and
//! per-key admission and usage. A key is `sb-<id>-<secret>`; the store keeps only the secret's SHA-256
//! digest ([`secret`]). Each key carries its tiers, models and [`admission::Limits`]; [`gate`] admits a
//! request atomically against them and settles it with the real usage into the [`ledger`]. The
//! `switchboard keys` command ([`command`]) reaches the running daemon through its admin socket
//! ([`admin`]) and opens the store itself when no daemon runs.

pub mod admin;
pub mod admission;
pub mod command;
pub mod gate;
pub mod ledger;
pub mod routes;
pub mod secret;
pub mod upkeep;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, RwLock};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use self::admission::{Limiter, Limits};
use self::ledger::{DayUsage, Ledger};
use self::secret::{Presented, SecretDigest};
use crate::clock::SharedClock;
use crate::config::providers::Price;
use crate::store::{StateStore, StoreError};

/// The store namespace of key records: `<id>` → [`KeyRecord`] as JSON.
pub const NAMESPACE: &str = "api_keys";
/// The most days `keys usage --days` and `/v1/usage` look back: the ledger is per day, and a month
/// is what a monthly bill needs.
pub const MAX_USAGE_DAYS: u32 = 31;

/// One client key as stored: everything but the secret.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The public id (inside the key; safe to log).
    pub id: String,
    /// The operator's name for it.
    pub name: String,
    /// The secret's SHA-256, lowercase hex. Never printed.
    pub digest: String,
    /// Tiers it may use (`free`, `paid`); `None` for all.
    pub tiers: Option<Vec<String>>,
    /// Models it may use; `None` for all.
    pub models: Option<Vec<String>>,
    /// Its limits.
    pub limits: Limits,
    /// When it stops working (ms since the epoch).
    pub expires_ms: Option<i64>,
    /// When it was made.
    pub created_ms: i64,
    /// When it was revoked.
    pub revoked_ms: Option<i64>,
    /// Whether it may read `/metrics`, `/health` detail and every key's `/usage`.
    #[serde(default)]
    pub operator: bool,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("tiers", &self.tiers)
            .field("models", &self.models)
            .field("limits", &self.limits)
            .field("revoked", &self.revoked_ms.is_some())
            .finish_non_exhaustive()
    }
}

impl KeyRecord {
    /// This record with its digest blanked, for anything shown or sent outside the store.
    #[must_use]
    pub fn without_digest(mut self) -> Self {
        self.digest = String::new();
        self
    }
}

/// What `keys create` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewKey {
    /// The name.
    pub name: String,
    /// Tiers; `None` for all.
    pub tiers: Option<Vec<String>>,
    /// Models; `None` for all.
    pub models: Option<Vec<String>>,
    /// Limits.
    pub limits: Limits,
    /// Expiry (ms since the epoch).
    pub expires_ms: Option<i64>,
    /// An operator key.
    pub operator: bool,
}

/// A key as `keys list` and `keys show` present it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyView {
    /// The record, its digest blanked.
    pub key: KeyRecord,
    /// Today's use.
    pub today: DayUsage,
    /// Requests in flight now (0 when read from the store).
    pub in_flight: u32,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No key has this id.
    #[error("no key with id `{0}`")]
    Unknown(String),
    /// The request was not valid.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    /// The random source failed.
    #[error("cannot read random bytes for a new key: {0}")]
    Random(#[from] std::io::Error),
}

/// A key loaded for authentication: its record, digest and counters.
pub struct KeyEntry {
    /// The record.
    pub record: KeyRecord,
    digest: SecretDigest,
    /// Its admission counters.
    pub limiter: Limiter,
}

/// Every client key, the ledger and the prices its costs are estimated from.
pub struct Keys {
    store: Arc<dyn StateStore>,
    clock: SharedClock,
    table: RwLock<HashMap<String, Arc<KeyEntry>>>,
    /// The usage ledger.
    pub ledger: Ledger,
    prices: BTreeMap<String, Price>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys").finish_non_exhaustive()
    }
}

impl Keys {
    /// Loads every key from `store`; `prices` (paid models' prices) estimate costs.
    pub fn open(
        store: Arc<dyn StateStore>,
        clock: SharedClock,
        prices: BTreeMap<String, Price>,
    ) -> Result<Arc<Self>, StoreError> {
        let ledger = Ledger::new(store.clone());
        let now = clock.now_ms();
        let mut table = HashMap::new();
        for (_, bytes) in store.kv_scan(NAMESPACE, "")? {
            let Ok(record) = crate::store::decode::<KeyRecord>(&bytes) else {
                tracing::warn!("a stored client key record is unreadable; skipped");
                continue;
            };
            let today = ledger.today(&record.id, now);
            let entry = entry(record, now, &today);
            if let Some(e) = entry {
                table.insert(e.record.id.clone(), Arc::new(e));
            }
        }
        Ok(Arc::new(Self {
            store,
            clock,
            table: RwLock::new(table),
            ledger,
            prices,
        }))
    }

    /// Requests in flight over every key.
    pub fn in_flight(&self) -> u64 {
        let now = self.now_ms();
        self.read()
            .values()
            .map(|e| u64::from(e.limiter.today(now).2))
            .sum()
    }

    /// Now, by the injected clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Whether any key that still works exists (then every model request needs one).
    pub fn any_active(&self) -> bool {
        let now = self.now_ms();
        self.read().values().any(|e| usable(&e.record, now))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<KeyEntry>>> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key behind `presented` if its secret matches (constant time) and it is neither revoked nor
    /// expired.
    pub fn authenticate(&self, presented: &Presented) -> Option<Arc<KeyEntry>> {
        let entry = self.read().get(&presented.id).cloned()?;
        let matched = presented.digest().matches(&entry.digest);
        (matched && usable(&entry.record, self.now_ms())).then_some(entry)
    }

    /// Makes a key: stores its record and returns it with the full key, to print once.
    pub fn create(&self, new: NewKey) -> Result<(KeyRecord, SecretString), KeyError> {
        validate(&new)?;
        let minted = secret::mint()?;
        if self.read().contains_key(&minted.id) {
            return Err(KeyError::Invalid("id collision; please try again".into()));
        }
        let record = KeyRecord {
            id: minted.id.clone(),
            name: new.name,
            digest: minted.digest.to_hex(),
            tiers: new.tiers,
            models: new.models,
            limits: new.limits,
            expires_ms: new.expires_ms,
            created_ms: self.now_ms(),
            revoked_ms: None,
            operator: new.operator,
        };
        crate::store::put_json(&*self.store, NAMESPACE, &record.id, &record)?;
        self.insert(record.clone());
        tracing::info!(key = %record.id, "client key created");
        Ok((record.without_digest(), minted.key))
    }

    fn insert(&self, record: KeyRecord) {
        let now = self.now_ms();
        let today = self.ledger.today(&record.id, now);
        if let Some(e) = entry(record, now, &today) {
            self.table
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(e.record.id.clone(), Arc::new(e));
        }
    }

    /// Revokes key `id`: requests with it get 401 from now on.
    pub fn revoke(&self, id: &str) -> Result<KeyRecord, KeyError> {
        let mut record = self.record(id)?;
        if record.revoked_ms.is_none() {
            record.revoked_ms = Some(self.now_ms());
            crate::store::put_json(&*self.store, NAMESPACE, id, &record)?;
        }
        let record = record.without_digest();
        self.table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        tracing::info!(key = %id, "client key revoked");
        Ok(record)
    }

    fn record(&self, id: &str) -> Result<KeyRecord, KeyError> {
        crate::store::get_json::<KeyRecord>(&*self.store, NAMESPACE, id)?
            .ok_or_else(|| KeyError::Unknown(id.to_owned()))
    }

    /// Every key, revoked ones too, by creation time.
    pub fn list(&self) -> Result<Vec<KeyView>, KeyError> {
        let mut out: Vec<KeyView> = self
            .store
            .kv_scan(NAMESPACE, "")?
            .into_iter()
            .filter_map(|(_, bytes)| crate::store::decode::<KeyRecord>(&bytes).ok())
            .map(|r| self.view(r))
            .collect();
        out.sort_by_key(|v| v.key.created_ms);
        Ok(out)
    }

    /// One key.
    pub fn show(&self, id: &str) -> Result<KeyView, KeyError> {
        Ok(self.view(self.record(id)?))
    }

    fn view(&self, key: KeyRecord) -> KeyView {
        let now = self.now_ms();
        let in_flight = self
            .read()
            .get(&key.id)
            .map_or(0, |e| e.limiter.today(now).2);
        let key = key.without_digest();
        KeyView {
            today: self.ledger.today(&key.id, now),
            key,
            in_flight,
        }
    }

    /// The last `days` days of `id`'s use (every key's without one), newest first.
    pub fn usage(
        &self,
        id: Option<&str>,
        days: u32,
    ) -> Result<Vec<(KeyRecord, Vec<DayUsage>)>, KeyError> {
        let days = days.clamp(1, MAX_USAGE_DAYS);
        let now = self.now_ms();
        let views = match id {
            Some(id) => vec![self.show(id)?],
            None => self.list()?,
        };
        Ok(views
            .into_iter()
            .map(|v| {
                let d = self.ledger.days(&v.key.id, now, days);
                (v.key, d)
            })
            .collect())
    }

    /// The estimated cost of `usage` on `model` (zero for a model without a configured price).
    pub fn cost(&self, model: &str, usage: crate::domain::Usage) -> f64 {
        self.prices.get(model).map_or(0.0, |p| {
            // Prices are per million tokens; token counts stay far below f64's exact range.
            #[allow(clippy::cast_precision_loss)]
            let (prompt, completion) = (usage.prompt_tokens as f64, usage.completion_tokens as f64);
            (prompt * p.prompt + completion * p.completion) / 1_000_000.0
        })
    }
}

/// Whether `record` works at `now_ms`.
fn usable(record: &KeyRecord, now_ms: i64) -> bool {
    record.revoked_ms.is_none() && record.expires_ms.is_none_or(|e| now_ms < e)
}

/// The loaded form of a record that still works; the limiter resumes today's counts from the ledger.
fn entry(record: KeyRecord, now_ms: i64, today: &DayUsage) -> Option<KeyEntry> {
    if !usable(&record, now_ms) {
        return None;
    }
    let digest = SecretDigest::from_hex(&record.digest)?;
    let requests = today.answered + today.failed;
    let tokens = today.prompt_tokens + today.completion_tokens;
    Some(KeyEntry {
        limiter: Limiter::resuming(now_ms, requests, tokens),
        digest,
        record,
    })
}

fn validate(new: &NewKey) -> Result<(), KeyError> {
    let name = new.name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(KeyError::Invalid(
            "--name must be 1 to 100 printable characters".into(),
        ));
    }
    if let Some(tiers) = &new.tiers {
        if let Some(bad) = tiers.iter().find(|t| *t != "free" && *t != "paid") {
            return Err(KeyError::Invalid(format!(
                "unknown tier `{bad}` in --tiers (use free, paid or free,paid)"
            )));
        }
    }
    let zero = |v: Option<u64>| v == Some(0);
    let l = &new.limits;
    if zero(l.rpm.map(u64::from))
        || zero(l.daily_requests)
        || zero(l.daily_tokens)
        || zero(l.concurrency.map(u64::from))
    {
        return Err(KeyError::Invalid(
            "a limit of 0 would refuse every request; leave the option out for no limit".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
