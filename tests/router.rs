//! The free-first router against the simulated OpenRouter and Ollama servers on 127.0.0.1, with the
//! real wire clients and an injected manual clock shared by the router and the simulators (quota days,
//! per-minute windows and cooldowns move only when a test moves the clock).

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

use futures_util::StreamExt;
use switchboard::clock::{ManualClock, SharedClock, DAY_MS};
use switchboard::config::{Config, Env, Secrets};
use switchboard::doctor::run_check;
use switchboard::domain::{
    ChatMessage, ChatRef, ConversationKey, FailureKind, Platform, ReplyEvent, Role, UserRef,
};
use switchboard::router::{CompletionRequest, FreeFirstRouter, LlmRouter, ModelSelector};
use switchboard::secrets::fingerprint_str;
use switchboard::sim::ollama::{SimOllama, SimOllamaOptions};
use switchboard::sim::openrouter::{SimKey, SimModel, SimOpenRouter, SimOpenRouterOptions};
use switchboard::sim::Fault;
use switchboard::store::memory::MemoryStore;
use switchboard::store::sled_store::SledStore;
use switchboard::store::Store;

/// 2026-11-22 12:00:00 UTC.
const NOON: i64 = 20_414 * DAY_MS + DAY_MS / 2;
const FREE_MODEL: &str = "deepseek/deepseek-chat-v3-0324:free";
const PAID_MODEL: &str = "gpt-oss:120b";
/// The model the simulator's `openrouter/free` answers with.
const PICKED_BY_FREE_ROUTER: &str = "mistralai/mistral-small-3.2-24b-instruct:free";

struct Rig {
    openrouter: SimOpenRouter,
    ollama: SimOllama,
    clock: Arc<ManualClock>,
    store: Arc<MemoryStore>,
    config: Config,
    secrets: Secrets,
    env: Env,
    router: Arc<FreeFirstRouter>,
}

/// OpenRouter keys `k1..kN` (`OPENROUTER_API_KEY_1..N`) on the given sim accounts with `daily` free
/// requests each; one Ollama key `p1`. The router learns the daily quota from `GET /key`.
async fn rig(accounts: &[&str], daily: u32, configure: impl FnOnce(&mut Config)) -> Rig {
    rig_with(accounts, daily, |_| {}, configure).await
}

/// [`rig`], with the simulated OpenRouter's options adjusted by `sim` before it starts.
async fn rig_with(
    accounts: &[&str],
    daily: u32,
    sim: impl FnOnce(&mut SimOpenRouterOptions),
    configure: impl FnOnce(&mut Config),
) -> Rig {
    let clock = Arc::new(ManualClock::new(NOON));
    let shared: SharedClock = clock.clone();
    let keys: Vec<SimKey> = accounts
        .iter()
        .enumerate()
        .map(|(i, a)| SimKey::new(format!("k{}", i + 1), *a, daily))
        .collect();
    let mut options = SimOpenRouterOptions {
        keys,
        models: vec![
            SimModel::free(FREE_MODEL, 163_840),
            SimModel::free(PICKED_BY_FREE_ROUTER, 32_768),
        ],
        free_router_picks: PICKED_BY_FREE_ROUTER.into(),
        clock: shared.clone(),
        ..SimOpenRouterOptions::default()
    };
    sim(&mut options);
    let openrouter = SimOpenRouter::start(options).await.unwrap();
    let ollama = SimOllama::start(SimOllamaOptions {
        keys: vec!["p1".into(), "p2".into()],
        ..SimOllamaOptions::default()
    })
    .await
    .unwrap();
    let mut config = Config::default();
    config.openrouter.base_url = openrouter.base_url();
    config.openrouter.free_models = vec![FREE_MODEL.into()];
    config.ollama.base_url = ollama.base_url();
    config.ollama.models = vec![PAID_MODEL.into()];
    configure(&mut config);
    let mut pairs: Vec<(String, String)> = (1..=accounts.len())
        .map(|i| (format!("OPENROUTER_API_KEY_{i}"), format!("k{i}")))
        .collect();
    pairs.push(("OLLAMA_API_KEY".into(), "p1".into()));
    pairs.push(("OLLAMA_API_KEY_2".into(), "p2".into()));
    let env = Env::from_pairs(pairs);
    let secrets = Secrets::load(&env).unwrap();
    let store = Arc::new(MemoryStore::new());
    let router = new_router(&config, &secrets, &store, &clock).await;
    Rig {
        openrouter,
        ollama,
        clock,
        store,
        config,
        secrets,
        env,
        router,
    }
}

async fn new_router(
    config: &Config,
    secrets: &Secrets,
    store: &Arc<MemoryStore>,
    clock: &Arc<ManualClock>,
) -> Arc<FreeFirstRouter> {
    let router = FreeFirstRouter::from_config(
        config,
        secrets,
        store.clone() as Arc<dyn Store>,
        clock.clone() as SharedClock,
    )
    .unwrap();
    router.refresh_quotas().await;
    router
}

