//! Writing a [`ProviderRequest`] in the two wire formats: OpenAI-compatible `/chat/completions` bodies
//! (content parts for images, `tool_calls` with string arguments, sampling fields; for OpenRouter its
//! `reasoning` object, its sampling extensions and the client's pass-through extras, see [`Dialect`])
//! and Ollama `/api/chat` bodies (`images`, `tool_calls`
//! with object arguments, `tool_name`, sampling in `options`, `format`, `think`). Fields a format has
//! no place for are dropped here, nowhere else.

use serde_json::{json, Map, Value};

use super::ProviderRequest;
use crate::domain::{ChatMessage, Role};
use crate::generation::{GenerationParams, Reasoning, ResponseFormat, ToolCall};

/// Which OpenAI-compatible server a `/chat/completions` body is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    /// OpenRouter: its extensions (`top_k`, `min_p`, `repetition_penalty`, the `reasoning` object)
    /// and the client's pass-through extras (`provider`, `transforms`, …) go along.
    #[default]
    OpenRouter,
    /// Any other OpenAI-compatible server (an extra `[[tiers]]` entry of kind `openai`): OpenAI's own
    /// fields only, reasoning as `reasoning_effort`. OpenAI itself refuses a request that carries an
    /// unknown field, which would turn a request OpenRouter could answer into a failure on that tier.
    OpenAi,
}

/// The `/chat/completions` body in `dialect`. A stream asks for usage in its last chunk
/// (`stream_options`), which OpenAI-compatible servers send only when asked; `max_tokens` is the cap
/// every one of them accepts.
pub fn openai_body(request: &ProviderRequest, stream: bool, dialect: Dialect) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), request.model.clone().into());
    let messages = request
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| openai_message(m, &request.messages[..i]))
        .collect();
    body.insert("messages".into(), Value::Array(messages));
    body.insert("stream".into(), stream.into());
    if stream {
        body.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    if let Some(max_tokens) = request.max_tokens {
        body.insert("max_tokens".into(), max_tokens.into());
    }
    openai_params(&request.params, dialect, &mut body);
    Value::Object(body)
}

/// The `/api/chat` body: sampling and the length cap go in `options` (Ollama ignores top-level
/// OpenAI names such as `max_tokens`), the output shape in `format`, reasoning in `think`.
pub fn ollama_body(request: &ProviderRequest, stream: bool) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), request.model.clone().into());
    let messages = request
        .messages
        .iter()
        .map(|m| ollama_message(m, &request.messages))
        .collect();
    body.insert("messages".into(), Value::Array(messages));
    body.insert("stream".into(), stream.into());
    let p = &request.params;
    let options = ollama_options(p, request.max_tokens);
    if !options.is_empty() {
        body.insert("options".into(), Value::Object(options));
    }
    match &p.response_format {
        Some(ResponseFormat::JsonObject) => {
            body.insert("format".into(), "json".into());
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            body.insert("format".into(), schema.clone());
        }
        None => {}
    }
    if !p.tools.is_empty() {
        body.insert("tools".into(), Value::Array(p.tools.clone()));
    }
    match &p.reasoning {
        Some(Reasoning::Enabled(on)) => {
            body.insert("think".into(), (*on).into());
        }
        Some(Reasoning::Effort(level)) => {
            body.insert("think".into(), level.clone().into());
        }
        None => {}
    }
    Value::Object(body)
}

