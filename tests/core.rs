//! The conversation core over a real sled store in a temp dir and the scripted router: ordering, commands,
//! access, limits, context, failure handling, panic containment, and history across a restart. Waiting is
//! done with gates the test opens, or with tokio's paused clock over the in-memory store — never by
//! racing the wall clock.

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
use std::time::Duration;

use futures_util::StreamExt;
use switchboard::clock::SystemClock;
use switchboard::config::{self, Config, Env};
use switchboard::core::{Core, INTERNAL_ERROR_MESSAGE};
use switchboard::domain::{
    ChatKind, ChatRef, FailureKind, Inbound, Platform, ReplyEvent, ReplyStream, Role, Sender,
    TierName, UserRef,
};
use switchboard::router::scripted::{Script, ScriptedRouter};
use switchboard::router::{
    AccountStatus, CompletionRequest, LlmRouter, ModelInfo, RouterStatus, TierStatus,
};
use switchboard::store::memory::MemoryStore;
use switchboard::store::sled_store::SledStore;
use switchboard::store::{HistoryStore, StateStore, TurnStatus};
use tokio::sync::{watch, Semaphore};

/// A router in front of the scripted one: prompts containing "gated" wait until the test opens the gate,
/// each call is counted as it is made (so a test can wait for it), and `status`/`models` can be made to
/// panic, like a router with a bug would.
struct GatedRouter {
    inner: Arc<ScriptedRouter>,
    gate: Arc<Semaphore>,
    calls: watch::Sender<usize>,
    panics: bool,
}

impl GatedRouter {
    fn new(panics: bool) -> Arc<Self> {
        Arc::new(Self {
            inner: ScriptedRouter::new(),
            gate: Arc::new(Semaphore::new(0)),
            calls: watch::channel(0).0,
            panics,
        })
    }

    /// Lets every gated reply through.
    fn open(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    /// Waits until the router has been asked `n` times in all.
    async fn wait_for_calls(&self, n: usize) {
        let mut calls = self.calls.subscribe();
        calls.wait_for(|c| *c >= n).await.unwrap();
    }

    fn calls(&self) -> usize {
        *self.calls.borrow()
    }
}

impl LlmRouter for GatedRouter {
    fn complete(&self, request: CompletionRequest) -> ReplyStream {
        let gated = request.prompt.content.contains("gated");
        let inner = self.inner.complete(request);
        self.calls.send_modify(|c| *c += 1);
        if !gated {
            return inner;
        }
        let gate = self.gate.clone();
        futures_util::stream::once(async move {
            let _ = gate.acquire().await.unwrap();
        })
        .filter_map(|()| async { None })
        .chain(inner)
        .boxed()
    }

    fn models(&self) -> Vec<ModelInfo> {
        assert!(!self.panics, "models() failed: a router bug");
        self.inner.models()
    }

