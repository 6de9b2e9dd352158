//! Discord adapter benchmark (in-process): MESSAGE_CREATE → reply through the fake Discord (REST +
//! ws gateway on 127.0.0.1, the same fake the tests use), the real adapter and core, and a zero-latency
//! `ScriptedRouter::bench()`, with edit pacing 0. Measures the latency the adapter and core add (gateway
//! dispatch → the reply's POST arriving at the fake; includes the typing POST before it), throughput with
//! many conversations at once, and peak RSS (VmHWM, which includes the fakes).
//!
//! Run: `cargo bench --bench discord`.

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

#[path = "../tests/support/fake_discord.rs"]
mod fake_discord;

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use switchboard::clock::SystemClock;
use switchboard::config::Config;
use switchboard::core::Core;
use switchboard::health::Health;
use switchboard::platforms::discord::DiscordAdapter;
use switchboard::platforms::{AdapterContext, PlatformAdapter};
use switchboard::router::scripted::ScriptedRouter;
use switchboard::store::memory::MemoryStore;

use fake_discord::{fake_discord, message_json, user, FakeDiscord, ALICE};

/// Sequential round trips for the latency figures (after a warm-up).
const LATENCY_SAMPLES: usize = 2000;
/// Warm-up round trips (connection pools, allocator, first-use paths).
const WARMUP: usize = 200;
/// Messages dispatched at once, each in its own DM channel, for the throughput figure
/// (`SB_BENCH_BURST` overrides it, e.g. 1000 to compare with the Telegram benchmark's 1,000 chats).
const DEFAULT_BURST: usize = 5000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

fn dm(id: u64, channel: u64, text: &str) -> serde_json::Value {
    message_json(
        &id.to_string(),
        &channel.to_string(),
        user(ALICE, "Alice"),
        text,
    )
}

/// Waits until the fake has seen `target` created messages.
async fn wait_created(fake: &FakeDiscord, target: usize) {
    loop {
        let notified = fake.state.posted.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if fake.state.created.lock().unwrap().len() >= target {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), notified).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn run() {
    let burst: usize = std::env::var("SB_BENCH_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_BURST);
    let fake = fake_discord().await;
    let mut config = Config::default();
    config.discord.proxy_url = Some(fake.url());
    config.discord.edit_interval_ms = 0;
    config.access.user_messages_per_minute = 0;
    config.core.max_concurrent_turns = 256;
    config.validate().expect("valid config");
    let config = Arc::new(config);
    let store = Arc::new(MemoryStore::new());
    let core = Core::new(
        config.clone(),
        store.clone(),
        ScriptedRouter::bench(),
        Arc::new(SystemClock),
    );
    let (_config_tx, config_rx) = watch::channel(config);
    let health = Health::new();
    let intake = CancellationToken::new();
    let ctx = AdapterContext {
        core,
        store,
        health: health.clone(),
        config: config_rx,
        intake: intake.clone(),
    };
    let token = SecretString::from("bench-token-not-a-secret");
    let adapter = tokio::spawn(Box::new(DiscordAdapter::new(token)).run(ctx));
    let ready = Instant::now();
    while !health.summary().contains("discord: connected") {
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "adapter never connected"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut next_id = 600_000_000_000_000_000_u64;
    let mut channel = 310_000_000_000_000_000_u64;
    let mut created = fake.state.created.lock().unwrap().len();

    // Warm-up and latency: one message at a time, each in a fresh DM channel.
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..WARMUP + LATENCY_SAMPLES {
        next_id += 1;
        channel += 1;
        let started = Instant::now();
        fake.dispatch(
            "MESSAGE_CREATE",
            dm(next_id, channel, &format!("latency {i}")),
        );
        created += 1;
        wait_created(&fake, created).await;
        if i >= WARMUP {
            samples.push(started.elapsed());
        }
    }
    samples.sort();

    // Throughput: a burst of messages in distinct conversations.
    let started = Instant::now();
    for i in 0..burst {
        next_id += 1;
        channel += 1;
        fake.dispatch(
            "MESSAGE_CREATE",
            dm(next_id, channel, &format!("burst {i}")),
        );
    }
    created += burst;
    wait_created(&fake, created).await;
    let burst_elapsed = started.elapsed();

    let hwm = vm_hwm_kib();
    intake.cancel();
    adapter
        .await
        .expect("adapter task")
        .expect("adapter stops cleanly");
    fake.assert_no_unexpected_routes();
    let typing = fake
        .calls()
        .iter()
        .filter(|c| c.path.ends_with("/typing"))
        .count();
    assert!(typing >= WARMUP + LATENCY_SAMPLES + burst);

    println!("discord adapter benchmark (in-process, fake Discord on 127.0.0.1, zero-latency router, edit pacing 0)");
    println!(
        "latency MESSAGE_CREATE → reply POST over {LATENCY_SAMPLES} sequential messages: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        percentile(&samples, 0.50),
        percentile(&samples, 0.90),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
    );
    println!(
        "throughput: {burst} messages in {burst} conversations answered in {:?} = {:.0} replies/s",
        burst_elapsed,
        burst as f64 / burst_elapsed.as_secs_f64()
    );
    println!(
        "peak RSS (VmHWM, process incl. fakes): {:.1} MiB",
        hwm as f64 / 1024.0
    );
}
