//! The daemon (`switchboard run`): wiring, signals, systemd notify/watchdog and reload (issue "systemd").

use std::path::PathBuf;

use crate::config::daemon::LogFormat;
use crate::exit::Fatal;

/// Runs every configured adapter until SIGTERM/SIGINT.
pub async fn run(_config: Option<PathBuf>, _log_format: Option<LogFormat>) -> Result<(), Fatal> {
    Err(Fatal::Other(anyhow::anyhow!(
        "`switchboard run` is being built"
    )))
}
