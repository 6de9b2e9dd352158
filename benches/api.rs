//! The local LLM API under load, side by side with the upstream called directly and with the LiteLLM
//! proxy, in one run against the same zero-latency simulated OpenRouter (in this process, real HTTP and
//! SSE). switchboard is the release binary `switchboard run` serving only `[api]`, in its own process;
//! LiteLLM is `benches/litellm/run.sh` (installs `litellm[proxy]` from PyPI into a venv under /var/tmp
//! on first use), one worker, the same model behind it. The load generator is this process (reqwest
//! over loopback on a 2-worker tokio runtime): it shares the 2-core machine with the simulator, the
//! daemon and LiteLLM, so every figure includes that contention.
//!
//! A bare forwarder (`support/forwarder.rs`: axum + reqwest, no work) runs in this process as the
//! reference for what a proxy hop costs here at all (measures 1 and 2 only); `process` in
//! `SB_BENCH_TARGETS` adds the same forwarder in a process of its own, as switchboard runs.
//!
//! Measured, for each target (direct, switchboard, LiteLLM):
//! 1. one request at a time, each proxy interleaved with the direct path in a loop of its own:
//!    non-streaming latency and time to first token (first SSE event with text); added = proxy p99 −
//!    direct p99 of the same loop, and per interleaved pair;
//! 2. closed-loop throughput at rising concurrency, with p99 at each step;
//! 3. 2,000 concurrent streams, every answer checked whole (text and `[DONE]`): no lost chunk;
//! 4. RSS idle and at 1,000 concurrent open streams (`VmRSS` of the process and its children);
//! 5. a soak at a fixed rate (half streaming) with RSS sampled every 10 s: growth in MiB/min.
//!
//! Run: `cargo bench --bench api`. `SB_BENCH_SOAK_SECS` (default 600) sets the soak per target
//! (`SB_BENCH_LITELLM_SOAK_SECS` LiteLLM's alone),
//! `SB_BENCH_TARGETS` (default `forwarder,switchboard,litellm`) picks the proxies, `SB_BENCH_SOAK_RATE` (default 200) the soak's requests/s,
//! `SB_BENCH_PHASES` (default `singles,ladder,soak,streams`) picks the measurements to run.

// Measurements read best whole and their arithmetic is on small known values (counts, nanoseconds,
// KiB): these pedantic lints are off for benchmark code only.
#![allow(
    clippy::too_many_lines,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

#[path = "../tests/support/api_daemon.rs"]
mod api_daemon;
#[path = "support/forwarder.rs"]
mod forwarder;
#[path = "support/procfs.rs"]
mod procfs;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use switchboard::sim::openrouter::{SimKey, SimModel, SimOpenRouter, SimOpenRouterOptions};
use switchboard::sim::{reply_text, ReplyShape};

use api_daemon::ApiDaemon;
use procfs::proc_status_kb;
use tokio::process::{Child, Command};

/// The simulated OpenRouter key.
const SIM_KEY: &str = "sk-or-sim-bench";
/// The one model every target asks for.
const MODEL: &str = "meta-llama/llama-3.3-70b-instruct:free";
/// What every request says.
const PROMPT: &str = "ping";
/// Interleaved requests per target one at a time (each of non-streaming and streaming).
const SINGLES: usize = 2_000;
/// Concurrency steps of the throughput ladder, and how long each runs.
const LADDER: &[usize] = &[1, 2, 4, 8, 16, 32, 64];
const STEP: Duration = Duration::from_secs(5);
/// Concurrent streams checked for lost chunks, and held open for the memory figure.
const STREAMS: usize = 2_000;
const HELD_STREAMS: usize = 1_000;
/// Requests a soak keeps in flight at most.
const SOAK_IN_FLIGHT: u32 = 512;
/// A request that takes longer than this failed (a stalled stream at 2,000 at once included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The port LiteLLM listens on (its CLI takes a fixed port).
const LITELLM_PORT: u16 = 41_731;

