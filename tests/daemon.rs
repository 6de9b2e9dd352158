//! `switchboard run` as systemd runs it: the real binary, spawned with `NOTIFY_SOCKET` pointing at a
//! datagram socket this test owns, against a fake Telegram Bot API and a fake OpenRouter on 127.0.0.1
//! (and the shared fake Discord for the gateway tests). The fakes record anything they did not expect
//! and the tests assert that list is empty. Every run's stderr is checked for every canary secret.

// Scenarios and measurements read best whole, their arithmetic is on small known values (counts,
// nanoseconds, ids) and their JSON builders take values whole: these pedantic lints are off for test and
// benchmark code only.
#![allow(
    clippy::too_many_lines,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::needless_pass_by_value
)]

#[path = "support/fake_discord.rs"]
mod fake_discord;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Json;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};

use switchboard::domain::ConversationKey;
use switchboard::store::sled_store::SledStore;
use switchboard::store::{HistoryStore, TurnStatus};

/// A canary Telegram token: it must never appear in the daemon's output.
const TOKEN: &str = "123456:CANARY-telegram-token-never-print";
/// A canary OpenRouter key.
const OR_KEY: &str = "sk-or-v1-CANARY-openrouter-key-never-print";
/// The chat and user the fake Telegram delivers messages from.
const CHAT: i64 = 4242;
/// Every wait in these tests is bounded by this (real time; generous for a loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------------
// Fake Telegram Bot API

#[derive(Default)]
struct Telegram {
    token_ok: bool,
    /// Answer every getUpdates with 409, as Telegram does while another process polls the token.
    conflict: bool,
    next_update_id: i64,
    pending: VecDeque<Value>,
    /// Every `offset` sent with getUpdates, in order.
    offsets: Vec<i64>,
    next_message_id: i64,
    /// getMe calls answered.
    get_me: usize,
    /// message id → latest text (sendMessage, then editMessageText).
    messages: BTreeMap<i64, String>,
    /// Refuse sendChatAction with an error that quotes the bot URL, token percent-encoded (as a
    /// misconfigured proxy in front of the Bot API does).
    echo_token: bool,
    unexpected: Vec<String>,
}

