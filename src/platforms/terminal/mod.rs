//! The terminal adapter behind `switchboard chat` and `switchboard demo` (composed in [`crate::app`]): it
//! only reads and renders. Reads one message per line, streams the reply as it is generated (Markdown
//! rendered for the terminal, [`markdown`]), and after each reply prints one dim line naming the tier,
//! provider and model that answered (marked incomplete when the reply was cut short). On a terminal it
//! shows a prompt and colours, and Ctrl-C stops a reply — or, at the prompt, ends the chat at once; when
//! stdin is not a terminal it prints plainly, so it can be scripted (`printf 'hi\n/usage\n' | switchboard chat`).
//! `/image PATH [question]` (or a file path pasted alone) sends a local image or text file.

mod input;
pub mod markdown;

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

pub use self::input::stdin_lines;
use self::markdown::MarkdownWriter;
use crate::core::Core;
use crate::domain::{
    AnswerSource, Attachment, AttachmentKind, ChatKind, ChatRef, Inbound, Platform, ReplyEvent,
    Sender, UserRef,
};
use crate::media::local::LocalFiles;
use crate::media::text::kind_of;

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

/// Prints one warning line (yellow on a terminal): the demo's banner, "no model keys are configured".
pub fn print_warning<W: Write>(out: &mut W, style: Style, text: &str) -> std::io::Result<()> {
    writeln!(out, "{}", style.warn(text))?;
    out.flush()
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
        attachments: Vec::new(),
    }
}

/// The dim line after a reply: `free · openrouter · model · key fp:…`.
pub fn source_line(source: &AnswerSource) -> String {
    let mut line = format!(
        "— {} tier · {} · {}",
        source.tier, source.provider, source.model
    );
    if let Some(fp) = &source.key_fingerprint {
        line = format!("{line} · key {fp}");
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
    if style == Style::Plain {
        return run_session_with(core, input, out, style, std::future::pending::<()>).await;
    }
    // One listener for the whole session, created before the first prompt: a Ctrl-C pressed any time
    // after the prompt appears is seen, not lost between two listeners. If it cannot be installed, the
    // session simply does not react to Ctrl-C (and SIGINT keeps its default: it ends the process).
    let sigint = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
        Ok(signal) => Some(Arc::new(tokio::sync::Mutex::new(signal))),
        Err(_) => None,
    };
    let interrupt = move || {
        let sigint = sigint.clone();
        async move {
            match sigint {
                Some(s) if s.lock().await.recv().await.is_some() => {}
                _ => std::future::pending::<()>().await,
            }
        }
    };
    run_session_with(core, input, out, style, interrupt).await
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
    core.set_media_source(Platform::Terminal, Arc::new(LocalFiles));
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
        let inbound = terminal_message(line);
        let images = inbound
            .attachments
            .iter()
            .filter(|a| a.kind == AttachmentKind::Image)
            .count();
        let Some(stream) = core.handle(inbound) else {
            continue;
        };
        render_reply(stream, out, style, &mut interrupt, images).await?;
    }
    Ok(())
}