fn request(conversation: &str) -> CompletionRequest {
    CompletionRequest {
        conversation: ConversationKey(conversation.into()),
        user: UserRef::new(Platform::Terminal, "alice"),
        chat: ChatRef::new(Platform::Terminal, "tty"),
        system_prompt: "Be brief.".into(),
        history: Vec::new(),
        prompt: ChatMessage::new(Role::User, "hello"),
        model: None,
        selector: ModelSelector::Policy,
        params: switchboard::generation::GenerationParams::default(),
        sticky: true,
        paid_allowed: true,
        max_tokens: None,
    }
}

async fn ask(router: &FreeFirstRouter, conversation: &str) -> Vec<ReplyEvent> {
    router.complete(request(conversation)).collect().await
}

/// (tier, key fingerprint) of a finished answer; panics on anything else.
fn answered(events: &[ReplyEvent]) -> (String, Option<String>) {
    match events.last() {
        Some(ReplyEvent::Finished(c)) => {
            let s = c.source.clone().expect("a source");
            assert!(
                events.iter().any(|e| matches!(e, ReplyEvent::Delta(_))),
                "{events:?}"
            );
            (s.tier.0, s.key_fingerprint)
        }
        other => panic!("expected a finished answer, got {other:?} in {events:?}"),
    }
}

#[allow(clippy::unnecessary_wraps)] // compared with `AnswerSource::key_fingerprint`, an Option
fn fp(key: &str) -> Option<String> {
    Some(fingerprint_str(key))
}

fn free_calls(rig: &Rig, key: &str) -> usize {
    rig.openrouter.requests_for_key(key)
}

#[tokio::test]
async fn walks_accounts_then_paid_and_back_to_free_after_midnight() {
    let rig = rig(&["a1", "a2", "a3"], 2, |_| {}).await;
    assert_eq!(
        rig.router.status().tiers[0].accounts[0].requests_left_today,
        Some(2),
        "learned from GET /key"
    );
    let mut keys = Vec::new();
    for _ in 0..6 {
        let (tier, key) = answered(&ask(&rig.router, "c1").await);
        assert_eq!(tier, "free");
        keys.push(key);
    }
    assert_eq!(
        keys,
        [fp("k1"), fp("k1"), fp("k2"), fp("k2"), fp("k3"), fp("k3")]
    );
    for _ in 0..3 {
        let events = ask(&rig.router, "c1").await;
        assert_eq!(answered(&events).0, "paid");
    }
    // Zero requests to an exhausted account until its reset.
    for (key, account) in [("k1", "a1"), ("k2", "a2"), ("k3", "a3")] {
        assert_eq!(free_calls(&rig, key), 2, "{key}");
        assert_eq!(rig.openrouter.daily_used(account), 2);
    }
    assert_eq!(
        rig.ollama.requests_for_key("p1") + rig.ollama.requests_for_key("p2"),
        3
    );
    let status = rig.router.status();
    assert_eq!(
        status.tiers[0].accounts[2].state,
        "exhausted until 00:00 UTC"
    );
    assert_eq!(status.tiers[1].requests_today, 3);

    // Midnight UTC: the free tier answers again, starting from the first account.
    rig.clock.advance(DAY_MS / 2);
    let (tier, key) = answered(&ask(&rig.router, "c1").await);
    assert_eq!((tier.as_str(), key), ("free", fp("k1")));
    assert_eq!(free_calls(&rig, "k1"), 3);
    assert!(rig.openrouter.unexpected().is_empty());
}

#[tokio::test]
async fn per_minute_429_skips_the_account_exactly_retry_after() {
    let rig = rig(&["a1", "a2"], 50, |_| {}).await;
    rig.openrouter.push_key_fault(
        "k1",
        Fault::RateLimitPerMinute {
            retry_after_secs: 30,
        },
    );
    let (_, key) = answered(&ask(&rig.router, "c").await);
    assert_eq!(key, fp("k2"), "the next account at once");
    assert_eq!((free_calls(&rig, "k1"), free_calls(&rig, "k2")), (1, 1));
    assert_eq!(
        rig.router.status().tiers[0].accounts[0].state,
        "cooling down until 12:00:30 UTC"
    );
    rig.clock.advance(29_999);
    assert_eq!(answered(&ask(&rig.router, "c").await).1, fp("k2"));
    assert_eq!(free_calls(&rig, "k1"), 1, "still cooling down");
    rig.clock.advance(1);
    assert_eq!(answered(&ask(&rig.router, "c").await).1, fp("k1"));
    assert_eq!(free_calls(&rig, "k1"), 2);
}

#[tokio::test]
async fn payment_required_and_unauthorized_take_accounts_out() {
    let rig = rig(&["a1", "a2", "a3"], 50, |_| {}).await;
    rig.openrouter.push_key_fault("k1", Fault::PaymentRequired);
    rig.openrouter.push_key_fault("k2", Fault::Unauthorized);
    assert_eq!(answered(&ask(&rig.router, "c").await).1, fp("k3"));
    for _ in 0..3 {
        assert_eq!(answered(&ask(&rig.router, "c").await).1, fp("k3"));
    }
    assert_eq!((free_calls(&rig, "k1"), free_calls(&rig, "k2")), (1, 1));
    let status = rig.router.status();
    assert_eq!(
        status.tiers[0].accounts[0].state,
        "out of credits (402) until 18:00:00 UTC"
    );
    assert_eq!(
        status.tiers[0].accounts[1].state,
        "disabled: key rejected (401)"
    );
    // 402 lasts the configured six hours; 401 lasts until the configuration is reloaded.
    rig.clock.advance(6 * 3_600_000);
    assert_eq!(answered(&ask(&rig.router, "c").await).1, fp("k1"));
    assert_eq!(free_calls(&rig, "k2"), 1);
    rig.router.reload(&rig.config).unwrap();
    assert_eq!(rig.router.status().tiers[0].accounts[1].state, "ready");
}

