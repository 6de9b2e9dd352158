//! OpenAI's request bodies (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`) and their
//! mapping into the router's vocabulary: content parts with `image_url` data URIs, tool calls with
//! string arguments, `max_tokens`/`max_completion_tokens`, sampling, `response_format`, `tools`,
//! `tool_choice`, `reasoning_effort`; other top-level fields pass through to OpenAI-compatible
//! providers (OpenRouter's extras).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::api::convert::{image_from_data_uri, Ask};
use crate::api::error::{ApiError, Surface};
use crate::api::json;
use crate::domain::{ChatMessage, Role};
use crate::generation::{GenerationParams, Reasoning, ResponseFormat, ToolCall};

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The model name (virtual, alias or concrete).
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// SSE when true.
    #[serde(default)]
    pub stream: Option<bool>,
    /// `include_usage`.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Sampling and the rest (read from the same body by [`read`]).
    #[serde(skip)]
    pub sampling: Sampling,
    /// Tool definitions.
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    /// `auto`, `none`, `required` or a named function.
    #[serde(default)]
    pub tool_choice: Option<Value>,
}

/// The fields chat and legacy completions share, and the unknown extras.
#[derive(Debug, Default, Deserialize)]
pub struct Sampling {
    /// The answer cap (legacy name).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// The answer cap (current name; wins over `max_tokens`).
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// Seed.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Stop sequence(s).
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Temperature.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Frequency penalty.
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    /// Presence penalty.
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    /// `{"type": "text"|"json_object"|"json_schema", ...}`.
    #[serde(default)]
    pub response_format: Option<Value>,
    /// `low`, `medium`, `high`.
    #[serde(default)]
    pub reasoning_effort: Option<String>,
    /// Everything else (OpenRouter's `top_k`, `min_p`, `repetition_penalty`, `provider`, …).
    #[serde(skip)]
    pub extra: Map<String, Value>,
}

/// The top-level fields switchboard reads itself; every other field is an extra.
const KNOWN: [&str; 17] = [
    "model",
    "messages",
    "prompt",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "stop",
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "response_format",
    "reasoning_effort",
];

/// A request of type `T` with its [`Sampling`] and extras, all from one parsed body. (Serde's
/// `flatten` would do this in one pass but loses the path of a field in error, which a 400 must name.)
pub fn read<T: OpenAiRequest>(value: Value) -> Result<T, ApiError> {
    let mut request: T = json::typed(Surface::OpenAi, &value)?;
    let mut sampling: Sampling = json::typed(Surface::OpenAi, &value)?;
    if let Value::Object(map) = value {
        sampling.extra = map
            .into_iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .collect();
    }
    *request.sampling_mut() = sampling;
    Ok(request)
}

/// A generating request of the OpenAI surface: it carries a [`Sampling`] and becomes an [`Ask`].
pub trait OpenAiRequest: serde::de::DeserializeOwned {
    /// Its sampling fields.
    fn sampling_mut(&mut self) -> &mut Sampling;
    /// The request as an [`Ask`], whether to stream, and whether to send the usage chunk.
    fn into_ask(self) -> Result<(Ask, bool, bool), ApiError>;
}

impl OpenAiRequest for ChatRequest {
    fn sampling_mut(&mut self) -> &mut Sampling {
        &mut self.sampling
    }
    fn into_ask(self) -> Result<(Ask, bool, bool), ApiError> {
        self.to_ask()
    }
}

impl OpenAiRequest for CompletionRequest {
    fn sampling_mut(&mut self) -> &mut Sampling {
        &mut self.sampling
    }
    fn into_ask(self) -> Result<(Ask, bool, bool), ApiError> {
        self.to_ask()
    }
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// A stop sequence or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// One chat message.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text or content parts; absent or null for an assistant message that only calls tools.
    #[serde(default)]
    pub content: Option<Content>,
    /// An assistant message's tool calls.
    #[serde(default)]
    pub tool_calls: Option<Vec<InToolCall>>,
    /// A tool message's call id.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// A participant's or tool's name.
    #[serde(default)]
    pub name: Option<String>,
}

/// Message content: a string or a list of parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Text and image parts.
    Parts(Vec<Part>),
}

/// A content part.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image (a data URI).
    ImageUrl {
        /// The image.
        image_url: ImageUrl,
    },
}

/// An `image_url` part's image.
#[derive(Debug, Deserialize)]
pub struct ImageUrl {
    /// A `data:` URI.
    pub url: String,
}

