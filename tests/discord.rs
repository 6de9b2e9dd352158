//! End-to-end tests of the Discord adapter: the real adapter, core and (scripted) router against a fake
//! Discord — REST on 127.0.0.1 plus a `ws://` gateway — built by one helper, [`fake_discord`], which
//! records and refuses any route it does not expect. Time is paused: waits are exact and instant.

#[path = "support/fake_discord.rs"]
mod fake_discord;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::http::Method;
use futures_util::stream::{self, StreamExt};
use secrecy::SecretString;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use switchboard::clock::SystemClock;
use switchboard::config::Config;
use switchboard::core::Core;
use switchboard::domain::{AnswerSource, Completion, ReplyEvent, ReplyStream, TierName, Usage};
use switchboard::exit::{Fatal, EXIT_CONFIG};
use switchboard::health::Health;
use switchboard::platforms::discord::DiscordAdapter;
use switchboard::platforms::{AdapterContext, PlatformAdapter};
use switchboard::router::scripted::{Script, ScriptedRouter};
use switchboard::router::{CompletionRequest, LlmRouter, ModelInfo, RouterStatus};
use switchboard::store::memory::MemoryStore;

use fake_discord::*;

// ---------------------------------------------------------------------------------------------------
// Captured logs (every test's, at TRACE for every crate, serenity and reqwest included).

#[derive(Clone)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = LogSink(buffer.clone());
        // The fake gateway's own websocket library (axum's tungstenite 0.29) logs what it receives —
        // the IDENTIFY with the token — at TRACE. That is the fake, not switchboard: drop exactly that
        // crate version; serenity's tungstenite 0.21 (the client side) stays captured.
        let not_the_fake = tracing_subscriber::filter::filter_fn(|meta| {
            !meta.file().is_some_and(|f| f.contains("tungstenite-0.29"))
        });
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || sink.clone())
                    .with_filter(tracing_subscriber::filter::LevelFilter::TRACE)
                    .with_filter(not_the_fake),
            )
            .init();
        buffer
    })
}

fn assert_token_not_logged() {
    let text = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(!text.is_empty(), "logs were captured");
    let leaks: Vec<String> = text
        .lines()
        .filter(|l| l.contains("canary-discord-token"))
        .map(|l| l.replace(TOKEN, "<TOKEN>").chars().take(400).collect())
        .take(3)
        .collect();
    assert!(
        leaks.is_empty(),
        "the bot token leaked into the logs: {leaks:#?}"
    );
    assert!(
        !text.contains("canary-discord-token"),
        "part of the bot token leaked into the logs"
    );
}

// ---------------------------------------------------------------------------------------------------
// A router that drips deltas (for streaming edits); everything else goes to the scripted router.

struct DripRouter {
    scripted: Arc<ScriptedRouter>,
    /// Prompts containing "drip" are answered with these deltas, `DRIP_GAP` apart.
    drip: Vec<String>,
}

const DRIP_GAP: Duration = Duration::from_millis(400);

impl LlmRouter for DripRouter {
    fn complete(&self, request: CompletionRequest) -> ReplyStream {
        if !request.prompt.content.contains("drip") {
            return self.scripted.complete(request);
        }
        let source = AnswerSource {
            tier: TierName::free(),
            provider: "drip".into(),
            model: "drip-1".into(),
            key_fingerprint: None,
        };
        let deltas = self.drip.clone();
        let started = stream::iter(vec![ReplyEvent::Started(source.clone())]);
        let body = stream::iter(deltas).then(|d| async move {
            tokio::time::sleep(DRIP_GAP).await;
            ReplyEvent::Delta(d)
        });
        let done = stream::iter(vec![ReplyEvent::Finished(Completion {
            source: Some(source),
            usage: Usage::default(),
        })]);
        started.chain(body).chain(done).boxed()
    }

    fn models(&self) -> Vec<ModelInfo> {
        self.scripted.models()
    }

    fn status(&self) -> RouterStatus {
        self.scripted.status()
    }
}

// ---------------------------------------------------------------------------------------------------
// The harness: fake Discord + real adapter + real core + scripted router + memory store.

