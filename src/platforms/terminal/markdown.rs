//! Markdown for the terminal: the core and the models answer in Markdown (`**free tier**`, `` `code` ``),
//! which a terminal shows raw. [`MarkdownWriter`] renders it as the text streams in — bold, italic and
//! code as ANSI styles on a terminal, the markers dropped (code keeps its backticks) when output is
//! plain — holding back only what could still change meaning: the rest of a line after a markup
//! character, and a line's first word (it may be a heading or a code fence).

use std::fmt::Write as _;

use std::io::Write;

use pulldown_cmark::{Event, Parser, Tag, TagEnd};

/// Characters that may start inline markup: text before the first of them renders as itself.
const MARKUP: &[char] = &['*', '_', '`', '[', ']', '<', '\\', '!', '&'];

/// Renders streamed Markdown to a terminal, line by line. (Four flags of one small line-state machine;
/// an enum of their combinations would read worse.)
#[allow(clippy::struct_excessive_bools)]
pub struct MarkdownWriter {
    ansi: bool,
    /// Received but not yet written (the tail of the current line).
    pending: String,
    /// Part of the current line is already written (its block prefix is decided).
    line_started: bool,
    /// Inside a fenced code block: lines are written verbatim.
    in_code: bool,
    wrote_any: bool,
    at_line_start: bool,
}

impl MarkdownWriter {
    /// A writer with ANSI styles (`ansi`, for a terminal) or plain text.
    pub fn new(ansi: bool) -> Self {
        Self {
            ansi,
            pending: String::new(),
            line_started: false,
            in_code: false,
            wrote_any: false,
            at_line_start: true,
        }
    }

    /// Whether any text has been written.
    pub fn wrote_any(&self) -> bool {
        self.wrote_any
    }

    /// Whether the output ends at the start of a line (nothing written, or a newline last).
    pub fn at_line_start(&self) -> bool {
        self.at_line_start
    }

    /// Takes the next piece of the reply and writes what can already be rendered.
    pub fn push<W: Write>(&mut self, out: &mut W, delta: &str) -> std::io::Result<()> {
        self.pending.push_str(delta);
        while let Some(newline) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=newline).collect();
            let rendered = self.render_line(line.trim_end_matches('\n'));
            self.write(out, &rendered)?;
            self.write(out, "\n")?;
            self.line_started = false;
        }
        self.write_safe_prefix(out)
    }

    /// The reply ended (or was cut): writes whatever is still held back.
    pub fn finish<W: Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rest = std::mem::take(&mut self.pending);
        let rendered = self.render_line(&rest);
        self.line_started = true;
        self.write(out, &rendered)
    }

    fn write<W: Write>(&mut self, out: &mut W, text: &str) -> std::io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        self.wrote_any = true;
        self.at_line_start = text.ends_with('\n');
        out.write_all(text.as_bytes())
    }

    /// Writes the part of an unfinished line whose rendering cannot change any more.
    fn write_safe_prefix<W: Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        let mut written = String::new();
        if !self.line_started {
            let trimmed = self.pending.trim_start();
            // The first word decides the block: a fence or heading waits for the whole line.
            let Some(word_end) = trimmed.find(' ') else {
                return Ok(());
            };
            if trimmed.starts_with(['#', '`', '~']) || (self.in_code && word_end == 0) {
                return Ok(());
            }
            if self.in_code {
                written = std::mem::take(&mut self.pending);
            } else {
                let prefix_len = block_prefix_len(&self.pending);
                written = self.pending.drain(..prefix_len).collect();
            }
            self.line_started = true;
        }
        if self.in_code {
            written.push_str(&std::mem::take(&mut self.pending));
        } else {
            let safe = self.pending.find(MARKUP).unwrap_or(self.pending.len());
            written.extend(self.pending.drain(..safe));
        }
        self.write(out, &written)
    }

    /// Renders one line (without its newline), given whether its start is already written.
    fn render_line(&mut self, line: &str) -> String {
        let trimmed = line.trim_start();
        if !self.line_started && (trimmed.starts_with("```") || trimmed.starts_with("~~~")) {
            self.in_code = !self.in_code;
            return self.dim(line);
        }
        if self.in_code {
            return line.to_owned();
        }
        if self.line_started {
            return render_inline(line, self.ansi);
        }
        let hashes = trimmed.chars().take_while(|&c| c == '#').count();
        let after = &trimmed[hashes..];
        if (1..=6).contains(&hashes) && (after.is_empty() || after.starts_with(' ')) {
            let title = render_inline(after.trim(), self.ansi);
            return if self.ansi {
                format!("\x1b[1m{title}\x1b[22m")
            } else {
                title
            };
        }
        let prefix_len = block_prefix_len(line);
        format!(
            "{}{}",
            &line[..prefix_len],
            render_inline(&line[prefix_len..], self.ansi)
        )
    }

    fn dim(&self, text: &str) -> String {
        if self.ansi {
            format!("\x1b[2m{text}\x1b[22m")
        } else {
            text.to_owned()
        }
    }
}