/// A tool call in a request: arguments are a JSON string.
#[derive(Debug, Deserialize)]
pub struct InToolCall {
    /// The call id.
    pub id: String,
    /// The function.
    pub function: InFunction,
}

/// A tool call's function.
#[derive(Debug, Deserialize)]
pub struct InFunction {
    /// Its name.
    pub name: String,
    /// Its arguments, JSON text.
    #[serde(default)]
    pub arguments: String,
}

/// `POST /v1/completions` (legacy).
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// The model name.
    pub model: String,
    /// The prompt (a string, or a list of which only one is supported).
    pub prompt: Prompt,
    /// SSE when true.
    #[serde(default)]
    pub stream: Option<bool>,
    /// `include_usage`.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Sampling and the rest (read from the same body by [`read`]).
    #[serde(skip)]
    pub sampling: Sampling,
}

/// A prompt: one string, or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One.
    One(String),
    /// Several (only one is answered per request here).
    Many(Vec<String>),
}

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    /// The embedding model.
    pub model: String,
    /// A string or a list of strings.
    pub input: crate::api::ollama::wire::Input,
    /// How each vector is written.
    #[serde(default)]
    pub encoding_format: EncodingFormat,
}

/// How `/v1/embeddings` writes each vector (`encoding_format`): a JSON array of floats, or base64 of
/// its little-endian float32 bytes. openai-node asks for base64 whenever its caller did not choose and
/// decodes the answer without looking: a float array there became a vector of zeros, silently.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// A JSON array of numbers (OpenAI's default).
    #[default]
    Float,
    /// A base64 string of the float32 values, little-endian.
    Base64,
}

impl EncodingFormat {
    /// `vector` written this way.
    pub fn write(self, vector: &[f32]) -> Value {
        match self {
            Self::Float => serde_json::json!(vector),
            Self::Base64 => {
                use base64::Engine as _;
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }
}

/// Fields OpenAI defines that switchboard does not pass on (`n` > 1 is refused separately; `user` is
/// the caller's own label; `stream`/`stream_options` are handled here).
const NOT_PASSED: [&str; 4] = ["user", "n", "logprobs", "top_logprobs"];

impl Sampling {
    /// The generation parameters and the answer cap.
    pub fn params(
        mut self,
        tools: Option<Vec<Value>>,
        tool_choice: Option<Value>,
    ) -> Result<(GenerationParams, Option<u32>), ApiError> {
        if self
            .extra
            .get("n")
            .and_then(Value::as_u64)
            .is_some_and(|n| n > 1)
        {
            return Err(ApiError::bad_field(
                Surface::OpenAi,
                "n",
                "only n = 1 is supported",
            ));
        }
        for key in NOT_PASSED {
            self.extra.remove(key);
        }
        let number =
            |extra: &mut Map<String, Value>, key: &str| extra.remove(key).and_then(|v| v.as_f64());
        let top_k = self
            .extra
            .remove("top_k")
            .and_then(|v| v.as_u64())
            .map(|k| u32::try_from(k).unwrap_or(u32::MAX));
        let min_p = number(&mut self.extra, "min_p");
        let repetition_penalty = number(&mut self.extra, "repetition_penalty");
        let params = GenerationParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k,
            min_p,
            seed: self.seed,
            stop: match self.stop {
                None => Vec::new(),
                Some(Stop::One(s)) => vec![s],
                Some(Stop::Many(v)) => v,
            },
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repetition_penalty,
            response_format: response_format(self.response_format)?,
            tools: tools.unwrap_or_default(),
            tool_choice,
            reasoning: self.reasoning_effort.map(Reasoning::Effort),
            passthrough: self.extra,
            context_window: None,
            // Set by `dispatch::begin_ask`, which knows whether the answer streams.
            whole: false,
        };
        Ok((params, self.max_completion_tokens.or(self.max_tokens)))
    }
}

/// `response_format`: `text` → none, `json_object`, `json_schema` with its `json_schema` object.
fn response_format(format: Option<Value>) -> Result<Option<ResponseFormat>, ApiError> {
    let Some(format) = format.filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    let bad = |why: &str| ApiError::bad_field(Surface::OpenAi, "response_format", why);
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => {
            let spec = format
                .get("json_schema")
                .ok_or_else(|| bad("json_schema is required with type json_schema"))?;
            Ok(Some(ResponseFormat::JsonSchema {
                name: spec
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("response")
                    .to_owned(),
                schema: spec.get("schema").cloned().unwrap_or(Value::Null),
                strict: spec.get("strict").and_then(Value::as_bool),
            }))
        }
        _ => Err(bad("type must be text, json_object or json_schema")),
    }
}

