//! A fake Telegram Bot API on 127.0.0.1 for tests and benchmarks: answers the methods the adapter uses
//! (case-insensitively, as Telegram does: teloxide sends PascalCase), keeps messages so edits behave like
//! Telegram's (an identical edit is "message is not modified"), long-polls `getUpdates` with offsets,
//! records every call with its (tokio) time, injects one-shot faults, and records anything unexpected
//! (wrong token path, unknown method) so a test can fail loudly. It never answers 5xx unless a test asks
//! for it (teloxide sleeps 10 s after one). Updates are kept as raw JSON text, so a test can send what
//! serde cannot decode (a lone surrogate escape), as Telegram can.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The token tests use: a canary that must never appear in logs or replies.
pub const TOKEN: &str = "7777777:CANARY-telegram-token-aBcD";
/// The fake bot's user id.
pub const BOT_ID: i64 = 4242;
/// The fake bot's username.
pub const BOT_USERNAME: &str = "switchboard_bot";

/// One call the fake received.
#[derive(Clone, Debug)]
pub struct Call {
    /// The method, lowercased (`sendmessage`).
    pub method: String,
    /// The JSON body.
    pub body: Value,
    /// When it arrived (tokio time, so paused-time tests can measure gaps).
    pub at: Instant,
    /// Whether an injected fault answered it.
    pub faulted: bool,
}

impl Call {
    /// The `chat_id` of the call, if any.
    pub fn chat(&self) -> Option<i64> {
        self.body.get("chat_id").and_then(Value::as_i64)
    }
    /// The `text` of the call, if any.
    pub fn text(&self) -> Option<&str> {
        self.body.get("text").and_then(Value::as_str)
    }
    /// Whether the call asked for HTML parsing.
    pub fn is_html(&self) -> bool {
        self.body.get("parse_mode").and_then(Value::as_str) == Some("HTML")
    }
}

/// A one-shot fault for the next call of a method.
#[derive(Clone, Debug)]
pub enum Fault {
    /// 429 with `retry_after`.
    RetryAfter(u32),
    /// 400 "can't parse entities".
    CantParseEntities,
    /// 400 "message is not modified".
    NotModified,
    /// 409 another getUpdates.
    Conflict,
    /// 401 Unauthorized.
    Unauthorized,
    /// 500 Internal Server Error (teloxide sleeps 10 s after any 5xx before returning it).
    ServerError,
    /// 502 with an HTML page, as a proxy in front of the Bot API answers when it is down.
    BadGateway,
}

/// An update as the fake will send it: its id and its raw JSON text.
#[derive(Clone, Debug)]
struct RawUpdate {
    id: i64,
    json: String,
}

impl RawUpdate {
    fn from_value(update: &Value) -> Self {
        Self {
            id: update["update_id"].as_i64().unwrap_or(0),
            json: update.to_string(),
        }
    }
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    record: bool,
    updates: VecDeque<RawUpdate>,
    next_update_id: i64,
    acked_offset: i64,
    faults: HashMap<String, VecDeque<Fault>>,
    unexpected: Vec<String>,
    /// (chat, message id) → current text.
    messages: HashMap<(i64, i64), String>,
    /// (chat, message id) → every text the message showed, oldest first (sent, then each edit).
    shown: HashMap<(i64, i64), Vec<String>>,
    /// (chat, bot message id) → the message it replies to (`reply_parameters.message_id`).
    replies: HashMap<(i64, i64), i64>,
    /// Keep messages and their texts but not the call log (long runs).
    calls_off: bool,
    next_message_id: HashMap<i64, i64>,
    /// Final-text hook for benchmarks: (chat, when) of every sendMessage/editMessageText whose text
    /// ends with `final_suffix` (every one when unset).
    delivered: Vec<(i64, Instant)>,
    final_suffix: Option<String>,
    /// sendMessage, editMessageText and sendChatAction calls answered (counted even unrecorded).
    writes: u64,
    /// Every update queued with `push_message`, for redelivery.
    pushed: Vec<Value>,
    /// How many getUpdates answers carried each update id.
    deliveries: HashMap<i64, usize>,
    /// Files users sent, by `file_id`.
    files: HashMap<String, StoredFile>,
    /// Downloads served, by `file_path`.
    downloads: Vec<String>,
}

