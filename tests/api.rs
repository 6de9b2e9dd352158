//! The local LLM API through the real binary: `switchboard run` with only `[api]` configured (no bot
//! token), the simulated OpenRouter (free tier) and Ollama Cloud (paid tier) from `switchboard::sim` as
//! upstreams on 127.0.0.1, and plain HTTP clients. Framing goldens and the per-status unit tests live
//! in `src/api/tests`; these prove the daemon wiring and the behaviour only the real router shows.

// Scenarios read best whole; these pedantic lints are off for test code only.
#![allow(clippy::too_many_lines, clippy::cast_possible_wrap)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use switchboard::sim::ollama::{SimOllama, SimOllamaOptions};
use switchboard::sim::openrouter::{SimOpenRouter, SimOpenRouterOptions};
use switchboard::sim::Fault;

/// Every wait is bounded by this (real time; generous for a loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(60);
/// The simulators' keys (see `SimOpenRouterOptions::default`, `SimOllamaOptions::default`).
const OR_KEY: &str = "sk-or-sim-1";
const OLLAMA_KEY: &str = "ollama-sim-1";
const FREE_MODEL: &str = "deepseek/deepseek-chat-v3-0324:free";
const PAID_MODEL: &str = "gpt-oss:120b";

/// Both simulators and a state directory.
struct Rig {
    free: SimOpenRouter,
    paid: SimOllama,
    dir: tempfile::TempDir,
}