/// `text` percent-encoded the way URL encoders write it: reserved characters (`encode_all`: every byte).
fn percent_encoded(text: &str, encode_all: bool) -> String {
    text.bytes()
        .map(|b| {
            if !encode_all && (b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

type Tg = Arc<Mutex<Telegram>>;

async fn telegram_route(
    State(tg): State<Tg>,
    UrlPath((token, method)): UrlPath<(String, String)>,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let ok = |result: Value| Json(json!({"ok": true, "result": result})).into_response();
    if token != format!("bot{TOKEN}") || !tg.lock().unwrap().token_ok {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"ok": false, "error_code": 401, "description": "Unauthorized"})),
        )
            .into_response();
    }
    match method.to_ascii_lowercase().as_str() {
        "getwebhookinfo" => {
            ok(json!({"url": "", "has_custom_certificate": false, "pending_update_count": 0}))
        }
        "getme" => {
            tg.lock().unwrap().get_me += 1;
            ok(json!({
            "id": 999, "is_bot": true, "first_name": "Switchboard", "username": "switchboard_test_bot",
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "can_connect_to_business": false, "has_main_web_app": false
            }))
        }
        "sendchataction" if tg.lock().unwrap().echo_token => (
            StatusCode::BAD_REQUEST,
            Json(json!({"ok": false, "error_code": 400, "description": format!(
                "Bad Request: cannot forward https://bot-api.invalid/bot{}/sendChatAction",
                percent_encoded(TOKEN, false))})),
        )
            .into_response(),
        "setmycommands" | "deletewebhook" | "sendchataction" => ok(json!(true)),
        "getupdates" if tg.lock().unwrap().conflict => (
            StatusCode::CONFLICT,
            Json(json!({"ok": false, "error_code": 409, "description":
                "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"})),
        )
            .into_response(),
        "getupdates" => {
            let offset = body.get("offset").and_then(Value::as_i64);
            let hold = body
                .get("timeout")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .min(1);
            let deadline = Instant::now() + Duration::from_secs(hold);
            loop {
                {
                    let mut t = tg.lock().unwrap();
                    if let Some(o) = offset {
                        t.offsets.push(o);
                        t.pending
                            .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= o);
                    }
                    if !t.pending.is_empty() || Instant::now() >= deadline {
                        return ok(Value::Array(t.pending.iter().cloned().collect()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        "sendmessage" | "editmessagetext" => {
            let text = body["text"].as_str().unwrap_or_default().to_owned();
            let mut t = tg.lock().unwrap();
            let id = if let Some(id) = body.get("message_id").and_then(Value::as_i64) { id } else {
                t.next_message_id += 1;
                t.next_message_id
            };
            t.messages.insert(id, text.clone());
            ok(json!({
                "message_id": id, "date": 1_700_000_000,
                "chat": {"id": CHAT, "type": "private", "first_name": "Ada"},
                "from": {"id": 999, "is_bot": true, "first_name": "Switchboard", "username": "switchboard_test_bot"},
                "text": text
            }))
        }
        other => {
            tg.lock().unwrap().unexpected.push(other.to_owned());
            // Never 5xx: teloxide sleeps 10 s after one.
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"ok": false, "error_code": 400, "description": format!("Bad Request: unexpected method {other}")})),
            )
                .into_response()
        }
    }
}

impl Telegram {
    fn deliver(tg: &Tg, text: &str) -> i64 {
        let mut t = tg.lock().unwrap();
        t.next_update_id += 1;
        let id = t.next_update_id;
        t.pending.push_back(json!({
            "update_id": id,
            "message": {
                "message_id": 10_000 + id, "date": 1_700_000_000,
                "chat": {"id": CHAT, "type": "private", "first_name": "Ada"},
                "from": {"id": CHAT, "is_bot": false, "first_name": "Ada"},
                "text": text
            }
        }));
        id
    }
}

// ---------------------------------------------------------------------------------------------------
// Fake OpenRouter

#[derive(Default)]
struct Llm {
    /// Pieces of every answer, streamed one by one with `delay` between them.
    pieces: Vec<String>,
    delay: Duration,
    /// Request bodies of POST /chat/completions.
    requests: Vec<Value>,
    /// Pieces sent so far (all answers).
    sent: usize,
    /// Fail every chat request with an error that quotes the key: odd requests with an HTTP 502 body,
    /// even ones mid-stream — raw and percent-encoded, as a misbehaving upstream might.
    echo_key: bool,
    unexpected: Vec<String>,
}

type Or = Arc<Mutex<Llm>>;

async fn chat_completions(State(llm): State<Or>, Json(body): Json<Value>) -> Response {
    let (pieces, delay) = {
        let mut l = llm.lock().unwrap();
        l.requests.push(body.clone());
        if l.echo_key {
            return echo_key_error(l.requests.len());
        }
        (l.pieces.clone(), l.delay)
    };
    let model = body["model"]
        .as_str()
        .unwrap_or("test/model:free")
        .to_owned();
    let stream = async_stream(llm, pieces, delay, model);
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(axum::body::Body::from_stream(stream))
        .unwrap()
}

fn async_stream(
    llm: Or,
    pieces: Vec<String>,
    delay: Duration,
    model: String,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let n = pieces.len();
    futures_util::stream::unfold(0usize, move |i| {
        let llm = llm.clone();
        let pieces = pieces.clone();
        let model = model.clone();
        async move {
            if i > n {
                return None;
            }
            if i == n {
                let end = json!({"id": "gen-1", "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": n}});
                return Some((
                    Ok(Bytes::from(format!("data: {end}\n\ndata: [DONE]\n\n"))),
                    i + 1,
                ));
            }
            if i > 0 {
                tokio::time::sleep(delay).await;
            }
            llm.lock().unwrap().sent += 1;
            let chunk = json!({"id": "gen-1", "model": model, "choices": [{"index": 0, "delta": {"content": pieces[i]}}]});
            Some((Ok(Bytes::from(format!("data: {chunk}\n\n"))), i + 1))
        }
    })
}

