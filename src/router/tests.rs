//! Unit tests of the free-first policy over an in-test fake [`ChatProvider`] and a manual clock. The
//! integration tests in `tests/router.rs` run the same router against the HTTP simulators.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use secrecy::{ExposeSecret, SecretString};

use super::free_first::{FreeFirstRouter, ProviderSet};
use super::{CompletionRequest, LlmRouter};
use crate::clock::{Clock, DAY_MS};
use crate::config::{Config, Secrets};
use crate::domain::{
    ChatMessage, ChatRef, ConversationKey, FailureKind, Platform, ReplyEvent, Role, Usage, UserRef,
};
use crate::providers::{
    ChatProvider, ProviderError, ProviderEvent, ProviderRequest, ProviderStream,
};
use crate::secrets::NamedSecret;
use crate::store::memory::MemoryStore;
use crate::store::{Durable, HistoryStore, StateStore, Store};

const NOON: i64 = 20_000 * DAY_MS + DAY_MS / 2;

struct ManualClock(AtomicI64);
impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
impl ManualClock {
    fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

/// What the fake does with one call.
#[derive(Clone)]
enum Act {
    /// Answer with these deltas (model reported as `real`).
    Answer(&'static str),
    /// Fail at the head.
    Fail(ProviderError),
    /// Send one delta, then fail.
    CutAfterOne,
    /// Answer, reporting this model as the one that answered.
    AnswerAs(&'static str),
    /// Wait until the gate opens, then do the inner act (two turns in flight at once).
    Gated(Arc<tokio::sync::Notify>, Box<Act>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Call {
    key: String,
    model: String,
    messages: usize,
}

#[derive(Default)]
struct Fake {
    name: String,
    /// Scripted acts per key value (then per model), else answer.
    by_key: Mutex<HashMap<String, VecDeque<Act>>>,
    by_model: Mutex<HashMap<String, VecDeque<Act>>>,
    /// Keys that always fail with this error.
    always: Mutex<HashMap<String, ProviderError>>,
    calls: Mutex<Vec<Call>>,
}

impl Fake {
    fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            ..Self::default()
        })
    }
    fn on_key(&self, key: &str, act: Act) {
        self.by_key
            .lock()
            .unwrap()
            .entry(key.into())
            .or_default()
            .push_back(act);
    }
    fn on_model(&self, model: &str, act: Act) {
        self.by_model
            .lock()
            .unwrap()
            .entry(model.into())
            .or_default()
            .push_back(act);
    }
    fn always(&self, key: &str, e: ProviderError) {
        self.always.lock().unwrap().insert(key.into(), e);
    }
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    fn keys(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.key).collect()
    }
}

impl ChatProvider for Fake {
    fn name(&self) -> &str {
        &self.name
    }
    fn chat_stream(
        &self,
        key: Option<&SecretString>,
        request: ProviderRequest,
    ) -> BoxFuture<'static, Result<ProviderStream, ProviderError>> {
        let key = key
            .map(|k| k.expose_secret().to_owned())
            .unwrap_or_default();
        self.calls.lock().unwrap().push(Call {
            key: key.clone(),
            model: request.model.clone(),
            messages: request.messages.len(),
        });
        let act = self
            .always
            .lock()
            .unwrap()
            .get(&key)
            .cloned()
            .map(Act::Fail)
            .or_else(|| {
                self.by_key
                    .lock()
                    .unwrap()
                    .get_mut(&key)
                    .and_then(VecDeque::pop_front)
            })
            .or_else(|| {
                self.by_model
                    .lock()
                    .unwrap()
                    .get_mut(&request.model)
                    .and_then(VecDeque::pop_front)
            })
            .unwrap_or(Act::Answer("hello"));
        let model = request.model;
        Box::pin(async move {
            let act = match act {
                Act::Gated(gate, inner) => {
                    gate.notified().await;
                    *inner
                }
                other => other,
            };
            let done = ProviderEvent::Done {
                usage: Usage {
                    prompt_tokens: 10,
                    completion_tokens: 2,
                },
                finish_reason: Some("stop".into()),
            };
            match act {
                Act::Fail(e) => Err(e),
                Act::Answer(text) => Ok(stream::iter(vec![
                    Ok(ProviderEvent::Model(format!("{model}@real"))),
                    Ok(ProviderEvent::Delta(text.into())),
                    Ok(done),
                ])
                .boxed()),
                Act::CutAfterOne => Ok(stream::iter(vec![
                    Ok(ProviderEvent::Delta("partial".into())),
                    Err(ProviderError::Stalled),
                ])
                .boxed()),
                Act::AnswerAs(real) => Ok(stream::iter(vec![
                    Ok(ProviderEvent::Model(real.into())),
                    Ok(ProviderEvent::Delta("hello".into())),
                    Ok(done),
                ])
                .boxed()),
                Act::Gated(..) => unreachable!("gates do not nest"),
            }
        })
    }
}

struct Rig {
    router: Arc<FreeFirstRouter>,
    free: Arc<Fake>,
    paid: Arc<Fake>,
    clock: Arc<ManualClock>,
    store: Arc<MemoryStore>,
    config: Config,
    secrets: Secrets,
}

fn secret(name: &str, value: &str) -> NamedSecret {
    NamedSecret {
        name: name.into(),
        value: SecretString::from(value),
    }
}

fn rig_with(config: Config, or_keys: &[&str], ollama_keys: &[&str]) -> Rig {
    let secrets = Secrets {
        openrouter_keys: or_keys
            .iter()
            .enumerate()
            .map(|(i, k)| secret(&format!("OPENROUTER_API_KEY_{}", i + 1), k))
            .collect(),
        ollama_keys: ollama_keys
            .iter()
            .enumerate()
            .map(|(i, k)| secret(&format!("OLLAMA_API_KEY_{}", i + 1), k))
            .collect(),
        ..Secrets::default()
    };
    let free = Fake::new("openrouter");
    let paid = Fake::new("ollama-cloud");
    let clock = Arc::new(ManualClock(AtomicI64::new(NOON)));
    let store = Arc::new(MemoryStore::new());
    let router = build(&config, &secrets, &free, &paid, &store, &clock);
    Rig {
        router,
        free,
        paid,
        clock,
        store,
        config,
        secrets,
    }
}