/// One OpenAI message. A `tool` message carries the id of the call it answers: as the client gave it,
/// or looked up from the assistant turn before it (Ollama clients name only the function).
fn openai_message(m: &ChatMessage, before: &[ChatMessage]) -> Value {
    let mut out = Map::new();
    out.insert("role".into(), m.role.as_str().into());
    let content = if m.images.is_empty() {
        m.content.clone().into()
    } else {
        let mut parts = Vec::with_capacity(m.images.len() + 1);
        if !m.content.is_empty() {
            parts.push(json!({"type": "text", "text": m.content}));
        }
        parts.extend(
            m.images
                .iter()
                .map(|i| json!({"type": "image_url", "image_url": {"url": i.data_uri()}})),
        );
        Value::Array(parts)
    };
    if m.role == Role::Assistant && !m.tool_calls.is_empty() {
        // OpenAI: an assistant turn that only called tools has `content: null`.
        let empty = m.content.is_empty();
        out.insert("content".into(), if empty { Value::Null } else { content });
        let calls = m.tool_calls.iter().map(openai_tool_call).collect();
        out.insert("tool_calls".into(), Value::Array(calls));
    } else {
        out.insert("content".into(), content);
    }
    let answered = || answered_call_id(m, before);
    if let Some(id) = m.tool_call_id.clone().or_else(answered) {
        out.insert("tool_call_id".into(), id.into());
    }
    Value::Object(out)
}

/// The id of the call a `tool` message without one answers: in the last assistant turn that called
/// tools, the call of the same name that no earlier tool message took (else that turn's first call).
fn answered_call_id(m: &ChatMessage, before: &[ChatMessage]) -> Option<String> {
    if m.role != Role::Tool {
        return None;
    }
    let turn = before.iter().rposition(|a| !a.tool_calls.is_empty())?;
    let calls = &before[turn].tool_calls;
    let named = |c: &&ToolCall| m.tool_name.as_deref().is_none_or(|n| n == c.name);
    let taken = before[turn + 1..]
        .iter()
        .filter(|t| t.role == Role::Tool && t.tool_name == m.tool_name)
        .count();
    calls
        .iter()
        .filter(named)
        .nth(taken)
        .or_else(|| calls.first())
        .map(|c| c.id.clone())
}

fn openai_tool_call(call: &ToolCall) -> Value {
    json!({"id": call.id, "type": "function",
           "function": {"name": call.name, "arguments": call.arguments}})
}

/// One Ollama message. A `tool` message names its function (`tool_name`): as the client gave it, or
/// looked up from the assistant call it answers (OpenAI clients send only the call's id).
fn ollama_message(m: &ChatMessage, all: &[ChatMessage]) -> Value {
    let mut out = Map::new();
    out.insert("role".into(), m.role.as_str().into());
    out.insert("content".into(), m.content.clone().into());
    if !m.images.is_empty() {
        let images = m.images.iter().map(|i| Value::from(&*i.base64)).collect();
        out.insert("images".into(), Value::Array(images));
    }
    if !m.tool_calls.is_empty() {
        let calls = m
            .tool_calls
            .iter()
            .map(|c| json!({"function": {"name": c.name, "arguments": arguments_object(&c.arguments)}}))
            .collect();
        out.insert("tool_calls".into(), Value::Array(calls));
    }
    if m.role == Role::Tool {
        let name = m.tool_name.clone().or_else(|| {
            let id = m.tool_call_id.as_deref()?;
            all.iter()
                .flat_map(|a| &a.tool_calls)
                .find(|c| c.id == id)
                .map(|c| c.name.clone())
        });
        if let Some(name) = name {
            out.insert("tool_name".into(), name.into());
        }
    }
    Value::Object(out)
}

/// Ollama wants tool-call arguments as a JSON object; text that is not JSON is passed as the string it
/// is rather than dropped (the server then says what is wrong with it).
fn arguments_object(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_owned()))
}

