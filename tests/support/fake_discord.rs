//! The fake Discord shared by `tests/discord.rs` and `benches/discord.rs`: REST under `/api/v10` and a
//! `ws://` gateway on 127.0.0.1, built by ONE function, [`fake_discord`], which records every call and
//! refuses (records + 404) any route it does not expect.
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The canary token: it must never appear in any log line of any test.
pub const TOKEN: &str = "MTAxNTk0NzQ0.canary-discord-token.Zx9QpL";
pub const BOT_ID: &str = "900000000000000001";
pub const APP_ID: &str = "900000000000000002";
pub const ALICE: &str = "100000000000000011";
pub const BOB: &str = "100000000000000012";
pub const DM_CHANNEL: &str = "300000000000000001";
pub const GUILD: &str = "400000000000000001";
pub const GUILD_CHANNEL: &str = "400000000000000002";
/// A thread under `GUILD_CHANNEL`.
pub const THREAD_CHANNEL: &str = "400000000000000003";
/// Another guild channel.
pub const OTHER_CHANNEL: &str = "400000000000000004";

// ---------------------------------------------------------------------------------------------------
// The fake Discord.

/// One REST call the fake received.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Value,
    pub at: Instant,
}

/// What the test tells the gateway to do.
pub enum GatewayCommand {
    Dispatch(&'static str, Value),
    /// Close the socket with this (resumable) code, as a network drop or a Discord restart would.
    Drop(u16),
}

#[derive(Default)]
pub struct FakeState {
    pub calls: Mutex<Vec<Call>>,
    pub unexpected: Mutex<Vec<String>>,
    pub next_id: AtomicU64,
    /// Edits to answer with 429 before accepting them, and the `retry_after` (s) to send.
    pub edits_to_refuse: Mutex<u32>,
    pub retry_after: Mutex<f64>,
    /// When the 429s were sent.
    pub refused_at: Mutex<Vec<Instant>>,
    /// Posts carrying a `message_reference` to refuse with 403 160002 (no permission to read the
    /// history the reply would quote), as Discord does.
    pub refuse_referenced_posts: Mutex<u32>,
    /// Posts to refuse outright with 403 50013 (Missing Permissions).
    pub refuse_posts: Mutex<u32>,
    /// The posts refused so far (their bodies).
    pub refused_posts: Mutex<Vec<Value>>,
    /// Close the gateway with this code right after IDENTIFY.
    pub close_on_identify: Mutex<Option<u16>>,
    pub identify: Mutex<Option<Value>>,
    pub heartbeats: AtomicU64,
    /// Sequence numbers continue across connections, as Discord's do within a session.
    pub seq: AtomicU64,
    pub resumes: AtomicU64,
    /// Accept every RESUME (answer RESUMED), then drop the connection at once with a resumable close:
    /// the misbehaving gateway that drove a reconnect storm.
    pub drop_after_resume: std::sync::atomic::AtomicBool,
    /// The last dispatch, replayed after a RESUME (as Discord replays missed events).
    pub last_dispatch: Mutex<Option<(&'static str, Value)>>,
    pub threads: Mutex<HashSet<String>>,
    pub gateway: Mutex<Option<mpsc::UnboundedSender<GatewayCommand>>>,
    /// Messages the bot created, by id.
    pub created: Mutex<Vec<Value>>,
    /// Slash-command answers (the deferred "original" response), by interaction token: each is its own
    /// message with its own id, as on Discord.
    pub originals: Mutex<Vec<(String, Value)>>,
    pub addr: OnceLock<SocketAddr>,
    /// Woken whenever the bot creates a message (benchmarks wait on it).
    pub posted: tokio::sync::Notify,
    /// Attachment files on the fake CDN, by path under `/attachments/`; `None` bytes answer 404.
    pub cdn: Mutex<std::collections::HashMap<String, Option<Arc<Vec<u8>>>>>,
    /// CDN paths downloaded, in order.
    pub cdn_downloads: Mutex<Vec<String>>,
}

/// A running fake Discord.
#[derive(Clone)]
pub struct FakeDiscord {
    pub state: Arc<FakeState>,
}

/// Builds and starts the fake Discord: REST under `/api/v10` and the gateway at `/ws`, both on
/// 127.0.0.1. Any other route is recorded in `unexpected` and answered 404 (asserted empty by every test).
pub async fn fake_discord() -> FakeDiscord {
    let state = Arc::new(FakeState {
        next_id: AtomicU64::new(700_000_000_000_000_000),
        retry_after: Mutex::new(1.0),
        ..FakeState::default()
    });
    let app = Router::new()
        .route("/api/v10/gateway", get(gateway_info))
        .route("/api/v10/users/@me", get(current_user))
        .route("/api/v10/channels/{channel}", get(channel_info))
        .route("/api/v10/channels/{channel}/messages", post(create_message))
        .route(
            "/api/v10/channels/{channel}/messages/{message}",
            patch(edit_message),
        )
        .route("/api/v10/channels/{channel}/typing", post(typing))
        .route(
            "/api/v10/applications/{app}/commands",
            put(register_commands),
        )
        .route(
            "/api/v10/applications/{app}/guilds/{guild}/commands",
            put(register_commands),
        )
        .route(
            "/api/v10/interactions/{id}/{token}/callback",
            post(interaction_callback),
        )
        .route(
            "/api/v10/webhooks/{app}/{token}/messages/{message}",
            patch(edit_webhook_message),
        )
        .route("/api/v10/webhooks/{app}/{token}", post(followup))
        .route("/attachments/{*path}", get(cdn_file))
        .route("/ws", get(gateway_socket))
        .fallback(unexpected)
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    state.addr.set(listener.local_addr().unwrap()).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    FakeDiscord { state }
}

fn record(state: &FakeState, method: Method, uri: &Uri, body: Value) {
    state.calls.lock().unwrap().push(Call {
        method,
        path: uri.path().to_owned(),
        body,
        at: Instant::now(),
    });
}

pub fn message_json(id: &str, channel: &str, author: Value, content: &str) -> Value {
    json!({
        "id": id, "channel_id": channel, "author": author, "content": content,
        "timestamp": "2026-11-22T02:00:00.000000+00:00", "edited_timestamp": null,
        "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
        "attachments": [], "embeds": [], "pinned": false, "type": 0,
    })
}

pub fn bot_user() -> Value {
    json!({"id": BOT_ID, "username": "switchboard", "discriminator": "0", "global_name": null, "bot": true})
}

pub fn user(id: &str, name: &str) -> Value {
    json!({"id": id, "username": name.to_lowercase(), "discriminator": "0", "global_name": name, "bot": false})
}

/// `GET /users/@me`: the bot, for the right token only; anything else gets Discord's 401.
async fn current_user(
    State(s): State<Arc<FakeState>>,
    headers: axum::http::HeaderMap,
    uri: Uri,
) -> Response {
    record(&s, Method::GET, &uri, Value::Null);
    let authorized = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(format!("Bot {TOKEN}").as_str());
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "401: Unauthorized", "code": 0})),
        )
            .into_response();
    }
    Json(bot_user()).into_response()
}

