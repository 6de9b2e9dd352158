//! The composition root: the one place that turns configuration into running parts — config and
//! secrets → store → router → core — for every command (`run`, `chat`, `demo`, `check`). The daemon, the
//! terminal adapter and the configuration doctor receive what is built here; none of them constructs a
//! store or a router itself, so start-up, `chat` and `check` validate the same way.

pub mod demo;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::clock::{SharedClock, SystemClock};
use crate::config::daemon::LogFormat;
use crate::config::secrets::{OLLAMA_KEY_VAR, OPENROUTER_KEY_VAR};
use crate::config::{self, Config, ConfigError, Env, Secrets};
use crate::core::Core;
use crate::daemon::{config_fatal, RouterControl};
use crate::exit::Fatal;
use crate::logging;
use crate::platforms::terminal::{self, Style};
use crate::router::free_first::FreeFirstRouter;
use crate::store::memory::MemoryStore;
use crate::store::open::{open_store, retention_policy, spawn_retention};
use crate::store::Store;

/// When input ends, a reply still streaming gets this long to finish (it is then stored as incomplete).
const SESSION_END_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// The configuration as every command reads it: the file (if any), the environment's overrides, and
/// the secrets.
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Keys and tokens (never `Debug`-printed).
    pub secrets: Secrets,
    /// The process environment the two were read from (extra tiers' `key_env`, `STATE_DIRECTORY`, …).
    pub env: Env,
    /// The config file in use, `None` for all defaults; SIGHUP re-reads it.
    pub path: Option<PathBuf>,
}

/// Reads the config file (`--config`, else the default locations), the environment overrides and the
/// secrets. Any error is a [`ConfigError`] naming the key and the fix.
pub fn load(config_path: Option<&Path>) -> Result<Loaded, ConfigError> {
    let env = Env::from_process();
    let path = config::resolve_path(config_path);
    let config = config::load(path.as_deref(), &env)?;
    let secrets = Secrets::load(&env)?;
    Ok(Loaded {
        config,
        secrets,
        env,
        path,
    })
}

/// Builds the free-first router with its provider clients. This is where the model side of the
/// configuration is validated (tier order, tiers, base URLs): start-up, `chat` and `check` all go through
/// it, so what one rejects the others reject too.
pub fn build_router(
    config: &Config,
    secrets: &Secrets,
    store: Arc<dyn Store>,
    clock: SharedClock,
) -> Result<Arc<FreeFirstRouter>, ConfigError> {
    FreeFirstRouter::from_config(config, secrets, store, clock)
}

/// Everything start-up validates, without its side effects: the router is built over an in-memory
/// store (a running daemon holds the sled lock) and nothing is contacted. `switchboard check` runs this.
pub fn validate(config: &Config, secrets: &Secrets) -> Result<(), ConfigError> {
    build_router(
        config,
        secrets,
        Arc::new(MemoryStore::new()),
        Arc::new(SystemClock),
    )
    .map(drop)
}

/// Whether any model key is configured: an OpenRouter or Ollama key, or an extra tier.
pub fn has_model_keys(config: &Config, secrets: &Secrets) -> bool {
    !secrets.openrouter_keys.is_empty()
        || !secrets.ollama_keys.is_empty()
        || !config.tiers.is_empty()
}

/// How to add model keys, named for the operator: the environment variables and the config section.
pub fn model_keys_help() -> String {
    format!(
        "set {OPENROUTER_KEY_VAR}_1 (free tier, more keys as _2, _3 …) or {OLLAMA_KEY_VAR} (paid tier) \
         in the environment (or NAME_FILE / a systemd credential), or add a [[tiers]] entry with key_env, \
         then restart; `switchboard check` verifies them"
    )
}

/// The parts every command runs on: the configuration in force, the store, the router and the clock.
pub struct App {
    /// The configuration in force at start.
    pub config: Arc<Config>,
    /// The one store of this process.
    pub store: Arc<dyn Store>,
    /// The free-first router over the configured providers.
    pub router: Arc<FreeFirstRouter>,
    /// Wall-clock time.
    pub clock: SharedClock,
    /// Whether any model key is configured ([`has_model_keys`]); without one every message fails.
    pub has_model_keys: bool,
}

/// Opens the sled store and builds the router over it. [`Fatal::Config`] for a configuration the
/// router rejects, [`Fatal::Conflict`] when another process holds the store.
pub async fn open(config: Config, secrets: &Secrets, env: &Env) -> Result<App, Fatal> {
    let clock: SharedClock = Arc::new(SystemClock);
    let store = open_store(&config, env, &clock).await?;
    let router = build_router(&config, secrets, store.clone(), clock.clone())
        .map_err(|e| config_fatal(&e))?;
    Ok(App {
        has_model_keys: has_model_keys(&config, secrets),
        config: Arc::new(config),
        store,
        router,
        clock,
    })
}