async fn render_reply<W, I, F>(
    mut stream: crate::domain::ReplyStream,
    out: &mut W,
    style: Style,
    interrupt: &mut I,
    images: usize,
) -> std::io::Result<()>
where
    W: Write,
    I: FnMut() -> F,
    F: Future<Output = ()>,
{
    let mut source: Option<AnswerSource> = None;
    let mut text = MarkdownWriter::new(style == Style::Interactive);
    loop {
        let event = if style == Style::Interactive {
            tokio::select! {
                event = stream.next() => event,
                () = interrupt() => {
                    // Dropping the stream stops the turn; the core stores what arrived as incomplete.
                    drop(stream);
                    text.finish(out)?;
                    writeln!(out, "\n{}", style.warn("⚠ cancelled"))?;
                    cut_short_line(out, style, source.as_ref(), text.wrote_any())?;
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
            // A chat sends no tools, and reasoning is not shown.
            ReplyEvent::Reasoning(_) | ReplyEvent::ToolCall(_) => {}
            ReplyEvent::Delta(delta) => {
                text.push(out, &delta)?;
                out.flush()?;
            }
            ReplyEvent::Finished(completion) => {
                text.finish(out)?;
                if text.wrote_any() && !text.at_line_start() {
                    writeln!(out)?;
                }
                if let Some(s) = completion.source.or(source.take()) {
                    let line = finished_line(&s, completion.usage, images);
                    writeln!(out, "{}", style.dim(&line))?;
                }
                break;
            }
            ReplyEvent::Failed(failure) => {
                text.finish(out)?;
                if text.wrote_any() && !text.at_line_start() {
                    writeln!(out)?;
                }
                writeln!(out, "{}", style.warn(&format!("⚠ {}", failure.message)))?;
                cut_short_line(out, style, source.as_ref(), text.wrote_any())?;
                break;
            }
        }
    }
    out.flush()
}

/// The dim line under a finished answer: who answered, the tokens, and for a turn with images that a
/// vision model looked at them.
fn finished_line(source: &AnswerSource, usage: crate::domain::Usage, images: usize) -> String {
    let mut line = source_line(source);
    if images > 0 {
        line = format!(
            "{line} · vision model ({})",
            crate::text::count(images as u64, "image")
        );
    }
    if usage.total() > 0 {
        line = format!("{line} · {}", crate::text::count(usage.total(), "token"));
    }
    line
}

/// A line typed in the terminal as a message: `/image PATH [question]` attaches an image, and a path
/// pasted alone (of an existing image or text file) attaches that file.
pub fn terminal_message(line: &str) -> Inbound {
    let (path, question) = match line.strip_prefix("/image ") {
        Some(rest) => {
            let rest = rest.trim();
            let (path, question) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            (Some(path), question.trim())
        }
        None if !line.contains(char::is_whitespace) && Path::new(line).is_file() => {
            (Some(line), "")
        }
        None => (None, line),
    };
    let mut inbound = terminal_inbound(question);
    if let Some(path) = path {
        let name = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let kind = match kind_of(name.as_deref(), None) {
            // `/image` means an image; a pasted path is sniffed by the core either way.
            AttachmentKind::Other => AttachmentKind::Image,
            kind => kind,
        };
        inbound.attachments.push(Attachment {
            kind,
            source: path.to_owned(),
            name,
            media_type: None,
            size: None,
        });
    }
    inbound
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::sync::{mpsc, Mutex};

    use super::*;
    use crate::clock::SystemClock;
    use crate::config::Config;
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

    #[tokio::test]
    async fn image_lines_send_a_local_image_and_say_a_vision_model_answered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shot.png");
        std::fs::write(&path, crate::media::sniff::tests::tiny_png()).unwrap();
        let notes = dir.path().join("notes.txt");
        std::fs::write(&notes, "buy milk\n").unwrap();
        let router = ScriptedRouter::new();
        let core = core(router.clone());
        let mut out = Vec::new();
        let input = format!(
            "/image {} what is it?\n{}\n/image {}/missing.png\n",
            path.display(),
            notes.display(),
            dir.path().display()
        );
        run_session(&core, input.as_bytes(), &mut out, Style::Plain)
            .await
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        let requests = router.requests();
        assert_eq!(requests.len(), 2, "{out}");
        assert_eq!(requests[0].prompt.images.len(), 1);
        assert_eq!(requests[0].prompt.images[0].media_type, "image/png");
        assert!(requests[0]
            .prompt
            .content
            .starts_with("what is it?\n\n[image: shot.png · image/png"));
        assert!(out.contains("\u{b7} vision model (1 image)"), "{out}");
        // A pasted path alone sends the file; a text file becomes prompt text.
        assert!(requests[1]
            .prompt
            .content
            .contains("File `notes.txt`:\n```\nbuy milk\n```"));
        // The image is sent again with the follow-up (within media.resend_turns).
        assert_eq!(requests[1].prompt.images.len(), 1);
        assert!(
            out.contains("\u{26a0} Sorry \u{2014} I couldn't download `missing.png`."),
            "{out}"
        );
    }

    #[tokio::test]
    async fn markdown_replies_render_for_the_terminal_not_raw() {
        let core = core(ScriptedRouter::new());
        let input: &[u8] = b"**free tier** and `code`\n";
        let mut plain = Vec::new();
        run_session(&core, input, &mut plain, Style::Plain)
            .await
            .unwrap();
        let plain = String::from_utf8(plain).unwrap();
        assert!(
            plain.contains("\necho: free tier and `code`\n"),
            "piped output drops the markers: {plain:?}"
        );
        let mut ansi = Vec::new();
        let never = || std::future::pending::<()>();
        run_session_with(&core, input, &mut ansi, Style::Interactive, never)
            .await
            .unwrap();
        let ansi = String::from_utf8(ansi).unwrap();
        assert!(
            ansi.contains("echo: \x1b[1mfree tier\x1b[22m and \x1b[36mcode\x1b[39m\n"),
            "a terminal shows bold and code: {ansi:?}"
        );
        assert!(!ansi.contains("**"), "{ansi:?}");
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
