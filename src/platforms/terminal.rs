//! The terminal adapter: `switchboard chat` and `switchboard demo`. Reads one message per line, streams the
//! reply as it is generated, and after each reply prints one dim line naming the tier, provider and model
//! that answered. On a terminal it shows a prompt and colours; when stdin is not a terminal it prints plainly,
//! so it can be scripted (`printf 'hi\n/usage\n' | switchboard chat`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::clock::{SharedClock, SystemClock};
use crate::config::daemon::LogFormat;
use crate::config::{self, Config, Env, Secrets};
use crate::core::Core;
use crate::domain::{
    AnswerSource, ChatKind, ChatRef, Inbound, Platform, ReplyEvent, Sender, UserRef,
};
use crate::exit::Fatal;
use crate::logging;
use crate::router::free_first::FreeFirstRouter;
use crate::secrets::NamedSecret;
use crate::sim::ollama::{SimOllama, SimOllamaOptions};
use crate::sim::openrouter::{SimKey, SimOpenRouter, SimOpenRouterOptions};
use crate::sim::ReplyShape;
use crate::store::open::{open_store, retention_policy, spawn_retention};
use crate::store::Store;

/// When input ends, a reply still streaming gets this long to finish (it is then stored as incomplete).
const SESSION_END_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// How the terminal output looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// A person at a terminal: prompt, colours, Ctrl-C cancels a reply.
    Interactive,
    /// A script: no prompt, no escape codes.
    Plain,
}

impl Style {
    /// Interactive when both stdin and stdout are terminals.
    pub fn detect() -> Self {
        if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
            Self::Interactive
        } else {
            Self::Plain
        }
    }

    fn dim(self, text: &str) -> String {
        match self {
            Self::Interactive => format!("\x1b[2m{text}\x1b[0m"),
            Self::Plain => text.to_owned(),
        }
    }

    fn warn(self, text: &str) -> String {
        match self {
            Self::Interactive => format!("\x1b[33m{text}\x1b[0m"),
            Self::Plain => text.to_owned(),
        }
    }
}

/// The terminal user: the local operator, whose chat is `terminal:local`.
pub fn terminal_inbound(text: &str) -> Inbound {
    let user = std::env::var("USER").unwrap_or_else(|_| "local".into());
    Inbound {
        chat: ChatRef::new(Platform::Terminal, "local"),
        chat_kind: ChatKind::Direct,
        sender: Sender {
            user: UserRef::new(Platform::Terminal, user.clone()),
            display_name: user,
        },
        text: text.to_owned(),
        addressed: true,
        reply_to: None,
        thread: None,
    }
}

/// The dim line after a reply: `free · openrouter · model · key fp:…`.
pub fn source_line(source: &AnswerSource) -> String {
    let mut line = format!(
        "— {} tier · {} · {}",
        source.tier, source.provider, source.model
    );
    if let Some(fp) = &source.key_fingerprint {
        line.push_str(&format!(" · key {fp}"));
    }
    line
}

