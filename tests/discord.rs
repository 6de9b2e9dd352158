//! End-to-end tests of the Discord adapter: the real adapter, core and free-first router against a fake
//! Discord — REST on 127.0.0.1 plus a `ws://` gateway — built by one helper, [`fake_discord`], and the
//! simulated OpenRouter and Ollama servers of `switchboard::sim`; every one of them records and refuses
//! any route it does not expect. A few cases that need exact control over the answer (a code block
//! across a split, a model that stalls or fails) use the scripted router instead. Time is paused: waits
//! are exact and instant.

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

#[path = "support/fake_discord.rs"]
mod fake_discord;
#[path = "support/recorder.rs"]
mod recorder;

#[path = "support/flush_log.rs"]
mod flush_log;

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::http::Method;
use secrecy::SecretString;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use switchboard::clock::{SharedClock, TokioClock, DAY_MS};
use switchboard::config::{Config, Env, Secrets};
use switchboard::core::Core;
use switchboard::domain::{ConversationKey, Role};
use switchboard::exit::{Fatal, EXIT_CONFIG, EXIT_UNSTABLE};
use switchboard::health::Health;
use switchboard::platforms::discord::{DiscordAdapter, SHUTTING_DOWN_NOTE};
use switchboard::platforms::{AdapterContext, PlatformAdapter};
use switchboard::router::scripted::{Script, ScriptedRouter};
use switchboard::router::{CompletionRequest, FreeFirstRouter, LlmRouter};
use switchboard::sim::ollama::{SimOllama, SimOllamaOptions};
use switchboard::sim::openrouter::{SimKey, SimOpenRouter, SimOpenRouterOptions};
use switchboard::sim::{reply_text, ReplyShape};
use switchboard::store::memory::MemoryStore;
use switchboard::store::{HistoryStore, StateStore, Store, TurnStatus};

use fake_discord::*;
use recorder::Recorder;

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
// The model side: the real free-first router over the simulated OpenRouter and Ollama (127.0.0.1), or a
// scripted router for cases that need exact control. Either way a recorder in front keeps every request.

/// Which router answers.
enum Model {
    /// `ScriptedRouter` (echo unless a test scripts otherwise).
    Scripted,
    /// `FreeFirstRouter` over `SimOpenRouter` + `SimOllama`, answering with this shape.
    Real(ReplyShape),
}

/// The simulators behind the real router.
struct Sims {
    openrouter: SimOpenRouter,
    ollama: SimOllama,
    sentences: usize,
}

/// 2026-11-22 12:00:00 UTC: quota days and minute windows move with paused tokio time from here.
const NOON: i64 = 20_414 * DAY_MS + DAY_MS / 2;
const OPENROUTER_KEY: &str = "sk-or-sim-1";
const OLLAMA_KEY: &str = "ollama-sim-1";

/// Points `config` at fresh simulators and builds the real router over them.
async fn real_router(
    config: &mut Config,
    shape: ReplyShape,
    store: &Arc<MemoryStore>,
    clock: &SharedClock,
) -> (Arc<dyn LlmRouter>, Sims) {
    let sentences = shape.sentences;
    let openrouter = SimOpenRouter::start(SimOpenRouterOptions {
        keys: vec![SimKey::new(OPENROUTER_KEY, "alice", 1000)],
        per_minute_limit: None,
        reply: shape.clone(),
        clock: clock.clone(),
        ..SimOpenRouterOptions::default()
    })
    .await
    .unwrap();
    let ollama = SimOllama::start(SimOllamaOptions {
        keys: vec![OLLAMA_KEY.into()],
        reply: shape,
        ..SimOllamaOptions::default()
    })
    .await
    .unwrap();
    config.openrouter.base_url = openrouter.base_url();
    config.ollama.base_url = ollama.base_url();
    let env = Env::from_pairs([
        ("OPENROUTER_API_KEY_1", OPENROUTER_KEY),
        ("OLLAMA_API_KEY", OLLAMA_KEY),
    ]);
    let secrets = Secrets::load(&env).unwrap();
    let router = FreeFirstRouter::from_config(
        config,
        &secrets,
        store.clone() as Arc<dyn Store>,
        clock.clone(),
    )
    .unwrap();
    router.refresh_quotas().await;
    (
        router,
        Sims {
            openrouter,
            ollama,
            sentences,
        },
    )
}

// ---------------------------------------------------------------------------------------------------
// The harness: fake Discord + real adapter + real core + a router + memory store.

struct Harness {
    fake: FakeDiscord,
    scripted: Arc<ScriptedRouter>,
    recorder: Arc<Recorder>,
    sims: Option<Sims>,
    intake: CancellationToken,
    adapter: tokio::task::JoinHandle<Result<(), Fatal>>,
    health: Health,
    _config: watch::Sender<Arc<Config>>,
    next_message: AtomicU64,
    store: Arc<MemoryStore>,
    /// What each flush of the store made durable, with the messages posted by then.
    flushes: Arc<flush_log::FlushLog>,
}

