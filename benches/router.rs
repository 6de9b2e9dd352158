//! Router benchmarks (harness = false): the routing decision with 100 accounts, and the time to first
//! token the router adds on a streamed reply from a zero-latency local simulator.
//!
//! Run: `cargo bench --bench router`. Results are recorded in docs/bench-router.md.

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
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use switchboard::clock::{ManualClock, SharedClock, SystemClock, DAY_MS};
use switchboard::config::{Config, Env, Secrets};
use switchboard::domain::{
    ChatMessage, ChatRef, ConversationKey, Platform, ReplyEvent, Role, UserRef,
};
use switchboard::providers::http::Timeouts;
use switchboard::providers::openai::{Attribution, OpenAiClient};
use switchboard::providers::{
    ChatProvider, ProviderError, ProviderEvent, ProviderRequest, ProviderStream,
};
use switchboard::router::{
    CompletionRequest, FreeFirstRouter, KeyQuota, LlmRouter, ModelSelector, ProviderSet, QuotaProbe,
};
use switchboard::sim::openrouter::{SimKey, SimModel, SimOpenRouter, SimOpenRouterOptions};
use switchboard::store::memory::MemoryStore;
use switchboard::store::Store;

const ACCOUNTS: usize = 100;
const DECISIONS: usize = 20_000;
const STREAMS: usize = 2_000;
const MODEL: &str = "bench/model:free";

/// Never called: the decision benchmark sends nothing.
struct NoProvider;
impl ChatProvider for NoProvider {
    fn name(&self) -> &'static str {
        "openrouter"
    }
    fn chat_stream(
        &self,
        _key: Option<&SecretString>,
        _request: ProviderRequest,
    ) -> BoxFuture<'static, Result<ProviderStream, ProviderError>> {
        unreachable!("the decision benchmark sends nothing")
    }
}

/// Every account but the last reports its daily quota spent, so each decision scans all 100.
struct LastOnly;
impl QuotaProbe for LastOnly {
    fn key_quota(
        &self,
        key: &SecretString,
    ) -> BoxFuture<'static, Result<Option<KeyQuota>, ProviderError>> {
        let last = key.expose_secret() == format!("k{ACCOUNTS}");
        Box::pin(async move {
            Ok(Some(KeyQuota {
                daily_limit: Some(1_000_000),
                remaining: Some(if last { 1_000_000 } else { 0 }),
                is_free_tier: Some(false),
            }))
        })
    }
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration, Duration, Duration) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.90), at(0.99), *samples.last().unwrap())
}

async fn decision_bench(scan_all: bool) {
    let mut config = Config::default();
    config.openrouter.free_models = vec![MODEL.into()];
    // Secrets::load reads numbered keys up to _32; build 100 named keys directly.
    let mut secrets = Secrets::default();
    secrets.openrouter_keys = (1..=ACCOUNTS)
        .map(|i| switchboard::secrets::NamedSecret {
            name: format!("OPENROUTER_API_KEY_{i}"),
            value: SecretString::from(format!("k{i}")),
        })
        .collect();
    // 00:00:01 UTC; the clock moves 3.1 s per decision so the 20-per-minute window never blocks the
    // one ready account (the window scan is part of the measured cost) and the day does not roll over.
    let clock = Arc::new(ManualClock::new(20_000 * DAY_MS + 1_000));
    let providers = ProviderSet {
        openrouter: Some(Arc::new(NoProvider)),
        quota_probe: scan_all.then(|| Arc::new(LastOnly) as Arc<dyn QuotaProbe>),
        ..ProviderSet::default()
    };
    let router = FreeFirstRouter::with_providers(
        &config,
        &secrets,
        providers,
        Arc::new(MemoryStore::new()) as Arc<dyn Store>,
        clock.clone() as SharedClock,
    )
    .unwrap();
    router.refresh_quotas().await;
    let mut samples = Vec::with_capacity(DECISIONS);
    for _ in 0..DECISIONS {
        clock.advance(if scan_all { 3_100 } else { 31 });
        let t = Instant::now();
        let decided = router.decide();
        samples.push(t.elapsed());
        assert!(decided.is_some());
    }
    let (p50, p90, p99, max) = percentiles(samples);
    println!(
        "decision, {ACCOUNTS} accounts, {}: p50 {:.2} µs  p90 {:.2} µs  p99 {:.2} µs  max {:.1} µs  (n={DECISIONS})",
        if scan_all { "99 exhausted (full scan)" } else { "per-minute windows filling in turn" },
        p50.as_secs_f64() * 1e6,
        p90.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        max.as_secs_f64() * 1e6,
    );
}