    fn status(&self) -> RouterStatus {
        assert!(!self.panics, "status() failed: a router bug");
        self.inner.status()
    }
}

fn gated_core(toml: &str, panics: bool) -> (Arc<Core>, Arc<GatedRouter>, Arc<SledStore>, Harness) {
    let dir = tempfile::tempdir().unwrap();
    let router = GatedRouter::new(panics);
    let store = sled_store(dir.path());
    let core = Core::new(
        config(toml),
        store.clone(),
        router.clone(),
        Arc::new(SystemClock),
    );
    (core, router, store, Harness { _dir: dir })
}

/// Drains a reply stream: (text, the last event).
async fn drain(mut stream: ReplyStream) -> (String, ReplyEvent) {
    let mut text = String::new();
    let mut last = None;
    while let Some(event) = stream.next().await {
        if let ReplyEvent::Delta(d) = &event {
            text.push_str(d);
        }
        last = Some(event);
    }
    (text, last.expect("at least one event"))
}

/// A core over a fresh sled store; the temp dir lives as long as the returned guard.
struct Harness {
    _dir: tempfile::TempDir,
}

fn sled_store(dir: &std::path::Path) -> Arc<SledStore> {
    Arc::new(SledStore::open(dir, 4, 0).expect("open sled").store)
}

/// No per-user rate limit, for tests that send many messages as one user.
const UNLIMITED: &str = "[access]\nuser_messages_per_minute = 0\n";

fn config(toml: &str) -> Arc<Config> {
    Arc::new(config::parse(toml, "<test>", &Env::default()).expect("valid test config"))
}

fn core_with(toml: &str) -> (Arc<Core>, Arc<ScriptedRouter>, Arc<SledStore>, Harness) {
    let dir = tempfile::tempdir().unwrap();
    let router = ScriptedRouter::new();
    let store = sled_store(dir.path());
    let core = Core::new(
        config(toml),
        store.clone(),
        router.clone(),
        Arc::new(SystemClock),
    );
    (core, router, store, Harness { _dir: dir })
}

fn dm(user: &str, text: &str) -> Inbound {
    Inbound {
        chat: ChatRef::new(Platform::Telegram, user),
        chat_kind: ChatKind::Direct,
        sender: Sender {
            user: UserRef::new(Platform::Telegram, user),
            display_name: format!("user{user}"),
        },
        text: text.into(),
        addressed: true,
        reply_to: None,
        thread: None,
    }
}

fn group(chat: &str, user: &str, name: &str, text: &str, addressed: bool) -> Inbound {
    Inbound {
        chat: ChatRef::new(Platform::Telegram, chat),
        chat_kind: ChatKind::Group,
        sender: Sender {
            user: UserRef::new(Platform::Telegram, user),
            display_name: name.into(),
        },
        text: text.into(),
        addressed,
        reply_to: None,
        thread: None,
    }
}

/// Collects a reply: (text, the last event).
async fn collect(core: &Arc<Core>, inbound: Inbound) -> (String, ReplyEvent) {
    drain(core.handle(inbound).expect("a reply")).await
}

#[tokio::test]
async fn a_message_is_answered_and_both_turns_are_stored() {
    let (core, router, store, _h) = core_with("");
    let (text, last) = collect(&core, dm("1", "hello")).await;
    assert_eq!(text, "echo: hello");
    assert!(
        matches!(last, ReplyEvent::Finished(c) if c.source.as_ref().unwrap().model == "echo-1")
    );
    let key = core.conversation_key(&core.config(), &dm("1", ""));
    let turns = store.recent_turns(&key, 0, 10).unwrap();
    assert_eq!(turns.len(), 2);
    assert_eq!(
        (turns[0].role, turns[0].text.as_str()),
        (Role::User, "hello")
    );
    assert_eq!(
        (turns[1].role, turns[1].status),
        (Role::Assistant, TurnStatus::Complete)
    );
    // The second turn sees the first as history, after the system prompt.
    collect(&core, dm("1", "again")).await;
    let request = router.requests().pop().unwrap();
    assert_eq!(request.history.len(), 2);
    assert_eq!(request.prompt.content, "again");
    assert!(request.system_prompt.starts_with("You are switchboard"));
}

#[tokio::test]
async fn unaddressed_group_messages_are_ignored_and_names_are_recorded() {
    let (core, router, _, _h) = core_with("");
    assert!(core
        .handle(group(
            "-100",
            "7",
            "Alice",
            "chatting among ourselves",
            false
        ))
        .is_none());
    collect(&core, group("-100", "7", "Alice", "hi bot", true)).await;
    collect(&core, group("-100", "8", "Bob", "and me?", true)).await;
    let requests = router.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].prompt.content, "Bob: and me?");
    assert_eq!(requests[1].history[0].content, "Alice: hi bot");
}

#[tokio::test]
async fn reset_starts_a_new_conversation() {
    let (core, router, _, _h) = core_with("");
    collect(&core, dm("1", "remember me")).await;
    let (text, _) = collect(&core, dm("1", "/reset")).await;
    assert!(text.contains("new conversation"), "{text}");
    collect(&core, dm("1", "who am I?")).await;
    assert!(router.requests().last().unwrap().history.is_empty());
}