/// The sampling fields the formats share, under OpenAI's names but for the repetition penalty's,
/// which each format names its own way (`repetition_penalty` on OpenRouter, `repeat_penalty` in Ollama);
/// `None` for a server with no such field (OpenAI: no `top_k`, `min_p` or repetition penalty either).
fn sampling(p: &GenerationParams, repetition_name: Option<&str>, out: &mut Map<String, Value>) {
    put(out, "temperature", p.temperature.map(Value::from));
    put(out, "top_p", p.top_p.map(Value::from));
    if let Some(repetition_name) = repetition_name {
        put(out, "top_k", p.top_k.map(Value::from));
        put(out, "min_p", p.min_p.map(Value::from));
        put(out, repetition_name, p.repetition_penalty.map(Value::from));
    }
    put(out, "seed", p.seed.map(Value::from));
    put(out, "presence_penalty", p.presence_penalty.map(Value::from));
    put(
        out,
        "frequency_penalty",
        p.frequency_penalty.map(Value::from),
    );
    let stop = (!p.stop.is_empty()).then(|| p.stop.clone().into());
    put(out, "stop", stop);
}

/// Sets `key` when there is a value.
fn put(out: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        out.insert(key.into(), value);
    }
}

/// Sampling, output shape, tools and reasoning in OpenAI's (and OpenRouter's) names; for OpenRouter
/// the client's pass-through extras last, never replacing a field switchboard set.
fn openai_params(p: &GenerationParams, dialect: Dialect, body: &mut Map<String, Value>) {
    let openrouter = dialect == Dialect::OpenRouter;
    sampling(p, openrouter.then_some("repetition_penalty"), body);
    let format = p.response_format.as_ref().map(|f| match f {
        ResponseFormat::JsonObject => json!({"type": "json_object"}),
        ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        } => {
            let mut spec = json!({"name": name, "schema": schema});
            if let Some(strict) = strict {
                spec["strict"] = (*strict).into();
            }
            json!({"type": "json_schema", "json_schema": spec})
        }
    });
    put(body, "response_format", format);
    let tools = (!p.tools.is_empty()).then(|| p.tools.clone().into());
    put(body, "tools", tools);
    put(body, "tool_choice", p.tool_choice.clone());
    if !openrouter {
        // OpenAI takes an effort only; "on" or "off" has no field there (a reasoning model reasons).
        if let Some(Reasoning::Effort(level)) = &p.reasoning {
            body.insert("reasoning_effort".into(), level.clone().into());
        }
        return;
    }
    let reasoning = p.reasoning.as_ref().map(|r| match r {
        Reasoning::Enabled(on) => json!({ "enabled": on }),
        Reasoning::Effort(level) => json!({ "effort": level }),
    });
    put(body, "reasoning", reasoning);
    for (k, v) in &p.passthrough {
        body.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// Ollama's `options`: `num_predict` for the cap and the sampling fields, the repetition penalty
/// as `repeat_penalty`.
fn ollama_options(p: &GenerationParams, max_tokens: Option<u32>) -> Map<String, Value> {
    let mut o = Map::new();
    put(&mut o, "num_predict", max_tokens.map(Value::from));
    sampling(p, Some("repeat_penalty"), &mut o);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str, name: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: "{}".into(),
        }
    }

    /// An Ollama client's tool results name only the function: the OpenAI body gets the call ids.
    #[test]
    fn tool_results_named_by_function_get_their_call_ids() {
        let mut assistant = ChatMessage::new(Role::Assistant, "");
        assistant.tool_calls = vec![call("call_0", "get_weather"), call("call_1", "get_weather")];
        let mut messages = vec![ChatMessage::new(Role::User, "weather twice"), assistant];
        for _ in 0..2 {
            let mut result = ChatMessage::new(Role::Tool, "sunny");
            result.tool_name = Some("get_weather".into());
            messages.push(result);
        }
        let request = ProviderRequest {
            model: "m".into(),
            messages,
            max_tokens: None,
            params: GenerationParams::default(),
        };
        let body = openai_body(&request, true, Dialect::OpenRouter);
        assert_eq!(body["messages"][2]["tool_call_id"], "call_0");
        assert_eq!(body["messages"][3]["tool_call_id"], "call_1");
        assert!(body["messages"][0].get("tool_call_id").is_none());
    }
}
