//! Client API keys against the real `switchboard run` binary, with the simulated OpenRouter (free) and
//! Ollama Cloud (paid) on 127.0.0.1 as upstreams: keys made and revoked while the daemon runs take
//! effect by the next request, a free-only key never reaches the paid simulator, admission is an
//! atomic reservation, the token budget settles with streamed usage, the ledger matches the
//! simulators' own counts, and no key ever appears in a log line.
#![allow(clippy::too_many_lines)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use switchboard::sim::ollama::{SimOllama, SimOllamaOptions};
use switchboard::sim::openrouter::{SimKey, SimOpenRouter, SimOpenRouterOptions};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const OR_KEY: &str = "sk-or-v1-keys-test-upstream";
const OLLAMA_KEY: &str = "ollama-keys-test-upstream";
const FREE_MODEL: &str = "deepseek/deepseek-chat-v3-0324:free";
const PAID_MODEL: &str = "gpt-oss:120b";
/// Long enough for a cold debug binary on a loaded 2-core machine to start; never reached when well.
const START_WAIT: Duration = Duration::from_secs(60);

struct Rig {
    dir: tempfile::TempDir,
    openrouter: SimOpenRouter,
    ollama: SimOllama,
}

struct Daemon {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    base: String,
}

impl Rig {
    async fn new(free_per_day: u32) -> Self {
        let openrouter = SimOpenRouter::start(SimOpenRouterOptions {
            keys: vec![SimKey::new(OR_KEY, "acct", free_per_day)],
            per_minute_limit: None,
            ..SimOpenRouterOptions::default()
        })
        .await
        .unwrap();
        let ollama = SimOllama::start(SimOllamaOptions {
            keys: vec![OLLAMA_KEY.into()],
            ..SimOllamaOptions::default()
        })
        .await
        .unwrap();
        let rig = Self {
            dir: tempfile::tempdir().unwrap(),
            openrouter,
            ollama,
        };
        let text = format!(
            "[api]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\n\
             [router]\npaid_enabled = true\n\n\
             [openrouter]\nbase_url = \"{}\"\nfree_models = [\"{FREE_MODEL}\"]\n\n\
             [ollama]\nbase_url = \"{}\"\nmodels = [\"{PAID_MODEL}\"]\n\n\
             [ollama.prices]\n\"{PAID_MODEL}\" = {{ prompt = 1.0, completion = 2.0 }}\n",
            rig.openrouter.base_url(),
            rig.ollama.base_url()
        );
        std::fs::write(rig.config_path(), text).unwrap();
        rig
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("switchboard.toml")
    }

