//! The official `openai` and `ollama` Python clients against the real `switchboard run`: each scenario
//! starts the simulated OpenRouter (free tier) and Ollama Cloud (paid tier) in this process, spawns the
//! binary with only `[api]` and the providers configured (no platform token, so `run` serves just the
//! API on 127.0.0.1), runs the named tests of `tests/clients/` with `$SB_PYTHON -m pytest`, and then
//! checks what reached the simulators. Scenarios that need a fault or a spent quota get their own
//! simulators and daemon, so no state leaks from one into the next.
//!
//! The Python side needs the venv `.ci/run` makes (`tests/clients/requirements.txt`); without
//! `SB_PYTHON` these tests are ignored, never silently passed: `.ci/run` runs them with `--ignored`.

// Scenarios read best whole: this pedantic lint is off for test code only.
#![allow(clippy::too_many_lines)]

#[path = "support/api_daemon.rs"]
mod api_daemon;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use switchboard::sim::ollama::{SimOllama, SimOllamaOptions};
use switchboard::sim::openrouter::{SimKey, SimModel, SimOpenRouter, SimOpenRouterOptions};
use switchboard::sim::{Fault, ReplyShape, SimImage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

use api_daemon::ApiDaemon;

/// The simulated OpenRouter key (accepted only by the simulator).
const OR_KEY: &str = "sk-or-sim-clients";
/// The simulated Ollama Cloud key.
const OLLAMA_KEY: &str = "ollama-sim-clients";
/// The free model the router tries first.
const FREE_MODEL: &str = "meta-llama/llama-3.3-70b-instruct:free";
/// The paid model.
const PAID_MODEL: &str = "gpt-oss:120b";
/// The embedding model (Ollama Cloud's, served by the paid tier's simulator).
const EMBED_MODEL: &str = "nomic-embed-text-v2-moe";
/// A model that takes images.
const VISION_MODEL: &str = "mistralai/mistral-small-3.2-24b-instruct:free";
/// Every wait here is bounded by this (real time; generous for a loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(120);
/// A 1×1 PNG: the image the clients send.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// How a scenario sets up the upstreams and the daemon.
struct Setup {
    /// The OpenRouter account's free requests per UTC day (the simulator's and the daemon's count).
    free_per_day: u32,
    /// Whether the paid tier may answer.
    paid: bool,
    /// A fault every OpenRouter chat request gets.
    fault: Option<Fault>,
    /// How the simulators pace and size their answers.
    reply: ReplyShape,
}

impl Default for Setup {
    /// Plenty of free quota, paid allowed, no fault, instant answers.
    fn default() -> Self {
        Self {
            free_per_day: 1_000,
            paid: true,
            fault: None,
            reply: ReplyShape::default(),
        }
    }
}

/// The simulators, the relay in front of OpenRouter and the running daemon.
struct Rig {
    openrouter: SimOpenRouter,
    ollama: SimOllama,
    relay: Relay,
    daemon: ApiDaemon,
}

/// What one pytest run gave.
struct PytestRun {
    output: String,
    /// When the pytest process ended.
    ended: Instant,
}

/// The python the venv of `.ci/run` holds; a test run with `--ignored` but without it fails loudly.
fn python() -> String {
    std::env::var("SB_PYTHON").unwrap_or_else(|_| {
        panic!("SB_PYTHON is not set: .ci/run makes the venv (tests/clients/requirements.txt) and sets it")
    })
}

impl Rig {
    async fn start(setup: Setup) -> Rig {
        let openrouter = SimOpenRouter::start(SimOpenRouterOptions {
            keys: vec![SimKey::new(OR_KEY, "clients", setup.free_per_day)],
            per_minute_limit: None,
            // What `/models` says each can do is what the router learns: tools here, images there.
            models: vec![
                SimModel::free(FREE_MODEL, 131_072).with_tools(),
                SimModel::free(VISION_MODEL, 32_768).with_vision(),
            ],
            reply: setup.reply.clone(),
            ..SimOpenRouterOptions::default()
        })
        .await
        .unwrap();
        openrouter.set_fault(setup.fault.clone());
        let ollama = SimOllama::start(SimOllamaOptions {
            keys: vec![OLLAMA_KEY.into()],
            models: vec![PAID_MODEL.into()],
            embedding_models: vec![EMBED_MODEL.into()],
            reply: setup.reply.clone(),
            ..SimOllamaOptions::default()
        })
        .await
        .unwrap();
        let relay = Relay::start(&openrouter.base_url()).await;

        let daemon = ApiDaemon::start(
            &config_text(&setup),
            &[
                ("RUST_LOG", "info".into()),
                ("OPENROUTER_API_KEY_1", OR_KEY.into()),
                ("OLLAMA_API_KEY", OLLAMA_KEY.into()),
                ("SWITCHBOARD__OPENROUTER__BASE_URL", relay.base_url()),
                ("SWITCHBOARD__OLLAMA__BASE_URL", ollama.base_url()),
            ],
            true,
        )
        .await;
        Rig {
            openrouter,
            ollama,
            relay,
            daemon,
        }
    }

    /// Runs the named tests (`openai::test_chat` → `tests/clients/test_openai_client.py::test_chat`)
    /// and asserts each passed.
    async fn pytest(&self, tests: &[&str]) -> PytestRun {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let ids: Vec<String> = tests
            .iter()
            .map(|t| {
                let (client, name) = t.split_once("::").expect("client::test_name");
                format!("tests/clients/test_{client}_client.py::{name}")
            })
            .collect();
        let image = PNG.iter().fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        });
        let child = Command::new(python())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            // Loopback only: no proxy setting of the machine may reroute the clients.
            .env("NO_PROXY", "*")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("SB_API_BASE", &self.daemon.base_url)
            .env("SB_FREE_MODEL", FREE_MODEL)
            .env("SB_PAID_MODEL", PAID_MODEL)
            .env("SB_EMBED_MODEL", EMBED_MODEL)
            .env("SB_VISION_MODEL", VISION_MODEL)
            .env("SB_IMAGE_HEX", image)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA"])
            .args(&ids)
            .current_dir(root)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(WAIT, child)
            .await
            .expect("pytest finished in time")
            .expect("run pytest");
        let ended = Instant::now();
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let passed = format!("{} passed", ids.len());
        assert!(
            out.status.success() && output.contains(&passed) && !output.contains("skipped"),
            "pytest {ids:?} did not pass all {} ({}):\n{output}\n-- the daemon's log:\n{}",
            ids.len(),
            out.status,
            self.daemon.log_text()
        );
        PytestRun { output, ended }
    }

    /// Asserts neither simulator saw a request no correct client makes, and the daemon logged no secret.
    fn assert_clean(&self) {
        assert!(
            self.openrouter.unexpected().is_empty(),
            "{:?}",
            self.openrouter.unexpected()
        );
        assert!(
            self.ollama.unexpected().is_empty(),
            "{:?}",
            self.ollama.unexpected()
        );
        let logs = self.daemon.log_text();
        for secret in [OR_KEY, OLLAMA_KEY] {
            assert!(!logs.contains(secret), "the daemon logged a key");
        }
    }
}

