//! A pure, incremental parser for OpenAI-style (OpenRouter) chat-completion streams in Server-Sent Events.
//!
//! Feed it any chunking of the bytes; it yields the same events. It understands `data: {json}` events
//! (multi-line data joined by `\n`), `data: [DONE]`, comment lines (`: OPENROUTER PROCESSING`, ignored),
//! `\n`/`\r\n`/`\r` line ends, an `error` object inside a data event (a mid-stream failure), the first
//! top-level `model`, `choices[0].delta.content`, `delta.reasoning` (or `reasoning_content`),
//! `delta.tool_calls[]`, `finish_reason` and the trailing `usage` chunk.
//! The answer is complete at `[DONE]`, or at end of stream after a `finish_reason`; otherwise it is truncated.

use serde::Deserialize;

use super::item::{self, Common};
use super::lines::{LineSplitter, MAX_LINE_BYTES};
use super::{ParsedEvent, ProviderError, ProviderEvent, StreamParser};
use crate::domain::Usage;
use crate::generation::ToolCallDelta;

/// The largest event (its `data:` lines joined) accepted. A chat-completion chunk is a few hundred bytes
/// and a whole answer sent as one event stays far below a MiB; an event may be as large as one line may
/// be ([`MAX_LINE_BYTES`]), so splitting the same bytes into many short `data:` lines without the blank
/// line that ends the event cannot get past the line cap. Without it, such a stream grew the buffer
/// until the process was killed (277 MB seen).
pub const MAX_EVENT_BYTES: usize = MAX_LINE_BYTES;

/// The SSE chat-stream parser (one per response).
#[derive(Debug, Default)]
pub struct SseParser {
    lines: LineSplitter,
    state: State,
}

#[derive(Debug, Default)]
struct State {
    /// `data:` lines of the event being assembled.
    data: String,
    /// Whether the current event has any `data:` line (an empty `data:` still counts).
    has_data: bool,
    model_seen: bool,
    finish_reason: Option<String>,
    usage: Usage,
    /// `Done` or an error was emitted: everything after is ignored.
    ended: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes the parser holds for unfinished lines and events (allocations): bounded by
    /// [`MAX_LINE_BYTES`] plus [`MAX_EVENT_BYTES`] plus one chunk, whatever the stream sends.
    pub fn buffered_bytes(&self) -> usize {
        self.lines.buffered_bytes() + self.state.data.capacity()
    }

    /// The events of a whole (non-streamed) chat completion body: the same as its stream would give,
    /// `choices[0].message` read as one delta, ending in `Done` (or the error the body carries).
    pub fn whole_answer(body: &[u8]) -> Vec<ParsedEvent> {
        let mut out = Vec::new();
        let mut state = State::default();
        state.on_chunk(body, true, &mut out);
        if !state.ended {
            state.done(&mut out);
        }
        out
    }
}

impl StreamParser for SseParser {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<ParsedEvent>) {
        if self.state.ended {
            return;
        }
        let state = &mut self.state;
        let pushed = self.lines.push(chunk, |line| state.on_line(line, out));
        if pushed.is_err() && !state.ended {
            state.fail(out, ProviderError::Malformed("event line too long".into()));
        }
        if self.state.ended {
            // A failed stream is read no further: give the buffers back at once.
            self.lines.release();
        }
    }

    fn finish(&mut self, out: &mut Vec<ParsedEvent>) {
        if self.state.ended {
            return;
        }
        // A complete last line without the blank line that would dispatch it: be lenient and dispatch.
        if !self.lines.has_partial() && self.state.has_data {
            self.state.dispatch(out);
        }
        if self.state.ended {
            return;
        }
        if self.state.finish_reason.is_some() {
            self.state.done(out);
        } else {
            self.state.fail(out, ProviderError::Truncated);
        }
    }

    fn is_finished(&self) -> bool {
        self.state.ended
    }
}