/// One message in the router's vocabulary; `index` names the field in errors.
fn message(index: usize, m: Message) -> Result<ChatMessage, ApiError> {
    let role = match m.role.as_str() {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        other => {
            return Err(ApiError::bad_field(
                Surface::OpenAi,
                &format!("messages[{index}].role"),
                format!("unknown role `{other}`: use system, developer, user, assistant or tool"),
            ))
        }
    };
    let mut out = ChatMessage::new(role, "");
    match m.content {
        None => {}
        Some(Content::Text(text)) => out.content = text,
        Some(Content::Parts(parts)) => {
            let mut texts = Vec::new();
            for (p, part) in parts.into_iter().enumerate() {
                match part {
                    Part::Text { text } => texts.push(text),
                    Part::ImageUrl { image_url } => out.images.push(image_from_data_uri(
                        Surface::OpenAi,
                        &format!("messages[{index}].content[{p}].image_url.url"),
                        &image_url.url,
                    )?),
                }
            }
            out.content = texts.join("\n");
        }
    }
    out.tool_calls = m
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|c| ToolCall {
            id: c.id,
            name: c.function.name,
            arguments: c.function.arguments,
        })
        .collect();
    out.tool_call_id = m.tool_call_id;
    if role == Role::Tool {
        out.tool_name = m.name;
    }
    Ok(out)
}

impl ChatRequest {
    /// The request as an [`Ask`], whether to stream, and whether to send the usage chunk.
    pub fn to_ask(self) -> Result<(Ask, bool, bool), ApiError> {
        let messages = self
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| message(i, m))
            .collect::<Result<Vec<_>, _>>()?;
        let (params, max_tokens) = self.sampling.params(self.tools, self.tool_choice)?;
        let usage = self.stream_options.is_some_and(|o| o.include_usage);
        let ask = Ask {
            model: self.model,
            messages,
            params,
            max_tokens,
        };
        Ok((ask, self.stream.unwrap_or(false), usage))
    }
}

impl CompletionRequest {
    /// The request as an [`Ask`] (one user message), whether to stream, and the usage chunk.
    pub fn to_ask(self) -> Result<(Ask, bool, bool), ApiError> {
        let prompt = match self.prompt {
            Prompt::One(p) => p,
            Prompt::Many(mut v) if v.len() == 1 => v.remove(0),
            Prompt::Many(_) => {
                return Err(ApiError::bad_field(
                    Surface::OpenAi,
                    "prompt",
                    "only one prompt per request is supported",
                ))
            }
        };
        let (params, max_tokens) = self.sampling.params(None, None)?;
        let usage = self.stream_options.is_some_and(|o| o.include_usage);
        let ask = Ask {
            model: self.model,
            messages: vec![ChatMessage::new(Role::User, prompt)],
            params,
            max_tokens,
        };
        Ok((ask, self.stream.unwrap_or(false), usage))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parts_images_tools_and_extras_map_over() {
        let req: ChatRequest = read(json!({
            "model": "auto",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/AA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}
            ],
            "max_completion_tokens": 100, "max_tokens": 5,
            "stop": "END", "response_format": {"type": "json_object"},
            "reasoning_effort": "high", "top_k": 40, "provider": {"sort": "price"}, "user": "me",
            "stream": true, "stream_options": {"include_usage": true}
        }))
        .unwrap();
        let (ask, stream, usage) = req.into_ask().unwrap();
        assert!(stream && usage);
        assert_eq!(ask.messages[0].role, Role::System);
        assert_eq!(ask.messages[1].images[0].media_type, "image/jpeg");
        assert_eq!(ask.messages[2].tool_calls[0].id, "c1");
        assert_eq!(ask.messages[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(ask.max_tokens, Some(100));
        assert_eq!(ask.params.stop, vec!["END".to_owned()]);
        assert_eq!(ask.params.top_k, Some(40));
        assert_eq!(ask.params.reasoning, Some(Reasoning::Effort("high".into())));
        assert_eq!(ask.params.response_format, Some(ResponseFormat::JsonObject));
        assert!(ask.params.passthrough.contains_key("provider"));
        assert!(!ask.params.passthrough.contains_key("user"));
    }

    #[test]
    fn an_unknown_role_names_the_message() {
        let req: ChatRequest = read(json!({
            "model": "auto", "messages": [{"role": "robot", "content": "x"}]
        }))
        .unwrap();
        let e = req.into_ask().unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
    }
}
