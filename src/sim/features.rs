//! What the simulators check and answer beyond plain text, for both wire formats: the request's
//! sampling, output-format, tool, reasoning and image fields checked as strictly as the real servers
//! check them (a wrong type is a loud 400 and an `unexpected()` entry), images decoded and measured,
//! and the answer a request asks for — a tool call (`call get_weather {"city":"Paris"}` with tools
//! defined), a reply quoting a tool result, reasoning first, "I see an image of N bytes".

use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::SimImage;

/// Which real server's rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// OpenRouter's `/chat/completions` (OpenAI's shape).
    OpenAi,
    /// Ollama's `/api/chat`.
    Ollama,
}

/// A tool call the simulated model makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SimCall {
    /// The function's name (one of the request's tools).
    pub name: String,
    /// Its arguments as JSON text.
    pub arguments: String,
}

/// What a checked chat request asks beyond its text.
#[derive(Clone, Debug, Default)]
pub(crate) struct Asked {
    /// Names of the functions in `tools`.
    pub tools: Vec<String>,
    /// Reasoning was asked for (`reasoning` / `think`).
    pub reasoning: bool,
    /// OpenAI: `stream_options.include_usage` was sent.
    pub include_usage: bool,
    /// Every image of every message, decoded.
    pub images: Vec<SimImage>,
    /// The content of the tool results after the last user message, in order.
    pub tool_results: Vec<String>,
    /// The request's top-level fields other than `model` and `messages`, as sent.
    pub fields: Map<String, Value>,
}

/// How the simulated model answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Text (with reasoning first when asked).
    Text(String),
    /// One tool call instead of text.
    Call(SimCall),
}

/// The reasoning pieces a model streams first when reasoning is asked for.
pub(crate) const REASONING: [&str; 3] = ["Let me think", " about this", " for a moment."];

/// Checks a chat body under `dialect`'s rules; `Err` names the first field that is wrong.
pub(crate) fn check(request: &Value, dialect: Dialect) -> Result<Asked, String> {
    let Some(body) = request.as_object() else {
        return Err("the body is not a JSON object".into());
    };
    let mut asked = Asked::default();
    for (k, v) in body {
        if k != "model" && k != "messages" {
            asked.fields.insert(k.clone(), v.clone());
        }
    }
    match dialect {
        Dialect::OpenAi => check_openai_fields(body, &mut asked)?,
        Dialect::Ollama => check_ollama_fields(body, &mut asked)?,
    }
    if let Some(tools) = body.get("tools") {
        asked.tools = check_tools(tools)?;
    }
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: missing or not an array")?;
    for (i, m) in messages.iter().enumerate() {
        check_message(m, dialect, &mut asked).map_err(|e| format!("messages[{i}].{e}"))?;
    }
    let last_user = messages
        .iter()
        .rposition(|m| m.get("role").and_then(Value::as_str) == Some("user"));
    asked.tool_results = messages[last_user.map_or(0, |i| i + 1)..]
        .iter()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
        .collect();
    Ok(asked)
}

/// The answer to `last_user` given what was asked: a tool call when tools are defined and the
/// message says `call <tool> <json>`, a quote of the tool results when there are some, else `text`
/// (with one sentence per image).
pub(crate) fn plan(asked: &Asked, model: &str, last_user: &str, text: String) -> Plan {
    if asked.tool_results.is_empty() {
        if let Some(call) = wanted_call(last_user, &asked.tools) {
            return Plan::Call(call);
        }
    } else {
        let quoted = asked.tool_results.join(" | ");
        return Plan::Text(format!("[{model}] The tool said: {quoted}"));
    }
    let mut text = text;
    for image in &asked.images {
        let _ = write!(text, " I see an image of {} bytes.", image.bytes);
    }
    Plan::Text(text)
}

/// `call <name> <json arguments>` naming a defined tool.
fn wanted_call(message: &str, tools: &[String]) -> Option<SimCall> {
    let rest = message.trim().strip_prefix("call ")?;
    let (name, arguments) = rest.split_once(' ').unwrap_or((rest, "{}"));
    let arguments: Value = serde_json::from_str(arguments.trim()).ok()?;
    tools.iter().any(|t| t == name).then(|| SimCall {
        name: name.to_owned(),
        arguments: arguments.to_string(),
    })
}

/// The text of a message's content: a string, or the `text` parts of a content-part array.
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A deterministic unit vector of 8 dimensions for `text` (from its SHA-256), as an embedding.
pub(crate) fn embedding(text: &str) -> Vec<f32> {
    let digest = Sha256::digest(text.as_bytes());
    let raw: Vec<f32> = digest[..8]
        .iter()
        .map(|&b| f32::from(b) / 127.5 - 1.0)
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    raw.into_iter().map(|x| x / norm).collect()
}