/// The `n`-th echoing failure: a 502 body (odd `n`) or a mid-stream error event (even `n`).
fn echo_key_error(n: usize) -> Response {
    let message = format!(
        "upstream refused key {OR_KEY} ({}; {})",
        percent_encoded(OR_KEY, false),
        percent_encoded(OR_KEY, true)
    );
    let error = json!({"error": {"message": message, "code": 502}});
    if n % 2 == 1 {
        return (StatusCode::BAD_GATEWAY, Json(error)).into_response();
    }
    let chunk = json!({"id": "gen-1", "model": "test/model:free",
        "choices": [{"index": 0, "delta": {"content": "Hel"}}]});
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(axum::body::Body::from(format!(
            "data: {chunk}\n\ndata: {error}\n\n"
        )))
        .unwrap()
}

async fn key_info() -> Json<Value> {
    Json(
        json!({"data": {"label": "test", "usage": 0, "limit": null, "is_free_tier": false,
        "rate_limit": {"requests": 20, "interval": "10s"}}}),
    )
}

async fn models() -> Json<Value> {
    Json(
        json!({"data": [{"id": "test/model:free", "context_length": 32768,
        "pricing": {"prompt": "0", "completion": "0"}}]}),
    )
}

async fn llm_unexpected(State(llm): State<Or>, uri: axum::http::Uri) -> Response {
    llm.lock().unwrap().unexpected.push(uri.path().to_owned());
    (
        StatusCode::NOT_FOUND,
        "unexpected route in the fake OpenRouter",
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------------
// The daemon under test

struct World {
    dir: tempfile::TempDir,
    tg: Tg,
    tg_addr: SocketAddr,
    llm: Or,
    llm_addr: SocketAddr,
}

impl World {
    async fn new() -> Self {
        let tg: Tg = Arc::new(Mutex::new(Telegram {
            token_ok: true,
            ..Telegram::default()
        }));
        let app = axum::Router::new()
            .route("/{token}/{method}", post(telegram_route))
            .with_state(tg.clone());
        let tg_addr = serve(app).await;
        let llm: Or = Arc::new(Mutex::new(Llm {
            pieces: vec!["Hello".into(), " there".into(), ", Ada.".into()],
            ..Llm::default()
        }));
        let app = axum::Router::new()
            .route("/api/v1/chat/completions", post(chat_completions))
            .route("/api/v1/key", get(key_info))
            .route("/api/v1/models", get(models))
            .fallback(any(llm_unexpected))
            .with_state(llm.clone());
        let llm_addr = serve(app).await;
        Self {
            dir: tempfile::tempdir().unwrap(),
            tg,
            tg_addr,
            llm,
            llm_addr,
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("switchboard.toml")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Writes a config with `extra` TOML appended to the test's base settings.
    fn write_config(&self, extra: &str) {
        let text = format!(
            "[router]\npaid_enabled = false\n\n\
             [openrouter]\nfree_models = [\"test/model:free\"]\nfree_requests_per_day = 1000\n\n\
             [telegram]\nedit_interval_private_ms = 100\npoll_timeout_secs = 1\n\n{extra}\n"
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    // Async like the fakes' own start, so a test reads the same for each; it awaits nothing yet.
    #[allow(clippy::unused_async)]
    async fn start(&self, extra_env: &[(&str, &str)]) -> Daemon {
        let notify_path = self
            .dir
            .path()
            .join(format!("notify-{}.sock", fastrand::u64(..)));
        let socket = UnixDatagram::bind(&notify_path).unwrap();
        let notices = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = notices.clone();
        let get_me_at_ready = Arc::new(Mutex::new(None));
        let at_ready = get_me_at_ready.clone();
        let tg = self.tg.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf).await {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.lines().any(|l| l == "READY=1") {
                    at_ready
                        .lock()
                        .unwrap()
                        .get_or_insert(tg.lock().unwrap().get_me);
                }
                sink.lock().unwrap().extend(text.lines().map(str::to_owned));
            }
        });
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("NOTIFY_SOCKET", &notify_path)
            .env("STATE_DIRECTORY", self.state_dir())
            .env("TELEGRAM_BOT_TOKEN", TOKEN)
            .env("OPENROUTER_API_KEY_1", OR_KEY)
            .env(
                "SWITCHBOARD__TELEGRAM__API_URL",
                format!("http://{}", self.tg_addr),
            )
            .env(
                "SWITCHBOARD__OPENROUTER__BASE_URL",
                format!("http://{}/api/v1", self.llm_addr),
            )
            .envs(extra_env.iter().copied())
            .arg("--config")
            .arg(self.config_path())
            .arg("run")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn switchboard");
        let logs = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = logs.clone();
        let stderr = child.stderr.take().unwrap();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Daemon {
            child,
            get_me_at_ready,
            notices,
            logs,
            started,
        }
    }
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

struct Daemon {
    child: Child,
    /// How many getMe calls the fake had answered when the first READY=1 arrived.
    get_me_at_ready: Arc<Mutex<Option<usize>>>,
    notices: Arc<Mutex<Vec<String>>>,
    logs: Arc<Mutex<Vec<String>>>,
    started: Instant,
}

impl Daemon {
    fn notices(&self) -> Vec<String> {
        self.notices.lock().unwrap().clone()
    }

    fn count(&self, notice: &str) -> usize {
        self.notices().iter().filter(|n| *n == notice).count()
    }

    fn last_status(&self) -> String {
        self.notices()
            .iter()
            .rev()
            .find_map(|n| n.strip_prefix("STATUS=").map(str::to_owned))
            .unwrap_or_default()
    }

    /// The `STATUS=` sent with the `n`-th `READY=1` (1-based): a reload announces both in one datagram,
    /// so a periodic status sent meanwhile cannot be mistaken for it.
    fn status_with_ready(&self, n: usize) -> String {
        self.notices()
            .iter()
            .skip_while({
                let mut seen = 0;
                move |notice| {
                    if notice.as_str() == "READY=1" {
                        seen += 1;
                    }
                    seen < n
                }
            })
            .find_map(|notice| notice.strip_prefix("STATUS=").map(str::to_owned))
            .unwrap_or_default()
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    async fn wait_for(&self, what: &str, mut cond: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\nnotices: {:?}\nlogs:\n{}",
                self.notices(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn ready(&self) {
        self.wait_for("READY=1", |d| d.count("READY=1") >= 1).await;
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.id().expect("running") as i32;
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// Waits for the exit; returns the code and how long it took. Every test ends each run here, so
    /// this is where the whole of its stderr is checked for the canary secrets.
    async fn exit(&mut self) -> (i32, Duration) {
        let since = Instant::now();
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("switchboard did not exit\nlogs:\n{}", self.logs()))
            .unwrap();
        // Let the stderr reader drain.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.assert_no_secret_in_logs();
        (status.code().unwrap_or(-1), since.elapsed())
    }

    /// No token or key value — raw or percent-encoded — nor any part marked as a canary — in anything
    /// the daemon wrote.
    fn assert_no_secret_in_logs(&self) {
        let logs = self.logs();
        let secrets = [TOKEN, OR_KEY, fake_discord::TOKEN];
        let encoded = secrets
            .iter()
            .flat_map(|s| [percent_encoded(s, false), percent_encoded(s, true)]);
        for secret in secrets
            .iter()
            .map(std::string::ToString::to_string)
            .chain(encoded)
        {
            let secret = secret.as_str();
            assert!(
                !logs.contains(secret),
                "a secret reached the logs:\n{}",
                logs.replace(secret, "<SECRET>")
            );
        }
        assert!(
            !logs.to_ascii_lowercase().contains("canary"),
            "part of a secret reached the logs:\n{logs}"
        );
    }
}

fn reopen(state: &Path) -> SledStore {
    SledStore::open(state, 16, 1_700_000_000_000).unwrap().store
}

fn history(state: &Path) -> Vec<switchboard::store::Turn> {
    let store = reopen(state);
    let key = ConversationKey(format!("telegram:{CHAT}"));
    let epoch = store.conversation(&key).unwrap().map_or(0, |m| m.epoch);
    store.recent_turns(&key, epoch, 50).unwrap()
}

/// The latest text of every message the bot wrote to the fake Telegram, in id order.
fn bot_texts(world: &World) -> Vec<String> {
    world
        .tg
        .lock()
        .unwrap()
        .messages
        .values()
        .cloned()
        .collect()
}

fn assert_fakes_clean(world: &World) {
    assert!(
        world.tg.lock().unwrap().unexpected.is_empty(),
        "unexpected Telegram calls: {:?}",
        world.tg.lock().unwrap().unexpected
    );
    assert!(
        world.llm.lock().unwrap().unexpected.is_empty(),
        "unexpected OpenRouter calls: {:?}",
        world.llm.lock().unwrap().unexpected
    );
}

// ---------------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_after_start_up_then_sigterm_mid_stream_finishes_the_reply_and_exits_0() {
    let world = World::new().await;
    world.write_config("[daemon]\nshutdown_grace_secs = 15\n");
    {
        let mut llm = world.llm.lock().unwrap();
        llm.pieces = (0..8).map(|i| format!("part{i} ")).collect();
        llm.delay = Duration::from_millis(250);
    }
    let mut d = world.start(&[]).await;
    d.ready().await;
    let status = d.last_status();
    assert!(status.contains("telegram: polling"), "{status}");
    assert!(status.contains("free tier"), "{status}");
    // READY came only after the adapter had reached Telegram (getMe answered).
    assert_eq!(*d.get_me_at_ready.lock().unwrap(), Some(1));
    // Before it, STATUS= said what start-up was doing.
    let notices = d.notices();
    let ready = notices.iter().position(|n| n == "READY=1").unwrap();
    let before: Vec<&String> = notices[..ready]
        .iter()
        .filter(|n| n.starts_with("STATUS="))
        .collect();
    assert_eq!(
        before.first().map(|s| s.as_str()),
        Some("STATUS=starting: opening the store"),
        "{notices:?}"
    );
    assert!(
        before
            .iter()
            .any(|s| *s == "STATUS=starting: connecting telegram"),
        "{notices:?}"
    );

    let update = Telegram::deliver(&world.tg, "tell me something long");
    d.wait_for("the reply to be streaming", |_| {
        world.llm.lock().unwrap().sent >= 2
    })
    .await;
    d.signal(libc::SIGTERM);
    let (code, took) = d.exit().await;
    assert_eq!(code, 0, "logs:\n{}", d.logs());
    assert!(d.count("STOPPING=1") == 1, "{:?}", d.notices());
    // Within the unit's TimeoutStopSec=45s.
    assert!(took < Duration::from_secs(45), "stopping took {took:?}");

    // The reply was finished within the grace and delivered in full.
    let full: String = (0..8)
        .flat_map(|i| ["part".to_owned(), i.to_string(), " ".into()])
        .collect();
    let texts = bot_texts(&world);
    assert!(texts.iter().any(|t| t.trim() == full.trim()), "{texts:?}");
    // The update was acknowledged: a getUpdates with an offset past it.
    assert!(
        world.tg.lock().unwrap().offsets.iter().any(|&o| o > update),
        "offsets: {:?}",
        world.tg.lock().unwrap().offsets
    );
    // The last turn is in the store, complete.
    let turns = history(&world.state_dir());
    assert_eq!(turns.len(), 2, "{turns:?}");
    assert_eq!(turns[0].text, "tell me something long");
    assert_eq!(turns[1].text.trim(), full.trim());
    assert_eq!(turns[1].status, TurnStatus::Complete);

    // After a restart on the same state nothing is answered twice.
    let sent_before = world.tg.lock().unwrap().messages.len();
    let mut again = world.start(&[]).await;
    again.ready().await;
    let polls = world.tg.lock().unwrap().offsets.len();
    again
        .wait_for("two more polls", |_| {
            world.tg.lock().unwrap().offsets.len() >= polls + 2
        })
        .await;
    again.signal(libc::SIGTERM);
    assert_eq!(again.exit().await.0, 0);
    assert_eq!(world.llm.lock().unwrap().requests.len(), 1);
    assert_eq!(world.tg.lock().unwrap().messages.len(), sent_before);
    assert_eq!(history(&world.state_dir()).len(), 2);
    assert_fakes_clean(&world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let world = World::new().await;
    world.write_config("");
    let mut d = world
        .start(&[("SWITCHBOARD__DAEMON__LOG_FORMAT", "json")])
        .await;
    d.ready().await;
    d.signal(libc::SIGTERM);
    assert_eq!(d.exit().await.0, 0);
    let logs = d.logs();
    let lines: Vec<&str> = logs.lines().collect();
    assert!(lines.len() >= 3, "{logs}");
    for line in lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("message").is_some(),
            "{line}"
        );
    }
    assert!(logs.contains("\"ready\""), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_echoed_by_upstreams_reach_no_log_line_at_trace_and_no_reply() {
    let world = World::new().await;
    world.write_config("");
    world.tg.lock().unwrap().echo_token = true;
    world.llm.lock().unwrap().echo_key = true;
    let mut d = world.start(&[("RUST_LOG", "trace")]).await;
    d.ready().await;
    let bot_messages = |w: &World| w.tg.lock().unwrap().messages.len();
    for n in 1..=2 {
        Telegram::deliver(&world.tg, &format!("question {n}"));
        d.wait_for("the failure reply", |_| {
            world.llm.lock().unwrap().requests.len() >= n && bot_messages(&world) >= n
        })
        .await;
    }
    // Both kinds of echo happened: the 502 body and the mid-stream error, and the typing refusal.
    assert!(d.logs().contains("provider error status"), "{}", d.logs());
    assert!(d.logs().contains("mid-stream"), "{}", d.logs());
    d.signal(libc::SIGTERM);
    assert_eq!(d.exit().await.0, 0);
    let replies = bot_texts(&world);
    assert!(
        replies
            .iter()
            .all(|r| !r.to_ascii_lowercase().contains("canary")),
        "{replies:?}"
    );
    assert_fakes_clean(&world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_grace_cuts_the_reply_with_a_restarting_note() {
    let world = World::new().await;
    world.write_config("[daemon]\nshutdown_grace_secs = 1\n");
    {
        let mut llm = world.llm.lock().unwrap();
        llm.pieces = (0..100).map(|i| format!("slow{i} ")).collect();
        llm.delay = Duration::from_millis(500);
    }
    let mut d = world.start(&[]).await;
    d.ready().await;
    Telegram::deliver(&world.tg, "a very long answer please");
    d.wait_for("the reply to be streaming", |_| {
        world.llm.lock().unwrap().sent >= 2
    })
    .await;
    d.signal(libc::SIGTERM);
    let (code, took) = d.exit().await;
    assert_eq!(code, 0, "logs:\n{}", d.logs());
    // Grace 1 s + the core's cut grace + adapter stop; far below TimeoutStopSec=45s.
    assert!(took < Duration::from_secs(30), "stopping took {took:?}");
    let texts = bot_texts(&world);
    assert!(
        texts
            .iter()
            .any(|t| t.contains("slow0") && t.contains("restarting")),
        "{texts:?}"
    );
    let turns = history(&world.state_dir());
    assert_eq!(turns.len(), 2, "{turns:?}");
    assert_eq!(turns[1].status, TurnStatus::Incomplete);
    assert!(turns[1].text.contains("slow0"));
    assert_fakes_clean(&world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_arrive_when_watchdog_usec_is_set() {
    let world = World::new().await;
    world.write_config("");
    let mut d = world.start(&[("WATCHDOG_USEC", "200000")]).await;
    d.ready().await;
    d.wait_for("five WATCHDOG=1 pings", |d| d.count("WATCHDOG=1") >= 5)
        .await;
    d.signal(libc::SIGINT);
    assert_eq!(d.exit().await.0, 0);
    assert_fakes_clean(&world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_watchdog_pings_for_another_pid() {
    let world = World::new().await;
    world.write_config("");
    let mut d = world
        .start(&[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")])
        .await;
    d.ready().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(d.count("WATCHDOG=1"), 0);
    d.signal(libc::SIGTERM);
    assert_eq!(d.exit().await.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_valid_config_and_keeps_the_old_one_on_an_invalid_one() {
    let world = World::new().await;
    world.write_config("[core]\nsystem_prompt = \"You are the first prompt.\"\n");
    let mut d = world.start(&[]).await;
    d.ready().await;

    world.write_config("[core]\nsystem_prompt = \"You are the second prompt.\"\n");
    d.signal(libc::SIGHUP);
    d.wait_for("RELOADING=1", |d| d.count("RELOADING=1") == 1)
        .await;
    d.wait_for("READY=1 after the reload", |d| d.count("READY=1") == 2)
        .await;
    let status = d.status_with_ready(2);
    assert!(status.starts_with("reloaded"), "{status}");
    Telegram::deliver(&world.tg, "first question");
    d.wait_for("the first request", |_| {
        world.llm.lock().unwrap().requests.len() == 1
    })
    .await;

    world.write_config(
        "[core]\nmax_concurrent_turns = 0\nsystem_prompt = \"You are the third prompt.\"\n",
    );
    d.signal(libc::SIGHUP);
    d.wait_for("READY=1 after the rejected reload", |d| {
        d.count("READY=1") == 3
    })
    .await;
    let status = d.status_with_ready(3);
    assert!(
        status.contains("reload rejected (core.max_concurrent_turns)"),
        "{status}"
    );
    d.wait_for("the rejection in the log", |d| {
        d.logs().contains("reload rejected")
    })
    .await;
    Telegram::deliver(&world.tg, "second question");
    d.wait_for("the second request", |_| {
        world.llm.lock().unwrap().requests.len() == 2
    })
    .await;

    let prompts: Vec<String> = world
        .llm
        .lock()
        .unwrap()
        .requests
        .iter()
        .map(|r| {
            r["messages"][0]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        prompts.iter().all(|p| p.contains("second prompt")),
        "{prompts:?}"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.exit().await.0, 0);
    assert_fakes_clean(&world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_exits_78_without_ready() {
    let world = World::new().await;
    world.write_config("");
    world.tg.lock().unwrap().token_ok = false;
    let mut d = world.start(&[]).await;
    let (code, _) = d.exit().await;
    assert_eq!(code, 78, "logs:\n{}", d.logs());
    assert_eq!(d.count("READY=1"), 0);
    assert!(d.logs().contains("TELEGRAM_BOT_TOKEN"), "{}", d.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_exits_78_naming_the_key() {
    let world = World::new().await;
    world.write_config("[core]\nmax_concurrent_turns = 0\n");
    let mut d = world.start(&[]).await;
    let (code, _) = d.exit().await;
    assert_eq!(code, 78);
    let logs = d.logs();
    assert!(
        logs.contains("core.max_concurrent_turns") && logs.contains("Fix:"),
        "{logs}"
    );
    assert_eq!(d.count("READY=1"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bot_token_exits_78_saying_which_variables_to_set() {
    let world = World::new().await;
    world.write_config("");
    let mut d = world.start(&[("TELEGRAM_BOT_TOKEN", "")]).await;
    let (code, _) = d.exit().await;
    assert_eq!(code, 78);
    let logs = d.logs();
    assert!(
        logs.contains("TELEGRAM_BOT_TOKEN") && logs.contains("DISCORD_BOT_TOKEN"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_state_exits_73() {
    let world = World::new().await;
    world.write_config("");
    let mut first = world.start(&[]).await;
    first.ready().await;
    let mut second = world.start(&[]).await;
    let (code, _) = second.exit().await;
    assert_eq!(code, 73, "logs:\n{}", second.logs());
    assert_eq!(second.count("READY=1"), 0);
    // The first one is unharmed.
    first.signal(libc::SIGTERM);
    assert_eq!(first.exit().await.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_warns_that_a_changed_restart_only_setting_needs_a_restart() {
    let world = World::new().await;
    world.write_config("");
    let mut d = world.start(&[]).await;
    d.ready().await;
    world.write_config("[discord]\ncommand_guilds = [\"400000000000000001\"]\n");
    d.signal(libc::SIGHUP);
    d.wait_for("READY=1 after the reload", |d| d.count("READY=1") == 2)
        .await;
    let status = d.status_with_ready(2);
    assert!(
        status.starts_with("reloaded (needs a restart: discord.command_guilds);"),
        "{status}"
    );
    d.wait_for("the warning in the log", |d| {
        d.logs().lines().any(|l| {
            l.contains("WARN")
                && l.contains("need a restart")
                && l.contains("discord.command_guilds")
        })
    })
    .await;
    d.signal(libc::SIGTERM);
    assert_eq!(d.exit().await.0, 0);
    assert_fakes_clean(&world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_close_4014_exits_78_with_the_intent_hint_and_no_ready() {
    let world = World::new().await;
    world.write_config("");
    let discord = fake_discord::fake_discord().await;
    *discord.state.close_on_identify.lock().unwrap() = Some(4014);
    let proxy = discord.url();
    let mut d = world
        .start(&[
            ("TELEGRAM_BOT_TOKEN", ""),
            ("DISCORD_BOT_TOKEN", fake_discord::TOKEN),
            ("SWITCHBOARD__DISCORD__PROXY_URL", &proxy),
        ])
        .await;
    let (code, _) = d.exit().await;
    assert_eq!(code, 78, "logs:\n{}", d.logs());
    assert_eq!(d.count("READY=1"), 0, "{:?}", d.notices());
    let logs = d.logs();
    assert!(
        logs.contains("Message Content intent") && logs.contains("Privileged Gateway Intents"),
        "{logs}"
    );
    assert!(
        discord.state.identify.lock().unwrap().is_some(),
        "the bot identified before the close"
    );
    discord.assert_no_unexpected_routes();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telegram_409_exits_73_saying_another_process_polls_the_token() {
    let world = World::new().await;
    world.write_config("");
    world.tg.lock().unwrap().conflict = true;
    let mut d = world.start(&[]).await;
    let (code, _) = d.exit().await;
    assert_eq!(code, 73, "logs:\n{}", d.logs());
    let logs = d.logs();
    assert!(
        logs.contains("another process is polling this Telegram token (HTTP 409")
            && logs.contains("stop the other switchboard"),
        "{logs}"
    );
    assert_fakes_clean(&world);
}

/// Start-up time (exec → READY=1) and idle RSS over 20 starts. Run with
/// `cargo test --release --test daemon -- --ignored --nocapture startup_benchmark`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly"]
async fn startup_benchmark() {
    const RUNS: usize = 20;
    let world = World::new().await;
    world.write_config("");
    let mut ready = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..RUNS {
        let mut d = world.start(&[]).await;
        d.ready().await;
        ready.push(d.started.elapsed());
        // Idle for a moment (a few polls), then read VmRSS.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pid = d.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        rss.push(kb);
        d.signal(libc::SIGTERM);
        assert_eq!(d.exit().await.0, 0);
    }
    ready.sort();
    rss.sort_unstable();
    println!(
        "exec→READY over {RUNS} starts: p50 {:?}, p90 {:?}, max {:?}",
        ready[RUNS / 2],
        ready[RUNS * 9 / 10],
        ready[RUNS - 1]
    );
    println!(
        "idle VmRSS: p50 {} KiB, max {} KiB",
        rss[RUNS / 2],
        rss[RUNS - 1]
    );
}