/// The largest file the Bot API lets a bot download through `getFile` (20 MB).
pub const GET_FILE_LIMIT: usize = 20 * 1024 * 1024;

/// A file the fake holds for `getFile` and the file URL.
#[derive(Clone, Debug)]
struct StoredFile {
    path: String,
    /// Shared, so a download sends the bytes without copying them (benchmarks serve many at once).
    bytes: bytes::Bytes,
    serve: FileServe,
}

/// How the file URL answers for one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileServe {
    /// The bytes, with a true Content-Length.
    Whole,
    /// 404 at the file URL (the file expired on Telegram's side).
    Missing,
    /// A few bytes, then nothing more, ever (a stalled download).
    Stall,
    /// Claims a tiny Content-Length-free body but streams all bytes (the cap must be counted).
    Chunked,
}

/// One size of a photo the fake sends.
#[derive(Clone, Debug)]
pub struct PhotoFile {
    pub width: u32,
    pub height: u32,
    pub bytes: Vec<u8>,
    /// What `file_size` says; `None` leaves it out (Telegram may).
    pub announced: Option<usize>,
    pub serve: FileServe,
}

impl PhotoFile {
    /// A size served whole with its true `file_size`.
    pub fn new(width: u32, height: u32, bytes: Vec<u8>) -> Self {
        let announced = Some(bytes.len());
        Self {
            width,
            height,
            bytes,
            announced,
            serve: FileServe::Whole,
        }
    }
}

struct Shared {
    inner: Mutex<Inner>,
    new_updates: Notify,
    token_path: String,
}

/// The running fake.
#[derive(Clone)]
pub struct FakeTelegram {
    /// Its base URL (`http://127.0.0.1:PORT`), for `telegram.api_url`.
    pub url: String,
    shared: Arc<Shared>,
}

impl FakeTelegram {
    /// Starts a fake that records every call.
    pub async fn start() -> Self {
        Self::start_with(true).await
    }

