//! `switchboard check`: a doctor for the configuration (issue "Free-first router").

use std::path::PathBuf;

use crate::exit::Fatal;

/// Checks every key and platform token against the configured endpoints.
pub async fn check_command(_config: Option<PathBuf>) -> Result<(), Fatal> {
    Err(Fatal::Other(anyhow::anyhow!(
        "`switchboard check` is being built"
    )))
}
