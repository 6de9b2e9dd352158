//! Ollama's request bodies (`/api/chat`, `/api/generate`, `/api/embed`, `/api/embeddings`,
//! `/api/show`) and their mapping into the router's vocabulary, as `notes/api.md` gives it: `options`
//! to sampling parameters (`num_predict` → `max_tokens`, `repeat_penalty` → `repetition_penalty`,
//! hardware knobs dropped), `format` to a response format, `think` to reasoning, `images` to images.
//! `keep_alive` is accepted as a duration string or a number of seconds and has nothing to keep here.

use serde::Deserialize;
use serde_json::Value;

use crate::api::convert::{image_from_base64, Ask};
use crate::api::error::{ApiError, Surface};
use crate::domain::{ChatMessage, Role};
use crate::generation::{GenerationParams, Reasoning, ResponseFormat, ToolCall};

/// `POST /api/chat`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The model name (virtual, alias or concrete).
    pub model: String,
    /// The conversation; empty means "load the model" (answered at once).
    #[serde(default)]
    pub messages: Vec<Message>,
    /// Tool definitions (the `ollama` client always sends `[]`).
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    /// `"json"` or a JSON schema.
    #[serde(default)]
    pub format: Option<Value>,
    /// Sampling options.
    #[serde(default)]
    pub options: Option<Options>,
    /// Streams unless `false` (Ollama's default is true).
    #[serde(default)]
    pub stream: Option<bool>,
    /// How long a local server would keep the model loaded; accepted and unused.
    #[serde(default)]
    pub keep_alive: Option<KeepAlive>,
    /// Reasoning on/off or an effort.
    #[serde(default)]
    pub think: Option<Think>,
}

/// One message of `/api/chat`.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: Role,
    /// The text.
    #[serde(default)]
    pub content: String,
    /// Base64 images.
    #[serde(default)]
    pub images: Option<Vec<String>>,
    /// An assistant message's tool calls.
    #[serde(default)]
    pub tool_calls: Option<Vec<InToolCall>>,
    /// An assistant message's reasoning (not sent upstream again).
    #[serde(default)]
    pub thinking: Option<String>,
    /// A tool message's function name.
    #[serde(default)]
    pub tool_name: Option<String>,
}

/// A tool call as Ollama writes it: arguments are a JSON object.
#[derive(Debug, Deserialize)]
pub struct InToolCall {
    /// The call.
    pub function: InFunction,
}

/// The function of a tool call.
#[derive(Debug, Deserialize)]
pub struct InFunction {
    /// Its name.
    pub name: String,
    /// Its arguments (an object).
    #[serde(default)]
    pub arguments: Value,
}

/// `keep_alive`: `"5m"`, `"-1"`, or a number of seconds (Continue sends `1800`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum KeepAlive {
    /// Seconds.
    Seconds(f64),
    /// A Go duration string.
    Text(String),
}

/// `think`: `true`, `false`, or `"low"`/`"medium"`/`"high"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Think {
    /// On or off.
    Switch(bool),
    /// An effort level.
    Effort(String),
}

/// Ollama's `options`. Unknown keys (hardware knobs such as `num_gpu`, `num_thread`, `mirostat`) are
/// accepted and dropped: they mean nothing to a hosted model.
#[derive(Debug, Default, Deserialize)]
pub struct Options {
    /// → `max_tokens` (`-1`/`-2`: no cap).
    pub num_predict: Option<i64>,
    /// The context size a local server would allocate; no upstream field, so it bounds the history
    /// sent ([`GenerationParams::context_window`]).
    pub num_ctx: Option<u64>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Top-k.
    pub top_k: Option<u32>,
    /// Min-p.
    pub min_p: Option<f64>,
    /// Seed.
    pub seed: Option<i64>,
    /// Stop sequences.
    pub stop: Option<Vec<String>>,
    /// Presence penalty.
    pub presence_penalty: Option<f64>,
    /// Frequency penalty.
    pub frequency_penalty: Option<f64>,
    /// → `repetition_penalty`.
    pub repeat_penalty: Option<f64>,
}

