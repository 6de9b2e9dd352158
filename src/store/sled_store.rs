//! The sled implementation of [`Store`]: one `sled::Db` per process under `<state dir>/db`.
//!
//! # Layout
//!
//! Four trees; every value except the schema version is in the versioned value format
//! ([`super::encode`]: one format byte, then JSON). Keys and namespaces never contain the byte 0xFF (they
//! are UTF-8), so 0xFF is a safe separator and `prefix + 0xFF` never matches a longer key.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `meta` | `schema_version` | `u32` big-endian ([`SCHEMA_VERSION`]) |
//! | `conversations` | conversation key | [`ConversationMeta`] |
//! | `turns` | conversation key ‖ 0xFF ‖ epoch `u32` BE ‖ sequence `u64` BE | [`Turn`] |
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
//! a crash in between leaves unreachable old-epoch turns, which the next [`Store::prune`] removes.
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

use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Batch, Db, Tree};

use super::group_flush::GroupFlush;
use super::{
    decode, encode, ConversationMeta, DatedNamespace, DatedRegistry, PruneReport, RetentionPolicy,
    Store, StoreError, Turn, ValueUpdate,
};
use crate::domain::ConversationKey;

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

/// How long `open` keeps retrying a locked database before calling it [`StoreError::Locked`]. sled's
/// background threads can hold the file lock for a moment after a `Db` is dropped (a restart in tests, or
/// a previous process still exiting under systemd); a second live instance holds it for good.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// Pause between lock attempts.
const LOCK_RETRY: Duration = Duration::from_millis(50);

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

/// The sled-backed [`Store`]. Keep exactly one per process for the process lifetime.
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

/// Why a single open attempt failed.
enum OpenFailure {
    /// Another holder of the file lock.
    Locked,
    /// The files are damaged: quarantine them.
    Corrupt(String),
    /// Anything else (permissions, disk full…): report, touch nothing.
    Other(StoreError),
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

    /// Bytes sled reports on disk for the whole database.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(backend)
    }

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

    fn kv_key(ns: &str, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(ns.len() + 1 + key.len());
        k.extend_from_slice(ns.as_bytes());
        k.push(SEP);
        k.extend_from_slice(key.as_bytes());
        k
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

/// Opens sled, retrying a held lock for up to [`LOCK_WAIT`].
fn open_db_waiting(path: &Path, cache_bytes: u64) -> Result<Db, OpenFailure> {
    let started = Instant::now();
    loop {
        match open_db(path, cache_bytes) {
            Err(OpenFailure::Locked) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(LOCK_RETRY);
            }
            other => return other,
        }
    }
}

/// One attempt at `sled::open`, with its failure classified.
fn open_db(path: &Path, cache_bytes: u64) -> Result<Db, OpenFailure> {
    let config = sled::Config::new().path(path).cache_capacity(cache_bytes);
    // sled 0.34 panics on some kinds of damage instead of returning `Corruption`; a panic while reading
    // the files is the same verdict.
    let opened = panic::catch_unwind(AssertUnwindSafe(|| config.open()));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(classify(e)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "sled panicked".to_owned());
            Err(OpenFailure::Corrupt(format!(
                "sled panicked while opening: {what}"
            )))
        }
    }
}

/// Sorts a sled open error into locked / corrupt / other.
fn classify(e: sled::Error) -> OpenFailure {
    match e {
        sled::Error::Io(io) => {
            // sled reports a held flock as an `Other` io error with this text (config.rs `try_lock`).
            if io.to_string().contains("could not acquire lock")
                || io.kind() == io::ErrorKind::WouldBlock
            {
                return OpenFailure::Locked;
            }
            match io.kind() {
                // Short or unparsable files: the data is damaged, not the machine.
                io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => {
                    OpenFailure::Corrupt(format!("unreadable files: {io}"))
                }
                _ => {
                    OpenFailure::Other(StoreError::Backend(format!("cannot open the store: {io}")))
                }
            }
        }
        sled::Error::Corruption { at, .. } => {
            OpenFailure::Corrupt(format!("sled found corruption at {at:?}"))
        }
        // Unparsable config files and internal inconsistencies found while recovering.
        sled::Error::Unsupported(what) => {
            OpenFailure::Corrupt(format!("unsupported files: {what}"))
        }
        sled::Error::ReportableBug(what) => {
            OpenFailure::Corrupt(format!("sled failed while recovering: {what}"))
        }
        sled::Error::CollectionNotFound(name) => OpenFailure::Other(StoreError::Backend(format!(
            "collection not found: {}",
            String::from_utf8_lossy(&name)
        ))),
    }
}

fn locked(path: &Path) -> StoreError {
    StoreError::Locked {
        path: path.display().to_string(),
    }
}

