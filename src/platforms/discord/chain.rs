//! The reply-chain map: which conversation each message (the user's and the bot's) belongs to, so a
//! reply continues the conversation of the message it replies to. Kept in the store (namespace
//! [`CHAIN_NS`]) so chains survive a restart; entries older than [`CHAIN_RETENTION_MS`] are swept
//! away so the map stays bounded.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::store::{self, StateStore, StoreError};

use super::policy::Scope;

/// Store namespace of the map `message id → conversation`.
pub const CHAIN_NS: &str = "discord.chain";

/// How long a message stays in the map: 30 days. A reply to an older message starts a fresh
/// conversation, which is what people expect after that long, and the map holds about a month of
/// messages instead of every message the bot ever saw.
pub const CHAIN_RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

/// How often the adapter sweeps the map: hourly keeps it within an hour of the horizon while the
/// sweep's full scan stays rare.
pub const CHAIN_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// One record: the conversation a message belongs to (`None` = the channel's default conversation)
/// and when it was recorded. Records written before timestamps existed read as 0 and go at the first
/// sweep.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    thread: Option<String>,
    #[serde(default)]
    at_ms: i64,
}

/// The map over the store, with the clock that stamps and ages its entries.
#[derive(Clone)]
pub struct ChainMap {
    store: Arc<dyn StateStore>,
    clock: SharedClock,
}

impl ChainMap {
    /// The map in `store`, aged by `clock`.
    pub fn new(store: Arc<dyn StateStore>, clock: SharedClock) -> Self {
        Self { store, clock }
    }

    /// Remembers that `message_id` belongs to `scope`.
    pub fn record(&self, message_id: &str, scope: &Scope) -> Result<(), StoreError> {
        let thread = match scope {
            Scope::Chat => None,
            Scope::Thread(t) => Some(t.clone()),
        };
        let record = Record {
            thread,
            at_ms: self.clock.now_ms(),
        };
        store::put_json(self.store.as_ref(), CHAIN_NS, message_id, &record)
    }

    /// The conversation `message_id` belongs to, if the message was seen (and not swept yet).
    pub fn lookup(&self, message_id: &str) -> Result<Option<Scope>, StoreError> {
        Ok(
            store::get_json::<Record>(self.store.as_ref(), CHAIN_NS, message_id)?.map(|r| match r
                .thread
            {
                None => Scope::Chat,
                Some(t) => Scope::Thread(t),
            }),
        )
    }

    /// Deletes entries older than [`CHAIN_RETENTION_MS`]; returns how many. An unreadable entry is
    /// deleted too (it could never be used).
    pub fn prune(&self) -> Result<usize, StoreError> {
        let cutoff = self.clock.now_ms() - CHAIN_RETENTION_MS;
        let mut removed = 0;
        for (key, value) in self.store.kv_scan(CHAIN_NS, "")? {
            let at = store::decode::<Record>(&value).map_or(0, |r| r.at_ms);
            if at < cutoff {
                self.store.kv_remove(CHAIN_NS, &key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;
    use crate::store::memory::MemoryStore;

    fn map() -> ChainMap {
        ChainMap::new(
            Arc::new(MemoryStore::new()),
            Arc::new(TokioClock::starting_at(1_700_000_000_000)),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn records_round_trip() {
        let chains = map();
        assert_eq!(chains.lookup("1").unwrap(), None);
        chains
            .record("1", &Scope::Thread("chain-1".into()))
            .unwrap();
        chains.record("2", &Scope::Chat).unwrap();
        assert_eq!(
            chains.lookup("1").unwrap(),
            Some(Scope::Thread("chain-1".into()))
        );
        assert_eq!(chains.lookup("2").unwrap(), Some(Scope::Chat));
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_forgets_entries_past_the_horizon_only() {
        let chains = map();
        chains
            .record("old", &Scope::Thread("chain-old".into()))
            .unwrap();
        tokio::time::advance(Duration::from_secs(20 * 24 * 3600)).await;
        chains
            .record("new", &Scope::Thread("chain-new".into()))
            .unwrap();
        assert_eq!(chains.prune().unwrap(), 0, "nothing is 30 days old yet");
        tokio::time::advance(Duration::from_secs(11 * 24 * 3600)).await;
        assert_eq!(chains.prune().unwrap(), 1);
        assert_eq!(chains.lookup("old").unwrap(), None);
        assert_eq!(
            chains.lookup("new").unwrap(),
            Some(Scope::Thread("chain-new".into()))
        );
        // A record from before timestamps existed goes at the first sweep.
        let legacy = serde_json::json!({ "thread": "chain-x" });
        store::put_json(chains.store.as_ref(), CHAIN_NS, "legacy", &legacy).unwrap();
        assert_eq!(chains.prune().unwrap(), 1);
        assert_eq!(chains.lookup("legacy").unwrap(), None);
    }
}
