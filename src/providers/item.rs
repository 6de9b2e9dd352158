//! What the two stream parsers (SSE and NDJSON) do alike with one item of a stream: decode its JSON
//! without ever echoing it, end the stream on an error object, and pass on the model's name (once), a
//! non-empty piece of reasoning, a non-empty piece of text and the tool-call pieces, in that order.

use serde::de::DeserializeOwned;

use super::http::map_stream_error;
use super::sanitize::sanitize_message;
use super::{ParsedEvent, ProviderError, ProviderEvent};
use crate::generation::ToolCallDelta;

/// Decodes one item; a broken one is `Malformed`, naming `what` and serde's reason (sanitized, so the
/// item's text, which may hold anything the model wrote, never reaches a log).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ProviderError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ProviderError::Malformed(sanitize_message(&format!("bad {what}: {e}"))))
}

/// The parts every item may carry, in the order they are passed on.
pub(crate) struct Common {
    /// An error object: ends the stream (429/402/401/403 keep their own reaction).
    pub error: Option<serde_json::Value>,
    /// The model that answers, reported once.
    pub model: Option<String>,
    /// A piece of the model's reasoning.
    pub reasoning: Option<String>,
    /// A piece of the answer.
    pub content: Option<String>,
    /// Pieces of tool calls.
    pub tool_calls: Vec<ToolCallDelta>,
}

/// Pushes the item's model (the first time one is seen) and text; an error object is returned instead,
/// for the parser to end the stream with.
pub(crate) fn pass_on(
    item: Common,
    model_seen: &mut bool,
    out: &mut Vec<ParsedEvent>,
) -> Result<(), ProviderError> {
    if let Some(error) = item.error {
        return Err(map_stream_error(&error));
    }
    if let Some(model) = item.model.filter(|m| !m.is_empty()) {
        if !*model_seen {
            *model_seen = true;
            out.push(Ok(ProviderEvent::Model(model)));
        }
    }
    if let Some(reasoning) = item.reasoning.filter(|r| !r.is_empty()) {
        out.push(Ok(ProviderEvent::Reasoning(reasoning)));
    }
    if let Some(content) = item.content.filter(|c| !c.is_empty()) {
        out.push(Ok(ProviderEvent::Delta(content)));
    }
    out.extend(
        item.tool_calls
            .into_iter()
            .map(|c| Ok(ProviderEvent::ToolCall(c))),
    );
    Ok(())
}