fn main() {
    // This executable is also the separate-process forwarder (`SB_BENCH_TARGETS=…,process`).
    forwarder::child_main();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

/// One system under test.
#[derive(Clone)]
struct Target {
    name: &'static str,
    /// The chat completions URL.
    url: String,
    /// Sent as the bearer key (the simulator wants its key; the proxies on loopback want none).
    key: Option<&'static str>,
    /// The process to measure RSS of (none for the direct path: the simulator lives in this process).
    pid: Option<u32>,
}

async fn run() {
    let sim = SimOpenRouter::start(SimOpenRouterOptions {
        keys: vec![SimKey::new(SIM_KEY, "bench", u32::MAX)],
        per_minute_limit: None,
        models: vec![SimModel::free(MODEL, 131_072)],
        reply: ReplyShape::default(),
        ..SimOpenRouterOptions::default()
    })
    .await
    .unwrap();
    // SB_BENCH_TARGETS picks the proxies to measure (the direct path is always the baseline).
    let wanted = std::env::var("SB_BENCH_TARGETS")
        .unwrap_or_else(|_| "forwarder,switchboard,litellm".into());
    let mut report = Report::default();
    let daemon = if wanted.contains("switchboard") {
        let daemon = start_daemon(&sim.base_url()).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        report.line(&format!(
            "switchboard: RSS idle after start-up {:.1} MB",
            mb(tree_rss_kb(daemon.pid().unwrap()))
        ));
        Some(daemon)
    } else {
        None
    };
    let litellm = if wanted.contains("litellm") {
        let litellm = LiteLlm::start(&sim.base_url()).await;
        report.line(&format!(
            "litellm: RSS idle after start-up {:.1} MB",
            mb(tree_rss_kb(litellm.child.id().unwrap()))
        ));
        Some(litellm)
    } else {
        None
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4 * STREAMS)
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let mut targets = vec![Target {
        name: "direct",
        url: format!("{}/chat/completions", sim.base_url()),
        key: Some(SIM_KEY),
        pid: None,
    }];
    // The reference for added latency and throughput (one at a time and the ladder only).
    if wanted.contains("forwarder") {
        targets.push(Target {
            name: "bare forwarder",
            url: forwarder::start(format!("{}/chat/completions", sim.base_url()), SIM_KEY),
            key: None,
            pid: None,
        });
    }
    // The same forwarder in its own process, as switchboard is: what the process boundary adds.
    let forwarder_process = if wanted.contains("process") {
        let upstream = format!("{}/chat/completions", sim.base_url());
        let (child, url) = forwarder::spawn_process(&upstream, SIM_KEY).await;
        targets.push(Target {
            name: "forwarder process",
            url,
            key: None,
            pid: None,
        });
        Some(child)
    } else {
        None
    };
    if let Some(d) = &daemon {
        targets.push(Target {
            name: "switchboard",
            url: format!("{}/v1/chat/completions", d.base_url),
            key: None,
            pid: d.pid(),
        });
    }
    if let Some(l) = &litellm {
        targets.push(Target {
            name: "litellm",
            url: format!("{}/v1/chat/completions", l.base_url),
            key: None,
            pid: l.child.id(),
        });
    }
    for t in &targets {
        // Warm-up: connections, caches, the proxies' first-request paths.
        for _ in 0..200 {
            ask(&client, t, false).await.unwrap();
        }
        if let Some(pid) = t.pid {
            tokio::time::sleep(Duration::from_secs(2)).await;
            report.line(&format!(
                "{}: RSS after 200 warm-up requests, idle 2 s {:.1} MB",
                t.name,
                mb(tree_rss_kb(pid))
            ));
        }
    }
    // SB_BENCH_PHASES runs only some of the measurements (a quick loop while tuning one figure).
    let phases =
        std::env::var("SB_BENCH_PHASES").unwrap_or_else(|_| "singles,ladder,soak,streams".into());
    if phases.contains("singles") {
        singles(&client, &targets, &mut report).await;
        if let Some(d) = &daemon {
            own_time(&client, &d.base_url, &mut report).await;
        }
    }
    if phases.contains("ladder") {
        ladder(&client, &targets, &mut report).await;
    }
    // The soak before the floods of streams: a proxy that an overload left wedged (LiteLLM after
    // 2,000 streams at once) would otherwise spoil its soak.
    for t in targets
        .iter()
        .filter(|t| t.pid.is_some() && phases.contains("soak"))
    {
        soak(&client, t, &mut report).await;
    }
    for t in targets
        .iter()
        .filter(|t| !t.name.contains("forwarder") && phases.contains("streams"))
    {
        streams(&client, t, &sim, &mut report).await;
    }
    println!("\n== summary\n{}", report.text);
    if let Some(d) = &daemon {
        // One lock at a time: a guard held for the whole `println!` while `log_text` locks again
        // deadlocked the run after its summary.
        let count = d.logs.lock().unwrap().len();
        println!(
            "switchboard: warning/error lines in its log: {count}\n{}",
            d.log_text()
        );
    }
    println!("simulator: unexpected requests: {:?}", sim.unexpected());
    drop(forwarder_process);
}

/// The lines the run prints at the end (each also printed as it is measured).
#[derive(Default)]
struct Report {
    text: String,
}

impl Report {
    fn line(&mut self, line: &str) {
        let line = line.to_owned();
        println!("{line}");
        self.text.push_str(&line);
        self.text.push('\n');
    }
}

// ---------------------------------------------------------------------------------------------------
// The processes under test

/// `switchboard run`: the API on a free loopback port, the free tier at the simulator, nothing else.
/// Defaults except: one async worker (`SB_BENCH_WORKERS`), no paid tier (none exists here), and
/// OpenRouter's real per-minute and daily free limits off (they would cap a benchmark at 20 requests a
/// minute).
async fn start_daemon(sim_base_url: &str) -> ApiDaemon {
    let config = format!(
        "[api]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\n[router]\npaid_enabled = false\n\n\
         [openrouter]\nfree_models = [\"{MODEL}\"]\nrequests_per_minute = 0\n\
         free_requests_per_day = 1000000000\n"
    );
    let env = [
        ("OPENROUTER_API_KEY_1", SIM_KEY.to_owned()),
        ("SWITCHBOARD__OPENROUTER__BASE_URL", sim_base_url.to_owned()),
        // An API-only instance on this 2-core machine: one worker, as docs/operations.md advises
        // ("Threads"). SB_BENCH_WORKERS measures another count.
        (
            "SWITCHBOARD_WORKER_THREADS",
            std::env::var("SB_BENCH_WORKERS").unwrap_or_else(|_| "1".into()),
        ),
    ];
    ApiDaemon::start(&config, &env, false).await
}

/// The LiteLLM proxy, started by `benches/litellm/run.sh`.
struct LiteLlm {
    child: Child,
    base_url: String,
}

impl LiteLlm {
    async fn start(sim_base_url: &str) -> LiteLlm {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/litellm/run.sh");
        let child = Command::new("bash")
            .arg(script)
            .args([sim_base_url, SIM_KEY, MODEL, &LITELLM_PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn benches/litellm/run.sh");
        let base_url = format!("http://127.0.0.1:{LITELLM_PORT}");
        // First use installs LiteLLM (minutes); later starts take ~30 s of Python imports.
        let deadline = Instant::now() + Duration::from_secs(900);
        let probe = reqwest::Client::new();
        loop {
            let alive = probe
                .get(format!("{base_url}/health/liveliness"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if alive {
                break;
            }
            assert!(Instant::now() < deadline, "LiteLLM did not come up");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        LiteLlm { child, base_url }
    }
}

// ---------------------------------------------------------------------------------------------------
// Requests

fn body(stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": stream,
    })
}

/// What one request gave: its latency (to the whole answer, or to the first text when streaming).
struct Asked {
    latency: Duration,
}

/// One request; streaming ones are timed to their first text and then read to the end.
async fn ask(client: &reqwest::Client, t: &Target, stream: bool) -> Result<Asked, String> {
    let started = Instant::now();
    let mut request = client.post(&t.url).json(&body(stream));
    if let Some(key) = t.key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{} answered {}", t.name, response.status()));
    }
    if !stream {
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        let latency = started.elapsed();
        if !bytes.windows(9).any(|w| w == b"You said:") {
            return Err(format!("{}: an answer without the text", t.name));
        }
        return Ok(Asked { latency });
    }
    let mut first = None;
    let mut seen = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        seen.extend_from_slice(&chunk);
        if first.is_none() && has_text(&seen) {
            first = Some(started.elapsed());
        }
    }
    first
        .map(|latency| Asked { latency })
        .ok_or_else(|| format!("{}: a stream without text", t.name))
}

/// Whether an SSE body so far holds a `"content"` with at least one character.
fn has_text(sse: &[u8]) -> bool {
    let text = String::from_utf8_lossy(sse);
    text.match_indices("\"content\":").any(|(at, key)| {
        let rest = text[at + key.len()..].trim_start();
        rest.starts_with('"') && rest.len() > 1 && !rest[1..].starts_with('"')
    })
}

/// Reads a whole stream and checks it: the concatenated text equals `expected` and `[DONE]` ends it.
async fn stream_whole(
    client: &reqwest::Client,
    t: &Target,
    expected: &str,
    opened: &AtomicUsize,
) -> Result<(), String> {
    let mut request = client.post(&t.url).json(&body(true));
    if let Some(key) = t.key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let mut counted = false;
    let mut raw = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        raw.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        if !counted && has_text(&raw) {
            opened.fetch_add(1, Ordering::SeqCst);
            counted = true;
        }
    }
    let (text, done) = sse_text(&String::from_utf8_lossy(&raw));
    if !done {
        return Err("no [DONE]".into());
    }
    if text != expected {
        return Err(format!(
            "text differs: {} of {} chars",
            text.len(),
            expected.len()
        ));
    }
    Ok(())
}

/// The concatenated `delta.content` of an SSE body and whether `[DONE]` ended it.
fn sse_text(sse: &str) -> (String, bool) {
    let mut text = String::new();
    let mut done = false;
    for data in sse.lines().filter_map(|l| l.strip_prefix("data:")) {
        let data = data.trim();
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let Ok(event) = serde_json::from_str::<serde_json::Value>(data) else {
            continue;
        };
        if let Some(piece) = event["choices"][0]["delta"]["content"].as_str() {
            text.push_str(piece);
        }
    }
    (text, done)
}

// ---------------------------------------------------------------------------------------------------
// The measurements

/// 1: one request at a time, non-streaming and time to first token: each proxy in a loop of its own,
/// interleaved with the direct path (direct, proxy, direct, proxy, …). A loop per proxy, not one loop
/// over all of them: a proxy's work after its answer (LiteLLM keeps a core busy after each request)
/// would otherwise land on the next proxy's request instead of on its own figure.
async fn singles(client: &reqwest::Client, targets: &[Target], report: &mut Report) {
    let direct = &targets[0];
    for proxy in &targets[1..] {
        for stream in [false, true] {
            let what = if stream {
                "time to first token"
            } else {
                "non-streaming latency"
            };
            let (mut base, mut through) = (Vec::new(), Vec::new());
            for _ in 0..SINGLES {
                base.push(ask(client, direct, stream).await.unwrap().latency);
                through.push(ask(client, proxy, stream).await.unwrap().latency);
            }
            let mut pairs: Vec<Duration> = through
                .iter()
                .zip(&base)
                .map(|(a, d)| a.saturating_sub(*d))
                .collect();
            base.sort();
            through.sort();
            pairs.sort();
            let added = ms(pct(&through, 0.99)) - ms(pct(&base, 0.99));
            report.line(&format!(
                "one at a time, {what}, {} (n = {SINGLES} pairs with direct): p50 {:.3} ms, p99 {:.3} ms; \
                 direct p50 {:.3} ms, p99 {:.3} ms; added p99 {added:+.3} ms; \
                 per interleaved pair p50 {:.3} ms, p99 {:.3} ms",
                proxy.name,
                ms(pct(&through, 0.50)),
                ms(pct(&through, 0.99)),
                ms(pct(&base, 0.50)),
                ms(pct(&base, 0.99)),
                ms(pct(&pairs, 0.50)),
                ms(pct(&pairs, 0.99)),
            ));
        }
    }
}

/// switchboard's own account of its time (its `/metrics` overhead histogram: each answered request's
/// time less its wait on the provider), over every request so far: warm-up and the one-at-a-time loops.
async fn own_time(client: &reqwest::Client, base_url: &str, report: &mut Report) {
    const NAME: &str = "switchboard_api_latency_overhead_seconds";
    let text = client
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let find = |suffix: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{NAME}{suffix}")))
            .and_then(value)
            .unwrap_or(0.0)
    };
    let count = find("_count{surface=\"openai\"}");
    let sum = find("_sum{surface=\"openai\"}");
    let share = |le: &str| {
        100.0 * find(&format!("_bucket{{surface=\"openai\",le=\"{le}\"}}")) / count.max(1.0)
    };
    report.line(&format!(
        "switchboard's own time per answered request (its /metrics; warm-up and one-at-a-time, n = {count:.0}): \
         mean {:.0} µs; within 50 µs {:.1} %, 100 µs {:.1} %, 250 µs {:.1} %, 1 ms {:.1} %",
        sum / count.max(1.0) * 1e6,
        share("0.00005"),
        share("0.0001"),
        share("0.00025"),
        share("0.001"),
    ));
}

