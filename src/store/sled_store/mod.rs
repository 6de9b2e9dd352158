//! The sled implementation of both store seams ([`super::HistoryStore`] in `history`,
//! [`super::StateStore`] in `state`): one `sled::Db` per process under `<state dir>/db`. This file opens
//! it; `faults` handles a damaged, locked or newer database at start-up; [`compact`] watches its size on
//! disk and rewrites it when it has bloated.
//!
//! # Layout
//!
//! Four trees, history (`conversations`, `turns`) apart from the hot key-value state (`kv`): the state is
//! rewritten on every turn (ledgers, account records; the usage counters only every few seconds, held in
//! between by [`super::coalesce`]), and in a tree of its own each rewrite touches only small state pages,
//! never a page of turns. Every value except the schema version is in the versioned value format
//! ([`super::encode`]: one format byte, then JSON). Keys and namespaces never contain the byte 0xFF (they
//! are UTF-8), so 0xFF is a safe separator and `prefix + 0xFF` never matches a longer key.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `meta` | `schema_version` | `u32` big-endian ([`SCHEMA_VERSION`]) |
//! | `conversations` | conversation key | [`super::ConversationMeta`] |
//! | `turns` | conversation key ‖ 0xFF ‖ epoch `u32` BE ‖ sequence `u64` BE | [`super::Turn`] |
//! | `kv` | namespace ‖ 0xFF ‖ key | caller's bytes |
//!
//! The sequence comes from `Db::generate_id`, which is monotonic across restarts and crashes, so within one
//! `(conversation, epoch)` prefix the turns sort in append order. Loading the last N turns is a reverse
//! range scan over that prefix that stops after N entries: O(N) whatever the total history size. Listing
//! conversations reads only the `conversations` tree, never a turn.
//!
//! # Consistency
//!
//! `append_turn` writes the turn, then updates the conversation's metadata with a compare-and-swap that
//! checks the epoch (a turn of an epoch older than the conversation's is discarded: a reply finishing after
//! `/reset`; its key sits in the old epoch's range, which nothing reads, and it is removed at once). sled
//! recovers a prefix of its log, so after a crash the history is a prefix of what was appended; the
//! metadata's `turns` counter can be one short per crash that landed between the two writes (it is
//! informational; nothing reads history through it). This deliberately avoids a sled transaction: those
//! take sled's process-wide write lock, which waits for the background flusher while it writes an I/O
//! buffer, and tripled the append tail in the benchmark (docs/bench-store.md).
//! `reset_conversation` first bumps the epoch (transactionally), then deletes the old turns in one batch;
//! a crash in between leaves unreachable old-epoch turns, which the next [`super::HistoryStore::prune`] removes.
//!
//! # Start-up faults
//!
//! A database whose files are damaged is moved aside to `<dir>.corrupt-<UTC timestamp>` (`<dir>` being
//! `<state dir>/db`), logged at error level, and replaced by an empty one; [`OpenedStore::quarantined`]
//! says so. Damage shows in two ways: sled refuses to open (a `Corruption`/`Unsupported` error, an
//! unreadable file, or a panic while recovering), or — for a garbled or truncated data file — sled
//! "recovers" it silently as an empty log, which shows as an existing data file without a schema version
//! (the version is written and flushed the moment a database is created). A database locked by another
//! process is [`StoreError::Locked`] and is never touched. A database written by a newer switchboard is
//! [`StoreError::NewerSchema`] and is left as it is.

pub mod compact;
mod faults;
mod history;
mod state;

use std::fmt;
use std::path::{Path, PathBuf};

use futures_util::future::{BoxFuture, FutureExt};
use sled::{Db, Tree};

use self::faults::{
    check_schema, classify, has_data_file, locked, open_db_waiting, quarantine, OpenFailure,
};
use super::group_flush::GroupFlush;
use super::{DatedRegistry, Durable, StoreError};

pub use self::compact::{CompactPolicy, CompactReport, SpaceReport};

/// The layout version this binary writes and reads. Bump it together with a step in `migrate`.
pub const SCHEMA_VERSION: u32 = 1;

/// The tree holding the schema version.
pub const META_TREE: &str = "meta";
/// The key of the schema version in [`META_TREE`].
pub const SCHEMA_KEY: &[u8] = b"schema_version";
/// The tree of conversation metadata.
pub const CONVERSATIONS_TREE: &str = "conversations";
/// The tree of turns.
pub const TURNS_TREE: &str = "turns";
/// The tree of namespaced key/values.
pub const KV_TREE: &str = "kv";

/// The byte between a key's parts; never present in UTF-8 text.
const SEP: u8 = 0xFF;

/// The smallest cache we configure, whatever `cache_mb` says: below this sled thrashes on its own
/// index pages.
const MIN_CACHE_BYTES: u64 = 1024 * 1024;

/// A database that could not be opened and was moved aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantine {
    /// Where the damaged directory now is.
    pub moved_to: PathBuf,
    /// What sled said about it.
    pub reason: String,
}

/// The result of [`SledStore::open`]: the store, and whether a damaged database was moved aside first.
pub struct OpenedStore {
    /// The open store.
    pub store: SledStore,
    /// Set when the previous database was corrupt and a fresh one was started.
    pub quarantined: Option<Quarantine>,
}

