//! End-to-end tests of the Telegram adapter: the real adapter and core over a fake Bot API on 127.0.0.1
//! and an in-memory router, with paused tokio time wherever timing matters.

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

mod support {
    pub mod flush_log;
    pub mod telegram_fake;
}

use std::fmt::Write as _;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use secrecy::SecretString;
use switchboard::clock::{SystemClock, TokioClock};
use switchboard::config::Config;
use switchboard::core::Core;
use switchboard::domain::{
    AnswerSource, Completion, FailureKind, ReplyEvent, ReplyStream, TierName, UserFacingError,
};
use switchboard::exit::Fatal;
use switchboard::health::Health;
use switchboard::platforms::telegram::{ledger, TelegramAdapter};
use switchboard::platforms::{AdapterContext, PlatformAdapter};
use switchboard::router::scripted::{Script, ScriptedRouter};
use switchboard::router::{CompletionRequest, LlmRouter, ModelInfo, RouterStatus};
use switchboard::store::memory::MemoryStore;
use switchboard::store::sled_store::SledStore;
use switchboard::store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use support::telegram_fake::{FakeTelegram, Fault, BOT_USERNAME, TOKEN};

const WAIT: Duration = Duration::from_secs(120);
const PRIVATE: i64 = 7;
const GROUP: i64 = -100_555;

/// A router that plays a fixed list of events, each after its delay (tokio time), and records prompts.
struct TimedRouter {
    events: Vec<(Duration, ReplyEvent)>,
    seen: Mutex<Vec<CompletionRequest>>,
    /// Instead of `events`: answer `answer to <prompt>` after a delay chosen per prompt.
    delay: Option<fn(&str) -> Duration>,
}

impl TimedRouter {
    fn new(events: Vec<(Duration, ReplyEvent)>) -> Arc<Self> {
        Arc::new(Self {
            events,
            seen: Mutex::default(),
            delay: None,
        })
    }

    /// `text` in pieces of `size` bytes (ASCII text), `gap` apart.
    fn pieces(text: &str, size: usize, gap: Duration) -> Arc<Self> {
        let pieces: Vec<String> = text
            .as_bytes()
            .chunks(size)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        Self::drip(&refs, gap)
    }

    /// Answers each prompt with `answer to <prompt>` after `delay(prompt)`, so a later question can
    /// be answered before an earlier one.
    fn echo(delay: fn(&str) -> Duration) -> Arc<Self> {
        Arc::new(Self {
            events: Vec::new(),
            seen: Mutex::default(),
            delay: Some(delay),
        })
    }

    /// `Started`, the deltas `gap` apart, `Finished`.
    fn drip(deltas: &[&str], gap: Duration) -> Arc<Self> {
        let mut events = vec![(Duration::ZERO, ReplyEvent::Started(source()))];
        events.extend(
            deltas
                .iter()
                .map(|d| (gap, ReplyEvent::Delta((*d).to_owned()))),
        );
        events.push((Duration::ZERO, finished()));
        Self::new(events)
    }
}

fn source() -> AnswerSource {
    AnswerSource {
        tier: TierName::free(),
        provider: "timed".into(),
        model: "drip-1".into(),
        key_fingerprint: None,
    }
}

fn finished() -> ReplyEvent {
    ReplyEvent::Finished(Completion {
        source: Some(source()),
        ..Completion::default()
    })
}

impl LlmRouter for TimedRouter {
    fn complete(&self, request: CompletionRequest) -> ReplyStream {
        let events = match self.delay {
            Some(delay) => {
                let prompt = &request.prompt.content;
                vec![
                    (delay(prompt), ReplyEvent::Started(source())),
                    (
                        Duration::ZERO,
                        ReplyEvent::Delta(format!("answer to {prompt}")),
                    ),
                    (Duration::ZERO, finished()),
                ]
            }
            None => self.events.clone(),
        };
        self.seen.lock().unwrap().push(request);
        stream::iter(events)
            .then(|(delay, event)| async move {
                tokio::time::sleep(delay).await;
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

/// One adapter + core over a fake.
struct Harness {
    intake: CancellationToken,
    task: JoinHandle<Result<(), Fatal>>,
    health: Health,
}

fn config(fake: &FakeTelegram, tweak: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::default();
    config.telegram.api_url.clone_from(&fake.url);
    config.access.user_messages_per_minute = 0;
    tweak(&mut config);
    config
}

/// The process-wide log capture (installed once, at TRACE, for every test in this binary: the canary
/// check then covers every scenario that ran before it, and a global subscriber avoids tracing's
/// per-thread interest caching dropping events).
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .init();
        capture
    })
}

fn start(
    fake: &FakeTelegram,
    store: Arc<dyn Store>,
    router: Arc<dyn LlmRouter>,
    tweak: impl FnOnce(&mut Config),
) -> Harness {
    capture();
    let config = Arc::new(config(fake, tweak));
    let core = Core::new(
        config.clone(),
        store.clone(),
        router,
        Arc::new(TokioClock::starting_at(1_700_000_000_000)),
    );
    let (_tx, rx) = watch::channel(config);
    let intake = CancellationToken::new();
    let health = Health::new();
    let ctx = AdapterContext {
        core,
        store,
        health: health.clone(),
        config: rx,
        intake: intake.clone(),
    };
    let adapter = Box::new(TelegramAdapter::new(SecretString::from(TOKEN)));
    let task = tokio::spawn(adapter.run(ctx));
    Harness {
        intake,
        task,
        health,
    }
}

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

impl Harness {
    async fn stop(self) -> Result<(), Fatal> {
        self.intake.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap()
    }
}

fn sends(fake: &FakeTelegram, chat: i64) -> usize {
    fake.chat_calls(chat)
        .iter()
        .filter(|c| c.method == "sendmessage" && !c.faulted)
        .count()
}

fn assert_clean(fake: &FakeTelegram) {
    assert!(
        fake.unexpected().is_empty(),
        "unexpected calls: {:?}",
        fake.unexpected()
    );
}

#[tokio::test(start_paused = true)]
async fn private_message_streams_typing_then_paced_edits_then_the_final_text() {
    let fake = FakeTelegram::start().await;
    let deltas = [
        "Hello",
        " there,",
        " this is",
        " a streamed",
        " answer",
        " in pieces.",
    ];
    let router = TimedRouter::drip(&deltas, Duration::from_millis(700));
    let h = start(&fake, memory(), router.clone(), |_| {});
    fake.push_text(PRIVATE, PRIVATE, "Alice", "stream please");
    let full = deltas.concat();
    fake.wait_until(WAIT, "final text", |f| {
        f.bot_texts(PRIVATE) == [full.clone()]
    })
    .await;
    h.stop().await.unwrap();

    let calls = fake.chat_calls(PRIVATE);
    assert_eq!(calls[0].method, "sendchataction", "{:#?}", fake.summary());
    assert_eq!(calls[0].body["action"], "typing");
    let writes: Vec<_> = calls
        .iter()
        .filter(|c| c.method != "sendchataction")
        .collect();
    assert_eq!(writes[0].method, "sendmessage");
    assert!(
        writes.len() >= 3,
        "expected a first message and edits: {:#?}",
        fake.summary()
    );
    assert!(writes[1..].iter().all(|c| c.method == "editmessagetext"));
    assert_eq!(writes.last().unwrap().text(), Some(full.as_str()));
    for pair in writes.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= Duration::from_secs(1),
            "edits closer than the private-chat interval: {:#?}",
            fake.summary()
        );
    }
    // The prompt reached the model without changes; private chats carry no author prefix.
    assert_eq!(
        router.seen.lock().unwrap()[0].prompt.content,
        "stream please"
    );
    assert!(fake.calls_of("setmycommands")[0].body["commands"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["command"] == "reset"));
    assert_clean(&fake);
}

