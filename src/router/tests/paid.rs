//! The paid tier and the extra tiers: the paid notice, switches and caps, spend, usage, the model list,
//! the background quota refresh and cancellation.

use super::*;

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
    let usage = crate::router::usage::day_usage(rig.store.as_ref(), day);
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].0, "ollama-cloud/gpt-oss:120b@real/terminal:u1");
    assert_eq!(usage[0].1.prompt_tokens, 10);
    let st = rig.router.status();
    assert_eq!(st.tiers[0].estimated_cost_usd, Some(10.0));
}

struct CountingProbe(std::sync::atomic::AtomicUsize);

impl crate::router::QuotaProbe for CountingProbe {
    fn key_quota(
        &self,
        _key: &SecretString,
    ) -> BoxFuture<'static, Result<Option<crate::router::KeyQuota>, ProviderError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Ok(Some(crate::router::KeyQuota {
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
        Arc::new(ManualClock::new(NOON)),
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
    let text = include_str!("../../../docs/router-config.example.toml");
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
    fn name(&self) -> &'static str {
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
        Arc::new(ManualClock::new(NOON)),
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

fn local_tier() -> crate::config::providers::ExtraTierConfig {
    crate::config::providers::ExtraTierConfig {
        name: "local".into(),
        kind: crate::config::providers::ProviderKind::Ollama,
        base_url: "http://127.0.0.1:9".into(),
        models: vec!["llama3.2:3b".into()],
        key_env: None,
        context_window: 8192,
        capabilities: std::collections::BTreeMap::new(),
        embedding_models: Vec::new(),
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
        Arc::new(ManualClock::new(NOON)),
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
