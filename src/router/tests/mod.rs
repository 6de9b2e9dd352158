//! Unit tests of the free-first policy over an in-test fake [`ChatProvider`] and a manual clock: the shared
//! fakes and helpers live here, the tests in the submodules by concern. The integration tests in
//! `tests/router.rs` run the same router against the HTTP simulators.

// A test's constants stand beside the step that uses them, and `_alive` guards hold a value for a
// future's whole life: both read better here than the pedantic alternatives.
#![allow(clippy::items_after_statements, clippy::no_effect_underscore_binding)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use secrecy::{ExposeSecret, SecretString};

use super::free_first::{FreeFirstRouter, ProviderSet};
use super::{CompletionRequest, LlmRouter};
use crate::clock::{ManualClock, DAY_MS};
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
    /// Stream exactly these items.
    Events(Vec<Result<ProviderEvent, ProviderError>>),
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
                Act::Events(items) => Ok(stream::iter(items).boxed()),
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
    let clock = Arc::new(ManualClock::new(NOON));
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
        selector: crate::router::ModelSelector::Policy,
        params: crate::generation::GenerationParams::default(),
        sticky: true,
        paid_allowed: true,
        max_tokens: None,
    }
}

async fn ask(router: &FreeFirstRouter, req: CompletionRequest) -> Vec<ReplyEvent> {
    router.complete(req).collect().await
}

/// Lets the tasks the turns spawned run: the count each request adds is written by one of its own
/// (`Shared::write_soon`), which in the daemon runs while the request is on its way to the provider.
/// The fakes here answer without ever yielding, so a test that reads the store right after a turn
/// gives those tasks their turn first.
async fn settle() {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
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

/// Two turns in flight on k1 both get `fail`'s error: the first is held at k1 until the second has
/// been answered, then released; both still end in an answer.
async fn two_turns_fail_on_k1_at_once(rig: &Rig, fail: impl Fn() -> Act) {
    let gate = Arc::new(tokio::sync::Notify::new());
    rig.free
        .on_key("k1", Act::Gated(gate.clone(), Box::new(fail())));
    rig.free.on_key("k1", fail());
    let router = Arc::clone(&rig.router);
    let first = tokio::spawn(async move { ask(&router, request("a", "hi")).await });
    calls_reach(&rig.free, 1).await;
    assert!(finished(&ask(&rig.router, request("b", "hi")).await));
    gate.notify_one();
    assert!(finished(&first.await.unwrap()));
}

/// Waits until the fake has seen `n` calls (a spawned turn reached its provider call).
async fn calls_reach(fake: &Fake, n: usize) {
    while fake.calls().len() < n {
        tokio::task::yield_now().await;
    }
}

mod accounts;
mod api;
mod fallback;
mod faults;
mod paid;
