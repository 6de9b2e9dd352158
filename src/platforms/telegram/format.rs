//! The model's Markdown → Telegram's HTML subset (`b`, `i`, `s`, `code`, `pre`, `a`, `blockquote`), with
//! everything else escaped, and the cut of a long reply into messages that fit Telegram's 4096 limit.
//!
//! HTML rather than MarkdownV2: MarkdownV2 rejects a message for any unescaped punctuation, and model
//! output is full of it. In HTML only `<`, `>` and `&` need escaping, and raw HTML in the model's output
//! (hostile or not) is shown as text, never interpreted.

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

use crate::platforms::render::{split_weighted, utf16_len};

/// Telegram's limit on a message's text, in UTF-16 code units.
pub const TELEGRAM_MESSAGE_LIMIT: usize = 4096;

/// Markdown is cut into pieces of this many units before rendering, each character weighed by what it
/// becomes in HTML ([`html_weight`]: `<` as the 4 units of `&lt;`, the backticks of a code block as
/// its tags), so code full of `<`, `>` and `&` is cut by the length Telegram gets, not its source
/// length. The margin below 4096 absorbs what the weights miss (a blockquote's or a link's tags,
/// italics); a piece whose HTML still exceeds the limit is cut again.
pub const MARKDOWN_CHUNK: usize = 4000;

/// Re-cutting a piece whose HTML is too long stops after this many rounds (each at least shrinks the
/// piece by a tenth); what still does not fit is sent as plain text.
const MAX_RECUTS: usize = 6;

/// One message of a reply: its Markdown source and what to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The Markdown this message shows (also the plain-text fallback).
    pub markdown: String,
    /// The rendered HTML, or `None` when it must go as plain text.
    pub html: Option<String>,
}

/// Cuts `markdown` into messages whose rendered HTML fits Telegram's limit. Boundaries before the last
/// `MARKDOWN_CHUNK`-sized piece are stable as text is appended, so streaming can roll over.
pub fn telegram_chunks(markdown: &str) -> Vec<Chunk> {
    let mut out = Vec::new();
    for piece in split_weighted(markdown, MARKDOWN_CHUNK, html_weight) {
        fit(piece, MARKDOWN_CHUNK, 0, &mut out);
    }
    out
}

fn fit(piece: String, limit: usize, round: usize, out: &mut Vec<Chunk>) {
    let html = markdown_to_html(&piece);
    let len = utf16_len(&html);
    if len <= TELEGRAM_MESSAGE_LIMIT {
        out.push(Chunk {
            markdown: piece,
            html: Some(html),
        });
        return;
    }
    if round >= MAX_RECUTS {
        out.push(Chunk {
            markdown: piece,
            html: None,
        });
        return;
    }
    // Shrink in proportion to the overshoot, with a tenth to spare.
    let smaller = (limit * TELEGRAM_MESSAGE_LIMIT / len) * 9 / 10;
    for sub in split_weighted(&piece, smaller, html_weight) {
        fit(sub, smaller, round + 1, out);
    }
}

/// About how many UTF-16 units `c` becomes in Telegram HTML: its escape (see [`escape_html`]), or its
/// share of the tags the Markdown it marks up turns into (`**b**` → `<b>b</b>`, a backtick of a
/// fence → `<pre><code class="…">`/`</code></pre>`). Characters that are mostly literal in code
/// (`_`, brackets) weigh what they are; the links and italics they sometimes mark up fit in the
/// margin of [`MARKDOWN_CHUNK`].
fn html_weight(c: char) -> usize {
    match c {
        '&' => 5,
        '<' | '>' => 4,
        '"' => 6,
        '`' => 7,
        '*' | '~' => 2,
        c => c.len_utf16(),
    }
}

/// Whether `markdown` shows no text at all once rendered (`>`, an empty code block, `[](https://…)`):
/// Telegram refuses such a message ("message text is empty").
pub fn shows_nothing(markdown: &str) -> bool {
    html_shows_nothing(&markdown_to_html(markdown))
}