fn build(
    config: &Config,
    secrets: &Secrets,
    free: &Arc<Fake>,
    paid: &Arc<Fake>,
    store: &Arc<MemoryStore>,
    clock: &Arc<ManualClock>,
) -> Arc<FreeFirstRouter> {
    let providers = ProviderSet {
        openrouter: Some(free.clone()),
        ollama: Some(paid.clone()),
        ..ProviderSet::default()
    };
    FreeFirstRouter::with_providers(
        config,
        secrets,
        providers,
        store.clone() as Arc<dyn Store>,
        clock.clone(),
    )
    .unwrap()
}

fn config(daily: u32) -> Config {
    let mut c = Config::default();
    c.openrouter.free_models = vec!["a:free".into(), "openrouter/free".into()];
    c.openrouter.free_requests_per_day = daily;
    c.ollama.models = vec!["gpt-oss:120b".into(), "kimi-k2.5".into()];
    c
}

fn request(conv: &str, text: &str) -> CompletionRequest {
    CompletionRequest {
        conversation: ConversationKey(conv.into()),
        user: UserRef::new(Platform::Terminal, "u1"),
        chat: ChatRef::new(Platform::Terminal, "c1"),
        system_prompt: "sys".into(),
        history: Vec::new(),
        prompt: ChatMessage::new(Role::User, text),
        model: None,
        paid_allowed: true,
        max_tokens: None,
    }
}

async fn ask(router: &FreeFirstRouter, req: CompletionRequest) -> Vec<ReplyEvent> {
    router.complete(req).collect().await
}

fn started(events: &[ReplyEvent]) -> (String, String) {
    events
        .iter()
        .find_map(|e| match e {
            ReplyEvent::Started(s) => Some((s.tier.0.clone(), s.model.clone())),
            _ => None,
        })
        .expect("a Started event")
}

fn finished(events: &[ReplyEvent]) -> bool {
    matches!(events.last(), Some(ReplyEvent::Finished(_)))
}

#[tokio::test]
async fn walks_accounts_then_paid_then_free_again_after_midnight() {
    let rig = rig_with(config(2), &["k1", "k2", "k3"], &["p1"]);
    for _ in 0..6 {
        let ev = ask(&rig.router, request("c", "hi")).await;
        assert!(finished(&ev));
        assert_eq!(started(&ev).0, "free");
    }
    assert_eq!(rig.free.keys(), ["k1", "k1", "k2", "k2", "k3", "k3"]);
    let ev = ask(&rig.router, request("c", "hi")).await;
    assert_eq!(started(&ev), ("paid".into(), "gpt-oss:120b@real".into()));
    assert_eq!(
        rig.free.calls().len(),
        6,
        "no request to an exhausted account"
    );
    let status = rig.router.status();
    assert_eq!(
        status.tiers[0].accounts[0].state,
        "exhausted until 00:00 UTC"
    );
    assert_eq!(status.tiers[0].accounts[0].requests_left_today, Some(0));
    assert_eq!(status.tiers[1].requests_today, 1);
    rig.clock.advance(DAY_MS / 2);
    let ev = ask(&rig.router, request("c", "hi")).await;
    assert_eq!(started(&ev).0, "free");
    assert_eq!(rig.free.keys().last().unwrap(), "k1");
}

#[tokio::test]
async fn per_minute_429_holds_the_account_exactly_retry_after() {
    let rig = rig_with(config(0), &["k1", "k2"], &[]);
    rig.free.on_key(
        "k1",
        Act::Fail(ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
            reset_at_ms: None,
            daily: false,
        }),
    );
    let ev = ask(&rig.router, request("c", "hi")).await;
    assert!(finished(&ev));
    assert_eq!(rig.free.keys(), ["k1", "k2"], "next account at once");
    assert!(rig.router.status().tiers[0].accounts[0]
        .state
        .starts_with("cooling down until 12:00:30"));
    rig.clock.advance(29_999);
    ask(&rig.router, request("c", "hi")).await;
    assert_eq!(rig.free.keys().last().unwrap(), "k2");
    rig.clock.advance(1);
    ask(&rig.router, request("c", "hi")).await;
    assert_eq!(rig.free.keys().last().unwrap(), "k1");
}

#[tokio::test]
async fn per_minute_limit_is_enforced_locally() {
    let mut c = config(0);
    c.openrouter.requests_per_minute = 3;
    let rig = rig_with(c, &["k1", "k2"], &[]);
    for _ in 0..5 {
        ask(&rig.router, request("c", "hi")).await;
    }
    assert_eq!(rig.free.keys(), ["k1", "k1", "k1", "k2", "k2"]);
}

#[tokio::test]
async fn payment_required_and_unauthorized_take_accounts_out() {
    let rig = rig_with(config(0), &["k1", "k2", "k3"], &[]);
    rig.free
        .on_key("k1", Act::Fail(ProviderError::PaymentRequired));
    rig.free
        .always("k2", ProviderError::Unauthorized { status: 401 });
    let ev = ask(&rig.router, request("c", "hi")).await;
    assert!(finished(&ev));
    assert_eq!(rig.free.keys(), ["k1", "k2", "k3"]);
    for _ in 0..3 {
        ask(&rig.router, request("c", "hi")).await;
    }
    assert_eq!(rig.free.keys()[3..], ["k3", "k3", "k3"]);
    let st = rig.router.status();
    assert!(st.tiers[0].accounts[0]
        .state
        .starts_with("out of credits (402) until 18:00:00"));
    assert_eq!(
        st.tiers[0].accounts[1].state,
        "disabled: key rejected (401)"
    );
    // 402 lasts the configured hours; 401 lasts until a reload.
    rig.clock.advance(6 * 3_600_000);
    ask(&rig.router, request("c", "hi")).await;
    assert_eq!(rig.free.keys().last().unwrap(), "k1");
    rig.router.reload(&rig.config).unwrap();
    assert_eq!(rig.router.status().tiers[0].accounts[1].state, "ready");
}

