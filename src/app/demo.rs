//! `switchboard demo`: composes the terminal chat over simulated OpenRouter and Ollama servers started on
//! 127.0.0.1, through the real router, core and a throwaway sled store. Contacts no external host.

use std::sync::Arc;

use secrecy::SecretString;

use super::App;
use crate::clock::{SharedClock, SystemClock};
use crate::config::daemon::LogFormat;
use crate::config::{Config, Env, Secrets};
use crate::daemon::config_fatal;
use crate::exit::Fatal;
use crate::logging;
use crate::platforms::terminal::{self, Style};
use crate::secrets::NamedSecret;
use crate::sim::ollama::{SimOllama, SimOllamaOptions};
use crate::sim::openrouter::{SimKey, SimOpenRouter, SimOpenRouterOptions};
use crate::sim::ReplyShape;
use crate::store::open::open_store;

/// Set to `instant` to run the demo without simulated model latency (the spine tests do, to stay quick).
pub const DEMO_PACE_VAR: &str = "SWITCHBOARD_DEMO_PACE";

/// The demo's two OpenRouter keys, each its own account with this many free requests a day — tiny, so the
/// switch from key to key and then to the paid tier shows within a handful of messages.
const DEMO_FREE_REQUESTS: u32 = 2;

/// `switchboard demo`: starts the simulators, then the terminal chat against them.
pub async fn demo_command(log_format: Option<LogFormat>) -> Result<(), Fatal> {
    logging::init_with_default(log_format.unwrap_or_default(), logging::QUIET_FILTER);
    let demo = Demo::start()
        .await
        .map_err(|e| Fatal::Other(anyhow::anyhow!("cannot start the simulators: {e}")))?;
    let mut out = std::io::stdout();
    terminal::print_warning(&mut out, Style::detect(), &demo.banner())
        .map_err(|e| Fatal::Other(e.into()))?;
    let clock: SharedClock = Arc::new(SystemClock);
    let state_dir = std::env::temp_dir().join(format!("switchboard-demo-{}", std::process::id()));
    let mut env = Env::default();
    env.set("STATE_DIRECTORY", state_dir.display().to_string());
    let result = async {
        let store = open_store(&demo.config, &env, &clock).await?;
        let router = super::build_router(&demo.config, &demo.secrets, store.clone(), clock.clone())
            .map_err(|e| config_fatal(&e))?;
        router.refresh_quotas().await;
        App {
            config: Arc::new(demo.config.clone()),
            store,
            router,
            clock,
            has_model_keys: true,
        }
        .chat()
        .await
    }
    .await;
    demo.openrouter.shutdown().await;
    demo.ollama.shutdown().await;
    let _ = std::fs::remove_dir_all(&state_dir);
    result
}

/// The simulated upstreams and the configuration that points at them.
struct Demo {
    openrouter: SimOpenRouter,
    ollama: SimOllama,
    config: Config,
    secrets: Secrets,
}

impl Demo {
    async fn start() -> std::io::Result<Self> {
        let keys = ["sk-or-v1-demo-key-one", "sk-or-v1-demo-key-two"];
        let pace = if std::env::var(DEMO_PACE_VAR).is_ok_and(|v| v == "instant") {
            ReplyShape::default()
        } else {
            ReplyShape::demo()
        };
        let openrouter = SimOpenRouter::start(SimOpenRouterOptions {
            keys: keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    SimKey::new(*k, format!("demo-account-{}", i + 1), DEMO_FREE_REQUESTS)
                })
                .collect(),
            reply: pace.clone(),
            ..SimOpenRouterOptions::default()
        })
        .await?;
        let ollama_key = "ollama-demo-key";
        let ollama = SimOllama::start(SimOllamaOptions {
            keys: vec![ollama_key.into()],
            reply: pace,
            ..SimOllamaOptions::default()
        })
        .await?;
        let mut config = Config::default();
        config.openrouter.base_url = openrouter.base_url();
        config.ollama.base_url = ollama.base_url();
        config.core.system_prompt = "You are switchboard's demo assistant.".into();
        let secrets = Secrets {
            openrouter_keys: keys
                .iter()
                .enumerate()
                .map(|(i, k)| NamedSecret {
                    name: format!("OPENROUTER_API_KEY_{}", i + 1),
                    value: SecretString::from(*k),
                })
                .collect(),
            ollama_keys: vec![NamedSecret {
                name: "OLLAMA_API_KEY".into(),
                value: SecretString::from(ollama_key),
            }],
            ..Secrets::default()
        };
        Ok(Self {
            openrouter,
            ollama,
            config,
            secrets,
        })
    }

    fn banner(&self) -> String {
        let keys: Vec<String> = self
            .secrets
            .openrouter_keys
            .iter()
            .enumerate()
            .map(|(i, k)| format!("  OpenRouter key {} ({}) — account demo-account-{}, {DEMO_FREE_REQUESTS} free requests today", i + 1, k.fingerprint(), i + 1))
            .collect();
        format!(
            "switchboard demo — OpenRouter and Ollama Cloud are SIMULATED on this machine
\
             (OpenRouter at {}, Ollama at {}); nothing leaves 127.0.0.1, no account is needed.
\
             Free tier first:
{}
then the paid tier: Ollama Cloud models ({}).
\
             Type a message (or /help, /usage); Ctrl-D ends.",
            self.openrouter.base_url(),
            self.ollama.base_url(),
            keys.join(
                "
"
            ),
            self.config.ollama.models.join(", "),
        )
    }
}
