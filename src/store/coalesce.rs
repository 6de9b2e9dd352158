//! Coalescing hot counters: a [`super::Store`] layer that keeps the namespaces their owners declared as
//! pure counters ([`StateStore::declare_counters`]) in memory and writes them to the store beneath every
//! interval and at shutdown ([`Durable::flush_all`]), instead of on every turn.
//!
//! # Why
//!
//! Every answered message bumps a per-user and a per-chat usage counter (`core.usage`) and a per-model one
//! (`router.usage`). In a log-structured store (sled) each bump appends a new copy of its page and turns
//! the old one into garbage, so a few hot keys rewritten on every turn cost far more disk (and fsyncs)
//! than the turns themselves (issue 11). Held here, a counter bumped a hundred times between two writes
//! is written once.
//!
//! # What a crash costs
//!
//! At most one interval of counter increments (5 s by default, `[store] counter_flush_secs`): the
//! counters are statistics (`/usage`) and the per-user daily paid cap, which may then let a user have a
//! few seconds' worth of paid requests more on the day of a crash. Nothing else is held: history, ledgers,
//! settings and the router's quota book (a key out until midnight, a 402 cooldown) go straight through,
//! so what must survive a crash is written at once, exactly as without this layer.
//!
//! # Consistency
//!
//! Reads see the held values (a read of a counter is never older than its last update), scans merge them
//! in, and all changes to held namespaces happen under one lock, so `kv_update` stays atomic. A value is
//! written to the store beneath under the same lock, so no update can slip in between the copy and the
//! write. The lock is held for the length of one write-out: a few thousand small puts at most.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};

use super::{
    ConversationMeta, DatedNamespace, Durable, HistoryStore, PruneReport, RetentionPolicy,
    StateStore, Store, StoreError, Turn, ValueUpdate, Visit,
};
use crate::domain::ConversationKey;

/// The values held in memory: namespace and key → the newest value (`None`: removed).
type Held = BTreeMap<(String, String), Option<Vec<u8>>>;

#[derive(Default)]
struct State {
    /// The declared counter namespaces.
    namespaces: HashSet<String>,
    /// Changes not yet written to the store beneath.
    held: Held,
}

/// A store whose declared counter namespaces are written out every interval; everything else goes
/// straight to the store beneath.
pub struct Coalescing {
    inner: Arc<dyn Store>,
    state: Mutex<State>,
}

impl Coalescing {
    /// Wraps `inner`, writing the held counters out every `interval` from a task on the current tokio
    /// runtime (it ends when the store is dropped). Must be called within a runtime.
    pub fn start(inner: Arc<dyn Store>, interval: Duration) -> Arc<Self> {
        let store = Arc::new(Self {
            inner,
            state: Mutex::new(State::default()),
        });
        // The first write-out is due one interval from now, not from whenever the task first runs.
        let first = tokio::time::Instant::now() + interval;
        tokio::spawn(write_out_every(Arc::downgrade(&store), first, interval));
        store
    }

    /// How many changes are held and not yet written out.
    pub fn held(&self) -> usize {
        self.lock().held.len()
    }

    /// Writes every held change to the store beneath (not yet flushed to disk).
    pub fn write_out(&self) -> Result<(), StoreError> {
        let mut state = self.lock();
        while let Some(((ns, key), value)) = state.held.pop_first() {
            let written = match &value {
                Some(bytes) => self.inner.kv_put(&ns, &key, bytes),
                None => self.inner.kv_remove(&ns, &key),
            };
            if let Err(e) = written {
                // Kept for the next write-out rather than lost.
                state.held.insert((ns, key), value);
                return Err(e);
            }
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes the held changes out every `interval` until the store is gone.
async fn write_out_every(store: Weak<Coalescing>, first: tokio::time::Instant, interval: Duration) {
    let mut tick = tokio::time::interval_at(first, interval);
    // After a stall, one write-out covers everything held; catching up tick by tick would not.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(store) = store.upgrade() else { return };
        if let Err(e) = store.write_out() {
            tracing::warn!(error = %e, "usage counters not written; will retry");
        }
    }
}

impl Drop for Coalescing {
    fn drop(&mut self) {
        // Callers write out at shutdown (`flush_all`); this catches an early return that did not.
        if let Err(e) = self.write_out() {
            tracing::error!(error = %e, "usage counters not written at the end");
        }
    }
}

impl Durable for Coalescing {
    fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        self.inner.flush()
    }

    fn flush_all(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        let written = self.write_out();
        let flushed = self.inner.flush_all();
        async move {
            written?;
            flushed.await
        }
        .boxed()
    }
}

impl StateStore for Coalescing {
    fn kv_get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let state = self.lock();
        if !state.namespaces.contains(ns) {
            drop(state);
            return self.inner.kv_get(ns, key);
        }
        match state.held.get(&(ns.to_owned(), key.to_owned())) {
            Some(value) => Ok(value.clone()),
            // Read under the lock: a write-out cannot be halfway through this key.
            None => self.inner.kv_get(ns, key),
        }
    }

