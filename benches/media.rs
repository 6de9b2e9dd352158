//! What photos cost (issue 15), in process: the real Telegram adapter and core over the fake Bot API
//! (`getFile` and the file URL on 127.0.0.1) with `MemoryStore`, and a router that answers without HTTP.
//!
//! 1. Added latency of a photo turn: a 1 MiB JPEG sent alone, one at a time, from the update being
//!    queued to the final text arriving at the fake, against the same for a text message; the router
//!    answers at once, so the difference is the photo's `getFile`, download, sniffing, hashing and
//!    base64 encoding (plus the larger update). Medians of [`SAMPLES`] each.
//! 2. Peak memory: [`CONCURRENT`] chats each send a text at once, then each sends a 1 MiB photo at once;
//!    the router holds every answer [`HOLD`] so the turns overlap. `VmHWM` of this process (fake and
//!    adapter together) after each burst; the photo burst's rise over the text burst's is the cost.
//!
//! Run: `cargo bench --bench media`.

// Measurements read best whole and their arithmetic is on small known values: these pedantic lints are
// off for test and benchmark code only.
#![allow(
    clippy::too_many_lines,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::needless_pass_by_value
)]

#[path = "../tests/support/telegram_fake.rs"]
mod telegram_fake;

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use secrecy::SecretString;
use switchboard::clock::SystemClock;
use switchboard::config::Config;
use switchboard::core::Core;
use switchboard::domain::{AnswerSource, Completion, ReplyEvent, ReplyStream, TierName};
use switchboard::health::Health;
use switchboard::platforms::telegram::TelegramAdapter;
use switchboard::platforms::{AdapterContext, PlatformAdapter};
use switchboard::router::{CompletionRequest, LlmRouter, ModelInfo, RouterStatus};
use switchboard::store::memory::MemoryStore;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use telegram_fake::{FakeTelegram, TOKEN};

/// Photo and text turns measured one at a time for the latency.
const SAMPLES: usize = 30;
/// Chats sending at once for the memory figure (the 100).
const CONCURRENT: i64 = 100;
/// How long the router holds each answer in the memory bursts, so all turns are in flight together.
const HOLD: Duration = Duration::from_millis(500);
/// The photo's size: 1 MiB.
const PHOTO_BYTES: usize = 1024 * 1024;
/// A burst or sample that has not been answered after this long has lost a message.
const LIMIT: Duration = Duration::from_secs(120);

/// Answers every request with one sentence after `hold`.
struct HoldingRouter {
    hold: std::sync::Mutex<Duration>,
}