#[tokio::test(start_paused = true)]
async fn group_policy_ignores_unaddressed_and_answers_mention_reply_and_ask() {
    let fake = FakeTelegram::start().await;
    let router = ScriptedRouter::new();
    let h = start(&fake, memory(), router.clone(), |_| {});
    fake.push_text(GROUP, 11, "Bob", "just chatting among ourselves");
    fake.push_text(GROUP, 11, "Bob", "/ask@other_bot not for us");
    fake.push_text(GROUP, 11, "Bob", "/roll 2d6"); // another bot's command, not naming one
    let mention = fake.push_text(GROUP, 11, "Bob", &format!("@{BOT_USERNAME} what is Rust?"));
    fake.wait_until(WAIT, "mention answered", |f| sends(f, GROUP) == 1)
        .await;
    // Handled in order: had anything before the mention been answered, it would be the first reply.
    let first_reply = fake.calls_of("sendmessage")[0].clone();
    assert_eq!(first_reply.body["reply_parameters"]["message_id"], mention);
    let bot_msg = 5; // ids in the chat: 1–4 users; 5 the bot's answer
                     // One of our commands needs no mention.
    let usage = fake.push_text(GROUP, 11, "Bob", "/usage");
    fake.wait_until(WAIT, "/usage answered", |f| sends(f, GROUP) == 2)
        .await;
    assert_eq!(
        fake.calls_of("sendmessage")[1].body["reply_parameters"]["message_id"],
        usage
    );
    fake.push_message(GROUP, 12, "Carol", "and in Go?", Some((bot_msg, true)));
    fake.wait_until(WAIT, "reply answered", |f| sends(f, GROUP) == 3)
        .await;
    fake.push_message(GROUP, 12, "Carol", "a reply to a person", Some((1, false)));
    fake.push_text(GROUP, 13, "Dave", &format!("/ask@{BOT_USERNAME} why?"));
    fake.wait_until(WAIT, "/ask answered", |f| sends(f, GROUP) == 4)
        .await;
    h.stop().await.unwrap();

    let prompts: Vec<String> = router
        .requests()
        .iter()
        .map(|r| r.prompt.content.clone())
        .collect();
    assert_eq!(prompts.len(), 3, "{prompts:?}");
    assert!(
        prompts[0].contains("Bob") && prompts[0].ends_with("what is Rust?"),
        "{prompts:?}"
    );
    assert!(!prompts[0].contains(BOT_USERNAME));
    assert!(prompts[1].contains("Carol") && prompts[1].ends_with("and in Go?"));
    assert!(
        prompts[2].contains("Dave") && prompts[2].ends_with("why?"),
        "{prompts:?}"
    );
    assert_eq!(sends(&fake, GROUP), 4);
    assert_clean(&fake);
}

#[tokio::test(start_paused = true)]
async fn a_mention_mid_sentence_reaches_the_model_without_a_stray_space() {
    let fake = FakeTelegram::start().await;
    let router = ScriptedRouter::new();
    let h = start(&fake, memory(), router.clone(), |_| {});
    fake.push_text(GROUP, 11, "Bob", &format!("hey @{BOT_USERNAME}, summarize"));
    fake.wait_until(WAIT, "mention answered", |f| sends(f, GROUP) == 1)
        .await;
    h.stop().await.unwrap();
    assert_eq!(router.requests()[0].prompt.content, "Bob: hey, summarize");
    assert_clean(&fake);
}

#[tokio::test(start_paused = true)]
async fn a_burst_over_the_rate_limit_gets_one_slow_down_not_one_per_message() {
    let fake = FakeTelegram::start().await;
    let router = ScriptedRouter::new();
    let h = start(&fake, memory(), router.clone(), |c| {
        c.access.user_messages_per_minute = 2;
    });
    for i in 0..8 {
        fake.push_text(PRIVATE, PRIVATE, "Alice", &format!("message {i}"));
    }
    fake.wait_until(WAIT, "two answers and one refusal", |f| {
        sends(f, PRIVATE) >= 3
    })
    .await;
    // Every update of the burst has been read and handled by now; let the paused clock run on.
    tokio::time::sleep(Duration::from_secs(30)).await;
    h.stop().await.unwrap();
    let texts = fake.bot_texts(PRIVATE);
    assert_eq!(texts.len(), 3, "{texts:#?}");
    assert_eq!(
        texts.iter().filter(|t| t.contains("faster")).count(),
        1,
        "{texts:#?}"
    );
    assert_eq!(router.request_count(), 2);
    assert_clean(&fake);
}

/// A reply of about `len` bytes: prose and long code blocks.
fn long_reply(len: usize) -> String {
    let mut md = String::new();
    let mut n = 0;
    while md.len() < len {
        n += 1;
        md.push_str(
            "Here is how it works, step by step. The **next** part is the code.\n\n```rust\n",
        );
        for i in 0..30 {
            let _ = writeln!(md, "let value_{n}_{i} = compute({i});");
        }
        md.push_str("```\n\n");
    }
    md.truncate(len);
    md
}

