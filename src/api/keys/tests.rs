//! The key store, authentication and the permission gate against an in-memory store and the API's
//! fake router; and the middleware's guards (open, probe, operator, client routes).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::HeaderMap;
use secrecy::ExposeSecret as _;

use super::admission::Limits;
use super::{Keys, NewKey};
use crate::api::auth::{AuthError, Caller, ClientAuth, KeyAuth};
use crate::api::error::Surface;
use crate::api::tests::FakeRouter;
use crate::clock::{ManualClock, SharedClock, DAY_MS};
use crate::domain::{ChatMessage, ChatRef, ConversationKey, Platform, Role, UserRef};
use crate::router::{CompletionRequest, ModelSelector};
use crate::store::memory::MemoryStore;

const NOON: i64 = 20_000 * DAY_MS + DAY_MS / 2;

fn keys_at(store: &Arc<MemoryStore>, clock: &Arc<ManualClock>) -> Arc<Keys> {
    let clock: SharedClock = clock.clone();
    Keys::open(store.clone(), clock, BTreeMap::new()).unwrap()
}

fn new_key(name: &str) -> NewKey {
    NewKey {
        name: name.into(),
        ..NewKey::default()
    }
}

fn bearer(key: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", format!("Bearer {key}").parse().unwrap());
    h
}

const LOCAL: &str = "127.0.0.1:4000";
const REMOTE: &str = "192.0.2.7:4000";

fn peer(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn created_keys_authenticate_until_revoked_or_expired_and_survive_a_reopen() {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(NOON));
    let keys = keys_at(&store, &clock);
    let (record, key) = keys.create(new_key("ide")).unwrap();
    assert_eq!(record.digest, "", "the digest never leaves the store");
    let auth = KeyAuth::new(keys.clone(), true);
    let caller = auth
        .authenticate(peer(REMOTE), &bearer(key.expose_secret()))
        .unwrap();
    assert_eq!(caller.id, record.id);
    assert!(!caller.operator);
    // A forged secret with the right id is refused.
    let forged = format!(
        "{}0000",
        &key.expose_secret()[..key.expose_secret().len() - 4]
    );
    assert_eq!(
        auth.authenticate(peer(REMOTE), &bearer(&forged)),
        Err(AuthError::Invalid)
    );
    // A fresh process over the same store knows the key.
    let reopened = keys_at(&store, &clock);
    let auth2 = KeyAuth::new(reopened.clone(), true);
    assert!(auth2
        .authenticate(peer(REMOTE), &bearer(key.expose_secret()))
        .is_ok());
    reopened.revoke(&record.id).unwrap();
    assert_eq!(
        auth2.authenticate(peer(REMOTE), &bearer(key.expose_secret())),
        Err(AuthError::Invalid)
    );
    assert!(reopened.list().unwrap()[0].key.revoked_ms.is_some());
    // Expiry: the key stops at its date.
    let (_, soon) = keys
        .create(NewKey {
            expires_ms: Some(NOON + 1_000),
            ..new_key("short")
        })
        .unwrap();
    assert!(auth
        .authenticate(peer(REMOTE), &bearer(soon.expose_secret()))
        .is_ok());
    clock.advance(1_000);
    assert_eq!(
        auth.authenticate(peer(REMOTE), &bearer(soon.expose_secret())),
        Err(AuthError::Invalid)
    );
}

#[test]
fn loopback_is_keyless_only_while_no_key_exists() {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(NOON));
    let keys = keys_at(&store, &clock);
    let auth = KeyAuth::new(keys.clone(), true);
    let none = HeaderMap::new();
    assert_eq!(auth.authenticate(peer(LOCAL), &none), Ok(Caller::local()));
    // An unrelated OLLAMA_API_KEY from a local client still works while keyless.
    assert_eq!(
        auth.authenticate(peer(LOCAL), &bearer("not-ours")),
        Ok(Caller::local())
    );
    assert_eq!(
        auth.authenticate(peer(REMOTE), &none),
        Err(AuthError::Missing)
    );
    assert!(!auth.has_keys());
    keys.create(new_key("first")).unwrap();
    assert!(auth.has_keys());
    assert_eq!(
        auth.authenticate(peer(LOCAL), &none),
        Err(AuthError::Missing)
    );
    assert_eq!(
        auth.authenticate(peer(LOCAL), &bearer("not-ours")),
        Err(AuthError::Invalid)
    );
}

#[test]
fn limits_of_zero_and_unknown_tiers_are_refused_at_creation() {
    let store = Arc::new(MemoryStore::new());
    let keys = keys_at(&store, &Arc::new(ManualClock::new(NOON)));
    let zero = NewKey {
        limits: Limits {
            rpm: Some(0),
            ..Limits::default()
        },
        ..new_key("z")
    };
    assert!(keys.create(zero).is_err());
    let tier = NewKey {
        tiers: Some(vec!["gold".into()]),
        ..new_key("t")
    };
    assert!(keys.create(tier).unwrap_err().to_string().contains("gold"));
    assert!(keys.create(new_key(" ")).is_err());
}

