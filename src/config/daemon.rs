//! `[daemon]`: how the service starts, stops and logs.

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

/// Service settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// On SIGTERM, in-flight replies get this many seconds to finish before they are cut with a
    /// "restarting" note. Must stay below the unit's `TimeoutStopSec=` (30 s) with room to flush.
    pub shutdown_grace_secs: u64,
    /// Log format.
    pub log_format: LogFormat,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            shutdown_grace_secs: 20,
            log_format: LogFormat::Text,
        }
    }
}

impl DaemonConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.shutdown_grace_secs > 600 {
            return Err(ConfigError::new(
                "daemon.shutdown_grace_secs",
                "is longer than 10 minutes",
                "keep it below the unit's TimeoutStopSec (default 20)",
            ));
        }
        Ok(())
    }
}