#[tokio::test(start_paused = true)]
async fn a_ten_thousand_char_reply_arrives_as_three_messages_with_fences_intact() {
    let fake = FakeTelegram::start().await;
    let reply = long_reply(10_000);
    let router = TimedRouter::pieces(&reply, 500, Duration::from_millis(400));
    let h = start(&fake, memory(), router, |_| {});
    fake.push_text(PRIVATE, PRIVATE, "Alice", "write a lot");
    fake.wait_until(WAIT, "three messages", |f| f.bot_texts(PRIVATE).len() == 3)
        .await;
    // 20 deltas 400 ms apart: 8 s of streaming; leave time for the last paced edits.
    tokio::time::sleep(Duration::from_secs(20)).await;
    h.stop().await.unwrap();
    let texts = fake.bot_texts(PRIVATE);
    assert_eq!(texts.len(), 3, "{texts:#?}");
    // Rolled over while streaming: each new message started while the answer was still arriving,
    // and earlier messages were edited before the next one began.
    let sent = fake.calls_of("sendmessage");
    assert_eq!(sent.len(), 3);
    assert!(sent[0].at < sent[1].at && sent[1].at < sent[2].at);
    let edits = fake.calls_of("editmessagetext");
    assert!(
        edits.iter().any(|e| e.at < sent[1].at),
        "{:#?}",
        fake.summary()
    );
    for t in &texts {
        assert!(t.encode_utf16().count() <= 4096);
        assert_eq!(
            t.matches("<pre>").count(),
            t.matches("</pre>").count(),
            "{t}"
        );
        assert_eq!(
            t.matches("<code").count(),
            t.matches("</code>").count(),
            "{t}"
        );
    }
    // Every line of code made it, in order, exactly once.
    let shown: String = texts.join("\n");
    let expected: Vec<&str> = reply
        .lines()
        .filter(|l| l.starts_with("let value_"))
        .collect();
    let got: Vec<&str> = shown
        .lines()
        .map(|l| l.trim_start_matches("<pre><code class=\"language-rust\">"))
        .map(|l| l.trim_end_matches("</code></pre>"))
        .filter(|l| l.starts_with("let value_"))
        .collect();
    assert_eq!(got, expected);
    assert_clean(&fake);
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_an_edit_is_obeyed_exactly_and_the_final_text_arrives() {
    let fake = FakeTelegram::start().await;
    let deltas = ["one", " two", " three", " four", " five", " six", " seven"];
    let router = TimedRouter::drip(&deltas, Duration::from_millis(600));
    let h = start(&fake, memory(), router, |_| {});
    fake.push_text(PRIVATE, PRIVATE, "Alice", "count");
    fake.wait_until(WAIT, "first message", |f| sends(f, PRIVATE) == 1)
        .await;
    fake.fail_next("editMessageText", Fault::RetryAfter(5));
    let full = deltas.concat();
    fake.wait_until(WAIT, "final text", |f| {
        f.bot_texts(PRIVATE) == [full.clone()]
    })
    .await;
    h.stop().await.unwrap();

    let calls = fake.chat_calls(PRIVATE);
    let at = calls
        .iter()
        .position(|c| c.faulted)
        .expect("the 429 was served");
    let limited = &calls[at];
    let after: Vec<_> = calls[at + 1..].iter().collect();
    // `retry_after` is obeyed exactly: the adapter adds no jitter and no backoff of its own, so the
    // retry comes at 5 s. The only slack is paused time auto-advancing while loopback I/O is in
    // flight (the fake's own 20 ms polling), far below Telegram's one-second resolution.
    let first = after.first().expect("a retry after the 429");
    let waited = first.at - limited.at;
    assert!(
        waited >= Duration::from_secs(5) && waited <= Duration::from_millis(5_050),
        "the retry came {waited:?} after the 429: {:#?}",
        fake.summary()
    );
    assert_eq!(first.method, "editmessagetext");
    // Coalesced: one edit after the wait carries everything that arrived meanwhile.
    assert!(after.len() <= 2, "{:#?}", fake.summary());
    assert_clean(&fake);
}

#[tokio::test(start_paused = true)]
async fn cant_parse_entities_resends_plain_text_and_not_modified_counts_as_success() {
    let fake = FakeTelegram::start().await;
    let router = ScriptedRouter::new();
    router.on("bold", Script::Deltas(vec!["**bold** answer".into()]));
    let h = start(&fake, memory(), router.clone(), |_| {});
    fake.fail_next("sendMessage", Fault::CantParseEntities);
    fake.push_text(PRIVATE, PRIVATE, "Alice", "bold please");
    fake.wait_until(WAIT, "plain resend", |f| sends(f, PRIVATE) == 1)
        .await;
    let sendmessages = fake.calls_of("sendmessage");
    assert_eq!(sendmessages.len(), 2);
    assert!(sendmessages[0].faulted && sendmessages[0].is_html());
    assert_eq!(sendmessages[0].text(), Some("<b>bold</b> answer"));
    assert!(!sendmessages[1].is_html());
    assert_eq!(sendmessages[1].text(), Some("**bold** answer"));
    assert_eq!(fake.bot_texts(PRIVATE), ["**bold** answer"]);
    h.stop().await.unwrap();

    // MessageNotModified on a streaming edit: treated as done, not retried, the reply completes.
    let fake = FakeTelegram::start().await;
    let deltas = ["alpha", " beta", " gamma", " delta"];
    let router = TimedRouter::drip(&deltas, Duration::from_millis(1500));
    let h = start(&fake, memory(), router, |_| {});
    fake.push_text(PRIVATE, PRIVATE, "Alice", "greek");
    fake.wait_until(WAIT, "first message", |f| sends(f, PRIVATE) == 1)
        .await;
    fake.fail_next("editMessageText", Fault::NotModified);
    let full = deltas.concat();
    fake.wait_until(WAIT, "final text", |f| {
        f.bot_texts(PRIVATE) == [full.clone()]
    })
    .await;
    h.stop().await.unwrap();
    let edits = fake.calls_of("editmessagetext");
    let faulted = edits
        .iter()
        .find(|c| c.faulted)
        .expect("not-modified was served");
    assert_eq!(
        edits.iter().filter(|c| c.text() == faulted.text()).count(),
        1,
        "the not-modified edit was retried: {:#?}",
        fake.summary()
    );
    assert_clean(&fake);
}

/// Waits until nothing but `store` holds the store (the crashed adapter's reply and turn tasks have
/// ended), so sled can be closed and reopened.
async fn sole_owner(store: &Arc<dyn Store>) {
    let deadline = Instant::now() + WAIT;
    while Arc::strong_count(store) > 1 {
        assert!(Instant::now() < deadline, "the store is still in use");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn open_sled(dir: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(SledStore::open(dir, 16, 1_700_000_000_000).unwrap().store)
}

// Real time, not paused: sled flushes on its own threads, and paused time would jump past every
// timeout while a flush runs. Nothing here measures time.
#[tokio::test]
async fn a_redelivered_update_after_a_restart_is_answered_once_and_history_continues() {
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let router = ScriptedRouter::new();
    let store = open_sled(dir.path());
    let first = start(&fake, store.clone(), router.clone(), |_| {});
    fake.push_text(PRIVATE, PRIVATE, "Alice", "my name is Alice");
    let update = fake.last_pushed();
    let update_id = update["update_id"].as_i64().unwrap();
    fake.wait_until(WAIT, "first answer", |f| {
        f.bot_texts(PRIVATE).len() == 1 && f.deliveries(update_id) == 1
    })
    .await;
    // Crash: no graceful stop, no acknowledging getUpdates from this process.
    first.task.abort();
    let _ = first.task.await;
    // The crash window: the answer is recorded, but the offset never made it (the process died
    // between answering and saving it), so Telegram redelivers the unacknowledged update.
    sole_owner(&store).await;
    for (key, _) in store.kv_scan(ledger::STATE_NS, "").unwrap() {
        store.kv_remove(ledger::STATE_NS, &key).unwrap();
    }
    drop(store);
    fake.push_raw(update.clone());

    // Restart on the reopened database.
    let store = open_sled(dir.path());
    let second = start(&fake, store.clone(), router.clone(), |_| {});
    fake.wait_until(WAIT, "redelivered", |f| f.deliveries(update_id) == 2)
        .await;
    // Updates are handled in order, so once this is answered the redelivery was handled before it.
    fake.push_text(PRIVATE, PRIVATE, "Alice", "what is my name?");
    fake.wait_until(WAIT, "second answer", |f| f.bot_texts(PRIVATE).len() == 2)
        .await;
    second.stop().await.unwrap();

    assert_eq!(
        sends(&fake, PRIVATE),
        2,
        "the redelivered update was answered again: {:#?}",
        fake.summary()
    );
    let requests = router.requests();
    assert_eq!(
        requests.len(),
        2,
        "the redelivered message reached the model again"
    );
    assert_eq!(requests[1].prompt.content, "what is my name?");
    let history: Vec<&str> = requests[1]
        .history
        .iter()
        .map(|m| m.content.as_str())
        .collect();
    assert!(history.contains(&"my name is Alice"), "{history:?}");
    assert_eq!(history.len(), 2, "one question, one answer: {history:?}");
    assert_clean(&fake);
}

#[tokio::test(start_paused = true)]
async fn graceful_stop_finishes_the_reply_and_acknowledges_the_offset() {
    let fake = FakeTelegram::start().await;
    let router = TimedRouter::drip(&["slow", " answer"], Duration::from_secs(5));
    let h = start(&fake, memory(), router, |_| {});
    fake.push_text(PRIVATE, PRIVATE, "Alice", "take your time");
    let update_id = fake.last_pushed()["update_id"].as_i64().unwrap();
    fake.wait_until(WAIT, "typing", |f| !f.chat_calls(PRIVATE).is_empty())
        .await;
    h.stop().await.unwrap();
    assert_eq!(fake.bot_texts(PRIVATE), ["slow answer"]);
    // "typing" was repeated every 4 s until the first text (at 5 s).
    let typing: Vec<_> = fake.calls_of("sendchataction");
    assert_eq!(typing.len(), 2, "{:#?}", fake.summary());
    assert_eq!(typing[1].at - typing[0].at, Duration::from_secs(4));
    let last = fake.calls_of("getupdates").last().unwrap().clone();
    assert_eq!(last.body["offset"].as_i64(), Some(update_id + 1));
    assert_eq!(last.body["timeout"].as_i64(), Some(0));
    assert!(fake.acked_offset() > update_id);
    assert_clean(&fake);
}

#[tokio::test(start_paused = true)]
async fn notices_and_failures_are_shown_and_streaming_can_be_off() {
    let fake = FakeTelegram::start().await;
    let router = TimedRouter::new(vec![
        (
            Duration::ZERO,
            ReplyEvent::Notice("Free models are busy; answering with the paid tier.".into()),
        ),
        (Duration::ZERO, ReplyEvent::Started(source())),
        (
            Duration::from_millis(500),
            ReplyEvent::Delta("Partial <answer>".into()),
        ),
        (
            Duration::from_millis(500),
            ReplyEvent::Failed(UserFacingError::new(
                FailureKind::Interrupted,
                "The model stopped responding; the answer above is incomplete.",
            )),
        ),
    ]);
    let h = start(&fake, memory(), router, |c| {
        c.telegram
            .chats
            .entry(PRIVATE.to_string())
            .or_default()
            .streaming = Some(false);
    });
    fake.push_text(PRIVATE, PRIVATE, "Alice", "hi");
    fake.wait_until(WAIT, "answer", |f| sends(f, PRIVATE) == 1)
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    h.stop().await.unwrap();
    assert_eq!(
        fake.bot_texts(PRIVATE),
        ["<i>Free models are busy; answering with the paid tier.</i>\n\nPartial &lt;answer&gt;\n\n⚠️ The model stopped responding; the answer above is incomplete."]
    );
    assert!(
        fake.calls_of("editmessagetext").is_empty(),
        "streaming was off"
    );
    assert_eq!(fake.chat_calls(PRIVATE)[0].method, "sendchataction");
    assert_clean(&fake);
}

#[tokio::test(start_paused = true)]
async fn conflict_exits_73_and_a_rejected_token_exits_78() {
    let fake = FakeTelegram::start().await;
    fake.fail_next("getUpdates", Fault::Conflict);
    let h = start(&fake, memory(), ScriptedRouter::new(), |_| {});
    let err = tokio::time::timeout(WAIT, h.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Fatal::Conflict(_)), "{err}");
    assert_eq!(err.exit_code(), 73);
    assert!(err.to_string().contains("another process is polling"));

    let fake = FakeTelegram::start().await;
    fake.fail_next("getMe", Fault::Unauthorized);
    let h = start(&fake, memory(), ScriptedRouter::new(), |_| {});
    let err = tokio::time::timeout(WAIT, h.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Fatal::Config(_)), "{err}");
    assert_eq!(err.exit_code(), 78);
    assert!(err.to_string().contains("TELEGRAM_BOT_TOKEN"));
    assert!(!err.to_string().contains("CANARY"));
}

/// A `MakeWriter` that appends every log line to a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn the_token_never_appears_in_logs_errors_or_replies() {
    let capture = capture();
    // Faults of every kind the adapter logs about.
    let fake = FakeTelegram::start().await;
    let router = ScriptedRouter::new();
    router.on("down", Script::Unavailable);
    router.on("cut", Script::CutAfter(vec!["half an".into()]));
    let h = start(&fake, memory(), router.clone(), |_| {});
    fake.fail_next("setMyCommands", Fault::Unauthorized);
    fake.fail_next("sendMessage", Fault::CantParseEntities);
    fake.fail_next("sendChatAction", Fault::RetryAfter(1));
    fake.fail_next("getUpdates", Fault::RetryAfter(1));
    fake.push_text(PRIVATE, PRIVATE, "Alice", "hello");
    fake.push_text(PRIVATE + 1, PRIVATE + 1, "Bob", "is the model down?");
    fake.push_text(PRIVATE + 2, PRIVATE + 2, "Eve", "cut it");
    fake.wait_until(WAIT, "three answers", |f| {
        sends(f, PRIVATE) == 1 && sends(f, PRIVATE + 1) == 1 && sends(f, PRIVATE + 2) == 1
    })
    .await;
    fake.fail_next("getUpdates", Fault::Conflict);
    let err = tokio::time::timeout(WAIT, h.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    let fake2 = FakeTelegram::start().await;
    fake2.fail_next("getMe", Fault::Unauthorized);
    let h2 = start(&fake2, memory(), router, |_| {});
    let err2 = tokio::time::timeout(WAIT, h2.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    // A Bot API that is not there at all: network errors.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut config = Config::default();
    config.telegram.api_url = dead;
    let config = Arc::new(config);
    let (_tx, rx) = watch::channel(config.clone());
    let intake = CancellationToken::new();
    let ctx = AdapterContext {
        core: Core::new(
            config,
            memory(),
            ScriptedRouter::new(),
            Arc::new(SystemClock),
        ),
        store: memory(),
        health: Health::new(),
        config: rx,
        intake: intake.clone(),
    };
    let task = tokio::spawn(Box::new(TelegramAdapter::new(SecretString::from(TOKEN))).run(ctx));
    tokio::time::sleep(Duration::from_secs(5)).await;
    intake.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("telegram: connected"),
        "capture works: {logs}"
    );
    assert!(
        logs.contains("cannot reach the Bot API"),
        "network errors were logged: {logs}"
    );
    let secret = TOKEN.split_once(':').unwrap().1;
    for (what, text) in [
        ("logs", logs.as_str()),
        ("conflict error", &err.to_string()),
        ("config error", &err2.to_string()),
    ] {
        assert!(!text.contains(secret), "the token leaked into {what}");
    }
    for chat in [PRIVATE, PRIVATE + 1, PRIVATE + 2] {
        for text in fake.bot_texts(chat) {
            assert!(!text.contains(secret));
        }
    }
    assert!(
        fake.bot_texts(PRIVATE + 1)[0].starts_with("⚠️"),
        "{:?}",
        fake.bot_texts(PRIVATE + 1)
    );
    assert!(fake.bot_texts(PRIVATE + 2)[0].contains("half an"));
    let _ = Instant::now();
}

/// Sends and edits that reached `chat` (the requests Telegram's flood limits count), in order.
fn writes(fake: &FakeTelegram, chat: i64) -> Vec<support::telegram_fake::Call> {
    fake.chat_calls(chat)
        .into_iter()
        .filter(|c| c.method == "sendmessage" || c.method == "editmessagetext")
        .collect()
}

#[tokio::test(start_paused = true)]
async fn in_groups_every_request_takes_its_own_pacer_slot_even_when_a_reply_rolls_over() {
    let fake = FakeTelegram::start().await;
    // 30,000 characters in 1,000-character pieces every half second: the reply rolls over to a new
    // message every few seconds, so many flushes need an edit and a new message.
    let reply = long_reply(30_000);
    let router = TimedRouter::pieces(&reply, 1000, Duration::from_millis(500));
    let h = start(&fake, memory(), router, |_| {});
    fake.push_text(GROUP, 11, "Bob", &format!("@{BOT_USERNAME} write a book"));
    fake.wait_until(WAIT, "first message", |f| sends(f, GROUP) == 1)
        .await;
    h.stop().await.unwrap(); // waits for the reply to finish
    let writes = writes(&fake, GROUP);
    assert!(sends(&fake, GROUP) >= 8, "{:#?}", fake.summary());
    // The default group interval, 3500 ms, between any two requests: at most 17 a minute, under
    // Telegram's 20 per group.
    for pair in writes.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= Duration::from_millis(3500),
            "two requests {:?} apart: {:#?}",
            pair[1].at - pair[0].at,
            fake.summary()
        );
    }
    // Nothing was lost to the pacing: every code line arrived, in order, once.
    let shown = fake.bot_texts(GROUP).join("\n");
    let count = |text: &str| text.lines().filter(|l| l.contains("let value_")).count();
    assert_eq!(count(&shown), count(&reply));
    assert_clean(&fake);
}