/// The length of a line's indentation plus its list or quote marker (`- `, `* `, `+ `, `> `, `12. `,
/// `3) `), written as it is.
fn block_prefix_len(line: &str) -> usize {
    let indent = line.len() - line.trim_start().len();
    let rest = &line[indent..];
    for marker in ["- ", "* ", "+ ", "> "] {
        if rest.starts_with(marker) {
            return indent + marker.len();
        }
    }
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && (rest[digits..].starts_with(". ") || rest[digits..].starts_with(") ")) {
        return indent + digits + 2;
    }
    indent
}

/// Renders inline Markdown: bold, italic, code, links (`text (url)`); ANSI styles or plain text.
pub fn render_inline(text: &str, ansi: bool) -> String {
    let mut out = String::new();
    let mut links: Vec<(usize, String)> = Vec::new();
    for event in Parser::new(text) {
        match event {
            Event::Text(t) | Event::Html(t) | Event::InlineHtml(t) => out.push_str(&t),
            Event::Code(code) if ansi => {
                let _ = write!(out, "\x1b[36m{code}\x1b[39m");
            }
            Event::Code(code) => {
                let _ = write!(out, "`{code}`");
            }
            Event::Start(Tag::Strong) if ansi => out.push_str("\x1b[1m"),
            Event::End(TagEnd::Strong) if ansi => out.push_str("\x1b[22m"),
            Event::Start(Tag::Emphasis) if ansi => out.push_str("\x1b[3m"),
            Event::End(TagEnd::Emphasis) if ansi => out.push_str("\x1b[23m"),
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                links.push((out.len(), dest_url.into_string()));
            }
            Event::End(TagEnd::Link | TagEnd::Image) => {
                if let Some((start, url)) = links.pop() {
                    if !url.is_empty() && out[start..] != url {
                        let _ = write!(out, " ({url})");
                    }
                }
            }
            Event::Rule => out.push_str("---"),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(ansi: bool, deltas: &[&str]) -> String {
        let mut w = MarkdownWriter::new(ansi);
        let mut out = Vec::new();
        for d in deltas {
            w.push(&mut out, d).unwrap();
        }
        w.finish(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn bold_italic_and_code_become_ansi_on_a_terminal_and_plain_otherwise() {
        let text = "**free tier** is *fast* and `cheap`";
        assert_eq!(
            render(true, &[text]),
            "\x1b[1mfree tier\x1b[22m is \x1b[3mfast\x1b[23m and \x1b[36mcheap\x1b[39m"
        );
        assert_eq!(render(false, &[text]), "free tier is fast and `cheap`");
    }

    #[test]
    fn markup_split_across_deltas_renders_the_same_as_whole() {
        let text = "- **free tier** — 1 request today\n## Usage\nplain words, then a [link](https://x.org)\n";
        let whole = render(true, &[text]);
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(render(true, &pieces), whole);
        assert_eq!(
            whole,
            "- \x1b[1mfree tier\x1b[22m — 1 request today\n\x1b[1mUsage\x1b[22m\nplain words, then a link (https://x.org)\n"
        );
    }

    #[test]
    fn code_fences_are_verbatim_and_plain_text_streams_before_the_line_ends() {
        assert_eq!(
            render(false, &["```rust\nlet a = **b**;\n```\n**x**"]),
            "```rust\nlet a = **b**;\n```\nx"
        );
        // Text without markup is written as it arrives, not held to the end of the line.
        let mut w = MarkdownWriter::new(true);
        let mut out = Vec::new();
        w.push(&mut out, "The answer is").unwrap();
        w.push(&mut out, " forty, **two**").unwrap();
        assert_eq!(String::from_utf8_lossy(&out), "The answer is forty, ");
    }
}
