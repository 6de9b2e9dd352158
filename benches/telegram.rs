//! Throughput, added latency and the daemon's peak memory on the Telegram path, measured on the real
//! daemon: fake Bot API → `switchboard run` (the release binary, a separate process with its sled
//! store in a temporary directory) → zero-latency simulated OpenRouter over HTTP → fake Bot API.
//! 1,000 private chats each send one message per round, all at once.
//!
//! The daemon runs with default settings except the ones [`DAEMON_CONFIG`] sets, each of which is
//! printed with its reason. Latency is from the update being queued in the fake to the fake receiving
//! that chat's final text (the model adds nothing, so all of it is switchboard plus loopback HTTP).
//! Peak RSS is the daemon's `VmHWM` from `/proc/<pid>/status`: the fakes run in this process, not there.
//!
//! A second, labelled measurement runs the adapter and core in this process with a zero-latency
//! router (`ScriptedRouter::bench`) and `MemoryStore`: it isolates the adapter from HTTP to the model
//! and from sled. Run: `cargo bench --bench telegram`.

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

#[path = "support/procfs.rs"]
mod procfs;
#[path = "../tests/support/telegram_fake.rs"]
mod telegram_fake;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use switchboard::clock::SystemClock;
use switchboard::config::Config;
use switchboard::core::Core;
use switchboard::health::Health;
use switchboard::platforms::telegram::TelegramAdapter;
use switchboard::platforms::{AdapterContext, PlatformAdapter};
use switchboard::router::scripted::ScriptedRouter;
use switchboard::sim::openrouter::{SimKey, SimOpenRouter, SimOpenRouterOptions};
use switchboard::sim::{reply_text, ReplyShape};
use switchboard::store::memory::MemoryStore;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use procfs::proc_status_kb;

use telegram_fake::{FakeTelegram, TOKEN};

/// Concurrent chats per round (the 1,000).
const CHATS: i64 = 1_000;
/// Measured rounds (after one warm-up round).
const ROUNDS: usize = 10;
/// Messages sent one at a time for the unloaded latency.
const SINGLES: usize = 200;
/// A round that has not completed after this long has lost messages: the benchmark fails.
const ROUND_LIMIT: Duration = Duration::from_secs(120);
/// The simulated OpenRouter key (accepted only by the simulator).
const SIM_KEY: &str = "sk-or-sim-bench";
/// The text every bench user sends.
const PING: &str = "ping";

/// The daemon's settings that differ from the defaults, each with the reason. Everything else
/// (store cache, `max_concurrent_turns = 64`, streaming on, poll hold, logging at `info`) is default.
const DAEMON_CONFIG: &[(&str, &str, &str)] = &[
    (
        "telegram",
        "edit_interval_private_ms = 0",
        "edit pacing off, as the issue asks for this measurement",
    ),
    (
        "telegram",
        "edit_interval_group_ms = 0",
        "edit pacing off (no group chats run here)",
    ),
    (
        "access",
        "user_messages_per_minute = 0",
        "each bench user sends 11+ messages within seconds; the default 12/min limiter would answer \
         \"slow down\" instead of asking the model",
    ),
    (
        "openrouter",
        "requests_per_minute = 0",
        "OpenRouter's real 20 requests/min per account would cap the run at 20 messages a minute",
    ),
    (
        "openrouter",
        "free_requests_per_day = 1000000000",
        "the real daily quota (50 or 1000) would run out in the first round",
    ),
    (
        "router",
        "paid_enabled = false",
        "no paid tier exists here; every answer comes from the free tier",
    ),
];

fn main() {
    // Warnings (failed sends, retries) would distort the figures: show them.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // SB_BENCH_ONLY=daemon or =in-process runs one of the two measurements.
    let only = std::env::var("SB_BENCH_ONLY").unwrap_or_default();
    runtime.block_on(async {
        if only != "in-process" {
            daemon_bench().await;
        }
        if only != "daemon" {
            in_process_bench().await;
        }
    });
}

/// What one measurement produced.
struct Figures {
    burst: Vec<Duration>,
    elapsed: Duration,
    single: Vec<Duration>,
}