/// 2: closed-loop throughput at each concurrency of [`LADDER`], non-streaming.
async fn ladder(client: &reqwest::Client, targets: &[Target], report: &mut Report) {
    let mut direct_p99 = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let mut best: Option<(f64, usize)> = None;
        for (step, &c) in LADDER.iter().enumerate() {
            let (rate, mut lat, errors) = closed_loop(client, t, c, STEP).await;
            lat.sort();
            let p99 = pct(&lat, 0.99);
            if i == 0 {
                direct_p99.push(p99);
            }
            let added = ms(p99) - ms(direct_p99[step]);
            report.line(&format!(
                "throughput, {} at concurrency {c}: {rate:.0} req/s, p50 {:.3} ms, p99 {:.3} ms \
                 (added p99 {added:+.3} ms), errors {errors}",
                t.name,
                ms(pct(&lat, 0.50)),
                ms(p99),
            ));
            if added <= 1.0 && errors == 0 && best.is_none_or(|(r, _)| rate > r) {
                best = Some((rate, c));
            }
        }
        if i > 0 {
            let best = best.map_or("none".into(), |(r, c)| {
                format!("{r:.0} req/s at concurrency {c}")
            });
            report.line(&format!(
                "throughput, {}: best with added p99 <= 1 ms: {best}",
                t.name
            ));
        }
    }
}