#[tokio::test]
async fn two_keys_on_one_account_share_one_quota() {
    let rig = rig(&["team", "team", "solo"], 3, |c| {
        c.openrouter
            .accounts
            .insert("OPENROUTER_API_KEY_1".into(), "team".into());
        c.openrouter
            .accounts
            .insert("OPENROUTER_API_KEY_2".into(), "team".into());
    })
    .await;
    let mut keys = Vec::new();
    for _ in 0..6 {
        keys.push(answered(&ask(&rig.router, "c").await).1);
    }
    assert_eq!(
        keys,
        [fp("k1"), fp("k2"), fp("k1"), fp("k3"), fp("k3"), fp("k3")]
    );
    assert_eq!(rig.openrouter.requests_for_account("team"), 3);
    assert_eq!(rig.openrouter.daily_used("team"), 3);
    let status = rig.router.status();
    assert_eq!(status.tiers[0].accounts.len(), 2);
    assert_eq!(
        status.tiers[0].accounts[0].keys,
        [fingerprint_str("k1"), fingerprint_str("k2")]
    );
}

#[tokio::test]
async fn failure_before_the_first_token_falls_back_after_it_interrupts() {
    let rig = rig(&["a1", "a2"], 50, |c| {
        c.openrouter.free_models = vec![FREE_MODEL.into(), "openrouter/free".into()];
    })
    .await;
    rig.openrouter.push_fault(Fault::ServerError);
    let events = ask(&rig.router, "c").await;
    assert_eq!(answered(&events).0, "free");
    let started: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ReplyEvent::Started(s) => Some(s.model.clone()),
            _ => None,
        })
        .collect();
    // openrouter/free reports the model that really answered.
    assert_eq!(started, [PICKED_BY_FREE_ROUTER]);

    rig.openrouter.push_fault(Fault::TruncateAfter(2));
    let before = rig.openrouter.requests().len() + rig.ollama.chat_requests();
    let events = ask(&rig.router, "c").await;
    let deltas = events
        .iter()
        .filter(|e| matches!(e, ReplyEvent::Delta(_)))
        .count();
    assert_eq!(deltas, 2);
    match events.last() {
        Some(ReplyEvent::Failed(f)) => {
            assert_eq!(f.kind, FailureKind::Interrupted);
            assert!(f.message.contains("incomplete"), "{}", f.message);
            assert!(!f.message.to_lowercase().contains("truncated"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        rig.openrouter.requests().len() + rig.ollama.chat_requests(),
        before + 1,
        "no fallback once the user saw part of the answer"
    );

    rig.openrouter.push_fault(Fault::MidStreamError {
        after: 0,
        message: "upstream overloaded".into(),
    });
    let events = ask(&rig.router, "c").await;
    assert_eq!(
        answered(&events).0,
        "free",
        "an error before any delta still falls back"
    );
}

/// Three accounts with 2 free requests a day: k2 answers a per-minute 429 (120 s), so three questions
/// leave k1 spent (2), k2 cooling down (its 429 counted) and k3 used once.
async fn spend_until_one_is_exhausted_and_one_cools_down(rig: &Rig, router: &FreeFirstRouter) {
    rig.openrouter.push_key_fault(
        "k2",
        Fault::RateLimitPerMinute {
            retry_after_secs: 120,
        },
    );
    for _ in 0..3 {
        answered(&ask(router, "c").await);
    }
    assert_eq!(
        (
            free_calls(rig, "k1"),
            free_calls(rig, "k2"),
            free_calls(rig, "k3")
        ),
        (2, 1, 1)
    );
}

/// A router built anew over the state [`spend_until_one_is_exhausted_and_one_cools_down`] left knows
/// k1 is exhausted and k2 cooling down: it spends k3's last request, then goes paid, and uses k2 again
/// only once its cooldown ends.
async fn assert_the_restarted_router_kept_the_state(rig: &Rig, again: &FreeFirstRouter) {
    let status = again.status();
    assert_eq!(
        status.tiers[0].accounts[0].state,
        "exhausted until 00:00 UTC"
    );
    assert_eq!(
        status.tiers[0].accounts[1].state,
        "cooling down until 12:02:00 UTC"
    );
    assert_eq!(answered(&ask(again, "c").await).1, fp("k3"));
    assert_eq!(answered(&ask(again, "c").await).0, "paid");
    assert_eq!(
        (
            free_calls(rig, "k1"),
            free_calls(rig, "k2"),
            free_calls(rig, "k3")
        ),
        (2, 1, 2),
        "nothing re-spent on exhausted or cooling accounts"
    );
    rig.clock.advance(120_000);
    assert_eq!(answered(&ask(again, "c").await).1, fp("k2"));
}

#[tokio::test]
async fn restart_over_the_same_store_keeps_quota_and_cooldowns() {
    let rig = rig(&["a1", "a2", "a3"], 2, |_| {}).await;
    spend_until_one_is_exhausted_and_one_cools_down(&rig, &rig.router).await;
    // The old router is simply no longer used (a process restart).
    let _ = &rig.router;
    let again = FreeFirstRouter::from_config(
        &rig.config,
        &rig.secrets,
        rig.store.clone() as Arc<dyn Store>,
        rig.clock.clone() as SharedClock,
    )
    .unwrap();
    assert_the_restarted_router_kept_the_state(&rig, &again).await;
}

#[tokio::test]
async fn paid_notice_appears_once_per_conversation() {
    let rig = rig(&["a1"], 1, |_| {}).await;
    let events = ask(&rig.router, "c1").await;
    assert!(!events.iter().any(|e| matches!(e, ReplyEvent::Notice(_))));
    let events = ask(&rig.router, "c1").await;
    assert_eq!(
        events[0],
        ReplyEvent::Notice(
            "Free quota is used up until 00:00 UTC — answering with gpt-oss:120b on Ollama Cloud."
                .into()
        )
    );
    assert!(matches!(&events[1], ReplyEvent::Started(s) if s.tier.0 == "paid"));
    let events = ask(&rig.router, "c1").await;
    assert!(!events.iter().any(|e| matches!(e, ReplyEvent::Notice(_))));
    let events = ask(&rig.router, "c2").await;
    assert!(matches!(events[0], ReplyEvent::Notice(_)));
    // The two paid keys share the load.
    assert_eq!(
        (
            rig.ollama.requests_for_key("p1"),
            rig.ollama.requests_for_key("p2")
        ),
        (2, 1)
    );
    assert!(rig.ollama.unexpected().is_empty());
}

#[tokio::test]
async fn check_reports_every_key_model_and_token() {
    let rig = rig(&["a1", "a2"], 50, |c| {
        c.openrouter.free_models = vec![FREE_MODEL.into(), "nope/missing:free".into()];
        c.ollama.models = vec![PAID_MODEL.into(), "kimi-k2.5".into(), "not-there:1b".into()];
    })
    .await;
    let mut env = rig.env.clone();
    env.set("TELEGRAM_BOT_TOKEN", "123:abc");
    let secrets = Secrets::load(&env).unwrap();
    let mut out = Vec::new();
    let summary = run_check(&rig.config, &secrets, &env, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let k1 = fingerprint_str("k1");
    let p1 = fingerprint_str("p1");
    let expected = [
        format!("✓ openrouter OPENROUTER_API_KEY_1 {k1} (own account): free tier (never bought credits), 50 of 50 free requests left today"),
        format!("✓ openrouter model {FREE_MODEL}: exists, free, context 163840"),
        "✗ openrouter model nope/missing:free: not listed by GET /models: fix [openrouter].free_models".to_string(),
        format!("✓ ollama-cloud OLLAMA_API_KEY {p1}: authenticates; lists gpt-oss:120b, kimi-k2.5; not listed: not-there:1b"),
        format!("✓ telegram: token present ({})", fingerprint_str("123:abc")),
        "✗ discord: DISCORD_BOT_TOKEN not set (adapter off)".to_string(),
    ];
    for line in &expected {
        assert!(
            lines.contains(&line.as_str()),
            "missing line {line:?} in:\n{text}"
        );
    }
    assert_eq!(summary.failed, 1, "{text}");
    assert!(
        !text.contains("k1\n") && !text.contains(" k1 "),
        "no key in the report"
    );

    // An endpoint without GET /key: "unknown", not failed; a rejected key fails.
    let plain = SimOpenRouter::start(SimOpenRouterOptions {
        keys: vec![SimKey::new("k1", "a1", 50)],
        models: vec![SimModel::free(FREE_MODEL, 8192)],
        key_endpoint: false,
        ..SimOpenRouterOptions::default()
    })
    .await
    .unwrap();
    let mut config = rig.config.clone();
    config.openrouter.base_url = plain.base_url();
    config.openrouter.free_models = vec![FREE_MODEL.into()];
    config.ollama.models = vec![PAID_MODEL.into()];
    let env = Env::from_pairs([("OPENROUTER_API_KEY_1", "k1"), ("OLLAMA_API_KEY", "wrong")]);
    let secrets = Secrets::load(&env).unwrap();
    let mut out = Vec::new();
    let summary = run_check(&config, &secrets, &env, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(&format!(
            "✓ openrouter OPENROUTER_API_KEY_1 {k1} (own account): tier and free requests left today unknown (this endpoint has no GET /key)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "✗ ollama-cloud OLLAMA_API_KEY {}: rejected (HTTP 401): replace or remove the key",
            fingerprint_str("wrong")
        )),
        "{text}"
    );
    assert_eq!(summary.failed, 1, "{text}");
}

#[tokio::test]
async fn context_too_long_is_refitted_not_resent_unchanged() {
    let clock = Arc::new(ManualClock::new(NOON));
    let sim = SimOpenRouter::start(SimOpenRouterOptions {
        keys: vec![SimKey::new("k1", "a1", 50)],
        models: vec![SimModel::free(FREE_MODEL, 163_840)],
        max_prompt_chars: Some(3_000),
        clock: clock.clone() as SharedClock,
        ..SimOpenRouterOptions::default()
    })
    .await
    .unwrap();
    let mut config = Config::default();
    config.openrouter.base_url = sim.base_url();
    config.openrouter.free_models = vec![FREE_MODEL.into()];
    let secrets = Secrets::load(&Env::from_pairs([("OPENROUTER_API_KEY_1", "k1")])).unwrap();
    let router = new_router(&config, &secrets, &Arc::new(MemoryStore::new()), &clock).await;
    let mut req = request("long");
    req.history = (0..40)
        .map(|i| {
            let role = if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            ChatMessage::new(role, format!("turn {i}: {}", "words ".repeat(30)))
        })
        .collect();
    let events: Vec<_> = router.complete(req).collect().await;
    assert_eq!(answered(&events).0, "free");
    let statuses: Vec<u16> = sim
        .requests()
        .iter()
        .filter(|r| r.is_chat())
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses.first(), Some(&400));
    assert_eq!(statuses.last(), Some(&200));
    assert!(
        statuses.len() <= 4,
        "halving converges quickly: {statuses:?}"
    );
    assert!(sim.unexpected().is_empty());
}

#[tokio::test]
async fn restart_over_a_real_sled_directory_keeps_quota_and_cooldowns() {
    let rig = rig(&["a1", "a2", "a3"], 2, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let open =
        || -> Arc<dyn Store> { Arc::new(SledStore::open(dir.path(), 8, NOON).unwrap().store) };
    let router_over = |store: Arc<dyn Store>| {
        FreeFirstRouter::from_config(
            &rig.config,
            &rig.secrets,
            store,
            rig.clock.clone() as SharedClock,
        )
        .unwrap()
    };
    let store = open();
    let router = router_over(store.clone());
    router.refresh_quotas().await;
    spend_until_one_is_exhausted_and_one_cools_down(&rig, &router).await;
    // The process ends: the store is dropped (its lock released) before the directory is reopened.
    drop(router);
    drop(store);
    let store = open();
    let again = router_over(store.clone());
    assert_eq!(
        again.status().tiers[0].accounts[2].requests_left_today,
        Some(1)
    );
    assert_the_restarted_router_kept_the_state(&rig, &again).await;
}

#[tokio::test]
async fn an_older_key_answer_infers_the_daily_limit_from_the_tier() {
    let rig = rig_with(
        &["a1", "a2"],
        50,
        |o| {
            o.key_info_legacy = true;
            o.keys[1].daily_free_quota = 1000;
        },
        |_| {},
    )
    .await;
    let accounts = &rig.router.status().tiers[0].accounts;
    assert_eq!(
        (accounts[0].daily_limit, accounts[0].requests_left_today),
        (Some(50), Some(50)),
        "is_free_tier: true"
    );
    assert_eq!(
        (accounts[1].daily_limit, accounts[1].requests_left_today),
        (Some(1000), Some(1000)),
        "is_free_tier: false"
    );
}

#[tokio::test]
async fn a_429_with_only_a_reset_time_cools_down_until_that_time() {
    let rig = rig(&["a1", "a2"], 50, |_| {}).await;
    rig.openrouter
        .push_key_fault("k1", Fault::RateLimitResetOnly { reset_in_secs: 45 });
    assert_eq!(answered(&ask(&rig.router, "c").await).1, fp("k2"));
    assert_eq!(
        rig.router.status().tiers[0].accounts[0].state,
        "cooling down until 12:00:45 UTC"
    );
    rig.clock.advance(44_999);
    assert_eq!(answered(&ask(&rig.router, "c").await).1, fp("k2"));
    assert_eq!(free_calls(&rig, "k1"), 1, "still cooling down");
    rig.clock.advance(1);
    assert_eq!(answered(&ask(&rig.router, "c").await).1, fp("k1"));
}

#[tokio::test]
async fn in_stream_error_codes_cool_down_or_take_out_the_account() {
    let rig = rig(&["a1", "a2"], 50, |_| {}).await;
    rig.openrouter.push_key_fault(
        "k1",
        Fault::MidStreamStatus {
            after: 0,
            code: 429,
            message: "Rate limit exceeded: free-models-per-min.".into(),
        },
    );
    // Before the first token: the next account at once, and this one cools down.
    assert_eq!(answered(&ask(&rig.router, "c").await).1, fp("k2"));
    assert!(
        rig.router.status().tiers[0].accounts[0]
            .state
            .starts_with("cooling down until"),
        "{:?}",
        rig.router.status()
    );
    // After the first token: the reply is cut, and the account is still taken out (402).
    rig.openrouter.push_key_fault(
        "k2",
        Fault::MidStreamStatus {
            after: 2,
            code: 402,
            message: "Insufficient credits".into(),
        },
    );
    let events = ask(&rig.router, "d").await;
    assert!(
        matches!(events.last(), Some(ReplyEvent::Failed(f)) if f.kind == FailureKind::Interrupted),
        "{events:?}"
    );
    assert!(rig.router.status().tiers[0].accounts[1]
        .state
        .starts_with("out of credits (402)"));
    assert_eq!(free_calls(&rig, "k2"), 2);
}

#[tokio::test]
async fn a_moderation_403_declines_the_request_not_the_key() {
    let rig = rig(&["a1"], 50, |c| {
        c.openrouter.free_models = vec![FREE_MODEL.into(), "openrouter/free".into()];
    })
    .await;
    rig.openrouter.push_key_fault("k1", Fault::Moderated);
    let events = ask(&rig.router, "c").await;
    assert_eq!(
        answered(&events),
        ("free".into(), fp("k1")),
        "the next model"
    );
    assert_eq!(rig.router.status().tiers[0].accounts[0].state, "ready");

    // Every model declines, free and paid: a friendly reply, and every key stays in.
    rig.openrouter.set_fault(Some(Fault::Moderated));
    rig.ollama.set_fault(Some(Fault::Moderated));
    let events = ask(&rig.router, "d").await;
    match events.last() {
        Some(ReplyEvent::Failed(f)) => {
            assert_eq!(f.kind, FailureKind::Refused);
            assert!(f.message.starts_with("The provider declined this message"));
        }
        other => panic!("{other:?}"),
    }
    let status = rig.router.status();
    assert!(status
        .tiers
        .iter()
        .flat_map(|t| &t.accounts)
        .all(|a| a.state == "ready"));
    rig.openrouter.set_fault(None);
    rig.ollama.set_fault(None);
    assert_eq!(
        answered(&ask(&rig.router, "e").await),
        ("free".into(), fp("k1"))
    );
}

#[tokio::test]
async fn openrouter_free_answers_stick_to_the_model_it_picked() {
    let rig = rig(&["a1"], 50, |c| {
        c.openrouter.free_models = vec!["openrouter/free".into()];
    })
    .await;
    answered(&ask(&rig.router, "c").await);
    answered(&ask(&rig.router, "c").await);
    let models: Vec<_> = rig
        .openrouter
        .requests()
        .into_iter()
        .filter(switchboard::sim::SimRequest::is_chat)
        .filter_map(|r| r.model)
        .collect();
    assert_eq!(models, ["openrouter/free", PICKED_BY_FREE_ROUTER]);
}

#[tokio::test]
async fn paid_off_and_free_only_never_send_a_paid_request() {
    for free_only in [false, true] {
        let rig = rig(&["a1"], 1, |c| {
            if free_only {
                c.router.free_only = true;
            } else {
                c.router.paid_enabled = false;
            }
        })
        .await;
        assert_eq!(answered(&ask(&rig.router, "c").await).0, "free");
        let events = ask(&rig.router, "c").await;
        match events.last() {
            Some(ReplyEvent::Failed(f)) => {
                assert_eq!(f.kind, FailureKind::Unavailable);
                assert_eq!(
                    f.message,
                    "The free quota is used up until 00:00 UTC and the paid models are switched off. Please try again after 00:00 UTC."
                );
            }
            other => panic!("free_only {free_only}: {other:?}"),
        }
        assert_eq!(rig.ollama.chat_requests(), 0, "free_only {free_only}");
        assert!(!rig.router.status().tiers[1].enabled);
    }
}

#[tokio::test]
async fn a_5xx_on_one_free_key_is_answered_by_the_other_free_key_not_by_paid() {
    let rig = rig(&["a1", "a2"], 50, |_| {}).await;
    rig.openrouter.push_key_fault("k1", Fault::ServerError);
    let events = ask(&rig.router, "c").await;
    assert_eq!(answered(&events), ("free".into(), fp("k2")));
    assert_eq!((free_calls(&rig, "k1"), free_calls(&rig, "k2")), (1, 1));
    assert_eq!(rig.ollama.chat_requests(), 0, "no paid request");
    // k1 is not held for a 5xx: the next turn starts on it again.
    assert_eq!(answered(&ask(&rig.router, "c").await).1, fp("k1"));
    assert!(rig.openrouter.unexpected().is_empty());
}

#[tokio::test]
async fn a_stall_on_one_free_key_is_answered_by_the_other_free_key_not_by_paid() {
    // A one-second idle timeout keeps the stall short (the simulator holds the stream open).
    let rig = rig(&["a1", "a2"], 50, |c| c.router.idle_timeout_secs = 1).await;
    rig.openrouter.push_key_fault("k1", Fault::StallAfter(0));
    let events = ask(&rig.router, "c").await;
    assert_eq!(answered(&events), ("free".into(), fp("k2")));
    assert_eq!((free_calls(&rig, "k1"), free_calls(&rig, "k2")), (1, 1));
    assert_eq!(rig.ollama.chat_requests(), 0, "no paid request");
}

#[tokio::test]
async fn a_free_account_running_out_is_told_once_per_conversation() {
    let rig = rig(&["a1", "a2"], 2, |_| {}).await;
    let notices = |events: &[ReplyEvent]| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                ReplyEvent::Notice(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    };
    for _ in 0..2 {
        let events = ask(&rig.router, "c1").await;
        assert_eq!(answered(&events).1, fp("k1"));
        assert!(notices(&events).is_empty());
    }
    let events = ask(&rig.router, "c1").await;
    assert_eq!(answered(&events), ("free".into(), fp("k2")));
    assert_eq!(
        events[0],
        ReplyEvent::Notice(
            "key 1 is out of free requests until 00:00 UTC — moving to key 2.".into()
        )
    );
    assert!(matches!(&events[1], ReplyEvent::Started(_)));
    let events = ask(&rig.router, "c1").await;
    assert_eq!(answered(&events).1, fp("k2"));
    assert!(notices(&events).is_empty(), "once per conversation");
    assert_eq!(
        free_calls(&rig, "k1"),
        2,
        "nothing sent to the spent account"
    );
}

/// A provider that streams `data:` lines forever without the blank line that ends the event (issue 11:
/// memory grew to 277 MB). After the first words the turn ends with the interrupted note; the client
/// stops reading once the event passes its cap, so the endless body is abandoned after about the cap
/// (plus what the sockets buffer), not read forever. Before the first word, the same fault only costs
/// that attempt: the next candidate answers.
#[tokio::test]
async fn an_endless_sse_event_is_cut_at_its_cap_with_the_interrupted_note() {
    use switchboard::providers::sse::MAX_EVENT_BYTES;
    /// Loopback socket buffers and the simulator's channel hold a few MiB at most.
    const IN_FLIGHT_SLACK: u64 = 16 * 1024 * 1024;
    let rig = rig(&["a1"], 50, |_| {}).await;
    rig.openrouter.push_fault(Fault::Unterminated { after: 2 });
    let events = ask(&rig.router, "c").await;
    let deltas = events
        .iter()
        .filter(|e| matches!(e, ReplyEvent::Delta(_)))
        .count();
    assert_eq!(deltas, 2, "{events:?}");
    match events.last() {
        Some(ReplyEvent::Failed(f)) => assert_eq!(f.kind, FailureKind::Interrupted),
        other => panic!("expected the interrupted note, got {other:?}"),
    }
    let real_deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while rig.openrouter.endless().open > 0 {
        assert!(
            std::time::Instant::now() < real_deadline,
            "the client never hung up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let stats = rig.openrouter.endless();
    assert_eq!(stats.started, 1);
    assert!(stats.bytes_sent >= MAX_EVENT_BYTES as u64, "{stats:?}");
    assert!(
        stats.bytes_sent <= MAX_EVENT_BYTES as u64 + IN_FLIGHT_SLACK,
        "read on past the cap: {stats:?}"
    );

    rig.openrouter.push_fault(Fault::Unterminated { after: 0 });
    let events = ask(&rig.router, "c").await;
    assert!(
        matches!(events.last(), Some(ReplyEvent::Finished(_))),
        "{events:?}"
    );
    assert_eq!(rig.openrouter.endless().started, 2);
    assert!(rig.openrouter.unexpected().is_empty());
}

// ---- The local API's requests: selectors, limits with a wait, capabilities, embeddings ----

fn api_request(conversation: &str, selector: ModelSelector) -> CompletionRequest {
    let mut req = request(conversation);
    req.user = UserRef::new(Platform::Api, "client");
    req.chat = ChatRef::new(Platform::Api, "client");
    req.selector = selector;
    req.sticky = false;
    req
}

#[tokio::test]
async fn free_only_never_reaches_the_paid_tier_and_says_when_free_is_back() {
    let spent = rig(&["a1"], 1, |_| {}).await;
    let free = || api_request("api", ModelSelector::FreeOnly);
    assert_eq!(
        answered(&spent.router.complete(free()).collect::<Vec<_>>().await).0,
        "free"
    );
    let events: Vec<ReplyEvent> = spent.router.complete(free()).collect().await;
    match events.last() {
        Some(ReplyEvent::Failed(f)) => {
            assert_eq!(f.kind, FailureKind::RateLimited);
            assert_eq!(
                f.retry_after,
                Some(std::time::Duration::from_millis((DAY_MS / 2) as u64)),
                "until 00:00 UTC"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        spent.ollama.chat_requests(),
        0,
        "the paid simulator never asked"
    );
    // `auto` with the paid tier switched off is the same limit; with paid on, paid answers.
    let mut auto = api_request("api", ModelSelector::Policy);
    auto.paid_allowed = false;
    let events: Vec<ReplyEvent> = spent.router.complete(auto).collect().await;
    assert!(
        matches!(events.last(), Some(ReplyEvent::Failed(f)) if f.kind == FailureKind::RateLimited && f.retry_after.is_some())
    );
    let paid = api_request("api", ModelSelector::Policy);
    assert_eq!(
        answered(&spent.router.complete(paid).collect::<Vec<_>>().await).0,
        "paid"
    );
    // A per-minute limit's wait is the window's end, not midnight.
    let limited = rig(&["a1"], 50, |c: &mut Config| c.ollama.models.clear()).await;
    limited.openrouter.push_fault(Fault::RateLimitPerMinute {
        retry_after_secs: 30,
    });
    let events: Vec<ReplyEvent> = limited
        .router
        .complete(api_request("api", ModelSelector::FreeOnly))
        .collect()
        .await;
    match events.last() {
        Some(ReplyEvent::Failed(f)) => {
            assert_eq!(f.kind, FailureKind::RateLimited);
            assert_eq!(f.retry_after, Some(std::time::Duration::from_secs(30)));
        }
        other => panic!("{other:?}"),
    }
    assert!(limited.openrouter.unexpected().is_empty());
}

#[tokio::test]
async fn exact_models_and_capabilities_with_the_simulators() {
    let rig = rig_with(
        &["a1"],
        50,
        |sim| {
            sim.models = vec![
                SimModel::free(FREE_MODEL, 163_840).with_tools(),
                SimModel::free(PICKED_BY_FREE_ROUTER, 32_768),
            ];
        },
        |c| c.ollama.models = vec![PAID_MODEL.into(), "kimi-k2.5".into()],
    )
    .await;
    // Learned from the simulator's GET /models at the first refresh.
    let models = rig.router.models();
    let free = models.iter().find(|m| m.name == FREE_MODEL).unwrap();
    assert!(free.capabilities.tools && !free.capabilities.vision);
    assert_eq!(free.context_window, 163_840);
    // Tools: the free model takes them and answers with a streamed tool call.
    let mut tools = api_request("api", ModelSelector::Policy);
    tools.prompt = ChatMessage::new(Role::User, "call get_weather {\"city\":\"Paris\"}");
    tools.params.tools = vec![serde_json::json!({"type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object"}}})];
    let events: Vec<ReplyEvent> = rig.router.complete(tools).collect().await;
    let arguments: String = events
        .iter()
        .filter_map(|e| match e {
            ReplyEvent::ToolCall(c) => Some(c.arguments.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(arguments, "{\"city\":\"Paris\"}");
    match events.last() {
        Some(ReplyEvent::Finished(c)) => {
            assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
            assert_eq!(c.source.as_ref().unwrap().tier.0, "free");
        }
        other => panic!("{other:?}"),
    }
    // An image: only kimi-k2.5 takes one.
    let mut image = api_request("api", ModelSelector::Policy);
    image
        .prompt
        .images
        .push(switchboard::generation::ImageData {
            media_type: "image/png".into(),
            base64: "iVBORw0KGgo=".into(),
        });
    let events: Vec<ReplyEvent> = rig.router.complete(image).collect().await;
    match events.last() {
        Some(ReplyEvent::Finished(c)) => assert_eq!(c.source.as_ref().unwrap().model, "kimi-k2.5"),
        other => panic!("{other:?}"),
    }
    let chat = rig
        .ollama
        .requests()
        .into_iter()
        .rev()
        .find(switchboard::sim::SimRequest::is_chat)
        .unwrap();
    assert_eq!(chat.images.len(), 1);
    assert_eq!(chat.images[0].bytes, 8);
    // Exact: `openrouter/free` is a model; an exact paid model sends nothing to the free tier.
    let before = rig.openrouter.chat_requests();
    let exact = api_request("api", ModelSelector::Exact(PAID_MODEL.into()));
    let events: Vec<ReplyEvent> = rig.router.complete(exact).collect().await;
    assert_eq!(answered(&events).0, "paid");
    assert_eq!(rig.openrouter.chat_requests(), before);
    assert_eq!(
        rig.router.resolve_model("openrouter/free"),
        Some(ModelSelector::Exact("openrouter/free".into()))
    );
    let exact = api_request("api", ModelSelector::Exact("openrouter/free".into()));
    let events: Vec<ReplyEvent> = rig.router.complete(exact).collect().await;
    match events.last() {
        Some(ReplyEvent::Finished(c)) => {
            assert_eq!(c.source.as_ref().unwrap().model, PICKED_BY_FREE_ROUTER);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        rig.openrouter.unexpected().is_empty(),
        "{:?}",
        rig.openrouter.unexpected()
    );
    assert!(
        rig.ollama.unexpected().is_empty(),
        "{:?}",
        rig.ollama.unexpected()
    );
}

#[tokio::test]
async fn embeddings_through_the_router_and_both_simulators() {
    use switchboard::router::EmbedRequest;
    let rig = rig(&["a1"], 50, |c| {
        c.openrouter.embedding_models = vec!["openai/text-embedding-3-small".into()];
    })
    .await;
    let names: Vec<String> = rig
        .router
        .embedding_models()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(
        names,
        ["openai/text-embedding-3-small", "nomic-embed-text-v2-moe"]
    );
    let embed = |model: &str| EmbedRequest {
        user: UserRef::new(Platform::Api, "client"),
        model: model.into(),
        inputs: vec!["hello world".into(), "bye".into()],
    };
    let free = rig
        .router
        .embed(embed("openai/text-embedding-3-small"))
        .await
        .unwrap();
    assert_eq!(free.source.tier.0, "free");
    assert_eq!(free.source.key_fingerprint, fp("k1"));
    assert_eq!(free.vectors.len(), 2);
    assert_eq!(free.prompt_tokens, 3);
    let paid = rig
        .router
        .embed(embed("nomic-embed-text-v2-moe"))
        .await
        .unwrap();
    assert_eq!(paid.source.tier.0, "paid");
    assert_eq!(paid.source.model, "nomic-embed-text-v2-moe");
    assert_eq!(
        paid.vectors, free.vectors,
        "the simulators' vectors depend on the text only"
    );
    let err = rig.router.embed(embed(PAID_MODEL)).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::BadRequest);
    let err = rig.router.embed(embed("no-such-model")).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::UnknownModel);
    // Embeddings count like chat requests: usage is recorded per user.
    let status = rig.router.status();
    assert!(
        status.tiers.iter().all(|t| t.requests_today >= 1),
        "{status:?}"
    );
    assert!(rig.openrouter.unexpected().is_empty() && rig.ollama.unexpected().is_empty());
}
