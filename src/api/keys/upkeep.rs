//! The keys' part of the running daemon, as one more adapter: serves the admin socket and writes the
//! usage ledger once a second; at shutdown waits for the API's answers in flight to settle (within the
//! grace) and writes the ledger a last time.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{admin, Keys};
use crate::exit::Fatal;
use crate::platforms::{AdapterContext, PlatformAdapter};

/// The ledger is written at most this often per key and day: a busy key costs one store write a
/// second, and a crash loses at most a second of counts.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// While stopping, how often to look whether the answers in flight have settled.
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// The admin socket and ledger upkeep.
pub struct KeysUpkeep {
    keys: Arc<Keys>,
    socket: std::path::PathBuf,
}

impl KeysUpkeep {
    /// Upkeep for `keys`, with the admin socket at `socket`.
    pub fn new(keys: Arc<Keys>, socket: std::path::PathBuf) -> Self {
        Self { keys, socket }
    }

    fn flush(&self) {
        if let Err(e) = self.keys.ledger.flush(self.keys.now_ms()) {
            tracing::warn!(error = %e, "writing the API key usage ledger failed; will retry");
        }
    }
}

impl PlatformAdapter for KeysUpkeep {
    fn name(&self) -> &'static str {
        "keys"
    }

    fn run(self: Box<Self>, ctx: AdapterContext) -> BoxFuture<'static, Result<(), Fatal>> {
        Box::pin(async move {
            let health = ctx.health.status_only("keys");
            let stop_socket = tokio_util::sync::CancellationToken::new();
            match admin::bind(&self.socket) {
                Ok(listener) => {
                    tokio::spawn(admin::serve(
                        self.keys.clone(),
                        listener,
                        self.socket.clone(),
                        stop_socket.clone(),
                    ));
                    health.set_status("admin socket ready");
                }
                Err(e) => {
                    // Keys still work; only `switchboard keys` cannot reach this daemon.
                    tracing::warn!(error = %e, path = %self.socket.display(), "cannot open the admin socket; `switchboard keys` will not reach the running daemon");
                    health.set_status("no admin socket");
                }
            }
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            loop {
                tokio::select! {
                    () = ctx.intake.cancelled() => break,
                    _ = tick.tick() => self.flush(),
                }
            }
            stop_socket.cancel();
            let grace = Duration::from_secs(ctx.config.borrow().daemon.shutdown_grace_secs);
            let until = tokio::time::Instant::now() + grace + FLUSH_EVERY;
            while self.keys.in_flight() > 0 && tokio::time::Instant::now() < until {
                tokio::time::sleep(SETTLE_POLL).await;
            }
            self.flush();
            health.set_status("stopped");
            Ok(())
        })
    }
}
