//! The history and state store: two seams — [`HistoryStore`] (conversations and their turns) and
//! [`StateStore`] (the small key-value state: quota book, usage counters, settings, ledgers) — sharing
//! [`Durable::flush`], the combined [`Store`] handle, their value types, and two implementations of both:
//! sled for the daemon ([`sled_store::SledStore`]) and in-memory for tests ([`memory::MemoryStore`]); and
//! the layer over either that holds hot counters in memory between periodic writes ([`coalesce`]).
//! A second backend implements each seam on its own. No conversation logic lives here.

pub mod coalesce;
pub mod group_flush;
pub mod memory;
pub mod open;
pub mod sled_store;

use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::utc_day;
use crate::domain::{AnswerSource, ConversationKey, Role};

/// Whether a stored turn is a complete answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TurnStatus {
    /// A user's message, or an assistant answer that finished.
    Complete,
    /// An assistant answer that was cut short (provider failure, cancel, shutdown).
    Incomplete,
}

/// One stored message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// User or assistant.
    pub role: Role,
    /// In shared chats, the sender's display name, so the model knows who said what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The text.
    pub text: String,
    /// When it was stored, in ms since the epoch.
    pub at_ms: i64,
    /// Complete or cut short.
    pub status: TurnStatus,
    /// For assistant turns, who answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<AnswerSource>,
}

/// Per-conversation metadata, kept apart from the turns so listing conversations never reads messages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationMeta {
    /// Incremented by `/reset`; turns are stored and loaded per epoch.
    pub epoch: u32,
    /// When the conversation was first seen (ms since the epoch).
    pub created_ms: i64,
    /// When a turn was last appended (ms since the epoch).
    pub updated_ms: i64,
    /// Turns appended in the current epoch.
    pub turns: u64,
}

/// How long history is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep at most this many turns per conversation (oldest go first); 0 = unlimited.
    pub max_turns: usize,
    /// Drop turns older than this many ms; 0 = unlimited.
    pub max_age_ms: i64,
}

/// What a retention sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Conversations looked at.
    pub conversations: u64,
    /// Turns deleted.
    pub turns_deleted: u64,
}

/// A namespace of dated records: every key starts with the UTC day number it belongs to (`20123/…`).
/// Its owner declares it ([`StateStore::declare_dated`]) and each retention sweep removes its records older than
/// `keep_days` days ([`prune_dated`]), so counters and markers written per day never grow without bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatedNamespace {
    /// The namespace.
    pub ns: &'static str,
    /// Records of the last `keep_days` days (and today) are kept; older ones are removed.
    pub keep_days: i64,
}

/// The dated namespaces declared on a store, for its implementations to hold.
#[derive(Debug, Default)]
pub struct DatedRegistry(Mutex<Vec<DatedNamespace>>);

impl DatedRegistry {
    /// Adds `dated`, replacing an earlier declaration of the same namespace.
    pub fn declare(&self, dated: DatedNamespace) {
        let mut list = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        list.retain(|d| d.ns != dated.ns);
        list.push(dated);
    }

