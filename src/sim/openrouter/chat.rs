//! `POST /api/v1/chat/completions`: parse the request, count it against the account, apply a status
//! fault or a limit, resolve the model, and answer with JSON or an SSE stream.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::quota::Limits;
use super::sse::{sse_script, Ending};
use super::{error, header, set_header, Caller, Shared, API_PREFIX, FREE_ROUTER_MODEL};
use crate::secrets::fingerprint_str;
use crate::sim::features::{self, Asked, Dialect, Plan};
use crate::sim::server::{json, pause};
use crate::sim::stream::Piece;
use crate::sim::{
    last_user_message, model_and_messages, prompt_chars, reply_text, stream, Fault, SimRequest,
};

/// A parsed chat request.
struct ChatCall {
    model: String,
    messages: Vec<serde_json::Value>,
    stream: bool,
    asked: Asked,
}

/// The answer decided for a chat request, before it is delivered.
enum Answer {
    Now(Response),
    After(Duration, Response),
    Hang,
}

pub(super) async fn chat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("{API_PREFIX}/chat/completions");
    let caller = match shared.authenticate(&headers, "POST", &path) {
        Ok(c) => c,
        Err(response) => return *response,
    };
    let mut log = SimRequest::new("POST", path, 200);
    log.key_fingerprint = Some(fingerprint_str(&caller.key));
    log.account = Some(caller.account.clone());
    log.referer = header(&headers, "http-referer");
    log.title = header(&headers, "x-title");
    let call = match parse(&shared, &mut log, &body) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let fault = shared.desk.book.take_fault(Some(&caller.key));
    log.fault.clone_from(&fault);
    let (response, status) = answer(&shared, &caller, &call, fault);
    log.status = status;
    shared.desk.book.record(log);
    deliver(&shared, response).await
}

/// Reads the chat body into `log` (model, stream, cap); an unreadable body is answered 400.
fn parse(shared: &Shared, log: &mut SimRequest, body: &[u8]) -> Result<ChatCall, Box<Response>> {
    let request = shared
        .desk
        .book
        .read_json(log, body)
        .map_err(|message| Box::new(error(StatusCode::BAD_REQUEST, &message)))?;
    let (model, messages) = model_and_messages(&request);
    log.model = Some(model.clone());
    log.stream = request.get("stream").and_then(serde_json::Value::as_bool) == Some(true);
    log.max_tokens = request
        .get("max_tokens")
        .and_then(serde_json::Value::as_u64);
    let asked = features::check(&request, Dialect::OpenAi).map_err(|problem| {
        let message = shared.desk.book.invalid(log, &problem);
        Box::new(error(StatusCode::BAD_REQUEST, &message))
    })?;
    log.images.clone_from(&asked.images);
    log.fields.clone_from(&asked.fields);
    Ok(ChatCall {
        model,
        messages,
        stream: log.stream,
        asked,
    })
}

/// Sends the decided answer: at once, after its delay, or (hanging) only when the simulator stops.
async fn deliver(shared: &Shared, answer: Answer) -> Response {
    match answer {
        Answer::Now(r) => r,
        Answer::Hang => {
            shared.desk.cancel.cancelled().await;
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": {"message": "simulator shutting down", "code": 503}}),
            )
        }
        Answer::After(delay, r) => {
            pause(delay, &shared.desk.cancel).await;
            r
        }
    }
}

/// Decides the answer to a chat request (quota bookkeeping included) and its status for the log.
fn answer(
    shared: &Shared,
    caller: &Caller,
    call: &ChatCall,
    fault: Option<Fault>,
) -> (Answer, u16) {
    let options = &shared.options;
    let limits = Limits {
        now: options.clock.now_ms(),
        quota: caller.quota,
        per_minute_limit: options.per_minute_limit,
    };
    // Every request counts toward the daily quota, failed ones included (as OpenRouter does).
    let admission = shared
        .accounts
        .admit(&caller.account, limits.now, limits.per_minute_limit);
    let stream_fault = match fault {
        Some(Fault::Hang) => return (Answer::Hang, 0),
        Some(fault) => match status_fault(&limits, call, fault) {
            Ok(refused) => return now(refused),
            Err(stream_fault) => Some(stream_fault),
        },
        None => None,
    };
    if let Some(refused) = limits.refusal(&admission) {
        return now(refused);
    }
    let answering = if call.model == FREE_ROUTER_MODEL {
        options.free_router_picks.clone()
    } else {
        call.model.clone()
    };
    let Some(sim_model) = options.models.iter().find(|m| m.id == answering) else {
        let message = format!("No endpoints found for {}.", call.model);
        return now(error(StatusCode::NOT_FOUND, &message));
    };
    let chars = prompt_chars(&call.messages);
    let too_long = options.max_prompt_chars.is_some_and(|max| chars > max)
        || (chars as u64).div_ceil(4) > sim_model.context_length;
    if too_long {
        return now(context_400());
    }
    reply(shared, &answering, call, limits.now, stream_fault)
}