#[tokio::test]
async fn two_keys_on_one_account_share_its_quota() {
    let mut c = config(3);
    c.openrouter
        .accounts
        .insert("OPENROUTER_API_KEY_1".into(), "team".into());
    c.openrouter
        .accounts
        .insert("OPENROUTER_API_KEY_2".into(), "team".into());
    let rig = rig_with(c, &["k1", "k2", "k3"], &[]);
    for _ in 0..5 {
        ask(&rig.router, request("c", "hi")).await;
    }
    assert_eq!(rig.free.keys(), ["k1", "k2", "k1", "k3", "k3"]);
    let st = rig.router.status();
    assert_eq!(st.tiers[0].accounts.len(), 2);
    assert_eq!(st.tiers[0].accounts[0].keys.len(), 2);
}

#[tokio::test]
async fn failure_before_first_token_falls_back_and_after_it_interrupts() {
    let rig = rig_with(config(0), &["k1"], &["p1"]);
    rig.free
        .on_model("a:free", Act::Fail(ProviderError::Upstream { status: 502 }));
    let ev = ask(&rig.router, request("c", "hi")).await;
    assert!(finished(&ev));
    assert_eq!(started(&ev).1, "openrouter/free@real");
    let models: Vec<_> = rig.free.calls().into_iter().map(|c| c.model).collect();
    assert_eq!(models, ["a:free", "openrouter/free"]);
    let starts = ev
        .iter()
        .filter(|e| matches!(e, ReplyEvent::Started(_)))
        .count();
    assert_eq!(starts, 1);

    rig.free.on_model("openrouter/free", Act::CutAfterOne);
    let before = rig.free.calls().len() + rig.paid.calls().len();
    let ev = ask(&rig.router, request("c", "hi")).await;
    assert!(matches!(ev[ev.len() - 2], ReplyEvent::Delta(_)));
    match ev.last() {
        Some(ReplyEvent::Failed(f)) => {
            assert_eq!(f.kind, FailureKind::Interrupted);
            assert!(!f.message.contains("stalled"), "{}", f.message);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        rig.free.calls().len() + rig.paid.calls().len(),
        before + 1,
        "no fallback after a delta"
    );
}

#[tokio::test]
async fn restart_keeps_quota_and_cooldown_state() {
    let rig = rig_with(config(2), &["k1", "k2", "k3"], &[]);
    rig.free.on_key(
        "k2",
        Act::Fail(ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(120)),
            reset_at_ms: None,
            daily: false,
        }),
    );
    for _ in 0..3 {
        ask(&rig.router, request("c", "hi")).await;
    }
    assert_eq!(rig.free.keys(), ["k1", "k1", "k2", "k3"]);
    // A new router over the same store, with fresh fakes that record what the new process sends.
    let free2 = Fake::new("openrouter");
    let paid2 = Fake::new("ollama-cloud");
    let again = build(
        &rig.config,
        &rig.secrets,
        &free2,
        &paid2,
        &rig.store,
        &rig.clock,
    );
    let st = again.status();
    assert_eq!(st.tiers[0].accounts[0].state, "exhausted until 00:00 UTC");
    assert_eq!(
        st.tiers[0].accounts[1].state,
        "cooling down until 12:02:00 UTC"
    );
    assert_eq!(st.tiers[0].accounts[2].requests_left_today, Some(1));
    assert!(finished(&ask(&again, request("c", "hi")).await));
    let ev = ask(&again, request("c", "hi")).await;
    assert!(matches!(ev.last(), Some(ReplyEvent::Failed(f)) if f.kind == FailureKind::Unavailable));
    assert_eq!(
        free2.keys(),
        ["k3"],
        "nothing sent to exhausted or cooling accounts"
    );
    rig.clock.advance(120_000);
    assert!(finished(&ask(&again, request("c", "hi")).await));
    assert_eq!(free2.keys(), ["k3", "k2"]);
}

#[tokio::test]
async fn paid_notice_once_per_conversation_with_the_honest_reason() {
    let rig = rig_with(config(1), &["k1"], &["p1", "p2"]);
    ask(&rig.router, request("c", "hi")).await;
    let ev = ask(&rig.router, request("c", "hi")).await;
    assert_eq!(
        ev[0],
        ReplyEvent::Notice(
            "Free quota is used up until 00:00 UTC — answering with gpt-oss:120b@real on Ollama Cloud."
                .into()
        )
    );
    assert!(matches!(ev[1], ReplyEvent::Started(_)));
    let ev = ask(&rig.router, request("c", "hi")).await;
    assert!(!ev.iter().any(|e| matches!(e, ReplyEvent::Notice(_))));
    let ev = ask(&rig.router, request("other", "hi")).await;
    assert!(matches!(ev[0], ReplyEvent::Notice(_)));
    // Paid keys are load-balanced.
    assert_eq!(rig.paid.keys().iter().filter(|k| *k == "p1").count(), 2);
    assert_eq!(rig.paid.keys().iter().filter(|k| *k == "p2").count(), 1);
}

