//! Platform adapters: each translates its platform's updates into [`crate::domain::Inbound`] and renders
//! the core's reply events back (typing, paced edits, splitting, formatting). Adapters know nothing of
//! each other; what they share lives in [`render`] (splitting long replies, Markdown handling) and
//! [`stream`] (the streaming renderer, behind a small per-platform `Surface`).

pub mod discord;
pub mod mention;
pub mod recovery;
pub mod render;
pub mod stream;
pub mod telegram;
pub mod terminal;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::core::Core;
use crate::exit::Fatal;
use crate::health::Health;
use crate::store::Store;

/// Everything an adapter gets from the daemon.
#[derive(Clone)]
pub struct AdapterContext {
    /// The conversation core: `core.handle(inbound)` answers a message.
    pub core: Arc<Core>,
    /// The store, for the adapter's own records (answered update ids, bot message → conversation maps).
    pub store: Arc<dyn Store>,
    /// Liveness and status reporting: register one component and beat from its loop.
    pub health: Health,
    /// The live configuration; SIGHUP publishes a new one (allow lists, pacing, policies).
    pub config: watch::Receiver<Arc<Config>>,
    /// Cancelled when the daemon stops taking new messages (SIGTERM/SIGINT). The adapter then stops
    /// reading new updates, keeps rendering replies already in flight (the core ends each one by the
    /// shutdown deadline), acknowledges what it handled, and returns.
    pub intake: CancellationToken,
}

/// A platform adapter the daemon runs.
pub trait PlatformAdapter: Send {
    /// `telegram`, `discord`, …: used in logs and the status line.
    fn name(&self) -> &'static str;

    /// Runs until `ctx.intake` is cancelled and in-flight replies are delivered, or a fatal error
    /// (bad token → [`Fatal::Config`], another instance → [`Fatal::Conflict`]).
    fn run(self: Box<Self>, ctx: AdapterContext) -> BoxFuture<'static, Result<(), Fatal>>;
}
