//! Building the real components for `switchboard run`: the sled store, the free-first router, and the
//! adapters whose token is present. Tests build their own [`super::Parts`] from fakes instead.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::info;

use super::{config_fatal, notify, ConfigLoader, Parts};
use crate::clock::{SharedClock, SystemClock};
use crate::config::secrets::{DISCORD_TOKEN_VAR, TELEGRAM_TOKEN_VAR};
use crate::config::{self, Config, Env, Secrets};
use crate::exit::Fatal;
use crate::health::Health;
use crate::platforms::PlatformAdapter;
use crate::store::StoreError;

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
    let config = Arc::new(config);
    let clock: SharedClock = Arc::new(SystemClock);
    let health = Health::new();
    let real = real::components(&config, secrets, env, clock.clone(), wanted).await?;
    // SIGHUP re-reads the same file with the same environment overrides.
    let reload: ConfigLoader =
        Box::new(move || config::load(config_path.as_deref(), &Env::from_process()));
    let watchdog = notify::watchdog_period(
        env.get("WATCHDOG_USEC"),
        env.get("WATCHDOG_PID"),
        std::process::id(),
    );
    if let Some(p) = watchdog {
        info!(period_ms = p.as_millis() as u64, "systemd watchdog armed");
    }
    Ok(Parts {
        config,
        store: real.store,
        router: real.router,
        router_control: real.router_control,
        adapters: real.adapters,
        clock,
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

/// The adapters to start: each one enabled in the config whose token is present. None at all is a
/// configuration error that says which variables to set.
fn wanted_adapters(config: &Config, secrets: &Secrets) -> Result<Vec<Wanted>, Fatal> {
    let mut wanted = Vec::new();
    if let (true, Some(token)) = (config.telegram.enabled, &secrets.telegram_token) {
        wanted.push(Wanted::Telegram(token.clone()));
    }
    if let (true, Some(token)) = (config.discord.enabled, &secrets.discord_token) {
        wanted.push(Wanted::Discord(token.clone()));
    }
    if wanted.is_empty() {
        return Err(config_fatal(&config::ConfigError::new(
            format!("{TELEGRAM_TOKEN_VAR} / {DISCORD_TOKEN_VAR}"),
            "no platform adapter is configured (no bot token found, or the platforms are disabled)",
            format!(
                "set {TELEGRAM_TOKEN_VAR} or {DISCORD_TOKEN_VAR} (environment, NAME_FILE, or a systemd \
                 LoadCredential= file), and keep [telegram]/[discord] enabled = true"
            ),
        )));
    }
    Ok(wanted)
}

#[cfg(test)]
pub(crate) fn wanted_adapters_for_test(config: &Config, secrets: &Secrets) -> Result<usize, Fatal> {
    wanted_adapters(config, secrets).map(|w| w.len())
}

/// A store error at start-up as the fatal error it is for the operator.
pub(crate) fn store_fatal(e: StoreError) -> Fatal {
    match e {
        StoreError::Locked { .. } => Fatal::Conflict(format!(
            "{e}. Fix: stop the other instance (systemctl stop switchboard) or point store.dir elsewhere"
        )),
        StoreError::NewerSchema { .. } => Fatal::Config(e.to_string()),
        other => Fatal::Other(anyhow::anyhow!("cannot open the store: {other}")),
    }
}

/// The real constructors, kept in one place.
mod real {
    use super::*;
    use crate::daemon::RouterControl;
    use crate::platforms::discord::DiscordAdapter;
    use crate::platforms::telegram::TelegramAdapter;
    use crate::router::free_first::FreeFirstRouter;
    use crate::router::LlmRouter;
    use crate::store::sled_store::SledStore;
    use crate::store::Store;

    pub(super) struct Components {
        pub store: Arc<dyn Store>,
        pub router: Arc<dyn LlmRouter>,
        pub router_control: Option<Arc<dyn RouterControl>>,
        pub adapters: Vec<Box<dyn PlatformAdapter>>,
    }

    /// The router's control handle, holding the `Arc` its background task needs.
    struct ArcRouter(Arc<FreeFirstRouter>);

    impl RouterControl for ArcRouter {
        fn reload(&self, config: &Config) -> Result<(), config::ConfigError> {
            self.0.reload(config);
            Ok(())
        }

        fn spawn_background(&self, stop: tokio_util::sync::CancellationToken) {
            FreeFirstRouter::spawn_background(&self.0, stop);
        }
    }

    pub(super) async fn components(
        config: &Arc<Config>,
        secrets: &Secrets,
        env: &Env,
        clock: SharedClock,
        wanted: Vec<Wanted>,
    ) -> Result<Components, Fatal> {
        let dir = config.store.state_dir(env);
        let cache_mb = config.store.cache_mb;
        let now_ms = clock.now_ms();
        // sled's open does blocking file I/O and may wait briefly for a lock: off the async workers.
        let opened = tokio::task::spawn_blocking(move || SledStore::open(&dir, cache_mb, now_ms))
            .await
            .map_err(|e| Fatal::Other(anyhow::anyhow!("opening the store panicked: {e}")))?
            .map_err(store_fatal)?;
        if let Some(q) = &opened.quarantined {
            tracing::error!(moved_to = %q.moved_to.display(), "started with an empty store after moving a corrupt one aside");
        }
        info!(path = %opened.store.path().display(), "store open");
        let store: Arc<dyn Store> = Arc::new(opened.store);
        let router = FreeFirstRouter::from_config(config, secrets, store.clone(), clock)
            .map_err(|e| config_fatal(&e))?;
        let adapters = wanted
            .into_iter()
            .map(|w| -> Box<dyn PlatformAdapter> {
                match w {
                    Wanted::Telegram(token) => Box::new(TelegramAdapter::new(token)),
                    Wanted::Discord(token) => Box::new(DiscordAdapter::new(token)),
                }
            })
            .collect();
        Ok(Components {
            store,
            router: router.clone(),
            router_control: Some(Arc::new(ArcRouter(router))),
            adapters,
        })
    }
}
