//! Who is calling: the seam for client keys ("Client API keys", issue 14). A [`ClientAuth`] turns a
//! request's peer address and headers into a [`Caller`] (its id, what it may use, its limits) or a 401.
//! Today's implementation, [`LoopbackOnly`], knows no keys: a loopback peer is the local single user,
//! anyone else is refused. A key store plugs in behind the same trait (and brings the constant-time
//! comparison with it); the handlers only ever see a `Caller`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, Surface};
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
}

impl Caller {
    /// The local single user: everything allowed, no limits.
    pub fn local() -> Self {
        Self {
            id: LOCAL_CALLER.into(),
            tiers: None,
            models: None,
            limits: CallerLimits::default(),
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

/// Paths anyone may call without a key: Ollama clients probe them to see whether a server is there.
fn is_open_path(path: &str) -> bool {
    matches!(path, "/" | "/api/version")
}

/// The middleware: authenticates every request except the open paths and puts the [`Caller`] into the
/// request's extensions for the handlers.
pub async fn authenticate(
    State(auth): State<Arc<dyn ClientAuth>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if is_open_path(path) {
        request.extensions_mut().insert(Caller::local());
        return next.run(request).await;
    }
    match auth.authenticate(peer, request.headers()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => ApiError::new(
            Surface::of_path(path),
            StatusCode::UNAUTHORIZED,
            e.to_string(),
        )
        .into_response(),
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
}
