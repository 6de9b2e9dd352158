//! Who is calling ("Client API keys", issue 14). A [`ClientAuth`] turns a request's peer address and
//! headers into a [`Caller`] (its id, what it may use, its limits and its admission gate) or a 401.
//! [`LoopbackOnly`] knows no keys: a loopback peer is the local single user, anyone else is refused.
//! [`KeyAuth`] checks `Authorization: Bearer sb-…` keys against the key store in constant time; while no
//! key exists, loopback stays keyless. The middleware [`authenticate`] guards every route but `/` and
//! `/api/version`, keeps `/metrics`, `/usage` and `/health`'s detail for operators (an operator key, or
//! loopback when `[api] operator_access = "loopback"`), and puts the key's `x-ratelimit-*` headers on
//! every response.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, Surface};
use super::keys::gate::Gate;
use super::keys::secret::Presented;
use super::keys::Keys;
use crate::domain::{Platform, TierName, UserRef};

/// The caller id of the local single user (loopback without keys); usage is counted under it.
pub const LOCAL_CALLER: &str = "local";

/// Limits a caller's key carries; all `None` for the local caller. Enforced by the key store's
/// admission (issue 14), carried here so handlers and headers can see them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallerLimits {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Requests per UTC day.
    pub daily_requests: Option<u64>,
    /// Tokens per UTC day.
    pub daily_tokens: Option<u64>,
    /// Requests in flight at once.
    pub concurrency: Option<u32>,
}

/// A key caller's admission gate (none for the local caller). Compared by identity; its `Debug` names
/// the key's public id only.
#[derive(Clone, Default)]
pub struct CallerGate(pub Option<Arc<Gate>>);

impl std::fmt::Debug for CallerGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(g) => write!(f, "CallerGate({})", g.id()),
            None => f.write_str("CallerGate(none)"),
        }
    }
}

impl PartialEq for CallerGate {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for CallerGate {}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Its id (a key's public id, or [`LOCAL_CALLER`]); never the secret.
    pub id: String,
    /// The tiers it may use; `None` for all.
    pub tiers: Option<Vec<TierName>>,
    /// The models it may use; `None` for all.
    pub models: Option<Vec<String>>,
    /// Its limits.
    pub limits: CallerLimits,
    /// Whether it may read `/metrics`, `/usage` and `/health`'s detail.
    pub operator: bool,
    /// Its key's admission (none for the local caller).
    pub gate: CallerGate,
}

impl Caller {
    /// The local single user: everything allowed, no limits.
    pub fn local() -> Self {
        Self {
            id: LOCAL_CALLER.into(),
            tiers: None,
            models: None,
            limits: CallerLimits::default(),
            operator: true,
            gate: CallerGate::default(),
        }
    }

    /// Someone without a key where none is required (`/health`'s status): no operator rights.
    pub fn anonymous() -> Self {
        Self {
            id: "anonymous".into(),
            operator: false,
            ..Self::local()
        }
    }

    /// The caller behind a key `entry` of `keys`.
    pub fn of_key(keys: &Arc<Keys>, entry: Arc<super::keys::KeyEntry>) -> Self {
        let r = &entry.record;
        let l = &r.limits;
        Self {
            id: r.id.clone(),
            tiers: r
                .tiers
                .as_ref()
                .map(|t| t.iter().cloned().map(TierName).collect()),
            models: r.models.clone(),
            limits: CallerLimits {
                requests_per_minute: l.rpm,
                daily_requests: l.daily_requests,
                daily_tokens: l.daily_tokens,
                concurrency: l.concurrency,
            },
            operator: r.operator,
            gate: CallerGate(Some(Arc::new(Gate::new(keys.clone(), entry)))),
        }
    }

    /// The user the router counts this caller's usage under (`api:<id>`).
    pub fn user(&self) -> UserRef {
        UserRef::new(Platform::Api, self.id.clone())
    }

    /// Whether this caller may use a paid tier at all.
    pub fn paid_allowed(&self) -> bool {
        self.tiers
            .as_ref()
            .is_none_or(|tiers| tiers.iter().any(TierName::is_paid))
    }