impl State {
    fn on_line(&mut self, line: &[u8], out: &mut Vec<ParsedEvent>) {
        if self.ended {
            return;
        }
        if line.is_empty() {
            if self.has_data {
                self.dispatch(out);
            }
            return;
        }
        if line[0] == b':' {
            return; // A comment: keep-alive such as `: OPENROUTER PROCESSING`.
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        if field != b"data" {
            return; // `event:`, `id:`, `retry:` carry nothing for chat streams.
        }
        let Ok(value) = std::str::from_utf8(value) else {
            self.fail(
                out,
                ProviderError::Malformed("invalid UTF-8 in event".into()),
            );
            return;
        };
        let joined = self.data.len() + usize::from(self.has_data) + value.len();
        if joined > MAX_EVENT_BYTES {
            self.fail(
                out,
                ProviderError::Malformed(format!("event larger than {MAX_EVENT_BYTES} bytes")),
            );
            return;
        }
        if self.has_data {
            self.data.push('\n');
        }
        self.data.push_str(value);
        self.has_data = true;
    }

    fn dispatch(&mut self, out: &mut Vec<ParsedEvent>) {
        let data = std::mem::take(&mut self.data);
        self.has_data = false;
        let data = data.trim();
        if data == "[DONE]" {
            self.done(out);
            return;
        }
        if data.is_empty() {
            return;
        }
        self.on_chunk(data.as_bytes(), false, out);
    }

    /// One chunk object (a stream's event, or a whole answer when `whole`: then it must have a choice
    /// or an error).
    fn on_chunk(&mut self, data: &[u8], whole: bool, out: &mut Vec<ParsedEvent>) {
        let what = if whole { "answer JSON" } else { "event JSON" };
        let chunk: Chunk = match item::decode(data, what) {
            Ok(c) => c,
            Err(e) => return self.fail(out, e),
        };
        if whole && chunk.choices.is_empty() && chunk.error.is_none() {
            return self.fail(
                out,
                ProviderError::Malformed("answer without choices".into()),
            );
        }
        let choice = chunk.choices.into_iter().next();
        let (delta, finish_reason) = match choice {
            Some(c) => (c.delta.or(c.message).unwrap_or_default(), c.finish_reason),
            None => (Delta::default(), None),
        };
        let common = Common {
            error: chunk.error,
            model: chunk.model,
            reasoning: delta.reasoning.or(delta.reasoning_content),
            content: delta.content,
            tool_calls: delta
                .tool_calls
                .into_iter()
                .enumerate()
                .map(|(at, call)| call.into_delta(at))
                .collect(),
        };
        if let Err(e) = item::pass_on(common, &mut self.model_seen, out) {
            return self.fail(out, e);
        }
        if finish_reason.is_some() {
            self.finish_reason = finish_reason;
        }
        if let Some(usage) = chunk.usage {
            self.usage = Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
            };
        }
    }

    fn done(&mut self, out: &mut Vec<ParsedEvent>) {
        self.ended = true;
        out.push(Ok(ProviderEvent::Done {
            usage: self.usage,
            finish_reason: self.finish_reason.take(),
        }));
    }

    fn fail(&mut self, out: &mut Vec<ParsedEvent>, error: ProviderError) {
        self.ended = true;
        self.data = String::new();
        out.push(Err(error));
    }
}

/// The readable part of an `error` value: `{"message": …}`, a plain string, or the JSON itself.
pub(crate) fn error_message(error: &serde_json::Value) -> String {
    match error {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => match o.get("message") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => error.to_string(),
        },
        other => other.to_string(),
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    /// A whole answer's message, read like one delta.
    #[serde(default)]
    message: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    /// OpenRouter's name for a reasoning piece.
    #[serde(default)]
    reasoning: Option<String>,
    /// DeepSeek's and vLLM's name for it.
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    tool_calls: Vec<WireToolCall>,
}

/// One `delta.tool_calls[]` entry: the first piece of a call has `id` and `function.name`, later
/// pieces only `index` and more `function.arguments`.
#[derive(Deserialize)]
struct WireToolCall {
    /// A streamed piece's call; a whole answer's calls have none and are numbered in order.
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunction>,
}

#[derive(Deserialize)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    /// A string of partial JSON in OpenAI's format; an object from a server that sends whole calls.
    #[serde(default)]
    arguments: Option<serde_json::Value>,
}