fn request(i: usize) -> CompletionRequest {
    CompletionRequest {
        conversation: ConversationKey(format!("bench-{i}")),
        user: UserRef::new(Platform::Terminal, "bench"),
        chat: ChatRef::new(Platform::Terminal, "bench"),
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

async fn ttft_bench() {
    let sim = SimOpenRouter::start(SimOpenRouterOptions {
        keys: vec![SimKey::new("k1", "bench", u32::MAX)],
        per_minute_limit: None,
        models: vec![SimModel::free(MODEL, 131_072)],
        ..SimOpenRouterOptions::default()
    })
    .await
    .unwrap();
    let mut config = Config::default();
    config.openrouter.base_url = sim.base_url();
    config.openrouter.free_models = vec![MODEL.into()];
    config.openrouter.requests_per_minute = 0;
    let env = Env::from_pairs([("OPENROUTER_API_KEY_1", "k1")]);
    let secrets = Secrets::load(&env).unwrap();
    let router = FreeFirstRouter::from_config(
        &config,
        &secrets,
        Arc::new(MemoryStore::new()) as Arc<dyn Store>,
        Arc::new(SystemClock) as SharedClock,
    )
    .unwrap();
    let client = OpenAiClient::new(
        "openrouter",
        &sim.base_url(),
        Timeouts::from_config(&config.router),
        Attribution::default(),
    )
    .unwrap();
    let key = SecretString::from("k1");

    // Warm both connection pools.
    for i in 0..50 {
        let _ = router.complete(request(i)).collect::<Vec<_>>().await;
        let mut s = client
            .chat_stream(
                Some(&key),
                ProviderRequest {
                    model: MODEL.into(),
                    messages: vec![ChatMessage::new(Role::User, "hello")],
                    max_tokens: None,
                    params: switchboard::generation::GenerationParams::default(),
                },
            )
            .await
            .unwrap();
        while s.next().await.is_some() {}
    }

    let mut direct = Vec::with_capacity(STREAMS);
    let mut routed = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        // Direct client call: request → first delta.
        let t = Instant::now();
        let mut s = client
            .chat_stream(
                Some(&key),
                ProviderRequest {
                    model: MODEL.into(),
                    messages: vec![
                        ChatMessage::new(Role::System, "Be brief."),
                        ChatMessage::new(Role::User, "hello"),
                    ],
                    max_tokens: None,
                    params: switchboard::generation::GenerationParams::default(),
                },
            )
            .await
            .unwrap();
        loop {
            match s.next().await {
                Some(Ok(ProviderEvent::Delta(_))) => break,
                Some(Ok(_)) => {}
                other => panic!("{other:?}"),
            }
        }
        direct.push(t.elapsed());
        while s.next().await.is_some() {}

        // Through the router: complete() → first Delta event.
        let t = Instant::now();
        let mut r = router.complete(request(i));
        loop {
            match r.next().await {
                Some(ReplyEvent::Delta(_)) => break,
                Some(ReplyEvent::Started(_) | ReplyEvent::Notice(_)) => {}
                other => panic!("{other:?}"),
            }
        }
        routed.push(t.elapsed());
        while r.next().await.is_some() {}
    }
    // Each pair ran back to back under the same machine load, so the per-pair difference isolates what
    // the router adds better than the difference of two separately sorted distributions.
    let added: Vec<Duration> = routed
        .iter()
        .zip(&direct)
        .map(|(r, d)| r.saturating_sub(*d))
        .collect();
    let (d50, d90, d99, _) = percentiles(direct);
    let (r50, r90, r99, _) = percentiles(routed);
    let (a50, a90, a99, _) = percentiles(added);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("time to first token, zero-latency sim, n={STREAMS}:");
    println!(
        "  direct client: p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms",
        ms(d50),
        ms(d90),
        ms(d99)
    );
    println!(
        "  via router:    p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms",
        ms(r50),
        ms(r90),
        ms(r99)
    );
    println!(
        "  added by the router (p(router) - p(direct)): p50 {:.3} ms  p99 {:.3} ms",
        ms(r50.saturating_sub(d50)),
        ms(r99.saturating_sub(d99))
    );
    println!(
        "  added by the router (per pair, router - direct, floored at 0): p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms",
        ms(a50),
        ms(a90),
        ms(a99)
    );
    assert!(sim.unexpected().is_empty());
    sim.shutdown().await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        decision_bench(false).await;
        decision_bench(true).await;
        ttft_bench().await;
    });
}