    /// Whether this caller may see and use `model` (by name and tier).
    pub fn may_use(&self, model: &str, tier: &TierName) -> bool {
        self.models
            .as_ref()
            .is_none_or(|m| m.iter().any(|n| n == model))
            && self.tiers.as_ref().is_none_or(|t| t.contains(tier))
    }
}

/// Why a request was not authenticated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No key was given, and the peer is not loopback.
    #[error("an API key is required from this address (Authorization: Bearer …)")]
    Missing,
    /// The key is unknown, revoked or expired.
    #[error("the API key is not valid")]
    Invalid,
}

/// Authenticates requests. Implementations must compare secrets in constant time and never log them.
pub trait ClientAuth: Send + Sync + 'static {
    /// The caller behind a request from `peer` with `headers`.
    fn authenticate(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<Caller, AuthError>;

    /// Whether any client key is configured: listening beyond loopback needs one.
    fn has_keys(&self) -> bool;

    /// The key store behind this authenticator, if any (for `/usage` and `/v1/usage`).
    fn keys(&self) -> Option<Arc<Keys>> {
        None
    }

    /// Whether a loopback peer may read the operator routes without an operator key.
    fn loopback_is_operator(&self) -> bool {
        true
    }
}

/// Client keys from the key store. A request with a key must present a valid one (401 otherwise);
/// without a key, a loopback peer is the local caller only while no key exists.
#[derive(Clone, Debug)]
pub struct KeyAuth {
    keys: Arc<Keys>,
    loopback_is_operator: bool,
}

impl KeyAuth {
    /// Authenticates against `keys`; `loopback_is_operator` from `[api] operator_access`.
    pub fn new(keys: Arc<Keys>, loopback_is_operator: bool) -> Self {
        Self {
            keys,
            loopback_is_operator,
        }
    }
}

impl ClientAuth for KeyAuth {
    fn authenticate(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let keyless_local = || peer.ip().is_loopback() && !self.keys.any_active();
        match Presented::from_headers(headers) {
            Ok(Some(presented)) => self
                .keys
                .authenticate(&presented)
                .map(|entry| Caller::of_key(&self.keys, entry))
                .ok_or(AuthError::Invalid),
            // A local client sending some other token (an unrelated OLLAMA_API_KEY) keeps working
            // while the setup is keyless.
            Ok(None) | Err(_) if keyless_local() => Ok(Caller::local()),
            Ok(None) => Err(AuthError::Missing),
            Err(_) => Err(AuthError::Invalid),
        }
    }

    fn has_keys(&self) -> bool {
        self.keys.any_active()
    }

    fn keys(&self) -> Option<Arc<Keys>> {
        Some(self.keys.clone())
    }

    fn loopback_is_operator(&self) -> bool {
        self.loopback_is_operator
    }
}

/// No keys: loopback peers are the local caller, everyone else gets 401.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoopbackOnly;

impl ClientAuth for LoopbackOnly {
    fn authenticate(&self, peer: SocketAddr, _headers: &HeaderMap) -> Result<Caller, AuthError> {
        if peer.ip().is_loopback() {
            Ok(Caller::local())
        } else {
            Err(AuthError::Missing)
        }
    }

    fn has_keys(&self) -> bool {
        false
    }
}

/// How a path is guarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guard {
    /// Anyone: Ollama clients probe `/` and `/api/version` to see whether a server is there.
    Open,
    /// `/health`: anyone sees the status, operators the detail.
    Probe,
    /// `/metrics`, `/usage`: operators only.
    Operator,
    /// Everything else: a valid key (or the keyless local caller).
    Client,
}

fn guard(path: &str) -> Guard {
    match path {
        "/" | "/api/version" => Guard::Open,
        "/health" => Guard::Probe,
        "/metrics" | "/usage" => Guard::Operator,
        _ => Guard::Client,
    }
}

/// The caller of a request on `path`, or the refusal (401, or 403 for a non-operator on an operator
/// route).
fn caller_for(
    auth: &dyn ClientAuth,
    peer: SocketAddr,
    path: &str,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let surface = Surface::of_path(path);
    let loopback_operator = peer.ip().is_loopback() && auth.loopback_is_operator();
    let guard = guard(path);
    if guard == Guard::Open {
        return Ok(Caller::local());
    }
    let refused = |e: AuthError| ApiError::new(surface, StatusCode::UNAUTHORIZED, e.to_string());
    match (guard, auth.authenticate(peer, headers)) {
        (Guard::Probe | Guard::Operator, Err(AuthError::Missing)) if loopback_operator => {
            Ok(Caller::local())
        }
        (Guard::Probe, Err(_)) => Ok(Caller::anonymous()),
        (Guard::Operator, Ok(c)) if !c.operator && !loopback_operator => Err(ApiError::new(
            surface,
            StatusCode::FORBIDDEN,
            "this route is for operators: use an operator key (keys create --operator)",
        )),
        (Guard::Operator, Ok(mut c)) => {
            c.operator = true;
            Ok(c)
        }
        (_, Ok(c)) => Ok(c),
        (_, Err(e)) => Err(refused(e)),
    }
}

