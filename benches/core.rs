//! Core overhead: one message through the core (access, command parsing, ordering ticket, context load,
//! user-turn write, router call, event forwarding, answer write, usage counters) to an in-memory
//! zero-latency router and back. Target: p99 ≤ 100 µs. Run: `cargo bench --bench core`.

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

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use switchboard::clock::SystemClock;
use switchboard::config::{self, Env};
use switchboard::core::Core;
use switchboard::domain::{ChatKind, ChatRef, Inbound, Platform, ReplyEvent, Sender, UserRef};
use switchboard::router::scripted::ScriptedRouter;
use switchboard::store::memory::MemoryStore;

const WARMUP: usize = 2_000;
const SAMPLES: usize = 50_000;
/// Conversations the messages are spread over, so history loads see realistic, bounded histories.
const CONVERSATIONS: usize = 500;

fn inbound(i: usize) -> Inbound {
    let id = (i % CONVERSATIONS).to_string();
    Inbound {
        chat: ChatRef::new(Platform::Telegram, id.clone()),
        chat_kind: ChatKind::Direct,
        sender: Sender {
            user: UserRef::new(Platform::Telegram, id),
            display_name: "bench".into(),
        },
        text: format!("benchmark message number {i}"),
        addressed: true,
        reply_to: None,
        thread: None,
        attachments: Vec::new(),
    }
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The loop runs as a task on the runtime, as an adapter's handler does: driven from `block_on`'s own
    // (non-worker) thread, every message would pay two cross-thread wake-ups that adapters never pay.
    let measured = runtime.spawn(async {
        // History is bounded per conversation so the load stays like a live bot's (last 50 turns).
        let toml = "[access]\nuser_messages_per_minute = 0\n[store]\nload_turns = 50\n";
        let config = Arc::new(config::parse(toml, "<bench>", &Env::default()).unwrap());
        let core = Core::new(config, Arc::new(MemoryStore::new()), ScriptedRouter::bench(), Arc::new(SystemClock));
        let mut micros = Vec::with_capacity(SAMPLES);
        for i in 0..WARMUP + SAMPLES {
            let start = Instant::now();
            let mut stream = core.handle(inbound(i)).expect("answered");
            let mut finished = false;
            while let Some(event) = stream.next().await {
                finished |= matches!(event, ReplyEvent::Finished(_));
            }
            let elapsed = start.elapsed().as_nanos();
            assert!(finished);
            if i >= WARMUP {
                micros.push(elapsed);
            }
        }
        micros.sort_unstable();
        println!("core round trip, {SAMPLES} messages over {CONVERSATIONS} conversations (in-memory store, zero-latency router):");
        for (name, p) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999)] {
            println!("  {name:>6}: {:>8.1} µs", percentile(&micros, p) as f64 / 1000.0);
        }
        println!("  {:>6}: {:>8.1} µs", "max", *micros.last().unwrap() as f64 / 1000.0);
    });
    runtime.block_on(measured).expect("the benchmark task");
}