#[tokio::test(start_paused = true)]
async fn a_message_deleted_mid_stream_is_continued_in_a_new_one() {
    let fake = FakeTelegram::start().await;
    let deltas = ["first", " second", " third", " fourth", " fifth"];
    let router = TimedRouter::drip(&deltas, Duration::from_millis(1500));
    let h = start(&fake, memory(), router, |_| {});
    fake.push_text(PRIVATE, PRIVATE, "Alice", "go");
    fake.wait_until(WAIT, "first message", |f| sends(f, PRIVATE) == 1)
        .await;
    let gone = fake.bot_message_ids(PRIVATE)[0];
    fake.delete_message(PRIVATE, gone);
    let full = deltas.concat();
    fake.wait_until(WAIT, "final text", |f| {
        f.bot_texts(PRIVATE) == [full.clone()]
    })
    .await;
    h.stop().await.unwrap();
    // One failed edit of the deleted message, then a new message carries on.
    let edits_of_gone = fake
        .calls_of("editmessagetext")
        .iter()
        .filter(|c| c.body["message_id"].as_i64() == Some(gone))
        .count();
    assert_eq!(edits_of_gone, 1, "{:#?}", fake.summary());
    assert_eq!(sends(&fake, PRIVATE), 2);
    assert_ne!(fake.bot_message_ids(PRIVATE), [gone]);
    assert_clean(&fake);
}

