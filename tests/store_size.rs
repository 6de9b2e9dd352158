//! The store stays small (issue 11): thousands of turns through the real path — the store as the daemon
//! opens it (sled under the counter-coalescing layer), the core, the free-first router and its OpenAI
//! client over a simulated OpenRouter on 127.0.0.1 — must cost a bounded number of bytes on disk per
//! stored message, in the second half of the run as in the first (no faster-than-linear growth), and a
//! graceful stop must leave every usage counter exact.

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

use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use switchboard::clock::{SharedClock, SystemClock};
use switchboard::config::{Config, Env, Secrets};
use switchboard::core::Core;
use switchboard::domain::{ChatKind, ChatRef, Inbound, Platform, ReplyEvent, Sender, UserRef};
use switchboard::router::free_first::FreeFirstRouter;
use switchboard::sim::openrouter::{SimKey, SimOpenRouter, SimOpenRouterOptions};
use switchboard::sim::ReplyShape;
use switchboard::store::open::open_store;
use switchboard::store::sled_store::SledStore;
use switchboard::store::{decode, HistoryStore, StateStore};

const SIM_KEY: &str = "sk-or-sim-size";
/// Chats in the run; each sends [`ROUNDS`] messages, one after another.
const CHATS: usize = 250;
/// Messages per chat: 250 × 10 = 2,500 messages, 5,000 stored turns.
const ROUNDS: usize = 10;
/// Chats answered at once, as an adapter's concurrent handlers would.
const CONCURRENT: usize = 25;
/// The bound per stored turn (a user message or an answer), with a generous margin: the live data of a
/// turn here is ~0.4 KB and a compacted sled database holds it in ~1 KB (BENCHMARKS.md); sled's
/// segment-sized steps make small runs noisy. Before coalescing the counters, hot-key rewrites are what
/// pushed a long-running store to tens of KB per message (issue 11).
const MAX_BYTES_PER_TURN: u64 = 4 * 1024;

fn dm(chat: usize, text: &str) -> Inbound {
    let id = (100_000 + chat).to_string();
    Inbound {
        chat: ChatRef::new(Platform::Telegram, &id),
        chat_kind: ChatKind::Direct,
        sender: Sender {
            user: UserRef::new(Platform::Telegram, &id),
            display_name: format!("user{chat}"),
        },
        text: text.into(),
        addressed: true,
        reply_to: None,
        thread: None,
        attachments: Vec::new(),
    }
}

/// Apparent bytes of every file under `dir` (what sled writes, as `du --apparent-size` counts it).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

/// Sends round `round` of every chat, [`CONCURRENT`] at a time; each must end `Finished`.
async fn round(core: &Arc<Core>, round: usize) {
    futures_util::stream::iter(0..CHATS)
        .for_each_concurrent(CONCURRENT, |chat| {
            let core = core.clone();
            async move {
                let text =
                    format!("question {round} from chat {chat}: how does the store stay small?");
                let events: Vec<ReplyEvent> = core.handle(dm(chat, &text)).unwrap().collect().await;
                assert!(
                    matches!(events.last(), Some(ReplyEvent::Finished(_))),
                    "{events:?}"
                );
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_through_the_real_path_cost_bounded_bytes_and_counters_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let clock: SharedClock = Arc::new(SystemClock);
    let sim = SimOpenRouter::start(SimOpenRouterOptions {
        keys: vec![SimKey::new(SIM_KEY, "size", u32::MAX)],
        per_minute_limit: None,
        reply: ReplyShape::default(),
        ..SimOpenRouterOptions::default()
    })
    .await
    .unwrap();
    let mut config = Config::default();
    config.store.dir = Some(dir.path().to_path_buf());
    config.openrouter.base_url = sim.base_url();
    // The limits a real deployment has would answer "slow down" or run out long before 2,500 messages.
    config.openrouter.requests_per_minute = 0;
    config.openrouter.free_requests_per_day = 1_000_000_000;
    config.access.user_messages_per_minute = 0;
    config.router.paid_enabled = false;
    let secrets = Secrets::load(&Env::from_pairs([("OPENROUTER_API_KEY_1", SIM_KEY)])).unwrap();
    let store = open_store(&config, &Env::default(), &clock).await.unwrap();
    let router =
        FreeFirstRouter::from_config(&config, &secrets, store.clone(), clock.clone()).unwrap();
    let core = Core::new(Arc::new(config), store.clone(), router, clock);
    let db = dir.path().join("db");

    for r in 0..ROUNDS / 2 {
        round(&core, r).await;
    }
    store.flush_all().await.unwrap();
    let half = dir_bytes(&db);
    for r in ROUNDS / 2..ROUNDS {
        round(&core, r).await;
    }
    store.flush_all().await.unwrap();
    let full = dir_bytes(&db);

    let turns = (CHATS * ROUNDS * 2) as u64;
    let (first, second) = (half / (turns / 2), (full - half) / (turns / 2));
    assert!(
        full / turns <= MAX_BYTES_PER_TURN,
        "{full} bytes for {turns} turns"
    );
    assert!(
        second <= MAX_BYTES_PER_TURN,
        "the second half cost {second} bytes per turn (the first {first}): growth is not linear"
    );

    // Every turn is stored, and a graceful stop left every counter exact on disk: each message counted
    // once for its sender and once for its chat. (Dropping the last handle releases sled's lock.)
    drop(core);
    drop(store);
    let store = SledStore::open(dir.path(), 4, 0).unwrap().store;
    let conversations = store.list_conversations().unwrap();
    assert_eq!(conversations.len(), CHATS);
    assert!(conversations
        .iter()
        .all(|(_, meta)| meta.turns == 2 * ROUNDS as u64));
    let counted: u64 = store
        .kv_scan("core.usage", "")
        .unwrap()
        .iter()
        .map(|(_, v)| {
            decode::<serde_json::Value>(v).unwrap()["requests"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(counted, 2 * (CHATS * ROUNDS) as u64);
}