    /// The declarations so far.
    pub fn list(&self) -> Vec<DatedNamespace> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Removes, in every declared dated namespace, the records older than its horizon and any key that does
/// not start with a day number (written before the namespace was dated, so it cannot be aged). Returns
/// how many records were removed.
pub fn prune_dated(store: &(impl StateStore + ?Sized), now_ms: i64) -> Result<u64, StoreError> {
    let today = utc_day(now_ms);
    let mut removed = 0;
    for dated in store.dated_namespaces() {
        let oldest_kept = today - dated.keep_days;
        let mut old = Vec::new();
        store.kv_visit(dated.ns, "", &mut |key, _| {
            let day = key.split('/').next().and_then(|d| d.parse::<i64>().ok());
            if day.is_none_or(|day| day < oldest_kept) {
                old.push(key.to_owned());
            }
        })?;
        for key in old {
            store.kv_remove(dated.ns, &key)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Store failures callers can tell apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database lock.
    #[error("the state directory {path} is locked by another switchboard process")]
    Locked {
        /// The database directory.
        path: String,
    },
    /// The database was written by a newer switchboard.
    #[error("the store at {path} has schema version {found}, newer than this binary's {supported}; upgrade switchboard")]
    NewerSchema {
        /// The database directory.
        path: String,
        /// The version found on disk.
        found: u32,
        /// The newest version this binary reads.
        supported: u32,
    },
    /// A stored value could not be decoded.
    #[error("a stored value could not be decoded: {0}")]
    Decode(String),
    /// The storage engine failed (I/O, corruption discovered while running).
    #[error("storage error: {0}")]
    Backend(String),
}

/// A read-modify-write step for [`StateStore::kv_update`]: old value in, new value (or `None` to delete) out.
pub type ValueUpdate<'a> = dyn FnMut(Option<&[u8]>) -> Option<Vec<u8>> + 'a;

/// What [`StateStore::kv_visit`] calls with each entry: its key and its value.
pub type Visit<'a> = dyn FnMut(&str, &[u8]) + 'a;

/// Calls `visit` with each of `entries` (collected by a scan).
pub(crate) fn visit_each(entries: Vec<(String, Vec<u8>)>, visit: &mut Visit<'_>) {
    for (key, value) in entries {
        visit(&key, &value);
    }
}

/// What both halves of the store share: making what was written durable.
///
/// `flush` belongs to both seams — the core flushes history after each turn, the router and the adapters
/// flush their state (a dedupe record before an acknowledgement) — so it lives in this common supertrait
/// and a backend implements it once: a backend that keeps both halves in one database (sled) answers both
/// with one fsync, and the combined [`Store`] has one unambiguous `flush`.
pub trait Durable: Send + Sync + 'static {
    /// Makes everything written so far durable. Called after each completed turn and at shutdown.
    fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>>;

    /// Makes everything durable, including what a layer holds in memory between its periodic writes
    /// (the coalesced counters of [`coalesce::Coalescing`]). Called once at shutdown; for a store that
    /// holds nothing back it is [`Durable::flush`].
    fn flush_all(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        self.flush()
    }
}

/// Conversation history: conversations, their turns, `/reset` epochs and the retention of turns.
/// Methods are synchronous (sled answers in microseconds); only `flush` waits for disk.
pub trait HistoryStore: Durable {
    /// The metadata of a conversation, if it was ever stored.
    fn conversation(&self, key: &ConversationKey) -> Result<Option<ConversationMeta>, StoreError>;

    /// Replaces a conversation's metadata.
    fn put_conversation(
        &self,
        key: &ConversationKey,
        meta: &ConversationMeta,
    ) -> Result<(), StoreError>;

    /// Every conversation with its metadata, without reading any turn.
    fn list_conversations(&self) -> Result<Vec<(ConversationKey, ConversationMeta)>, StoreError>;

    /// Appends a turn to `key`'s history in `epoch` (creating the conversation if needed, and bumping its
    /// `turns` and `updated_ms`). Cost does not depend on how much history exists.
    fn append_turn(&self, key: &ConversationKey, epoch: u32, turn: &Turn)
        -> Result<(), StoreError>;

    /// The last `limit` turns of `key` in `epoch`, oldest first. Costs O(limit) whatever the history size.
    fn recent_turns(
        &self,
        key: &ConversationKey,
        epoch: u32,
        limit: usize,
    ) -> Result<Vec<Turn>, StoreError>;

    /// Starts a new epoch for `key` (for `/reset`): deletes the conversation's stored turns and returns the
    /// new epoch number. Turns of an answer still in flight for the old epoch are discarded when appended.
    fn reset_conversation(&self, key: &ConversationKey, now_ms: i64) -> Result<u32, StoreError>;

    /// Applies the retention policy to every conversation.
    fn prune(&self, policy: RetentionPolicy, now_ms: i64) -> Result<PruneReport, StoreError>;
}

/// The small key-value state: router quota book and stickiness, usage counters, per-chat settings,
/// adapters' ledgers, each in its own namespace; and the dated namespaces the retention sweep ages out.
/// Keys and namespaces are UTF-8 and never contain the byte 0xFF.
pub trait StateStore: Durable {
    /// Reads a value from namespace `ns` (router state, usage counters, dedupe records, chat settings…).
    fn kv_get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Writes a value into namespace `ns`.
    fn kv_put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Removes a value from namespace `ns`.
    fn kv_remove(&self, ns: &str, key: &str) -> Result<(), StoreError>;

    /// Atomically replaces a value with `f(old)`; `None` from `f` deletes it. Returns the new value.
    /// `f` may run more than once under contention.
    fn kv_update(
        &self,
        ns: &str,
        key: &str,
        f: &mut ValueUpdate<'_>,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// All entries of namespace `ns` whose key starts with `prefix`, in key order.
    fn kv_scan(&self, ns: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Calls `visit` with each entry of namespace `ns` whose key starts with `prefix`, in key order,
    /// one at a time: a sweep over thousands of records (the reply journal's prune reads ~11,000) must
    /// not hold them all at once — that was a 4 MB spike every 1,000 messages. `visit` must not write to
    /// the store. The default collects [`Self::kv_scan`]; a store that can iterate overrides it.
    fn kv_visit(&self, ns: &str, prefix: &str, visit: &mut Visit<'_>) -> Result<(), StoreError> {
        visit_each(self.kv_scan(ns, prefix)?, visit);
        Ok(())
    }

    /// Declares a namespace of dated records, aged out by the retention sweep ([`prune_dated`]).
    fn declare_dated(&self, dated: DatedNamespace);

    /// The dated namespaces declared so far.
    fn dated_namespaces(&self) -> Vec<DatedNamespace>;

    /// Declares namespace `ns` as pure counters: values that only ever add up and whose last few seconds
    /// may be lost in a crash. A store may hold their changes in memory and write them periodically
    /// ([`coalesce::Coalescing`]); one that writes everything at once ignores this (the default).
    fn declare_counters(&self, ns: &'static str) {
        let _ = ns;
    }
}

/// Both halves behind one handle, for the parts that need both (the core, the daemon, the retention
/// sweep); implemented for every type that implements the two traits. A part that needs one half takes
/// `Arc<dyn HistoryStore>` or `Arc<dyn StateStore>` and gets it with [`Store::into_state`] /
/// [`Store::into_history`] (explicit upcasting: the implicit form needs Rust 1.86, and the MSRV is 1.85).
pub trait Store: HistoryStore + StateStore {
    /// This store as its history half.
    fn into_history(self: Arc<Self>) -> Arc<dyn HistoryStore>;

    /// This store as its key-value state half.
    fn into_state(self: Arc<Self>) -> Arc<dyn StateStore>;
}

impl<T: HistoryStore + StateStore> Store for T {
    fn into_history(self: Arc<Self>) -> Arc<dyn HistoryStore> {
        self
    }

    fn into_state(self: Arc<Self>) -> Arc<dyn StateStore> {
        self
    }
}

/// Reads a JSON value from the store's namespace `ns`.
pub fn get_json<T: DeserializeOwned>(
    store: &(impl StateStore + ?Sized),
    ns: &str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    store
        .kv_get(ns, key)?
        .map(|bytes| decode(&bytes))
        .transpose()
}

/// Writes a JSON value into the store's namespace `ns`.
pub fn put_json<T: Serialize>(
    store: &(impl StateStore + ?Sized),
    ns: &str,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    store.kv_put(ns, key, &encode(value)?)
}

/// The current value format: one version byte, then JSON. Bump it and migrate when the format changes.
pub const VALUE_FORMAT: u8 = 1;

/// Encodes a value in the versioned value format.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![VALUE_FORMAT];
    serde_json::to_writer(&mut out, value).map_err(|e| StoreError::Decode(e.to_string()))?;
    Ok(out)
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&VALUE_FORMAT, json)) => {
            serde_json::from_slice(json).map_err(|e| StoreError::Decode(e.to_string()))
        }
        Some((v, _)) => Err(StoreError::Decode(format!("unknown value format {v}"))),
        None => Err(StoreError::Decode("empty value".into())),
    }
}