/// The embeddings request's `input`: a string or a list of strings.
pub(crate) fn embed_inputs(request: &Value, field: &str) -> Result<Vec<String>, String> {
    match request.get(field) {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("{field}: not a list of strings")),
        _ => Err(format!(
            "{field}: missing, or not a string or a list of strings"
        )),
    }
}

fn check_openai_fields(body: &Map<String, Value>, asked: &mut Asked) -> Result<(), String> {
    for k in [
        "temperature",
        "top_p",
        "min_p",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
    ] {
        expect(body, k, Value::is_number, "a number")?;
    }
    for k in ["top_k", "seed", "max_tokens"] {
        expect(body, k, is_integer, "an integer")?;
    }
    expect(body, "stream", Value::is_boolean, "a boolean")?;
    expect(body, "stop", is_stop, "a string or a list of strings")?;
    expect(
        body,
        "tool_choice",
        is_tool_choice,
        "auto, none, required or an object",
    )?;
    if let Some(format) = body.get("response_format") {
        check_response_format(format)?;
    }
    if let Some(options) = body.get("stream_options") {
        let include = options.get("include_usage");
        if !options.is_object() || include.is_some_and(|v| !v.is_boolean()) {
            return Err("stream_options: not {\"include_usage\": bool}".into());
        }
        asked.include_usage = include.and_then(Value::as_bool) == Some(true);
    }
    if let Some(r) = body.get("reasoning") {
        let enabled = r.get("enabled");
        let effort = r.get("effort").map(|e| e.as_str().map(is_effort));
        let ok = r.is_object()
            && enabled.is_none_or(Value::is_boolean)
            && effort.is_none_or(|e| e == Some(true));
        if !ok {
            return Err(
                "reasoning: not {\"enabled\": bool} or {\"effort\": low|medium|high}".into(),
            );
        }
        asked.reasoning = enabled.and_then(Value::as_bool) != Some(false);
    }
    Ok(())
}

fn check_ollama_fields(body: &Map<String, Value>, asked: &mut Asked) -> Result<(), String> {
    expect(body, "stream", Value::is_boolean, "a boolean")?;
    expect(
        body,
        "keep_alive",
        |v| v.is_string() || v.is_number(),
        "a duration",
    )?;
    expect(
        body,
        "format",
        |v| v.as_str() == Some("json") || v.is_object(),
        "\"json\" or a schema",
    )?;
    if let Some(options) = body.get("options") {
        let Some(options) = options.as_object() else {
            return Err("options: not an object".into());
        };
        for k in [
            "temperature",
            "top_p",
            "min_p",
            "presence_penalty",
            "frequency_penalty",
            "repeat_penalty",
        ] {
            expect(options, k, Value::is_number, "a number").map_err(|e| format!("options.{e}"))?;
        }
        for k in ["num_predict", "top_k", "seed", "num_ctx"] {
            expect(options, k, is_integer, "an integer").map_err(|e| format!("options.{e}"))?;
        }
        expect(options, "stop", is_stop, "a list of strings")
            .map_err(|e| format!("options.{e}"))?;
    }
    if let Some(think) = body.get("think") {
        if !(think.is_boolean() || think.as_str().is_some_and(is_effort)) {
            return Err("think: not true, false, \"low\", \"medium\" or \"high\"".into());
        }
        asked.reasoning = think.as_bool() != Some(false);
    }
    Ok(())
}

fn check_message(m: &Value, dialect: Dialect, asked: &mut Asked) -> Result<(), String> {
    let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
    if !["system", "user", "assistant", "tool"].contains(&role) {
        return Err(format!(
            "role: {role:?} is not system, user, assistant or tool"
        ));
    }
    let content = m.get("content").unwrap_or(&Value::Null);
    match (dialect, content) {
        (_, Value::String(_)) => {}
        (Dialect::OpenAi, Value::Null) if role == "assistant" && m.get("tool_calls").is_some() => {}
        (Dialect::OpenAi, Value::Array(parts)) if role == "user" => {
            for (i, part) in parts.iter().enumerate() {
                check_part(part, asked).map_err(|e| format!("content[{i}].{e}"))?;
            }
        }
        (Dialect::Ollama, Value::Null) if m.get("tool_calls").is_some() => {}
        _ => return Err("content: not a string".into()),
    }
    if let Some(calls) = m.get("tool_calls") {
        check_calls(calls, dialect)?;
    }
    match dialect {
        Dialect::OpenAi if role == "tool" => {
            if !m.get("tool_call_id").is_some_and(Value::is_string) {
                return Err("tool_call_id: missing or not a string".into());
            }
        }
        Dialect::Ollama => {
            if let Some(images) = m.get("images") {
                let list = images.as_array().ok_or("images: not a list")?;
                for (i, image) in list.iter().enumerate() {
                    let b64 = image.as_str().ok_or(format!("images[{i}]: not a string"))?;
                    asked
                        .images
                        .push(decode(b64).map_err(|e| format!("images[{i}]: {e}"))?);
                }
            }
            expect_obj(m, "tool_name", Value::is_string, "a string")?;
        }
        Dialect::OpenAi => {}
    }
    Ok(())
}