struct Options {
    model: Model,
    edit_interval_ms: u64,
    close_on_identify: Option<u16>,
    command_guilds: Vec<String>,
    configure: fn(&mut Config),
}

impl Default for Options {
    fn default() -> Self {
        Self {
            model: Model::Scripted,
            edit_interval_ms: 1000,
            close_on_identify: None,
            command_guilds: Vec::new(),
            configure: |_| {},
        }
    }
}

impl Options {
    /// The real router over the simulators, answering with `shape`.
    fn real(shape: ReplyShape) -> Self {
        Self {
            model: Model::Real(shape),
            ..Self::default()
        }
    }
}

/// A model that streams two words every 400 ms: slow enough that a reply is edited several times.
fn streaming() -> ReplyShape {
    ReplyShape {
        chunk_delay: Duration::from_millis(400),
        words_per_chunk: 2,
        ..ReplyShape::default()
    }
}

async fn start(options: Options) -> Harness {
    logs();
    let fake = fake_discord().await;
    *fake.state.close_on_identify.lock().unwrap() = options.close_on_identify;
    let clock: SharedClock = Arc::new(TokioClock::starting_at(NOON));
    let store = Arc::new(MemoryStore::new());
    let mut config = Config::default();
    config.discord.proxy_url = Some(fake.url());
    config.discord.edit_interval_ms = options.edit_interval_ms;
    config.discord.command_guilds = options.command_guilds;
    config.access.user_messages_per_minute = 0;
    (options.configure)(&mut config);
    let scripted = ScriptedRouter::new();
    let (inner, sims) = match options.model {
        Model::Scripted => (scripted.clone() as Arc<dyn LlmRouter>, None),
        Model::Real(shape) => {
            let (router, sims) = real_router(&mut config, shape, &store, &clock).await;
            (router, Some(sims))
        }
    };
    config.validate().unwrap();
    let config = Arc::new(config);
    let recorder = Arc::new(Recorder {
        inner,
        seen: Mutex::default(),
    });
    let probe_fake = fake.clone();
    let flushes = flush_log::FlushLog::new(
        store.clone(),
        Box::new(move || {
            let posts = probe_fake
                .calls()
                .iter()
                .filter(|c| c.method == Method::POST && c.path.ends_with("/messages"))
                .count();
            vec![posts]
        }),
    );
    let core = Core::new(config.clone(), flushes.clone(), recorder.clone(), clock);
    let (config_tx, config_rx) = watch::channel(config);
    let health = Health::new();
    let intake = CancellationToken::new();
    let ctx = AdapterContext {
        core,
        store: flushes.clone(),
        health: health.clone(),
        config: config_rx,
        intake: intake.clone(),
    };
    let adapter = tokio::spawn(Box::new(DiscordAdapter::new(SecretString::from(TOKEN))).run(ctx));
    let harness = Harness {
        fake,
        scripted,
        recorder,
        sims,
        intake,
        adapter,
        health,
        _config: config_tx,
        next_message: AtomicU64::new(500_000_000_000_000_000),
        store,
        flushes,
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

    /// Sends a slash command (INTERACTION_CREATE) from Alice; returns its interaction token.
    fn slash(&self, channel: &str, guild: bool, name: &str, args: Option<&str>) -> String {
        let n = self.next_message.fetch_add(1, Ordering::SeqCst);
        let token = format!("interaction-token-{n}");
        let mut data = json!({"id": "820000000000000001", "name": name, "type": 1});
        if let Some(args) = args {
            data["options"] = json!([{"name": "args", "type": 3, "value": args}]);
        }
        let mut interaction = json!({
            "id": n.to_string(), "application_id": APP_ID, "type": 2, "token": token,
            "version": 1, "channel_id": channel, "locale": "en-US", "entitlements": [],
            "authorizing_integration_owners": {}, "attachment_size_limit": 8_388_608, "data": data,
        });
        if guild {
            interaction["guild_id"] = json!(GUILD);
            interaction["member"] = json!({"user": user(ALICE, "Alice"), "roles": [], "deaf": false,
                "mute": false, "joined_at": "2026-01-01T00:00:00.000000+00:00", "nick": null,
                "permissions": "0", "flags": 0});
        } else {
            interaction["user"] = user(ALICE, "Alice");
        }
        self.fake.dispatch("INTERACTION_CREATE", interaction);
        token
    }

    /// The last text written into a slash command's deferred response, once there is one.
    fn interaction_answer(&self, token: &str) -> Option<String> {
        self.fake
            .calls()
            .into_iter()
            .rev()
            .find(|c| c.path.ends_with(&format!("/{token}/messages/@original")))
            .map(|c| c.body["content"].as_str().unwrap().to_owned())
    }

    /// Every request the router was asked.
    fn requests(&self) -> Vec<CompletionRequest> {
        self.recorder.seen.lock().unwrap().clone()
    }

    /// The request whose prompt contains `needle`.
    fn request_for(&self, needle: &str) -> CompletionRequest {
        self.requests()
            .into_iter()
            .find(|r| r.prompt.content.contains(needle))
            .unwrap_or_else(|| panic!("no request for {needle}"))
    }

    /// What the simulated model answered to the request whose prompt contains `needle`: the free
    /// model the simulator served last and its deterministic reply to that prompt.
    fn model_output(&self, needle: &str) -> String {
        let sims = self.sims.as_ref().expect("the real router");
        let model = sims
            .openrouter
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.is_chat() && r.status == 200)
            .and_then(|r| r.model)
            .expect("the simulated OpenRouter answered");
        reply_text(
            &model,
            &self.request_for(needle).prompt.content,
            sims.sentences,
        )
    }

    /// Waits until the model was asked the prompt containing `needle`, then returns its answer.
    async fn wait_for_model_output(&self, needle: &str) -> String {
        let asked = |h: &Self| {
            h.requests()
                .iter()
                .any(|r| r.prompt.content.contains(needle))
                && h.sims.as_ref().is_some_and(|s| {
                    s.openrouter
                        .requests()
                        .iter()
                        .any(switchboard::sim::SimRequest::is_chat)
                })
        };
        self.fake
            .wait_until("the model's answer", |_| asked(self))
            .await;
        self.model_output(needle)
    }

    /// Waits until message `index` in `channel` reads exactly what the model answered to the prompt
    /// containing `needle`.
    async fn answered(&self, channel: &str, index: usize, needle: &str) {
        let want = self.wait_for_model_output(needle).await;
        self.fake
            .wait_until(needle, |f| {
                f.messages_in(channel)
                    .get(index)
                    .is_some_and(|(_, t)| *t == want)
            })
            .await;
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
        if let Some(sims) = &self.sims {
            assert!(sims.openrouter.unexpected().is_empty());
            assert!(sims.ollama.unexpected().is_empty());
        }
        assert_token_not_logged();
    }
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
    let h = start(Options::real(streaming())).await;
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
        "please stream an answer",
        None,
    );
    // The final text is exactly what the simulated model streamed through the real router.
    let want = h.wait_for_model_output("please stream an answer").await;
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
    // Edits are paced: at least edit_interval apart (1 s), so deltas 400 ms apart are coalesced.
    let mut writes: Vec<Instant> = vec![posts[0].at];
    writes.extend(edits.iter().map(|c| c.at));
    for pair in writes.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_secs(1),
            "edits too close: {:?}",
            pair[1] - pair[0]
        );
    }
    let deltas = want.split_inclusive(' ').count().div_ceil(2);
    assert!(
        edits.len() < deltas / 2,
        "edits are coalesced, not one per delta: {} edits for {deltas} deltas",
        edits.len()
    );
    assert_eq!(edits.last().unwrap().body["content"], json!(want));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn every_model_request_carries_the_chat_cap_and_long_raises_it_for_that_chat() {
    let h = start(Options {
        configure: |c| c.access.admins = vec![format!("discord:{ALICE}")],
        ..Options::real(ReplyShape::default())
    })
    .await;
    let chat_requests = |h: &Harness| -> Vec<Option<u64>> {
        let sims = h.sims.as_ref().unwrap();
        sims.openrouter
            .requests()
            .into_iter()
            .filter(switchboard::sim::SimRequest::is_chat)
            .map(|r| r.max_tokens)
            .collect()
    };
    h.say((ALICE, "Alice"), DM_CHANNEL, false, "short one", None);
    h.answered(DM_CHANNEL, 0, "short one").await;
    assert_eq!(chat_requests(&h), [Some(1024)], "the chat-sized default");
    h.say((ALICE, "Alice"), DM_CHANNEL, false, "/long on", None);
    h.fake
        .wait_until("/long confirmed", |f| {
            f.messages_in(DM_CHANNEL)
                .get(1)
                .is_some_and(|(_, t)| t.contains("Long answers are on"))
        })
        .await;
    h.say((ALICE, "Alice"), DM_CHANNEL, false, "long one", None);
    h.answered(DM_CHANNEL, 2, "long one").await;
    assert_eq!(chat_requests(&h), [Some(1024), Some(8192)]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn replying_to_a_slash_command_answer_continues_its_conversation() {
    let h = start(Options::default()).await;
    let token = h.slash(GUILD_CHANNEL, true, "ask", Some("delta one"));
    h.fake
        .wait_until("the slash answer", |f| {
            f.original_id(&token).is_some() && h.interaction_answer(&token).is_some()
        })
        .await;
    let answer = h.fake.original_id(&token).unwrap();
    h.say(
        (ALICE, "Alice"),
        GUILD_CHANNEL,
        true,
        "delta two",
        Some(&answer),
    );
    h.fake
        .wait_until("the reply answered", |f| {
            f.messages_in(GUILD_CHANNEL)
                .iter()
                .any(|(_, t)| t.contains("delta two"))
        })
        .await;
    let history = history_text(&h.request_for("delta two"));
    assert!(history.contains("delta one"), "{history}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_mention_replying_to_someone_elses_message_gives_the_model_that_message() {
    let h = start(Options::default()).await;
    let bob_said = h.say((BOB, "Bob"), GUILD_CHANNEL, true, "ship it on friday", None);
    let mut message = message_json(
        "500000000000000999",
        GUILD_CHANNEL,
        user(ALICE, "Alice"),
        &format!("<@{BOT_ID}> what does this mean?"),
    );
    message["guild_id"] = json!(GUILD);
    message["member"] = json!({"roles": [], "deaf": false, "mute": false,
        "joined_at": "2026-01-01T00:00:00.000000+00:00", "nick": null});
    message["mentions"] = json!([bot_user()]);
    message["message_reference"] = json!({"message_id": bob_said, "channel_id": GUILD_CHANNEL});
    message["referenced_message"] = message_json(
        &bob_said,
        GUILD_CHANNEL,
        user(BOB, "Bob"),
        "ship it on friday",
    );
    message["type"] = json!(19);
    h.fake.dispatch("MESSAGE_CREATE", message);
    h.fake
        .wait_until("the answer", |f| !f.messages_in(GUILD_CHANNEL).is_empty())
        .await;
    let prompt = h.request_for("what does this mean?").prompt.content;
    assert!(
        prompt.contains("Bob") && prompt.contains("ship it on friday"),
        "{prompt}"
    );
    assert_eq!(h.requests().len(), 1, "Bob's own message was not answered");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_mention_mid_sentence_reaches_the_model_without_a_stray_space() {
    let h = start(Options::default()).await;
    h.say(
        (ALICE, "Alice"),
        GUILD_CHANNEL,
        true,
        &format!("hey <@{BOT_ID}>, summarize"),
        None,
    );
    h.fake
        .wait_until("the answer", |f| !f.messages_in(GUILD_CHANNEL).is_empty())
        .await;
    assert_eq!(h.requests()[0].prompt.content, "Alice: hey, summarize");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_storm_is_logged_with_its_count_and_ends_the_adapter_for_a_paced_restart() {
    let h = start(Options::default()).await;
    h.fake.state.drop_after_resume.store(true, Ordering::SeqCst);
    h.fake.command(GatewayCommand::Drop(4000));
    let ended = tokio::time::timeout(Duration::from_secs(600), h.adapter)
        .await
        .expect("the adapter stops by itself in a storm")
        .expect("no panic");
    let fatal = ended.expect_err("a storm is an error");
    assert_eq!(fatal.exit_code(), EXIT_UNSTABLE);
    assert!(![EXIT_CONFIG, 73].contains(&fatal.exit_code()));
    let resumes = h.fake.state.resumes.load(Ordering::SeqCst);
    assert!(resumes > 60, "{resumes} resumes");
    let text = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(
        text.lines().any(|l| l.contains("WARN")
            && l.contains("keeps dropping")
            && l.contains("reconnects=")),
        "a WARN with the count"
    );
    // Rate-limited: far fewer log lines than reconnects.
    let reports = text
        .lines()
        .filter(|l| l.contains("keeps dropping"))
        .count();
    assert!(
        reports < 10,
        "{reports} reconnect reports for {resumes} resumes"
    );
    h.fake.assert_no_unexpected_routes();
    assert_token_not_logged();
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
    let h = start(Options::real(ReplyShape::default())).await;
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
    h.answered(GUILD_CHANNEL, 0, "alpha one").await;
    h.say(
        (BOB, "Bob"),
        GUILD_CHANNEL,
        true,
        &format!("{mention} beta one"),
        None,
    );
    h.answered(GUILD_CHANNEL, 1, "beta one").await;
    let answers = h.fake.messages_in(GUILD_CHANNEL);
    // The core prefixes group prompts with the sender's name; the mention itself is stripped.
    assert_eq!(
        h.request_for("alpha one").prompt.content,
        "Alice: alpha one"
    );
    assert!(answers[0].1.contains("You said: Alice: alpha one."));
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
    h.answered(GUILD_CHANNEL, 2, "alpha two").await;
    h.answered(GUILD_CHANNEL, 3, "beta two").await;

    let requests = h.requests();
    assert!(
        requests
            .iter()
            .all(|r| !r.prompt.content.contains("unaddressed")),
        "an unaddressed guild message is ignored"
    );
    assert_eq!(requests.len(), 4);
    let alpha_two = history_text(&h.request_for("alpha two"));
    assert!(alpha_two.contains("alpha one"), "{alpha_two}");
    assert!(!alpha_two.contains("beta"), "chains are apart: {alpha_two}");
    let beta_two = history_text(&h.request_for("beta two"));
    assert!(beta_two.contains("beta one"), "{beta_two}");
    assert!(!beta_two.contains("alpha"), "chains are apart: {beta_two}");
    assert_ne!(
        h.request_for("alpha two").conversation,
        h.request_for("beta two").conversation
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
    h.fake.mark_thread(THREAD_CHANNEL);
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
    let history = history_text(&h.request_for("gamma two"));
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
    assert_eq!(h.requests().len(), 2);
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
    let history = history_text(&h.request_for("gamma three"));
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
        let _ = writeln!(long, "let value_{line} = compute({line});");
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
    assert_every_write_pings_nobody(&h);
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
    let h = start(Options::real(streaming())).await;
    *h.fake.state.edits_to_refuse.lock().unwrap() = 1;
    *h.fake.state.retry_after.lock().unwrap() = 2.5;
    h.say(
        (ALICE, "Alice"),
        DM_CHANNEL,
        false,
        "stream with a limit",
        None,
    );
    let want = h.wait_for_model_output("stream with a limit").await;
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
            "locale": "en-US", "entitlements": [], "authorizing_integration_owners": {}, "attachment_size_limit": 8_388_608,
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
        h.requests().len(),
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
    assert_eq!(h.requests().len(), 2, "the bot's message was ignored");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn gateway_close_4014_is_a_config_error_with_the_intent_hint() {
    let h = start(Options {
        close_on_identify: Some(4014),
        ..Options::real(ReplyShape::default())
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

#[tokio::test(start_paused = true)]
async fn a_5000_character_model_answer_arrives_as_three_messages_pinging_nobody() {
    // The simulator's answer echoes the prompt (mentions included) and adds fixed sentences: pick
    // enough of them for 5,000 characters.
    let prompt = "a long plan for @everyone, @here, <@&123> and <@456> please";
    let model = Config::default().openrouter.free_models[0].clone();
    let sentences = (1..10_000)
        .find(|n| reply_text(&model, prompt, *n).chars().count() >= 5000)
        .unwrap();
    let h = start(Options::real(ReplyShape {
        sentences,
        words_per_chunk: 40,
        ..ReplyShape::default()
    }))
    .await;
    h.say((ALICE, "Alice"), DM_CHANNEL, false, prompt, None);
    let want = h.wait_for_model_output("a long plan").await;
    assert!(want.chars().count() >= 5000 && want.contains("@everyone"));
    let squeeze = |t: &str| t.split_whitespace().collect::<String>();
    h.fake
        .wait_until("three messages", |f| {
            let joined: String = f
                .messages_in(DM_CHANNEL)
                .iter()
                .map(|(_, t)| squeeze(t))
                .collect();
            joined == squeeze(&want)
        })
        .await;
    let messages = h.fake.messages_in(DM_CHANNEL);
    assert_eq!(messages.len(), 3);
    for (_, text) in &messages {
        assert!(text.encode_utf16().count() <= 2000);
    }
    assert!(
        messages[0].1.contains("@everyone"),
        "passed through as text"
    );
    assert_every_write_pings_nobody(&h);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn slash_commands_in_a_thread_act_on_the_thread_conversation_only() {
    let h = start(Options::real(ReplyShape::default())).await;
    h.fake.mark_thread(THREAD_CHANNEL);
    let mention = format!("<@{BOT_ID}>");
    h.say(
        (ALICE, "Alice"),
        THREAD_CHANNEL,
        true,
        &format!("{mention} gamma one"),
        None,
    );
    h.answered(THREAD_CHANNEL, 0, "gamma one").await;
    // Another conversation in the thread's parent channel: a reply chain.
    h.say(
        (BOB, "Bob"),
        GUILD_CHANNEL,
        true,
        &format!("{mention} delta one"),
        None,
    );
    h.answered(GUILD_CHANNEL, 0, "delta one").await;

    // /ask in the thread continues the thread's history.
    let ask = h.slash(THREAD_CHANNEL, true, "ask", Some("gamma two"));
    let want = h.wait_for_model_output("gamma two").await;
    h.fake
        .wait_until("the /ask answer", |_| {
            h.interaction_answer(&ask).is_some_and(|t| t == want)
        })
        .await;
    let thread = ConversationKey(format!("discord:{GUILD_CHANNEL}/t:thread-{THREAD_CHANNEL}"));
    assert_eq!(h.request_for("gamma one").conversation, thread);
    assert_eq!(h.request_for("gamma two").conversation, thread);
    let history = history_text(&h.request_for("gamma two"));
    assert!(history.contains("gamma one"), "{history}");

    // /reset in the thread forgets the thread, and only the thread.
    let asked = h.requests().len();
    let reset = h.slash(THREAD_CHANNEL, true, "reset", None);
    h.fake
        .wait_until("the /reset answer", |_| {
            h.interaction_answer(&reset).is_some()
        })
        .await;
    assert_eq!(h.requests().len(), asked, "/reset does not ask the model");
    h.say(
        (ALICE, "Alice"),
        THREAD_CHANNEL,
        true,
        &format!("{mention} gamma three"),
        None,
    );
    h.answered(THREAD_CHANNEL, 1, "gamma three").await;
    let history = history_text(&h.request_for("gamma three"));
    assert!(
        !history.contains("gamma"),
        "the thread was reset: {history}"
    );
    let chain = h.fake.messages_in(GUILD_CHANNEL)[0].0.clone();
    h.say((BOB, "Bob"), GUILD_CHANNEL, true, "delta two", Some(&chain));
    h.answered(GUILD_CHANNEL, 1, "delta two").await;
    let history = history_text(&h.request_for("delta two"));
    assert!(
        history.contains("delta one"),
        "the chain was kept: {history}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_thread_under_an_allowed_channel_is_admitted() {
    let h = start(Options {
        configure: |c| c.access.allowed_chats = vec![format!("discord:{GUILD_CHANNEL}")],
        ..Options::default()
    })
    .await;
    h.fake.mark_thread(THREAD_CHANNEL);
    let mention = format!("<@{BOT_ID}>");
    h.say(
        (ALICE, "Alice"),
        THREAD_CHANNEL,
        true,
        &format!("{mention} inside the thread"),
        None,
    );
    h.say(
        (ALICE, "Alice"),
        OTHER_CHANNEL,
        true,
        &format!("{mention} somewhere else"),
        None,
    );
    h.fake
        .wait_until("both handled", |f| {
            !f.messages_in(THREAD_CHANNEL).is_empty() && !f.messages_in(OTHER_CHANNEL).is_empty()
        })
        .await;
    assert_eq!(
        h.fake.messages_in(THREAD_CHANNEL)[0].1,
        "echo: Alice: inside the thread"
    );
    assert!(
        h.fake.messages_in(OTHER_CHANNEL)[0]
            .1
            .starts_with("⚠️ Sorry, I'm not set up to talk with you here"),
        "a channel that is not listed is refused"
    );
    assert_eq!(h.requests().len(), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn messages_during_shutdown_get_a_restarting_note() {
    let h = start(Options::default()).await;
    h.scripted.on("slow", Script::Slow(Duration::from_secs(5)));
    h.say((ALICE, "Alice"), DM_CHANNEL, false, "slow one", None);
    h.fake
        .wait_until("typing", |f| {
            f.calls().iter().any(|c| c.path.ends_with("/typing"))
        })
        .await;
    // The daemon stops taking new messages while the slow reply is still being answered.
    h.intake.cancel();
    let late = h.say((ALICE, "Alice"), DM_CHANNEL, false, "are you there?", None);
    h.say(
        (BOB, "Bob"),
        GUILD_CHANNEL,
        true,
        "unaddressed chatter",
        None,
    );
    let slash = h.slash(DM_CHANNEL, false, "ask", Some("anyone?"));
    h.fake
        .wait_until("the note", |f| {
            f.messages_in(DM_CHANNEL)
                .iter()
                .any(|(_, t)| t == SHUTTING_DOWN_NOTE)
        })
        .await;
    h.fake
        .wait_until("the slash note", |f| {
            f.calls().iter().any(|c| {
                c.path.ends_with(&format!("/{slash}/callback"))
                    && c.body["data"]["content"] == SHUTTING_DOWN_NOTE
            })
        })
        .await;
    let note = h
        .fake
        .calls()
        .into_iter()
        .find(|c| c.body["content"] == SHUTTING_DOWN_NOTE)
        .unwrap();
    assert_eq!(note.body["message_reference"]["message_id"], json!(late));
    assert_eq!(note.body["allowed_mentions"], json!({"parse": []}));
    let fake = h.fake.clone();
    let asked: Vec<String> = h.requests().into_iter().map(|r| r.prompt.content).collect();
    h.stop().await;
    assert_eq!(asked, vec!["slow one"], "nothing new reached the model");
    let texts: Vec<String> = fake
        .messages_in(DM_CHANNEL)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert!(texts.contains(&"echo: slow one".to_owned()), "{texts:?}");
    assert!(
        fake.messages_in(GUILD_CHANNEL).is_empty(),
        "an unaddressed message gets no note"
    );
}

#[tokio::test(start_paused = true)]
async fn the_adapter_keeps_beating_the_watchdog_while_nothing_happens() {
    let h = start(Options::default()).await;
    // Ten quiet minutes: no gateway events at all. The adapter's own pulse keeps it fresh for the
    // daemon's watchdog (default `stale_after_secs` = 90).
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(h.health.stale(Duration::from_secs(90)).is_empty());
    }
    assert!(h.health.summary().contains("discord: connected"));
    h.stop().await;
}

/// Every write to Discord carries empty `allowed_mentions`, so model output can never ping anyone.
fn assert_every_write_pings_nobody(h: &Harness) {
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
}

#[tokio::test(start_paused = true)]
async fn a_reply_that_cannot_quote_the_question_is_posted_without_the_reference() {
    let h = start(Options::default()).await;
    *h.fake.state.refuse_referenced_posts.lock().unwrap() = 1;
    h.say((ALICE, "Alice"), DM_CHANNEL, false, "quote me", None);
    h.fake
        .wait_until("the answer", |f| {
            f.messages_in(DM_CHANNEL)
                .first()
                .is_some_and(|(_, t)| t == "echo: quote me")
        })
        .await;
    let refused = h.fake.state.refused_posts.lock().unwrap().clone();
    assert_eq!(refused.len(), 1);
    assert!(refused[0].get("message_reference").is_some());
    let posts: Vec<Call> = h
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.method == Method::POST && c.path.ends_with("/messages"))
        .collect();
    assert_eq!(posts.len(), 1);
    assert!(posts[0].body.get("message_reference").is_none());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_answer_that_cannot_be_posted_is_stored_undelivered_and_logged() {
    let h = start(Options::default()).await;
    *h.fake.state.refuse_posts.lock().unwrap() = 100;
    h.say((ALICE, "Alice"), DM_CHANNEL, false, "say it anyway", None);
    // Quoting, then not quoting, then plain: three tries before giving up.
    h.fake
        .wait_until("three refused posts", |f| {
            f.state.refused_posts.lock().unwrap().len() == 3
        })
        .await;
    let store = h.store.clone();
    let assistant = || {
        let (key, meta) = store.list_conversations().unwrap().pop()?;
        store
            .recent_turns(&key, meta.epoch, 10)
            .unwrap()
            .into_iter()
            .find(|t| t.role == Role::Assistant)
    };
    h.fake
        .wait_until("the stored answer", |_| assistant().is_some())
        .await;
    let turn = assistant().unwrap();
    assert_eq!(turn.text, "echo: say it anyway");
    assert_eq!(
        turn.status,
        TurnStatus::Incomplete,
        "an answer the user never saw is not history as said"
    );
    assert!(h.fake.messages_in(DM_CHANNEL).is_empty());
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(
        logs.lines()
            .any(|l| l.contains("WARN") && l.contains("recorded as undelivered")),
        "no WARN about the undelivered reply"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn replies_in_a_channel_start_in_the_order_their_messages_arrived() {
    let h = start(Options::default()).await;
    h.scripted
        .on("slowly", Script::Slow(Duration::from_secs(3)));
    h.say(
        (ALICE, "Alice"),
        DM_CHANNEL,
        false,
        "answer me slowly",
        None,
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The core answers a command at once; its reply still waits for the earlier answer's start.
    h.say((ALICE, "Alice"), DM_CHANNEL, false, "/help", None);
    h.fake
        .wait_until("two replies", |f| f.messages_in(DM_CHANNEL).len() == 2)
        .await;
    let texts = h.fake.messages_in(DM_CHANNEL);
    assert_eq!(texts[0].1, "echo: answer me slowly", "{texts:?}");
    assert!(
        texts[1].1.contains("/reset"),
        "the help text second: {texts:?}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_message_is_recorded_durably_before_its_reply_starts_and_settled_once_delivered() {
    let h = start(Options::default()).await;
    h.scripted
        .on("hello", Script::Deltas(vec!["recorded first".into()]));
    let id = h.say((ALICE, "Alice"), DM_CHANNEL, false, "hello", None);
    h.fake
        .wait_until("the answer", |f| {
            f.messages_in(DM_CHANNEL)
                .iter()
                .any(|(_, t)| t == "recorded first")
        })
        .await;
    let flushes = h.flushes.flushes();
    let first_durable = flushes
        .iter()
        .find(|f| f.journal >= 1)
        .unwrap_or_else(|| panic!("the message was never flushed: {flushes:#?}"));
    assert_eq!(
        first_durable.seen[0], 0,
        "the reply was posted before the message's record was durable"
    );
    // The record names the bot's message and is settled once the reply is delivered.
    let records = h
        .store
        .kv_scan(switchboard::core::journal::JOURNAL_NS, "")
        .unwrap();
    assert_eq!(records.len(), 1);
    let entry: switchboard::core::JournalEntry = switchboard::store::decode(&records[0].1).unwrap();
    assert_eq!(entry.message, format!("{DM_CHANNEL}:{id}"));
    assert_eq!(entry.bot_messages.len(), 1);
    h.fake
        .wait_until("settled", |_| {
            let records = h
                .store
                .kv_scan(switchboard::core::journal::JOURNAL_NS, "")
                .unwrap();
            switchboard::store::decode::<switchboard::core::JournalEntry>(&records[0].1)
                .unwrap()
                .state
                == switchboard::core::ReplyState::Delivered
        })
        .await;
}

/// A small JPEG as the media sniffer sees one (start and end markers).
fn small_jpeg(len: usize) -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8, 0xFF, 0xE0];
    j.extend((0..len - 6).map(|i| (i % 113) as u8));
    j.extend_from_slice(&[0xFF, 0xD9]);
    j
}

#[tokio::test(start_paused = true)]
async fn image_and_text_attachments_reach_the_model_and_a_dead_link_gets_a_clear_reply() {
    const VISION: &str = "meta-llama/llama-3.3-70b-instruct:free";
    let h = start(Options {
        configure: |c| {
            c.openrouter
                .capabilities
                .insert(VISION.into(), vec!["vision".into()]);
        },
        ..Options::real(ReplyShape::default())
    })
    .await;
    let send = |content: &str, attachments: Vec<serde_json::Value>| {
        let id = h.next_message.fetch_add(1, Ordering::SeqCst).to_string();
        let mut message = message_json(&id, DM_CHANNEL, user(ALICE, "Alice"), content);
        message["attachments"] = json!(attachments);
        h.fake.dispatch("MESSAGE_CREATE", message);
    };
    // An image with a question: the bytes the user sent are the bytes the vision model gets.
    let photo = small_jpeg(30_000);
    let image = h.fake.attachment(
        DM_CHANNEL,
        "screenshot.jpg",
        "image/jpeg",
        Some(photo.clone()),
    );
    send("what does this error say?", vec![image]);
    h.fake
        .wait_until("the image answer", |f| f.messages_in(DM_CHANNEL).len() == 1)
        .await;
    let request = h.request_for("what does this error say?");
    assert_eq!(request.prompt.images.len(), 1);
    assert_eq!(request.prompt.images[0].media_type, "image/jpeg");
    let sent = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        request.prompt.images[0].base64.as_bytes(),
    )
    .unwrap();
    assert_eq!(sent, photo);
    let sims = h.sims.as_ref().unwrap();
    let models: Vec<String> = sims
        .openrouter
        .requests()
        .into_iter()
        .filter(switchboard::sim::SimRequest::is_chat)
        .filter_map(|r| r.model)
        .collect();
    assert_eq!(
        models,
        vec![VISION.to_owned()],
        "only the vision model is asked"
    );
    // The simulator decoded the content part back to the very bytes.
    let seen: Vec<String> = sims
        .openrouter
        .requests()
        .into_iter()
        .flat_map(|r| r.images)
        .map(|i| i.sha256)
        .collect();
    assert_eq!(seen, vec![switchboard::media::sha256_hex(&photo)]);
    // A text file becomes part of the prompt, under its name.
    let file = h.fake.attachment(
        DM_CHANNEL,
        "main.rs",
        "text/x-rust; charset=utf-8",
        Some(b"fn main() { println!(\"hi\"); }\n".to_vec()),
    );
    send("review this", vec![file]);
    h.fake
        .wait_until("the file answer", |f| f.messages_in(DM_CHANNEL).len() == 2)
        .await;
    let request = h.request_for("review this");
    assert!(
        request
            .prompt
            .content
            .contains("File `main.rs`:\n```\nfn main() { println!(\"hi\"); }\n```"),
        "{}",
        request.prompt.content
    );
    // An attachment whose URL no longer answers: a clear reply, no model asked.
    let before = h.requests().len();
    let dead = h.fake.attachment(DM_CHANNEL, "old.png", "image/png", None);
    send("and this one?", vec![dead]);
    h.fake
        .wait_until("the download failure", |f| {
            f.messages_in(DM_CHANNEL).len() == 3
        })
        .await;
    let texts = h.fake.messages_in(DM_CHANNEL);
    assert!(
        texts[2].1.contains("I couldn't download `old.png`"),
        "{texts:?}"
    );
    assert_eq!(h.requests().len(), before);
    // The screenshot was fetched again for the follow-up turn (re-sent within `media.resend_turns`).
    assert_eq!(h.fake.cdn_downloads().len(), 4);
    assert_eq!(h.request_for("review this").prompt.images.len(), 1);
    h.fake.assert_no_unexpected_routes();
    h.stop().await;
}