/// `POST /api/generate`.
#[derive(Debug, Deserialize)]
pub struct GenerateRequest {
    /// The model name.
    pub model: String,
    /// The prompt; empty (without images) means "load the model".
    #[serde(default)]
    pub prompt: String,
    /// Text after the insertion point (fill-in-the-middle). No upstream takes it; our `/api/show`
    /// template has no `.Suffix`, so clients do not send it.
    #[serde(default)]
    pub suffix: Option<String>,
    /// Base64 images.
    #[serde(default)]
    pub images: Option<Vec<String>>,
    /// A system prompt.
    #[serde(default)]
    pub system: Option<String>,
    /// A prompt template (local models only); accepted and unused.
    #[serde(default)]
    pub template: Option<String>,
    /// No template applied; the prompt is sent as the user message either way.
    #[serde(default)]
    pub raw: Option<bool>,
    /// `"json"` or a schema.
    #[serde(default)]
    pub format: Option<Value>,
    /// Sampling options.
    #[serde(default)]
    pub options: Option<Options>,
    /// Streams unless `false`.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Accepted and unused.
    #[serde(default)]
    pub keep_alive: Option<KeepAlive>,
    /// Reasoning on/off or an effort.
    #[serde(default)]
    pub think: Option<Think>,
}

/// `POST /api/embed`: `input` is a string or a list of strings.
#[derive(Debug, Deserialize)]
pub struct EmbedRequest {
    /// The embedding model.
    pub model: String,
    /// The text(s).
    pub input: Input,
}

/// A string or a list of strings. Token ids (OpenAI accepts them; LangChain's `OpenAIEmbeddings`
/// sends them by default) are refused with a message that says so: switchboard has no tokenizer to
/// turn them back into text for every provider.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a string or a list of strings (token ids are not accepted: send the text; with \
                 LangChain's OpenAIEmbeddings set check_embedding_ctx_length=False)"
)]
pub enum Input {
    /// One text.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Input {
    /// The texts in order.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// `POST /api/embeddings` (legacy): one `prompt`.
#[derive(Debug, Deserialize)]
pub struct LegacyEmbedRequest {
    /// The embedding model.
    pub model: String,
    /// The text.
    pub prompt: String,
}

/// `POST /api/show`: `model`, or the legacy `name`.
#[derive(Debug, Deserialize)]
pub struct ShowRequest {
    /// The model name.
    #[serde(default)]
    pub model: Option<String>,
    /// The legacy field.
    #[serde(default)]
    pub name: Option<String>,
}

/// Sampling, format and reasoning from Ollama's fields; the answer cap from `num_predict`.
pub fn params(
    options: Option<Options>,
    format: Option<Value>,
    think: Option<Think>,
    tools: Option<Vec<Value>>,
) -> Result<(GenerationParams, Option<u32>), ApiError> {
    let o = options.unwrap_or_default();
    let max_tokens = o
        .num_predict
        .filter(|n| *n > 0)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let params = GenerationParams {
        temperature: o.temperature,
        top_p: o.top_p,
        top_k: o.top_k,
        min_p: o.min_p,
        seed: o.seed,
        stop: o.stop.unwrap_or_default(),
        presence_penalty: o.presence_penalty,
        frequency_penalty: o.frequency_penalty,
        repetition_penalty: o.repeat_penalty,
        response_format: response_format(format)?,
        tools: tools.unwrap_or_default(),
        tool_choice: None,
        reasoning: think.map(|t| match t {
            Think::Switch(on) => Reasoning::Enabled(on),
            Think::Effort(level) => Reasoning::Effort(level),
        }),
        passthrough: serde_json::Map::new(),
        context_window: o
            .num_ctx
            .filter(|n| *n > 0)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        // Set by `dispatch::begin_ask`, which knows whether the answer streams.
        whole: false,
    };
    Ok((params, max_tokens))
}

/// `format`: `"json"` → any JSON object, an object → that schema, `""`/null → none.
fn response_format(format: Option<Value>) -> Result<Option<ResponseFormat>, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(ResponseFormat::JsonObject)),
        Some(schema @ Value::Object(_)) => Ok(Some(ResponseFormat::JsonSchema {
            name: "response".into(),
            schema,
            strict: None,
        })),
        Some(_) => Err(ApiError::bad_field(
            Surface::Ollama,
            "format",
            "format must be \"json\" or a JSON schema object",
        )),
    }
}