/// Runs a chat session: one message per line of `input` until EOF (or `/quit`), replies to `out`.
pub async fn run_session<R, W>(
    core: &Arc<Core>,
    input: R,
    out: &mut W,
    style: Style,
) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: Write,
{
    let mut lines = input.lines();
    loop {
        if style == Style::Interactive {
            write!(out, "\n> ")?;
            out.flush()?;
        }
        let Some(line) = lines.next_line().await? else {
            break;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if matches!(line, "/quit" | "/exit") {
            break;
        }
        if style == Style::Plain {
            writeln!(out, "> {line}")?;
        }
        let Some(stream) = core.handle(terminal_inbound(line)) else {
            continue;
        };
        render_reply(stream, out, style).await?;
    }
    Ok(())
}

async fn render_reply<W: Write>(
    mut stream: crate::domain::ReplyStream,
    out: &mut W,
    style: Style,
) -> std::io::Result<()> {
    let mut source: Option<AnswerSource> = None;
    let mut wrote_text = false;
    loop {
        let event = if style == Style::Interactive {
            tokio::select! {
                event = stream.next() => event,
                _ = tokio::signal::ctrl_c() => {
                    // Dropping the stream stops the turn; the core stores what arrived as incomplete.
                    writeln!(out, "\n{}", style.warn("⚠ cancelled"))?;
                    return Ok(());
                }
            }
        } else {
            stream.next().await
        };
        let Some(event) = event else { break };
        match event {
            ReplyEvent::Started(s) => source = Some(s),
            ReplyEvent::Notice(notice) => writeln!(out, "{}", style.warn(&format!("ℹ {notice}")))?,
            ReplyEvent::Delta(text) => {
                write!(out, "{text}")?;
                out.flush()?;
                wrote_text = true;
            }
            ReplyEvent::Finished(completion) => {
                if wrote_text {
                    writeln!(out)?;
                }
                if let Some(s) = completion.source.or(source.take()) {
                    let usage = completion.usage;
                    let tokens = if usage.total() > 0 {
                        format!(" · {} tokens", usage.total())
                    } else {
                        String::new()
                    };
                    writeln!(
                        out,
                        "{}",
                        style.dim(&format!("{}{tokens}", source_line(&s)))
                    )?;
                }
                break;
            }
            ReplyEvent::Failed(failure) => {
                if wrote_text {
                    writeln!(out)?;
                }
                writeln!(out, "{}", style.warn(&format!("⚠ {}", failure.message)))?;
                break;
            }
        }
    }
    out.flush()
}

/// `switchboard chat`: the terminal chat over the configured router and store, with history in sled
/// like any other platform (the conversation is `terminal:local`).
pub async fn chat_command(
    config_path: Option<PathBuf>,
    log_format: Option<LogFormat>,
) -> Result<(), Fatal> {
    let env = Env::from_process();
    let path = config::resolve_path(config_path.as_deref());
    let config = config::load(path.as_deref(), &env).map_err(|e| Fatal::Config(e.to_string()))?;
    logging::init_with_default(
        log_format.unwrap_or(config.daemon.log_format),
        logging::QUIET_FILTER,
    );
    let secrets = Secrets::load(&env).map_err(|e| Fatal::Config(e.to_string()))?;
    let clock: SharedClock = Arc::new(SystemClock);
    let store = open_store(&config, &env, &clock).await?;
    let router = FreeFirstRouter::from_config(&config, &secrets, store.clone(), clock.clone())
        .map_err(|e| Fatal::Config(e.to_string()))?;
    chat_over(Arc::new(config), store, router, clock).await
}

/// Runs a terminal session over `router` until stdin ends, then drains and flushes.
async fn chat_over(
    config: Arc<Config>,
    store: Arc<dyn Store>,
    router: Arc<FreeFirstRouter>,
    clock: SharedClock,
) -> Result<(), Fatal> {
    let background = CancellationToken::new();
    router.spawn_background(background.clone());
    let retention = retention_policy(&config.store);
    spawn_retention(
        store.clone(),
        move || retention,
        clock.clone(),
        background.clone(),
    );
    let core = Core::new(config, store.clone(), router, clock);
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut out = std::io::stdout();
    let session = run_session(&core, stdin, &mut out, Style::detect()).await;
    background.cancel();
    core.begin_shutdown();
    core.drain(SESSION_END_GRACE).await;
    store
        .flush()
        .await
        .map_err(|e| Fatal::Other(anyhow::anyhow!("flushing the store: {e}")))?;
    session.map_err(|e| Fatal::Other(anyhow::anyhow!("terminal I/O failed: {e}")))
}

/// Set to `instant` to run the demo without simulated model latency (the spine tests do, to stay quick).
pub const DEMO_PACE_VAR: &str = "SWITCHBOARD_DEMO_PACE";

/// The demo's two OpenRouter keys, each its own account with this many free requests a day — tiny, so the
/// switch from key to key and then to the paid tier shows within a handful of messages.
const DEMO_FREE_REQUESTS: u32 = 2;

/// `switchboard demo`: the terminal chat against simulated OpenRouter and Ollama servers that it starts on
/// 127.0.0.1, through the real router, core and a throwaway sled store. Contacts no external host.
pub async fn demo_command(log_format: Option<LogFormat>) -> Result<(), Fatal> {
    logging::init_with_default(log_format.unwrap_or_default(), logging::QUIET_FILTER);
    let demo = Demo::start()
        .await
        .map_err(|e| Fatal::Other(anyhow::anyhow!("cannot start the simulators: {e}")))?;
    let mut out = std::io::stdout();
    let style = Style::detect();
    writeln!(out, "{}", style.warn(&demo.banner())).map_err(|e| Fatal::Other(e.into()))?;
    let clock: SharedClock = Arc::new(SystemClock);
    let state_dir = std::env::temp_dir().join(format!("switchboard-demo-{}", std::process::id()));
    let mut env = Env::default();
    env.set("STATE_DIRECTORY", state_dir.display().to_string());
    let result = async {
        let store = open_store(&demo.config, &env, &clock).await?;
        let router =
            FreeFirstRouter::from_config(&demo.config, &demo.secrets, store.clone(), clock.clone())
                .map_err(|e| Fatal::Config(e.to_string()))?;
        router.refresh_quotas().await;
        chat_over(Arc::new(demo.config.clone()), store, router, clock).await
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
