//! Keeping the sled database small: how much of its size on disk is live data ([`SledStore::space`]), and
//! compaction — copying the live data into a fresh database beside it and swapping that in — run at
//! start-up when the ratio of size on disk to live data passes [`CompactPolicy::max_ratio`].
//!
//! # Why at start-up, and why a ratio
//!
//! sled 0.34 is log-structured: every rewrite of a key appends a new page version and the old one becomes
//! garbage, reclaimed only when its whole 512 KiB segment falls below sled's cleanup threshold. Hot state
//! (usage counters, ledgers, account records rewritten on every turn) leaves segments that are mostly
//! garbage but never empty enough, and the directory grew to ~39 KB per message where a fresh copy of the
//! same data needs ~1 KB (issue 11). A copy into a fresh database writes each live key once, which is what
//! sled's own collection cannot keep up with. It runs at start-up because then nothing else writes (the
//! copy needs no coordination with live writers) and a restart is when an operator expects a pause.
//!
//! The trigger is the ratio, not an absolute size: a large database of live history is fine, a small one
//! that is mostly garbage is not. A freshly copied database already sits at a ratio of about 2–3 (sled's
//! page headers, its index nodes and the segment it is writing), so the default threshold of 8
//! (`[store] compact_ratio`) fires only on real bloat, and after a compaction the ratio is far enough
//! below it that start-ups do not compact again and again. Below `compact_min_mb` (default 64 MiB) on
//! disk the ratio is dominated by sled's fixed overhead (a few segments, whatever the data) and there is
//! nothing worth winning, so nothing is done.
//!
//! # Crash safety
//!
//! The original is never written. The copy goes to `<db>.compact-tmp`; once it is complete and flushed it
//! is renamed to `<db>.compact-ready` (the commit point); then `<db>` is renamed to `<db>.pre-compact`,
//! the ready copy to `<db>`, and the old one is deleted, with the parent directory fsynced after each step.
//! Every open takes any state a crash can leave to one database: before opening, [`finish_swap`] finishes
//! a swap (a `compact-ready` is complete; a `pre-compact` without `<db>` is put back); once the database
//! is open and locked, [`clear_leftovers`] deletes a half-written `compact-tmp` (the original is used) and
//! a `pre-compact` whose deletion was cut short.
//!
//! Turns are renumbered on the way (their sequence numbers come from `Db::generate_id`, which starts again
//! at zero in a fresh database): in key order, so every conversation keeps its order, and below the new
//! database's own counter, so turns appended later sort after them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sled::{Batch, Db};

use super::faults::{open_db_waiting, OpenFailure};
use super::{backend, OpenedStore, SledStore, MIN_CACHE_BYTES, TURNS_TREE};
use crate::store::StoreError;

/// The suffix of the directory a compaction copies into; a crash leaves it half-written.
pub const TMP_SUFFIX: &str = "compact-tmp";
/// The suffix of a complete, flushed copy waiting to be swapped in.
pub const READY_SUFFIX: &str = "compact-ready";
/// The suffix of the original database while the copy is being swapped in.
pub const OLD_SUFFIX: &str = "pre-compact";

/// Entries written per batch while copying: large enough that a batch's overhead vanishes, small enough
/// that one batch of long turns stays a few MiB of memory.
const COPY_BATCH: usize = 1024;

/// How much of the database is live data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaceReport {
    /// What sled reports on disk (`Db::size_on_disk`: its data file and blobs).
    pub on_disk: u64,
    /// An estimate of the live data: the bytes of every key and value in every tree. It leaves out sled's
    /// own overhead, so even a fresh database is a few times larger on disk.
    pub live: u64,
}

impl SpaceReport {
    /// Size on disk per live byte; infinite for an empty database with files.
    pub fn ratio(&self) -> f64 {
        // u64 → f64 loses precision only above 2^53 bytes, far beyond any disk.
        #[allow(clippy::cast_precision_loss)]
        let (on_disk, live) = (self.on_disk as f64, self.live as f64);
        if live == 0.0 {
            f64::INFINITY
        } else {
            on_disk / live
        }
    }
}

