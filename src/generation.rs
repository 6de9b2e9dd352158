//! What a caller may ask of a model beyond plain text, in provider-neutral form: images, tools and tool
//! calls, sampling parameters, output format and reasoning. The local API fills these from Ollama and
//! OpenAI requests; the provider clients write them in their own wire format; the bots leave them empty.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One image sent to a model, already base64-encoded (both wire formats carry base64).
/// Shared (`Arc`) so the router's retries and fallbacks never copy a 20 MiB body. Its `Debug` shows
/// the type and size, never the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ImageData {
    /// The media type (`image/png`, `image/jpeg`, …); `image/png` when a client sent none (Ollama).
    pub media_type: String,
    /// The image bytes in standard base64, without a `data:` prefix.
    pub base64: Arc<str>,
}

impl ImageData {
    /// The image as a `data:` URI (OpenAI content parts).
    pub fn data_uri(&self) -> String {
        format!("data:{};base64,{}", self.media_type, self.base64)
    }
}

impl std::fmt::Debug for ImageData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ImageData({}, {} base64 chars)",
            self.media_type,
            self.base64.len()
        )
    }
}

/// A complete tool call made by the model (in history: an assistant message's calls).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id (OpenAI `id`; generated for Ollama, which has none).
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments as JSON text (OpenAI sends a string; Ollama's object is serialized).
    pub arguments: String,
}

/// A piece of a streamed tool call, as OpenAI streams them: the first piece of a call carries its `id`
/// and `name`, later pieces append to `arguments`. Ollama's whole calls arrive as one piece each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// Which call of the answer this piece belongs to (0, 1, …).
    pub index: u32,
    /// The call's id, on its first piece.
    pub id: Option<String>,
    /// The function's name, on its first piece.
    pub name: Option<String>,
    /// The next part of the arguments' JSON text.
    pub arguments: String,
}

/// How the answer must be shaped.
#[derive(Clone, Debug, PartialEq)]
pub enum ResponseFormat {
    /// Any JSON object (`format: "json"`, `{"type": "json_object"}`).
    JsonObject,
    /// JSON matching a schema (`format: {schema}`, `{"type": "json_schema", "json_schema": {...}}`).
    JsonSchema {
        /// The schema's name (OpenAI requires one; `response` when the client gave none).
        name: String,
        /// The JSON schema.
        schema: serde_json::Value,
        /// Whether the provider must follow it strictly.
        strict: Option<bool>,
    },
}

/// Whether and how hard the model should reason before answering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reasoning {
    /// Reasoning on or off (`think: true|false`).
    Enabled(bool),
    /// An effort level: `low`, `medium` or `high` (`think: "low"`, `reasoning_effort`).
    Effort(String),
}

/// Everything a request may set besides messages and `max_tokens`. All `None`/empty means the
/// provider's defaults (what the bots send).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationParams {
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Top-k sampling (OpenRouter and Ollama accept it).
    pub top_k: Option<u32>,
    /// Min-p sampling (OpenRouter and Ollama accept it).
    pub min_p: Option<f64>,
    /// Seed for reproducible sampling.
    pub seed: Option<i64>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Presence penalty.
    pub presence_penalty: Option<f64>,
    /// Frequency penalty.
    pub frequency_penalty: Option<f64>,
    /// Repetition penalty (Ollama's `repeat_penalty`).
    pub repetition_penalty: Option<f64>,
    /// The answer's required shape.
    pub response_format: Option<ResponseFormat>,
    /// Tool (function) definitions in OpenAI's shape: `{"type": "function", "function": {name,
    /// description, parameters}}`. Ollama takes the same shape.
    pub tools: Vec<serde_json::Value>,
    /// OpenAI `tool_choice` (`"auto"`, `"none"`, `"required"` or a named function), passed as given.
    pub tool_choice: Option<serde_json::Value>,
    /// Reasoning switch or effort.
    pub reasoning: Option<Reasoning>,
    /// Other top-level fields an OpenAI client sent that switchboard does not interpret; passed through
    /// to OpenAI-compatible providers only (OpenRouter's extras such as `provider`, `transforms`).
    pub passthrough: serde_json::Map<String, serde_json::Value>,
    /// The caller's own context size (Ollama's `num_ctx`): the history is fitted to the smaller of it
    /// and the model's window, as a local Ollama would cut a prompt to its `num_ctx`.
    pub context_window: Option<u32>,
    /// The caller takes the answer only whole (a non-streamed API response): the provider is asked for
    /// one body instead of a stream, which spares reading, parsing and relaying every piece. Fallback
    /// works as for a stream (nothing reaches the client before the end), but a provider that stalls is
    /// only given up at the provider deadline, since a whole answer's head comes only with the answer.
    pub whole: bool,
}

impl GenerationParams {
    /// Whether the request needs a model that takes tools.
    pub fn wants_tools(&self) -> bool {
        !self.tools.is_empty()
    }
}

/// What a model can do, for routing by capability and for model listings (`/api/show`'s `capabilities`).
// Five independent yes/no facts, named as Ollama's `capabilities` list names them; not a state machine.
#[allow(clippy::struct_excessive_bools)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Chat and text completion.
    pub completion: bool,
    /// Tool calls.
    pub tools: bool,
    /// Image input.
    pub vision: bool,
    /// A separate reasoning ("thinking") output.
    pub thinking: bool,
    /// Embeddings (an embedding model does nothing else).
    pub embedding: bool,
}
