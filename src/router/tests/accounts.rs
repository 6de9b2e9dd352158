//! Accounts and their quotas: daily and per-minute limits, holds, rejected keys, restarts and flushes.

use super::*;
use crate::router::usage::USAGE_NS;
use crate::store::coalesce::Coalescing;

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
    settle().await;
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
async fn a_rejected_key_is_warned_about_loudly_exactly_once() {
    let rig = rig_with(config(0), &["k1", "k2"], &[]);
    let (logs, _guard) = Logs::capture();
    const WARNING: &str = "API key REJECTED by the provider (HTTP 401)";
    let unauthorized = || Act::Fail(ProviderError::Unauthorized { status: 401 });
    // Two turns in flight on k1 both get its 401.
    two_turns_fail_on_k1_at_once(&rig, unauthorized).await;
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
        Arc::new(ManualClock::new(NOON)),
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

/// Over the store the daemon runs on (usage counters coalesced in memory), a crash — the process gone
/// before any periodic write-out — keeps every quota hold the router learned, because those are written
/// at once; only the usage counters were held back.
#[tokio::test]
async fn over_the_coalescing_store_a_crash_keeps_every_hold_and_loses_only_counters() {
    let mut rig = rig_with(config(2), &["k1", "k2", "k3"], &[]);
    let disk = Arc::new(MemoryStore::new());
    let layered: Arc<dyn Store> = Coalescing::start(disk.clone(), Duration::from_secs(5));
    rig.router = FreeFirstRouter::with_providers(
        &rig.config,
        &rig.secrets,
        ProviderSet {
            openrouter: Some(rig.free.clone()),
            ollama: Some(rig.paid.clone()),
            ..ProviderSet::default()
        },
        layered.clone(),
        rig.clock.clone(),
    )
    .unwrap();
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
    assert!(
        !layered.kv_scan(USAGE_NS, "").unwrap().is_empty(),
        "answers were counted"
    );
    assert!(
        disk.kv_scan(USAGE_NS, "").unwrap().is_empty(),
        "counters are held back"
    );
    settle().await;
    // The crash: a new router over what reached the store beneath, nothing written out.
    let again = build(
        &rig.config,
        &rig.secrets,
        &Fake::new("openrouter"),
        &Fake::new("ollama-cloud"),
        &disk,
        &rig.clock,
    );
    let st = again.status();
    assert_eq!(st.tiers[0].accounts[0].state, "exhausted until 00:00 UTC");
    assert_eq!(
        st.tiers[0].accounts[1].state,
        "cooling down until 12:02:00 UTC"
    );
    assert_eq!(st.tiers[0].accounts[2].requests_left_today, Some(1));
}
