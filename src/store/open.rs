//! Opening the process's one store for a command (`run`, `chat`): the configured state directory, sled
//! opened off the async workers, and start-up faults turned into the fatal errors an operator acts on.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::coalesce::Coalescing;
use super::sled_store::{CompactPolicy, CompactReport, SledStore};
use super::{prune_dated, PruneReport, RetentionPolicy, Store, StoreError};
use crate::clock::{SharedClock, DAY_MS};
use crate::config::{Config, Env, StoreConfig};
use crate::exit::Fatal;

/// Opens `<state dir>/db`, compacting it first when it has bloated past `[store] compact_ratio` (see
/// [`super::sled_store::compact`]), under the layer that coalesces usage counters
/// ([`super::coalesce`], every `[store] counter_flush_secs`). A corrupt database is moved aside and reported loudly (the store
/// starts empty); a locked one is [`Fatal::Conflict`] (exit 73); a newer schema is [`Fatal::Config`].
pub async fn open_store(
    config: &Config,
    env: &Env,
    clock: &SharedClock,
) -> Result<Arc<dyn Store>, Fatal> {
    let dir = config.store.state_dir(env);
    let cache_mb = config.store.cache_mb;
    let policy = CompactPolicy::from_config(&config.store);
    let now_ms = clock.now_ms();
    // sled's open (and a compaction) does blocking file I/O and may wait briefly for a lock: off the
    // async workers.
    let (opened, compacted) = tokio::task::spawn_blocking(move || {
        SledStore::open_compacting(&dir, cache_mb, now_ms, policy)
    })
    .await
    .map_err(|e| Fatal::Other(anyhow::anyhow!("opening the store panicked: {e}")))?
    .map_err(store_fatal)?;
    // A quarantine was already reported loudly by `SledStore::open`.
    let store = opened.store;
    if let Some(report) = compacted {
        log_compaction(&store, &report);
    }
    tracing::info!(
        path = %store.path().display(),
        on_disk_bytes = store.size_on_disk().unwrap_or(0),
        "store open"
    );
    let store: Arc<dyn Store> = Arc::new(store);
    Ok(match config.store.counter_flush_secs {
        0 => store,
        secs => Coalescing::start(store, Duration::from_secs(secs)),
    })
}

/// One line an operator can read the compaction's win from.
fn log_compaction(store: &SledStore, report: &CompactReport) {
    tracing::info!(
        path = %store.path().display(),
        before_bytes = report.before.on_disk,
        live_bytes = report.before.live,
        after_bytes = report.after_on_disk,
        took_ms = report.took_ms,
        "the store had grown to {:.1} times its live data; compacted it",
        report.before.ratio()
    );
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

/// How often the retention sweep runs. Hourly keeps history within a day of its limit while a full sweep
/// over a million turns (seconds of background I/O) stays a negligible share of the disk's time.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);
/// The first sweep waits this long after start-up, so it never competes with start-up or the first replies.
const RETENTION_FIRST_DELAY: Duration = Duration::from_secs(60);

/// The retention policy configured in `[store]`.
pub fn retention_policy(config: &StoreConfig) -> RetentionPolicy {
    let max_age_days = i64::try_from(config.max_age_days).unwrap_or(i64::MAX / DAY_MS);
    RetentionPolicy {
        max_turns: config.max_turns,
        max_age_ms: max_age_days.saturating_mul(DAY_MS),
    }
}

/// Runs the retention sweep in the background every [`RETENTION_INTERVAL`] until `stop`, off the async
/// workers (a sweep does blocking I/O): history by `policy` (read afresh each time, so a reload applies),
/// then the dated records their owners declared on the store (usage counters, refusal markers).
pub fn spawn_retention(
    store: Arc<dyn Store>,
    policy: impl Fn() -> RetentionPolicy + Send + 'static,
    clock: SharedClock,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = RETENTION_FIRST_DELAY;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = RETENTION_INTERVAL;
            let (store, policy, now_ms) = (store.clone(), policy(), clock.now_ms());
            match tokio::task::spawn_blocking(move || sweep(store.as_ref(), policy, now_ms)).await {
                Ok(Ok((report, records))) if report.turns_deleted > 0 || records > 0 => {
                    tracing::info!(
                        conversations = report.conversations,
                        deleted = report.turns_deleted,
                        records,
                        "retention sweep"
                    );
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "retention sweep failed; will retry"),
                Err(e) => tracing::error!(error = %e, "retention sweep panicked; will retry"),
            }
        }
    })
}