#[tokio::test]
async fn turns_of_one_conversation_run_in_order_while_others_run_concurrently() {
    let (core, router, store, _h) = gated_core(UNLIMITED, false);
    // First a turn held at the gate, then fast ones, in one conversation: answers must keep arrival order.
    let mut streams = Vec::new();
    streams.push(core.handle(dm("1", "gated first")).unwrap());
    for i in 0..20 {
        streams.push(core.handle(dm("1", &format!("fast {i}"))).unwrap());
    }
    let answers = tokio::spawn(futures_util::future::join_all(
        streams
            .into_iter()
            .map(futures_util::StreamExt::collect::<Vec<_>>),
    ));
    router.wait_for_calls(1).await;
    // Another conversation is answered while conversation 1 is held (it would hang here otherwise).
    let (other_text, _) = collect(&core, dm("2", "independent")).await;
    assert_eq!(other_text, "echo: independent");
    assert_eq!(router.calls(), 2, "conversation 1's fast turns still wait");
    router.open();
    let results = answers.await.unwrap();
    assert_eq!(results.len(), 21);
    let key = core.conversation_key(&core.config(), &dm("1", ""));
    let turns = store.recent_turns(&key, 0, 100).unwrap();
    let users: Vec<_> = turns
        .iter()
        .filter(|t| t.role == Role::User)
        .map(|t| t.text.clone())
        .collect();
    let expected: Vec<_> = std::iter::once("gated first".to_owned())
        .chain((0..20).map(|i| format!("fast {i}")))
        .collect();
    assert_eq!(users, expected);
    // Strict alternation: each answer directly follows its question.
    for pair in turns.chunks(2) {
        assert_eq!(pair[1].text, format!("echo: {}", pair[0].text));
    }
}

