//! A pure, incremental parser for Ollama `/api/chat` streams: newline-delimited JSON.
//!
//! Each line is `{"model", "message": {"role", "content"}, "done": false}`; the last has `"done": true`,
//! `done_reason`, `prompt_eval_count` and `eval_count`. `{"error": "…"}` (also mid-stream) is a failure.
//! `message.thinking` is reasoning; `message.tool_calls` arrive whole (arguments an object) and are
//! given the ids `call_0`, `call_1`, … in stream order, as Ollama has none.
//! A stream that ends without `"done": true` is truncated. Any chunking yields the same events.

use serde::Deserialize;

use super::item::{self, Common};
use super::lines::LineSplitter;
use super::{ParsedEvent, ProviderError, ProviderEvent, StreamParser};
use crate::domain::Usage;
use crate::generation::ToolCallDelta;

/// The NDJSON chat-stream parser (one per response).
#[derive(Debug, Default)]
pub struct NdjsonParser {
    lines: LineSplitter,
    state: State,
}

#[derive(Debug, Default)]
struct State {
    model_seen: bool,
    /// Tool calls seen so far: the next one's index and id number.
    tool_calls: u32,
    ended: bool,
}

impl NdjsonParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held for the unfinished line (its allocation): bounded by
    /// [`super::lines::MAX_LINE_BYTES`] plus one chunk, whatever the stream sends.
    pub fn buffered_bytes(&self) -> usize {
        self.lines.buffered_bytes()
    }
}

impl StreamParser for NdjsonParser {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<ParsedEvent>) {
        if self.state.ended {
            return;
        }
        let state = &mut self.state;
        let pushed = self.lines.push(chunk, |line| state.on_line(line, out));
        if pushed.is_err() && !state.ended {
            state.fail(out, ProviderError::Malformed("line too long".into()));
        }
        if self.state.ended {
            // A failed stream is read no further: give the buffer back at once.
            self.lines.release();
        }
    }

    fn finish(&mut self, out: &mut Vec<ParsedEvent>) {
        if self.state.ended {
            return;
        }
        // The final object may lack its newline; a cut-off one fails to parse and counts as truncation.
        let last = self.lines.take_partial();
        if !last.is_empty() && serde_json::from_slice::<serde_json::Value>(&last).is_ok() {
            self.state.on_line(&last, out);
        }
        if !self.state.ended {
            self.state.fail(out, ProviderError::Truncated);
        }
    }

    fn is_finished(&self) -> bool {
        self.state.ended
    }
}

impl State {
    fn on_line(&mut self, line: &[u8], out: &mut Vec<ParsedEvent>) {
        if self.ended || line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let obj: Line = match item::decode(line, "NDJSON line") {
            Ok(o) => o,
            Err(e) => return self.fail(out, e),
        };
        let message = obj.message.unwrap_or_default();
        let tool_calls = message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                let index = self.tool_calls;
                self.tool_calls += 1;
                c.into_delta(index)
            })
            .collect();
        let common = Common {
            error: obj.error,
            model: obj.model,
            reasoning: message.thinking,
            content: message.content,
            tool_calls,
        };
        if let Err(e) = item::pass_on(common, &mut self.model_seen, out) {
            return self.fail(out, e);
        }
        if obj.done {
            self.ended = true;
            out.push(Ok(ProviderEvent::Done {
                usage: Usage {
                    prompt_tokens: obj.prompt_eval_count.unwrap_or(0),
                    completion_tokens: obj.eval_count.unwrap_or(0),
                },
                finish_reason: obj.done_reason,
            }));
        }
    }

    fn fail(&mut self, out: &mut Vec<ParsedEvent>, error: ProviderError) {
        self.ended = true;
        out.push(Err(error));
    }
}

/// One NDJSON line of `/api/chat`; also the whole body of a non-streamed answer.
#[derive(Deserialize)]
pub(crate) struct Line {
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) message: Option<Message>,
    #[serde(default)]
    pub(crate) done: bool,
    #[serde(default)]
    pub(crate) done_reason: Option<String>,
    #[serde(default)]
    pub(crate) prompt_eval_count: Option<u64>,
    #[serde(default)]
    pub(crate) eval_count: Option<u64>,
    #[serde(default)]
    pub(crate) error: Option<serde_json::Value>,
}

/// The message part of a [`Line`].
#[derive(Deserialize, Default)]
pub(crate) struct Message {
    #[serde(default)]
    pub(crate) content: Option<String>,
    #[serde(default)]
    pub(crate) thinking: Option<String>,
    #[serde(default)]
    pub(crate) tool_calls: Option<Vec<OllamaToolCall>>,
}

/// A whole tool call in Ollama's format: `{"function": {"name", "arguments": {…}}}`.
#[derive(Deserialize)]
pub(crate) struct OllamaToolCall {
    pub(crate) function: OllamaFunction,
}