#[tokio::test(start_paused = true)]
async fn typing_continues_while_the_first_message_waits_for_its_slot() {
    let fake = FakeTelegram::start().await;
    let router = ScriptedRouter::new();
    // A slow group pacing: the second answer is ready at once but must wait 10 s for its slot.
    let h = start(&fake, memory(), router, |c| {
        c.telegram.edit_interval_group_ms = 10_000;
    });
    fake.push_text(GROUP, 11, "Bob", &format!("@{BOT_USERNAME} one"));
    fake.push_text(GROUP, 12, "Carol", &format!("@{BOT_USERNAME} two"));
    fake.wait_until(WAIT, "both answered", |f| sends(f, GROUP) == 2)
        .await;
    h.stop().await.unwrap();
    let sent = fake.calls_of("sendmessage");
    let gap = sent[1].at - sent[0].at;
    assert!(gap >= Duration::from_secs(10), "{:#?}", fake.summary());
    // "typing" every 4 s while the second answer waited, and none once it was sent.
    let typing: Vec<_> = fake
        .calls_of("sendchataction")
        .into_iter()
        .filter(|c| c.at > sent[0].at)
        .collect();
    assert_eq!(typing.len(), 2, "{:#?}", fake.summary());
    assert!(typing.iter().all(|c| c.at < sent[1].at));
    assert_clean(&fake);
}

