//! Fallback before the first token: failing, missing, declining and unreachable models, refits,
//! stickiness and the short wait for a busy free account.

use super::*;

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

/// A caller's own context size (Ollama's `num_ctx`) trims the history further than the model's window.
#[tokio::test]
async fn the_callers_context_size_bounds_the_history_sent() {
    let rig = rig_with(config(0), &["k1"], &[]);
    let long = |conv: &str| {
        let mut req = request(conv, "hi");
        req.history = (0..10)
            .map(|i| {
                let role = if i % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                };
                ChatMessage::new(role, "x".repeat(70))
            })
            .collect();
        req
    };
    ask(&rig.router, long("a")).await;
    let mut bounded = long("b");
    // 100 tokens: a quarter for the answer leaves 75, room for two 24-token turns and the prompt.
    bounded.params.context_window = Some(100);
    ask(&rig.router, bounded).await;
    let calls = rig.free.calls();
    let prompt_and_system = calls[0].messages - 10;
    assert_eq!(calls[1].messages, prompt_and_system + 2, "{calls:?}");
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