/// The chat messages in the router's vocabulary.
pub fn messages(messages: Vec<Message>) -> Vec<ChatMessage> {
    messages
        .into_iter()
        .map(|m| {
            let mut out = ChatMessage::new(m.role, m.content);
            out.images = m
                .images
                .unwrap_or_default()
                .iter()
                .map(|b| image_from_base64(b))
                .collect();
            out.tool_calls = m
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(i, c)| ToolCall {
                    id: format!("call_{i}"),
                    name: c.function.name,
                    arguments: if c.function.arguments.is_null() {
                        "{}".into()
                    } else {
                        c.function.arguments.to_string()
                    },
                })
                .collect();
            out.tool_name = m.tool_name;
            out
        })
        .collect()
}

impl ChatRequest {
    /// The request as an [`Ask`] and whether to stream.
    pub fn into_ask(self) -> Result<(Ask, bool), ApiError> {
        let (params, max_tokens) = params(self.options, self.format, self.think, self.tools)?;
        let ask = Ask {
            model: self.model,
            messages: messages(self.messages),
            params,
            max_tokens,
        };
        Ok((ask, self.stream.unwrap_or(true)))
    }
}

impl GenerateRequest {
    /// The request as an [`Ask`] (system + one user message) and whether to stream.
    pub fn into_ask(self) -> Result<(Ask, bool), ApiError> {
        let (params, max_tokens) = params(self.options, self.format, self.think, None)?;
        let mut messages = Vec::new();
        if let Some(system) = self.system.filter(|s| !s.is_empty()) {
            messages.push(ChatMessage::new(Role::System, system));
        }
        let mut prompt = ChatMessage::new(Role::User, self.prompt);
        prompt.images = self
            .images
            .unwrap_or_default()
            .iter()
            .map(|b| image_from_base64(b))
            .collect();
        messages.push(prompt);
        let ask = Ask {
            model: self.model,
            messages,
            params,
            max_tokens,
        };
        Ok((ask, self.stream.unwrap_or(true)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn options_format_and_think_map_as_the_note_says() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "auto",
            "messages": [{"role": "user", "content": "hi", "images": ["/9j/abc"]}],
            "tools": [],
            "format": "json",
            "think": "low",
            "keep_alive": 1800,
            "options": {"num_predict": 64, "temperature": 0.2, "repeat_penalty": 1.1,
                        "stop": ["\n"], "num_gpu": 1, "num_ctx": 8192}
        }))
        .unwrap();
        let (ask, stream) = req.into_ask().unwrap();
        assert!(stream, "stream defaults to true");
        assert_eq!(ask.max_tokens, Some(64));
        assert_eq!(ask.params.temperature, Some(0.2));
        assert_eq!(ask.params.repetition_penalty, Some(1.1));
        assert_eq!(ask.params.stop, vec!["\n".to_owned()]);
        // num_ctx bounds the history the router sends (no upstream field takes it).
        assert_eq!(ask.params.context_window, Some(8192));
        assert_eq!(ask.params.response_format, Some(ResponseFormat::JsonObject));
        assert_eq!(ask.params.reasoning, Some(Reasoning::Effort("low".into())));
        assert_eq!(ask.messages[0].images[0].media_type, "image/jpeg");
        let keep: ChatRequest =
            serde_json::from_value(json!({"model": "m", "keep_alive": "5m", "stream": false}))
                .unwrap();
        assert_eq!(keep.stream, Some(false));
    }

    #[test]
    fn a_schema_format_and_tool_call_objects_carry_over() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "auto",
            "format": {"type": "object"},
            "options": {"num_predict": -1},
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "weather", "arguments": {"city": "Oslo"}}}]},
                {"role": "tool", "content": "12C", "tool_name": "weather"}
            ]
        }))
        .unwrap();
        let (ask, _) = req.into_ask().unwrap();
        assert_eq!(ask.max_tokens, None);
        assert!(matches!(
            ask.params.response_format,
            Some(ResponseFormat::JsonSchema { .. })
        ));
        assert_eq!(
            ask.messages[1].tool_calls[0].arguments,
            r#"{"city":"Oslo"}"#
        );
        assert_eq!(ask.messages[2].role, Role::Tool);
        assert_eq!(ask.messages[2].tool_name.as_deref(), Some("weather"));
    }
}
