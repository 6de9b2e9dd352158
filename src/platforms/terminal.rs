//! The terminal adapter: `switchboard chat` and `switchboard demo`.

use std::path::PathBuf;

use crate::config::daemon::LogFormat;
use crate::exit::Fatal;

/// `switchboard chat`.
pub async fn chat_command(
    _config: Option<PathBuf>,
    _log_format: Option<LogFormat>,
) -> Result<(), Fatal> {
    Err(Fatal::Other(anyhow::anyhow!("being built")))
}

/// `switchboard demo`.
pub async fn demo_command(_log_format: Option<LogFormat>) -> Result<(), Fatal> {
    Err(Fatal::Other(anyhow::anyhow!("being built")))
}
