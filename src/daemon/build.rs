//! The daemon's part of the composition: the store and router from [`crate::app`], plus the adapters
//! whose token is present, as [`super::Parts`]. Tests build their own `Parts` from fakes instead.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::{info, warn};

use super::{config_fatal, notify, ConfigLoader, Parts};
use crate::api::{self, auth::ClientAuth, auth::LoopbackOnly, ApiAdapter};
use crate::app;
use crate::config::secrets::{DISCORD_TOKEN_VAR, TELEGRAM_TOKEN_VAR};
use crate::config::{self, Config, Env, Secrets};
use crate::exit::Fatal;
use crate::health::Health;
use crate::platforms::discord::DiscordAdapter;
use crate::platforms::telegram::TelegramAdapter;
use crate::platforms::PlatformAdapter;

/// Builds the real store, router and adapters from `config` and `secrets`. Fails with
/// [`Fatal::Config`] when no adapter is configured or a component rejects its settings, and with
/// [`Fatal::Conflict`] when another process holds the store.
pub async fn build_parts(
    config: Config,
    secrets: &Secrets,
    config_path: Option<PathBuf>,
    env: &Env,
) -> Result<Parts, Fatal> {
    let wanted = wanted_adapters(&config, secrets)?;
    // Bind before opening the store: a refused address is a configuration error, reported at once.
    let auth: Arc<dyn ClientAuth> = Arc::new(LoopbackOnly);
    let api_listener = if config.api.enabled {
        Some(api::bind(&config, &*auth).await?)
    } else {
        None
    };
    if !app::has_model_keys(&config, secrets) {
        warn!(
            "no model keys are configured, so every message will be answered with an error: {}",
            app::model_keys_help()
        );
    }
    let app = app::open(config, secrets, env).await?;
    let health = Health::new();
    // SIGHUP re-reads the same file with the same environment overrides.
    let reload: ConfigLoader =
        Box::new(move || config::load(config_path.as_deref(), &Env::from_process()));
    let watchdog = notify::watchdog_period(
        env.get("WATCHDOG_USEC"),
        env.get("WATCHDOG_PID"),
        std::process::id(),
    );
    if let Some(p) = watchdog {
        info!(
            period_ms = u64::try_from(p.as_millis()).unwrap_or(u64::MAX),
            "systemd watchdog armed"
        );
    }
    let mut adapters = adapters(wanted);
    if let Some(listener) = api_listener {
        adapters.push(Box::new(ApiAdapter::new(
            listener,
            app.router.clone(),
            auth,
            app.clock.clone(),
        )));
    }
    Ok(Parts {
        config: app.config,
        store: app.store,
        router: app.router.clone(),
        router_control: Some(Arc::new(app::RouterHandle(app.router))),
        adapters,
        clock: app.clock,
        health,
        reload,
        watchdog,
    })
}

/// Which adapter to run, with its token.
pub(crate) enum Wanted {
    Telegram(secrecy::SecretString),
    Discord(secrecy::SecretString),
}

/// The platform adapters to start: each one enabled in the config whose token is present. None at all
/// is a configuration error that says which variables to set, unless the local API is enabled (then
/// `run` serves just the API).
fn wanted_adapters(config: &Config, secrets: &Secrets) -> Result<Vec<Wanted>, Fatal> {
    let mut wanted = Vec::new();
    if let (true, Some(token)) = (config.telegram.enabled, &secrets.telegram_token) {
        wanted.push(Wanted::Telegram(token.clone()));
    }
    if let (true, Some(token)) = (config.discord.enabled, &secrets.discord_token) {
        wanted.push(Wanted::Discord(token.clone()));
    }
    if wanted.is_empty() && !config.api.enabled {
        return Err(config_fatal(&config::ConfigError::new(
            format!("{TELEGRAM_TOKEN_VAR} / {DISCORD_TOKEN_VAR}"),
            "no platform adapter is configured (no bot token found, or the platforms are disabled)",
            format!(
                "set {TELEGRAM_TOKEN_VAR} or {DISCORD_TOKEN_VAR} (environment, NAME_FILE, or a systemd \
                 LoadCredential= file), and keep [telegram]/[discord] enabled = true; or serve only the \
                 local API with [api] enabled = true"
            ),
        )));
    }
    Ok(wanted)
}

#[cfg(test)]
pub(crate) fn wanted_adapters_for_test(config: &Config, secrets: &Secrets) -> Result<usize, Fatal> {
    wanted_adapters(config, secrets).map(|w| w.len())
}

/// The adapters' constructors.
fn adapters(wanted: Vec<Wanted>) -> Vec<Box<dyn PlatformAdapter>> {
    wanted
        .into_iter()
        .map(|w| -> Box<dyn PlatformAdapter> {
            match w {
                Wanted::Telegram(token) => Box::new(TelegramAdapter::new(token)),
                Wanted::Discord(token) => Box::new(DiscordAdapter::new(token)),
            }
        })
        .collect()
}
