//! OpenRouter's SSE wire: `data:` chunk events, `: OPENROUTER PROCESSING` keep-alives while thinking
//! and between chunks, an in-stream error event, and the stop, usage and `[DONE]` end.

use axum::body::Bytes;
use serde_json::json;

use super::KEEP_ALIVE_EVERY;
use crate::sim::server::Step;
use crate::sim::stream::{self, Piece, Wire};
use crate::sim::{Fault, ReplyShape};

/// How a streamed answer ends: its finish reason, and its usage chunk when the client asked for one
/// (`stream_options.include_usage`; OpenAI-compatible servers send none otherwise).
pub(super) struct Ending<'a> {
    /// `stop`, or `tool_calls` for a tool call.
    pub finish_reason: &'a str,
    /// The usage object, when it is to be sent.
    pub usage: Option<&'a serde_json::Value>,
}

/// The SSE body of an answer, with the stream faults applied.
pub(super) fn sse_script(
    shape: &ReplyShape,
    model: &str,
    now_ms: i64,
    chunks: &[Piece],
    ending: &Ending<'_>,
    fault: Option<Fault>,
) -> Vec<Step> {
    let wire = Sse {
        model,
        created: now_ms / 1000,
        ending,
        shape,
    };
    let mut steps = Vec::new();
    if shape.keep_alive {
        steps.push(keep_alive());
        let mut left = shape.first_byte_latency;
        while !left.is_zero() {
            let step = left.min(KEEP_ALIVE_EVERY);
            steps.push(Step::Sleep(step));
            left -= step;
            if !left.is_zero() {
                steps.push(keep_alive());
            }
        }
    }
    stream::script(&wire, steps, chunks, fault)
}

fn keep_alive() -> Step {
    Step::Send(Bytes::from_static(b": OPENROUTER PROCESSING\n\n"))
}

fn event(v: &serde_json::Value) -> Step {
    Step::Send(Bytes::from(format!("data: {v}\n\n")))
}

/// One streamed answer on the SSE wire.
struct Sse<'a> {
    model: &'a str,
    created: i64,
    ending: &'a Ending<'a>,
    shape: &'a ReplyShape,
}

impl Sse<'_> {
    fn chunk(&self, choices: &serde_json::Value) -> serde_json::Value {
        json!({"id": "gen-sim", "object": "chat.completion.chunk", "created": self.created,
               "model": self.model, "provider": "Simulator", "choices": choices})
    }
}

impl Wire for Sse<'_> {
    const SSE: bool = true;

    fn delta(&self, index: usize, piece: &Piece) -> Step {
        let mut delta = match piece {
            Piece::Text(text) => json!({ "content": text }),
            // OpenRouter sends reasoning with an empty content.
            Piece::Reasoning(text) => json!({"content": "", "reasoning": text}),
            Piece::Call {
                index,
                name: Some(name),
                arguments,
            } => {
                json!({"content": null, "tool_calls": [{"index": index, "id": format!("call_sim_{index}"),
                "type": "function", "function": {"name": name, "arguments": arguments}}]})
            }
            Piece::Call {
                index, arguments, ..
            } => json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
        };
        if index == 0 {
            delta["role"] = "assistant".into();
        }
        event(&self.chunk(&json!([{"index": 0, "delta": delta, "finish_reason": null}])))
    }

    fn gap(&self, steps: &mut Vec<Step>) {
        steps.push(Step::Sleep(self.shape.chunk_delay));
        if self.shape.keep_alive && !self.shape.chunk_delay.is_zero() {
            steps.push(keep_alive());
        }
    }

    fn error(&self, code: Option<u16>, message: &str) -> Step {
        let mut error_chunk =
            self.chunk(&json!([{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]));
        error_chunk["error"] = match code {
            None => json!({"code": "server_error", "message": message}),
            Some(code) => json!({"code": code, "message": message}),
        };
        event(&error_chunk)
    }

    fn end(&self, steps: &mut Vec<Step>) {
        let finish = self.ending.finish_reason;
        steps.push(event(&self.chunk(
            &json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
        )));
        if let Some(usage) = self.ending.usage {
            let mut usage_chunk = self.chunk(&json!([]));
            usage_chunk["usage"] = usage.clone();
            steps.push(event(&usage_chunk));
        }
        steps.push(Step::Send(Bytes::from_static(b"data: [DONE]\n\n")));
    }
}