impl App {
    /// Builds the core over the store and router, starting the router's and the store's upkeep until
    /// `stop` is cancelled.
    pub fn core(&self, stop: &CancellationToken) -> Arc<Core> {
        self.router.spawn_background(stop.clone());
        let retention = retention_policy(&self.config.store);
        spawn_retention(
            self.store.clone(),
            move || retention,
            self.clock.clone(),
            stop.clone(),
        );
        Core::new(
            self.config.clone(),
            self.store.clone(),
            self.router.clone(),
            self.clock.clone(),
        )
    }

    /// A terminal session over this app until stdin ends (or `/quit`, or Ctrl-C at the prompt); then
    /// replies in flight get [`SESSION_END_GRACE`] and the store is flushed.
    pub async fn chat(self) -> Result<(), Fatal> {
        let background = CancellationToken::new();
        let core = self.core(&background);
        let style = Style::detect();
        let mut out = std::io::stdout();
        if !self.has_model_keys {
            let line = format!(
                "No model keys are configured, so every message will fail: {}.",
                model_keys_help()
            );
            terminal::print_warning(&mut out, style, &line)
                .map_err(|e| Fatal::Other(anyhow::anyhow!("terminal I/O failed: {e}")))?;
        }
        let session = terminal::run_session(&core, terminal::stdin_lines(), &mut out, style).await;
        background.cancel();
        core.begin_shutdown();
        core.drain(SESSION_END_GRACE).await;
        self.store
            .flush_all()
            .await
            .map_err(|e| Fatal::Other(anyhow::anyhow!("flushing the store: {e}")))?;
        session.map_err(|e| Fatal::Other(anyhow::anyhow!("terminal I/O failed: {e}")))
    }
}

/// `switchboard chat`: the terminal chat over the configured router and store, with history in sled
/// like any other platform (the conversation is `terminal:local`).
pub async fn chat_command(
    config_path: Option<PathBuf>,
    log_format: Option<LogFormat>,
) -> Result<(), Fatal> {
    let loaded = load(config_path.as_deref()).map_err(|e| config_fatal(&e))?;
    logging::init_with_default(
        log_format.unwrap_or(loaded.config.daemon.log_format),
        logging::QUIET_FILTER,
    );
    open(loaded.config, &loaded.secrets, &loaded.env)
        .await?
        .chat()
        .await
}

/// The real router's control handle for the daemon (reload, background upkeep), holding the `Arc` its
/// background task needs.
pub struct RouterHandle(pub Arc<FreeFirstRouter>);

impl RouterControl for RouterHandle {
    fn reload(&self, config: &Config) -> Result<(), ConfigError> {
        self.0.reload(config)
    }

    fn spawn_background(&self, stop: CancellationToken) {
        FreeFirstRouter::spawn_background(&self.0, stop);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::domain::ReplyEvent;
    use crate::platforms::terminal::terminal_inbound;

    /// Without any model key, a message is answered with what is missing and how to add it — not "try
    /// again in a minute", which no wait would fix.
    #[tokio::test]
    async fn without_model_keys_a_message_says_which_keys_to_set() {
        let (config, secrets) = (Config::default(), Secrets::default());
        assert!(!has_model_keys(&config, &secrets));
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let clock: SharedClock = Arc::new(SystemClock);
        let router = build_router(&config, &secrets, store.clone(), clock.clone()).unwrap();
        let core = Core::new(Arc::new(config), store, router, clock);
        let events: Vec<ReplyEvent> = core.handle(terminal_inbound("hi")).unwrap().collect().await;
        let Some(ReplyEvent::Failed(failure)) = events.last() else {
            panic!("{events:?}");
        };
        assert!(
            failure.message.contains("no model keys are configured")
                && failure.message.contains("OPENROUTER_API_KEY_1")
                && failure.message.contains("OLLAMA_API_KEY"),
            "{}",
            failure.message
        );
        assert!(
            !failure.message.contains("in a minute"),
            "{}",
            failure.message
        );
        let help = model_keys_help();
        assert!(help.contains("OPENROUTER_API_KEY_1") && help.contains("OLLAMA_API_KEY"));
    }

    /// The validation `check` runs is start-up's: what building the router rejects, it rejects.
    #[test]
    fn validate_rejects_what_start_up_rejects() {
        let secrets = Secrets::default();
        let mut config = Config::default();
        assert!(validate(&config, &secrets).is_ok());
        for order in [vec!["bogus"], vec!["free", "free"]] {
            config.router.tier_order = order.iter().map(|s| (*s).to_owned()).collect();
            let started = build_router(
                &config,
                &secrets,
                Arc::new(MemoryStore::new()),
                Arc::new(SystemClock),
            )
            .map(drop);
            let checked = validate(&config, &secrets);
            assert!(checked.is_err(), "{order:?}");
            assert_eq!(checked, started);
        }
    }
}
