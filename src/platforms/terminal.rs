//! The terminal adapter: `switchboard chat` and `switchboard demo`. Reads one message per line, streams the
//! reply as it is generated, and after each reply prints one dim line naming the tier, provider and model
//! that answered. On a terminal it shows a prompt and colours; when stdin is not a terminal it prints plainly,
//! so it can be scripted (`printf 'hi\n/usage\n' | switchboard chat`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::config::daemon::LogFormat;
use crate::core::Core;
use crate::domain::{
    AnswerSource, ChatKind, ChatRef, Inbound, Platform, ReplyEvent, Sender, UserRef,
};
use crate::exit::Fatal;

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

/// `switchboard chat`: the terminal chat over the configured router and store.
pub async fn chat_command(
    config: Option<PathBuf>,
    log_format: Option<LogFormat>,
) -> Result<(), Fatal> {
    let _ = (config, log_format);
    Err(Fatal::Other(anyhow::anyhow!(
        "wiring lands with the router"
    )))
}

/// `switchboard demo`: the terminal chat against simulated providers on 127.0.0.1.
pub async fn demo_command(log_format: Option<LogFormat>) -> Result<(), Fatal> {
    let _ = log_format;
    Err(Fatal::Other(anyhow::anyhow!(
        "wiring lands with the router"
    )))
}
