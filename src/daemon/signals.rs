//! Process signals as a stream of [`Signal`]s: SIGTERM (systemd stop) and SIGINT (Ctrl-C) stop, SIGHUP
//! reloads. Injected into [`super::serve`] so tests drive shutdown and reload without real signals.

use futures_util::stream::{self, Stream};
use tokio::signal::unix::{signal, SignalKind};

/// What a signal asks the daemon to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop taking messages, finish in-flight replies, flush, exit 0.
    Terminate,
    /// SIGHUP: reload the configuration file.
    Reload,
}

/// The process's SIGTERM, SIGINT and SIGHUP as a stream. Installing the handlers replaces the default
/// action (terminate), so call this before announcing `READY=1`.
pub fn unix_signals() -> std::io::Result<impl Stream<Item = Signal> + Send + Unpin + 'static> {
    struct Handlers {
        term: tokio::signal::unix::Signal,
        int: tokio::signal::unix::Signal,
        hup: tokio::signal::unix::Signal,
    }
    let handlers = Handlers {
        term: signal(SignalKind::terminate())?,
        int: signal(SignalKind::interrupt())?,
        hup: signal(SignalKind::hangup())?,
    };
    Ok(Box::pin(stream::unfold(handlers, |mut h| async move {
        let sig = tokio::select! {
            Some(()) = h.term.recv() => Signal::Terminate,
            Some(()) = h.int.recv() => Signal::Terminate,
            Some(()) = h.hup.recv() => Signal::Reload,
            else => return None,
        };
        Some((sig, h))
    })))
}
