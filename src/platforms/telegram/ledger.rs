//! The adapter's durable records in the store: which messages were already answered (so a batch that
//! Telegram redelivers after a crash is not answered twice) and the last update offset.
//!
//! Records are keyed by `bot id:chat id:message id`, not by update id: Telegram restarts update ids at
//! random after a week without updates, while a message id never repeats within a chat. The bot id keeps
//! records apart when the token is changed to another bot (a private chat's id is the user's id, the
//! same for every bot); the offset is kept per bot for the same reason.

use std::sync::Arc;

use crate::clock::SharedClock;
use crate::store::{self, StateStore};

/// Namespace of answered-message records (value: when answered, ms since the epoch).
pub const ANSWERED_NS: &str = "telegram.answered";
/// Namespace of the adapter's own state (the update offset).
pub const STATE_NS: &str = "telegram.state";
const OFFSET_KEY: &str = "offset";

/// Answered records are kept this long. Telegram keeps undelivered updates for 24 h, so nothing older
/// can be redelivered; twice that leaves room for clock skew and long outages.
pub const ANSWERED_RETENTION_MS: i64 = 48 * 3600 * 1000;

/// Dedupe records and offset over the store.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<dyn StateStore>,
    clock: SharedClock,
    bot: u64,
}

impl Ledger {
    /// A ledger for bot `bot` (its user id) over `store`, dating records with `clock`.
    pub fn new(store: Arc<dyn StateStore>, clock: SharedClock, bot: u64) -> Self {
        Self { store, clock, bot }
    }

    fn key(&self, chat: i64, message: i32) -> String {
        format!("{}:{chat}:{message}", self.bot)
    }

    fn offset_key(&self) -> String {
        format!("{OFFSET_KEY}:{}", self.bot)
    }

    /// Whether the message was already answered. A store error counts as "not answered": answering
    /// twice is better than never.
    pub fn answered(&self, chat: i64, message: i32) -> bool {
        match self.store.kv_get(ANSWERED_NS, &self.key(chat, message)) {
            Ok(v) => v.is_some(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the answered-message records");
                false
            }
        }
    }

    /// Records that the message is being answered (before the reply starts: a crash mid-reply must not
    /// make the core take the same turn twice).
    pub fn record(&self, chat: i64, message: i32) {
        let value = store::encode(&self.clock.now_ms()).unwrap_or_default();
        if let Err(e) = self
            .store
            .kv_put(ANSWERED_NS, &self.key(chat, message), &value)
        {
            tracing::warn!(error = %e, "could not record an answered message");
        }
    }

    /// The next update offset saved by an earlier run.
    pub fn offset(&self) -> Option<i32> {
        match self.store.kv_get(STATE_NS, &self.offset_key()) {
            Ok(Some(bytes)) => store::decode(&bytes).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the saved update offset");
                None
            }
        }
    }

    /// Saves the next update offset.
    pub fn save_offset(&self, offset: i32) {
        let result = store::encode(&offset)
            .and_then(|v| self.store.kv_put(STATE_NS, &self.offset_key(), &v));
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not save the update offset");
        }
    }

    /// Deletes answered records older than [`ANSWERED_RETENTION_MS`]; returns how many.
    pub fn prune(&self) -> usize {
        let cutoff = self.clock.now_ms() - ANSWERED_RETENTION_MS;
        let entries = match self.store.kv_scan(ANSWERED_NS, &format!("{}:", self.bot)) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "could not scan answered-message records");
                return 0;
            }
        };
        let mut removed = 0;
        for (key, value) in entries {
            let at: i64 = store::decode(&value).unwrap_or(0);
            if at < cutoff && self.store.kv_remove(ANSWERED_NS, &key).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Makes the records durable.
    pub async fn flush(&self) {
        if let Err(e) = self.store.flush().await {
            tracing::warn!(error = %e, "could not flush the store");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;
    use crate::store::memory::MemoryStore;

    #[tokio::test(start_paused = true)]
    async fn records_offsets_and_pruning() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let ledger = Ledger::new(
            store.clone(),
            Arc::new(TokioClock::starting_at(1_000_000)),
            42,
        );
        assert!(!ledger.answered(-5, 3));
        ledger.record(-5, 3);
        assert!(ledger.answered(-5, 3));
        assert!(!ledger.answered(-5, 4));
        assert_eq!(ledger.offset(), None);
        ledger.save_offset(77);
        assert_eq!(
            Ledger::new(store.clone(), Arc::new(TokioClock::starting_at(0)), 42).offset(),
            Some(77)
        );
        let other_bot = Ledger::new(store, Arc::new(TokioClock::starting_at(0)), 43);
        assert_eq!(other_bot.offset(), None);
        assert!(!other_bot.answered(-5, 3));
        assert_eq!(ledger.prune(), 0);
        tokio::time::advance(std::time::Duration::from_millis(
            ANSWERED_RETENTION_MS as u64 + 1,
        ))
        .await;
        ledger.record(-5, 9);
        assert_eq!(ledger.prune(), 1);
        assert!(!ledger.answered(-5, 3) && ledger.answered(-5, 9));
    }
}