impl WireToolCall {
    /// The piece, numbered `at` (its place in the list) when it carries no index.
    fn into_delta(self, at: usize) -> ToolCallDelta {
        let (name, arguments) = match self.function {
            Some(f) => (f.name, f.arguments),
            None => (None, None),
        };
        let arguments = match arguments {
            Some(serde_json::Value::String(s)) => s,
            Some(serde_json::Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        ToolCallDelta {
            index: self
                .index
                .unwrap_or_else(|| u32::try_from(at).unwrap_or(u32::MAX)),
            id: self.id.filter(|i| !i.is_empty()),
            name: name.filter(|n| !n.is_empty()),
            arguments,
        }
    }
}

/// `null` or a missing field as an empty list (some servers send `"tool_calls": null`).
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{parse_all, parser_laws};
    use proptest::prelude::*;

    #[allow(clippy::unnecessary_wraps)] // a ParsedEvent is a Result: parsers yield errors in line
    fn delta(s: &str) -> ParsedEvent {
        Ok(ProviderEvent::Delta(s.into()))
    }

    const HAPPY: &str = ": OPENROUTER PROCESSING\n\n\
data: {\"id\":\"gen-1\",\"model\":\"deepseek/deepseek-r1:free\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Héllo\"},\"finish_reason\":null}]}\n\n\
: OPENROUTER PROCESSING\n\n\
data: {\"id\":\"gen-1\",\"model\":\"deepseek/deepseek-r1:free\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" wörld 🌍\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"gen-1\",\"model\":\"deepseek/deepseek-r1:free\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
data: {\"id\":\"gen-1\",\"model\":\"deepseek/deepseek-r1:free\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15}}\n\n\
data: [DONE]\n\n";

    fn happy_events() -> Vec<ParsedEvent> {
        vec![
            Ok(ProviderEvent::Model("deepseek/deepseek-r1:free".into())),
            delta("Héllo"),
            delta(" wörld 🌍"),
            Ok(ProviderEvent::Done {
                usage: Usage {
                    prompt_tokens: 12,
                    completion_tokens: 3,
                },
                finish_reason: Some("stop".into()),
            }),
        ]
    }

    #[test]
    fn happy_stream_with_keepalives_and_usage() {
        assert_eq!(
            parse_all(SseParser::new(), [HAPPY.as_bytes()]),
            happy_events()
        );
    }

    #[test]
    fn crlf_line_ends() {
        let crlf = HAPPY.replace('\n', "\r\n");
        assert_eq!(
            parse_all(SseParser::new(), [crlf.as_bytes()]),
            happy_events()
        );
    }

    #[test]
    fn mid_stream_error_stops_the_stream() {
        let wire = "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
data: {\"id\":\"x\",\"model\":\"m\",\"error\":{\"code\":\"server_error\",\"message\":\"Provider disconnected, see https://status.example\"},\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"ignored\"}}]}\n\n";
        assert_eq!(
            parse_all(SseParser::new(), [wire.as_bytes()]),
            vec![
                Ok(ProviderEvent::Model("m".into())),
                delta("Hi"),
                Err(ProviderError::MidStream {
                    message: "Provider disconnected, see [url]".into()
                }),
            ]
        );
    }

    #[test]
    fn coded_mid_stream_errors_keep_their_class() {
        let wire = "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
data: {\"error\":{\"code\":429,\"message\":\"Rate limit exceeded: free-models-per-day\"}}\n\n";
        assert_eq!(
            parse_all(SseParser::new(), [wire.as_bytes()]),
            vec![
                Ok(ProviderEvent::Model("m".into())),
                delta("Hi"),
                Err(ProviderError::RateLimited {
                    retry_after: None,
                    reset_at_ms: None,
                    daily: true
                }),
            ]
        );
        let wire = "data: {\"error\":{\"code\":402,\"message\":\"no credits\"}}\n\n";
        assert_eq!(
            parse_all(SseParser::new(), [wire.as_bytes()]),
            vec![Err(ProviderError::PaymentRequired)]
        );
    }

    #[test]
    fn end_without_done_or_finish_reason_is_truncated() {
        let wire = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n";
        assert_eq!(
            parse_all(SseParser::new(), [wire.as_bytes()]),
            vec![delta("Hi"), Err(ProviderError::Truncated)]
        );
        // Cut inside an event: also truncated.
        assert_eq!(
            parse_all(SseParser::new(), [&wire.as_bytes()[..20]]),
            vec![Err(ProviderError::Truncated)]
        );
        assert_eq!(
            parse_all(SseParser::new(), [&b""[..]]),
            vec![Err(ProviderError::Truncated)]
        );
    }

    #[test]
    fn finish_reason_then_eof_is_complete_and_done_alone_is_complete() {
        let wire = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"length\"}]}\n\n";
        assert_eq!(
            parse_all(SseParser::new(), [wire.as_bytes()]),
            vec![
                delta("Hi"),
                Ok(ProviderEvent::Done {
                    usage: Usage::default(),
                    finish_reason: Some("length".into())
                })
            ]
        );
        assert_eq!(
            parse_all(SseParser::new(), [&b"data: [DONE]\n\n"[..]]),
            vec![Ok(ProviderEvent::Done {
                usage: Usage::default(),
                finish_reason: None
            })]
        );
    }

    #[test]
    fn garbage_json_is_malformed() {
        let out = parse_all(SseParser::new(), [&b"data: {nope\n\n"[..]]);
        assert!(matches!(out.as_slice(), [Err(ProviderError::Malformed(_))]));
    }

    #[test]
    fn model_is_reported_once() {
        let wire = "data: {\"model\":\"a\",\"choices\":[]}\n\ndata: {\"model\":\"a\",\"choices\":[]}\n\ndata: [DONE]\n\n";
        let out = parse_all(SseParser::new(), [wire.as_bytes()]);
        assert_eq!(
            out.iter()
                .filter(|e| matches!(e, Ok(ProviderEvent::Model(_))))
                .count(),
            1
        );
    }

    /// Feeds `data:` lines of `line_len` bytes in `chunk_len` chunks, never a blank line, until the parser
    /// fails; returns (bytes fed, most bytes it held, events).
    fn feed_endless_event(line_len: usize, chunk_len: usize) -> (usize, usize, Vec<ParsedEvent>) {
        let mut line = b"data: ".to_vec();
        line.resize(line_len.max(7) - 1, b'x');
        line.push(b'\n');
        // Whole lines only: a wire that ended mid-line would, when cycled, join a line's tail to the
        // next line's head (`da` + `data: …`), a line that is no `data:` line and fills nothing.
        let lines = (chunk_len.max(1) * 64).div_ceil(line.len());
        let wire: Vec<u8> = line.repeat(lines);
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        let (mut fed, mut most) = (0, 0);
        let mut chunks = wire.chunks(chunk_len.max(1)).cycle();
        while !parser.is_finished() {
            let chunk = chunks.next().unwrap();
            parser.feed(chunk, &mut out);
            fed += chunk.len();
            most = most.max(parser.buffered_bytes());
            assert!(fed <= most_fed(line_len, chunk_len), "never refused");
        }
        assert_eq!(parser.buffered_bytes(), 0, "buffers released once failed");
        parser.feed(&wire, &mut out);
        parser.finish(&mut out);
        (fed, most, out)
    }

    /// The most bytes an endless event of `line_len`-byte `data:` lines may take before it is refused:
    /// the event grows by a line's value and its joining newline (`line_len - 6` bytes) per line, so short
    /// lines need more wire bytes than the cap to fill it — what the cap bounds is memory, not traffic.
    fn most_fed(line_len: usize, chunk_len: usize) -> usize {
        let line_len = line_len.max(8);
        (MAX_EVENT_BYTES / (line_len - 6) + 1) * line_len + 2 * chunk_len.max(1)
    }

    #[test]
    fn many_data_lines_without_the_blank_line_are_refused_with_bounded_memory() {
        let (fed, most, out) = feed_endless_event(1024, 64 * 1024);
        assert!(fed <= MAX_EVENT_BYTES + 2 * 64 * 1024, "fed {fed}");
        assert!(most <= 2 * MAX_EVENT_BYTES, "held {most}");
        assert!(
            matches!(out.as_slice(), [Err(ProviderError::Malformed(m))] if m.contains("event larger")),
            "exactly one error, nothing after it: {out:?}"
        );
    }

    #[test]
    fn an_endless_event_of_the_shortest_lines_is_refused_too() {
        // Found by the property test: 8-byte lines grow the event by 2 bytes each.
        let (fed, most, out) = feed_endless_event(8, 513);
        assert!(fed <= most_fed(8, 513), "fed {fed}");
        assert!(most <= 2 * MAX_EVENT_BYTES, "held {most}");
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_large_but_legal_event_still_parses() {
        let big = "é".repeat(MAX_EVENT_BYTES / 8);
        let wire = format!(
            "data: {}\n\ndata: [DONE]\n\n",
            serde_json::json!({"choices": [{"delta": {"content": big}}]})
        );
        let out = parse_all(SseParser::new(), wire.as_bytes().chunks(10_000));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], delta(&big));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(6))]
        /// Whatever the length of the `data:` lines and the chunking, an event that never ends is refused
        /// once it passes the cap, and the parser never holds much more than the cap (6 cases: each feeds
        /// megabytes).
        #[test]
        fn an_endless_event_is_refused_near_the_cap_under_any_chunking(
            line_len in 8usize..20_000,
            chunk_len in 512usize..200_000,
        ) {
            let (fed, most, out) = feed_endless_event(line_len, chunk_len);
            prop_assert!(fed <= most_fed(line_len, chunk_len));
            prop_assert!(most <= 2 * MAX_EVENT_BYTES + 2 * (line_len + chunk_len));
            prop_assert_eq!(out.len(), 1);
            prop_assert!(matches!(&out[0], Err(ProviderError::Malformed(_))));
        }
    }

    proptest! {
        /// Every chunking of the same bytes (including splits inside multi-byte characters and CRLF pairs)
        /// yields exactly the events of the unsplit input.
        #[test]
        fn any_chunking_gives_the_same_events(
            cuts in proptest::collection::vec(0usize..2000, 0..40),
            crlf in any::<bool>(),
            truncate_at in proptest::option::of(0usize..2000),
        ) {
            let mut wire = if crlf { HAPPY.replace('\n', "\r\n") } else { HAPPY.to_string() };
            wire.push_str("data: {\"choices\":[{\"delta\":{\"content\":\"after\"}}]}\n\n");
            let mut bytes = wire.into_bytes();
            if let Some(t) = truncate_at {
                bytes.truncate(t % (bytes.len() + 1));
            }
            let whole = parse_all(SseParser::new(), [bytes.as_slice()]);
            prop_assert_eq!(parse_all(SseParser::new(), parser_laws::chunks(&bytes, cuts)), whole);
        }

        /// Whatever the bytes, the parser never panics and the output ends in exactly one terminal item
        /// (`Done` or an error), which is the last one.
        #[test]
        fn any_bytes_end_in_exactly_one_terminal_item(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            prefix in proptest::sample::select(vec!["", "data: ", "{\"done\":", "data: [DONE]\n\n", "{\"error\":\"x\"}\n"]),
        ) {
            let mut input = prefix.as_bytes().to_vec();
            input.extend_from_slice(&bytes);
            let out = parse_all(SseParser::new(), [input.as_slice()]);
            parser_laws::ends_in_one_terminal_item(&out)?;
        }
    }
}

#[cfg(test)]
mod tool_and_reasoning_tests {
    use super::*;
    use crate::providers::{parse_all, parser_laws};
    use proptest::prelude::*;