async fn gateway_info(State(s): State<Arc<FakeState>>, uri: Uri) -> Json<Value> {
    record(&s, Method::GET, &uri, Value::Null);
    Json(json!({ "url": format!("ws://{}/ws", s.addr.get().unwrap()) }))
}

async fn channel_info(
    State(s): State<Arc<FakeState>>,
    Path(channel): Path<String>,
    uri: Uri,
) -> Json<Value> {
    record(&s, Method::GET, &uri, Value::Null);
    let is_thread = s.threads.lock().unwrap().contains(&channel);
    Json(if is_thread {
        json!({"id": channel, "type": 11, "guild_id": GUILD, "parent_id": GUILD_CHANNEL})
    } else {
        json!({"id": channel, "type": 0, "guild_id": GUILD})
    })
}

async fn create_message(
    State(s): State<Arc<FakeState>>,
    Path(channel): Path<String>,
    uri: Uri,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refusal) = refuse_post(&s, &body) {
        return refusal;
    }
    record(&s, Method::POST, &uri, body.clone());
    let id = s.next_id.fetch_add(1, Ordering::SeqCst).to_string();
    let content = body["content"].as_str().unwrap_or_default();
    let message = message_json(&id, &channel, bot_user(), content);
    s.created.lock().unwrap().push(message.clone());
    s.posted.notify_waiters();
    Json(message).into_response()
}