/// When a start-up compaction runs (`[store] compact_ratio`, `compact_min_mb`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactPolicy {
    /// Compact when the size on disk is more than this many times the live data; 0 never compacts.
    pub max_ratio: u64,
    /// …and the database takes at least this many bytes on disk.
    pub min_on_disk: u64,
}

impl CompactPolicy {
    /// Never compacts.
    pub const NEVER: Self = Self {
        max_ratio: 0,
        min_on_disk: u64::MAX,
    };

    /// The policy `[store]` configures (`compact_ratio`, `compact_min_mb`).
    pub fn from_config(config: &crate::config::StoreConfig) -> Self {
        Self {
            max_ratio: config.compact_ratio,
            min_on_disk: config.compact_min_mb.saturating_mul(1024 * 1024),
        }
    }

    /// Whether a database using `space` should be compacted.
    pub fn wants(&self, space: &SpaceReport) -> bool {
        self.max_ratio > 0
            && space.on_disk >= self.min_on_disk
            && space.on_disk > space.live.saturating_mul(self.max_ratio)
    }
}

/// What a start-up compaction did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompactReport {
    /// The database before.
    pub before: SpaceReport,
    /// Its size on disk after.
    pub after_on_disk: u64,
    /// How long the copy and swap took, in ms.
    pub took_ms: u64,
}

impl SledStore {
    /// Bytes sled reports on disk for the whole database.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(backend)
    }

    /// The size on disk and the live data. Reads every key and value once, so it is for start-up and
    /// monitoring, not for a hot path.
    pub fn space(&self) -> Result<SpaceReport, StoreError> {
        let mut live = 0u64;
        for name in self.db.tree_names() {
            let tree = self.db.open_tree(&name).map_err(backend)?;
            for entry in &tree {
                let (k, v) = entry.map_err(backend)?;
                live += (k.len() + v.len()) as u64;
            }
        }
        Ok(SpaceReport {
            on_disk: self.size_on_disk()?,
            live,
        })
    }

    /// Opens the database like [`SledStore::open`] and, when `policy` wants it, compacts it first: the
    /// returned store is the compacted one, and the report says what was won.
    pub fn open_compacting(
        dir: &Path,
        cache_mb: u64,
        now_ms: i64,
        policy: CompactPolicy,
    ) -> Result<(OpenedStore, Option<CompactReport>), StoreError> {
        let opened = Self::open(dir, cache_mb, now_ms)?;
        // The size on disk is cheap; the live data takes a full read, done only above the floor.
        if policy.max_ratio == 0 || opened.store.size_on_disk()? < policy.min_on_disk {
            return Ok((opened, None));
        }
        let before = opened.store.space()?;
        if !policy.wants(&before) {
            return Ok((opened, None));
        }
        let started = Instant::now();
        let OpenedStore { store, quarantined } = opened;
        let path = store.path.clone();
        copy_into_ready(&store, cache_mb)?;
        // The old store's flush on drop must finish before its directory moves.
        drop(store);
        swap_in_ready(&path).map_err(|e| io_error(&path, "swapping in the compacted copy", &e))?;
        let reopened = Self::open(dir, cache_mb, now_ms)?;
        let report = CompactReport {
            before,
            after_on_disk: reopened.store.size_on_disk()?,
            took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        Ok((
            OpenedStore {
                store: reopened.store,
                quarantined,
            },
            Some(report),
        ))
    }
}

/// `<db>.<suffix>`, beside the database directory.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// Finishes a compaction cut short while swapping (see the module doc): a complete copy waiting beside
/// the database is swapped in, and an original left aside without a database is put back. Run before
/// every open; does nothing when no compaction was under way.
pub fn finish_swap(path: &Path) -> Result<(), StoreError> {
    let fail = |what: &str, e: &std::io::Error| io_error(path, what, e);
    if sibling(path, READY_SUFFIX).exists() {
        swap_in_ready(path).map_err(|e| fail("finishing an interrupted compaction", &e))?;
        tracing::warn!(path = %path.display(), "finished a compaction cut short while swapping");
    }
    let old = sibling(path, OLD_SUFFIX);
    if old.exists() && !path.exists() {
        // Not a state the swap's order leaves, but if it is all there is, it is the database.
        std::fs::rename(&old, path)
            .and_then(|()| sync_parent(path))
            .map_err(|e| fail("restoring the pre-compaction copy", &e))?;
    }
    Ok(())
}