    /// Reasoning (OpenRouter's `reasoning`, DeepSeek's `reasoning_content`), then one tool call whose
    /// arguments come in three pieces, finishing with `tool_calls`.
    const TOOLS: &str = "data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"reasoning\":\"Let me \"},\"finish_reason\":null}]}\n\n\
data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"think.\"},\"finish_reason\":null}]}\n\n\
data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n\
data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]},\"finish_reason\":null}]}\n\n\
data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]},\"finish_reason\":null}]}\n\n\
data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":null},\"finish_reason\":\"tool_calls\"}]}\n\n\
data: [DONE]\n\n";

    #[allow(clippy::unnecessary_wraps)] // a ParsedEvent is a Result: parsers yield errors in line
    fn piece(index: u32, id: Option<&str>, name: Option<&str>, arguments: &str) -> ParsedEvent {
        Ok(ProviderEvent::ToolCall(ToolCallDelta {
            index,
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
            arguments: arguments.to_owned(),
        }))
    }

    fn tools_events() -> Vec<ParsedEvent> {
        vec![
            Ok(ProviderEvent::Model("m".into())),
            Ok(ProviderEvent::Reasoning("Let me ".into())),
            Ok(ProviderEvent::Reasoning("think.".into())),
            piece(0, Some("call_1"), Some("get_weather"), ""),
            piece(0, None, None, "{\"city\":"),
            piece(0, None, None, "\"Paris\"}"),
            Ok(ProviderEvent::Done {
                usage: Usage::default(),
                finish_reason: Some("tool_calls".into()),
            }),
        ]
    }

    #[test]
    fn reasoning_and_tool_call_pieces_in_order() {
        assert_eq!(
            parse_all(SseParser::new(), [TOOLS.as_bytes()]),
            tools_events()
        );
    }

    proptest! {
        /// Tool-call and reasoning streams parse the same under any chunking, cut short or whole.
        #[test]
        fn any_chunking_gives_the_same_tool_events(
            cuts in proptest::collection::vec(0usize..2000, 0..40),
            truncate_at in proptest::option::of(0usize..2000),
        ) {
            let mut bytes = TOOLS.as_bytes().to_vec();
            if let Some(t) = truncate_at {
                bytes.truncate(t % (bytes.len() + 1));
            }
            let whole = parse_all(SseParser::new(), [bytes.as_slice()]);
            if truncate_at.is_none() {
                prop_assert_eq!(&whole, &tools_events());
            }
            let out = parse_all(SseParser::new(), parser_laws::chunks(&bytes, cuts));
            parser_laws::ends_in_one_terminal_item(&out)?;
            prop_assert_eq!(out, whole);
        }
    }
}