    /// Starts a fake; `record = false` keeps only delivery times (benchmarks).
    pub async fn start_with(record: bool) -> Self {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                record,
                next_update_id: 1000,
                ..Inner::default()
            }),
            new_updates: Notify::new(),
            token_path: format!("bot{TOKEN}"),
        });
        let app = Router::new()
            .route("/{bot}/{method}", post(handle))
            .route("/file/{bot}/{*path}", get(download))
            .fallback(unexpected_route)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, shared }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap()
    }

    /// Queues a text message from a user; returns its message id.
    pub fn push_text(&self, chat: i64, user: i64, name: &str, text: &str) -> i64 {
        self.push_message(chat, user, name, text, None)
    }

    /// Queues a text message that replies to message `reply_to` (sent by the bot if `to_bot`).
    pub fn push_message(
        &self,
        chat: i64,
        user: i64,
        name: &str,
        text: &str,
        reply_to: Option<(i64, bool)>,
    ) -> i64 {
        let mut inner = self.lock();
        let id = next_id(&mut inner, chat);
        let mut message = message_json(chat, id, text, user, name, false);
        if let Some((reply_id, to_bot)) = reply_to {
            let (from, from_name) = if to_bot {
                (BOT_ID, "Switchboard")
            } else {
                (user + 1, "Someone")
            };
            message["reply_to_message"] =
                message_json(chat, reply_id, "earlier", from, from_name, to_bot);
        }
        let update_id = inner.next_update_id;
        inner.next_update_id += 1;
        let update = json!({"update_id": update_id, "message": message});
        inner.updates.push_back(RawUpdate::from_value(&update));
        if inner.record {
            inner.pushed.push(update);
        }
        drop(inner);
        self.shared.new_updates.notify_waiters();
        id
    }

    /// Queues a photo (its sizes, smallest first, as Telegram lists them) with an optional caption;
    /// returns its message id. Each size becomes a file `getFile` knows.
    pub fn push_photo(
        &self,
        chat: i64,
        user: i64,
        caption: Option<&str>,
        sizes: Vec<PhotoFile>,
    ) -> i64 {
        let photo: Vec<Value> = sizes
            .into_iter()
            .map(|size| {
                let id = self.store_file("photos", "jpg", size.bytes, size.serve);
                let mut json = json!({"file_id": id, "file_unique_id": format!("u{id}"), "width": size.width, "height": size.height});
                if let Some(n) = size.announced {
                    json["file_size"] = json!(n);
                }
                json
            })
            .collect();
        self.push_media(chat, user, caption, "photo", json!(photo))
    }

    /// Queues a document named `name` of `mime_type` with an optional caption; returns its message id.
    pub fn push_document(
        &self,
        chat: i64,
        user: i64,
        caption: Option<&str>,
        name: &str,
        mime_type: &str,
        bytes: Vec<u8>,
    ) -> i64 {
        let size = bytes.len();
        let ext = name.rsplit('.').next().unwrap_or("bin").to_owned();
        let id = self.store_file("documents", &ext, bytes, FileServe::Whole);
        let doc = json!({"file_id": id, "file_unique_id": format!("u{id}"), "file_name": name, "mime_type": mime_type, "file_size": size});
        self.push_media(chat, user, caption, "document", doc)
    }

    /// Stores a JPEG photo file once, for many [`Self::push_photo_id`] messages (benchmarks); returns
    /// its `file_id`.
    pub fn add_photo_file(&self, bytes: Vec<u8>) -> String {
        self.store_file("photos", "jpg", bytes, FileServe::Whole)
    }

    /// Queues a one-size photo of a file stored with [`Self::add_photo_file`]; returns its message id.
    pub fn push_photo_id(&self, chat: i64, user: i64, caption: Option<&str>, file_id: &str) -> i64 {
        let size = self.lock().files[file_id].bytes.len();
        let photo = json!([{"file_id": file_id, "file_unique_id": format!("u{file_id}"),
            "width": 1280, "height": 960, "file_size": size}]);
        self.push_media(chat, user, caption, "photo", photo)
    }

    fn store_file(&self, dir: &str, ext: &str, bytes: Vec<u8>, serve: FileServe) -> String {
        let mut inner = self.lock();
        let n = inner.files.len();
        let id = format!("AgACAgIAAx{n:04}");
        let path = format!("{dir}/file_{n}.{ext}");
        inner.files.insert(
            id.clone(),
            StoredFile {
                path,
                bytes: bytes::Bytes::from(bytes),
                serve,
            },
        );
        id
    }

    fn push_media(
        &self,
        chat: i64,
        user: i64,
        caption: Option<&str>,
        field: &str,
        media: Value,
    ) -> i64 {
        let mut inner = self.lock();
        let id = next_id(&mut inner, chat);
        let mut message = message_json(chat, id, "", user, "Alice", false);
        let body = message.as_object_mut().unwrap();
        body.remove("text");
        body.insert(field.to_owned(), media);
        if let Some(caption) = caption {
            body.insert("caption".into(), json!(caption));
        }
        let update_id = inner.next_update_id;
        inner.next_update_id += 1;
        let update = json!({"update_id": update_id, "message": message});
        inner.updates.push_back(RawUpdate::from_value(&update));
        drop(inner);
        self.shared.new_updates.notify_waiters();
        id
    }

    /// The file paths downloaded so far, in order.
    pub fn downloads(&self) -> Vec<String> {
        self.lock().downloads.clone()
    }

    /// Queues an update exactly as given (to redeliver one).
    pub fn push_raw(&self, update: Value) {
        self.lock()
            .updates
            .push_back(RawUpdate::from_value(&update));
        self.shared.new_updates.notify_waiters();
    }

    /// Queues an update whose JSON text `make(update_id)` writes, byte for byte (it may be anything,
    /// even what serde cannot decode); returns its update id.
    pub fn push_raw_json(&self, make: impl FnOnce(i64) -> String) -> i64 {
        let mut inner = self.lock();
        let id = inner.next_update_id;
        inner.next_update_id += 1;
        inner.updates.push_back(RawUpdate { id, json: make(id) });
        drop(inner);
        self.shared.new_updates.notify_waiters();
        id
    }

    /// Queues a text message whose `text` is written into the JSON as `raw_text` verbatim, between the
    /// quotes (e.g. `hi \ud800` for a lone surrogate escape); returns its update id.
    pub fn push_raw_text(&self, chat: i64, user: i64, name: &str, raw_text: &str) -> i64 {
        const MARK: &str = "\u{1}RAW\u{1}";
        let id = next_id(&mut self.lock(), chat);
        let message = message_json(chat, id, MARK, user, name, false);
        let marked = serde_json::to_string(MARK).unwrap();
        self.push_raw_json(|update_id| {
            json!({"update_id": update_id, "message": message})
                .to_string()
                .replace(&marked, &format!("\"{raw_text}\""))
        })
    }

    /// The last update queued with `push_message` (to redeliver it).
    pub fn last_pushed(&self) -> Value {
        self.lock()
            .pushed
            .last()
            .cloned()
            .expect("nothing pushed yet")
    }

    /// Deletes one of the bot's messages, as a user or admin would: later edits of it fail with
    /// "message to edit not found".
    pub fn delete_message(&self, chat: i64, id: i64) {
        assert!(
            self.lock().messages.remove(&(chat, id)).is_some(),
            "no message {id} in chat {chat}"
        );
    }

    /// How many getUpdates answers carried update `update_id`.
    pub fn deliveries(&self, update_id: i64) -> usize {
        self.lock().deliveries.get(&update_id).copied().unwrap_or(0)
    }

    /// The ids of the bot's messages in `chat`, in order.
    pub fn bot_message_ids(&self, chat: i64) -> Vec<i64> {
        let inner = self.lock();
        let mut ids: Vec<i64> = inner
            .messages
            .keys()
            .filter(|(c, _)| *c == chat)
            .map(|(_, id)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Injects a one-shot fault for the next call of `method` (any case).
    pub fn fail_next(&self, method: &str, fault: Fault) {
        self.lock()
            .faults
            .entry(method.to_ascii_lowercase())
            .or_default()
            .push_back(fault);
    }

    /// All calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Calls of `method` (lowercase) so far.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Calls that write into `chat` (send, edit, typing).
    pub fn chat_calls(&self, chat: i64) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method != "getupdates" && c.chat() == Some(chat))
            .cloned()
            .collect()
    }

    /// The current texts of the bot's messages in `chat`, in order.
    pub fn bot_texts(&self, chat: i64) -> Vec<String> {
        let inner = self.lock();
        let mut v: Vec<_> = inner
            .messages
            .iter()
            .filter(|((c, _), _)| *c == chat)
            .map(|((_, id), t)| (*id, t.clone()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, t)| t).collect()
    }

    /// Every text each of the bot's messages in `chat` showed (sent, then each edit), by message id.
    pub fn shown_texts(&self, chat: i64) -> Vec<(i64, Vec<String>)> {
        let inner = self.lock();
        let mut v: Vec<_> = inner
            .shown
            .iter()
            .filter(|((c, _), _)| *c == chat)
            .map(|((_, id), texts)| (*id, texts.clone()))
            .collect();
        v.sort();
        v
    }

    /// The message bot message `id` in `chat` replies to, if it quotes one.
    pub fn replied_to(&self, chat: i64, id: i64) -> Option<i64> {
        self.lock().replies.get(&(chat, id)).copied()
    }

    /// Stops logging calls (messages and their texts are still kept): for long runs.
    pub fn stop_call_log(&self) {
        self.lock().calls_off = true;
    }

    /// Anything the fake did not expect (wrong token, unknown method or route).
    pub fn unexpected(&self) -> Vec<String> {
        self.lock().unexpected.clone()
    }

    /// The highest offset acknowledged by a getUpdates call.
    pub fn acked_offset(&self) -> i64 {
        self.lock().acked_offset
    }

    /// Logs only deliveries whose text ends with `suffix`: a streamed reply's final text (benchmarks).
    pub fn set_final_suffix(&self, suffix: &str) {
        self.lock().final_suffix = Some(suffix.to_owned());
    }

    /// How many sendMessage, editMessageText and sendChatAction calls were answered.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// Takes the delivery log (benchmarks).
    pub fn take_delivered(&self) -> Vec<(i64, Instant)> {
        std::mem::take(&mut self.lock().delivered)
    }

    /// Waits (in tokio time) until `cond` holds, panicking once `limit` *and* a real minute have passed
    /// (under paused time the clock races ahead while the test waits on real work: sockets, sled's
    /// threads; a busy machine must not turn that into a failure).
    pub async fn wait_until(&self, limit: Duration, what: &str, cond: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + limit;
        let real_deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !cond(self) {
            assert!(
                Instant::now() < deadline || std::time::Instant::now() < real_deadline,
                "timed out waiting for: {what}; calls: {:#?}",
                self.summary()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A short readable list of the calls (for assertion messages).
    pub fn summary(&self) -> Vec<String> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method != "getupdates")
            .map(|c| format!("{:?} {} {}", c.at, c.method, c.body))
            .collect()
    }
}