#[tokio::test]
async fn paid_switches_and_caps_are_obeyed() {
    let mut c = config(1);
    c.router.paid_daily_cap = 1;
    let rig = rig_with(c, &["k1"], &["p1"]);
    ask(&rig.router, request("c", "hi")).await;
    let mut req = request("c", "hi");
    req.paid_allowed = false;
    let ev = ask(&rig.router, req).await;
    match ev.last() {
        Some(ReplyEvent::Failed(f)) => {
            assert_eq!(f.kind, FailureKind::Unavailable);
            assert_eq!(
                f.message,
                "The free quota is used up until 00:00 UTC and you reached today's limit for the paid models. Please try again after 00:00 UTC."
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(rig.paid.calls().is_empty());
    assert!(finished(&ask(&rig.router, request("c", "hi")).await));
    let ev = ask(&rig.router, request("c", "hi")).await;
    assert!(
        matches!(ev.last(), Some(ReplyEvent::Failed(f)) if f.message.contains("budget is spent"))
    );
    assert_eq!(rig.paid.calls().len(), 1);
    let mut c = config(1);
    c.router.free_only = true;
    rig.router.reload(&c).unwrap();
    assert!(!rig.router.status().tiers[1].enabled);
}

#[tokio::test]
async fn context_too_long_refits_never_resends_unchanged() {
    let rig = rig_with(config(0), &["k1"], &[]);
    rig.free
        .on_model("a:free", Act::Fail(ProviderError::ContextTooLong));
    let mut req = request("c", "hi");
    req.history = (0..10)
        .map(|i| {
            ChatMessage::new(
                if i % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                },
                "x".repeat(70),
            )
        })
        .collect();
    let ev = ask(&rig.router, req).await;
    assert!(finished(&ev));
    let calls = rig.free.calls();
    assert_eq!(calls[0].model, "a:free");
    assert_eq!(calls[1].model, "a:free");
    assert!(calls[1].messages < calls[0].messages, "{calls:?}");

    // When nothing is left to trim, the next model is tried.
    rig.free
        .on_model("a:free", Act::Fail(ProviderError::ContextTooLong));
    ask(&rig.router, request("d", "hi")).await;
    let models: Vec<_> = rig.free.calls()[2..]
        .iter()
        .map(|c| c.model.clone())
        .collect();
    assert_eq!(models, ["a:free", "openrouter/free"]);
}

#[tokio::test]
async fn missing_model_is_skipped_and_sticky_model_is_kept() {
    let rig = rig_with(config(0), &["k1"], &[]);
    rig.free
        .on_model("a:free", Act::Fail(ProviderError::Upstream { status: 503 }));
    ask(&rig.router, request("c", "hi")).await; // a:free fails → openrouter/free answers
    ask(&rig.router, request("c", "again")).await;
    let models: Vec<_> = rig.free.calls().into_iter().map(|c| c.model).collect();
    assert_eq!(
        models,
        ["a:free", "openrouter/free", "openrouter/free"],
        "sticky"
    );
    ask(&rig.router, request("new", "hi")).await;
    assert_eq!(rig.free.calls().last().unwrap().model, "a:free");

    rig.free
        .on_model("a:free", Act::Fail(ProviderError::ModelNotFound));
    ask(&rig.router, request("n2", "hi")).await;
    ask(&rig.router, request("n3", "hi")).await;
    let models: Vec<_> = rig.free.calls()[4..]
        .iter()
        .map(|c| c.model.clone())
        .collect();
    assert_eq!(models, ["a:free", "openrouter/free", "openrouter/free"]);
}

#[tokio::test]
async fn models_in_policy_order_and_usage_is_recorded() {
    let mut c = config(0);
    c.ollama.prices.insert(
        "gpt-oss:120b".into(),
        crate::config::providers::Price {
            prompt: 1_000_000.0,
            completion: 0.0,
        },
    );
    c.router.free_only = false;
    let rig = rig_with(c, &[], &["p1"]);
    let names: Vec<_> = rig.router.models().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["gpt-oss:120b", "kimi-k2.5"]);
    ask(&rig.router, request("c", "hi")).await;
    let day = crate::clock::utc_day(NOON);
    let usage = super::usage::day_usage(rig.store.as_ref(), day);
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].0, "ollama-cloud/gpt-oss:120b@real/terminal:u1");
    assert_eq!(usage[0].1.prompt_tokens, 10);
    let st = rig.router.status();
    assert_eq!(st.tiers[0].estimated_cost_usd, Some(10.0));
}

#[tokio::test]
async fn daily_429_keeps_the_account_out_until_midnight() {
    let rig = rig_with(config(0), &["k1", "k2"], &[]);
    rig.free.on_key(
        "k1",
        Act::Fail(ProviderError::RateLimited {
            retry_after: None,
            reset_at_ms: None,
            daily: true,
        }),
    );
    for _ in 0..3 {
        assert!(finished(&ask(&rig.router, request("c", "hi")).await));
    }
    assert_eq!(rig.free.keys(), ["k1", "k2", "k2", "k2"]);
    assert_eq!(
        rig.router.status().tiers[0].accounts[0].state,
        "exhausted until 00:00 UTC"
    );
    rig.clock.advance(DAY_MS / 2);
    ask(&rig.router, request("c", "hi")).await;
    assert_eq!(rig.free.keys().last().unwrap(), "k1");
}

#[tokio::test]
async fn per_minute_429_without_a_wait_backs_off_exponentially() {
    let rig = rig_with(config(0), &["k1", "k2"], &[]);
    let limited = || {
        Act::Fail(ProviderError::RateLimited {
            retry_after: None,
            reset_at_ms: None,
            daily: false,
        })
    };
    rig.free.on_key("k1", limited());
    ask(&rig.router, request("c", "hi")).await;
    // First backoff: 1–2 s (2 s base, equal jitter).
    rig.clock.advance(999);
    ask(&rig.router, request("c", "hi")).await;
    assert_eq!(rig.free.keys(), ["k1", "k2", "k2"]);
    rig.clock.advance(1_001);
    rig.free.on_key("k1", limited());
    ask(&rig.router, request("c", "hi")).await;
    assert_eq!(rig.free.keys()[3..], ["k1", "k2"]);
    // Second backoff: 2–4 s.
    rig.clock.advance(1_999);
    ask(&rig.router, request("c", "hi")).await;
    assert_eq!(rig.free.keys().last().unwrap(), "k2");
    rig.clock.advance(2_001);
    ask(&rig.router, request("c", "hi")).await;
    assert_eq!(rig.free.keys().last().unwrap(), "k1");
}