/// A 403 for a post the test told the fake to refuse (see `refuse_referenced_posts`, `refuse_posts`).
fn refuse_post(s: &FakeState, body: &Value) -> Option<Response> {
    let (code, message) =
        if body.get("message_reference").is_some() && take_one(&s.refuse_referenced_posts) {
            (
                160_002,
                "Cannot reply without permission to read message history",
            )
        } else if take_one(&s.refuse_posts) {
            (50_013, "Missing Permissions")
        } else {
            return None;
        };
    s.refused_posts.lock().unwrap().push(body.clone());
    Some(
        (
            StatusCode::FORBIDDEN,
            Json(json!({"message": message, "code": code})),
        )
            .into_response(),
    )
}

/// Takes one from a countdown; false when it is at zero.
fn take_one(counter: &Mutex<u32>) -> bool {
    let mut n = counter.lock().unwrap();
    let some = *n > 0;
    *n = n.saturating_sub(1);
    some
}

async fn edit_message(
    State(s): State<Arc<FakeState>>,
    Path((channel, message)): Path<(String, String)>,
    uri: Uri,
    Json(body): Json<Value>,
) -> Response {
    {
        let mut refuse = s.edits_to_refuse.lock().unwrap();
        if *refuse > 0 {
            *refuse -= 1;
            s.refused_at.lock().unwrap().push(Instant::now());
            let retry_after = *s.retry_after.lock().unwrap();
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", format!("{}", retry_after.ceil()))],
                Json(json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": false})),
            )
                .into_response();
        }
    }
    record(&s, Method::PATCH, &uri, body.clone());
    let content = body["content"].as_str().unwrap_or_default();
    Json(message_json(&message, &channel, bot_user(), content)).into_response()
}

async fn typing(State(s): State<Arc<FakeState>>, uri: Uri) -> StatusCode {
    record(&s, Method::POST, &uri, Value::Null);
    StatusCode::NO_CONTENT
}

async fn register_commands(
    State(s): State<Arc<FakeState>>,
    uri: Uri,
    Json(body): Json<Value>,
) -> Json<Value> {
    record(&s, Method::PUT, &uri, body.clone());
    Json(body)
}

async fn interaction_callback(
    State(s): State<Arc<FakeState>>,
    uri: Uri,
    Json(body): Json<Value>,
) -> StatusCode {
    record(&s, Method::POST, &uri, body);
    StatusCode::NO_CONTENT
}

async fn edit_webhook_message(
    State(s): State<Arc<FakeState>>,
    Path((_app, token, message)): Path<(String, String, String)>,
    uri: Uri,
    Json(body): Json<Value>,
) -> Json<Value> {
    record(&s, Method::PATCH, &uri, body.clone());
    let content = body["content"].as_str().unwrap_or_default();
    if message != "@original" {
        return Json(message_json(&message, GUILD_CHANNEL, bot_user(), content));
    }
    let mut originals = s.originals.lock().unwrap();
    let id = match originals.iter().find(|(t, _)| *t == token) {
        Some((_, m)) => m["id"].as_str().unwrap().to_owned(),
        None => s.next_id.fetch_add(1, Ordering::SeqCst).to_string(),
    };
    let answer = message_json(&id, GUILD_CHANNEL, bot_user(), content);
    originals.retain(|(t, _)| *t != token);
    originals.push((token, answer.clone()));
    Json(answer)
}

async fn followup(
    State(s): State<Arc<FakeState>>,
    uri: Uri,
    Json(body): Json<Value>,
) -> Json<Value> {
    record(&s, Method::POST, &uri, body.clone());
    let id = s.next_id.fetch_add(1, Ordering::SeqCst).to_string();
    let content = body["content"].as_str().unwrap_or_default();
    Json(message_json(&id, GUILD_CHANNEL, bot_user(), content))
}

async fn unexpected(State(s): State<Arc<FakeState>>, method: Method, uri: Uri) -> Response {
    s.unexpected.lock().unwrap().push(format!("{method} {uri}"));
    (
        StatusCode::NOT_FOUND,
        Json(json!({"message": "unexpected route in the fake Discord", "code": 0})),
    )
        .into_response()
}