/// Counts one send or edit, and records `chat` as delivered when `text` is a final text (it ends with the
/// benchmark's final suffix, or any text when none is set).
fn count_write(inner: &mut Inner, chat: i64, text: &str) {
    inner.writes += 1;
    if inner
        .final_suffix
        .as_ref()
        .is_none_or(|s| text.ends_with(s))
    {
        inner.delivered.push((chat, Instant::now()));
    }
}

fn next_id(inner: &mut Inner, chat: i64) -> i64 {
    let n = inner.next_message_id.entry(chat).or_insert(1);
    let id = *n;
    *n += 1;
    id
}

fn chat_json(chat: i64) -> Value {
    if chat > 0 {
        json!({"id": chat, "type": "private", "first_name": "Alice"})
    } else {
        json!({"id": chat, "type": "supergroup", "title": "Test group"})
    }
}

fn message_json(chat: i64, id: i64, text: &str, from: i64, name: &str, is_bot: bool) -> Value {
    let mut from_json = json!({"id": from, "is_bot": is_bot, "first_name": name});
    if is_bot {
        from_json["username"] = json!(BOT_USERNAME);
    }
    json!({
        "message_id": id,
        "date": 1_700_000_000,
        "chat": chat_json(chat),
        "from": from_json,
        "text": text,
    })
}