impl Figures {
    fn print(&self, label: &str) {
        let total = self.burst.len();
        println!("{label}: {CHATS} concurrent chats x {ROUNDS} rounds = {total} messages");
        println!(
            "  throughput: {:.0} messages/s ({:.2} s)",
            total as f64 / self.elapsed.as_secs_f64(),
            self.elapsed.as_secs_f64()
        );
        println!(
            "  latency in the burst (queued update -> final text received): p50 {:.1} ms, p90 {:.1} ms, \
             p99 {:.1} ms, max {:.1} ms",
            ms(pct(&self.burst, 0.50)),
            ms(pct(&self.burst, 0.90)),
            ms(pct(&self.burst, 0.99)),
            ms(self.burst[total - 1])
        );
        println!(
            "  added latency, one message at a time ({SINGLES} messages): p50 {:.2} ms, p99 {:.2} ms, \
             max {:.2} ms",
            ms(pct(&self.single, 0.50)),
            ms(pct(&self.single, 0.99)),
            ms(self.single[self.single.len() - 1])
        );
    }
}

/// Warm-up, the measured rounds, then messages one at a time; `Err` names a round that lost messages.
async fn measure(fake: &FakeTelegram) -> Result<Figures, String> {
    round_of(fake, CHATS).await?; // warm-up: connections, allocations, sled's first pages
    let mut burst = Vec::new();
    let started = Instant::now();
    for _ in 0..ROUNDS {
        burst.extend(round_of(fake, CHATS).await?);
    }
    let elapsed = started.elapsed();
    let mut single = Vec::new();
    for _ in 0..SINGLES {
        single.extend(round_of(fake, 1).await?);
    }
    burst.sort();
    single.sort();
    Ok(Figures {
        burst,
        elapsed,
        single,
    })
}

async fn daemon_bench() {
    let sim = SimOpenRouter::start(SimOpenRouterOptions {
        keys: vec![SimKey::new(SIM_KEY, "bench", u32::MAX)],
        per_minute_limit: None,
        reply: ReplyShape::default(),
        ..SimOpenRouterOptions::default()
    })
    .await
    .unwrap();
    let fake = FakeTelegram::start_with(false).await;
    // The simulator's reply ends the same way whichever model answers: that marks the final text.
    let sentences = ReplyShape::default().sentences;
    let full = reply_text("m", PING, sentences);
    let suffix = full
        .split_once(". ")
        .map_or(full.as_str(), |(_, rest)| rest);
    fake.set_final_suffix(suffix);

    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("switchboard.toml");
    std::fs::write(&config_path, daemon_config()).unwrap();
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // SB_BENCH_BIN runs another build of the daemon (an older commit, side by side in one run).
    let daemon =
        std::env::var("SB_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_switchboard").into());
    let mut child = tokio::process::Command::new(daemon)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("STATE_DIRECTORY", dir.path().join("state"))
        // Unset (the daemon's default, info) unless the bench is run with SB_BENCH_DAEMON_LOG.
        .envs(std::env::var("SB_BENCH_DAEMON_LOG").map(|l| ("RUST_LOG", l)))
        .envs(std::env::var("SB_BENCH_MALLOC_CONF").map(|c| ("_RJEM_MALLOC_CONF", c)))
        // Experiments: SWITCHBOARD__SECTION__KEY variables given to the bench reach the daemon (and are
        // printed, so a figure never hides a changed setting).
        .envs(overrides())
        .env("TELEGRAM_BOT_TOKEN", TOKEN)
        .env("OPENROUTER_API_KEY_1", SIM_KEY)
        .env("SWITCHBOARD__TELEGRAM__API_URL", &fake.url)
        .env("SWITCHBOARD__OPENROUTER__BASE_URL", sim.base_url())
        .arg("--config")
        .arg(&config_path)
        .arg("run")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn switchboard run");
    let pid = child.id().expect("the daemon's pid");

    let figures = measure(&fake).await;
    let figures = figures.unwrap_or_else(|e| {
        let logs = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = logs.lines().rev().take(60).collect();
        let chats = sim.requests().iter().filter(|r| r.is_chat()).count();
        panic!(
            "{e} ({chats} model requests); the daemon's last log lines (newest first):\n{}",
            tail.join("\n")
        );
    });
    let peak_kb = proc_status_kb(pid, "VmHWM:");
    let rss_kb = proc_status_kb(pid, "VmRSS:");
    let threads = proc_status_kb(pid, "Threads:");
    let cpu = cpu_time(pid);
    // SAFETY: `kill` with a pid we spawned and still own (not yet reaped), and a valid signal.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the daemon stops after SIGTERM")
        .unwrap();
    let logs = std::fs::read_to_string(&log_path).unwrap_or_default();
    let warnings = logs
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();

    println!("== the daemon: `switchboard run` (release binary) with sled, simulated OpenRouter over HTTP");
    for (section, setting, why) in DAEMON_CONFIG {
        println!("  [{section}] {setting}  -- {why}");
    }
    for (name, value) in overrides() {
        println!("  override from the environment: {name}={value}");
    }
    figures.print("daemon path");
    println!(
        "  daemon peak RSS (VmHWM of pid {pid}): {:.1} MB ({peak_kb} KiB); RSS at the end {:.1} MB",
        peak_kb as f64 / 1024.0,
        rss_kb as f64 / 1024.0
    );
    println!(
        "  daemon CPU time over the whole run ({} messages): user {:.1} s + system {:.1} s; threads at the end: {threads}",
        CHATS as usize * (ROUNDS + 1) + SINGLES,
        cpu.0.as_secs_f64(),
        cpu.1.as_secs_f64()
    );
    println!(
        "  Bot API writes (sendMessage + editMessageText + sendChatAction): {} in all",
        fake.writes()
    );
    println!(
        "  model requests: {}; daemon exit: {status}; warning/error log lines: {warnings}",
        sim.requests().iter().filter(|r| r.is_chat()).count()
    );
    if warnings > 0 {
        for line in logs
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(5)
        {
            println!("    {line}");
        }
    }
    assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());
    assert!(sim.unexpected().is_empty(), "{:?}", sim.unexpected());
    assert!(status.success(), "the daemon did not exit cleanly");
}