struct Harness {
    fake: FakeDiscord,
    scripted: Arc<ScriptedRouter>,
    intake: CancellationToken,
    adapter: tokio::task::JoinHandle<Result<(), Fatal>>,
    health: Health,
    _config: watch::Sender<Arc<Config>>,
    next_message: AtomicU64,
}

struct Options {
    edit_interval_ms: u64,
    drip: Vec<String>,
    close_on_identify: Option<u16>,
    command_guilds: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            edit_interval_ms: 1000,
            drip: Vec::new(),
            close_on_identify: None,
            command_guilds: Vec::new(),
        }
    }
}

async fn start(options: Options) -> Harness {
    logs();
    let fake = fake_discord().await;
    *fake.state.close_on_identify.lock().unwrap() = options.close_on_identify;
    let mut config = Config::default();
    config.discord.proxy_url = Some(fake.url());
    config.discord.edit_interval_ms = options.edit_interval_ms;
    config.discord.command_guilds = options.command_guilds;
    config.access.user_messages_per_minute = 0;
    config.validate().unwrap();
    let config = Arc::new(config);
    let scripted = ScriptedRouter::new();
    let router = Arc::new(DripRouter {
        scripted: scripted.clone(),
        drip: options.drip,
    });
    let store = Arc::new(MemoryStore::new());
    let core = Core::new(config.clone(), store.clone(), router, Arc::new(SystemClock));
    let (config_tx, config_rx) = watch::channel(config);
    let health = Health::new();
    let intake = CancellationToken::new();
    let ctx = AdapterContext {
        core,
        store,
        health: health.clone(),
        config: config_rx,
        intake: intake.clone(),
    };
    let adapter = tokio::spawn(Box::new(DiscordAdapter::new(SecretString::from(TOKEN))).run(ctx));
    let harness = Harness {
        fake,
        scripted,
        intake,
        adapter,
        health,
        _config: config_tx,
        next_message: AtomicU64::new(500_000_000_000_000_000),
    };
    if options.close_on_identify.is_none() {
        harness
            .fake
            .wait_until("READY", |f| {
                f.state.identify.lock().unwrap().is_some()
                    && f.state.gateway.lock().unwrap().is_some()
            })
            .await;
        let health = harness.health.clone();
        harness
            .fake
            .wait_until("connected status", move |_| {
                health.summary().contains("discord: connected")
            })
            .await;
    }
    harness
}

impl Harness {
    /// Sends a MESSAGE_CREATE; returns the message id.
    fn say(
        &self,
        from: (&str, &str),
        channel: &str,
        guild: bool,
        content: &str,
        reply_to: Option<&str>,
    ) -> String {
        let id = self.next_message.fetch_add(1, Ordering::SeqCst).to_string();
        let mut message = message_json(&id, channel, user(from.0, from.1), content);
        if guild {
            message["guild_id"] = json!(GUILD);
            message["member"] = json!({"roles": [], "deaf": false, "mute": false,
                "joined_at": "2026-01-01T00:00:00.000000+00:00", "nick": null});
        }
        if content.contains(&format!("<@{BOT_ID}>")) {
            message["mentions"] = json!([bot_user()]);
        }
        if let Some(replied) = reply_to {
            message["message_reference"] = json!({"message_id": replied, "channel_id": channel});
            message["referenced_message"] = self.fake.created(replied);
            message["type"] = json!(19);
        }
        self.fake.dispatch("MESSAGE_CREATE", message);
        id
    }

    /// Stops the adapter the way the daemon does and checks it ends cleanly.
    async fn stop(self) {
        self.intake.cancel();
        let result = tokio::time::timeout(Duration::from_secs(60), self.adapter)
            .await
            .expect("the adapter stops")
            .expect("the adapter task does not panic");
        assert!(
            result.is_ok(),
            "clean stop: {:?}",
            result.err().map(|e| e.to_string())
        );
        self.fake.assert_no_unexpected_routes();
        assert_token_not_logged();
    }
}