    fn command(&self, log: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", log)
            .env("STATE_DIRECTORY", self.dir.path().join("state"))
            .env("OPENROUTER_API_KEY_1", OR_KEY)
            .env("OLLAMA_API_KEY", OLLAMA_KEY)
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    async fn start(&self) -> Daemon {
        let mut cmd = self.command("trace");
        cmd.arg("run").stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let logs = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = logs.clone();
        let stderr = child.stderr.take().unwrap();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let base = tokio::time::timeout(START_WAIT, async {
            loop {
                let found = logs.lock().unwrap().iter().find_map(|l| {
                    l.split("api listening on ")
                        .nth(1)
                        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned())
                });
                let socket_up = self.dir.path().join("state/admin.sock").exists();
                if let (Some(addr), true) = (found, socket_up) {
                    break format!("http://{addr}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no API within {START_WAIT:?}: {:?}", logs.lock().unwrap()));
        Daemon { child, logs, base }
    }

    /// `switchboard keys <args> --json`, parsed; panics when the command fails.
    async fn keys(&self, args: &[&str]) -> Value {
        let out = self
            .command("info")
            .arg("keys")
            .args(args)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "keys {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Creates a key; returns `(id, full key)`.
    async fn create(&self, args: &[&str]) -> (String, String) {
        let mut all = vec!["create"];
        all.extend_from_slice(args);
        let v = self.keys(&all).await;
        (
            v["key"]["id"].as_str().unwrap().to_owned(),
            v["secret"].as_str().unwrap().to_owned(),
        )
    }
}

impl Daemon {
    async fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().unwrap();
        // SIGTERM: the daemon drains and writes the ledger a last time.
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.logs.lock().unwrap().clone()
    }
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "max_tokens": 100,
           "messages": [{"role": "user", "content": "hello there"}]})
}

async fn post(base: &str, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

/// `GET path` with `key`, as JSON.
async fn get_json(base: &str, path: &str, key: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// The canary check: neither a key's secret nor its stored digest is in any log line (the daemon
/// logs at trace in these tests, so every level is covered).
fn assert_no_secret(logs: &[String], keys: &[&str]) {
    use sha2::Digest as _;
    assert!(
        logs.iter()
            .any(|l| l.contains("TRACE") || l.contains("DEBUG")),
        "not logging at trace"
    );
    for key in keys {
        let secret = key.rsplit('-').next().unwrap();
        let digest =
            sha2::Sha256::digest(secret.as_bytes())
                .iter()
                .fold(String::new(), |mut s, b| {
                    use std::fmt::Write as _;
                    let _ = write!(s, "{b:02x}");
                    s
                });
        for line in logs {
            assert!(
                !line.contains(secret),
                "a key's secret in a log line: {line}"
            );
            assert!(
                !line.contains(&digest),
                "a key's digest in a log line: {line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_made_and_revoked_while_running_take_effect_by_the_next_request() {
    let rig = Rig::new(1000).await;
    let daemon = rig.start().await;
    // Keyless on loopback while no key exists.
    assert_eq!(
        post(&daemon.base, None, &chat("auto", false))
            .await
            .status(),
        200
    );
    let (id, key) = rig.create(&["--name", "ide"]).await;
    // The command returns once the daemon's table holds the key: the very next request uses it.
    let r = post(&daemon.base, Some(&key), &chat("auto", false)).await;
    assert_eq!(r.status(), 200);
    // Now that a key exists, a keyless or wrong key is refused.
    assert_eq!(
        post(&daemon.base, None, &chat("auto", false))
            .await
            .status(),
        401
    );
    let forged = format!("{}{}", &key[..key.len() - 4], "0000");
    assert_eq!(
        post(&daemon.base, Some(&forged), &chat("auto", false))
            .await
            .status(),
        401
    );
    // The open probes stay open.
    let v = reqwest::get(format!("{}/api/version", daemon.base))
        .await
        .unwrap();
    assert_eq!(v.status(), 200);
    let listed = rig.keys(&["list"]).await;
    assert_eq!(listed["keys"][0]["key"]["id"], id.as_str());
    assert_eq!(listed["keys"][0]["key"]["digest"], "");
    assert_eq!(listed["keys"][0]["today"]["answered"], 1);
    rig.keys(&["revoke", &id]).await;
    let r = post(&daemon.base, Some(&key), &chat("auto", false)).await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let logs = daemon.stop().await;
    assert_no_secret(&logs, &[&key]);
    assert!(rig.openrouter.unexpected().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_only_key_never_reaches_the_paid_simulator() {
    // Two free requests a day: the third `auto` finds the free tier spent.
    let rig = Rig::new(2).await;
    let (_, key) = rig.create(&["--name", "friend", "--tiers", "free"]).await;
    let daemon = rig.start().await;
    for model in [PAID_MODEL, "paid"] {
        let r = post(&daemon.base, Some(&key), &chat(model, false)).await;
        assert_eq!(r.status(), 403, "{model}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["type"], "permission_error");
    }
    // Ollama's "load" (a chat without messages) asks no provider, but still checks the key.
    let load = |model: &'static str| {
        reqwest::Client::new()
            .post(format!("{}/api/chat", daemon.base))
            .bearer_auth(&key)
            .json(&json!({"model": model, "messages": []}))
            .send()
    };
    assert_eq!(load(PAID_MODEL).await.unwrap().status(), 403);
    let loaded = load(FREE_MODEL).await.unwrap();
    assert_eq!(loaded.status(), 200);
    let body: Value = loaded.json().await.unwrap();
    assert_eq!(body["done_reason"], "load");
    for _ in 0..2 {
        assert_eq!(
            post(&daemon.base, Some(&key), &chat("auto", false))
                .await
                .status(),
            200
        );
    }
    let r = post(&daemon.base, Some(&key), &chat("auto", false)).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    // The listings name no paid model.
    let models = get_json(&daemon.base, "/v1/models", &key).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        !ids.contains(&PAID_MODEL) && !ids.contains(&"paid"),
        "{ids:?}"
    );
    assert!(ids.contains(&FREE_MODEL), "{ids:?}");
    daemon.stop().await;
    assert_eq!(
        rig.ollama.chat_requests(),
        0,
        "the paid simulator saw a request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_requests_on_ten_per_minute_admit_exactly_ten() {
    let rig = Rig::new(1000).await;
    let (_, key) = rig.create(&["--name", "script", "--rpm", "10"]).await;
    let daemon = rig.start().await;
    let base = daemon.base.clone();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (base, key) = (base.clone(), key.clone());
            tokio::spawn(async move { post(&base, Some(&key), &chat("auto", false)).await })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let r = t.await.unwrap();
        let h = r.headers();
        assert_eq!(h["x-ratelimit-limit-requests"], "10");
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                refused += 1;
                assert_eq!(h["x-ratelimit-remaining-requests"], "0");
                let wait: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&wait), "{wait}");
                assert!(h.get("x-ratelimit-reset-requests").is_some());
                assert!(
                    h.get("x-should-retry").is_none(),
                    "a minute's wait is worth a retry"
                );
            }
            s => panic!("status {s}"),
        }
    }
    assert_eq!((ok, refused), (10, 90));
    assert_eq!(
        rig.openrouter.chat_requests() + rig.ollama.chat_requests(),
        10
    );
    let usage = rig.keys(&["usage"]).await;
    let today = &usage["usage"][0][1][0];
    assert_eq!(
        (today["answered"].as_u64(), today["refused"].as_u64()),
        (Some(10), Some(90))
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_token_budget_settles_with_streamed_usage() {
    let rig = Rig::new(1000).await;
    let (_, key) = rig
        .create(&["--name", "budget", "--daily-tokens", "5000"])
        .await;
    let daemon = rig.start().await;
    let mut body = chat("auto", true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(&daemon.base, Some(&key), &body).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let usage: Value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find_map(|v| v.get("usage").filter(|u| !u.is_null()).cloned())
        .expect("a usage chunk");
    let used = usage["total_tokens"].as_u64().unwrap();
    assert!(used > 0);
    // The reservation (prompt + 100) has been replaced by the real count.
    let mine = get_json(&daemon.base, "/v1/usage", &key).await;
    let today = &mine["today"];
    assert_eq!(
        today["prompt_tokens"].as_u64().unwrap() + today["completion_tokens"].as_u64().unwrap(),
        used
    );
    assert_eq!(
        mine["limits"]["tokens"]["remaining"].as_u64(),
        Some(5000 - used)
    );
    let again = post(&daemon.base, Some(&key), &chat("auto", false)).await;
    let remaining: u64 = again.headers()["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(remaining < 5000 - used);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_after_a_scripted_day_matches_the_simulators_counts() {
    // Three free requests a day, then the paid tier answers.
    let rig = Rig::new(3).await;
    let (a, key_a) = rig.create(&["--name", "a", "--rpm", "4"]).await;
    let (b, key_b) = rig.create(&["--name", "b", "--tiers", "free"]).await;
    let daemon = rig.start().await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            post(&daemon.base, Some(&key_a), &chat("auto", false))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    assert_eq!(
        post(&daemon.base, Some(&key_b), &chat(PAID_MODEL, false))
            .await
            .status(),
        403
    );
    assert_eq!(
        post(&daemon.base, Some(&key_b), &chat("auto", true))
            .await
            .status(),
        429
    );
    let logs = daemon.stop().await;
    assert_no_secret(&logs, &[&key_a, &key_b]);
    // Read from the store after the daemon wrote its last figures.
    let usage = rig.keys(&["usage", &a]).await;
    let day_a = &usage["usage"][0][1][0];
    let free = rig
        .openrouter
        .requests()
        .iter()
        .filter(|r| r.status == 200 && r.path.contains("chat"))
        .count() as u64;
    let paid = rig
        .ollama
        .requests()
        .iter()
        .filter(|r| r.status == 200 && r.path.contains("chat"))
        .count() as u64;
    assert_eq!(day_a["answered"].as_u64(), Some(free + paid));
    assert_eq!(day_a["refused"].as_u64(), Some(2));
    let models = day_a["models"].as_object().unwrap();
    let by = |tier: &str| {
        models
            .values()
            .filter(|m| m["tier"] == tier)
            .map(|m| m["requests"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!((by("free"), by("paid")), (free, paid));
    assert_eq!((free, paid), (3, 1));
    assert!(day_a["cost_usd"].as_f64().unwrap() > 0.0);
    let usage = rig.keys(&["usage", &b]).await;
    let day_b = &usage["usage"][0][1][0];
    assert_eq!(
        (
            day_b["answered"].as_u64(),
            day_b["refused"].as_u64(),
            day_b["failed"].as_u64()
        ),
        (Some(0), Some(1), Some(1))
    );
}

/// The official `openai` and `ollama` Python clients authenticate with a key (`tests/clients/test_keys.py`).
/// Needs the venv `.ci/run` makes: `SB_PYTHON=<venv>/bin/python cargo test --test keys -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs SB_PYTHON, a python with tests/clients/requirements.txt (.ci/run)"]
async fn official_clients_authenticate_with_a_key() {
    let python = std::env::var("SB_PYTHON").expect("SB_PYTHON: a python with the official clients");
    let rig = Rig::new(1000).await;
    let (_, key) = rig.create(&["--name", "clients", "--rpm", "100"]).await;
    let daemon = rig.start().await;
    let out = Command::new(python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/clients/test_keys.py",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SB_API_BASE", &daemon.base)
        .env("SB_API_KEY", &key)
        .env("SB_FREE_MODEL", FREE_MODEL)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("OLLAMA_API_KEY")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .output()
        .await
        .unwrap();
    let logs = daemon.stop().await;
    assert!(
        out.status.success(),
        "pytest failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_secret(&logs, &[&key]);
    assert_eq!(rig.ollama.chat_requests(), 0);
}