fn ok(result: Value) -> Response {
    Json(json!({"ok": true, "result": result})).into_response()
}

fn error(status: u16, description: &str, parameters: Option<Value>) -> Response {
    let mut body = json!({"ok": false, "error_code": status, "description": description});
    if let Some(p) = parameters {
        body["parameters"] = p;
    }
    (StatusCode::from_u16(status).unwrap(), Json(body)).into_response()
}

fn fault_response(fault: Fault) -> Response {
    match fault {
        Fault::RetryAfter(n) => error(
            429,
            &format!("Too Many Requests: retry after {n}"),
            Some(json!({"retry_after": n})),
        ),
        Fault::CantParseEntities => error(
            400,
            "Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"b\"",
            None,
        ),
        Fault::NotModified => error(
            400,
            "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
            None,
        ),
        Fault::Conflict => error(
            409,
            "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
            None,
        ),
        Fault::Unauthorized => error(401, "Unauthorized", None),
        Fault::ServerError => error(500, "Internal Server Error", None),
        Fault::BadGateway => (
            StatusCode::BAD_GATEWAY,
            [("content-type", "text/html")],
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        )
            .into_response(),
    }
}

/// What Telegram refuses about a message text, judged as Telegram does: after entity parsing (HTML
/// tags removed, entities decoded) the text must not be empty or blank, nor over 4096 UTF-16 units.
fn refuse_text(body: &Value) -> Option<Response> {
    let text = body["text"].as_str().unwrap_or("");
    let visible = if body["parse_mode"].as_str() == Some("HTML") {
        let mut out = String::new();
        let mut in_tag = false;
        for c in text.chars() {
            match c {
                '<' => in_tag = true,
                '>' if in_tag => in_tag = false,
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        out.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
    } else {
        text.to_owned()
    };
    if visible.trim().is_empty() {
        return Some(error(400, "Bad Request: message text is empty", None));
    }
    if visible.encode_utf16().count() > 4096 {
        return Some(error(400, "Bad Request: message is too long", None));
    }
    None
}

async fn unexpected_route(State(shared): State<Arc<Shared>>, uri: axum::http::Uri) -> Response {
    shared.inner.lock().unwrap().unexpected.push(format!(
        "unexpected route {}",
        uri.path().replace(TOKEN, "<TOKEN>")
    ));
    error(404, "Not Found", None)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    let method = method.to_ascii_lowercase();
    let body = body.map_or(Value::Null, |Json(v)| v);
    if bot != shared.token_path {
        shared
            .inner
            .lock()
            .unwrap()
            .unexpected
            .push(format!("wrong token path for {method}"));
        return error(401, "Unauthorized", None);
    }
    let fault = {
        let mut inner = shared.inner.lock().unwrap();
        let fault = inner.faults.get_mut(&method).and_then(VecDeque::pop_front);
        if inner.record && !inner.calls_off {
            inner.calls.push(Call {
                method: method.clone(),
                body: body.clone(),
                at: Instant::now(),
                faulted: fault.is_some(),
            });
        }
        fault
    };
    if let Some(fault) = fault {
        return fault_response(fault);
    }
    match method.as_str() {
        "getwebhookinfo" => {
            ok(json!({"url": "", "has_custom_certificate": false, "pending_update_count": 0}))
        }
        "sendchataction" => {
            shared.inner.lock().unwrap().writes += 1;
            ok(json!(true))
        }
        "deletewebhook" | "setmycommands" => ok(json!(true)),
        "getme" => ok(json!({
            "id": BOT_ID, "is_bot": true, "first_name": "Switchboard", "username": BOT_USERNAME,
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "has_main_web_app": false,
        })),
        "getupdates" => get_updates(&shared, &body).await,
        "getfile" => get_file(&shared, &body),
        "sendmessage" => {
            let chat = body["chat_id"].as_i64().unwrap_or(0);
            let text = body["text"].as_str().unwrap_or("").to_owned();
            if let Some(refused) = refuse_text(&body) {
                return refused;
            }
            let mut inner = shared.inner.lock().unwrap();
            let id = next_id(&mut inner, chat);
            if inner.record {
                inner.messages.insert((chat, id), text.clone());
                inner.shown.insert((chat, id), vec![text.clone()]);
                if let Some(to) = body["reply_parameters"]["message_id"].as_i64() {
                    inner.replies.insert((chat, id), to);
                }
            }
            count_write(&mut inner, chat, &text);
            ok(message_json(chat, id, &text, BOT_ID, "Switchboard", true))
        }
        "editmessagetext" => {
            let chat = body["chat_id"].as_i64().unwrap_or(0);
            let id = body["message_id"].as_i64().unwrap_or(0);
            let text = body["text"].as_str().unwrap_or("").to_owned();
            if let Some(refused) = refuse_text(&body) {
                return refused;
            }
            let mut inner = shared.inner.lock().unwrap();
            if inner.record {
                match inner.messages.get(&(chat, id)) {
                    None => return error(400, "Bad Request: message to edit not found", None),
                    Some(old) if *old == text => return fault_response(Fault::NotModified),
                    Some(_) => {}
                }
                inner.messages.insert((chat, id), text.clone());
                inner
                    .shown
                    .entry((chat, id))
                    .or_default()
                    .push(text.clone());
            }
            count_write(&mut inner, chat, &text);
            ok(message_json(chat, id, &text, BOT_ID, "Switchboard", true))
        }
        other => {
            shared
                .inner
                .lock()
                .unwrap()
                .unexpected
                .push(format!("unexpected method {other}"));
            error(404, "Not Found: method not found", None)
        }
    }
}

/// `getFile`, as strict as Telegram: an unknown id is "wrong file_id", a file over 20 MB "file is too
/// big".
fn get_file(shared: &Shared, body: &Value) -> Response {
    let id = body.get("file_id").and_then(Value::as_str).unwrap_or("");
    let inner = shared.inner.lock().unwrap();
    let Some(file) = inner.files.get(id) else {
        return error(
            400,
            "Bad Request: wrong file_id or the file is temporarily unavailable",
            None,
        );
    };
    if file.bytes.len() > GET_FILE_LIMIT {
        return error(400, "Bad Request: file is too big", None);
    }
    ok(
        json!({"file_id": id, "file_unique_id": format!("u{id}"), "file_size": file.bytes.len(), "file_path": file.path}),
    )
}

/// The file URL, `GET /file/bot<token>/<file_path>`.
async fn download(
    State(shared): State<Arc<Shared>>,
    Path((bot, path)): Path<(String, String)>,
) -> Response {
    let file = {
        let mut inner = shared.inner.lock().unwrap();
        if bot != shared.token_path {
            inner
                .unexpected
                .push("wrong token path for a file download".into());
            return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
        }
        inner.downloads.push(path.clone());
        inner.files.values().find(|f| f.path == path).cloned()
    };
    let Some(file) = file else {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    };
    let bytes = file.bytes;
    match file.serve {
        FileServe::Whole => ([("content-type", "application/octet-stream")], bytes).into_response(),
        FileServe::Missing => (StatusCode::NOT_FOUND, "Not Found").into_response(),
        FileServe::Stall | FileServe::Chunked => {
            let stall = file.serve == FileServe::Stall;
            let chunks: Vec<Vec<u8>> = bytes.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
            let stream = futures_util::stream::unfold(0usize, move |i| {
                let next = chunks.get(i).cloned();
                async move {
                    if stall && i == 1 {
                        std::future::pending::<()>().await;
                    }
                    next.map(|c| (Ok::<_, std::io::Error>(c), i + 1))
                }
            });
            axum::body::Body::from_stream(stream).into_response()
        }
    }
}

async fn get_updates(shared: &Shared, body: &Value) -> Response {
    let offset = body.get("offset").and_then(Value::as_i64);
    let timeout = body
        .get("timeout")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(15);
    let limit = body.get("limit").and_then(Value::as_u64).unwrap_or(100) as usize;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        let notified = shared.new_updates.notified();
        {
            let mut inner = shared.inner.lock().unwrap();
            if let Some(offset) = offset {
                inner.acked_offset = inner.acked_offset.max(offset);
                inner.updates.retain(|u| u.id >= offset);
            }
            if !inner.updates.is_empty() || Instant::now() >= deadline {
                let batch: Vec<RawUpdate> = inner.updates.iter().take(limit).cloned().collect();
                if inner.record {
                    for update in &batch {
                        *inner.deliveries.entry(update.id).or_default() += 1;
                    }
                }
                let result: Vec<&str> = batch.iter().map(|u| u.json.as_str()).collect();
                return (
                    [("content-type", "application/json")],
                    format!(r#"{{"ok":true,"result":[{}]}}"#, result.join(",")),
                )
                    .into_response();
            }
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}
