//! Opening the process's one store for a command (`run`, `chat`): the configured state directory, sled
//! opened off the async workers, and start-up faults turned into the fatal errors an operator acts on.

use std::sync::Arc;

use super::sled_store::SledStore;
use super::{Store, StoreError};
use crate::clock::SharedClock;
use crate::config::{Config, Env};
use crate::exit::Fatal;

/// Opens `<state dir>/db`. A corrupt database is moved aside and reported loudly (the store starts empty);
/// a locked one is [`Fatal::Conflict`] (exit 73); a newer schema is [`Fatal::Config`].
pub async fn open_store(
    config: &Config,
    env: &Env,
    clock: &SharedClock,
) -> Result<Arc<dyn Store>, Fatal> {
    let dir = config.store.state_dir(env);
    let cache_mb = config.store.cache_mb;
    let now_ms = clock.now_ms();
    // sled's open does blocking file I/O and may wait briefly for a lock: off the async workers.
    let opened = tokio::task::spawn_blocking(move || SledStore::open(&dir, cache_mb, now_ms))
        .await
        .map_err(|e| Fatal::Other(anyhow::anyhow!("opening the store panicked: {e}")))?
        .map_err(store_fatal)?;
    if let Some(q) = &opened.quarantined {
        tracing::error!(
            moved_to = %q.moved_to.display(),
            reason = %q.reason,
            "THE STORE WAS CORRUPT: it was moved aside and switchboard started with an empty history"
        );
    }
    tracing::info!(path = %opened.store.path().display(), "store open");
    Ok(Arc::new(opened.store))
}

/// A store error at start-up as the fatal error it is for the operator.
pub fn store_fatal(e: StoreError) -> Fatal {
    match e {
        StoreError::Locked { .. } => Fatal::Conflict(format!(
            "{e}. Fix: stop the other instance (systemctl stop switchboard) or point store.dir elsewhere"
        )),
        StoreError::NewerSchema { .. } => Fatal::Config(e.to_string()),
        other => Fatal::Other(anyhow::anyhow!("cannot open the store: {other}")),
    }
}
