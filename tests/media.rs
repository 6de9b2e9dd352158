//! Images and files end to end (issue 15): the real Telegram adapter, core and free-first router over the
//! fake Bot API (with `getFile` and the file URL) and the simulated OpenRouter and Ollama servers, all on
//! 127.0.0.1. A recorder between core and router keeps each request, so a test can compare the image
//! bytes a model was sent with the bytes the user sent.

// Scenarios read best whole, their arithmetic is on small known values (counts, ids, byte patterns) and
// their JSON builders take values whole: these pedantic lints are off for test and benchmark code only.
#![allow(
    clippy::too_many_lines,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::needless_pass_by_value
)]

mod support {
    pub mod recorder;
    pub mod telegram_fake;
}

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use secrecy::SecretString;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use switchboard::clock::{SharedClock, TokioClock, DAY_MS};
use switchboard::config::{Config, Env, Secrets};
use switchboard::core::{Core, NO_VISION_PAID_OFF};
use switchboard::domain::{ConversationKey, Role};
use switchboard::exit::Fatal;
use switchboard::health::Health;
use switchboard::media::sha256_hex;
use switchboard::platforms::telegram::TelegramAdapter;
use switchboard::platforms::{AdapterContext, PlatformAdapter};
use switchboard::router::{CompletionRequest, FreeFirstRouter};
use switchboard::sim::ollama::{SimOllama, SimOllamaOptions};
use switchboard::sim::openrouter::{SimKey, SimModel, SimOpenRouter, SimOpenRouterOptions};
use switchboard::sim::ReplyShape;
use switchboard::store::memory::MemoryStore;
use switchboard::store::{HistoryStore, Store};

use support::recorder::Recorder;
use support::telegram_fake::{FakeTelegram, FileServe, PhotoFile, TOKEN};

const WAIT: Duration = Duration::from_secs(120);
const CHAT: i64 = 7;
/// 2026-11-22 12:00:00 UTC.
const NOON: i64 = 20_414 * DAY_MS + DAY_MS / 2;
const OPENROUTER_KEY: &str = "sk-or-sim-1";
const OLLAMA_KEY: &str = "ollama-sim-1";
/// A free model that takes text only, listed first: an image turn must skip it.
const TEXT_FREE: &str = "meta-llama/llama-3.3-70b-instruct:free";
/// A free model configured as taking images.
const VISION_FREE: &str = "qwen/qwen2.5-vl-72b-instruct:free";
/// The RC2 vision model on the paid tier.
const VISION_PAID: &str = "qwen3-vl:4b";

/// Which vision models exist in a scenario.
#[derive(Clone, Copy)]
enum Vision {
    /// A free vision model after a text-only one, and the paid tier on.
    Free,
    /// Only the paid tier's vision model (no free vision model).
    PaidOnly,
    /// No vision model anywhere, paid answers off.
    None,
}

struct Harness {
    fake: FakeTelegram,
    recorder: Arc<Recorder>,
    openrouter: SimOpenRouter,
    ollama: SimOllama,
    store: Arc<MemoryStore>,
    intake: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), Fatal>>,
}

async fn start(vision: Vision, tweak: fn(&mut Config)) -> Harness {
    let fake = FakeTelegram::start().await;
    let clock: SharedClock = Arc::new(TokioClock::starting_at(NOON));
    let openrouter = SimOpenRouter::start(SimOpenRouterOptions {
        keys: vec![SimKey::new(OPENROUTER_KEY, "alice", 1000)],
        per_minute_limit: None,
        models: vec![
            SimModel::free(TEXT_FREE, 131_072),
            SimModel::free(VISION_FREE, 131_072),
        ],
        reply: ReplyShape::zero_latency(0),
        clock: clock.clone(),
        ..SimOpenRouterOptions::default()
    })
    .await
    .unwrap();
    let ollama = SimOllama::start(SimOllamaOptions {
        keys: vec![OLLAMA_KEY.into()],
        models: vec!["gpt-oss:120b".into(), VISION_PAID.into()],
        reply: ReplyShape::zero_latency(0),
        ..SimOllamaOptions::default()
    })
    .await
    .unwrap();
    let mut config = Config::default();
    config.telegram.api_url.clone_from(&fake.url);
    config.access.user_messages_per_minute = 0;
    config.openrouter.base_url = openrouter.base_url();
    config.ollama.base_url = ollama.base_url();
    config.ollama.models = vec!["gpt-oss:120b".into(), VISION_PAID.into()];
    match vision {
        Vision::Free => {
            config.openrouter.free_models = vec![TEXT_FREE.into(), VISION_FREE.into()];
            config
                .openrouter
                .capabilities
                .insert(VISION_FREE.into(), vec!["vision".into()]);
        }
        Vision::PaidOnly => config.openrouter.free_models = vec![TEXT_FREE.into()],
        Vision::None => {
            config.openrouter.free_models = vec![TEXT_FREE.into()];
            config.router.paid_enabled = false;
        }
    }
    tweak(&mut config);
    let env = Env::from_pairs([
        ("OPENROUTER_API_KEY_1", OPENROUTER_KEY),
        ("OLLAMA_API_KEY", OLLAMA_KEY),
    ]);
    let secrets = Secrets::load(&env).unwrap();
    let store = Arc::new(MemoryStore::new());
    let router = FreeFirstRouter::from_config(
        &config,
        &secrets,
        store.clone() as Arc<dyn Store>,
        clock.clone(),
    )
    .unwrap();
    let recorder = Recorder::new(router);
    let config = Arc::new(config);
    let core = Core::new(config.clone(), store.clone(), recorder.clone(), clock);
    let (_tx, rx) = watch::channel(config);
    let intake = CancellationToken::new();
    let ctx = AdapterContext {
        core,
        store: store.clone(),
        health: Health::new(),
        config: rx,
        intake: intake.clone(),
    };
    let task = tokio::spawn(Box::new(TelegramAdapter::new(SecretString::from(TOKEN))).run(ctx));
    Harness {
        fake,
        recorder,
        openrouter,
        ollama,
        store,
        intake,
        task,
    }
}

