//! A store that logs what every flush made durable: an in-memory store underneath, and at each
//! `flush` a snapshot of the reply journal, the Telegram dedupe ledger and offset, and of whatever a
//! test's probe reads from its fake platform at that moment (calls answered so far). Tests compare
//! the order of flushes with the fake's calls: records durable before acknowledged, before replied.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use switchboard::core::journal::JOURNAL_NS;
use switchboard::domain::ConversationKey;
use switchboard::platforms::telegram::ledger;
use switchboard::store::memory::MemoryStore;
use switchboard::store::{
    ConversationMeta, DatedNamespace, Durable, HistoryStore, PruneReport, RetentionPolicy,
    StateStore, StoreError, Turn, ValueUpdate,
};

/// What one flush made durable, and what the fake had seen by then.
#[derive(Clone, Debug)]
pub struct Flushed {
    /// Reply-journal records.
    pub journal: usize,
    /// Telegram answered-message records.
    pub answered: usize,
    /// The saved Telegram update offset.
    pub offset: Option<i32>,
    /// The probe's reading (e.g. getUpdates calls, messages posted).
    pub seen: Vec<usize>,
}

/// The probe: reads counts from the test's fake at each flush.
pub type Probe = Box<dyn Fn() -> Vec<usize> + Send + Sync>;

/// The logging store.
pub struct FlushLog {
    inner: Arc<MemoryStore>,
    probe: Probe,
    log: Mutex<Vec<Flushed>>,
}

impl FlushLog {
    /// Logs flushes of `inner`, reading `probe` at each.
    pub fn new(inner: Arc<MemoryStore>, probe: Probe) -> Arc<Self> {
        Arc::new(Self {
            inner,
            probe,
            log: Mutex::default(),
        })
    }

    /// Every flush so far, in order.
    pub fn flushes(&self) -> Vec<Flushed> {
        self.log.lock().unwrap().clone()
    }

    fn snapshot(&self) -> Flushed {
        let count = |ns| self.inner.kv_scan(ns, "").map_or(0, |v| v.len());
        let offset = self
            .inner
            .kv_scan(ledger::STATE_NS, "offset")
            .ok()
            .and_then(|v| {
                v.first()
                    .and_then(|(_, b)| switchboard::store::decode(b).ok())
            });
        Flushed {
            journal: count(JOURNAL_NS),
            answered: count(ledger::ANSWERED_NS),
            offset,
            seen: (self.probe)(),
        }
    }
}

impl Durable for FlushLog {
    fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        let snapshot = self.snapshot();
        self.log.lock().unwrap().push(snapshot);
        self.inner.flush()
    }
}

impl HistoryStore for FlushLog {
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

impl StateStore for FlushLog {
    fn kv_get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.kv_get(ns, key)
    }
    fn kv_put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner.kv_put(ns, key, value)
    }
    fn kv_remove(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        self.inner.kv_remove(ns, key)
    }
    fn kv_update(
        &self,
        ns: &str,
        key: &str,
        f: &mut ValueUpdate<'_>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.kv_update(ns, key, f)
    }
    fn kv_scan(&self, ns: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.kv_scan(ns, prefix)
    }
    fn declare_dated(&self, dated: DatedNamespace) {
        self.inner.declare_dated(dated);
    }
    fn dated_namespaces(&self) -> Vec<DatedNamespace> {
        self.inner.dated_namespaces()
    }
}