#[tokio::test(start_paused = true)]
async fn the_plain_text_fallback_shows_notices_without_escapes() {
    let fake = FakeTelegram::start().await;
    let router = TimedRouter::new(vec![
        (
            Duration::ZERO,
            ReplyEvent::Notice("Free models are busy; answering with the paid tier.".into()),
        ),
        (Duration::ZERO, ReplyEvent::Started(source())),
        (
            Duration::from_millis(100),
            ReplyEvent::Delta("**Bold** and `a\\b`.".into()),
        ),
        (Duration::ZERO, finished()),
    ]);
    let h = start(&fake, memory(), router, |c| c.telegram.streaming = false);
    fake.fail_next("sendMessage", Fault::CantParseEntities);
    fake.push_text(PRIVATE, PRIVATE, "Alice", "hi");
    fake.wait_until(WAIT, "plain resend", |f| sends(f, PRIVATE) == 1)
        .await;
    h.stop().await.unwrap();
    assert_eq!(
        fake.bot_texts(PRIVATE),
        ["_Free models are busy; answering with the paid tier._\n\n**Bold** and `a\\b`."]
    );
    assert_clean(&fake);
}

/// While a burst of replies is still in flight, the adapter stops fetching: further messages wait at
/// Telegram (which keeps them), not in memory, and are fetched and answered once replies finish.
#[tokio::test(start_paused = true)]
async fn a_burst_beyond_the_in_flight_bound_waits_at_telegram_and_is_answered_later() {
    const CHATS: i64 = 300;
    let fake = FakeTelegram::start().await;
    let router = ScriptedRouter::new();
    router.on("slow", Script::Slow(Duration::from_secs(600)));
    // Every fetched message is answering at once, so the adapter's own bound is what holds.
    let h = start(&fake, memory(), router, |c| {
        c.core.max_concurrent_turns = 1000;
    });
    fake.push_text(1, 1, "User", "slow question");
    let first = fake.last_pushed()["update_id"].as_i64().unwrap();
    for chat in 2..=CHATS {
        fake.push_text(chat, chat, "User", "slow question");
    }
    let fetched = |f: &FakeTelegram| {
        (first..first + CHATS)
            .filter(|&id| f.deliveries(id) > 0)
            .count()
    };
    fake.wait_until(WAIT, "the first batches fetched", |f| fetched(f) >= 200)
        .await;
    // Two batches of 100 are in flight; a third would pass the bound of 256, so it stays at Telegram
    // while every reply waits on the model.
    // (30 s: well inside the core's turn deadline, which would end the replies.)
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(fetched(&fake), 200);
    // Past the model's 600 s: every reply ends, and the third batch is fetched and answered.
    tokio::time::sleep(Duration::from_secs(1300)).await;
    fake.wait_until(WAIT, "every chat answered", |f| {
        f.calls_of("sendmessage").len() >= CHATS as usize
    })
    .await;
    assert!((1..=CHATS).all(|chat| sends(&fake, chat) == 1));
    assert_eq!(fetched(&fake), CHATS as usize);
    h.stop().await.unwrap();
    assert_clean(&fake);
}