/// The sled-backed [`super::Store`]. Keep exactly one per process for the process lifetime.
pub struct SledStore {
    db: Db,
    path: PathBuf,
    conversations: Tree,
    turns: Tree,
    kv: Tree,
    dated: DatedRegistry,
    /// Runs the flushes, one fsync per group of turns finishing together.
    flusher: GroupFlush,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (or creates) the database in `<dir>/db` with a page cache of `cache_mb` MiB. `now_ms` names the
    /// quarantine directory if the existing database is corrupt.
    ///
    /// The cache is deliberately small and configurable: switchboard runs on small servers next to other
    /// services, sled's cache accounting undercounts real memory use by a factor of a few, and a
    /// conversation's recent turns are a handful of pages that the OS page cache keeps warm anyway (see
    /// docs/bench-store.md for load latency with a 16 MiB cache over 1,000,000 messages).
    pub fn open(dir: &Path, cache_mb: u64, now_ms: i64) -> Result<OpenedStore, StoreError> {
        let path = dir.join("db");
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Backend(format!(
                "cannot create state directory {}: {e}",
                dir.display()
            ))
        })?;
        let cache_bytes = cache_mb.saturating_mul(1024 * 1024).max(MIN_CACHE_BYTES);
        compact::finish_swap(&path)?;

        let mut quarantined = None;
        let mut attempt = 0;
        let store = loop {
            attempt += 1;
            // An existing database must carry a schema version: sled recovers a damaged log as an empty
            // (or truncated) one without complaint, and a missing version is how that shows.
            let existed = has_data_file(&path);
            let failure = match open_db_waiting(&path, cache_bytes) {
                Ok(db) => match Self::from_db(db, path.clone(), existed) {
                    Ok(store) => break store,
                    Err(OpenFailure::Locked) => return Err(locked(&path)),
                    Err(OpenFailure::Other(e)) => return Err(e),
                    Err(OpenFailure::Corrupt(reason)) => reason,
                },
                Err(OpenFailure::Locked) => return Err(locked(&path)),
                Err(OpenFailure::Other(e)) => return Err(e),
                Err(OpenFailure::Corrupt(reason)) => reason,
            };
            if attempt > 1 {
                return Err(StoreError::Backend(format!(
                    "a fresh store at {} could not be opened: {failure}",
                    path.display()
                )));
            }
            let moved_to = quarantine(&path, now_ms)?;
            tracing::error!(
                path = %path.display(),
                moved_to = %moved_to.display(),
                reason = %failure,
                "THE STORE WAS CORRUPT: moved it aside and started an empty one; \
                 conversation history and quota state start over"
            );
            quarantined = Some(Quarantine {
                moved_to,
                reason: failure,
            });
        };
        compact::clear_leftovers(&path)?;
        Ok(OpenedStore { store, quarantined })
    }

    fn from_db(db: Db, path: PathBuf, existed: bool) -> Result<Self, OpenFailure> {
        let meta = db.open_tree(META_TREE).map_err(classify)?;
        check_schema(&db, &meta, &path, existed)?;
        let tree = |name| db.open_tree(name).map_err(classify);
        let flushed = db.clone();
        let flusher = GroupFlush::start("sled-flush", move || {
            flushed.flush().map(drop).map_err(|e| e.to_string())
        })
        .map_err(|e| {
            OpenFailure::Other(StoreError::Backend(format!(
                "cannot start the flusher: {e}"
            )))
        })?;
        Ok(Self {
            conversations: tree(CONVERSATIONS_TREE)?,
            turns: tree(TURNS_TREE)?,
            kv: tree(KV_TREE)?,
            db,
            path,
            dated: DatedRegistry::default(),
            flusher,
        })
    }

    /// The database directory (`<dir>/db`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Durable for SledStore {
    fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        // Group-committed on the flusher's own thread (see `group_flush`): not sled's `flush_async`,
        // whose concurrent futures can stop being woken in sled 0.34 (spacejam/sled#1308, #1241), which
        // left turns hanging on their concurrency permits under load.
        self.flusher
            .flush()
            .map(|result| result.map_err(StoreError::Backend))
            .boxed()
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Callers flush at shutdown; this catches the paths that did not (an early error return).
        if let Err(e) = self.db.flush() {
            tracing::error!(path = %self.path.display(), error = %e, "final store flush failed");
        }
    }
}

/// A sled error while running (by value: it is the `map_err` adapter for sled's results).
#[allow(clippy::needless_pass_by_value)]
fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

#[cfg(test)]
mod flush_tests {
    use std::time::Duration;

    use super::*;
    use crate::store::StateStore;

    /// Many turns finishing at once each flush: every flush must complete (sled's own `flush_async`
    /// left some of them waiting forever).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_flushes_all_complete() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(
            SledStore::open(dir.path(), 16, 1_700_000_000_000)
                .unwrap()
                .store,
        );
        let flushes = (0..200).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store.kv_put("t", &i.to_string(), b"x").unwrap();
                store.flush().await.unwrap();
            })
        });
        let all = futures_util::future::join_all(flushes);
        // Generous: 200 fsyncs on a loaded 2-core machine; a lost wake-up never finishes at all.
        let done = tokio::time::timeout(Duration::from_secs(60), all).await;
        assert!(done.is_ok(), "some flushes never completed");
    }
}