/// The CDN: `GET /attachments/{channel}/{id}/{filename}`, as `cdn.discordapp.com` serves attachments.
async fn cdn_file(State(s): State<Arc<FakeState>>, Path(path): Path<String>) -> Response {
    s.cdn_downloads.lock().unwrap().push(path.clone());
    match s.cdn.lock().unwrap().get(&path) {
        Some(Some(bytes)) => (
            [("content-type", "application/octet-stream")],
            bytes.to_vec(),
        )
            .into_response(),
        Some(None) => (StatusCode::NOT_FOUND, "Not Found").into_response(),
        None => {
            s.unexpected
                .lock()
                .unwrap()
                .push(format!("GET /attachments/{path}"));
            (StatusCode::NOT_FOUND, "Not Found").into_response()
        }
    }
}

async fn gateway_socket(State(s): State<Arc<FakeState>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| run_gateway(s, socket))
}

async fn send_json(socket: &mut WebSocket, value: Value) -> bool {
    socket
        .send(WsMessage::Text(value.to_string().into()))
        .await
        .is_ok()
}

/// The gateway: HELLO, wait for IDENTIFY, READY (or the configured close), then dispatches on command
/// and heartbeat ACKs.
async fn run_gateway(s: Arc<FakeState>, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    *s.gateway.lock().unwrap() = Some(tx);
    if !send_json(
        &mut socket,
        json!({"op": 10, "d": {"heartbeat_interval": 41_250}}),
    )
    .await
    {
        return;
    }
    loop {
        tokio::select! {
            frame = socket.recv() => {
                let Some(Ok(frame)) = frame else { return };
                let WsMessage::Text(text) = frame else { continue };
                let payload: Value = serde_json::from_str(text.as_str()).unwrap();
                match payload["op"].as_u64() {
                    Some(1) => {
                        s.heartbeats.fetch_add(1, Ordering::SeqCst);
                        if !send_json(&mut socket, json!({"op": 11})).await { return; }
                    }
                    Some(2) => {
                        *s.identify.lock().unwrap() = Some(payload.clone());
                        let close = *s.close_on_identify.lock().unwrap();
                        if let Some(code) = close {
                            let _ = socket.send(WsMessage::Close(Some(CloseFrame {
                                code,
                                reason: "Disallowed intent(s).".into(),
                            }))).await;
                            return;
                        }
                        let seq = s.seq.fetch_add(1, Ordering::SeqCst) + 1;
                        let ready = json!({"op": 0, "s": seq, "t": "READY", "d": {
                            "v": 10, "user": {"id": BOT_ID, "username": "switchboard", "discriminator": "0",
                                "bot": true, "verified": true, "mfa_enabled": false, "flags": 0,
                                "global_name": null, "avatar": null},
                            "guilds": [], "session_id": "fake-session",
                            "resume_gateway_url": format!("ws://{}/ws", s.addr.get().unwrap()),
                            "shard": [0, 1], "application": {"id": APP_ID, "flags": 0}}});
                        if !send_json(&mut socket, ready).await { return; }
                    }
                    Some(6) => {
                        s.resumes.fetch_add(1, Ordering::SeqCst);
                        let seq = s.seq.fetch_add(1, Ordering::SeqCst) + 1;
                        if !send_json(&mut socket, json!({"op": 0, "s": seq, "t": "RESUMED", "d": {}})).await { return; }
                        if s.drop_after_resume.load(Ordering::SeqCst) {
                            let _ = socket.send(WsMessage::Close(Some(CloseFrame {
                                code: 4000,
                                reason: "dropped right after the resume".into(),
                            }))).await;
                            return;
                        }
                        let replay = s.last_dispatch.lock().unwrap().clone();
                        if let Some((kind, data)) = replay {
                            let seq = s.seq.fetch_add(1, Ordering::SeqCst) + 1;
                            if !send_json(&mut socket, json!({"op": 0, "s": seq, "t": kind, "d": data})).await { return; }
                        }
                    }
                    _ => {}
                }
            }
            command = rx.recv() => match command {
                Some(GatewayCommand::Dispatch(kind, data)) => {
                    let seq = s.seq.fetch_add(1, Ordering::SeqCst) + 1;
                    *s.last_dispatch.lock().unwrap() = Some((kind, data.clone()));
                    if !send_json(&mut socket, json!({"op": 0, "s": seq, "t": kind, "d": data})).await { return; }
                }
                Some(GatewayCommand::Drop(code)) => {
                    let _ = socket.send(WsMessage::Close(Some(CloseFrame {
                        code,
                        reason: "dropped by the test".into(),
                    }))).await;
                    return;
                }
                None => return,
            }
        }
    }
}

