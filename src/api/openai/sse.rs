//! OpenAI's streamed chunks and SSE framing: a role-first chunk, content, reasoning and tool-call
//! deltas, `finish_reason` on the last chunk, a `{"choices": [], "usage": …}` chunk only when the
//! client asked for it, then `data: [DONE]`. A failure after the first byte is a `data: {"error": …}`
//! event and the stream ends without `[DONE]`, so the SDKs raise instead of returning a short answer.

use serde::Serialize;

use crate::api::error::{in_stream_body, Surface};
use crate::api::stream::Framing;
use crate::domain::{Completion, ReplyEvent, Usage};
use crate::generation::ToolCallDelta;

/// Which endpoint's chunks to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/v1/chat/completions`: `chat.completion.chunk` with `delta`.
    Chat,
    /// `/v1/completions`: `text_completion` with `text`.
    Completion,
}

/// OpenAI's `usage` object.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct UsageOut {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Answer tokens.
    pub completion_tokens: u64,
    /// Both.
    pub total_tokens: u64,
}

impl From<Usage> for UsageOut {
    fn from(u: Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total(),
        }
    }
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<Delta<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: Vec<Choice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

/// The SSE framing of one answer.
pub struct Sse {
    kind: Kind,
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    made_calls: bool,
}

impl Sse {
    /// Framing for an answer by `model` with response `id`, `created` (Unix seconds).
    pub fn new(kind: Kind, id: String, created: i64, model: String, include_usage: bool) -> Self {
        Self {
            kind,
            id,
            created,
            model,
            include_usage,
            made_calls: false,
        }
    }

    fn chunk<'a>(
        &'a self,
        delta: Delta<'a>,
        text: Option<&'a str>,
        finish: Option<&'a str>,
    ) -> Chunk<'a> {
        let choice = match self.kind {
            Kind::Chat => Choice {
                index: 0,
                delta: Some(delta),
                text: None,
                logprobs: None,
                finish_reason: finish,
            },
            Kind::Completion => Choice {
                index: 0,
                delta: None,
                text: Some(text.unwrap_or("")),
                logprobs: None,
                finish_reason: finish,
            },
        };
        Chunk {
            id: &self.id,
            object: match self.kind {
                Kind::Chat => "chat.completion.chunk",
                Kind::Completion => "text_completion",
            },
            created: self.created,
            model: &self.model,
            choices: vec![choice],
            usage: None,
        }
    }

    fn write(value: &impl Serialize, out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: ");
        if serde_json::to_writer(&mut *out, value).is_ok() {
            out.extend_from_slice(b"\n\n");
        }
    }

    fn finish(&self, completion: &Completion, out: &mut Vec<u8>) {
        let reason = crate::api::reply::finish_reason(completion, self.made_calls);
        Self::write(&self.chunk(Delta::default(), None, Some(&reason)), out);
        if self.include_usage {
            let mut usage = self.chunk(Delta::default(), None, None);
            usage.choices.clear();
            usage.usage = Some(completion.usage.into());
            Self::write(&usage, out);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    fn tool_call(&mut self, piece: &ToolCallDelta, out: &mut Vec<u8>) {
        self.made_calls = true;
        let call = ToolCallOut {
            index: piece.index,
            id: piece.id.as_deref(),
            kind: piece.id.as_ref().map(|_| "function"),
            function: FunctionDelta {
                name: piece.name.as_deref(),
                arguments: &piece.arguments,
            },
        };
        let delta = Delta {
            tool_calls: vec![call],
            ..Delta::default()
        };
        Self::write(&self.chunk(delta, None, None), out);
    }
}

impl Framing for Sse {
    fn open(&mut self, out: &mut Vec<u8>) {
        if self.kind == Kind::Chat {
            let delta = Delta {
                role: Some("assistant"),
                content: Some(""),
                ..Delta::default()
            };
            Self::write(&self.chunk(delta, None, None), out);
        }
    }

    fn event(&mut self, event: &ReplyEvent, out: &mut Vec<u8>) {
        match event {
            ReplyEvent::Delta(text) => {
                let delta = Delta {
                    content: Some(text),
                    ..Delta::default()
                };
                Self::write(&self.chunk(delta, Some(text), None), out);
            }
            ReplyEvent::Reasoning(text) if self.kind == Kind::Chat => {
                let delta = Delta {
                    reasoning: Some(text),
                    ..Delta::default()
                };
                Self::write(&self.chunk(delta, None, None), out);
            }
            ReplyEvent::ToolCall(piece) if self.kind == Kind::Chat => self.tool_call(piece, out),
            ReplyEvent::Finished(completion) => self.finish(completion, out),
            ReplyEvent::Failed(failure) => {
                Self::write(&in_stream_body(Surface::OpenAi, failure), out);
            }
            ReplyEvent::Reasoning(_)
            | ReplyEvent::ToolCall(_)
            | ReplyEvent::Started(_)
            | ReplyEvent::Notice(_) => {}
        }
    }
}
