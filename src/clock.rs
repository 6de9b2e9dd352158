//! Wall-clock time behind a seam, so quota days and retention can be tested with paused tokio time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current UTC time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    fn now_ms(&self) -> i64;
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The real system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A wall clock that advances with tokio's clock: under `tokio::time::pause()` and `advance()` it moves
/// exactly as far as tokio time does, from a chosen starting instant. For tests and simulations.
#[derive(Clone, Debug)]
pub struct TokioClock {
    start_ms: i64,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `start_ms` now and advances with tokio time.
    pub fn starting_at(start_ms: i64) -> Self {
        Self {
            start_ms,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.start);
        self.start_ms + i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A wall clock moved only by hand, shared by tests and benchmarks (never used by the daemon): it reads
/// exactly what it was last set to, so quota days, rate windows and cooldowns can be stepped precisely.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock that reads `ms` until moved.
    pub fn new(ms: i64) -> Self {
        Self(AtomicI64::new(ms))
    }

    /// Sets the clock to `ms`.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One UTC day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// The UTC day number (days since the epoch) of a timestamp; quotas reset when it changes.
pub fn utc_day(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// The timestamp of the next 00:00 UTC after `ms`.
pub fn next_utc_midnight(ms: i64) -> i64 {
    (utc_day(ms) + 1) * DAY_MS
}

/// A duration from `now_ms` until `until_ms`, zero if that is in the past.
pub fn until(now_ms: i64, until_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(until_ms.saturating_sub(now_ms)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midnight_is_the_next_day_boundary() {
        let noon = 19_000 * DAY_MS + DAY_MS / 2;
        assert_eq!(utc_day(noon), 19_000);
        assert_eq!(next_utc_midnight(noon), 19_001 * DAY_MS);
        assert_eq!(next_utc_midnight(19_000 * DAY_MS), 19_001 * DAY_MS);
        assert_eq!(until(10, 5), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::starting_at(1_000);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(clock.now_ms(), 4_000);
    }
}