/// Deletes what an interrupted compaction left beside the open database: a half-written copy (the
/// original was never touched, so nothing is lost) and an original whose deletion was cut short. Run
/// once the database is open, holding its lock: a compaction in progress holds that lock for as long as
/// its copy is half-written, so a second process never deletes a copy still being written.
pub fn clear_leftovers(path: &Path) -> Result<(), StoreError> {
    let tmp = sibling(path, TMP_SUFFIX);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .map_err(|e| io_error(path, "removing a half-written compaction", &e))?;
        tracing::warn!(path = %path.display(), "a compaction was cut short while copying; kept the original");
    }
    let old = sibling(path, OLD_SUFFIX);
    if old.exists() {
        std::fs::remove_dir_all(&old)
            .map_err(|e| io_error(path, "removing the pre-compaction copy", &e))?;
    }
    Ok(())
}

/// Copies every tree of `store` into `<db>.compact-tmp`, flushes it, and renames it to
/// `<db>.compact-ready`: from then on the copy is complete and will be swapped in, even after a crash.
fn copy_into_ready(store: &SledStore, cache_mb: u64) -> Result<(), StoreError> {
    let path = &store.path;
    let tmp = sibling(path, TMP_SUFFIX);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io_error(path, "clearing the copy", &e))?;
    }
    let cache_bytes = cache_mb.saturating_mul(1024 * 1024).max(MIN_CACHE_BYTES);
    let fresh = open_db_waiting(&tmp, cache_bytes).map_err(|f| match f {
        OpenFailure::Other(e) => e,
        OpenFailure::Locked | OpenFailure::Corrupt(_) => StoreError::Backend(format!(
            "cannot create the compaction copy {}",
            tmp.display()
        )),
    })?;
    copy_trees(&store.db, &fresh)?;
    fresh.flush().map_err(backend)?;
    drop(fresh);
    std::fs::rename(&tmp, sibling(path, READY_SUFFIX))
        .and_then(|()| sync_parent(path))
        .map_err(|e| io_error(path, "committing the compaction copy", &e))
}

/// Copies every tree of `from` into the empty `to`, the turns renumbered in key order (module doc).
fn copy_trees(from: &Db, to: &Db) -> Result<(), StoreError> {
    for name in from.tree_names() {
        let source = from.open_tree(&name).map_err(backend)?;
        let target = to.open_tree(&name).map_err(backend)?;
        let renumber = name.as_ref() == TURNS_TREE.as_bytes();
        let mut batch = Batch::default();
        let mut in_batch = 0;
        for entry in &source {
            let (k, v) = entry.map_err(backend)?;
            if renumber && k.len() >= 8 {
                let mut key = k[..k.len() - 8].to_vec();
                key.extend_from_slice(&to.generate_id().map_err(backend)?.to_be_bytes());
                batch.insert(key, v);
            } else {
                batch.insert(k, v);
            }
            in_batch += 1;
            if in_batch == COPY_BATCH {
                target
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(backend)?;
                in_batch = 0;
            }
        }
        target.apply_batch(batch).map_err(backend)?;
    }
    Ok(())
}

/// Swaps `<db>.compact-ready` in for `<db>`: the old one aside, the copy in, the old one deleted.
fn swap_in_ready(path: &Path) -> std::io::Result<()> {
    let (ready, old) = (sibling(path, READY_SUFFIX), sibling(path, OLD_SUFFIX));
    if path.exists() {
        if old.exists() {
            // Left by an earlier compaction whose clean-up was cut short; `path` is the database.
            std::fs::remove_dir_all(&old)?;
        }
        std::fs::rename(path, &old)?;
        sync_parent(path)?;
    }
    std::fs::rename(&ready, path)?;
    sync_parent(path)?;
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// Makes the renames in `path`'s parent directory durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => std::fs::File::open(parent)?.sync_all(),
        _ => std::fs::File::open(".")?.sync_all(),
    }
}

fn io_error(path: &Path, what: &str, e: &std::io::Error) -> StoreError {
    StoreError::Backend(format!("{what} for {}: {e}", path.display()))
}
