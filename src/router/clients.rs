//! Building the real provider clients from the configuration (OpenRouter, Ollama Cloud, extra tiers).

use super::free_first::ProviderSet;
use crate::config::{Config, ConfigError};

/// Builds every configured provider client.
pub fn build(_config: &Config) -> Result<ProviderSet, ConfigError> {
    // Filled in once the wire clients land (branch `providers`).
    Ok(ProviderSet::default())
}
