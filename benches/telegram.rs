//! Throughput and added latency of the Telegram path, in process: fake Bot API → adapter → core →
//! zero-latency router (`ScriptedRouter::bench`) → fake Bot API, with 1,000 chats each sending one
//! message per round, edit pacing off (`edit_interval_*_ms = 0`). Prints messages/s, latency
//! percentiles (update queued → the reply's sendMessage received by the fake) and peak RSS (VmHWM, which
//! includes the fake server). Run: `cargo bench --bench telegram`.

#[path = "../tests/support/telegram_fake.rs"]
mod telegram_fake;

use std::collections::HashMap;
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
use switchboard::store::memory::MemoryStore;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use telegram_fake::{FakeTelegram, TOKEN};

/// Concurrent chats per round.
const CHATS: i64 = 1_000;
/// Measured rounds (after one warm-up round).
const ROUNDS: usize = 10;

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
    runtime.block_on(bench());
}

async fn bench() {
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

    round(&fake).await; // warm-up: connections, allocations
    let mut latencies = Vec::new();
    let started = Instant::now();
    for _ in 0..ROUNDS {
        latencies.extend(round(&fake).await);
    }
    let elapsed = started.elapsed();
    // Unloaded latency: one message at a time, so nothing queues behind a burst.
    let mut single = Vec::new();
    for _ in 0..200 {
        single.extend(round_of(&fake, 1).await);
    }
    single.sort();
    intake.cancel();
    adapter.await.unwrap().unwrap();

    let total = latencies.len();
    latencies.sort();
    let pct = |p: f64| latencies[((total as f64 * p) as usize).min(total - 1)];
    println!("telegram path: {CHATS} concurrent chats x {ROUNDS} rounds = {total} messages");
    println!(
        "throughput: {:.0} messages/s ({:.2} s)",
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "latency (queued update -> reply received): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(pct(0.50)),
        ms(pct(0.90)),
        ms(pct(0.99)),
        ms(latencies[total - 1])
    );
    println!(
        "latency, one message at a time (200 messages): p50 {:.2} ms, p99 {:.2} ms",
        ms(single[single.len() / 2]),
        ms(single[single.len() * 99 / 100])
    );
    println!(
        "peak RSS (VmHWM, adapter + core + fake Bot API): {} MB",
        peak_rss_kb() / 1024
    );
}

/// One message from each chat at once; returns each message's latency.
async fn round(fake: &FakeTelegram) -> Vec<Duration> {
    round_of(fake, CHATS).await
}

/// One message from each of `chats` chats at once; returns each message's latency.
async fn round_of(fake: &FakeTelegram, chats: i64) -> Vec<Duration> {
    let mut pushed = HashMap::with_capacity(chats as usize);
    for chat in 1..=chats {
        fake.push_text(chat, chat, "User", "ping");
        pushed.insert(chat, Instant::now());
    }
    let mut latencies = Vec::with_capacity(chats as usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    while latencies.len() < chats as usize {
        assert!(
            Instant::now() < deadline,
            "round did not complete: {} of {chats}",
            latencies.len()
        );
        for (chat, at) in fake.take_delivered() {
            if let Some(sent) = pushed.remove(&chat) {
                latencies.push(at - sent);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());
    latencies
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