fn request(selector: ModelSelector) -> CompletionRequest {
    CompletionRequest {
        conversation: ConversationKey("api:x".into()),
        user: UserRef::new(Platform::Api, "x"),
        chat: ChatRef::new(Platform::Api, "x"),
        system_prompt: String::new(),
        history: Vec::new(),
        prompt: ChatMessage::new(Role::User, "hi"),
        model: None,
        selector,
        params: crate::generation::GenerationParams::default(),
        sticky: false,
        paid_allowed: true,
        max_tokens: Some(10),
    }
}

#[test]
fn a_free_only_key_is_refused_paid_models_and_routes_auto_free_only() {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(NOON));
    let keys = keys_at(&store, &clock);
    let (_, key) = keys
        .create(NewKey {
            tiers: Some(vec!["free".into()]),
            ..new_key("friend")
        })
        .unwrap();
    let caller = KeyAuth::new(keys.clone(), true)
        .authenticate(peer(REMOTE), &bearer(key.expose_secret()))
        .unwrap();
    let gate = caller.gate.0.clone().unwrap();
    let router = FakeRouter::answering(Vec::new());
    let mut paid = request(ModelSelector::Exact("vendor/m-paid-70b".into()));
    let e = gate
        .permit(Surface::OpenAi, &*router, &mut paid, "vendor/m-paid-70b")
        .unwrap_err();
    assert_eq!(e.status.as_u16(), 403);
    assert!(e.message.contains("paid"), "{}", e.message);
    let mut paid = request(ModelSelector::PaidOnly);
    assert!(gate
        .permit(Surface::OpenAi, &*router, &mut paid, "paid")
        .is_err());
    let mut auto = request(ModelSelector::Policy);
    gate.permit(Surface::OpenAi, &*router, &mut auto, "auto")
        .unwrap();
    assert_eq!(auto.selector, ModelSelector::FreeOnly);
    assert!(!auto.paid_allowed);
    let mut free = request(ModelSelector::Exact("m-free".into()));
    assert!(gate
        .permit(Surface::OpenAi, &*router, &mut free, "m-free")
        .is_ok());
    assert_eq!(keys.ledger.today(gate.id(), NOON).refused, 2);
}

#[test]
fn a_ticket_settles_its_tokens_and_a_dropped_one_counts_as_failed() {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(NOON));
    let keys = keys_at(&store, &clock);
    let (_, key) = keys
        .create(NewKey {
            limits: Limits {
                daily_tokens: Some(1_000),
                concurrency: Some(1),
                ..Limits::default()
            },
            ..new_key("budget")
        })
        .unwrap();
    let caller = KeyAuth::new(keys.clone(), true)
        .authenticate(peer(REMOTE), &bearer(key.expose_secret()))
        .unwrap();
    let gate = caller.gate.0.clone().unwrap();
    let Ok(mut ticket) = gate.admit(Surface::OpenAi, &request(ModelSelector::Policy)) else {
        panic!("refused")
    };
    // Concurrency 1: a second request waits for the first.
    let Err(busy) = gate.admit(Surface::OpenAi, &request(ModelSelector::Policy)) else {
        panic!("admitted beyond the concurrency limit")
    };
    assert_eq!(busy.status.as_u16(), 429);
    ticket.observe(&crate::api::tests::finished());
    assert_eq!(gate.snapshot().tokens.map(|t| t.1), Some(995));
    let Ok(ticket) = gate.admit(Surface::OpenAi, &request(ModelSelector::Policy)) else {
        panic!("refused")
    };
    drop(ticket);
    let day = keys.ledger.today(gate.id(), NOON);
    assert_eq!((day.answered, day.failed, day.refused), (1, 1, 1));
    assert_eq!((day.prompt_tokens, day.completion_tokens), (3, 2));
    assert_eq!(keys.in_flight(), 0);
}

#[test]
fn a_refusal_far_from_its_reset_says_not_to_retry_and_a_near_one_does_not() {
    use super::admission::{Refusal, Which};
    use super::gate::refusal_error;
    use axum::response::IntoResponse as _;
    use std::time::Duration;
    let daily = Refusal {
        which: Which::DailyRequests,
        limit: 100,
        retry_after: Duration::from_secs(5 * 3600),
    };
    let r = refusal_error(Surface::OpenAi, daily).into_response();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "18000");
    assert_eq!(r.headers()["x-should-retry"], "false");
    let minute = Refusal {
        which: Which::Rpm,
        limit: 10,
        retry_after: Duration::from_millis(41_500),
    };
    let r = refusal_error(Surface::Ollama, minute).into_response();
    assert_eq!(r.headers()["retry-after"], "42");
    assert!(r.headers().get("x-should-retry").is_none());
}