/// The function part of an [`OllamaToolCall`].
#[derive(Deserialize)]
pub(crate) struct OllamaFunction {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) arguments: serde_json::Value,
}

impl OllamaToolCall {
    /// The call as one whole piece with index `index` and id `call_<index>`; the arguments object as
    /// JSON text (OpenAI's form).
    pub(crate) fn into_delta(self, index: u32) -> ToolCallDelta {
        let arguments = match self.function.arguments {
            serde_json::Value::Null => "{}".to_owned(),
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        ToolCallDelta {
            index,
            id: Some(format!("call_{index}")),
            name: Some(self.function.name),
            arguments,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{parse_all, parser_laws};
    use proptest::prelude::*;

    const HAPPY: &str = "{\"model\":\"gpt-oss:120b\",\"created_at\":\"2025-01-01T00:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"Grüß\"},\"done\":false}\n\
{\"model\":\"gpt-oss:120b\",\"created_at\":\"2025-01-01T00:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\" dich 🦀\"},\"done\":false}\n\
{\"model\":\"gpt-oss:120b\",\"created_at\":\"2025-01-01T00:00:01Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"total_duration\":1,\"load_duration\":1,\"prompt_eval_count\":26,\"prompt_eval_duration\":1,\"eval_count\":2,\"eval_duration\":1}\n";

    fn happy_events() -> Vec<ParsedEvent> {
        vec![
            Ok(ProviderEvent::Model("gpt-oss:120b".into())),
            Ok(ProviderEvent::Delta("Grüß".into())),
            Ok(ProviderEvent::Delta(" dich 🦀".into())),
            Ok(ProviderEvent::Done {
                usage: Usage {
                    prompt_tokens: 26,
                    completion_tokens: 2,
                },
                finish_reason: Some("stop".into()),
            }),
        ]
    }

    #[test]
    fn happy_stream_with_usage() {
        assert_eq!(
            parse_all(NdjsonParser::new(), [HAPPY.as_bytes()]),
            happy_events()
        );
        // Without the final newline, still complete.
        assert_eq!(
            parse_all(NdjsonParser::new(), [HAPPY.trim_end().as_bytes()]),
            happy_events()
        );
    }

    #[test]
    fn coded_errors_keep_their_class() {
        let wire = "{\"model\":\"m\",\"message\":{\"content\":\"a\"},\"done\":false}\n{\"error\":{\"code\":429,\"message\":\"too many requests\"}}\n";
        assert_eq!(
            parse_all(NdjsonParser::new(), [wire.as_bytes()]),
            vec![
                Ok(ProviderEvent::Model("m".into())),
                Ok(ProviderEvent::Delta("a".into())),
                Err(ProviderError::RateLimited {
                    retry_after: None,
                    reset_at_ms: None,
                    daily: false
                })
            ]
        );
        let wire = "{\"error\":{\"code\":401,\"message\":\"unauthorized\"}}\n";
        assert_eq!(
            parse_all(NdjsonParser::new(), [wire.as_bytes()]),
            vec![Err(ProviderError::Unauthorized { status: 401 })]
        );
    }

    #[test]
    fn errors_at_start_and_mid_stream() {
        assert_eq!(
            parse_all(
                NdjsonParser::new(),
                [&b"{\"error\":\"model 'x' not found\"}\n"[..]]
            ),
            vec![Err(ProviderError::MidStream {
                message: "model 'x' not found".into()
            })]
        );
        let wire = "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"a\"},\"done\":false}\n{\"error\":\"an error was encountered while running the model\"}\n";
        assert_eq!(
            parse_all(NdjsonParser::new(), [wire.as_bytes()]),
            vec![
                Ok(ProviderEvent::Model("m".into())),
                Ok(ProviderEvent::Delta("a".into())),
                Err(ProviderError::MidStream {
                    message: "an error was encountered while running the model".into()
                })
            ]
        );
    }

    #[test]
    fn no_done_is_truncated() {
        let first_line = HAPPY.lines().next().unwrap();
        let wire = format!("{first_line}\n");
        assert_eq!(
            parse_all(NdjsonParser::new(), [wire.as_bytes()]),
            vec![
                Ok(ProviderEvent::Model("gpt-oss:120b".into())),
                Ok(ProviderEvent::Delta("Grüß".into())),
                Err(ProviderError::Truncated)
            ]
        );
        // Cut inside the final object.
        let cut = &HAPPY.as_bytes()[..HAPPY.len() - 30];
        assert_eq!(
            parse_all(NdjsonParser::new(), [cut]).last(),
            Some(&Err(ProviderError::Truncated))
        );
    }

    #[test]
    fn a_line_that_never_ends_is_refused_and_its_buffer_released() {
        use crate::providers::lines::MAX_LINE_BYTES;
        let mut parser = NdjsonParser::new();
        let mut out = Vec::new();
        let mut first =
            b"{\"model\":\"m\",\"message\":{\"content\":\"a\"},\"done\":false}\n".to_vec();
        first.extend_from_slice(b"{\"message\":{\"content\":\"");
        parser.feed(&first, &mut out);
        let chunk = vec![b'x'; 64 * 1024];
        let (mut fed, mut most) = (0, 0);
        while !parser.is_finished() {
            parser.feed(&chunk, &mut out);
            fed += chunk.len();
            most = most.max(parser.buffered_bytes());
            assert!(fed <= MAX_LINE_BYTES + chunk.len(), "never refused");
        }
        assert!(
            most <= 2 * (MAX_LINE_BYTES + chunk.len()),
            "held {most} bytes"
        );
        assert_eq!(parser.buffered_bytes(), 0, "released once failed");
        assert!(matches!(
            out.as_slice(),
            [Ok(ProviderEvent::Model(_)), Ok(ProviderEvent::Delta(_)), Err(ProviderError::Malformed(m))] if m.contains("too long")
        ));
        parser.feed(&chunk, &mut out);
        parser.finish(&mut out);
        assert_eq!(out.len(), 3, "nothing after the error");
    }

    proptest! {
        /// Every chunking of the same bytes (including splits inside multi-byte characters) yields exactly
        /// the events of the unsplit input.
        #[test]
        fn any_chunking_gives_the_same_events(
            cuts in proptest::collection::vec(0usize..1000, 0..40),
            crlf in any::<bool>(),
            truncate_at in proptest::option::of(0usize..1000),
        ) {
            let wire = if crlf { HAPPY.replace('\n', "\r\n") } else { HAPPY.to_string() };
            let mut bytes = wire.into_bytes();
            if let Some(t) = truncate_at {
                bytes.truncate(t % (bytes.len() + 1));
            }
            let whole = parse_all(NdjsonParser::new(), [bytes.as_slice()]);
            prop_assert_eq!(parse_all(NdjsonParser::new(), parser_laws::chunks(&bytes, cuts)), whole);
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
            let out = parse_all(NdjsonParser::new(), [input.as_slice()]);
            parser_laws::ends_in_one_terminal_item(&out)?;
        }
    }
}

#[cfg(test)]
mod tool_and_reasoning_tests {
    use super::*;
    use crate::providers::{parse_all, parser_laws};
    use proptest::prelude::*;

    /// Thinking first, then two whole tool calls (arguments objects), then the final line.
    const TOOLS: &str = "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"thinking\":\"Hmm, \"},\"done\":false}\n\
{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"thinking\":\"weather.\"},\"done\":false}\n\
{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}}]},\"done\":false}\n\
{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"get_time\",\"arguments\":{}}}]},\"done\":false}\n\
{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":9,\"eval_count\":4}\n";

    #[allow(clippy::unnecessary_wraps)] // a ParsedEvent is a Result: parsers yield errors in line
    fn call(index: u32, name: &str, arguments: &str) -> ParsedEvent {
        Ok(ProviderEvent::ToolCall(ToolCallDelta {
            index,
            id: Some(format!("call_{index}")),
            name: Some(name.into()),
            arguments: arguments.into(),
        }))
    }

    fn tools_events() -> Vec<ParsedEvent> {
        vec![
            Ok(ProviderEvent::Model("m".into())),
            Ok(ProviderEvent::Reasoning("Hmm, ".into())),
            Ok(ProviderEvent::Reasoning("weather.".into())),
            call(0, "get_weather", "{\"city\":\"Paris\"}"),
            call(1, "get_time", "{}"),
            Ok(ProviderEvent::Done {
                usage: Usage {
                    prompt_tokens: 9,
                    completion_tokens: 4,
                },
                finish_reason: Some("stop".into()),
            }),
        ]
    }

    #[test]
    fn thinking_and_whole_tool_calls_with_generated_ids() {
        assert_eq!(
            parse_all(NdjsonParser::new(), [TOOLS.as_bytes()]),
            tools_events()
        );
    }

    proptest! {
        /// Tool-call and thinking streams parse the same under any chunking, cut short or whole.
        #[test]
        fn any_chunking_gives_the_same_tool_events(
            cuts in proptest::collection::vec(0usize..1000, 0..40),
            truncate_at in proptest::option::of(0usize..1000),
        ) {
            let mut bytes = TOOLS.as_bytes().to_vec();
            if let Some(t) = truncate_at {
                bytes.truncate(t % (bytes.len() + 1));
            }
            let whole = parse_all(NdjsonParser::new(), [bytes.as_slice()]);
            if truncate_at.is_none() {
                prop_assert_eq!(&whole, &tools_events());
            }
            let out = parse_all(NdjsonParser::new(), parser_laws::chunks(&bytes, cuts));
            parser_laws::ends_in_one_terminal_item(&out)?;
            prop_assert_eq!(out, whole);
        }
    }
}