impl FakeDiscord {
    pub fn url(&self) -> String {
        format!("http://{}", self.state.addr.get().unwrap())
    }

    /// Puts a file on the fake CDN and returns its attachment object, as a message carries it.
    /// `bytes: None` makes the URL answer 404 (an expired or deleted attachment).
    pub fn attachment(
        &self,
        channel: &str,
        name: &str,
        content_type: &str,
        bytes: Option<Vec<u8>>,
    ) -> Value {
        let id = self
            .state
            .next_id
            .fetch_add(1, Ordering::SeqCst)
            .to_string();
        let path = format!("{channel}/{id}/{name}");
        let size = bytes.as_ref().map_or(0, Vec::len);
        self.state
            .cdn
            .lock()
            .unwrap()
            .insert(path.clone(), bytes.map(Arc::new));
        let url = format!("{}/attachments/{path}", self.url());
        json!({"id": id, "filename": name, "size": size, "url": url, "proxy_url": url, "content_type": content_type})
    }

    /// CDN paths downloaded so far.
    pub fn cdn_downloads(&self) -> Vec<String> {
        self.state.cdn_downloads.lock().unwrap().clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    pub fn dispatch(&self, kind: &'static str, data: Value) {
        self.command(GatewayCommand::Dispatch(kind, data));
    }

    pub fn command(&self, command: GatewayCommand) {
        let gateway = self.state.gateway.lock().unwrap();
        gateway
            .as_ref()
            .expect("the gateway is connected")
            .send(command)
            .unwrap();
    }

    /// Messages created in `channel` and edits to them: (message id, final content), in creation order.
    pub fn messages_in(&self, channel: &str) -> Vec<(String, String)> {
        let created: Vec<(String, String)> = self
            .state
            .created
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m["channel_id"] == channel)
            .map(|m| {
                (
                    m["id"].as_str().unwrap().to_owned(),
                    m["content"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let calls = self.calls();
        created
            .into_iter()
            .map(|(id, first)| {
                let last = calls
                    .iter()
                    .rev()
                    .find(|c| {
                        c.method == Method::PATCH
                            && c.path == format!("/api/v10/channels/{channel}/messages/{id}")
                    })
                    .map_or(first, |c| c.body["content"].as_str().unwrap().to_owned());
                (id, last)
            })
            .collect()
    }

    /// Makes `channel` a public thread (the channel lookup answers type 11).
    pub fn mark_thread(&self, channel: &str) {
        self.state
            .threads
            .lock()
            .unwrap()
            .insert(channel.to_owned());
    }

    /// A message the bot wrote: a created one or a slash command's answer.
    pub fn created(&self, id: &str) -> Value {
        let created = self.state.created.lock().unwrap().clone();
        let originals = self.state.originals.lock().unwrap().clone();
        created
            .into_iter()
            .chain(originals.into_iter().map(|(_, m)| m))
            .find(|m| m["id"] == id)
            .unwrap()
    }

    /// The id of the message answering the slash command with `token`, once it has been written.
    pub fn original_id(&self, token: &str) -> Option<String> {
        self.state
            .originals
            .lock()
            .unwrap()
            .iter()
            .find(|(t, _)| t == token)
            .map(|(_, m)| m["id"].as_str().unwrap().to_owned())
    }

    /// Waits (in paused time) until `done` holds; panics once five virtual minutes *and* a real minute
    /// have passed. The real minute matters: while the test waits on work in real time (a socket, a
    /// thread), paused time races ahead 20 ms per idle moment, and a busy machine could otherwise burn
    /// the virtual budget before the work is done.
    pub async fn wait_until(&self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(300);
        let real_deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !done(self) {
            assert!(
                Instant::now() < deadline || std::time::Instant::now() < real_deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn assert_no_unexpected_routes(&self) {
        let unexpected = self.state.unexpected.lock().unwrap().clone();
        assert!(unexpected.is_empty(), "unexpected routes: {unexpected:?}");
    }
}
