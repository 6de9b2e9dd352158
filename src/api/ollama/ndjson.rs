//! Ollama's response objects and NDJSON framing: one `{"model", "created_at", "message"|"response",
//! "done": false}` line per piece, then a final `done: true` line with `done_reason`, the token counts
//! and durations in nanoseconds (and empty content); an error after the first line is a last
//! `{"error": "..."}` line. Tool calls go out whole (arguments as an object), in one line before the
//! final one, since Ollama's clients expect complete calls.

use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::api::reply::{finish_reason, Answer, ToolCalls};
use crate::api::stream::Framing;
use crate::domain::{Completion, ReplyEvent};
use crate::generation::ToolCall;

/// Which endpoint's objects to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/api/chat`: `message`.
    Chat,
    /// `/api/generate`: `response`.
    Generate,
}

/// The assistant message of a chat line.
#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCall>,
}

/// A whole tool call, arguments as an object.
#[derive(Serialize)]
struct OutToolCall {
    function: OutFunction,
}

#[derive(Serialize)]
struct OutFunction {
    name: String,
    arguments: Value,
}

/// The final line's counters.
#[derive(Serialize)]
struct End {
    done_reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<[u32; 0]>,
    total_duration: u64,
    load_duration: u64,
    prompt_eval_count: u64,
    prompt_eval_duration: u64,
    eval_count: u64,
    eval_duration: u64,
}

/// One line (or a whole non-streamed answer).
#[derive(Serialize)]
struct Line<'a> {
    model: &'a str,
    created_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<OutMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a str>,
    done: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    end: Option<End>,
}

/// When a request arrived and its first piece came, for the final line's durations.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Arrival.
    pub arrived: Instant,
    /// The first piece.
    pub first: Instant,
}

impl Timing {
    fn end(self, completion: &Completion, made_calls: bool, kind: Kind) -> End {
        let now = Instant::now();
        let ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let reason = finish_reason(completion, made_calls);
        End {
            // Ollama says `stop` or `length`; a tool-call turn ends with `stop`.
            done_reason: if reason == "length" {
                reason
            } else {
                "stop".into()
            },
            context: (kind == Kind::Generate).then_some([]),
            total_duration: ns(now.saturating_duration_since(self.arrived)),
            load_duration: 0,
            prompt_eval_count: completion.usage.prompt_tokens,
            prompt_eval_duration: ns(self.first.saturating_duration_since(self.arrived)),
            eval_count: completion.usage.completion_tokens,
            eval_duration: ns(now.saturating_duration_since(self.first)),
        }
    }
}

fn out_calls(calls: Vec<ToolCall>) -> Vec<OutToolCall> {
    calls
        .into_iter()
        .map(|c| OutToolCall {
            function: OutFunction {
                arguments: serde_json::from_str(&c.arguments).unwrap_or(Value::String(c.arguments)),
                name: c.name,
            },
        })
        .collect()
}

/// The NDJSON framing of one answer.
pub struct Ndjson {
    kind: Kind,
    model: String,
    created_at: String,
    timing: Timing,
    calls: ToolCalls,
    made_calls: bool,
}

impl Ndjson {
    /// Framing for an answer by `model`, stamped `created_at` (RFC 3339).
    pub fn new(kind: Kind, model: String, created_at: String, timing: Timing) -> Self {
        Self {
            kind,
            model,
            created_at,
            timing,
            calls: ToolCalls::default(),
            made_calls: false,
        }
    }

    fn line<'a>(
        &'a self,
        text: &'a str,
        thinking: Option<&'a str>,
        calls: Vec<OutToolCall>,
        end: Option<End>,
    ) -> Line<'a> {
        let (message, response, thinking) = match self.kind {
            Kind::Chat => (
                Some(OutMessage {
                    role: "assistant",
                    content: text,
                    thinking,
                    tool_calls: calls,
                }),
                None,
                None,
            ),
            Kind::Generate => (None, Some(text), thinking),
        };
        Line {
            model: &self.model,
            created_at: &self.created_at,
            message,
            response,
            thinking,
            done: end.is_some(),
            end,
        }
    }

    fn write(line: &Line<'_>, out: &mut Vec<u8>) {
        if serde_json::to_writer(&mut *out, line).is_ok() {
            out.push(b'\n');
        }
    }

    /// The whole answer as one object (`stream: false`).
    pub fn whole(&self, answer: &Answer) -> Vec<u8> {
        let made_calls = !answer.tool_calls.is_empty();
        let end = self.timing.end(&answer.completion, made_calls, self.kind);
        let thinking = (!answer.thinking.is_empty()).then_some(answer.thinking.as_str());
        let line = self.line(
            &answer.content,
            thinking,
            out_calls(answer.tool_calls.clone()),
            Some(end),
        );
        serde_json::to_vec(&line).unwrap_or_default()
    }
}

impl Framing for Ndjson {
    fn event(&mut self, event: &ReplyEvent, out: &mut Vec<u8>) {
        match event {
            ReplyEvent::Delta(text) => Self::write(&self.line(text, None, Vec::new(), None), out),
            ReplyEvent::Reasoning(text) => {
                Self::write(&self.line("", Some(text), Vec::new(), None), out);
            }
            ReplyEvent::ToolCall(piece) => self.calls.push(piece),
            ReplyEvent::Finished(completion) => {
                if !self.calls.is_empty() && self.kind == Kind::Chat {
                    self.made_calls = true;
                    let calls = out_calls(self.calls.finish());
                    Self::write(&self.line("", None, calls, None), out);
                }
                let end = self.timing.end(completion, self.made_calls, self.kind);
                Self::write(&self.line("", None, Vec::new(), Some(end)), out);
            }
            ReplyEvent::Failed(failure) => {
                if serde_json::to_writer(&mut *out, &serde_json::json!({"error": failure.message}))
                    .is_ok()
                {
                    out.push(b'\n');
                }
            }
            ReplyEvent::Started(_) | ReplyEvent::Notice(_) => {}
        }
    }
}
