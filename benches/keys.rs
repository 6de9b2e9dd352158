//! The latency client keys add to a request: authentication (the `Authorization` header parsed, the
//! key found, SHA-256 of the secret, the constant-time compare), the atomic admission (every limit
//! checked and reserved under the key's mutex), the settlement with the real usage (limiter and
//! ledger), and the `x-ratelimit-*` headers, compared with the keyless path (`LoopbackOnly`). In-process:
//! the same functions the HTTP middleware and dispatch call, without the socket. At concurrency 1
//! and with 1,000 concurrent clients on one key (the worst case: one mutex for all), each client
//! holding its reservation across a yield so 1,000 are in flight at once.
//! Run: `cargo bench --bench keys`.

#![allow(
    clippy::too_many_lines,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use secrecy::ExposeSecret as _;
use switchboard::api::auth::{rate_headers, ClientAuth, KeyAuth, LoopbackOnly};
use switchboard::api::error::Surface;
use switchboard::api::keys::admission::Limits;
use switchboard::api::keys::{Keys, NewKey};
use switchboard::clock::{SharedClock, SystemClock};
use switchboard::domain::{
    AnswerSource, ChatMessage, ChatRef, Completion, ConversationKey, Platform, ReplyEvent, Role,
    TierName, Usage, UserRef,
};
use switchboard::router::{CompletionRequest, ModelSelector};
use switchboard::store::memory::MemoryStore;

/// Timed requests at concurrency 1.
const SERIAL: usize = 100_000;
/// Concurrent clients, and requests each.
const CLIENTS: usize = 1_000;
const PER_CLIENT: usize = 100;

fn request() -> CompletionRequest {
    CompletionRequest {
        conversation: ConversationKey("api:bench".into()),
        user: UserRef::new(Platform::Api, "bench"),
        chat: ChatRef::new(Platform::Api, "bench"),
        system_prompt: String::new(),
        history: Vec::new(),
        prompt: ChatMessage::new(Role::User, "hello there, how are you today?"),
        model: None,
        selector: ModelSelector::Policy,
        params: switchboard::generation::GenerationParams::default(),
        sticky: false,
        paid_allowed: true,
        max_tokens: Some(256),
    }
}

fn finished() -> ReplyEvent {
    ReplyEvent::Finished(Completion {
        source: Some(AnswerSource {
            tier: TierName::free(),
            provider: "openrouter".into(),
            model: "m".into(),
            key_fingerprint: None,
        }),
        usage: Usage {
            prompt_tokens: 12,
            completion_tokens: 40,
        },
        usage_estimated: false,
        finish_reason: Some("stop".into()),
    })
}

/// One request's key work: authenticate, admit, settle, headers. `None` for the keyless path.
fn keyed(auth: &dyn ClientAuth, peer: SocketAddr, headers: &HeaderMap, req: &CompletionRequest) {
    let caller = auth.authenticate(peer, headers).expect("authenticated");
    if let Some(gate) = &caller.gate.0 {
        let Ok(mut ticket) = gate.admit(Surface::OpenAi, req) else {
            panic!("refused")
        };
        ticket.observe(&finished());
        let mut out = HeaderMap::new();
        rate_headers(&gate.snapshot(), &mut out);
        black_box(out);
    }
    black_box(caller);
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn report(name: &str, mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort_unstable();
    let (p50, p99) = (pct(&v, 0.50), pct(&v, 0.99));
    println!(
        "{name:<44} n={:>7}  p50 {:>6.2} µs  p99 {:>6.2} µs  max {:>8.2} µs",
        v.len(),
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        v[v.len() - 1].as_secs_f64() * 1e6
    );
    (p50, p99)
}

fn setup() -> (Arc<dyn ClientAuth>, HeaderMap) {
    let clock: SharedClock = Arc::new(SystemClock);
    let keys = Keys::open(Arc::new(MemoryStore::new()), clock, BTreeMap::new()).unwrap();
    // Every limit set (and never reached), so every check runs.
    let (_, key) = keys
        .create(NewKey {
            name: "bench".into(),
            limits: Limits {
                rpm: Some(1_000_000_000),
                daily_requests: Some(u64::MAX / 2),
                daily_tokens: Some(u64::MAX / 2),
                concurrency: Some(1_000_000),
            },
            ..NewKey::default()
        })
        .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {}", key.expose_secret()).parse().unwrap(),
    );
    (Arc::new(KeyAuth::new(keys, true)), headers)
}

fn serial(auth: &dyn ClientAuth, headers: &HeaderMap) -> Vec<Duration> {
    let peer: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let req = request();
    (0..SERIAL)
        .map(|_| {
            let t = Instant::now();
            keyed(auth, peer, headers, &req);
            t.elapsed()
        })
        .collect()
}

async fn concurrent(auth: Arc<dyn ClientAuth>, headers: HeaderMap) -> Vec<Duration> {
    let headers = Arc::new(headers);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (auth, headers) = (auth.clone(), headers.clone());
            tokio::spawn(async move {
                let peer: SocketAddr = "192.0.2.1:5000".parse().unwrap();
                let req = request();
                let mut times = Vec::with_capacity(PER_CLIENT);
                for _ in 0..PER_CLIENT {
                    // Admission, then the answer "streams" (a yield: the other clients run and hold
                    // their reservations), then settlement: only switchboard's own work is timed.
                    let t = Instant::now();
                    let caller = auth.authenticate(peer, &headers).unwrap();
                    let ticket = caller
                        .gate
                        .0
                        .as_ref()
                        .map(|g| g.admit(Surface::OpenAi, &req).ok().unwrap());
                    let admitted = t.elapsed();
                    tokio::task::yield_now().await;
                    let t = Instant::now();
                    if let (Some(mut ticket), Some(gate)) = (ticket, &caller.gate.0) {
                        ticket.observe(&finished());
                        let mut out = HeaderMap::new();
                        rate_headers(&gate.snapshot(), &mut out);
                        black_box(out);
                    }
                    times.push(admitted + t.elapsed());
                }
                times
            })
        })
        .collect();
    let mut all = Vec::with_capacity(CLIENTS * PER_CLIENT);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn main() {
    println!(
        "client keys: auth + admission + settlement + headers, {} cores",
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    );
    let (auth, headers) = setup();
    let none: Arc<dyn ClientAuth> = Arc::new(LoopbackOnly);
    let local_headers = HeaderMap::new();
    // Warm-up.
    let _ = serial(&*auth, &headers);
    let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let req = request();
    let base: Vec<Duration> = (0..SERIAL)
        .map(|_| {
            let t = Instant::now();
            keyed(&*none, peer, &local_headers, &req);
            t.elapsed()
        })
        .collect();
    let (_, base99) = report("keyless (LoopbackOnly), concurrency 1", base);
    let (_, key99) = report("key, concurrency 1", serial(&*auth, &headers));
    println!(
        "  added p99 at concurrency 1: {:.2} µs",
        (key99.saturating_sub(base99)).as_secs_f64() * 1e6
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let times = runtime.block_on(concurrent(auth.clone(), headers.clone()));
    let (_, c99) = report("key, 1,000 concurrent clients on one key", times);
    println!(
        "  added p99 at 1,000 concurrent: {:.2} µs (target ≤ 50 µs)",
        (c99.saturating_sub(base99)).as_secs_f64() * 1e6
    );
}
