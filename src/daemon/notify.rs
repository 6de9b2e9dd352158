//! Talking to the service manager: `READY=1`, `STATUS=…`, `WATCHDOG=1`, `RELOADING=1`, `STOPPING=1` over
//! `$NOTIFY_SOCKET`, behind the [`Notifier`] seam so the daemon's tests record what it would have said.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One state change reported to systemd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Start-up (or a reload) is complete: `READY=1`.
    Ready,
    /// A SIGHUP reload began: `RELOADING=1` (with `MONOTONIC_USEC`, as systemd ≥ 253 expects).
    Reloading,
    /// Shutdown began: `STOPPING=1`.
    Stopping,
    /// A free-form one-line status: `STATUS=…`.
    Status(String),
    /// The watchdog keep-alive: `WATCHDOG=1`.
    Watchdog,
}

/// Where the daemon's [`Notice`]s go.
pub trait Notifier: Send + Sync + 'static {
    /// Sends the notices as one datagram. Failures are the notifier's to log; the daemon carries on.
    fn notify(&self, notices: &[Notice]);
}

/// The real notifier: `sd_notify` on `$NOTIFY_SOCKET`; does nothing when the variable is unset (a
/// terminal, a container without systemd).
#[derive(Clone, Copy, Debug, Default)]
pub struct SdNotifier;

impl Notifier for SdNotifier {
    fn notify(&self, notices: &[Notice]) {
        let monotonic = sd_notify::NotifyState::monotonic_usec_now().ok();
        let mut states = Vec::with_capacity(notices.len() + 1);
        for n in notices {
            match n {
                Notice::Ready => states.push(sd_notify::NotifyState::Ready),
                Notice::Reloading => {
                    states.push(sd_notify::NotifyState::Reloading);
                    if let Some(m) = &monotonic {
                        states.push(m.clone());
                    }
                }
                Notice::Stopping => states.push(sd_notify::NotifyState::Stopping),
                Notice::Status(s) => states.push(sd_notify::NotifyState::Status(s)),
                Notice::Watchdog => states.push(sd_notify::NotifyState::Watchdog),
            }
        }
        if let Err(e) = sd_notify::notify(false, &states) {
            // Not fatal: without a listening manager nobody reads these; the watchdog, if armed, will
            // say so by restarting us, which is the right outcome if the socket is truly gone.
            tracing::warn!(error = %e, "cannot notify the service manager");
        }
    }
}

/// A notifier that records every notice, for tests.
#[derive(Clone, Debug, Default)]
pub struct RecordingNotifier {
    seen: Arc<Mutex<Vec<Notice>>>,
}

impl RecordingNotifier {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every notice so far, in order.
    pub fn notices(&self) -> Vec<Notice> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// How many notices equal to `notice` were sent.
    pub fn count(&self, notice: &Notice) -> usize {
        self.notices().iter().filter(|n| *n == notice).count()
    }
}

impl Notifier for RecordingNotifier {
    fn notify(&self, notices: &[Notice]) {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(notices);
    }
}

/// The watchdog period systemd asked for (`WATCHDOG_USEC`), if it applies to this process.
///
/// Like `sd_watchdog_enabled(3)`: `WATCHDOG_PID`, when set, must name this process (a child must not ping
/// for its parent); when unset, the timeout applies to us. (The `sd-notify` crate insists on the PID,
/// which a test spawning the binary cannot know in advance.)
pub fn watchdog_period(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_period_follows_sd_watchdog_enabled() {
        assert_eq!(
            watchdog_period(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_period(Some("1000"), Some("7"), 7),
            Some(Duration::from_millis(1))
        );
        assert_eq!(watchdog_period(Some("1000"), Some("8"), 7), None);
        assert_eq!(watchdog_period(Some("0"), None, 7), None);
        assert_eq!(watchdog_period(Some("soon"), None, 7), None);
        assert_eq!(watchdog_period(None, Some("7"), 7), None);
    }
}