fn requests_for(scripted: &ScriptedRouter, needle: &str) -> CompletionRequest {
    scripted
        .requests()
        .into_iter()
        .find(|r| r.prompt.content.contains(needle))
        .unwrap_or_else(|| panic!("no request for {needle}"))
}

fn history_text(request: &CompletionRequest) -> String {
    request
        .history
        .iter()
        .map(|m| m.content.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------------
// Tests.

#[tokio::test(start_paused = true)]
async fn a_dm_is_answered_with_typing_then_paced_edits_and_the_final_text() {
    let drip: Vec<String> = (0..8).map(|i| format!("part{i} ")).collect();
    let expected: String = drip.concat();
    let h = start(Options {
        drip,
        ..Options::default()
    })
    .await;
    // Serenity identified with the bot token (over the fake gateway only).
    let identify = h.fake.state.identify.lock().unwrap().clone().unwrap();
    assert_eq!(
        identify["d"]["token"].as_str().unwrap(),
        format!("Bot {TOKEN}")
    );
    let intents = identify["d"]["intents"].as_u64().unwrap();
    assert_eq!(
        intents & (1 << 9 | 1 << 12 | 1 << 15),
        1 << 9 | 1 << 12 | 1 << 15
    );

    h.say(
        (ALICE, "Alice"),
        DM_CHANNEL,
        false,
        "please drip an answer",
        None,
    );
    let want = expected.trim_end().to_owned();
    h.fake
        .wait_until("the final text", |f| {
            f.messages_in(DM_CHANNEL)
                .first()
                .is_some_and(|(_, t)| *t == want)
        })
        .await;

    let calls: Vec<Call> = h
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.path.contains(DM_CHANNEL))
        .collect();
    assert!(
        calls[0].path.ends_with("/typing"),
        "typing first: {:?}",
        calls[0].path
    );
    let posts: Vec<&Call> = calls
        .iter()
        .filter(|c| c.method == Method::POST && c.path.ends_with("/messages"))
        .collect();
    assert_eq!(posts.len(), 1, "one message, then edits");
    assert_eq!(posts[0].body["allowed_mentions"], json!({"parse": []}));
    let edits: Vec<&Call> = calls.iter().filter(|c| c.method == Method::PATCH).collect();
    assert!(
        edits.len() >= 2,
        "the growing text is edited in: {}",
        edits.len()
    );
    // Edits are paced: at least edit_interval apart (1 s), so 8 deltas 400 ms apart need few edits.
    let mut writes: Vec<Instant> = vec![posts[0].at];
    writes.extend(edits.iter().map(|c| c.at));
    for pair in writes.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(1000),
            "edits too close: {:?}",
            pair[1] - pair[0]
        );
    }
    assert!(edits.len() < 8, "edits are coalesced, not one per delta");
    assert_eq!(edits.last().unwrap().body["content"], json!(want));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn typing_repeats_while_the_model_is_slow() {
    let h = start(Options::default()).await;
    h.scripted
        .on("slowly", Script::Slow(Duration::from_secs(20)));
    h.say((ALICE, "Alice"), DM_CHANNEL, false, "answer slowly", None);
    h.fake
        .wait_until("the answer", |f| !f.messages_in(DM_CHANNEL).is_empty())
        .await;
    let typings = h
        .fake
        .calls()
        .iter()
        .filter(|c| c.path.ends_with("/typing"))
        .count();
    assert!(
        typings >= 3,
        "typing repeated every 8 s over 20 s: {typings}"
    );
    assert_eq!(h.fake.messages_in(DM_CHANNEL)[0].1, "echo: answer slowly");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn guild_policy_and_reply_chains_keep_separate_histories() {
    let h = start(Options::default()).await;
    let mention = format!("<@{BOT_ID}>");
    h.say(
        (BOB, "Bob"),
        GUILD_CHANNEL,
        true,
        "hello everyone, unaddressed",
        None,
    );
    h.say(
        (ALICE, "Alice"),
        GUILD_CHANNEL,
        true,
        &format!("{mention} alpha one"),
        None,
    );
    h.fake
        .wait_until("alice's answer", |f| {
            f.messages_in(GUILD_CHANNEL).len() == 1
        })
        .await;
    h.say(
        (BOB, "Bob"),
        GUILD_CHANNEL,
        true,
        &format!("{mention} beta one"),
        None,
    );
    h.fake
        .wait_until("bob's answer", |f| f.messages_in(GUILD_CHANNEL).len() == 2)
        .await;
    let answers = h.fake.messages_in(GUILD_CHANNEL);
    // The core prefixes group prompts with the sender's name; the mention itself is stripped.
    assert_eq!(answers[0].1, "echo: Alice: alpha one");
    assert_eq!(answers[1].1, "echo: Bob: beta one");
    // Replies to the bot, without a mention, continue each person's own chain.
    h.say(
        (ALICE, "Alice"),
        GUILD_CHANNEL,
        true,
        "alpha two",
        Some(&answers[0].0),
    );
    h.say(
        (BOB, "Bob"),
        GUILD_CHANNEL,
        true,
        "beta two",
        Some(&answers[1].0),
    );
    h.fake
        .wait_until("both replies answered", |f| {
            f.messages_in(GUILD_CHANNEL).len() == 4
        })
        .await;

    let requests = h.scripted.requests();
    assert!(
        requests
            .iter()
            .all(|r| !r.prompt.content.contains("unaddressed")),
        "an unaddressed guild message is ignored"
    );
    assert_eq!(requests.len(), 4);
    let alpha_two = history_text(&requests_for(&h.scripted, "alpha two"));
    assert!(alpha_two.contains("alpha one"), "{alpha_two}");
    assert!(!alpha_two.contains("beta"), "chains are apart: {alpha_two}");
    let beta_two = history_text(&requests_for(&h.scripted, "beta two"));
    assert!(beta_two.contains("beta one"), "{beta_two}");
    assert!(!beta_two.contains("alpha"), "chains are apart: {beta_two}");
    assert_ne!(
        requests_for(&h.scripted, "alpha two").conversation,
        requests_for(&h.scripted, "beta two").conversation
    );
    // The first message of a reply references the user's message and pings nobody.
    let posts: Vec<Call> = h
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.method == Method::POST && c.path.ends_with("/messages"))
        .collect();
    assert!(posts
        .iter()
        .all(|c| c.body["allowed_mentions"] == json!({"parse": []})));
    assert!(posts
        .iter()
        .all(|c| c.body["message_reference"]["message_id"].is_string()
            || c.body["message_reference"]["message_id"].is_u64()));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_thread_is_one_conversation_and_text_commands_work_after_a_mention() {
    let h = start(Options::default()).await;
    h.fake
        .state
        .threads
        .lock()
        .unwrap()
        .insert(THREAD_CHANNEL.to_owned());
    let mention = format!("<@{BOT_ID}>");
    h.say(
        (ALICE, "Alice"),
        THREAD_CHANNEL,
        true,
        &format!("{mention} gamma one"),
        None,
    );
    h.fake
        .wait_until("first answer", |f| f.messages_in(THREAD_CHANNEL).len() == 1)
        .await;
    // A fresh mention in a thread continues the thread's conversation.
    h.say(
        (BOB, "Bob"),
        THREAD_CHANNEL,
        true,
        &format!("{mention} gamma two"),
        None,
    );
    h.fake
        .wait_until("second answer", |f| {
            f.messages_in(THREAD_CHANNEL).len() == 2
        })
        .await;
    let history = history_text(&requests_for(&h.scripted, "gamma two"));
    assert!(history.contains("gamma one"), "{history}");
    // `/reset` after a mention reaches the core as a command (the model is not asked).
    h.say(
        (ALICE, "Alice"),
        THREAD_CHANNEL,
        true,
        &format!("{mention} /reset"),
        None,
    );
    h.fake
        .wait_until("reset answered", |f| {
            f.messages_in(THREAD_CHANNEL).len() == 3
        })
        .await;
    assert_eq!(h.scripted.request_count(), 2);
    h.say(
        (ALICE, "Alice"),
        THREAD_CHANNEL,
        true,
        &format!("{mention} gamma three"),
        None,
    );
    h.fake
        .wait_until("after reset", |f| f.messages_in(THREAD_CHANNEL).len() == 4)
        .await;
    let history = history_text(&requests_for(&h.scripted, "gamma three"));
    assert!(
        !history.contains("gamma"),
        "reset forgot the thread: {history}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_5000_character_reply_arrives_as_three_messages_with_fences_intact() {
    let h = start(Options::default()).await;
    let mut long = String::from("Here is the plan, @everyone and <@&123> and <@456>.\n\n");
    while long.len() < 2300 {
        long.push_str("This sentence is part of a long explanation that goes on. ");
    }
    long.push_str("\n\n```rust\n");
    let mut line = 0;
    while long.len() < 4400 {
        long.push_str(&format!("let value_{line} = compute({line});\n"));
        line += 1;
    }
    long.push_str("```\n\n");
    while long.len() < 5000 {
        long.push_str("Closing words. ");
    }
    assert!(long.chars().count() >= 5000);
    h.scripted
        .on("long one", Script::Deltas(vec![long.clone()]));
    h.say(
        (ALICE, "Alice"),
        DM_CHANNEL,
        false,
        "the long one please",
        None,
    );
    h.fake
        .wait_until("three messages", |f| {
            let m = f.messages_in(DM_CHANNEL);
            m.len() == 3 && m[2].1.contains("Closing words")
        })
        .await;
    let messages = h.fake.messages_in(DM_CHANNEL);
    for (_, text) in &messages {
        assert!(
            text.encode_utf16().count() <= 2000,
            "{} units",
            text.encode_utf16().count()
        );
        assert_eq!(
            text.matches("```").count() % 2,
            0,
            "fence balanced in: {text}"
        );
    }
    assert!(
        messages[1].1.contains("```rust"),
        "the code block opens with its language"
    );
    assert!(
        messages[2].1.starts_with("```rust\n"),
        "the split code block is reopened with its language"
    );
    // Every write carries empty allowed_mentions.
    for call in h
        .fake
        .calls()
        .iter()
        .filter(|c| c.method != Method::GET && c.body.is_object())
    {
        assert_eq!(
            call.body["allowed_mentions"],
            json!({"parse": []}),
            "{}",
            call.path
        );
    }
    // Nothing is lost: every code line arrives once.
    let joined: String = messages.iter().map(|(_, t)| t.as_str()).collect();
    for i in 0..line {
        assert_eq!(
            joined.matches(&format!("let value_{i} = ")).count(),
            1,
            "line {i}"
        );
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_429_on_an_edit_is_waited_out_exactly_and_the_final_text_arrives() {
    let drip: Vec<String> = (0..6).map(|i| format!("chunk{i} ")).collect();
    let want = drip.concat().trim_end().to_owned();
    let h = start(Options {
        drip,
        ..Options::default()
    })
    .await;
    *h.fake.state.edits_to_refuse.lock().unwrap() = 1;
    *h.fake.state.retry_after.lock().unwrap() = 2.5;
    h.say(
        (ALICE, "Alice"),
        DM_CHANNEL,
        false,
        "drip with a limit",
        None,
    );
    h.fake
        .wait_until("the final text", |f| {
            f.messages_in(DM_CHANNEL)
                .first()
                .is_some_and(|(_, t)| *t == want)
        })
        .await;
    let refused = h.fake.state.refused_at.lock().unwrap().clone();
    assert_eq!(refused.len(), 1);
    let edits: Vec<Call> = h
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.method == Method::PATCH)
        .collect();
    let after: Vec<&Call> = edits.iter().filter(|c| c.at >= refused[0]).collect();
    assert!(!after.is_empty());
    let gap = after[0].at - refused[0];
    assert!(
        gap >= Duration::from_millis(2500) && gap < Duration::from_millis(2600),
        "waited exactly retry_after: {gap:?}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn slash_commands_are_registered_and_answered_through_the_core() {
    let h = start(Options::default()).await;
    h.fake
        .wait_until("registration", |f| {
            f.calls().iter().any(|c| c.method == Method::PUT)
        })
        .await;
    let registration = h
        .fake
        .calls()
        .into_iter()
        .find(|c| c.method == Method::PUT)
        .unwrap();
    assert_eq!(
        registration.path,
        format!("/api/v10/applications/{APP_ID}/commands")
    );
    let names: Vec<&str> = registration
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"reset") && names.contains(&"help") && names.contains(&"ask"),
        "{names:?}"
    );

    h.fake.dispatch(
        "INTERACTION_CREATE",
        json!({
            "id": "810000000000000001", "application_id": APP_ID, "type": 2, "token": "interaction-token-1",
            "version": 1, "channel_id": DM_CHANNEL, "user": user(ALICE, "Alice"),
            "locale": "en-US", "entitlements": [], "authorizing_integration_owners": {}, "attachment_size_limit": 8388608,
            "data": {"id": "820000000000000001", "name": "ask", "type": 1,
                     "options": [{"name": "args", "type": 3, "value": "what is a slash command"}]},
        }),
    );
    h.fake
        .wait_until("the deferred answer", |f| {
            f.calls()
                .iter()
                .any(|c| c.path.ends_with("/messages/@original"))
        })
        .await;
    let calls = h.fake.calls();
    let callback = calls
        .iter()
        .find(|c| c.path.ends_with("/callback"))
        .unwrap();
    assert_eq!(callback.body, json!({"type": 5}));
    let original = calls
        .iter()
        .rev()
        .find(|c| c.path.ends_with("/messages/@original"))
        .unwrap();
    assert_eq!(original.body["content"], "echo: what is a slash command");
    assert_eq!(original.body["allowed_mentions"], json!({"parse": []}));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn slash_commands_go_to_each_configured_guild() {
    let h = start(Options {
        command_guilds: vec![GUILD.to_owned(), "400000000000000009".to_owned()],
        ..Options::default()
    })
    .await;
    h.fake
        .wait_until("two registrations", |f| {
            f.calls().iter().filter(|c| c.method == Method::PUT).count() == 2
        })
        .await;
    let paths: Vec<String> = h
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.method == Method::PUT)
        .map(|c| c.path)
        .collect();
    assert_eq!(
        paths,
        vec![
            format!("/api/v10/applications/{APP_ID}/guilds/{GUILD}/commands"),
            format!("/api/v10/applications/{APP_ID}/guilds/400000000000000009/commands"),
        ]
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_replies_in_flight_then_returns_ok() {
    let h = start(Options::default()).await;
    h.scripted.on("slow", Script::Slow(Duration::from_secs(5)));
    h.say((ALICE, "Alice"), DM_CHANNEL, false, "slow one", None);
    h.fake
        .wait_until("typing", |f| {
            f.calls().iter().any(|c| c.path.ends_with("/typing"))
        })
        .await;
    let fake = h.fake.clone();
    h.stop().await;
    assert_eq!(fake.messages_in(DM_CHANNEL)[0].1, "echo: slow one");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_gateway_resumes_and_a_replayed_message_is_not_answered_twice() {
    let h = start(Options::default()).await;
    h.say((ALICE, "Alice"), DM_CHANNEL, false, "before the drop", None);
    h.fake
        .wait_until("first answer", |f| f.messages_in(DM_CHANNEL).len() == 1)
        .await;
    let gateway_lookups = |f: &FakeDiscord| {
        f.calls()
            .iter()
            .filter(|c| c.path == "/api/v10/gateway")
            .count()
    };
    let lookups_before = gateway_lookups(&h.fake);
    // 4000 ("unknown error") is resumable: serenity reconnects and resumes by itself.
    h.fake.command(GatewayCommand::Drop(4000));
    h.fake
        .wait_until("the resume", |f| {
            f.state.resumes.load(Ordering::SeqCst) == 1
        })
        .await;
    let health = h.health.clone();
    h.fake
        .wait_until("connected again", move |_| {
            health.summary().contains("discord: connected")
        })
        .await;
    h.say((ALICE, "Alice"), DM_CHANNEL, false, "after the drop", None);
    h.fake
        .wait_until("second answer", |f| f.messages_in(DM_CHANNEL).len() >= 2)
        .await;
    // Give a duplicate every chance to show up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let texts: Vec<String> = h
        .fake
        .messages_in(DM_CHANNEL)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(texts, vec!["echo: before the drop", "echo: after the drop"]);
    assert_eq!(
        h.scripted.request_count(),
        2,
        "the replayed event was not answered again"
    );
    let log = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(
        log.contains("dropped a replayed message event"),
        "the replay reached the adapter"
    );
    assert_eq!(
        gateway_lookups(&h.fake),
        lookups_before,
        "resumed, not re-identified from scratch"
    );
    assert!(h.fake.state.identify.lock().unwrap().is_some());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failures_end_in_a_friendly_note_and_other_bots_are_ignored() {
    let h = start(Options::default()).await;
    h.scripted.on("nobody home", Script::Unavailable);
    h.scripted.on(
        "cut me",
        Script::CutAfter(vec!["The first half".into(), " of an answer".into()]),
    );
    // Another bot, even mentioning us, is never answered.
    let mut from_bot = message_json(
        "510000000000000001",
        DM_CHANNEL,
        user("200000000000000001", "OtherBot"),
        "cut me",
    );
    from_bot["author"]["bot"] = json!(true);
    h.fake.dispatch("MESSAGE_CREATE", from_bot);
    h.say((ALICE, "Alice"), DM_CHANNEL, false, "nobody home?", None);
    h.say((ALICE, "Alice"), DM_CHANNEL, false, "cut me off", None);
    h.fake
        .wait_until("two answers", |f| {
            f.messages_in(DM_CHANNEL).len() == 2 && f.messages_in(DM_CHANNEL)[1].1.contains("⚠️")
        })
        .await;
    let texts: Vec<String> = h
        .fake
        .messages_in(DM_CHANNEL)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert!(
        texts[0].starts_with("⚠️ No model is available"),
        "{}",
        texts[0]
    );
    assert!(
        texts[1].starts_with("The first half of an answer\n\n⚠️ "),
        "{}",
        texts[1]
    );
    assert!(texts
        .iter()
        .all(|t| !t.contains("Error") && !t.contains("http")));
    assert_eq!(
        h.scripted.request_count(),
        2,
        "the bot's message was ignored"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn gateway_close_4014_is_a_config_error_with_the_intent_hint() {
    let h = start(Options {
        close_on_identify: Some(4014),
        ..Options::default()
    })
    .await;
    let result = tokio::time::timeout(Duration::from_secs(120), h.adapter)
        .await
        .expect("the adapter gives up instead of reconnecting")
        .unwrap();
    let Err(fatal) = result else {
        panic!("4014 must be fatal")
    };
    assert_eq!(fatal.exit_code(), EXIT_CONFIG);
    assert!(matches!(fatal, Fatal::Config(_)));
    let message = fatal.to_string();
    assert!(message.contains("Message Content intent"), "{message}");
    assert!(message.contains("Privileged Gateway Intents"), "{message}");
    assert!(!message.contains(TOKEN));
    assert_eq!(
        h.fake.state.identify.lock().unwrap().as_ref().unwrap()["op"],
        2,
        "identified once"
    );
    h.fake.assert_no_unexpected_routes();
    assert_token_not_logged();
}

#[tokio::test(start_paused = true)]
async fn gateway_close_4004_is_a_config_error_about_the_token() {
    let h = start(Options {
        close_on_identify: Some(4004),
        ..Options::default()
    })
    .await;
    let result = tokio::time::timeout(Duration::from_secs(120), h.adapter)
        .await
        .expect("the adapter gives up instead of reconnecting")
        .unwrap();
    let fatal = result.expect_err("4004 must be fatal");
    assert_eq!(fatal.exit_code(), EXIT_CONFIG);
    assert!(fatal.to_string().contains("DISCORD_BOT_TOKEN was rejected"));
    assert!(!fatal.to_string().contains(TOKEN));
    assert_token_not_logged();
}