/// The daemon's settings for `setup`: the API on a free loopback port, the two tiers, no platform.
fn config_text(setup: &Setup) -> String {
    format!(
        "[api]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\n\
         [router]\npaid_enabled = {paid}\n\n\
         [openrouter]\nfree_models = [\"{FREE_MODEL}\", \"{VISION_MODEL}\"]\n\
         free_requests_per_day = {free}\nrequests_per_minute = 0\n\n\
         [ollama]\nmodels = [\"{PAID_MODEL}\"]\n",
        paid = setup.paid,
        free = setup.free_per_day,
    )
}

// ---------------------------------------------------------------------------------------------------
// A TCP relay in front of the OpenRouter simulator

/// One upstream connection the relay carried, once it closed.
#[derive(Clone, Debug)]
struct Closed {
    /// When it closed.
    at: Instant,
    /// Whether the daemon's side closed it (rather than the simulator finishing).
    by_daemon: bool,
    /// Bytes the simulator had sent on it.
    from_upstream: u64,
}

/// A byte-for-byte TCP relay from the daemon to the simulated OpenRouter that records who closed each
/// connection and when: the simulator "sees the client go" exactly when the relay does, since the relay
/// closes the simulator's side at once.
struct Relay {
    addr: SocketAddr,
    upstream: SocketAddr,
    closed: Arc<Mutex<Vec<Closed>>>,
}