/// The middleware: authenticates every request (see [`Guard`]), puts the [`Caller`] into the
/// request's extensions for the handlers, and adds the key's rate-limit headers to the response.
pub async fn authenticate(
    State(auth): State<Arc<dyn ClientAuth>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match caller_for(&*auth, peer, request.uri().path(), request.headers()) {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    let gate = caller.gate.0.clone();
    request.extensions_mut().insert(caller);
    let mut response = next.run(request).await;
    if let Some(gate) = gate {
        rate_headers(&gate.snapshot(), response.headers_mut());
    }
    response
}

/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (OpenAI's names; resets in seconds as
/// `17s`) for the limits a key has.
pub fn rate_headers(snapshot: &super::keys::admission::Snapshot, headers: &mut HeaderMap) {
    use axum::http::HeaderValue;
    for (kind, figures) in [("requests", snapshot.requests), ("tokens", snapshot.tokens)] {
        let Some((limit, remaining, reset)) = figures else {
            continue;
        };
        let secs = reset.as_secs() + u64::from(reset.subsec_nanos() > 0);
        for (name, value) in [
            ("limit", limit.to_string()),
            ("remaining", remaining.to_string()),
            ("reset", format!("{secs}s")),
        ] {
            if let (Ok(n), Ok(v)) = (
                axum::http::HeaderName::try_from(format!("x-ratelimit-{name}-{kind}")),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(n, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_the_local_caller_and_anyone_else_is_refused() {
        let auth = LoopbackOnly;
        let headers = HeaderMap::new();
        let local = auth
            .authenticate("127.0.0.1:5000".parse().unwrap(), &headers)
            .unwrap();
        assert_eq!(local, Caller::local());
        assert!(auth
            .authenticate("[::1]:5000".parse().unwrap(), &headers)
            .is_ok());
        assert_eq!(
            auth.authenticate("192.168.1.9:5000".parse().unwrap(), &headers),
            Err(AuthError::Missing)
        );
        assert!(!auth.has_keys());
    }

    #[test]
    fn a_free_only_caller_may_not_use_paid_models() {
        let caller = Caller {
            tiers: Some(vec![TierName::free()]),
            ..Caller::local()
        };
        assert!(!caller.paid_allowed());
        assert!(caller.may_use("m", &TierName::free()));
        assert!(!caller.may_use("m", &TierName::paid()));
        assert!(Caller::local().paid_allowed());
    }

    #[test]
    fn operator_routes_take_loopback_or_an_operator_key_and_health_shows_status_to_anyone() {
        let remote: SocketAddr = "192.0.2.7:1".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let none = HeaderMap::new();
        let status =
            |r: Result<Caller, ApiError>| r.map(|c| c.operator).map_err(|e| e.status.as_u16());
        // Open probes: anyone.
        assert_eq!(
            status(caller_for(&LoopbackOnly, remote, "/api/version", &none)),
            Ok(true)
        );
        // /health: the status for anyone, the detail for operators.
        assert_eq!(
            status(caller_for(&LoopbackOnly, remote, "/health", &none)),
            Ok(false)
        );
        assert_eq!(
            status(caller_for(&LoopbackOnly, local, "/health", &none)),
            Ok(true)
        );
        // /metrics: loopback yes, elsewhere a key is needed.
        assert_eq!(
            status(caller_for(&LoopbackOnly, local, "/metrics", &none)),
            Ok(true)
        );
        assert_eq!(
            status(caller_for(&LoopbackOnly, remote, "/metrics", &none)),
            Err(401)
        );
        assert_eq!(
            status(caller_for(&LoopbackOnly, remote, "/api/tags", &none)),
            Err(401)
        );
    }
}
