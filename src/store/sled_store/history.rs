//! Conversation history in sled: the `conversations` and `turns` trees, their key layout, and the
//! [`HistoryStore`] implementation (see the parent module for the layout and the consistency argument).

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Batch;

use super::{backend, SledStore, SEP};
use crate::domain::ConversationKey;
use crate::store::{
    decode, encode, ConversationMeta, HistoryStore, PruneReport, RetentionPolicy, StoreError, Turn,
};

impl SledStore {
    /// Writes many turns of one conversation in one batch (no per-turn transaction) and sets its metadata.
    /// For imports and benchmark setup; the epoch must be the conversation's current one.
    pub fn append_turns_bulk(
        &self,
        key: &ConversationKey,
        epoch: u32,
        turns: &[Turn],
    ) -> Result<(), StoreError> {
        let mut meta = self.conversation(key)?.unwrap_or_else(|| ConversationMeta {
            epoch,
            created_ms: turns.first().map_or(0, |t| t.at_ms),
            ..ConversationMeta::default()
        });
        if meta.epoch != epoch {
            return Err(StoreError::Backend(format!(
                "bulk append to epoch {epoch} of a conversation at epoch {}",
                meta.epoch
            )));
        }
        let mut batch = Batch::default();
        for turn in turns {
            let seq = self.db.generate_id().map_err(backend)?;
            batch.insert(turn_key(key, epoch, seq), encode(turn)?);
            meta.turns += 1;
            meta.updated_ms = turn.at_ms;
        }
        self.turns.apply_batch(batch).map_err(backend)?;
        self.put_conversation(key, &meta)
    }
}

/// `key ‖ 0xFF`: every turn of a conversation, all epochs.
fn conversation_prefix(key: &ConversationKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.0.len() + 1 + 4 + 8);
    k.extend_from_slice(key.0.as_bytes());
    k.push(SEP);
    k
}