/// One sweep: history, then dated records.
fn sweep(
    store: &dyn Store,
    policy: RetentionPolicy,
    now_ms: i64,
) -> Result<(PruneReport, u64), StoreError> {
    let report = store.prune(policy, now_ms)?;
    Ok((report, prune_dated(store, now_ms)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;
    use crate::domain::{ConversationKey, Role};
    use crate::store::memory::MemoryStore;
    use crate::store::{DatedNamespace, HistoryStore, StateStore, Turn, TurnStatus};

    #[tokio::test(start_paused = true)]
    async fn the_sweep_applies_retention_in_the_background() {
        let store = Arc::new(MemoryStore::new());
        let key = ConversationKey("telegram:1".into());
        for i in 0..5 {
            let turn = Turn {
                role: Role::User,
                author: None,
                text: format!("t{i}"),
                at_ms: 0,
                status: TurnStatus::Complete,
                source: None,
            };
            store.append_turn(&key, 0, &turn).unwrap();
        }
        let stop = CancellationToken::new();
        let policy = || RetentionPolicy {
            max_turns: 2,
            max_age_ms: 0,
        };
        let task = spawn_retention(
            store.clone(),
            policy,
            Arc::new(TokioClock::starting_at(0)),
            stop.clone(),
        );
        assert_eq!(store.recent_turns(&key, 0, 10).unwrap().len(), 5);
        tokio::time::sleep(RETENTION_FIRST_DELAY + Duration::from_secs(1)).await;
        assert_eq!(store.recent_turns(&key, 0, 10).unwrap().len(), 2);
        stop.cancel();
        task.await.unwrap();
        let config = StoreConfig::default();
        assert_eq!(
            retention_policy(&config),
            RetentionPolicy {
                max_turns: 1000,
                max_age_ms: 90 * DAY_MS
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_ages_out_dated_records_by_the_injected_clock() {
        let store = Arc::new(MemoryStore::new());
        store.declare_dated(DatedNamespace {
            ns: "test.daily",
            keep_days: 2,
        });
        let day = 20_000;
        for (key, value) in [
            (format!("{}/a", day - 3), "old"),
            (format!("{}/a", day - 2), "kept: the horizon's edge"),
            (format!("{day}/a"), "today"),
            ("legacy-key-without-a-day".to_owned(), "undatable"),
        ] {
            store.kv_put("test.daily", &key, value.as_bytes()).unwrap();
        }
        store
            .kv_put("test.other", "1/x", b"undeclared: untouched")
            .unwrap();
        let stop = CancellationToken::new();
        let clock = Arc::new(TokioClock::starting_at(day * DAY_MS + 1000));
        let none = || RetentionPolicy {
            max_turns: 0,
            max_age_ms: 0,
        };
        let task = spawn_retention(store.clone(), none, clock, stop.clone());
        tokio::time::sleep(RETENTION_FIRST_DELAY + Duration::from_secs(1)).await;
        let left: Vec<_> = store
            .kv_scan("test.daily", "")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(left, [format!("{}/a", day - 2), format!("{day}/a")]);
        // A day (and two sweeps) later the clock has moved on, and a sweep has taken the next day out.
        tokio::time::sleep(
            Duration::from_millis(u64::try_from(DAY_MS).unwrap()) + 2 * RETENTION_INTERVAL,
        )
        .await;
        let left = store.kv_scan("test.daily", "").unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(store.kv_get("test.other", "1/x").unwrap().is_some());
        stop.cancel();
        task.await.unwrap();
    }
}