impl Harness {
    /// Waits for the bot's `n`th message in the chat to settle and returns the texts.
    async fn replies(&self, n: usize) -> Vec<String> {
        let what = format!("{n} replies");
        self.fake
            .wait_until(WAIT, &what, |f| {
                let texts = f.bot_texts(CHAT);
                texts.len() >= n
                    && texts
                        .last()
                        .is_some_and(|t| !t.ends_with('…') && !t.is_empty())
            })
            .await;
        // Let a last edit land.
        tokio::time::sleep(Duration::from_secs(3)).await;
        self.fake.bot_texts(CHAT)
    }

    fn requests(&self) -> Vec<CompletionRequest> {
        self.recorder.seen.lock().unwrap().clone()
    }

    /// The models the simulators were asked to chat with, in order.
    fn models_called(&self) -> Vec<String> {
        self.openrouter
            .requests()
            .into_iter()
            .chain(self.ollama.requests())
            .filter(switchboard::sim::SimRequest::is_chat)
            .filter_map(|r| r.model)
            .collect()
    }

    /// What the simulators decoded from each chat request: (model, SHA-256 of each image), in order.
    fn images_seen(&self) -> Vec<(String, Vec<String>)> {
        self.openrouter
            .requests()
            .into_iter()
            .chain(self.ollama.requests())
            .filter(switchboard::sim::SimRequest::is_chat)
            .map(|r| {
                let hashes = r.images.iter().map(|i| i.sha256.clone()).collect();
                (r.model.unwrap_or_default(), hashes)
            })
            .collect()
    }

    fn history(&self) -> Vec<(Role, String)> {
        let key = ConversationKey(format!("telegram:{CHAT}"));
        self.store
            .recent_turns(&key, 0, 100)
            .unwrap()
            .into_iter()
            .map(|t| (t.role, t.text))
            .collect()
    }

    async fn stop(self) {
        assert!(
            self.fake.unexpected().is_empty(),
            "{:?}",
            self.fake.unexpected()
        );
        self.intake.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// A small JPEG as the sniffer sees one (start and end markers), `len` bytes, distinct per `seed`.
fn jpeg(len: usize, seed: u8) -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8, 0xFF, 0xE0, seed];
    j.extend((0..len - 7).map(|i| (i % 251) as u8 & 0x7F));
    j.extend_from_slice(&[0xFF, 0xD9]);
    j
}