/// `concurrency` workers sending non-streaming requests back to back for `length`.
async fn closed_loop(
    client: &reqwest::Client,
    t: &Target,
    concurrency: usize,
    length: Duration,
) -> (f64, Vec<Duration>, usize) {
    let started = Instant::now();
    let until = started + length;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let target = t.clone();
        workers.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0);
            while Instant::now() < until {
                match ask(&client, &target, false).await {
                    Ok(a) => lat.push(a.latency),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for w in workers {
        let (lat, e) = w.await.unwrap();
        all.extend(lat);
        errors += e;
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    (rate, all, errors)
}

/// 3 and 4: 2,000 streams at once, each checked whole; then 1,000 held open with RSS sampled.
async fn streams(client: &reqwest::Client, t: &Target, sim: &SimOpenRouter, report: &mut Report) {
    // ~15 chunks 20 ms apart (0.3 s a stream), so all of them are open together.
    let shape = ReplyShape {
        chunk_delay: Duration::from_millis(20),
        ..ReplyShape::default()
    };
    let expected = reply_text(MODEL, PROMPT, shape.sentences);
    sim.set_reply_shape(shape);
    let (ok, failures, took, _) = concurrent_streams(client, t, STREAMS, &expected).await;
    report.line(&format!(
        "{STREAMS} concurrent streams, {}: {ok} complete and exact, {} failed ({}) in {:.2} s",
        t.name,
        failures.len(),
        failures.first().map_or("-", String::as_str),
        took.as_secs_f64()
    ));
    let Some(pid) = t.pid else {
        return;
    };
    // Held streams: ~15 chunks 200 ms apart (3 s), so all 1,000 are open at the peak.
    let shape = ReplyShape {
        chunk_delay: Duration::from_millis(200),
        ..ReplyShape::default()
    };
    sim.set_reply_shape(shape);
    let (ok, failures, _, open_rss) =
        concurrent_streams_rss(client, t, HELD_STREAMS, &expected, pid).await;
    report.line(&format!(
        "{HELD_STREAMS} concurrent streams held open, {}: RSS {:.1} MB when all were open; {ok} complete, {} failed",
        t.name,
        mb(open_rss),
        failures.len()
    ));
}

async fn concurrent_streams(
    client: &reqwest::Client,
    t: &Target,
    n: usize,
    expected: &str,
) -> (usize, Vec<String>, Duration, u64) {
    concurrent_streams_rss(client, t, n, expected, 0).await
}

/// `n` streams at once; with a `pid`, that process tree's RSS once all `n` have their first text.
async fn concurrent_streams_rss(
    client: &reqwest::Client,
    t: &Target,
    n: usize,
    expected: &str,
    pid: u32,
) -> (usize, Vec<String>, Duration, u64) {
    let opened = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let client = client.clone();
        let target = t.clone();
        let expected = expected.to_owned();
        let opened = opened.clone();
        tasks.push(tokio::spawn(async move {
            stream_whole(&client, &target, &expected, &opened).await
        }));
    }
    let mut open_rss = 0;
    if pid != 0 {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        while opened.load(Ordering::SeqCst) < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        open_rss = tree_rss_kb(pid);
    }
    let (mut ok, mut failures) = (0, Vec::new());
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) => failures.push(e),
        }
    }
    (ok, failures, started.elapsed(), open_rss)
}