impl LlmRouter for HoldingRouter {
    fn complete(&self, _request: CompletionRequest) -> ReplyStream {
        let hold = *self.hold.lock().unwrap();
        let source = AnswerSource {
            tier: TierName::free(),
            provider: "bench".into(),
            model: "vision-1".into(),
            key_fingerprint: None,
        };
        stream::iter([
            ReplyEvent::Started(source.clone()),
            ReplyEvent::Delta("It is a picture. done".into()),
            ReplyEvent::Finished(Completion {
                source: Some(source),
                ..Completion::default()
            }),
        ])
        .then(move |event| async move {
            if matches!(event, ReplyEvent::Delta(_)) {
                tokio::time::sleep(hold).await;
            }
            event
        })
        .boxed()
    }
    fn models(&self) -> Vec<ModelInfo> {
        Vec::new()
    }
    fn status(&self) -> RouterStatus {
        RouterStatus::default()
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let fake = FakeTelegram::start_with(false).await;
    fake.set_final_suffix("done");
    let mut config = Config::default();
    config.telegram.api_url.clone_from(&fake.url);
    config.telegram.edit_interval_private_ms = 0;
    config.telegram.poll_timeout_secs = 1;
    config.access.user_messages_per_minute = 0;
    config.core.max_concurrent_turns = 2 * CONCURRENT as usize;
    let config = Arc::new(config);
    let store = Arc::new(MemoryStore::new());
    let router = Arc::new(HoldingRouter {
        hold: std::sync::Mutex::new(Duration::ZERO),
    });
    let core = Core::new(
        config.clone(),
        store.clone(),
        router.clone(),
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
    let photo = fake.add_photo_file(jpeg(PHOTO_BYTES));

    // Warm-up: connections, allocator pools.
    for chat in 1..=3 {
        one(&fake, chat, None).await;
        one(&fake, chat, Some(&photo)).await;
    }
    let mut text = Vec::with_capacity(SAMPLES);
    let mut photos = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES as i64 {
        text.push(one(&fake, 1_000 + i, None).await);
        photos.push(one(&fake, 2_000 + i, Some(&photo)).await);
    }
    text.sort();
    photos.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    println!(
        "== photo turn latency (1 MiB JPEG, in process, router answers at once), {SAMPLES} each"
    );
    println!(
        "  text turn   median {:.2} ms, p90 {:.2} ms",
        ms(median(&text)),
        ms(text[text.len() * 9 / 10])
    );
    println!(
        "  photo turn  median {:.2} ms, p90 {:.2} ms",
        ms(median(&photos)),
        ms(photos[photos.len() * 9 / 10])
    );
    println!(
        "  added by the photo (getFile + download + sniff + SHA-256 + base64): {:.2} ms (median difference)",
        ms(median(&photos).saturating_sub(median(&text)))
    );

    *router.hold.lock().unwrap() = HOLD;
    let before = hwm_kb();
    burst(&fake, 10_000, None).await;
    let after_text = hwm_kb();
    burst(&fake, 20_000, Some(&photo)).await;
    let after_photos = hwm_kb();
    println!(
        "== peak memory, {CONCURRENT} turns at once (answers held {} ms), VmHWM of this process",
        HOLD.as_millis()
    );
    println!(
        "  before {:.1} MB; after {CONCURRENT} text turns {:.1} MB; after {CONCURRENT} photo turns {:.1} MB",
        mb(before),
        mb(after_text),
        mb(after_photos)
    );
    println!(
        "  photo burst above the text burst: {:.1} MB (target: at most 30 MB)",
        mb(after_photos.saturating_sub(after_text))
    );
    intake.cancel();
    adapter.await.unwrap().unwrap();
}

/// One message from `chat` (a photo when `photo` is its file id), waited for; its latency.
async fn one(fake: &FakeTelegram, chat: i64, photo: Option<&str>) -> Duration {
    let sent = Instant::now();
    match photo {
        Some(id) => fake.push_photo_id(chat, chat, Some("what is this? done"), id),
        None => fake.push_text(chat, chat, "User", "what is this? done"),
    };
    let deadline = sent + LIMIT;
    loop {
        if let Some((_, at)) = fake.take_delivered().into_iter().find(|(c, _)| *c == chat) {
            return at - sent;
        }
        assert!(Instant::now() < deadline, "chat {chat} got no answer");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// One message from each of [`CONCURRENT`] chats at once, all answered.
async fn burst(fake: &FakeTelegram, first_chat: i64, photo: Option<&str>) {
    for chat in first_chat..first_chat + CONCURRENT {
        match photo {
            Some(id) => fake.push_photo_id(chat, chat, Some("and this? done"), id),
            None => fake.push_text(chat, chat, "User", "and this? done"),
        };
    }
    let mut answered = std::collections::HashSet::new();
    let deadline = Instant::now() + LIMIT;
    while answered.len() < CONCURRENT as usize {
        answered.extend(fake.take_delivered().into_iter().map(|(c, _)| c));
        assert!(Instant::now() < deadline, "a burst lost messages");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(fake.unexpected().is_empty(), "{:?}", fake.unexpected());
}

/// A JPEG of `len` bytes as the sniffer sees one (start and end markers, no stuffed 0xFF inside).
fn jpeg(len: usize) -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8, 0xFF, 0xE0];
    j.extend((0..len - 6).map(|i| (i % 211) as u8));
    j.extend_from_slice(&[0xFF, 0xD9]);
    j
}

fn hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