fn decoded(request: &CompletionRequest) -> Vec<Vec<u8>> {
    request
        .prompt
        .images
        .iter()
        .map(|i| {
            base64::engine::general_purpose::STANDARD
                .decode(i.base64.as_bytes())
                .unwrap()
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_photo_with_a_caption_reaches_a_vision_model_with_the_largest_size_that_fits() {
    let h = start(Vision::Free, |c| c.media.max_image_bytes = 200 * 1024).await;
    let small = jpeg(2_000, 1);
    let medium = jpeg(60_000, 2);
    let large = jpeg(300_000, 3); // over the 200 KiB cap: never downloaded
    h.fake.push_photo(
        CHAT,
        CHAT,
        Some("what is this?"),
        vec![
            PhotoFile::new(90, 60, small),
            PhotoFile::new(800, 600, medium.clone()),
            PhotoFile::new(1280, 960, large),
        ],
    );
    let texts = h.replies(1).await;
    assert!(
        texts[0].starts_with(&format!("[{VISION_FREE}]")),
        "{texts:?}"
    );
    let requests = h.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(decoded(&requests[0]), vec![medium.clone()]);
    assert_eq!(requests[0].prompt.images[0].media_type, "image/jpeg");
    assert_eq!(h.fake.downloads(), vec!["photos/file_1.jpg".to_owned()]);
    // Only the vision model was asked (the text-only model listed first was skipped), and the
    // simulator decoded the content part to exactly the bytes the user sent.
    assert_eq!(h.models_called(), vec![VISION_FREE.to_owned()]);
    assert_eq!(
        h.images_seen(),
        vec![(VISION_FREE.to_owned(), vec![sha256_hex(&medium)])]
    );
    assert!(texts[0].contains("You said: what is this?"), "{texts:?}");
    assert!(
        texts[0].contains("I see an image of 60000 bytes."),
        "{texts:?}"
    );
    // History keeps a reference line, not the bytes.
    let history = h.history();
    assert_eq!(history.len(), 2);
    assert!(
        history[0]
            .1
            .starts_with("what is this?\n\n[image: photo · image/jpeg · 58 KB]"),
        "{history:?}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_photo_without_a_caption_gets_a_reply() {
    let h = start(Vision::Free, |_| {}).await;
    let photo = jpeg(10_000, 4);
    h.fake.push_photo(
        CHAT,
        CHAT,
        None,
        vec![PhotoFile::new(320, 240, photo.clone())],
    );
    let texts = h.replies(1).await;
    assert!(
        texts[0].starts_with(&format!("[{VISION_FREE}]")),
        "{texts:?}"
    );
    assert!(h.requests()[0]
        .prompt
        .content
        .starts_with("[image: photo · image/jpeg"));
    assert_eq!(decoded(&h.requests()[0]), vec![photo]);
    // `/usage` counts the image turn.
    h.fake.push_text(CHAT, CHAT, "Alice", "/usage");
    let texts = h.replies(2).await;
    assert!(
        texts[1].contains("image turns: 1 yours, 1 in this chat"),
        "{texts:?}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn with_no_vision_model_the_user_is_told_plainly_and_no_text_model_is_called() {
    let h = start(Vision::None, |_| {}).await;
    h.fake.push_photo(
        CHAT,
        CHAT,
        Some("what is this?"),
        vec![PhotoFile::new(320, 240, jpeg(5_000, 5))],
    );
    let texts = h.replies(1).await;
    assert_eq!(texts.len(), 1);
    assert!(texts[0].contains(NO_VISION_PAID_OFF), "{texts:?}");
    assert!(h.models_called().is_empty(), "{:?}", h.models_called());
    // A text question still goes to the text model.
    h.fake.push_text(CHAT, CHAT, "Alice", "and in words?");
    let texts = h.replies(2).await;
    assert!(texts[1].contains("You said: and in words"), "{texts:?}");
    assert_eq!(h.models_called(), vec![TEXT_FREE.to_owned()]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_paid_tier_answers_an_image_when_no_free_model_can() {
    let h = start(Vision::PaidOnly, |_| {}).await;
    let photo = jpeg(8_000, 6);
    h.fake.push_photo(
        CHAT,
        CHAT,
        Some("read the sign"),
        vec![PhotoFile::new(320, 240, photo.clone())],
    );
    let texts = h.replies(1).await;
    assert!(
        texts.last().unwrap().contains("You said: read the sign"),
        "{texts:?}"
    );
    assert_eq!(h.models_called(), vec![VISION_PAID.to_owned()]);
    assert_eq!(decoded(&h.requests()[0]), vec![photo.clone()]);
    // Ollama's `images` field carried the bytes: the simulator decoded and hashed them.
    assert_eq!(
        h.images_seen(),
        vec![(VISION_PAID.to_owned(), vec![sha256_hex(&photo)])]
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn bad_images_end_in_a_reply_naming_the_problem_and_store_no_turn() {
    let h = start(Vision::Free, |c| c.media.max_image_bytes = 100 * 1024).await;
    // Every size announced over the cap: refused before any download.
    h.fake.push_photo(
        CHAT,
        CHAT,
        Some("big"),
        vec![PhotoFile::new(2000, 2000, jpeg(150_000, 7))],
    );
    let texts = h.replies(1).await;
    assert!(
        texts[0].contains("too large") && texts[0].contains("100 KB"),
        "{texts:?}"
    );
    assert!(h.fake.downloads().is_empty());
    // No size announced, and the body is over the cap: cut while streaming.
    let mut unannounced = PhotoFile::new(2000, 2000, jpeg(400_000, 8));
    unannounced.announced = None;
    unannounced.serve = FileServe::Chunked;
    h.fake
        .push_photo(CHAT, CHAT, Some("big too"), vec![unannounced]);
    let texts = h.replies(2).await;
    assert!(texts[1].contains("too large"), "{texts:?}");
    // The file URL fails.
    let mut missing = PhotoFile::new(100, 100, jpeg(5_000, 9));
    missing.serve = FileServe::Missing;
    h.fake.push_photo(CHAT, CHAT, Some("gone"), vec![missing]);
    let texts = h.replies(3).await;
    assert!(texts[2].contains("couldn't download"), "{texts:?}");
    // The download stalls after its first bytes.
    let mut stalled = PhotoFile::new(100, 100, jpeg(90_000, 10));
    stalled.serve = FileServe::Stall;
    h.fake.push_photo(CHAT, CHAT, Some("slow"), vec![stalled]);
    let texts = h.replies(4).await;
    assert!(texts[3].contains("took too long"), "{texts:?}");
    // A truncated JPEG.
    let mut cut = jpeg(5_000, 11);
    cut.truncate(3_000);
    h.fake.push_photo(
        CHAT,
        CHAT,
        Some("broken"),
        vec![PhotoFile::new(100, 100, cut)],
    );
    let texts = h.replies(5).await;
    assert!(texts[4].contains("damaged"), "{texts:?}");
    // A PDF sent as a document.
    h.fake.push_document(
        CHAT,
        CHAT,
        None,
        "report.pdf",
        "application/pdf",
        b"%PDF-1.7".to_vec(),
    );
    let texts = h.replies(6).await;
    assert!(
        texts[5].contains("can't read `report.pdf` (application/pdf)"),
        "{texts:?}"
    );
    assert!(h.requests().is_empty(), "no model was asked");
    assert!(
        h.history().is_empty(),
        "no turn was stored: {:?}",
        h.history()
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_follow_up_question_re_sends_the_image_within_the_configured_turns() {
    let h = start(Vision::Free, |c| c.media.resend_turns = 1).await;
    let photo = jpeg(20_000, 12);
    h.fake.push_photo(
        CHAT,
        CHAT,
        Some("what is this?"),
        vec![PhotoFile::new(320, 240, photo.clone())],
    );
    h.replies(1).await;
    h.fake
        .push_text(CHAT, CHAT, "Alice", "and what colour is it?");
    h.replies(2).await;
    h.fake.push_text(CHAT, CHAT, "Alice", "thanks!");
    let texts = h.replies(3).await;
    assert!(texts[2].contains("You said: thanks"), "{texts:?}");
    let requests = h.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        decoded(&requests[1]),
        vec![photo.clone()],
        "the follow-up carries the image"
    );
    // Fetched again through the platform, not kept in memory.
    assert_eq!(h.fake.downloads().len(), 2);
    let hash = sha256_hex(&photo);
    let seen: Vec<Vec<String>> = h.images_seen().into_iter().map(|(_, i)| i).collect();
    assert_eq!(seen, vec![vec![hash.clone()], vec![hash], vec![]]);
    // Two turns later it is only named in the context; the conversation stays with the model that
    // saw the image (stickiness).
    assert!(requests[2].prompt.images.is_empty());
    assert!(requests[2].history[0]
        .content
        .contains("[image: photo · image/jpeg"));
    assert_eq!(h.models_called(), vec![VISION_FREE; 3]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_text_file_arrives_in_the_prompt_under_its_name() {
    let h = start(Vision::Free, |_| {}).await;
    let notes = "# Shopping\n- eggs\n- flour\n";
    h.fake.push_document(
        CHAT,
        CHAT,
        Some("summarize this"),
        "notes.md",
        "text/markdown",
        notes.as_bytes().to_vec(),
    );
    h.replies(1).await;
    let requests = h.requests();
    let prompt = &requests[0].prompt.content;
    assert!(
        prompt.starts_with(
            "summarize this\n\nFile `notes.md`:\n```\n# Shopping\n- eggs\n- flour\n```"
        ),
        "{prompt}"
    );
    assert!(requests[0].prompt.images.is_empty());
    // A text turn: the first free model answers.
    assert_eq!(h.models_called(), vec![TEXT_FREE.to_owned()]);
    // Too large for the text cap.
    h.fake
        .push_document(CHAT, CHAT, None, "big.csv", "text/csv", vec![b'a'; 70_000]);
    let texts = h.replies(2).await;
    assert!(texts[1].contains("`big.csv` is too large"), "{texts:?}");
    h.stop().await;
}