impl Relay {
    async fn start(sim_base_url: &str) -> Relay {
        let upstream: SocketAddr = sim_base_url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let closed = Arc::new(Mutex::new(Vec::new()));
        let log = closed.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(upstream).await {
                        let record = relay_one(inbound, outbound).await;
                        log.lock().unwrap().push(record);
                    }
                });
            }
        });
        Relay {
            addr,
            upstream,
            closed,
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    fn closed(&self) -> Vec<Closed> {
        self.closed.lock().unwrap().clone()
    }
}

/// Copies both ways until one side closes; returns who did.
async fn relay_one(inbound: TcpStream, outbound: TcpStream) -> Closed {
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let mut from_upstream = 0u64;
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    let by_daemon = loop {
        tokio::select! {
            read = in_read.read(&mut up) => match read {
                Ok(n) if n > 0 => {
                    if out_write.write_all(&up[..n]).await.is_err() {
                        break false;
                    }
                }
                _ => break true,
            },
            read = out_read.read(&mut down) => match read {
                Ok(n) if n > 0 => {
                    from_upstream += n as u64;
                    if in_write.write_all(&down[..n]).await.is_err() {
                        break true;
                    }
                }
                _ => break false,
            },
        }
    };
    Closed {
        at: Instant::now(),
        by_daemon,
        from_upstream,
    }
}

// ---------------------------------------------------------------------------------------------------
// Scenarios

/// Everything that needs no fault: listings, chat both ways through both clients, usage, tool calls,
/// an image, embeddings, `/api/generate`, the legacy completions route and an unknown model.
#[tokio::test]
#[ignore = "needs the Python venv that .ci/run makes (SB_PYTHON)"]
async fn official_clients_chat_tools_images_embeddings() {
    let rig = Rig::start(Setup::default()).await;
    rig.pytest(&[
        "openai::test_list_models",
        "openai::test_chat",
        "openai::test_chat_stream",
        "openai::test_include_usage",
        "openai::test_tool_call_round_trip",
        "openai::test_tool_call_streamed",
        "openai::test_image",
        "openai::test_embeddings",
        "openai::test_legacy_completions",
        "openai::test_unknown_model_is_not_found",
        "ollama::test_list_models",
        "ollama::test_chat",
        "ollama::test_chat_stream",
        "ollama::test_tool_call_round_trip",
        "ollama::test_tool_call_streamed",
        "ollama::test_image",
        "ollama::test_embed",
        "ollama::test_generate",
        "ollama::test_unknown_model_is_not_found",
    ])
    .await;
    // Nothing answered from the paid tier: chat stayed free, and only embeddings went to Ollama.
    let paid_chats: Vec<_> = rig
        .ollama
        .requests()
        .into_iter()
        .filter(switchboard::sim::SimRequest::is_chat)
        .collect();
    assert!(
        paid_chats.is_empty(),
        "chats reached the paid tier: {paid_chats:#?}\n-- OpenRouter's unexpected: {:?}\n-- the daemon's log:\n{}",
        rig.openrouter.unexpected(),
        rig.daemon.log_text()
    );
    // Each client's image reached the vision model as the very bytes sent (decoded by the simulator).
    let png = SimImage {
        sha256: Sha256::digest(PNG)
            .iter()
            .fold(String::new(), |mut hex, b| {
                let _ = write!(hex, "{b:02x}");
                hex
            }),
        bytes: PNG.len(),
    };
    let with_image: Vec<_> = rig
        .openrouter
        .requests()
        .into_iter()
        .filter(|r| !r.images.is_empty())
        .collect();
    assert_eq!(with_image.len(), 2, "{with_image:?}");
    for request in with_image {
        assert_eq!(request.images, vec![png.clone()]);
        assert_eq!(request.model.as_deref(), Some(VISION_MODEL));
    }
    // Both embedding calls of each client reached the embedding model.
    let embeds = rig
        .ollama
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/embed" && r.status == 200)
        .count();
    assert!(
        embeds >= 4,
        "{embeds} embedding requests reached the upstream"
    );
    rig.assert_clean();
}