/// 5: a fixed rate, half the requests streaming, RSS every 10 s; the growth is the least-squares slope
/// over the soak after its first minute (start-up allocations settle there).
async fn soak(client: &reqwest::Client, t: &Target, report: &mut Report) {
    let soak_secs = |name: &str| std::env::var(name).ok().and_then(|s| s.parse().ok());
    let all_secs: u64 = soak_secs("SB_BENCH_SOAK_SECS").unwrap_or(600);
    let secs = if t.name == "litellm" {
        soak_secs("SB_BENCH_LITELLM_SOAK_SECS").unwrap_or(all_secs)
    } else {
        all_secs
    };
    let rate: u64 = std::env::var("SB_BENCH_SOAK_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let pid = t.pid.unwrap();
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    // Requests in flight are bounded, so a target that falls behind shows as a lower achieved rate
    // instead of an ever-growing pile of waiting tasks in the load generator.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(SOAK_IN_FLIGHT as usize));
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
    let mut samples = Vec::new();
    let mut next_sample = started;
    let mut n = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        if Instant::now() >= next_sample {
            samples.push((started.elapsed().as_secs_f64() / 60.0, tree_rss_kb(pid)));
            next_sample += Duration::from_secs(10);
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            continue;
        };
        n += 1;
        let (client, done, failed) = (client.clone(), done.clone(), failed.clone());
        let target = t.clone();
        tokio::spawn(async move {
            match ask(&client, &target, n % 2 == 0).await {
                Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                Err(_) => failed.fetch_add(1, Ordering::Relaxed),
            };
            drop(permit);
        });
    }
    // Let the requests in flight finish (bounded by the request timeout) before counting.
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, in_flight.acquire_many(SOAK_IN_FLIGHT)).await;
    let settled: Vec<(f64, u64)> = samples.iter().copied().filter(|(m, _)| *m >= 1.0).collect();
    let slope = slope_mib_per_min(&settled);
    let mut curve = String::new();
    for (m, kb) in samples.iter().step_by(6) {
        let _ = write!(curve, " {m:.0}m:{:.1}", mb(*kb));
    }
    report.line(&format!(
        "soak, {}: {secs} s at {rate} req/s offered (half streaming): {:.0} req/s done, {} failed; \
         RSS {:.1} -> {:.1} MB, growth {slope:+.3} MiB/min after the first minute; MB by minute:{curve}",
        t.name,
        done.load(Ordering::Relaxed) as f64 / secs as f64,
        failed.load(Ordering::Relaxed),
        mb(samples.first().map_or(0, |s| s.1)),
        mb(samples.last().map_or(0, |s| s.1)),
    ));
}

/// Least-squares slope of (minutes, KiB) points, in MiB per minute.
fn slope_mib_per_min(points: &[(f64, u64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1 as f64).sum::<f64>() / n;
    let num: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 as f64 - my)).sum();
    let den: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den / 1024.0
    }
}

// ---------------------------------------------------------------------------------------------------
// Arithmetic and /proc

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `VmRSS` of `pid` and all its descendants, in KiB (LiteLLM may fork workers).
fn tree_rss_kb(pid: u32) -> u64 {
    let mut total = 0;
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        total += proc_status_kb(p, "VmRSS:");
        let tasks = Path::new("/proc").join(p.to_string()).join("task");
        for task in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            stack.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    total
}