/// The first message of each reply in `chat`, in the order they were sent, as the id of the question
/// it quotes.
fn first_messages_by_question(fake: &FakeTelegram, chat: i64) -> Vec<i64> {
    fake.chat_calls(chat)
        .iter()
        .filter(|c| c.method == "sendmessage" && !c.faulted)
        .filter_map(|c| c.body["reply_parameters"]["message_id"].as_i64())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_burst_in_a_private_chat_is_answered_in_order_refusal_included() {
    let fake = FakeTelegram::start().await;
    // The later the question, the faster its answer; the third is refused by the rate limit at once.
    let router = TimedRouter::echo(|p| match p {
        "one" => Duration::from_millis(900),
        _ => Duration::from_millis(100),
    });
    let h = start(&fake, memory(), router, |c| {
        c.access.user_messages_per_minute = 2;
    });
    for q in ["one", "two", "three"] {
        fake.push_text(PRIVATE, PRIVATE, "Alice", q);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fake.wait_until(WAIT, "three replies", |f| sends(f, PRIVATE) == 3)
        .await;
    h.stop().await.unwrap();
    let firsts: Vec<String> = fake
        .chat_calls(PRIVATE)
        .iter()
        .filter(|c| c.method == "sendmessage" && !c.faulted)
        .map(|c| c.text().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(firsts[0], "answer to one", "{:#?}", fake.summary());
    assert_eq!(firsts[1], "answer to two", "{:#?}", fake.summary());
    assert!(
        firsts[2].contains("faster than I can answer"),
        "the refusal takes the third place: {:#?}",
        fake.summary()
    );
    assert_clean(&fake);
}

#[tokio::test(start_paused = true)]
async fn four_mentions_in_a_group_get_their_first_messages_in_arrival_order() {
    let fake = FakeTelegram::start().await;
    // Per-user conversations, so the four turns run at once; Dan's answer is ready first, Ann's last.
    let router = TimedRouter::echo(|p| {
        let rank = ["Ann", "Ben", "Ann", "Cat", "Dan"]
            .iter()
            .position(|n| p.starts_with(n))
            .unwrap_or(0);
        Duration::from_millis(400 - 100 * rank.min(3) as u64)
    });
    let h = start(&fake, memory(), router, |c| {
        c.core.scope = switchboard::config::Scope::User;
        c.access.user_messages_per_minute = 1; // Ann's second mention is refused at once
    });
    let mut asked = Vec::new();
    for (user, name) in [
        (21, "Ann"),
        (22, "Ben"),
        (21, "Ann"),
        (23, "Cat"),
        (24, "Dan"),
    ] {
        asked.push(fake.push_text(
            GROUP,
            user,
            name,
            &format!("@{BOT_USERNAME} hi from {name}"),
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fake.wait_until(WAIT, "five replies", |f| {
        first_messages_by_question(f, GROUP).len() == 5
    })
    .await;
    h.stop().await.unwrap();
    assert_eq!(
        first_messages_by_question(&fake, GROUP),
        asked,
        "first messages out of arrival order: {:#?}",
        fake.summary()
    );
    assert_clean(&fake);
}

#[tokio::test(start_paused = true)]
async fn a_failing_typing_call_never_delays_the_first_text() {
    let fake = FakeTelegram::start().await;
    // teloxide sleeps 10 s after a 5xx before it returns the error.
    fake.fail_next("sendChatAction", Fault::ServerError);
    let router = TimedRouter::drip(&["Hello", " there"], Duration::from_millis(500));
    let h = start(&fake, memory(), router, |_| {});
    let asked = Instant::now();
    fake.push_text(PRIVATE, PRIVATE, "Alice", "hi");
    fake.wait_until(WAIT, "final text", |f| {
        f.bot_texts(PRIVATE) == ["Hello there"]
    })
    .await;
    h.stop().await.unwrap();
    assert!(fake.calls_of("sendchataction")[0].faulted);
    let first = fake.calls_of("sendmessage")[0].at;
    assert!(
        first - asked < Duration::from_secs(2),
        "first text {:?} after the question: {:#?}",
        first - asked,
        fake.summary()
    );
    assert_clean(&fake);
}

/// `s` escaped for Telegram HTML, as the test measures it.
fn escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[tokio::test(start_paused = true)]
async fn a_code_heavy_reply_takes_the_fewest_messages_the_limit_allows() {
    let fake = FakeTelegram::start().await;
    let line = "if (a < b && c > d) { x &= y >> 2; }\n";
    let mut code = String::new();
    while code.len() < 10_000 - 10 {
        code.push_str(line);
    }
    let reply = format!("```c\n{code}```");
    let pieces: Vec<String> = code
        .as_bytes()
        .chunks(2000)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let mut deltas = vec!["```c\n".to_owned()];
    deltas.extend(pieces);
    deltas.push("```".to_owned());
    let refs: Vec<&str> = deltas.iter().map(String::as_str).collect();
    let router = TimedRouter::drip(&refs, Duration::from_millis(300));
    let h = start(&fake, memory(), router, |_| {});
    fake.push_text(PRIVATE, PRIVATE, "Alice", "code please");
    fake.wait_until(WAIT, "the whole reply", |f| {
        f.bot_texts(PRIVATE).concat().matches("x &amp;= y").count() == code.lines().count()
    })
    .await;
    h.stop().await.unwrap();
    let minimum = escaped(&reply).encode_utf16().count().div_ceil(4096);
    assert_eq!(sends(&fake, PRIVATE), minimum, "{:#?}", fake.summary());
    assert_clean(&fake);
}

#[tokio::test(start_paused = true)]
async fn a_runaway_reply_stops_at_the_message_cap_with_a_note() {
    let fake = FakeTelegram::start().await;
    let reply = long_reply(30_000);
    let router = TimedRouter::pieces(&reply, 1000, Duration::from_millis(200));
    let h = start(&fake, memory(), router, |c| {
        c.telegram.max_reply_messages = 2;
    });
    fake.push_text(PRIVATE, PRIVATE, "Alice", "write a book");
    fake.wait_until(WAIT, "the cap note", |f| {
        f.bot_texts(PRIVATE)
            .last()
            .is_some_and(|t| t.contains("limit of 2 messages"))
    })
    .await;
    h.stop().await.unwrap();
    assert_eq!(sends(&fake, PRIVATE), 2, "{:#?}", fake.summary());
    let texts = fake.bot_texts(PRIVATE);
    assert!(
        texts[1]
            .ends_with("The answer was cut here: it reached the limit of 2 messages per reply."),
        "{:?}",
        texts[1]
    );
    assert_clean(&fake);
}

#[tokio::test(start_paused = true)]
async fn answers_that_render_to_nothing_get_the_empty_answer_note() {
    for answer in [">", "```\n```", "[](https://example.com)"] {
        let fake = FakeTelegram::start().await;
        let router = TimedRouter::drip(&[answer], Duration::from_millis(100));
        let h = start(&fake, memory(), router, |_| {});
        fake.push_text(PRIVATE, PRIVATE, "Alice", "say nothing");
        fake.wait_until(WAIT, "the empty-answer note", |f| {
            f.bot_texts(PRIVATE) == ["(The model returned an empty answer.)"]
        })
        .await;
        h.stop().await.unwrap();
        assert_clean(&fake);
    }
}

/// One update teloxide could not decode used to stop Telegram intake for every chat, forever, and log
/// the raw body on each retry (issue 11). Now a lone surrogate escape in a text is repaired (U+FFFD) and
/// answered, an update that still does not decode is skipped once with one WARN naming its id, the
/// other chats of the same batch and later ones are answered, and no user's name or text is logged.
#[tokio::test(start_paused = true)]
async fn an_undecodable_update_is_skipped_once_and_every_other_chat_is_answered() {
    let capture = capture();
    let fake = FakeTelegram::start().await;
    let h = start(&fake, memory(), ScriptedRouter::new(), |_| {});
    let chats = [PRIVATE + 40, PRIVATE + 41, PRIVATE + 42, PRIVATE + 43];
    // One batch: nothing awaits between the pushes, so the adapter cannot poll in between.
    fake.push_text(
        chats[0],
        chats[0],
        "Quentin-secret-name",
        "before the bad one",
    );
    let lone = fake.push_raw_text(
        chats[1],
        chats[1],
        "Quentin-secret-name",
        r"secret-lone \ud800 text",
    );
    let broken = fake.push_raw_json(|id| {
        format!(
            r#"{{"update_id":{id},"message":{{"message_id":"not a number","date":1700000000,"chat":{{"id":{},"type":"private","first_name":"Quentin-secret-name"}},"text":"secret-broken-text"}}}}"#,
            chats[2]
        )
    });
    fake.push_text(
        chats[3],
        chats[3],
        "Quentin-secret-name",
        "after the bad one",
    );
    fake.wait_until(WAIT, "the batch answered", |f| {
        sends(f, chats[0]) == 1 && sends(f, chats[1]) == 1 && sends(f, chats[3]) == 1
    })
    .await;
    assert!(
        fake.bot_texts(chats[1])[0].contains("secret-lone \u{fffd} text"),
        "{:?}",
        fake.bot_texts(chats[1])
    );
    let later = PRIVATE + 44;
    fake.push_text(later, later, "Quentin-secret-name", "a later message");
    fake.wait_until(WAIT, "a later message answered", |f| sends(f, later) == 1)
        .await;
    h.stop().await.unwrap();
    assert_eq!(sends(&fake, chats[2]), 0);
    assert_eq!(
        fake.deliveries(broken),
        1,
        "skipped once, never fetched again"
    );
    assert_eq!(fake.deliveries(lone), 1);
    assert!(fake.acked_offset() > broken);

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let warned: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("skipping an update that cannot be decoded"))
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("WARN"), "{}", warned[0]);
    assert!(
        warned[0].contains(&format!("update_id={broken}")),
        "{}",
        warned[0]
    );
    for private in ["secret-lone", "secret-broken-text", "Quentin-secret-name"] {
        assert!(!logs.contains(private), "{private} reached the logs");
    }
    assert_clean(&fake);
}

/// A `getUpdates` that keeps failing for minutes is reported as degraded (what `STATUS=` shows is the
/// components' summary) while the loop still beats; once it works again the status says polling and
/// messages are answered.
#[tokio::test(start_paused = true)]
async fn a_poll_loop_failing_for_minutes_is_degraded_and_recovers() {
    let fake = FakeTelegram::start().await;
    // Backoff 0.5, 1, 2 … 30 s: the tenth failure comes about two minutes after the first.
    for _ in 0..13 {
        fake.fail_next("getUpdates", Fault::BadGateway);
    }
    let h = start(&fake, memory(), ScriptedRouter::new(), |_| {});
    fake.wait_until(WAIT, "reported degraded", |_| {
        h.health.degraded() == ["telegram"]
    })
    .await;
    let summary = h.health.summary();
    assert!(
        summary.contains("telegram: degraded: getUpdates failing for 2 min"),
        "{summary}"
    );
    assert!(
        h.health.stale(Duration::from_secs(60)).is_empty(),
        "degraded, not hung: the watchdog keeps being fed"
    );
    fake.wait_until(WAIT, "recovered", |_| {
        h.health.degraded().is_empty() && h.health.summary() == "telegram: polling"
    })
    .await;
    fake.push_text(PRIVATE, PRIVATE, "Alice", "still there?");
    fake.wait_until(WAIT, "answered", |f| sends(f, PRIVATE) == 1)
        .await;
    h.stop().await.unwrap();
    assert_clean(&fake);
}

#[tokio::test(start_paused = true)]
async fn a_batch_is_flushed_before_the_get_updates_that_confirms_it_and_before_any_reply() {
    let fake = FakeTelegram::start().await;
    // Queued before the adapter polls, so both arrive in one batch.
    fake.push_text(PRIVATE, PRIVATE, "Alice", "first");
    fake.push_text(PRIVATE, PRIVATE, "Alice", "second");
    let last_update = fake.last_pushed()["update_id"].as_i64().unwrap();
    let probe_fake = fake.clone();
    let store = support::flush_log::FlushLog::new(
        Arc::new(MemoryStore::new()),
        Box::new(move || {
            vec![
                probe_fake.calls_of("getupdates").len(),
                probe_fake.calls_of("sendmessage").len(),
            ]
        }),
    );
    let router = TimedRouter::drip(&["an answer"], Duration::ZERO);
    let h = start(&fake, store.clone(), router, |_| {});
    fake.wait_until(WAIT, "both answers", |f| f.bot_texts(PRIVATE).len() == 2)
        .await;
    h.stop().await.unwrap();

    // The getUpdates that confirmed the batch to Telegram: the first whose offset is past it.
    let polls = fake.calls_of("getupdates");
    let confirm = polls
        .iter()
        .position(|c| c.body["offset"].as_i64().is_some_and(|o| o > last_update))
        .expect("the batch was confirmed");
    // The first flush that made the batch durable: both journal records, both dedupe records and the
    // new offset.
    let flushes = store.flushes();
    let batch_at = flushes
        .iter()
        .position(|f| {
            f.journal >= 2
                && f.answered >= 2
                && f.offset.is_some_and(|o| i64::from(o) > last_update)
        })
        .unwrap_or_else(|| panic!("no flush made the batch durable: {flushes:#?}"));
    let flush = &flushes[batch_at];
    assert!(
        flush.seen[0] <= confirm,
        "the batch was confirmed (getUpdates #{confirm}) before it was flushed: {flush:?}"
    );
    assert_eq!(
        flush.seen[1], 0,
        "a reply started before the batch was durable"
    );
    // One flush for the whole batch: it is the first flush to hold any record at all.
    let first_with_records = flushes.iter().position(|f| f.journal > 0).unwrap();
    assert_eq!(first_with_records, batch_at, "{flushes:#?}");
    assert_clean(&fake);
}