fn daemon_config() -> String {
    let mut text = String::new();
    for section in ["telegram", "access", "openrouter", "router"] {
        let _ = writeln!(text, "[{section}]");
        for (s, setting, _) in DAEMON_CONFIG {
            if *s == section {
                text.push_str(setting);
                text.push('\n');
            }
        }
    }
    text
}

async fn in_process_bench() {
    let fake = FakeTelegram::start_with(false).await;
    let mut config = Config::default();
    config.telegram.api_url = fake.url.clone();
    config.telegram.edit_interval_private_ms = 0;
    config.telegram.edit_interval_group_ms = 0;
    config.telegram.poll_timeout_secs = 1;
    config.access.user_messages_per_minute = 0;
    config.access.user_paid_requests_per_day = 0;
    config.core.max_concurrent_turns = 2 * CHATS as usize;
    let config = Arc::new(config);
    let store = Arc::new(MemoryStore::new());
    let core = Core::new(
        config.clone(),
        store.clone(),
        ScriptedRouter::bench(),
        Arc::new(SystemClock),
    );
    let (_tx, rx) = watch::channel(config);
    let intake = CancellationToken::new();
    let ctx = AdapterContext {
        core,
        store,
        health: Health::new(),
        config: rx,
        intake: intake.clone(),
    };
    let adapter = tokio::spawn(Box::new(TelegramAdapter::new(SecretString::from(TOKEN))).run(ctx));
    let figures = measure(&fake).await.unwrap();
    intake.cancel();
    adapter.await.unwrap().unwrap();
    println!(
        "== in process (adapter + core, ScriptedRouter::bench, MemoryStore, max_concurrent_turns 2000; \
         no model HTTP, no sled)"
    );
    figures.print("in-process path");
    println!(
        "  peak RSS of this bench process (VmHWM: fakes, simulator and in-process adapter together): {:.1} MB",
        proc_status_kb(std::process::id(), "VmHWM:") as f64 / 1024.0
    );
}

/// One message from each of `chats` chats at once; returns each message's latency.
async fn round_of(fake: &FakeTelegram, chats: i64) -> Result<Vec<Duration>, String> {
    let mut pushed = HashMap::with_capacity(chats as usize);
    for chat in 1..=chats {
        fake.push_text(chat, chat, "User", PING);
        pushed.insert(chat, Instant::now());
    }
    let mut latencies = Vec::with_capacity(chats as usize);
    let deadline = Instant::now() + ROUND_LIMIT;
    while latencies.len() < chats as usize {
        if Instant::now() >= deadline {
            return Err(format!(
                "a round did not complete: {} of {chats} final texts",
                latencies.len()
            ));
        }
        for (chat, at) in fake.take_delivered() {
            if let Some(sent) = pushed.remove(&chat) {
                latencies.push(at - sent);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());
    Ok(latencies)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `SWITCHBOARD__*` variables of the bench's environment, passed on to the daemon.
fn overrides() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(name, _)| name.starts_with("SWITCHBOARD__"))
        .collect()
}

/// User and system CPU time of `pid` so far (`/proc/<pid>/stat` fields 14 and 15, in clock ticks).
fn cpu_time(pid: u32) -> (Duration, Duration) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may contain spaces: count fields after its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf with a valid name has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let time = |t: u64| Duration::from_millis(t * 1000 / per_second);
    (time(ticks(11)), time(ticks(12)))
}
