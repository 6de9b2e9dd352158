//! The adapter's own liveness for the daemon's watchdog: a pulse task beats the adapter's health
//! component while its event handling is alive, and stops beating when a gateway event handler has
//! been stuck far longer than Discord could ever hold it. Discord being slow or unreachable never stops
//! the beat: with no events nothing is in progress, and every call a handler awaits ends within bounds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::health::ComponentHandle;

/// How often the pulse beats: well inside the daemon's default 90 s `stale_after_secs`, so one late
/// tick on a busy machine is not a missed beat.
pub const PULSE_EVERY: Duration = Duration::from_secs(10);

/// A handler in progress longer than this is wedged (a bug: a deadlock or a future that never wakes).
/// Ten minutes is twice the longest wait Discord can impose on one call (a 429's `retry_after`, capped
/// at 300 s; a REST call's own deadline is 30 s), so a slow or absent Discord never reaches it.
pub const WEDGED_AFTER: Duration = Duration::from_secs(600);

/// The gateway event handlers in progress, by when they started.
#[derive(Debug, Default)]
pub struct Liveness {
    in_progress: Mutex<HashMap<u64, Instant>>,
    next: AtomicU64,
}

/// Marks one handler as in progress until dropped.
#[must_use = "the handler counts as in progress only while the guard lives"]
pub struct Busy<'a> {
    liveness: &'a Liveness,
    id: u64,
}

impl Liveness {
    /// Records that an event handler started; it ends when the guard drops.
    pub fn enter(&self) -> Busy<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Instant::now());
        Busy { liveness: self, id }
    }

    /// Whether some handler has been in progress longer than [`WEDGED_AFTER`].
    pub fn wedged(&self) -> bool {
        let now = Instant::now();
        self.lock()
            .values()
            .any(|started| now.saturating_duration_since(*started) > WEDGED_AFTER)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        self.in_progress.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.liveness.lock().remove(&self.id);
    }
}

/// Beats `health` every [`PULSE_EVERY`] while no handler is wedged, until `stop`.
pub async fn pulse(liveness: Arc<Liveness>, health: ComponentHandle, stop: CancellationToken) {
    let mut reported = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PULSE_EVERY) => {}
        }
        if liveness.wedged() {
            if !reported {
                tracing::error!(
                    "discord: a gateway event handler is stuck; withholding the adapter's beat"
                );
                reported = true;
            }
        } else {
            reported = false;
            health.beat();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Health;

    /// The daemon's default `stale_after_secs`.
    const STALE_AFTER: Duration = Duration::from_secs(90);

    fn start() -> (Health, Arc<Liveness>, CancellationToken) {
        let health = Health::new();
        let liveness = Arc::new(Liveness::default());
        let stop = CancellationToken::new();
        tokio::spawn(pulse(
            liveness.clone(),
            health.component("discord"),
            stop.clone(),
        ));
        (health, liveness, stop)
    }

    #[tokio::test(start_paused = true)]
    async fn no_events_for_an_hour_is_still_alive() {
        // A Discord outage: no gateway events, nothing in progress.
        let (health, _liveness, stop) = start();
        for _ in 0..360 {
            tokio::time::sleep(PULSE_EVERY).await;
            assert!(health.stale(STALE_AFTER).is_empty());
        }
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn slow_handlers_are_alive_and_a_stuck_one_stops_the_beat() {
        let (health, liveness, stop) = start();
        {
            // A handler waiting out a five-minute 429 is slow, not wedged.
            let _busy = liveness.enter();
            tokio::time::sleep(Duration::from_secs(300)).await;
            assert!(health.stale(STALE_AFTER).is_empty());
        }
        assert!(!liveness.wedged(), "a finished handler no longer counts");
        let stuck = liveness.enter();
        tokio::time::sleep(WEDGED_AFTER + STALE_AFTER + PULSE_EVERY).await;
        assert_eq!(health.stale(STALE_AFTER), vec!["discord".to_owned()]);
        drop(stuck);
        tokio::time::sleep(PULSE_EVERY * 2).await;
        assert!(health.stale(STALE_AFTER).is_empty(), "beats resume");
        stop.cancel();
    }
}