/// `key ‖ 0xFF ‖ epoch`: the turns of one epoch.
fn epoch_prefix(key: &ConversationKey, epoch: u32) -> Vec<u8> {
    let mut k = conversation_prefix(key);
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

fn turn_key(key: &ConversationKey, epoch: u32, seq: u64) -> Vec<u8> {
    let mut k = epoch_prefix(key, epoch);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The epoch encoded in a turn key whose conversation prefix is `prefix_len` bytes long.
fn epoch_of(turn_key: &[u8], prefix_len: usize) -> Option<u32> {
    let bytes = turn_key.get(prefix_len..prefix_len + 4)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// Only the timestamp of a stored turn, so pruning by age skips building the text.
#[derive(serde::Deserialize)]
struct TurnAge {
    at_ms: i64,
}

fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => backend(e),
    }
}

impl HistoryStore for SledStore {
    fn conversation(&self, key: &ConversationKey) -> Result<Option<ConversationMeta>, StoreError> {
        self.conversations
            .get(key.0.as_bytes())
            .map_err(backend)?
            .map(|v| decode(&v))
            .transpose()
    }

    fn put_conversation(
        &self,
        key: &ConversationKey,
        meta: &ConversationMeta,
    ) -> Result<(), StoreError> {
        self.conversations
            .insert(key.0.as_bytes(), encode(meta)?)
            .map_err(backend)?;
        Ok(())
    }

    fn list_conversations(&self) -> Result<Vec<(ConversationKey, ConversationMeta)>, StoreError> {
        self.conversations
            .iter()
            .map(|entry| {
                let (k, v) = entry.map_err(backend)?;
                let key = String::from_utf8(k.to_vec())
                    .map_err(|e| StoreError::Decode(format!("conversation key: {e}")))?;
                Ok((ConversationKey(key), decode(&v)?))
            })
            .collect()
    }

    fn append_turn(
        &self,
        key: &ConversationKey,
        epoch: u32,
        turn: &Turn,
    ) -> Result<(), StoreError> {
        let value = encode(turn)?;
        let seq = self.db.generate_id().map_err(backend)?;
        let turn_key = turn_key(key, epoch, seq);
        let meta_key = key.0.as_bytes();
        // The turn first, then the metadata (see the module doc: no transaction, so an append never waits
        // for sled's global transaction lock). A turn written to a stale epoch lands in that epoch's key
        // range, which nothing reads, and is removed below (or by the next prune after a crash).
        self.turns
            .insert(turn_key.as_slice(), value)
            .map_err(backend)?;
        loop {
            let old = self.conversations.get(meta_key).map_err(backend)?;
            let mut meta: ConversationMeta = match &old {
                Some(v) => decode(v)?,
                None => ConversationMeta {
                    epoch,
                    created_ms: turn.at_ms,
                    ..ConversationMeta::default()
                },
            };
            if meta.epoch != epoch {
                // The conversation was reset while this turn was in flight: it belongs to a forgotten
                // epoch.
                self.turns.remove(turn_key.as_slice()).map_err(backend)?;
                return Ok(());
            }
            meta.turns += 1;
            meta.updated_ms = turn.at_ms;
            let swapped = self
                .conversations
                .compare_and_swap(meta_key, old, Some(encode(&meta)?))
                .map_err(backend)?;
            if swapped.is_ok() {
                return Ok(());
            }
            // Another append or a reset changed the metadata in between: read it again.
        }
    }

    fn recent_turns(
        &self,
        key: &ConversationKey,
        epoch: u32,
        limit: usize,
    ) -> Result<Vec<Turn>, StoreError> {
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in self
            .turns
            .scan_prefix(epoch_prefix(key, epoch))
            .rev()
            .take(limit)
        {
            let (_, v) = entry.map_err(backend)?;
            out.push(decode(&v)?);
        }
        out.reverse();
        Ok(out)
    }

    fn reset_conversation(&self, key: &ConversationKey, now_ms: i64) -> Result<u32, StoreError> {
        let meta_key = key.0.as_bytes();
        let epoch = self
            .conversations
            .transaction(|conversations| {
                let mut meta: ConversationMeta = match conversations.get(meta_key)? {
                    Some(v) => decode(&v).map_err(ConflictableTransactionError::Abort)?,
                    None => ConversationMeta {
                        created_ms: now_ms,
                        ..ConversationMeta::default()
                    },
                };
                meta.epoch += 1;
                meta.turns = 0;
                meta.updated_ms = now_ms;
                let encoded = encode(&meta).map_err(ConflictableTransactionError::Abort)?;
                conversations.insert(meta_key, encoded)?;
                Ok(meta.epoch)
            })
            .map_err(tx_error)?;
        // The new epoch is recorded, so nothing can be appended to an older one any more; now drop every
        // turn of the older epochs. Newer epochs are left alone: a second `/reset` racing with this one may
        // already have bumped the epoch again and had turns appended to it.
        let prefix = conversation_prefix(key);
        let mut batch = Batch::default();
        for entry in self.turns.scan_prefix(&prefix) {
            let (k, _) = entry.map_err(backend)?;
            if epoch_of(&k, prefix.len()).is_some_and(|e| e < epoch) {
                batch.remove(k);
            }
        }
        self.turns.apply_batch(batch).map_err(backend)?;
        Ok(epoch)
    }

    fn prune(&self, policy: RetentionPolicy, now_ms: i64) -> Result<PruneReport, StoreError> {
        let mut report = PruneReport::default();
        for entry in &self.conversations {
            let (k, v) = entry.map_err(backend)?;
            let meta: ConversationMeta = decode(&v)?;
            report.conversations += 1;
            let mut prefix = k.to_vec();
            prefix.push(SEP);
            let mut batch = Batch::default();
            let mut deleted = 0u64;
            // Newest first: the first `max_turns` of the current epoch may stay (if young enough); every
            // turn after them, and every turn of an older epoch (left by a reset cut short), goes. A turn of
            // a newer epoch than the metadata read above means a `/reset` raced with this sweep: it is left
            // for the next sweep, never deleted.
            let mut kept = 0usize;
            for turn in self.turns.scan_prefix(&prefix).rev() {
                let (tk, tv) = turn.map_err(backend)?;
                let Some(turn_epoch) = epoch_of(&tk, prefix.len()) else {
                    continue;
                };
                if turn_epoch > meta.epoch {
                    continue;
                }
                let current = turn_epoch == meta.epoch;
                let drop = if !current || (policy.max_turns > 0 && kept >= policy.max_turns) {
                    true
                } else if policy.max_age_ms > 0 {
                    let age: TurnAge = decode(&tv)?;
                    now_ms - age.at_ms > policy.max_age_ms
                } else {
                    false
                };
                if drop {
                    batch.remove(tk);
                    // Orphans of an interrupted reset are invisible already; count only visible turns.
                    if current {
                        deleted += 1;
                    }
                } else {
                    kept += 1;
                }
            }
            self.turns.apply_batch(batch).map_err(backend)?;
            report.turns_deleted += deleted;
        }
        Ok(report)
    }
}
