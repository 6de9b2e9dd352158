//! Start-up faults of the sled database: a lock held by another process, damaged files (moved aside to a
//! quarantine directory), and the schema version (refused when newer, migrated when older).

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sled::{Db, Tree};

use super::{SCHEMA_KEY, SCHEMA_VERSION};
use crate::store::StoreError;

/// How long `open` keeps retrying a locked database before calling it [`StoreError::Locked`]. sled's
/// background threads can hold the file lock for a moment after a `Db` is dropped (a restart in tests, or
/// a previous process still exiting under systemd); a second live instance holds it for good.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// Pause between lock attempts.
const LOCK_RETRY: Duration = Duration::from_millis(50);

/// Why a single open attempt failed.
pub(super) enum OpenFailure {
    /// Another holder of the file lock.
    Locked,
    /// The files are damaged: quarantine them.
    Corrupt(String),
    /// Anything else (permissions, disk full…): report, touch nothing.
    Other(StoreError),
}

/// Opens sled, retrying a held lock for up to [`LOCK_WAIT`].
pub(super) fn open_db_waiting(path: &Path, cache_bytes: u64) -> Result<Db, OpenFailure> {
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
pub(super) fn classify(e: sled::Error) -> OpenFailure {
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

/// The error for a database that another process holds.
pub(super) fn locked(path: &Path) -> StoreError {
    StoreError::Locked {
        path: path.display().to_string(),
    }
}

/// Moves a damaged database directory to `<path>.corrupt-<UTC timestamp>` (with a counter if taken).
pub(super) fn quarantine(path: &Path, now_ms: i64) -> Result<PathBuf, StoreError> {
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
pub(super) fn has_data_file(path: &Path) -> bool {
    std::fs::metadata(path.join("db")).is_ok_and(|m| m.len() > 0)
}

/// Reads the schema version, writes it on a fresh database, refuses a newer one, migrates an older one.
/// An existing database without a version lost its contents: that is corruption.
pub(super) fn check_schema(
    db: &Db,
    meta: &Tree,
    path: &Path,
    existed: bool,
) -> Result<(), OpenFailure> {
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
