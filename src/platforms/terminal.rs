//! The terminal adapter: `switchboard chat` and `switchboard demo`. Reads one message per line, streams the
//! reply as it is generated, and after each reply prints one dim line naming the tier, provider and model
//! that answered (marked incomplete when the reply was cut short). On a terminal it shows a prompt and
//! colours, and Ctrl-C stops a reply — or, at the prompt, ends the chat; when stdin is not a terminal it prints plainly,
//! so it can be scripted (`printf 'hi\n/usage\n' | switchboard chat`).

use std::future::Future;
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

/// Runs a chat session: one message per line of `input` until EOF (or `/quit`), replies to `out`. On a
/// terminal, Ctrl-C stops a reply in progress, and at the prompt it ends the session.
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
    run_session_with(core, input, out, style, ctrl_c).await
}

/// Resolves on the next Ctrl-C. Once tokio listens for SIGINT it does so for the rest of the process, so
/// the session itself must handle Ctrl-C at the prompt too; if the handler cannot be installed, never.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// [`run_session`] with the interrupt source given: `interrupt()` resolves when the user presses Ctrl-C
/// (tests send their own). Interrupts are listened for only in [`Style::Interactive`].
pub async fn run_session_with<R, W, I, F>(
    core: &Arc<Core>,
    input: R,
    out: &mut W,
    style: Style,
    mut interrupt: I,
) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: Write,
    I: FnMut() -> F,
    F: Future<Output = ()>,
{
    let mut lines = input.lines();
    loop {
        let line = if style == Style::Interactive {
            write!(out, "\n> ")?;
            out.flush()?;
            tokio::select! {
                line = lines.next_line() => line?,
                () = interrupt() => {
                    // Ctrl-C at the prompt ends the chat, as a shell user expects.
                    writeln!(out)?;
                    break;
                }
            }
        } else {
            lines.next_line().await?
        };
        let Some(line) = line else {
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
        render_reply(stream, out, style, &mut interrupt).await?;
    }
    Ok(())
}

async fn render_reply<W, I, F>(
    mut stream: crate::domain::ReplyStream,
    out: &mut W,
    style: Style,
    interrupt: &mut I,
) -> std::io::Result<()>
where
    W: Write,
    I: FnMut() -> F,
    F: Future<Output = ()>,
{
    let mut source: Option<AnswerSource> = None;
    let mut wrote_text = false;
    loop {
        let event = if style == Style::Interactive {
            tokio::select! {
                event = stream.next() => event,
                () = interrupt() => {
                    // Dropping the stream stops the turn; the core stores what arrived as incomplete.
                    drop(stream);
                    writeln!(out, "\n{}", style.warn("⚠ cancelled"))?;
                    cut_short_line(out, style, source.as_ref(), wrote_text)?;
                    return out.flush();
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
                cut_short_line(out, style, source.as_ref(), wrote_text)?;
                break;
            }
        }
    }
    out.flush()
}

/// After a reply that was cut short, the dim source line too (marked incomplete), so the user knows which
/// model the partial text came from. Nothing when no text was shown: there is no answer to attribute.
fn cut_short_line<W: Write>(
    out: &mut W,
    style: Style,
    source: Option<&AnswerSource>,
    wrote_text: bool,
) -> std::io::Result<()> {
    match source {
        Some(s) if wrote_text => writeln!(
            out,
            "{}",
            style.dim(&format!("{} · incomplete", source_line(s)))
        ),
        _ => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::sync::{mpsc, Mutex};

    use super::*;
    use crate::router::scripted::{Script, ScriptedRouter};
    use crate::store::memory::MemoryStore;

    fn core(router: Arc<ScriptedRouter>) -> Arc<Core> {
        Core::new(
            Arc::new(Config::default()),
            Arc::new(MemoryStore::new()),
            router,
            Arc::new(SystemClock),
        )
    }

    /// A writer the test can read while the session still holds it.
    #[derive(Clone, Default)]
    struct Screen(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Screen {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Screen {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    #[tokio::test]
    async fn piped_output_is_plain_and_a_cut_reply_names_its_source() {
        let router = ScriptedRouter::new();
        router.on(
            "cut",
            Script::CutAfter(vec!["The answer is".into(), " forty".into()]),
        );
        let core = core(router);
        let mut out = Vec::new();
        let input: &[u8] = b"hi\ncut me\n";
        run_session(&core, input, &mut out, Style::Plain)
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "> hi\n\
             echo: hi\n\
             \u{2014} free tier \u{b7} scripted \u{b7} echo-1 \u{b7} 18 tokens\n\
             > cut me\n\
             The answer is forty\n\
             \u{26a0} The model stopped responding; the answer above is incomplete.\n\
             \u{2014} free tier \u{b7} scripted \u{b7} echo-1 \u{b7} incomplete\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ctrl_c_stops_a_reply_and_at_the_prompt_ends_the_chat() {
        let router = ScriptedRouter::new();
        router.on("slow", Script::Slow(Duration::from_secs(60)));
        router.on("cut", Script::CutAfter(vec!["partial".into()]));
        let core = core(router);
        let (mut keyboard, input) = tokio::io::duplex(1024);
        let (press, presses) = mpsc::unbounded_channel::<()>();
        let presses = Arc::new(Mutex::new(presses));
        let screen = Screen::default();
        let session = tokio::spawn({
            let (core, mut screen) = (core.clone(), screen.clone());
            async move {
                let interrupt = move || {
                    let presses = presses.clone();
                    async move {
                        presses.lock().await.recv().await;
                    }
                };
                run_session_with(
                    &core,
                    tokio::io::BufReader::new(input),
                    &mut screen,
                    Style::Interactive,
                    interrupt,
                )
                .await
            }
        });
        // With the clock paused, a short sleep returns only once the session is blocked: a barrier.
        let settle = || tokio::time::sleep(Duration::from_millis(10));
        keyboard.write_all(b"cut me\nslow one\n").await.unwrap();
        settle().await;
        press.send(()).unwrap();
        settle().await;
        let shown = screen.text();
        assert!(shown.contains("partial"), "{shown}");
        assert!(
            shown.contains("\u{26a0} cancelled"),
            "the slow reply was stopped: {shown}"
        );
        assert!(!shown.contains("echo: slow one"), "{shown}");
        assert!(
            shown.contains(
                "\x1b[2m\u{2014} free tier \u{b7} scripted \u{b7} echo-1 \u{b7} incomplete\x1b[0m"
            ),
            "the cut reply names its source, dimmed: {shown:?}"
        );
        assert!(!session.is_finished(), "back at the prompt, still chatting");
        // Ctrl-C at the prompt (after replies have listened for it) ends the session; stdin is still open.
        press.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), session)
            .await
            .expect("the session ended on Ctrl-C")
            .unwrap()
            .unwrap();
        drop(keyboard);
    }
}