struct CountingProbe(std::sync::atomic::AtomicUsize);

impl super::QuotaProbe for CountingProbe {
    fn key_quota(
        &self,
        _key: &SecretString,
    ) -> BoxFuture<'static, Result<Option<super::KeyQuota>, ProviderError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Ok(Some(super::KeyQuota {
                daily_limit: Some(50),
                remaining: Some(42),
                is_free_tier: Some(true),
            }))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn background_refresh_runs_periodically_until_shutdown_and_reload_keeps_state() {
    let config = config(0);
    let secrets = Secrets {
        openrouter_keys: vec![secret("OPENROUTER_API_KEY_1", "k1")],
        ..Secrets::default()
    };
    let probe = Arc::new(CountingProbe(std::sync::atomic::AtomicUsize::new(0)));
    let router = FreeFirstRouter::with_providers(
        &config,
        &secrets,
        ProviderSet {
            openrouter: Some(Fake::new("openrouter")),
            quota_probe: Some(probe.clone()),
            ..ProviderSet::default()
        },
        Arc::new(MemoryStore::new()),
        Arc::new(ManualClock(AtomicI64::new(NOON))),
    )
    .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    router.spawn_background(shutdown.clone());
    tokio::time::sleep(Duration::from_secs(31 * 60)).await;
    assert_eq!(
        probe.0.load(Ordering::SeqCst),
        3,
        "at start, +15 min, +30 min"
    );
    assert_eq!(
        router.status().tiers[0].accounts[0].requests_left_today,
        Some(42)
    );
    shutdown.cancel();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(probe.0.load(Ordering::SeqCst), 3);

    let mut changed = config.clone();
    changed.openrouter.free_models = vec!["b:free".into()];
    router.reload(&changed).unwrap();
    let names: Vec<_> = router.models().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["b:free"]);
    assert_eq!(
        router.status().tiers[0].accounts[0].requests_left_today,
        Some(42)
    );
}

#[test]
fn the_documented_router_config_parses() {
    let text = include_str!("../../docs/router-config.example.toml");
    let config = crate::config::parse(
        text,
        "docs/router-config.example.toml",
        &crate::config::Env::default(),
    )
    .unwrap();
    assert_eq!(config.openrouter.accounts.len(), 3);
    assert_eq!(config.router.payment_cooldown_secs, 21_600);
    assert_eq!(config.tiers[0].name, "local");
    assert_eq!(config.ollama.context_windows["kimi-k2.5"], 262_144);
}

/// A provider whose response head never comes; the future holds a clone of `alive` while it exists.
struct Hanging {
    alive: Arc<()>,
}

impl ChatProvider for Hanging {
    fn name(&self) -> &str {
        "openrouter"
    }
    fn chat_stream(
        &self,
        _key: Option<&SecretString>,
        _request: ProviderRequest,
    ) -> BoxFuture<'static, Result<ProviderStream, ProviderError>> {
        let alive = Arc::clone(&self.alive);
        Box::pin(async move {
            let _alive = alive;
            futures_util::future::pending().await
        })
    }
}

#[tokio::test]
async fn dropping_the_reply_stream_cancels_the_provider_call() {
    let alive = Arc::new(());
    let secrets = Secrets {
        openrouter_keys: vec![secret("OPENROUTER_API_KEY_1", "k1")],
        ..Secrets::default()
    };
    let router = FreeFirstRouter::with_providers(
        &config(0),
        &secrets,
        ProviderSet {
            openrouter: Some(Arc::new(Hanging {
                alive: Arc::clone(&alive),
            })),
            ..ProviderSet::default()
        },
        Arc::new(MemoryStore::new()),
        Arc::new(ManualClock(AtomicI64::new(NOON))),
    )
    .unwrap();
    let mut reply = router.complete(request("c", "hi"));
    let polled = tokio::time::timeout(Duration::from_millis(20), reply.next()).await;
    assert!(polled.is_err(), "still waiting for the provider");
    // Held here, by the provider, and by the call in flight.
    assert_eq!(
        Arc::strong_count(&alive),
        3,
        "the provider call is in flight"
    );
    drop(reply);
    assert_eq!(
        Arc::strong_count(&alive),
        2,
        "dropping the reply cancelled it"
    );
}

/// Log lines written while the returned guard lives (on this thread: `#[tokio::test]` runs every task
/// of the test on it).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Logs {
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .matches(needle)
            .count()
    }
}

fn rate_limited(secs: u64) -> Act {
    Act::Fail(ProviderError::RateLimited {
        retry_after: Some(Duration::from_secs(secs)),
        reset_at_ms: None,
        daily: false,
    })
}