/// Moves a damaged database directory to `<path>.corrupt-<UTC timestamp>` (with a counter if taken).
fn quarantine(path: &Path, now_ms: i64) -> Result<PathBuf, StoreError> {
    let stamp = chrono::DateTime::from_timestamp_millis(now_ms)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%SZ")
        .to_string();
    let base = format!("{}.corrupt-{stamp}", path.display());
    let mut target = PathBuf::from(&base);
    let mut n = 1;
    while target.exists() {
        n += 1;
        target = PathBuf::from(format!("{base}-{n}"));
    }
    std::fs::rename(path, &target).map_err(|e| {
        StoreError::Backend(format!(
            "the store at {} is corrupt and could not be moved aside to {}: {e}",
            path.display(),
            target.display()
        ))
    })?;
    Ok(target)
}

/// Whether `<path>/db` (sled's data file) exists and holds anything.
fn has_data_file(path: &Path) -> bool {
    std::fs::metadata(path.join("db")).is_ok_and(|m| m.len() > 0)
}

/// Reads the schema version, writes it on a fresh database, refuses a newer one, migrates an older one.
/// An existing database without a version lost its contents: that is corruption.
fn check_schema(db: &Db, meta: &Tree, path: &Path, existed: bool) -> Result<(), OpenFailure> {
    let found = match meta.get(SCHEMA_KEY).map_err(classify)? {
        None if existed => {
            return Err(OpenFailure::Corrupt(
                "the database has data files but no schema version (its contents were lost)".into(),
            ))
        }
        None => {
            meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                .map_err(classify)?;
            // Made durable at once, so a crash right after creation does not look like damage later.
            db.flush().map_err(classify)?;
            return Ok(());
        }
        Some(raw) => {
            let bytes: [u8; 4] = raw.as_ref().try_into().map_err(|_| {
                OpenFailure::Corrupt(format!(
                    "the schema version is {} bytes long, expected 4",
                    raw.len()
                ))
            })?;
            u32::from_be_bytes(bytes)
        }
    };
    if found > SCHEMA_VERSION {
        return Err(OpenFailure::Other(StoreError::NewerSchema {
            path: path.display().to_string(),
            found,
            supported: SCHEMA_VERSION,
        }));
    }
    let mut version = found;
    while version < SCHEMA_VERSION {
        migrate(db, version).map_err(OpenFailure::Other)?;
        version += 1;
        meta.insert(SCHEMA_KEY, &version.to_be_bytes())
            .map_err(classify)?;
        db.flush().map_err(classify)?;
    }
    Ok(())
}

/// Rewrites the database from schema `from` to `from + 1`. Each step must be idempotent: a crash before the
/// new version is recorded re-runs it. Version 1 is the first layout, so there is no step yet; the first
/// layout change adds `1 => …` here and bumps [`SCHEMA_VERSION`].
fn migrate(_db: &Db, from: u32) -> Result<(), StoreError> {
    Err(StoreError::Backend(format!(
        "no migration from schema version {from} to {}",
        from + 1
    )))
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
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

impl Store for SledStore {
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
            match self
                .conversations
                .compare_and_swap(meta_key, old, Some(encode(&meta)?))
                .map_err(backend)?
            {
                Ok(()) => return Ok(()),
                // Another append or a reset changed the metadata in between: read it again.
                Err(_) => continue,
            }
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
        for entry in self.conversations.iter() {
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

    fn kv_get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .kv
            .get(Self::kv_key(ns, key))
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn kv_put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.kv
            .insert(Self::kv_key(ns, key), value)
            .map_err(backend)?;
        Ok(())
    }

    fn kv_remove(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        self.kv.remove(Self::kv_key(ns, key)).map_err(backend)?;
        Ok(())
    }

    fn kv_update(
        &self,
        ns: &str,
        key: &str,
        f: &mut ValueUpdate<'_>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .kv
            .update_and_fetch(Self::kv_key(ns, key), f)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn kv_scan(&self, ns: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let skip = ns.len() + 1;
        self.kv
            .scan_prefix(Self::kv_key(ns, prefix))
            .map(|entry| {
                let (k, v) = entry.map_err(backend)?;
                let key = std::str::from_utf8(&k[skip..])
                    .map_err(|e| StoreError::Decode(format!("kv key: {e}")))?
                    .to_owned();
                Ok((key, v.to_vec()))
            })
            .collect()
    }

    fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        // Group-committed on the flusher's own thread (see `group_flush`): not sled's `flush_async`,
        // whose concurrent futures can stop being woken in sled 0.34 (spacejam/sled#1308, #1241), which
        // left turns hanging on their concurrency permits under load.
        self.flusher
            .flush()
            .map(|result| result.map_err(StoreError::Backend))
            .boxed()
    }

    fn declare_dated(&self, dated: DatedNamespace) {
        self.dated.declare(dated);
    }

    fn dated_namespaces(&self) -> Vec<DatedNamespace> {
        self.dated.list()
    }
}

#[cfg(test)]
mod flush_tests {
    use super::*;

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