fn check_part(part: &Value, asked: &mut Asked) -> Result<(), String> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") if part.get("text").is_some_and(Value::is_string) => Ok(()),
        Some("image_url") => {
            let url = part
                .pointer("/image_url/url")
                .and_then(Value::as_str)
                .ok_or("image_url.url: missing or not a string")?;
            let b64 = url
                .strip_prefix("data:")
                .and_then(|rest| rest.split_once(";base64,"))
                .map(|(_, b64)| b64)
                .ok_or("image_url.url: not a base64 data URI")?;
            asked
                .images
                .push(decode(b64).map_err(|e| format!("image_url.url: {e}"))?);
            Ok(())
        }
        _ => Err("type: not a text or image_url part".into()),
    }
}

fn check_calls(calls: &Value, dialect: Dialect) -> Result<(), String> {
    let list = calls.as_array().ok_or("tool_calls: not a list")?;
    for (i, call) in list.iter().enumerate() {
        let name = call.pointer("/function/name").is_some_and(Value::is_string);
        let arguments = call.pointer("/function/arguments");
        let ok = match dialect {
            Dialect::OpenAi => {
                call.get("id").is_some_and(Value::is_string)
                    && call.get("type").and_then(Value::as_str) == Some("function")
                    && arguments.is_some_and(Value::is_string)
            }
            Dialect::Ollama => arguments.is_some_and(Value::is_object),
        };
        if !(ok && name) {
            let want = match dialect {
                Dialect::OpenAi => "{id, type: function, function: {name, arguments: string}}",
                Dialect::Ollama => "{function: {name, arguments: object}}",
            };
            return Err(format!("tool_calls[{i}]: not {want}"));
        }
    }
    Ok(())
}

fn check_tools(tools: &Value) -> Result<Vec<String>, String> {
    let list = tools.as_array().ok_or("tools: not a list")?;
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let typed = t.get("type").and_then(Value::as_str) == Some("function");
            let name = t.pointer("/function/name").and_then(Value::as_str);
            match (typed, name) {
                (true, Some(name)) => Ok(name.to_owned()),
                _ => Err(format!(
                    "tools[{i}]: not {{type: function, function: {{name, …}}}}"
                )),
            }
        })
        .collect()
}

fn check_response_format(format: &Value) -> Result<(), String> {
    match format.get("type").and_then(Value::as_str) {
        Some("text" | "json_object") => Ok(()),
        Some("json_schema")
            if format
                .pointer("/json_schema/name")
                .is_some_and(Value::is_string)
                && format
                    .pointer("/json_schema/schema")
                    .is_some_and(Value::is_object) =>
        {
            Ok(())
        }
        _ => Err("response_format: not text, json_object or json_schema {name, schema}".into()),
    }
}

fn decode(b64: &str) -> Result<SimImage, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("invalid base64: {e}"))?;
    let sha256 = Sha256::digest(&bytes)
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        });
    Ok(SimImage {
        sha256,
        bytes: bytes.len(),
    })
}

fn expect(
    obj: &Map<String, Value>,
    key: &str,
    ok: impl Fn(&Value) -> bool,
    what: &str,
) -> Result<(), String> {
    match obj.get(key) {
        Some(v) if !ok(v) => Err(format!("{key}: not {what}")),
        _ => Ok(()),
    }
}

fn expect_obj(v: &Value, key: &str, ok: impl Fn(&Value) -> bool, what: &str) -> Result<(), String> {
    v.as_object().map_or(Ok(()), |o| expect(o, key, ok, what))
}

fn is_integer(v: &Value) -> bool {
    v.is_i64() || v.is_u64()
}

fn is_stop(v: &Value) -> bool {
    v.is_string() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
}

fn is_tool_choice(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| ["auto", "none", "required"].contains(&s))
        || v.is_object()
}

fn is_effort(s: &str) -> bool {
    ["low", "medium", "high"].contains(&s)
}
