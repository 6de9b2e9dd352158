//! Building the real provider clients from the configuration: OpenRouter (free tier, with its `GET /key`
//! quota probe), Ollama Cloud (paid tier) and the extra `[[tiers]]`, all with the `[router]` timeouts.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use secrecy::SecretString;

use super::free_first::{KeyQuota, ProviderSet, QuotaProbe};
use super::select::Learned;
use crate::clock::SharedClock;
use crate::config::{Config, ConfigError, Env};
use crate::providers::http::{ClientBuildError, Timeouts};
use crate::providers::ollama::OllamaClient;
use crate::providers::openai::OpenAiClient;
use crate::providers::{client_for_tier, ProviderError};
use crate::secrets::NamedSecret;

/// The OpenRouter client's `GET /key`, as the router's quota probe.
struct KeyInfoProbe(OpenAiClient);

impl QuotaProbe for KeyInfoProbe {
    fn key_quota(
        &self,
        key: &SecretString,
    ) -> BoxFuture<'static, Result<Option<KeyQuota>, ProviderError>> {
        let client = self.0.clone();
        let key = key.clone();
        Box::pin(async move {
            Ok(client.key_info(Some(&key)).await?.map(|info| KeyQuota {
                daily_limit: info.free_daily_limit,
                remaining: info.free_remaining,
                is_free_tier: info.is_free_tier,
            }))
        })
    }

    fn models(&self) -> BoxFuture<'static, Result<Vec<(String, Learned)>, ProviderError>> {
        let client = self.0.clone();
        Box::pin(async move {
            // `GET /models` is public on OpenRouter: no key is spent on it.
            let list = client.models(None).await?;
            Ok(list
                .into_iter()
                .map(|m| {
                    let learned = Learned {
                        capabilities: m.capabilities,
                        context_length: m.context_length,
                    };
                    (m.id, learned)
                })
                .collect())
        })
    }
}

fn build_error(key: &str) -> impl Fn(ClientBuildError) -> ConfigError + '_ {
    move |e| {
        ConfigError::new(
            key,
            e.to_string(),
            "check the system's TLS root certificates",
        )
    }
}

/// The OpenRouter client for `config` (also used by `switchboard check`).
pub fn openrouter(config: &Config, clock: SharedClock) -> Result<OpenAiClient, ConfigError> {
    Ok(OpenAiClient::openrouter(&config.openrouter, &config.router)
        .map_err(build_error("openrouter.base_url"))?
        .with_clock(clock))
}

/// The Ollama Cloud client for `config` (also used by `switchboard check`).
pub fn ollama(config: &Config, clock: SharedClock) -> Result<OllamaClient, ConfigError> {
    Ok(OllamaClient::cloud(&config.ollama, &config.router)
        .map_err(build_error("ollama.base_url"))?
        .with_clock(clock))
}

/// Builds every configured provider client. Extra tiers read their key from the variable named by
/// `key_env` (`NAME`, `NAME_FILE` or the credentials directory, like every other secret).
pub fn build(config: &Config, env: &Env, clock: &SharedClock) -> Result<ProviderSet, ConfigError> {
    let or = openrouter(config, clock.clone())?;
    let mut set = ProviderSet {
        quota_probe: Some(Arc::new(KeyInfoProbe(or.clone()))),
        openrouter: Some(Arc::new(or)),
        ollama: Some(Arc::new(ollama(config, clock.clone())?)),
        ..ProviderSet::default()
    };
    let timeouts = Timeouts::from_config(&config.router);
    for (i, tier) in config.tiers.iter().enumerate() {
        let field = format!("tiers[{i}].base_url");
        let client = client_for_tier(tier, timeouts, clock.clone()).map_err(build_error(&field))?;
        let key = match &tier.key_env {
            Some(name) => {
                let value = crate::config::secrets::read(env, name)?.ok_or_else(|| {
                    ConfigError::new(
                        format!("tiers[{i}].key_env"),
                        format!("names {name}, which is not set"),
                        format!("set {name} (or {name}_FILE), or remove key_env"),
                    )
                })?;
                Some(NamedSecret {
                    name: name.clone(),
                    value,
                })
            }
            None => None,
        };
        set.extra.insert(tier.name.clone(), (client, key));
    }
    Ok(set)
}