#[tokio::test(start_paused = true)]
async fn concurrency_bound_holds_under_load() {
    // The in-memory store keeps all work on this runtime, so the paused clock's sleep below returns
    // only once every task is blocked: a deterministic "everything that can start has started".
    let router = GatedRouter::new(false);
    let core = Core::new(
        config("[core]\nmax_concurrent_turns = 2\n"),
        Arc::new(MemoryStore::new()),
        router.clone(),
        Arc::new(SystemClock),
    );
    let streams: Vec<_> = (0..6)
        .map(|i| core.handle(dm(&i.to_string(), "gated")).unwrap())
        .collect();
    router.wait_for_calls(2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Only two router calls may have started; the rest wait for a permit.
    assert_eq!(router.calls(), 2);
    router.open();
    futures_util::future::join_all(
        streams
            .into_iter()
            .map(futures_util::StreamExt::collect::<Vec<_>>),
    )
    .await;
    assert_eq!(router.calls(), 6);
}

#[tokio::test]
async fn allow_lists_refuse_politely_once_then_stay_silent() {
    let (core, router, _, _h) = core_with("[access]\nallowed_users = [\"telegram:1\"]\n");
    let (_, last) = collect(&core, dm("1", "hi")).await;
    assert!(matches!(last, ReplyEvent::Finished(_)));
    let (_, refusal) = collect(&core, dm("2", "hi")).await;
    assert!(
        matches!(refusal, ReplyEvent::Failed(f) if f.kind == FailureKind::Refused && f.message.contains("not set up"))
    );
    assert!(
        core.handle(dm("2", "hello?")).is_none(),
        "second refusal is silence"
    );
    assert_eq!(router.request_count(), 1);
}

#[tokio::test]
async fn deny_by_default_and_admins() {
    let (core, _, _, _h) =
        core_with("[access]\ndeny_by_default = true\nadmins = [\"telegram:9\"]\n");
    let (_, last) = collect(&core, dm("1", "hi")).await;
    assert!(matches!(last, ReplyEvent::Failed(f) if f.kind == FailureKind::Refused));
    let (text, _) = collect(&core, dm("9", "/system Be terse.")).await;
    assert!(text.starts_with("Saved"), "{text}");
}

/// Whether `inbound` is answered (`Finished`) rather than refused.
async fn admitted(core: &Arc<Core>, inbound: Inbound) -> bool {
    let Some(stream) = core.handle(inbound) else {
        return false;
    };
    match drain(stream).await.1 {
        ReplyEvent::Finished(_) => true,
        ReplyEvent::Failed(f) if f.kind == FailureKind::Refused => false,
        other => panic!("neither answered nor refused: {other:?}"),
    }
}

#[tokio::test]
async fn deny_by_default_with_only_allowed_users_admits_those_users_in_any_chat() {
    let (core, _, _, _h) =
        core_with("[access]\ndeny_by_default = true\nallowed_users = [\"telegram:1\"]\n");
    assert!(
        admitted(&core, dm("1", "hi")).await,
        "a listed user in a DM"
    );
    assert!(
        admitted(&core, group("-5", "1", "Ann", "hi", true)).await,
        "a listed user in a group: the empty chat list does not restrict"
    );
    assert!(!admitted(&core, dm("2", "hi")).await);
    assert!(!admitted(&core, group("-5", "3", "Cy", "hi", true)).await);
}

#[tokio::test]
async fn allowed_chats_admit_anyone_there_and_nobody_elsewhere_with_or_without_deny() {
    for deny in [false, true] {
        let (core, _, _, _h) = core_with(&format!(
            "[access]\ndeny_by_default = {deny}\nallowed_chats = [\"telegram:-5\"]\n"
        ));
        assert!(
            admitted(&core, group("-5", "2", "Bo", "hi", true)).await,
            "deny={deny}"
        );
        assert!(
            admitted(&core, group("-5", "3", "Cy", "hi", true)).await,
            "deny={deny}"
        );
        assert!(
            !admitted(&core, dm("4", "hi")).await,
            "an unlisted DM, deny={deny}"
        );
        assert!(
            !admitted(&core, group("-6", "5", "Di", "hi", true)).await,
            "deny={deny}"
        );
    }
}

#[tokio::test]
async fn with_both_lists_a_listed_user_is_answered_only_in_listed_chats() {
    let (core, _, _, _h) = core_with(
        "[access]\nallowed_users = [\"telegram:1\", \"telegram:2\"]\nallowed_chats = [\"telegram:-5\"]\n\
         admins = [\"telegram:9\"]\n",
    );
    assert!(admitted(&core, group("-5", "1", "Ann", "hi", true)).await);
    assert!(!admitted(&core, group("-6", "2", "Bo", "hi", true)).await);
    assert!(!admitted(&core, group("-5", "3", "Cy", "hi", true)).await);
    assert!(
        admitted(&core, group("-6", "9", "Admin", "hi", true)).await,
        "admins pass anywhere"
    );
}

#[tokio::test]
async fn a_panic_before_the_model_turn_is_contained() {
    // The router's status() and models() panic: /status, /usage and /model run inside `handle` itself.
    let (core, _, _, _h) = gated_core(UNLIMITED, true);
    for command in ["/status", "/usage", "/model"] {
        let (_, last) = collect(&core, dm("1", command)).await;
        assert!(
            matches!(&last, ReplyEvent::Failed(f) if f.kind == FailureKind::Internal && f.message == INTERNAL_ERROR_MESSAGE),
            "{command}: {last:?}"
        );
    }
    // The caller was not unwound, and the next message is answered as usual.
    let (text, _) = collect(&core, dm("1", "still there?")).await;
    assert_eq!(text, "echo: still there?");
}

#[tokio::test]
async fn reset_takes_its_place_in_the_conversation_order() {
    let (core, router, store, _h) = gated_core(UNLIMITED, false);
    let answering = core.handle(dm("1", "gated first")).unwrap();
    router.wait_for_calls(1).await;
    let waiting = core.handle(dm("1", "asked just before the reset")).unwrap();
    let reset = core.handle(dm("1", "/reset")).unwrap();
    let after = core.handle(dm("1", "asked after the reset")).unwrap();
    // /reset stops what was queued before it — the reply answering and the one waiting…
    for stream in [answering, waiting] {
        let (_, last) = drain(stream).await;
        assert!(matches!(last, ReplyEvent::Failed(f) if f.kind == FailureKind::Cancelled));
    }
    let (text, _) = drain(reset).await;
    assert!(text.contains("new conversation"), "{text}");
    // …and the message after it is the first of the new conversation.
    let (text, _) = drain(after).await;
    assert_eq!(text, "echo: asked after the reset");
    let requests = router.inner.requests();
    let prompts: Vec<_> = requests.iter().map(|r| r.prompt.content.as_str()).collect();
    assert_eq!(prompts, ["gated first", "asked after the reset"]);
    assert!(requests[1].history.is_empty());
    let key = core.conversation_key(&core.config(), &dm("1", ""));
    let meta = store.conversation(&key).unwrap().unwrap();
    let texts: Vec<_> = store
        .recent_turns(&key, meta.epoch, 10)
        .unwrap()
        .into_iter()
        .map(|t| t.text)
        .collect();
    assert_eq!(
        texts,
        ["asked after the reset", "echo: asked after the reset"]
    );
}

#[tokio::test]
async fn cancel_also_drops_turns_still_waiting() {
    let (core, router, store, _h) = gated_core(UNLIMITED, false);
    let answering = core.handle(dm("1", "gated first")).unwrap();
    router.wait_for_calls(1).await;
    let waiting = core.handle(dm("1", "second")).unwrap();
    let (text, _) = collect(&core, dm("1", "/cancel")).await;
    assert!(text.contains("Stopping 2 replies"), "{text}");
    for stream in [answering, waiting] {
        let (_, last) = drain(stream).await;
        assert!(matches!(last, ReplyEvent::Failed(f) if f.kind == FailureKind::Cancelled));
    }
    assert_eq!(
        router.calls(),
        1,
        "the waiting turn never reached the model"
    );
    let (text, _) = collect(&core, dm("1", "/cancel")).await;
    assert_eq!(text, "Nothing to cancel.");
    // The conversation goes on; the dropped turn left no trace in its history.
    collect(&core, dm("1", "third")).await;
    let key = core.conversation_key(&core.config(), &dm("1", ""));
    let texts: Vec<_> = store
        .recent_turns(&key, 0, 10)
        .unwrap()
        .into_iter()
        .map(|t| t.text)
        .collect();
    assert_eq!(texts, ["gated first", "third", "echo: third"]);
}

#[tokio::test(start_paused = true)]
async fn usage_counters_and_refusal_markers_are_aged_out_by_the_sweep() {
    use switchboard::clock::{Clock, TokioClock, DAY_MS};
    use switchboard::store::prune_dated;
    const DAY: Duration = Duration::from_secs(86_400);
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(TokioClock::starting_at(20_000 * DAY_MS + DAY_MS / 2));
    let core = Core::new(
        config("[access]\nallowed_users = [\"telegram:1\"]\n"),
        store.clone(),
        ScriptedRouter::new(),
        clock.clone(),
    );
    let keys = |ns: &str| -> Vec<String> {
        store
            .kv_scan(ns, "")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    collect(&core, dm("1", "hi")).await;
    assert!(!admitted(&core, dm("2", "let me in")).await);
    assert!(core.handle(dm("2", "please?")).is_none(), "told once a day");
    tokio::time::advance(DAY).await;
    assert!(
        !admitted(&core, dm("2", "a day later")).await,
        "told again the next day"
    );
    assert_eq!(keys("core.refused").len(), 2);
    tokio::time::advance(35 * DAY).await;
    collect(&core, dm("1", "hi again")).await;
    assert_eq!(
        keys("core.usage").len(),
        4,
        "two days of user and chat counters"
    );
    let removed = prune_dated(store.as_ref(), clock.now_ms()).unwrap();
    assert_eq!(removed, 4, "36-day-old counters and both refusal markers");
    assert!(
        keys("core.usage").iter().all(|k| k.starts_with("20036/")),
        "{:?}",
        keys("core.usage")
    );
    assert!(keys("core.refused").is_empty());
    let (usage, _) = collect(&core, dm("1", "/usage")).await;
    assert!(
        usage.contains("you: 1 request ("),
        "today's counters are intact: {usage}"
    );
}

#[tokio::test]
async fn only_admins_set_the_system_prompt_and_it_is_used() {
    let (core, router, _, _h) = core_with("[access]\nadmins = [\"telegram:9\"]\n");
    let chat = |user: &str, text: &str| group("-5", user, "someone", text, true);
    let (_, refused) = collect(&core, chat("1", "/system Talk like a pirate.")).await;
    assert!(matches!(refused, ReplyEvent::Failed(f) if f.message.contains("admins")));
    let (text, _) = collect(&core, chat("9", "/system Talk like a pirate.")).await;
    assert!(text.starts_with("Saved"));
    let (shown, _) = collect(&core, chat("1", "/system")).await;
    assert!(shown.contains("Talk like a pirate."));
    collect(&core, chat("1", "hello")).await;
    assert_eq!(
        router.requests().last().unwrap().system_prompt,
        "Talk like a pirate."
    );
}

#[tokio::test]
async fn model_command_shows_and_picks_models() {
    let (core, router, _, _h) = core_with("[access]\nmodel_admin_only = false\n");
    let (list, _) = collect(&core, dm("1", "/model")).await;
    assert!(
        list.contains("echo-1") && list.contains("automatic"),
        "{list}"
    );
    let (text, _) = collect(&core, dm("1", "/model nope")).await;
    assert!(text.contains("don't know"));
    let (text, _) = collect(&core, dm("1", "/model echo-1")).await;
    assert!(text.contains("now uses"));
    collect(&core, dm("1", "hi")).await;
    assert_eq!(
        router.requests().last().unwrap().model.as_deref(),
        Some("echo-1")
    );
}

#[tokio::test]
async fn per_user_rate_limit() {
    let (core, _, _, _h) = core_with("[access]\nuser_messages_per_minute = 3\n");
    for _ in 0..3 {
        let (_, last) = collect(&core, dm("1", "hi")).await;
        assert!(matches!(last, ReplyEvent::Finished(_)));
    }
    let (_, last) = collect(&core, dm("1", "hi")).await;
    assert!(
        matches!(last, ReplyEvent::Failed(f) if f.kind == FailureKind::Refused && f.message.contains("faster"))
    );
    // Someone else is unaffected.
    let (_, last) = collect(&core, dm("2", "hi")).await;
    assert!(matches!(last, ReplyEvent::Finished(_)));
}

#[tokio::test]
async fn over_the_rate_limit_a_burst_is_told_once_then_ignored() {
    let (core, router, _, _h) = core_with("[access]\nuser_messages_per_minute = 3\n");
    for _ in 0..3 {
        collect(&core, dm("1", "hi")).await;
    }
    // A burst of 37 extra messages gets exactly one "slow down", not 37.
    let mut told = 0;
    for _ in 0..37 {
        if let Some(stream) = core.handle(dm("1", "hi again")) {
            let (_, last) = drain(stream).await;
            assert!(
                matches!(&last, ReplyEvent::Failed(f) if f.kind == FailureKind::Refused && f.message.contains("faster")),
                "{last:?}"
            );
            told += 1;
        }
    }
    assert_eq!(told, 1, "one refusal per window");
    assert_eq!(
        router.request_count(),
        3,
        "nothing over the limit reached the model"
    );
    // Someone else is told on their own account.
    let (_, last) = collect(&core, dm("2", "hi")).await;
    assert!(matches!(last, ReplyEvent::Finished(_)));
}

#[tokio::test]
async fn per_user_daily_paid_cap_switches_that_user_to_free_only() {
    let dir = tempfile::tempdir().unwrap();
    let router = ScriptedRouter::paid();
    let core = Core::new(
        config(
            "[access]
user_paid_requests_per_day = 2
",
        ),
        sled_store(dir.path()),
        router.clone(),
        Arc::new(SystemClock),
    );
    for _ in 0..2 {
        collect(&core, dm("1", "hi")).await;
        assert!(router.requests().last().unwrap().paid_allowed);
    }
    collect(&core, dm("1", "hi")).await;
    assert!(
        !router.requests().last().unwrap().paid_allowed,
        "third paid request is not allowed"
    );
    let (usage, _) = collect(&core, dm("1", "/usage")).await;
    // The scripted router ignores `paid_allowed`; the real router's obedience is tested in tests/router.rs.
    assert!(usage.contains("you: 3 requests"), "{usage}");
    collect(&core, dm("2", "hi")).await;
    assert!(
        router.requests().last().unwrap().paid_allowed,
        "another user still may"
    );
}

#[tokio::test]
async fn a_reply_cut_short_is_stored_incomplete_and_says_so() {
    let (core, router, store, _h) = core_with("");
    router.on(
        "cut",
        Script::CutAfter(vec!["The answer is".into(), " forty".into()]),
    );
    let (text, last) = collect(&core, dm("1", "cut me")).await;
    assert_eq!(text, "The answer is forty");
    assert!(matches!(last, ReplyEvent::Failed(f) if f.kind == FailureKind::Interrupted));
    let key = core.conversation_key(&core.config(), &dm("1", ""));
    let turns = store.recent_turns(&key, 0, 10).unwrap();
    assert_eq!(turns[1].status, TurnStatus::Incomplete);
    assert_eq!(turns[1].text, "The answer is forty");
}

#[tokio::test]
async fn provider_unavailable_gives_a_friendly_reply() {
    let (core, router, _, _h) = core_with("");
    router.on("down", Script::Unavailable);
    let (_, last) = collect(&core, dm("1", "down?")).await;
    assert!(
        matches!(last, ReplyEvent::Failed(f) if f.kind == FailureKind::Unavailable && !f.message.contains("http"))
    );
}

#[tokio::test]
async fn a_panicking_handler_is_contained() {
    let (core, router, _, _h) = core_with("");
    router.on("boom", Script::Panic);
    let (_, last) = collect(&core, dm("1", "boom")).await;
    assert!(matches!(last, ReplyEvent::Failed(f) if f.kind == FailureKind::Internal));
    // The conversation and the process go on.
    let (text, _) = collect(&core, dm("1", "still there?")).await;
    assert_eq!(text, "echo: still there?");
}

#[tokio::test]
async fn cancel_stops_the_reply_in_progress() {
    let (core, router, _, _h) = core_with("");
    router.on("long", Script::Slow(Duration::from_secs(30)));
    let mut stream = core.handle(dm("1", "long question")).unwrap();
    assert!(matches!(stream.next().await, Some(ReplyEvent::Started(_))));
    let (text, _) = collect(&core, dm("1", "/cancel")).await;
    assert!(text.contains("Stopping"), "{text}");
    let rest: Vec<_> = stream.collect().await;
    assert!(matches!(rest.last(), Some(ReplyEvent::Failed(f)) if f.kind == FailureKind::Cancelled));
    let (text, _) = collect(&core, dm("1", "/cancel")).await;
    assert_eq!(text, "Nothing to cancel.");
}

#[tokio::test(start_paused = true)]
async fn shutdown_cuts_replies_after_the_grace_and_refuses_new_ones() {
    let (core, router, store, _h) = core_with("");
    router.on("long", Script::Slow(Duration::from_secs(60)));
    let mut stream = core.handle(dm("1", "long question")).unwrap();
    assert!(matches!(stream.next().await, Some(ReplyEvent::Started(_))));
    core.begin_shutdown();
    let (_, refused) = collect(&core, dm("2", "new one")).await;
    assert!(matches!(refused, ReplyEvent::Failed(f) if f.kind == FailureKind::ShuttingDown));
    core.drain(Duration::from_secs(5)).await;
    let rest: Vec<_> = stream.collect().await;
    assert!(
        matches!(rest.last(), Some(ReplyEvent::Failed(f)) if f.kind == FailureKind::ShuttingDown && f.message.contains("restarting"))
    );
    assert_eq!(core.in_flight(), 0);
    // The question was stored before the model was called.
    let key = core.conversation_key(&core.config(), &dm("1", ""));
    assert_eq!(
        store.recent_turns(&key, 0, 10).unwrap()[0].text,
        "long question"
    );
}

#[tokio::test]
async fn context_is_trimmed_to_the_window_keeping_system_prompt_and_newest_turn() {
    use switchboard::context::fit_context;
    let (core, router, _, _h) = core_with(UNLIMITED);
    for i in 0..30 {
        collect(
            &core,
            dm(
                "1",
                &format!("message number {i} {}", "padding ".repeat(40)),
            ),
        )
        .await;
    }
    let request = router.requests().pop().unwrap();
    assert_eq!(
        request.history.len(),
        58,
        "the core hands over all loaded history"
    );
    let fitted = fit_context(
        &request.system_prompt,
        &request.history,
        &request.prompt,
        1000,
    );
    assert_eq!(fitted.first().unwrap().role, Role::System);
    assert_eq!(fitted.last().unwrap(), &request.prompt);
    assert!(fitted.len() < 20, "trimmed to the budget");
    // What was kept is the newest history, in order.
    let kept = &fitted[1..fitted.len() - 1];
    assert_eq!(kept, &request.history[request.history.len() - kept.len()..]);
}

#[tokio::test]
async fn huge_input_is_refused_with_bounded_work() {
    let (core, router, _, _h) = core_with("");
    let (_, last) = collect(&core, dm("1", &"x".repeat(100_000))).await;
    assert!(
        matches!(last, ReplyEvent::Failed(f) if f.kind == FailureKind::Refused && f.message.contains("too long"))
    );
    assert_eq!(router.request_count(), 0);
}

#[tokio::test]
async fn help_lists_every_command_and_unknown_commands_are_explained() {
    let (core, _, _, _h) = core_with("");
    let (help, _) = collect(&core, dm("1", "/help")).await;
    for c in Core::commands() {
        assert!(help.contains(&format!("/{}", c.name)), "{help}");
    }
    let (text, _) = collect(&core, dm("1", "/frobnicate")).await;
    assert!(text.contains("/help"));
    let (status, _) = collect(&core, dm("1", "/status")).await;
    assert!(
        status.contains("switchboard") && status.contains("up"),
        "{status}"
    );
}

/// A scripted router whose status shows an account with a key name, a fingerprint and spend.
struct AccountsRouter(Arc<ScriptedRouter>);

impl LlmRouter for AccountsRouter {
    fn complete(&self, request: CompletionRequest) -> ReplyStream {
        self.0.complete(request)
    }

    fn models(&self) -> Vec<ModelInfo> {
        self.0.models()
    }

    fn status(&self) -> RouterStatus {
        RouterStatus {
            tiers: vec![TierStatus {
                name: TierName::paid(),
                enabled: true,
                accounts: vec![AccountStatus {
                    provider: "ollama-cloud".into(),
                    account: "OLLAMA_API_KEY_2".into(),
                    keys: vec!["fp:3f9a".into()],
                    requests_left_today: None,
                    daily_limit: None,
                    state: "ready (key fp:3f9a)".into(),
                }],
                requests_today: 4,
                daily_cap: Some(500),
                estimated_cost_usd: Some(1.25),
            }],
        }
    }
}

#[tokio::test]
async fn in_groups_only_admins_see_accounts_keys_and_spend() {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::new(
        config("[access]\nadmins = [\"telegram:9\"]\n"),
        sled_store(dir.path()),
        Arc::new(AccountsRouter(ScriptedRouter::new())),
        Arc::new(SystemClock),
    );
    let secret_bits = ["OLLAMA_API_KEY_2", "fp:3f9a", "$1.25", "ollama-cloud"];
    collect(&core, group("-100", "7", "Alice", "hello", true)).await;
    for command in ["/usage", "/status"] {
        let (member, _) = collect(&core, group("-100", "7", "Alice", command, true)).await;
        for bit in secret_bits {
            assert!(
                !member.contains(bit),
                "{command} showed {bit} to a member: {member}"
            );
        }
        assert!(member.contains("paid tier"), "{member}");
        let (admin, _) = collect(&core, group("-100", "9", "Root", command, true)).await;
        for bit in secret_bits {
            assert!(
                admin.contains(bit),
                "{command} hid {bit} from an admin: {admin}"
            );
        }
        // A direct chat is the person's own business: the operator view, as before.
        let (direct, _) = collect(&core, dm("7", command)).await;
        assert!(direct.contains("fp:3f9a"), "{direct}");
    }
    // The member still sees their own and the chat's usage.
    let (usage, _) = collect(&core, group("-100", "7", "Alice", "/usage", true)).await;
    assert!(
        usage.contains("you: 1 request") && usage.contains("this chat: 1 request"),
        "{usage}"
    );
}

#[tokio::test]
async fn history_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = sled_store(dir.path());
        let core = Core::new(
            config(""),
            store.clone(),
            ScriptedRouter::new(),
            Arc::new(SystemClock),
        );
        collect(&core, dm("1", "my name is Ada")).await;
        // The store (and its lock) is released when the last handle goes.
        drop(core);
        drop(store);
    }
    let router = ScriptedRouter::new();
    let core = Core::new(
        config(""),
        sled_store(dir.path()),
        router.clone(),
        Arc::new(SystemClock),
    );
    collect(&core, dm("1", "what is my name?")).await;
    let history = &router.requests()[0].history;
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].content, "my name is Ada");
    assert_eq!(history[1].content, "echo: my name is Ada");
}

/// Local-API requests never pass through the core, but the router counts them per API caller: an
/// operator's `/usage` and `/status` show them.
#[tokio::test]
async fn usage_and_status_show_the_local_apis_requests_to_the_operator() {
    let (core, _router, store, _h) = core_with("");
    let (usage, _) = collect(&core, dm("1", "/usage")).await;
    assert!(!usage.contains("local API"), "{usage}");
    let day = switchboard::clock::utc_day(switchboard::clock::Clock::now_ms(&SystemClock));
    let caller = switchboard::domain::UserRef::new(Platform::Api, "local");
    let used = switchboard::domain::Usage {
        prompt_tokens: 10,
        completion_tokens: 5,
    };
    for _ in 0..2 {
        switchboard::router::usage::record(&*store, day, "openrouter", "m/x:free", &caller, used);
    }
    for command in ["/usage", "/status"] {
        let (text, _) = collect(&core, dm("1", command)).await;
        assert!(
            text.contains("local API: 2 requests, 30 tokens"),
            "{command}: {text}"
        );
    }
}
