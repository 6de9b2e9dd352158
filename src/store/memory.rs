//! An in-memory [`HistoryStore`] and [`StateStore`] for tests and the core's benchmarks: the same
//! contracts as sled, no disk.

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures_util::future::{self, BoxFuture, FutureExt};

use super::{
    decode, encode, ConversationMeta, DatedNamespace, DatedRegistry, Durable, HistoryStore,
    PruneReport, RetentionPolicy, StateStore, StoreError, Turn, ValueUpdate,
};
use crate::domain::ConversationKey;

#[derive(Default)]
struct Inner {
    conversations: BTreeMap<ConversationKey, ConversationMeta>,
    /// (conversation, epoch) → turns in order.
    turns: BTreeMap<(ConversationKey, u32), Vec<Turn>>,
    kv: BTreeMap<(String, String), Vec<u8>>,
}

/// A store that lives in memory and is gone when dropped.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    dated: DatedRegistry,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl HistoryStore for MemoryStore {
    fn conversation(&self, key: &ConversationKey) -> Result<Option<ConversationMeta>, StoreError> {
        Ok(self.lock().conversations.get(key).cloned())
    }

    fn put_conversation(
        &self,
        key: &ConversationKey,
        meta: &ConversationMeta,
    ) -> Result<(), StoreError> {
        // Round-trip through the value format so both stores accept exactly the same values.
        let meta: ConversationMeta = decode(&encode(meta)?)?;
        self.lock().conversations.insert(key.clone(), meta);
        Ok(())
    }

    fn list_conversations(&self) -> Result<Vec<(ConversationKey, ConversationMeta)>, StoreError> {
        Ok(self
            .lock()
            .conversations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn append_turn(
        &self,
        key: &ConversationKey,
        epoch: u32,
        turn: &Turn,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let meta = inner
            .conversations
            .entry(key.clone())
            .or_insert_with(|| ConversationMeta {
                epoch,
                created_ms: turn.at_ms,
                ..ConversationMeta::default()
            });
        if meta.epoch != epoch {
            // The conversation was reset while this turn was in flight: it belongs to a forgotten epoch.
            return Ok(());
        }
        meta.turns += 1;
        meta.updated_ms = turn.at_ms;
        inner
            .turns
            .entry((key.clone(), epoch))
            .or_default()
            .push(turn.clone());
        Ok(())
    }

    fn recent_turns(
        &self,
        key: &ConversationKey,
        epoch: u32,
        limit: usize,
    ) -> Result<Vec<Turn>, StoreError> {
        let inner = self.lock();
        let turns = inner
            .turns
            .get(&(key.clone(), epoch))
            .map_or(&[][..], Vec::as_slice);
        Ok(turns[turns.len().saturating_sub(limit)..].to_vec())
    }

    fn reset_conversation(&self, key: &ConversationKey, now_ms: i64) -> Result<u32, StoreError> {
        let mut inner = self.lock();
        inner.turns.retain(|(k, _), _| k != key);
        let meta = inner
            .conversations
            .entry(key.clone())
            .or_insert_with(|| ConversationMeta {
                created_ms: now_ms,
                ..Default::default()
            });
        meta.epoch += 1;
        meta.turns = 0;
        meta.updated_ms = now_ms;
        Ok(meta.epoch)
    }

    fn prune(&self, policy: RetentionPolicy, now_ms: i64) -> Result<PruneReport, StoreError> {
        let mut inner = self.lock();
        let mut report = PruneReport {
            conversations: inner.conversations.len() as u64,
            turns_deleted: 0,
        };
        for turns in inner.turns.values_mut() {
            let before = turns.len();
            if policy.max_age_ms > 0 {
                turns.retain(|t| now_ms - t.at_ms <= policy.max_age_ms);
            }
            if policy.max_turns > 0 && turns.len() > policy.max_turns {
                let excess = turns.len() - policy.max_turns;
                turns.drain(..excess);
            }
            report.turns_deleted += (before - turns.len()) as u64;
        }
        Ok(report)
    }
}

impl StateStore for MemoryStore {
    fn kv_get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .lock()
            .kv
            .get(&(ns.to_owned(), key.to_owned()))
            .cloned())
    }

    fn kv_put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.lock()
            .kv
            .insert((ns.to_owned(), key.to_owned()), value.to_vec());
        Ok(())
    }

    fn kv_remove(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        self.lock().kv.remove(&(ns.to_owned(), key.to_owned()));
        Ok(())
    }

    fn kv_update(
        &self,
        ns: &str,
        key: &str,
        f: &mut ValueUpdate<'_>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut inner = self.lock();
        let k = (ns.to_owned(), key.to_owned());
        let new = f(inner.kv.get(&k).map(Vec::as_slice));
        match &new {
            Some(v) => inner.kv.insert(k, v.clone()),
            None => inner.kv.remove(&k),
        };
        Ok(new)
    }

    fn kv_scan(&self, ns: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .kv
            .range((ns.to_owned(), prefix.to_owned())..)
            .take_while(|((n, k), _)| n == ns && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn declare_dated(&self, dated: DatedNamespace) {
        self.dated.declare(dated);
    }

    fn dated_namespaces(&self) -> Vec<DatedNamespace> {
        self.dated.list()
    }
}

impl Durable for MemoryStore {
    fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        future::ready(Ok(())).boxed()
    }
}