    fn kv_put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut state = self.lock();
        if !state.namespaces.contains(ns) {
            drop(state);
            return self.inner.kv_put(ns, key, value);
        }
        state
            .held
            .insert((ns.to_owned(), key.to_owned()), Some(value.to_vec()));
        Ok(())
    }

    fn kv_remove(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        let mut state = self.lock();
        if !state.namespaces.contains(ns) {
            drop(state);
            return self.inner.kv_remove(ns, key);
        }
        state.held.insert((ns.to_owned(), key.to_owned()), None);
        Ok(())
    }

    fn kv_update(
        &self,
        ns: &str,
        key: &str,
        f: &mut ValueUpdate<'_>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut state = self.lock();
        if !state.namespaces.contains(ns) {
            drop(state);
            return self.inner.kv_update(ns, key, f);
        }
        let id = (ns.to_owned(), key.to_owned());
        let old = match state.held.get(&id) {
            Some(held) => held.clone(),
            None => self.inner.kv_get(ns, key)?,
        };
        let new = f(old.as_deref());
        state.held.insert(id, new.clone());
        Ok(new)
    }

    fn kv_visit(&self, ns: &str, prefix: &str, visit: &mut Visit<'_>) -> Result<(), StoreError> {
        if self.lock().namespaces.contains(ns) {
            // Held counters merge into the scan: collected, as `kv_scan` does.
            super::visit_each(self.kv_scan(ns, prefix)?, visit);
            return Ok(());
        }
        self.inner.kv_visit(ns, prefix, visit)
    }

    fn kv_scan(&self, ns: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let state = self.lock();
        if !state.namespaces.contains(ns) {
            drop(state);
            return self.inner.kv_scan(ns, prefix);
        }
        let mut merged: BTreeMap<String, Option<Vec<u8>>> = self
            .inner
            .kv_scan(ns, prefix)?
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        let from = (ns.to_owned(), prefix.to_owned());
        for ((_, key), value) in state
            .held
            .range(from..)
            .take_while(|((n, k), _)| n == ns && k.starts_with(prefix))
        {
            merged.insert(key.clone(), value.clone());
        }
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect())
    }

    fn declare_dated(&self, dated: DatedNamespace) {
        self.inner.declare_dated(dated);
    }

    fn dated_namespaces(&self) -> Vec<DatedNamespace> {
        self.inner.dated_namespaces()
    }

    fn declare_counters(&self, ns: &'static str) {
        self.lock().namespaces.insert(ns.to_owned());
    }
}

impl HistoryStore for Coalescing {
    fn conversation(&self, key: &ConversationKey) -> Result<Option<ConversationMeta>, StoreError> {
        self.inner.conversation(key)
    }

    fn put_conversation(
        &self,
        key: &ConversationKey,
        meta: &ConversationMeta,
    ) -> Result<(), StoreError> {
        self.inner.put_conversation(key, meta)
    }

    fn list_conversations(&self) -> Result<Vec<(ConversationKey, ConversationMeta)>, StoreError> {
        self.inner.list_conversations()
    }

    fn append_turn(
        &self,
        key: &ConversationKey,
        epoch: u32,
        turn: &Turn,
    ) -> Result<(), StoreError> {
        self.inner.append_turn(key, epoch, turn)
    }

    fn recent_turns(
        &self,
        key: &ConversationKey,
        epoch: u32,
        limit: usize,
    ) -> Result<Vec<Turn>, StoreError> {
        self.inner.recent_turns(key, epoch, limit)
    }

    fn reset_conversation(&self, key: &ConversationKey, now_ms: i64) -> Result<u32, StoreError> {
        self.inner.reset_conversation(key, now_ms)
    }

    fn prune(&self, policy: RetentionPolicy, now_ms: i64) -> Result<PruneReport, StoreError> {
        self.inner.prune(policy, now_ms)
    }
}

#[cfg(test)]
mod tests;
