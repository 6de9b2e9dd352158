//! The local LLM API: an Ollama-compatible and an OpenAI-compatible surface on one listener, over the
//! same router, quota book and usage accounting as the bots (issue 13). It runs inside `switchboard run`
//! as one more adapter ([`ApiAdapter`]), sharing the daemon's shutdown, health and reload.
//!
//! - [`auth`]: the [`auth::ClientAuth`] seam (loopback-only today, client keys later) yielding a caller.
//! - [`json`], [`error`]: reading bodies (400 naming the field, 413) and each surface's error shape.
//! - [`convert`]: a client's messages as the router's request; [`dispatch`]: holding the response until
//!   the first content, then streaming or gathering it; [`reply`], [`stream`]: the reply's guards and
//!   the framed body.
//! - [`ollama`] and [`openai`]: the two surfaces' wire types, framing and routes.
//! - [`operator`], [`metrics`]: `/health` and `/metrics`.

pub mod auth;
pub mod catalog;
pub mod convert;
pub mod dispatch;
pub mod error;
pub mod json;
pub mod keys;
pub mod metrics;
pub mod ollama;
pub mod openai;
pub mod operator;
pub mod reply;
pub mod stream;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::exit::Fatal;
use crate::platforms::{AdapterContext, PlatformAdapter};
use crate::router::LlmRouter;

use self::auth::ClientAuth;
use self::error::Surface;
use self::metrics::Metrics;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// The router that answers.
    pub router: Arc<dyn LlmRouter>,
    /// Request and stream metrics.
    pub metrics: Arc<Metrics>,
    /// Wall-clock time (`created`, `created_at`).
    pub clock: SharedClock,
    /// When the server started (`/health` uptime, `/api/tags` `modified_at`).
    pub started: tokio::time::Instant,
    /// The configuration in force (the request deadline reloads live).
    pub config: watch::Receiver<Arc<Config>>,
    /// Cancelled when the daemon stops and its grace has passed: answers still streaming end with an
    /// error event.
    pub cut: CancellationToken,
}

impl ApiState {
    /// `[api].request_deadline_secs` in force.
    pub fn deadline_secs(&self) -> u64 {
        self.config.borrow().api.request_deadline_secs
    }
}

/// Every route of both surfaces, with authentication, the body cap and request metrics.
pub fn routes(state: ApiState, auth: Arc<dyn ClientAuth>, max_body_bytes: usize) -> axum::Router {
    let metrics = state.metrics.clone();
    let mut router = axum::Router::new()
        .merge(ollama::routes())
        .merge(openai::routes())
        .merge(operator::routes())
        .merge(keys::routes::routes())
        .with_state(state);
    if let Some(keys) = auth.keys() {
        router = router.layer(axum::Extension(keys));
    }
    router
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(auth, auth::authenticate))
        .layer(middleware::from_fn_with_state(metrics, count_request))
}

/// Counts every response by surface, route pattern (never the raw path: model names and providers
/// in paths would make the label set unbounded) and status.
async fn count_request(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    // A shared handle on the route's pattern, not a copy of its text.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let surface = Surface::of_path(request.uri().path());
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    metrics.request(surface.as_str(), route, response.status().as_u16());
    response
}

/// Binds the listener for `[api]`: refuses a non-loopback address without client keys (exit 78,
/// saying why) and logs the bound address.
pub async fn bind(
    config: &Config,
    auth: &dyn ClientAuth,
) -> Result<tokio::net::TcpListener, Fatal> {
    let addr = config
        .api
        .listen_addr()
        .map_err(|e| crate::daemon::config_fatal(&e))?;
    if !addr.ip().is_loopback() && !auth.has_keys() {
        return Err(Fatal::Config(format!(
            "configuration error at `api.listen`: {addr} is reachable from other machines, and no client \
             API keys are configured, so anyone who can reach it could spend your quota. Fix: listen on \
             127.0.0.1 (or ::1), or create client keys first"
        )));
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Fatal::Config(format!(
            "configuration error at `api.listen`: cannot listen on {addr}: {e}. Fix: pick a free port \
             (another Ollama may hold 11434), or stop the other server"
        ))
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| Fatal::Other(anyhow::anyhow!("reading the API's bound address: {e}")))?;
    info!("api listening on {bound}");
    Ok(listener)
}

/// The API as a daemon adapter: serves until intake stops, then lets answers in flight finish within
/// the daemon's grace before cutting them with an error event.
pub struct ApiAdapter {
    listener: tokio::net::TcpListener,
    router: Arc<dyn LlmRouter>,
    auth: Arc<dyn ClientAuth>,
    clock: SharedClock,
}

impl ApiAdapter {
    /// An adapter serving `listener` (from [`bind`]) over `router`.
    pub fn new(
        listener: tokio::net::TcpListener,
        router: Arc<dyn LlmRouter>,
        auth: Arc<dyn ClientAuth>,
        clock: SharedClock,
    ) -> Self {
        Self {
            listener,
            router,
            auth,
            clock,
        }
    }
}

impl PlatformAdapter for ApiAdapter {
    fn name(&self) -> &'static str {
        "api"
    }

    fn run(self: Box<Self>, ctx: AdapterContext) -> BoxFuture<'static, Result<(), Fatal>> {
        Box::pin(async move {
            let addr: Option<SocketAddr> = self.listener.local_addr().ok();
            let health = ctx.health.status_only("api");
            health
                .set_status(addr.map_or_else(|| "serving".into(), |a| format!("listening on {a}")));
            let config = ctx.config.borrow().clone();
            let cut = CancellationToken::new();
            let state = ApiState {
                router: self.router,
                metrics: Arc::new(Metrics::new()),
                clock: self.clock,
                started: tokio::time::Instant::now(),
                config: ctx.config.clone(),
                cut: cut.clone(),
            };
            let app = routes(state, self.auth, config.api.max_body_bytes);
            let intake = ctx.intake.clone();
            let grace = std::time::Duration::from_secs(config.daemon.shutdown_grace_secs);
            // After intake stops: new connections are refused, answers in flight get the grace, then
            // `cut` ends them with an error event so the server can return.
            let stopping = async move {
                intake.cancelled().await;
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    cut.cancel();
                });
            };
            // No Nagle: a streamed chunk (an SSE event, an NDJSON line) leaves at once instead of waiting
            // for the client's delayed ACK of the previous one (up to 40 ms on Linux): that wait was the
            // tail of the time to first token in the API benchmark.
            let listener = axum::serve::ListenerExt::tap_io(self.listener, |tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "api: could not set TCP_NODELAY");
                }
            });
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(stopping)
            .await;
            health.set_status("stopped");
            served.map_err(|e| {
                warn!(error = %e, "the API server failed");
                Fatal::Other(anyhow::anyhow!("the API server failed: {e}"))
            })
        })
    }
}