/// Whether Telegram HTML shows no text once its tags are parsed away.
pub fn html_shows_nothing(html: &str) -> bool {
    let mut in_tag = false;
    !html.chars().any(|c| match c {
        '<' => {
            in_tag = true;
            false
        }
        '>' if in_tag => {
            in_tag = false;
            false
        }
        c => !in_tag && !c.is_whitespace(),
    })
}

/// Escapes text for Telegram HTML.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes Markdown punctuation so `s` shows literally (used for notices placed into a reply).
pub fn escape_markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_punctuation() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The Markdown as it reads in plain text (the fallback when Telegram rejects the HTML): the source as
/// written, except that backslash escapes and entity references outside code are resolved, so the
/// `\.` that [`escape_markdown`] puts into notices never shows. Code keeps its backslashes.
pub fn markdown_plain(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len());
    let mut copied = 0;
    let mut in_code_block = false;
    for (event, range) in Parser::new_ext(markdown, OPTIONS).into_offset_iter() {
        match event {
            Event::Start(Tag::CodeBlock(_)) => in_code_block = true,
            Event::End(TagEnd::CodeBlock) => in_code_block = false,
            Event::Text(text) if !in_code_block && range.start >= copied => {
                // The parser skips an escaping backslash: it sits just before the escaped text.
                let escaped = range.start > copied
                    && markdown.as_bytes()[range.start - 1] == b'\\'
                    && text.starts_with(|c: char| c.is_ascii_punctuation());
                if escaped || markdown.get(range.clone()) != Some(&*text) {
                    out.push_str(&markdown[copied..range.start - usize::from(escaped)]);
                    out.push_str(&text);
                    copied = range.end;
                }
            }
            _ => {}
        }
    }
    out.push_str(&markdown[copied..]);
    out
}

/// The Markdown extensions the model's output is read with.
const OPTIONS: Options = Options::ENABLE_STRIKETHROUGH.union(Options::ENABLE_TASKLISTS);

/// Renders Markdown to Telegram's HTML subset. Headings become bold lines, list items `• ` lines
/// (numbered lists keep numbers), tables and raw HTML are shown as text.
pub fn markdown_to_html(markdown: &str) -> String {
    let mut r = Renderer::default();
    for event in Parser::new_ext(markdown, OPTIONS) {
        r.event(event);
    }
    r.out
}

#[derive(Default)]
struct Renderer {
    out: String,
    /// Newlines owed before the next content (block separation, never trailing).
    pending: usize,
    /// Open lists: the next number for ordered ones.
    lists: Vec<Option<u64>>,
    quote_depth: usize,
    /// For each open link or image: whether an `<a>` was emitted (unsafe schemes show text only).
    links: Vec<bool>,
}

impl Renderer {
    fn write(&mut self, s: &str) {
        if !self.out.is_empty() {
            for _ in 0..self.pending {
                self.out.push('\n');
            }
        }
        self.pending = 0;
        self.out.push_str(s);
    }

    fn close(&mut self, s: &str) {
        self.pending = 0;
        self.out.push_str(s);
    }