/// The free account's quota is one request: the first answer is free, the second walks to paid, and
/// the clients see it in `model` and the `x-switchboard-*` headers.
#[tokio::test]
#[ignore = "needs the Python venv that .ci/run makes (SB_PYTHON)"]
async fn free_to_paid_walk_openai() {
    free_to_paid_walk("openai::test_free_to_paid_walk").await;
}

/// As [`free_to_paid_walk_openai`], through the `ollama` client.
#[tokio::test]
#[ignore = "needs the Python venv that .ci/run makes (SB_PYTHON)"]
async fn free_to_paid_walk_ollama() {
    free_to_paid_walk("ollama::test_free_to_paid_walk").await;
}

async fn free_to_paid_walk(test: &str) {
    let rig = Rig::start(Setup {
        free_per_day: 1,
        ..Setup::default()
    })
    .await;
    rig.pytest(&[test]).await;
    assert_eq!(rig.openrouter.requests_for_account("clients"), 1);
    assert_eq!(rig.ollama.chat_requests(), 1);
    rig.assert_clean();
}

/// The free quota is spent and paid is off: 429 with a long `Retry-After` and `x-should-retry: false`,
/// which the openai SDK obeys (one request, no retries) — `openai.RateLimitError` / `ResponseError(429)`.
#[tokio::test]
#[ignore = "needs the Python venv that .ci/run makes (SB_PYTHON)"]
async fn rate_limited_surfaces_as_client_errors() {
    let rig = Rig::start(Setup {
        paid: false,
        fault: Some(Fault::RateLimitDaily),
        ..Setup::default()
    })
    .await;
    rig.pytest(&["openai::test_rate_limited", "ollama::test_rate_limited"])
        .await;
    // The daily 429 ends the account's day: the second client's request never reached the upstream.
    assert_eq!(rig.openrouter.chat_requests(), 1);
    assert_eq!(rig.ollama.chat_requests(), 0);
    rig.assert_clean();
}

/// The upstream closes the stream after three deltas: both clients raise instead of ending quietly.
#[tokio::test]
#[ignore = "needs the Python venv that .ci/run makes (SB_PYTHON)"]
async fn stream_cut_midway_raises_in_both_clients() {
    let rig = Rig::start(Setup {
        fault: Some(Fault::TruncateAfter(3)),
        ..Setup::default()
    })
    .await;
    rig.pytest(&[
        "openai::test_stream_cut_raises",
        "ollama::test_stream_cut_raises",
    ])
    .await;
    // Fallback ends with the first byte: each cut request reached the upstream once and no paid tier.
    assert_eq!(rig.openrouter.chat_requests(), 2);
    assert_eq!(rig.ollama.chat_requests(), 0);
    rig.assert_clean();
}

/// A client that hangs up mid-stream ends the upstream request while the client process still runs.
#[tokio::test]
#[ignore = "needs the Python venv that .ci/run makes (SB_PYTHON)"]
async fn disconnecting_client_cancels_upstream() {
    for test in ["openai::test_disconnect", "ollama::test_disconnect"] {
        let rig = Rig::start(Setup {
            // ~2,000 chunks 20 ms apart: the answer would stream for 40 s if nobody cancelled it.
            reply: ReplyShape {
                chunk_delay: Duration::from_millis(20),
                words_per_chunk: 1,
                sentences: 150,
                ..ReplyShape::default()
            },
            ..Setup::default()
        })
        .await;
        let started = Instant::now();
        let run = rig.pytest(&[test]).await;
        let streams: Vec<Closed> = rig
            .relay
            .closed()
            .into_iter()
            .filter(|c| c.at > started && c.from_upstream > 0)
            .collect();
        let cancelled = streams.iter().find(|c| c.by_daemon);
        let cancelled = cancelled.unwrap_or_else(|| {
            panic!(
                "{test}: no upstream connection was closed by the daemon ({streams:?}, upstream {}):\n{}",
                rig.relay.upstream, run.output
            )
        });
        // The test sleeps 3 s after closing its stream: the upstream went well before it exited.
        assert!(
            run.ended.duration_since(cancelled.at) > Duration::from_millis(1_500),
            "{test}: the upstream request outlived the client's disconnect"
        );
        assert_eq!(rig.openrouter.chat_requests(), 1);
        rig.assert_clean();
    }
}