/// Waits until the fake has seen `n` calls (a spawned turn reached its provider call).
async fn calls_reach(fake: &Fake, n: usize) {
    while fake.calls().len() < n {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_late_success_does_not_clear_a_cooldown_recorded_meanwhile() {
    let rig = rig_with(config(0), &["k1", "k2"], &[]);
    let gate = Arc::new(tokio::sync::Notify::new());
    rig.free.on_key(
        "k1",
        Act::Gated(gate.clone(), Box::new(Act::Answer("slow"))),
    );
    rig.free.on_key("k1", rate_limited(30));
    // Turn A is in flight on k1 when turn B gets a 429 on k1 and moves to k2.
    let router = Arc::clone(&rig.router);
    let slow = tokio::spawn(async move { ask(&router, request("a", "hi")).await });
    calls_reach(&rig.free, 1).await;
    assert!(finished(&ask(&rig.router, request("b", "hi")).await));
    assert_eq!(rig.free.keys(), ["k1", "k1", "k2"]);
    // A's first token arrives after B's 429: the cooldown stays.
    gate.notify_one();
    assert!(finished(&slow.await.unwrap()));
    assert!(rig.router.status().tiers[0].accounts[0]
        .state
        .starts_with("cooling down until 12:00:30"));
    ask(&rig.router, request("c", "hi")).await;
    assert_eq!(rig.free.keys().last().unwrap(), "k2", "nothing sent to k1");
    rig.clock.advance(30_000);
    ask(&rig.router, request("d", "hi")).await;
    assert_eq!(rig.free.keys().last().unwrap(), "k1");
}

#[tokio::test]
async fn sticky_keeps_the_model_that_answered_when_the_tier_routes_it() {
    let rig = rig_with(config(0), &["k1"], &[]);
    rig.free
        .on_model("a:free", Act::Fail(ProviderError::Upstream { status: 503 }));
    rig.free
        .on_model("openrouter/free", Act::AnswerAs("picked/model:free"));
    let ev = ask(&rig.router, request("c", "hi")).await;
    assert_eq!(started(&ev).1, "picked/model:free");
    ask(&rig.router, request("c", "again")).await;
    assert_eq!(
        rig.free.calls().last().unwrap().model,
        "picked/model:free",
        "the model that answered, asked for by name"
    );
    // A reported name the tier cannot be asked for (not a :free id) keeps the configured one.
    rig.free
        .on_model("a:free", Act::Fail(ProviderError::Upstream { status: 503 }));
    rig.free
        .on_model("openrouter/free", Act::AnswerAs("vendor/unlisted"));
    ask(&rig.router, request("d", "hi")).await;
    ask(&rig.router, request("d", "again")).await;
    assert_eq!(rig.free.calls().last().unwrap().model, "openrouter/free");
}

#[tokio::test]
async fn a_moderation_refusal_tries_the_next_model_and_keeps_the_key() {
    let rig = rig_with(config(0), &["k1"], &["p1"]);
    rig.free
        .on_model("a:free", Act::Fail(ProviderError::Refused));
    let ev = ask(&rig.router, request("c", "hi")).await;
    assert!(finished(&ev));
    assert_eq!(started(&ev), ("free".into(), "openrouter/free@real".into()));
    assert_eq!(rig.router.status().tiers[0].accounts[0].state, "ready");

    // Every model declines: the user is told so, and no key is taken out.
    for m in ["a:free", "openrouter/free"] {
        rig.free.on_model(m, Act::Fail(ProviderError::Refused));
    }
    for m in ["gpt-oss:120b", "kimi-k2.5"] {
        rig.paid.on_model(m, Act::Fail(ProviderError::Refused));
    }
    let ev = ask(&rig.router, request("d", "something flagged")).await;
    match ev.last() {
        Some(ReplyEvent::Failed(f)) => {
            assert_eq!(f.kind, FailureKind::Refused);
            assert!(
                f.message.starts_with("The provider declined this message"),
                "{}",
                f.message
            );
        }
        other => panic!("{other:?}"),
    }
    let st = rig.router.status();
    assert_eq!(st.tiers[0].accounts[0].state, "ready");
    assert_eq!(st.tiers[1].accounts[0].state, "ready");
    assert!(finished(&ask(&rig.router, request("e", "hi")).await));
}

#[tokio::test(start_paused = true)]
async fn a_free_account_freeing_within_the_wait_is_waited_for_instead_of_paying() {
    let mut c = config(0);
    c.openrouter.requests_per_minute = 1;
    let secrets = Secrets {
        openrouter_keys: vec![secret("OPENROUTER_API_KEY_1", "k1")],
        ollama_keys: vec![secret("OLLAMA_API_KEY", "p1")],
        ..Secrets::default()
    };
    let (free, paid) = (Fake::new("openrouter"), Fake::new("ollama-cloud"));
    let router = FreeFirstRouter::with_providers(
        &c,
        &secrets,
        ProviderSet {
            openrouter: Some(free.clone()),
            ollama: Some(paid.clone()),
            ..ProviderSet::default()
        },
        Arc::new(MemoryStore::new()),
        Arc::new(crate::clock::TokioClock::starting_at(NOON)),
    )
    .unwrap();
    assert_eq!(started(&ask(&router, request("c", "hi")).await).0, "free");
    // 57 s later the minute frees in 3 s, within the default 5 s: wait rather than pay.
    tokio::time::advance(Duration::from_secs(57)).await;
    let t = tokio::time::Instant::now();
    assert_eq!(started(&ask(&router, request("c", "hi")).await).0, "free");
    assert_eq!(t.elapsed(), Duration::from_secs(3));
    assert!(paid.calls().is_empty());
    // Right after, the minute frees in 60 s: too long, the paid tier answers at once.
    let t = tokio::time::Instant::now();
    assert_eq!(started(&ask(&router, request("c", "hi")).await).0, "paid");
    assert_eq!(t.elapsed(), Duration::ZERO);
    // 0 = never wait.
    c.router.free_wait_max_secs = 0;
    router.reload(&c).unwrap();
    tokio::time::advance(Duration::from_secs(58)).await;
    let t = tokio::time::Instant::now();
    assert_eq!(started(&ask(&router, request("c", "hi")).await).0, "paid");
    assert_eq!(t.elapsed(), Duration::ZERO);
    assert_eq!((free.calls().len(), paid.calls().len()), (2, 2));
}

fn local_tier() -> crate::config::providers::ExtraTierConfig {
    crate::config::providers::ExtraTierConfig {
        name: "local".into(),
        kind: crate::config::providers::ProviderKind::Ollama,
        base_url: "http://127.0.0.1:9".into(),
        models: vec!["llama3.2:3b".into()],
        key_env: None,
        context_window: 8192,
    }
}

fn with_local(
    config: &Config,
    free: &Arc<Fake>,
    paid: &Arc<Fake>,
    local: &Arc<Fake>,
) -> Result<Arc<FreeFirstRouter>, crate::config::ConfigError> {
    let secrets = Secrets {
        openrouter_keys: vec![secret("OPENROUTER_API_KEY_1", "k1")],
        ollama_keys: vec![secret("OLLAMA_API_KEY", "p1")],
        ..Secrets::default()
    };
    let mut extra = std::collections::BTreeMap::new();
    extra.insert(
        "local".to_owned(),
        (local.clone() as Arc<dyn ChatProvider>, None),
    );
    FreeFirstRouter::with_providers(
        config,
        &secrets,
        ProviderSet {
            openrouter: Some(free.clone()),
            ollama: Some(paid.clone()),
            extra,
            ..ProviderSet::default()
        },
        Arc::new(MemoryStore::new()),
        Arc::new(ManualClock(AtomicI64::new(NOON))),
    )
}

#[tokio::test]
async fn a_local_tier_placed_before_paid_answers_before_paid() {
    let (free, paid, local) = (
        Fake::new("openrouter"),
        Fake::new("ollama-cloud"),
        Fake::new("local"),
    );
    let mut c = config(1);
    c.tiers.push(local_tier());
    c.router.tier_order = vec!["free".into(), "local".into(), "paid".into()];
    let router = with_local(&c, &free, &paid, &local).unwrap();
    let names: Vec<_> = router.models().into_iter().map(|m| m.name).collect();
    assert_eq!(
        names,
        [
            "a:free",
            "openrouter/free",
            "llama3.2:3b",
            "gpt-oss:120b",
            "kimi-k2.5"
        ]
    );
    assert_eq!(started(&ask(&router, request("c", "hi")).await).0, "free");
    let ev = ask(&router, request("c", "hi")).await;
    assert_eq!(started(&ev), ("local".into(), "llama3.2:3b@real".into()));
    assert!(
        !ev.iter().any(|e| matches!(e, ReplyEvent::Notice(_))),
        "a free tier: no paid notice"
    );
    assert_eq!((local.calls().len(), paid.calls().len()), (1, 0));

    // The default order keeps extra tiers after paid.
    let (free, paid, local) = (
        Fake::new("openrouter"),
        Fake::new("ollama-cloud"),
        Fake::new("local"),
    );
    c.router.tier_order.clear();
    let router = with_local(&c, &free, &paid, &local).unwrap();
    ask(&router, request("c", "hi")).await;
    assert_eq!(started(&ask(&router, request("c", "hi")).await).0, "paid");
    assert!(local.calls().is_empty());

    // Unknown or repeated names are configuration errors.
    c.router.tier_order = vec!["free".into(), "cloud".into()];
    let e = with_local(&c, &free, &paid, &local).err().unwrap();
    assert_eq!(e.key, "router.tier_order[1]");
    c.router.tier_order = vec!["local".into(), "local".into()];
    let e = with_local(&c, &free, &paid, &local).err().unwrap();
    assert_eq!(e.key, "router.tier_order[1]");
}

#[tokio::test]
async fn the_spend_alert_is_logged_once_a_day_when_the_estimate_passes_it() {
    let mut c = config(0);
    // 10 prompt tokens per answer at $100,000 per million: $1 an answer.
    c.ollama.prices.insert(
        "gpt-oss:120b".into(),
        crate::config::providers::Price {
            prompt: 100_000.0,
            completion: 0.0,
        },
    );
    c.router.paid_spend_alert_usd = 1.5;
    let rig = rig_with(c, &[], &["p1"]);
    let (logs, _guard) = Logs::capture();
    const ALERT: &str = "estimated paid-tier spend today passed the alert threshold";
    ask(&rig.router, request("c", "hi")).await;
    assert_eq!(logs.count(ALERT), 0);
    ask(&rig.router, request("c", "hi")).await;
    ask(&rig.router, request("c", "hi")).await;
    assert_eq!(logs.count(ALERT), 1, "once, when $2 passed $1.50");
    assert_eq!(rig.router.status().tiers[0].estimated_cost_usd, Some(3.0));
    // A restart the same day does not warn again; the next UTC day may.
    let again = build(
        &rig.config,
        &rig.secrets,
        &rig.free,
        &rig.paid,
        &rig.store,
        &rig.clock,
    );
    ask(&again, request("c", "hi")).await;
    assert_eq!(logs.count(ALERT), 1);
    rig.clock.advance(DAY_MS);
    ask(&again, request("c", "hi")).await;
    ask(&again, request("c", "hi")).await;
    assert_eq!(logs.count(ALERT), 2);
}

#[tokio::test]
async fn a_rejected_key_is_warned_about_loudly_exactly_once() {
    let rig = rig_with(config(0), &["k1", "k2"], &[]);
    let (logs, _guard) = Logs::capture();
    const WARNING: &str = "API key REJECTED by the provider (HTTP 401)";
    let unauthorized = || Act::Fail(ProviderError::Unauthorized { status: 401 });
    // Two turns in flight on k1 both get its 401.
    let gate = Arc::new(tokio::sync::Notify::new());
    rig.free
        .on_key("k1", Act::Gated(gate.clone(), Box::new(unauthorized())));
    rig.free.on_key("k1", unauthorized());
    let router = Arc::clone(&rig.router);
    let first = tokio::spawn(async move { ask(&router, request("a", "hi")).await });
    calls_reach(&rig.free, 1).await;
    assert!(finished(&ask(&rig.router, request("b", "hi")).await));
    gate.notify_one();
    assert!(finished(&first.await.unwrap()));
    for _ in 0..3 {
        ask(&rig.router, request("c", "hi")).await;
    }
    assert_eq!(rig.free.keys(), ["k1", "k1", "k2", "k2", "k2", "k2", "k2"]);
    assert_eq!(logs.count(WARNING), 1);
    assert!(logs.count("OPENROUTER_API_KEY_1") >= 1, "names the key");
    // After a reload the key gets another chance, and a new rejection is news again.
    rig.router.reload(&rig.config).unwrap();
    rig.free.on_key("k1", unauthorized());
    ask(&rig.router, request("d", "hi")).await;
    assert_eq!(logs.count(WARNING), 2);
}

#[tokio::test]
async fn an_unreachable_endpoint_is_skipped_for_the_rest_of_the_turn() {
    let rig = rig_with(config(0), &["k1", "k2"], &["p1"]);
    rig.free.on_key("k1", Act::Fail(ProviderError::Connect));
    let ev = ask(&rig.router, request("c", "hi")).await;
    assert_eq!(started(&ev).0, "paid");
    assert_eq!(
        rig.free.calls().len(),
        1,
        "no other free model or key tried on a dead endpoint"
    );
    // Only for that turn: the next one asks the free tier again, on the same (not held) account.
    let ev = ask(&rig.router, request("d", "hi")).await;
    assert_eq!(started(&ev).0, "free");
    assert_eq!(rig.free.keys(), ["k1", "k1"]);
}

/// A [`MemoryStore`] that counts flushes.
#[derive(Default)]
struct FlushCounting {
    inner: MemoryStore,
    flushes: std::sync::atomic::AtomicUsize,
}

impl HistoryStore for FlushCounting {
    fn conversation(
        &self,
        key: &ConversationKey,
    ) -> Result<Option<crate::store::ConversationMeta>, crate::store::StoreError> {
        self.inner.conversation(key)
    }
    fn put_conversation(
        &self,
        key: &ConversationKey,
        meta: &crate::store::ConversationMeta,
    ) -> Result<(), crate::store::StoreError> {
        self.inner.put_conversation(key, meta)
    }
    fn list_conversations(
        &self,
    ) -> Result<Vec<(ConversationKey, crate::store::ConversationMeta)>, crate::store::StoreError>
    {
        self.inner.list_conversations()
    }
    fn append_turn(
        &self,
        key: &ConversationKey,
        epoch: u32,
        turn: &crate::store::Turn,
    ) -> Result<(), crate::store::StoreError> {
        self.inner.append_turn(key, epoch, turn)
    }
    fn recent_turns(
        &self,
        key: &ConversationKey,
        epoch: u32,
        limit: usize,
    ) -> Result<Vec<crate::store::Turn>, crate::store::StoreError> {
        self.inner.recent_turns(key, epoch, limit)
    }
    fn reset_conversation(
        &self,
        key: &ConversationKey,
        now_ms: i64,
    ) -> Result<u32, crate::store::StoreError> {
        self.inner.reset_conversation(key, now_ms)
    }
    fn prune(
        &self,
        policy: crate::store::RetentionPolicy,
        now_ms: i64,
    ) -> Result<crate::store::PruneReport, crate::store::StoreError> {
        self.inner.prune(policy, now_ms)
    }
}

impl StateStore for FlushCounting {
    fn kv_get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, crate::store::StoreError> {
        self.inner.kv_get(ns, key)
    }
    fn kv_put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), crate::store::StoreError> {
        self.inner.kv_put(ns, key, value)
    }
    fn kv_remove(&self, ns: &str, key: &str) -> Result<(), crate::store::StoreError> {
        self.inner.kv_remove(ns, key)
    }
    fn kv_update(
        &self,
        ns: &str,
        key: &str,
        f: &mut crate::store::ValueUpdate<'_>,
    ) -> Result<Option<Vec<u8>>, crate::store::StoreError> {
        self.inner.kv_update(ns, key, f)
    }
    fn kv_scan(
        &self,
        ns: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, crate::store::StoreError> {
        self.inner.kv_scan(ns, prefix)
    }
    fn declare_dated(&self, dated: crate::store::DatedNamespace) {
        self.inner.declare_dated(dated);
    }
    fn dated_namespaces(&self) -> Vec<crate::store::DatedNamespace> {
        self.inner.dated_namespaces()
    }
}

impl Durable for FlushCounting {
    fn flush(&self) -> BoxFuture<'static, Result<(), crate::store::StoreError>> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        self.inner.flush()
    }
}

#[tokio::test]
async fn a_recorded_hold_is_flushed_at_once() {
    let store = Arc::new(FlushCounting::default());
    let free = Fake::new("openrouter");
    let secrets = Secrets {
        openrouter_keys: vec![
            secret("OPENROUTER_API_KEY_1", "k1"),
            secret("OPENROUTER_API_KEY_2", "k2"),
        ],
        ..Secrets::default()
    };
    let router = FreeFirstRouter::with_providers(
        &config(0),
        &secrets,
        ProviderSet {
            openrouter: Some(free.clone()),
            ..ProviderSet::default()
        },
        store.clone(),
        Arc::new(ManualClock(AtomicI64::new(NOON))),
    )
    .unwrap();
    assert!(finished(&ask(&router, request("c", "hi")).await));
    assert_eq!(store.flushes.load(Ordering::SeqCst), 0, "a plain answer");
    free.on_key("k1", rate_limited(30));
    assert!(finished(&ask(&router, request("c", "hi")).await));
    assert_eq!(store.flushes.load(Ordering::SeqCst), 1, "the 429's hold");
    free.on_key("k2", Act::Fail(ProviderError::PaymentRequired));
    ask(&router, request("c", "hi")).await;
    assert_eq!(store.flushes.load(Ordering::SeqCst), 2, "the 402's hold");
}