/// A running `switchboard run`.
struct Daemon {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Rig {
    async fn new() -> Self {
        Self {
            free: SimOpenRouter::start(SimOpenRouterOptions::default())
                .await
                .unwrap(),
            paid: SimOllama::start(SimOllamaOptions::default()).await.unwrap(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Starts the daemon with `api` as the `[api]` section's extra lines and `extra` appended.
    fn start(&self, api: &str, extra: &str) -> Daemon {
        let config = format!(
            "[router]\npaid_enabled = true\nfree_wait_max_secs = 0\n\n\
             [openrouter]\nbase_url = \"{}\"\nfree_models = [\"{FREE_MODEL}\"]\nfree_requests_per_day = 50\n\n\
             [ollama]\nbase_url = \"{}\"\nmodels = [\"{PAID_MODEL}\"]\n\n\
             [api]\nenabled = true\n{api}\n\n{extra}\n",
            self.free.base_url(),
            self.paid.base_url(),
        );
        let path = self.dir.path().join("switchboard.toml");
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("STATE_DIRECTORY", self.dir.path().join("state"))
            .env("OPENROUTER_API_KEY_1", OR_KEY)
            .env("OLLAMA_API_KEY", OLLAMA_KEY)
            .arg("--config")
            .arg(&path)
            .arg("run")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
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
        Daemon { child, logs }
    }

    /// Starts the daemon listening on a free loopback port and waits for its address.
    async fn serve(&self) -> (Daemon, SocketAddr) {
        let daemon = self.start("listen = \"127.0.0.1:0\"\nrequest_deadline_secs = 30", "");
        let addr = daemon.address().await;
        (daemon, addr)
    }
}

impl Daemon {
    fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The address from the `api listening on …` line.
    async fn address(&self) -> SocketAddr {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self.logs.lock().unwrap().iter().find_map(|l| {
                l.split("api listening on ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|a| a.parse().ok())
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no address logged:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn exit_code(&mut self) -> i32 {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("switchboard did not exit\nlogs:\n{}", self.logs()))
            .unwrap();
        status.code().unwrap_or(-1)
    }
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"}]})
}

async fn post(addr: SocketAddr, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_only_the_api_and_both_surfaces_answer_from_the_free_tier() {
    let rig = Rig::new().await;
    let (mut daemon, addr) = rig.serve().await;
    let r = post(addr, "/v1/chat/completions", &chat("auto", false)).await;
    assert_eq!(r.status(), 200, "{}", daemon.logs());
    assert_eq!(r.headers()["x-switchboard-tier"], "free");
    assert_eq!(r.headers()["x-switchboard-model"], FREE_MODEL);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], FREE_MODEL);
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("You said: hello there"), "{text}");
    assert!(
        body["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{body}"
    );

    let r = post(addr, "/api/chat", &chat("auto", true)).await;
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let ndjson = r.text().await.unwrap();
    let lines: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let streamed: String = lines
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert!(streamed.contains("You said: hello there"), "{ndjson}");
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert!(last["eval_count"].as_u64().unwrap() > 0, "{last}");

    let r = post(
        addr,
        "/api/generate",
        &json!({"model": FREE_MODEL, "prompt": "hi", "stream": false}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["response"].as_str().unwrap().contains("You said: hi"),
        "{body}"
    );

    let tags: Value = reqwest::get(format!("http://{addr}/api/tags"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"auto") && names.contains(&FREE_MODEL) && names.contains(&PAID_MODEL),
        "{names:?}"
    );
    assert!(
        rig.free.unexpected().is_empty(),
        "{:?}",
        rig.free.unexpected()
    );

    let health = reqwest::get(format!("http://{addr}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert!(health["tiers"].as_array().unwrap().len() >= 2, "{health}");
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "switchboard_api_requests_total{surface=\"openai\",route=\"/v1/chat/completions\",status=\"200\"} 1",
        "gen_ai_client_operation_duration_seconds_count{gen_ai_provider_name=\"openrouter\",tier=\"free\"} 3",
        "gen_ai_client_token_usage_bucket{gen_ai_provider_name=\"openrouter\",gen_ai_token_type=\"output\"",
        "switchboard_account_up{tier=\"free\"",
        "switchboard_account_free_requests_left{",
    ] {
        assert!(metrics.contains(needle), "{needle} not in\n{metrics}");
    }
    daemon.child.start_kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_free_to_paid_walk_shows_in_the_model_and_the_headers() {
    let rig = Rig::new().await;
    let (mut daemon, addr) = rig.serve().await;
    rig.free.set_fault(Some(Fault::RateLimitDaily));
    let r = post(addr, "/v1/chat/completions", &chat("auto", true)).await;
    assert_eq!(r.status(), 200, "{}", daemon.logs());
    assert_eq!(r.headers()["x-switchboard-tier"], "paid");
    assert_eq!(r.headers()["x-switchboard-model"], PAID_MODEL);
    let sse = r.text().await.unwrap();
    assert!(
        sse.contains(&format!("\"model\":\"{PAID_MODEL}\"")),
        "{sse}"
    );
    assert!(sse.ends_with("data: [DONE]\n\n"), "{sse}");
    assert!(rig.free.chat_requests() >= 1 && rig.paid.chat_requests() == 1);

    // `free` may not walk: the free quota is gone until 00:00 UTC, so 429 and "do not retry".
    let r = post(addr, "/v1/chat/completions", &chat("free", false)).await;
    assert_eq!(r.status(), 429, "{}", daemon.logs());
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["x-should-retry"], "false");
    assert_eq!(
        rig.paid.chat_requests(),
        1,
        "a free-only request never reaches the paid tier"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let body = post(addr, "/v1/chat/completions", &chat("no-such-model", false)).await;
    assert_eq!(body.status(), 404);
    daemon.child.start_kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_upstream_ends_with_an_error_event_on_both_surfaces() {
    let rig = Rig::new().await;
    let (mut daemon, addr) = rig.serve().await;
    rig.free.push_fault(Fault::TruncateAfter(2));
    let r = post(addr, "/v1/chat/completions", &chat("auto", true)).await;
    assert_eq!(r.status(), 200, "{}", daemon.logs());
    let sse = r.text().await.unwrap();
    let last = sse.trim_end().rsplit("\n\n").next().unwrap();
    let error: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert!(error["error"]["message"].is_string(), "{sse}");
    assert!(
        !sse.contains("[DONE]"),
        "a cut stream must not end cleanly: {sse}"
    );
    assert!(
        !sse.contains("127.0.0.1"),
        "no upstream URL in the error: {sse}"
    );

    rig.free.push_fault(Fault::TruncateAfter(2));
    let r = post(addr, "/api/chat", &chat("auto", true)).await;
    assert_eq!(r.status(), 200);
    let ndjson = r.text().await.unwrap();
    let last: Value = serde_json::from_str(ndjson.lines().last().unwrap()).unwrap();
    assert!(last["error"].is_string(), "{ndjson}");
    assert!(!ndjson.contains("\"done\":true"), "{ndjson}");
    daemon.child.start_kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_cancels_the_upstream_request() {
    let rig = Rig::new().await;
    let (mut daemon, addr) = rig.serve().await;
    rig.free.push_fault(Fault::StallAfter(1));
    let mut r = post(addr, "/v1/chat/completions", &chat("auto", true)).await;
    assert_eq!(r.status(), 200, "{}", daemon.logs());
    let first = r.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    let deadline = Instant::now() + WAIT;
    while rig.free.endless().stalled_open != 1 {
        assert!(Instant::now() < deadline, "the upstream never stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(r);
    while rig.free.endless().stalled_open != 0 {
        assert!(
            Instant::now() < deadline,
            "the upstream connection stayed open:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    daemon.child.start_kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_ends_the_answer_with_an_error_event_after_the_grace_and_exits_0() {
    let rig = Rig::new().await;
    let mut daemon = rig.start(
        "listen = \"127.0.0.1:0\"",
        "[daemon]\nshutdown_grace_secs = 1\n",
    );
    let addr = daemon.address().await;
    rig.free.push_fault(Fault::StallAfter(1));
    let mut r = post(addr, "/api/chat", &chat("auto", true)).await;
    assert_eq!(r.status(), 200);
    let mut body = String::from_utf8(r.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    let pid = daemon.child.id().unwrap() as i32;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    while let Some(chunk) = r.chunk().await.unwrap() {
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let last: Value = serde_json::from_str(body.lines().last().unwrap()).unwrap();
    assert!(
        last["error"].as_str().unwrap().contains("restarting"),
        "{body}"
    );
    assert_eq!(daemon.exit_code().await, 0, "{}", daemon.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_beyond_loopback_without_client_keys_exits_78_saying_why() {
    let rig = Rig::new().await;
    let mut daemon = rig.start("listen = \"0.0.0.0:0\"", "");
    assert_eq!(daemon.exit_code().await, 78, "{}", daemon.logs());
    let logs = daemon.logs();
    assert!(
        logs.contains("api.listen") && logs.contains("no client API keys"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_answer_on_both_surfaces_and_a_chat_model_cannot_embed() {
    const EMBED: &str = "nomic-embed-text-v2-moe";
    let rig = Rig::new().await;
    let (mut daemon, addr) = rig.serve().await;
    // Clients pick embedding models from the listings, so both list them.
    let models: Value = reqwest::get(format!("http://{addr}/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == EMBED),
        "{models}"
    );
    let tags: Value = reqwest::get(format!("http://{addr}/api/tags"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = tags["models"].as_array().unwrap();
    assert!(listed.iter().any(|m| m["model"] == EMBED), "{tags}");
    let r = post(
        addr,
        "/v1/embeddings",
        &json!({"model": EMBED, "input": ["a", "b"]}),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", daemon.logs());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][1]["index"], 1);
    let floats: Vec<f32> = serde_json::from_value(body["data"][0]["embedding"].clone()).unwrap();
    assert!(!floats.is_empty());
    // openai-node asks for base64 (little-endian float32) unless told otherwise: the same vector.
    let r = post(
        addr,
        "/v1/embeddings",
        &json!({"model": EMBED, "input": ["a", "b"], "encoding_format": "base64"}),
    )
    .await;
    let body: Value = r.json().await.unwrap();
    let packed = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        body["data"][0]["embedding"].as_str().unwrap(),
    )
    .unwrap();
    let unpacked: Vec<f32> = packed
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(unpacked, floats);
    let r = post(
        addr,
        "/v1/embeddings",
        &json!({"model": EMBED, "input": "a", "encoding_format": "int8"}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "encoding_format", "{body}");
    // Token ids (LangChain's default) get a 400 that says what to send instead.
    let r = post(
        addr,
        "/v1/embeddings",
        &json!({"model": EMBED, "input": [[1, 2, 3]]}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("token ids are not accepted"),
        "{body}"
    );
    let r = post(addr, "/api/embed", &json!({"model": EMBED, "input": "a"})).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["embeddings"].as_array().unwrap().len(), 1);
    let r = post(
        addr,
        "/api/embeddings",
        &json!({"model": EMBED, "prompt": "a"}),
    )
    .await;
    let body: Value = r.json().await.unwrap();
    assert!(!body["embedding"].as_array().unwrap().is_empty(), "{body}");
    let r = post(
        addr,
        "/v1/embeddings",
        &json!({"model": PAID_MODEL, "input": "a"}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("embed"),
        "{body}"
    );
    daemon.child.start_kill().unwrap();
}