/// An answer sent at once, with its status for the log.
fn now(response: Response) -> (Answer, u16) {
    let status = response.status().as_u16();
    (Answer::Now(response), status)
}

/// The error answer of a fault that replaces the whole response; a stream fault is handed back.
fn status_fault(limits: &Limits, call: &ChatCall, fault: Fault) -> Result<Response, Fault> {
    let refused = match fault {
        Fault::RateLimitPerMinute { retry_after_secs } => {
            limits.minute_429(limits.now + i64::try_from(retry_after_secs).unwrap_or(0) * 1000)
        }
        Fault::RateLimitResetOnly { reset_in_secs } => {
            let mut r =
                limits.minute_429(limits.now + i64::try_from(reset_in_secs).unwrap_or(0) * 1000);
            r.headers_mut().remove("retry-after");
            r
        }
        Fault::RateLimitDaily => limits.daily_429(),
        Fault::Moderated => {
            let model = &call.model;
            let body = json!({"error": {
                "code": 403,
                "message": format!("{model} requires moderation on OpenInference. Your input was flagged for \"harassment\". No credits were charged."),
                "metadata": {"reasons": ["harassment"], "flagged_input": last_user_message(&call.messages),
                             "provider_name": "OpenInference", "model_slug": model},
            }});
            json(StatusCode::FORBIDDEN, body)
        }
        Fault::PaymentRequired => error(
            StatusCode::PAYMENT_REQUIRED,
            "Insufficient credits. This account never purchased credits.",
        ),
        Fault::Unauthorized => error(StatusCode::UNAUTHORIZED, "User not found."),
        Fault::ServerError => error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
        Fault::ContextTooLong => context_400(),
        stream_fault => return Err(stream_fault),
    };
    Ok(refused)
}

fn context_400() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "This endpoint's maximum context length is exceeded: please reduce the length of the messages.",
    )
}

/// The reply of `answering`: one JSON completion, or an SSE stream with the stream `fault` applied.
fn reply(
    shared: &Shared,
    answering: &str,
    call: &ChatCall,
    now_ms: i64,
    fault: Option<Fault>,
) -> (Answer, u16) {
    let shape = shared.desk.reply();
    let last_user = last_user_message(&call.messages);
    let text = reply_text(answering, &last_user, shape.sentences);
    let plan = features::plan(&call.asked, answering, &last_user, text);
    let pieces = stream::pieces(
        &plan,
        call.asked.reasoning,
        shape.words_per_chunk,
        CALL_PARTS,
    );
    let said: String = pieces.iter().map(piece_text).collect();
    let prompt_tokens = (prompt_chars(&call.messages) as u64).div_ceil(4);
    let completion_tokens = said.split_whitespace().count() as u64;
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let finish_reason = match plan {
        Plan::Call(_) => "tool_calls",
        Plan::Text(_) => "stop",
    };
    if !call.stream {
        let message = whole_message(&plan, &pieces);
        let body = json!({
            "id": "gen-sim",
            "object": "chat.completion",
            "created": now_ms / 1000,
            "model": answering,
            "provider": "Simulator",
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": usage,
        });
        let response = json(StatusCode::OK, body);
        return (Answer::After(shape.first_byte_latency, response), 200);
    }
    let ending = Ending {
        finish_reason,
        usage: call.asked.include_usage.then_some(&usage),
    };
    let steps = sse_script(&shape, answering, now_ms, &pieces, &ending, fault);
    let mut response = stream::streamed(&shared.desk, steps, "text/event-stream");
    set_header(&mut response, "cache-control", "no-cache");
    let delay = if shape.keep_alive {
        Duration::ZERO // The latency is spent inside the body, after a keep-alive.
    } else {
        shape.first_byte_latency
    };
    (Answer::After(delay, response), 200)
}

/// A streamed tool call's arguments go out in this many pieces after the one naming the function,
/// as OpenAI and OpenRouter split them: a client must join them.
const CALL_PARTS: usize = 3;

/// The text a piece says (answer, reasoning or call arguments), for the usage count.
fn piece_text(piece: &Piece) -> &str {
    match piece {
        Piece::Text(t) | Piece::Reasoning(t) => t,
        Piece::Call { arguments, .. } => arguments,
    }
}

/// The non-streamed answer's message: the text, or the tool call (`content: null`), with the
/// reasoning as OpenRouter returns it.
fn whole_message(plan: &Plan, pieces: &[Piece]) -> serde_json::Value {
    let reasoning: String = pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Reasoning(r) => Some(r.as_str()),
            _ => None,
        })
        .collect();
    let mut message = match plan {
        Plan::Text(text) => json!({"role": "assistant", "content": text}),
        Plan::Call(call) => json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_sim_0", "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}]}),
    };
    if !reasoning.is_empty() {
        message["reasoning"] = reasoning.into();
    }
    message
}
