//! The adapter's own liveness for the daemon's watchdog: a pulse task beats the adapter's health
//! component while its event handling is alive, and stops beating when a gateway event handler has
//! been stuck far longer than Discord could ever hold it. Discord being slow or unreachable never stops
//! the beat: with no events nothing is in progress, and every call a handler awaits ends within bounds.
//! It also counts gateway reconnects ([`ReconnectMeter`]): serenity reconnects at once and silently, so a
//! gateway that keeps dropping the session would otherwise leave the bot deaf with nothing in the logs.

use std::collections::{HashMap, VecDeque};
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

/// Reconnects within this window count toward a storm. Five minutes: a short burst (a gateway node
/// restarting, a flaky link) stays under the limit; a session that cannot hold is caught within minutes.
pub const STORM_WINDOW: Duration = Duration::from_secs(300);

/// More reconnects than this within [`STORM_WINDOW`] is a storm. A healthy session reconnects a few
/// times a day (Discord asks every few hours); 60 in five minutes — one every 5 s, sustained — means the
/// session does not hold and the bot hears nothing. The process then exits with
/// [`crate::exit::EXIT_UNSTABLE`], so systemd's paced restart replaces serenity's immediate retries.
pub const STORM_LIMIT: usize = 60;

/// At most one reconnect log line per this long, carrying the count since the last: visible without
/// flooding the journal (the storm that prompted this reconnected 183 times a second).
pub const RECONNECT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Up to this many reconnects in the window are routine (logged at INFO); more are logged at WARN.
const ROUTINE_RECONNECTS: usize = 3;

/// Counts gateway reconnects (a RESUMED, or a READY after the first) over [`STORM_WINDOW`].
#[derive(Debug, Default)]
pub struct ReconnectMeter {
    state: Mutex<MeterState>,
}

#[derive(Debug, Default)]
struct MeterState {
    /// When each reconnect within the window happened, oldest first.
    recent: VecDeque<Instant>,
    /// Reconnects since the last log line.
    unreported: u64,
    last_report: Option<Instant>,
}

impl ReconnectMeter {
    /// Counts one reconnect, logs the count (at most every [`RECONNECT_LOG_EVERY`]) and returns the
    /// number within the window when that is a storm (more than [`STORM_LIMIT`]).
    pub fn record(&self) -> Option<usize> {
        let now = Instant::now();
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.recent.push_back(now);
        while state
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > STORM_WINDOW)
        {
            state.recent.pop_front();
        }
        state.unreported += 1;
        let in_window = state.recent.len();
        // Also the moment reconnects stop being routine, so a storm is seen from its start.
        let due = in_window == ROUTINE_RECONNECTS + 1
            || state
                .last_report
                .is_none_or(|t| now.saturating_duration_since(t) >= RECONNECT_LOG_EVERY);
        if due {
            let since_last = state.unreported;
            if in_window > ROUTINE_RECONNECTS {
                tracing::warn!(
                    reconnects = since_last,
                    in_last_5_min = in_window,
                    "discord: the gateway connection keeps dropping; reconnected {since_last} times since the last report"
                );
            } else {
                tracing::info!(
                    reconnects = since_last,
                    in_last_5_min = in_window,
                    "discord: reconnected to the gateway"
                );
            }
            state.unreported = 0;
            state.last_report = Some(now);
        }
        (in_window > STORM_LIMIT).then_some(in_window)
    }
}

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
        self.in_progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    async fn routine_reconnects_are_not_a_storm_and_a_sustained_burst_is() {
        let meter = ReconnectMeter::default();
        // A reconnect every ten seconds for an hour: one every 10 s is 30 per window, under the limit.
        for _ in 0..360 {
            assert_eq!(meter.record(), None);
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        let storm = ReconnectMeter::default();
        let verdicts: Vec<_> = (0..=STORM_LIMIT).map(|_| storm.record()).collect();
        assert!(verdicts[..STORM_LIMIT].iter().all(Option::is_none));
        assert_eq!(verdicts[STORM_LIMIT], Some(STORM_LIMIT + 1));
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
