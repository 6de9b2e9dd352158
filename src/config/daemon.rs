//! `[daemon]`: how the service starts, stops, reports liveness and logs.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable event per line (journald adds timestamps).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The unit's `TimeoutStopSec=` (systemd/switchboard.service). The grace plus the time to stop adapters
/// and flush the store must fit below it, or systemd SIGKILLs us mid-flush.
pub const UNIT_TIMEOUT_STOP_SECS: u64 = 45;
/// Seconds kept back from `TimeoutStopSec` for stopping adapters (acknowledging Telegram's offset) and
/// flushing sled after the grace ends.
pub const STOP_RESERVE_SECS: u64 = 10;

/// Service settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// On SIGTERM, in-flight replies get this many seconds to finish before they are cut with a
    /// "restarting" note. Must stay below the unit's `TimeoutStopSec=` (45 s) minus 10 s for stopping
    /// adapters and flushing.
    pub shutdown_grace_secs: u64,
    /// Log format.
    pub log_format: LogFormat,
    /// `READY=1` waits at most this long for every adapter to leave "starting" (connected, polling, or
    /// retrying an unreachable upstream). An upstream outage must not fail the start (systemd would
    /// restart us and burn Discord identifies), so after this bound READY is sent anyway with a warning.
    pub ready_timeout_secs: u64,
    /// A loop of ours (an adapter's poller, the router's background task) that has not beaten for this
    /// long is hung: the watchdog stops pinging and systemd restarts us after `WatchdogSec=`. 90 s is
    /// well above Telegram's long-poll hold (< 17 s) and Discord's heartbeat interval (~41 s).
    pub stale_after_secs: u64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            shutdown_grace_secs: 20,
            log_format: LogFormat::Text,
            ready_timeout_secs: 30,
            stale_after_secs: 90,
        }
    }
}

impl DaemonConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let max_grace = UNIT_TIMEOUT_STOP_SECS - STOP_RESERVE_SECS;
        if self.shutdown_grace_secs > max_grace {
            return Err(ConfigError::new(
                "daemon.shutdown_grace_secs",
                format!(
                    "{} s does not fit below the unit's TimeoutStopSec={UNIT_TIMEOUT_STOP_SECS}s with \
                     {STOP_RESERVE_SECS} s left to flush",
                    self.shutdown_grace_secs
                ),
                format!(
                    "use at most {max_grace} (default 20), or raise TimeoutStopSec= in a drop-in and \
                     keep the grace {STOP_RESERVE_SECS} s below it"
                ),
            ));
        }
        if self.ready_timeout_secs == 0 || self.ready_timeout_secs > 80 {
            return Err(ConfigError::new(
                "daemon.ready_timeout_secs",
                "must be between 1 and 80 seconds (systemd's TimeoutStartSec defaults to 90 s)",
                "use the default 30",
            ));
        }
        if self.stale_after_secs == 0 {
            return Err(ConfigError::new(
                "daemon.stale_after_secs",
                "must be at least 1 second",
                "use the default 90",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Env};

    #[test]
    fn a_grace_longer_than_the_stop_timeout_names_the_key() {
        let err = parse(
            "[daemon]\nshutdown_grace_secs = 40\n",
            "<test>",
            &Env::default(),
        )
        .unwrap_err();
        assert_eq!(err.key, "daemon.shutdown_grace_secs");
        assert!(err.fix.contains("at most 35"), "{err}");
        assert!(parse(
            "[daemon]\nshutdown_grace_secs = 35\n",
            "<test>",
            &Env::default()
        )
        .is_ok());
    }
}