    fn block_break(&mut self, n: usize) {
        self.pending = self.pending.max(n);
    }

    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(t) => self.write(&escape_html(&t)),
            Event::Code(t) | Event::InlineMath(t) => {
                self.write(&format!("<code>{}</code>", escape_html(&t)));
            }
            Event::DisplayMath(t) => {
                self.write(&format!("<pre>{}</pre>", escape_html(&t)));
                self.block_break(2);
            }
            Event::Html(t) | Event::InlineHtml(t) => self.write(&escape_html(&t)),
            Event::FootnoteReference(t) => self.write(&format!("[{}]", escape_html(&t))),
            Event::SoftBreak | Event::HardBreak => self.write("\n"),
            Event::Rule => {
                self.write("———");
                self.block_break(2);
            }
            Event::TaskListMarker(done) => self.write(if done { "☑ " } else { "☐ " }),
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Paragraph | Tag::HtmlBlock | Tag::MetadataBlock(_) => {}
            Tag::Heading { .. } => self.write("<b>"),
            Tag::BlockQuote(_) => {
                if self.quote_depth == 0 {
                    self.write("<blockquote>");
                }
                self.quote_depth += 1;
            }
            Tag::CodeBlock(kind) => {
                let lang = match kind {
                    CodeBlockKind::Fenced(info) => info
                        .split_whitespace()
                        .next()
                        .filter(|l| {
                            l.len() <= 32
                                && l.chars()
                                    .all(|c| c.is_ascii_alphanumeric() || "+-_#.".contains(c))
                        })
                        .map(str::to_owned),
                    CodeBlockKind::Indented => None,
                };
                match lang {
                    Some(l) => self.write(&format!("<pre><code class=\"language-{l}\">")),
                    None => self.write("<pre><code>"),
                }
            }
            Tag::List(first) => {
                if !self.lists.is_empty() {
                    self.block_break(1);
                }
                self.lists.push(first);
            }
            Tag::Item => {
                self.block_break(1);
                let depth = self.lists.len().saturating_sub(1);
                let bullet = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        let b = format!("{n}. ");
                        *n += 1;
                        b
                    }
                    _ => "• ".to_owned(),
                };
                self.write(&format!("{}{bullet}", "  ".repeat(depth)));
            }
            Tag::Emphasis => self.write("<i>"),
            Tag::Strong => self.write("<b>"),
            Tag::Strikethrough => self.write("<s>"),
            Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. } => {
                let safe = ["http://", "https://", "tg://", "mailto:"]
                    .iter()
                    .any(|s| dest_url.to_ascii_lowercase().starts_with(s));
                if safe {
                    self.write(&format!("<a href=\"{}\">", escape_html(&dest_url)));
                }
                self.links.push(safe);
            }
            Tag::FootnoteDefinition(label) => {
                self.block_break(2);
                self.write(&format!("[{}]: ", escape_html(&label)));
            }
            Tag::Table(_)
            | Tag::TableHead
            | Tag::TableRow
            | Tag::TableCell
            | Tag::DefinitionList
            | Tag::DefinitionListTitle
            | Tag::DefinitionListDefinition
            | Tag::Superscript
            | Tag::Subscript => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph => self.block_break(if self.lists.is_empty() { 2 } else { 1 }),
            TagEnd::Heading(_) => {
                self.close("</b>");
                self.block_break(2);
            }
            TagEnd::BlockQuote(_) => {
                self.quote_depth = self.quote_depth.saturating_sub(1);
                if self.quote_depth == 0 {
                    self.close("</blockquote>");
                    self.block_break(2);
                }
            }
            TagEnd::CodeBlock => {
                if self.out.ends_with('\n') {
                    self.out.pop();
                }
                self.close("</code></pre>");
                self.block_break(2);
            }
            TagEnd::List(_) => {
                self.lists.pop();
                self.block_break(if self.lists.is_empty() { 2 } else { 1 });
            }
            TagEnd::Item => self.block_break(1),
            TagEnd::Emphasis => self.close("</i>"),
            TagEnd::Strong => self.close("</b>"),
            TagEnd::Strikethrough => self.close("</s>"),
            // The guard pops the link either way; only links that opened an <a> close one.
            TagEnd::Link | TagEnd::Image if self.links.pop() == Some(true) => {
                self.close("</a>");
            }
            TagEnd::HtmlBlock | TagEnd::FootnoteDefinition => self.block_break(2),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn renders_the_subset() {
        let html = markdown_to_html(
            "# Title\n\nSome **bold**, *it*, ~~gone~~ and `x<y`.\n\n- one\n- two\n\n1. a\n2. b\n\n> quoted\n\n```rust\nfn main() {}\n```\n\n[link](https://e.org/?a=1&b=2) [bad](javascript:alert(1))",
        );
        assert_eq!(
            html,
            "<b>Title</b>\n\nSome <b>bold</b>, <i>it</i>, <s>gone</s> and <code>x&lt;y</code>.\n\n\
             • one\n• two\n\n1. a\n2. b\n\n<blockquote>quoted</blockquote>\n\n\
             <pre><code class=\"language-rust\">fn main() {}</code></pre>\n\n\
             <a href=\"https://e.org/?a=1&amp;b=2\">link</a> bad"
        );
    }

    #[test]
    fn raw_html_and_broken_markup_are_escaped() {
        let html = markdown_to_html("<b>x</b> <script>alert(1)</script> **unclosed & <i>");
        assert!(
            !html.contains("<script>") && !html.contains("<b>x"),
            "{html}"
        );
        assert!(
            html.contains("&lt;script&gt;") && html.contains("&amp;"),
            "{html}"
        );
        let html = markdown_to_html("```\n<tag> & stuff");
        assert_eq!(html, "<pre><code>&lt;tag&gt; &amp; stuff</code></pre>");
    }

    #[test]
    fn plain_text_resolves_escapes_but_keeps_code_and_markup() {
        let notice = format!(
            "_{}_\n\n**Bold** & `a\\b` \\* x &amp; y\n\n```\nprintln!(\"\\n\");\n```",
            escape_markdown("Free models are busy; answering with the paid tier (3.5 s).")
        );
        assert_eq!(
            markdown_plain(&notice),
            "_Free models are busy; answering with the paid tier (3.5 s)._\n\n**Bold** & `a\\b` * x & y\n\n```\nprintln!(\"\\n\");\n```"
        );
        assert_eq!(markdown_plain("plain words."), "plain words.");
    }

    #[test]
    fn hostile_expansion_is_cut_until_it_fits() {
        let md = "<".repeat(9000);
        let chunks = telegram_chunks(&md);
        assert!(chunks.len() >= 9);
        for c in &chunks {
            assert!(utf16_len(c.html.as_deref().unwrap()) <= TELEGRAM_MESSAGE_LIMIT);
        }
        assert_eq!(
            chunks
                .iter()
                .map(|c| c.markdown.as_str())
                .collect::<String>(),
            md
        );
    }

    #[test]
    fn ten_thousand_chars_with_code_are_three_messages() {
        let md = sample_reply(10_000);
        let chunks = telegram_chunks(&md);
        assert_eq!(chunks.len(), 3);
        for c in &chunks {
            assert!(utf16_len(c.html.as_deref().unwrap()) <= TELEGRAM_MESSAGE_LIMIT);
        }
        // Tag-dense input still fits, in more messages.
        let dense = "```py\nx\n```\n".repeat(800);
        for c in telegram_chunks(&dense) {
            assert!(utf16_len(c.html.as_deref().unwrap()) <= TELEGRAM_MESSAGE_LIMIT);
        }
    }

    /// A reply of `len` bytes: prose paragraphs and a few long code blocks.
    pub(crate) fn sample_reply(len: usize) -> String {
        let mut md = String::new();
        let mut n = 0;
        while md.len() < len {
            n += 1;
            md.push_str("Here is how it works, step by step. The **next** part is the code.\n\n");
            md.push_str("```rust\n");
            for i in 0..30 {
                let _ = writeln!(md, "let value_{n}_{i} = compute({i});");
            }
            md.push_str("```\n\n");
        }
        md.truncate(len);
        md
    }

    /// Tags only from the allowed set, every one closed in order.
    fn tags_balanced(html: &str) -> bool {
        let mut stack = Vec::new();
        let mut rest = html;
        while let Some(i) = rest.find('<') {
            let Some(j) = rest[i..].find('>') else {
                return false;
            };
            let tag = &rest[i + 1..i + j];
            rest = &rest[i + j + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop() != Some(name.to_owned()) {
                    return false;
                }
            } else {
                let name = tag.split(' ').next().unwrap_or("").to_owned();
                if !["b", "i", "s", "code", "pre", "a", "blockquote"].contains(&name.as_str()) {
                    return false;
                }
                stack.push(name);
            }
        }
        stack.is_empty()
    }

    proptest! {
        #[test]
        fn any_input_gives_balanced_allowed_tags(md in "[a-z <>&*_`~#\\[\\]()>\n-]{0,200}") {
            let html = markdown_to_html(&md);
            prop_assert!(tags_balanced(&html), "{:?} -> {:?}", md, html);
        }
    }
}
