//! Log setup: one event per line on stderr — human-readable by default (for journald), JSON with
//! `--log-format json` or `[daemon].log_format = "json"` — with levels from `RUST_LOG` (unset:
//! [`DEFAULT_FILTER`]; the systemd unit leaves it unset so that default applies).
//! Secrets never reach a log line: nothing that holds one implements a `Debug` that shows it, keys are
//! logged by [`crate::secrets::fingerprint`], reqwest errors are stripped of their URL, and — for what an
//! upstream echoes back (an error body quoting the key, a percent-encoded bot URL) — every formatted line,
//! at every level and from every crate, passes [`crate::secrets::scrub`] on its way to stderr.

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;

use crate::config::daemon::LogFormat;

/// The default filter when `RUST_LOG` is unset: our own events at `info`, chatty dependencies (serenity's
/// gateway, hyper, rustls) only from `warn`, so a journal stays readable.
pub const DEFAULT_FILTER: &str = "info,serenity=warn,tracing=warn,hyper=warn,h2=warn,rustls=warn,\
                                  reqwest=warn,sled=warn";

/// Installs the global subscriber writing to stderr. Safe to call more than once (later calls are no-ops).
///
/// Under systemd (`$JOURNAL_STREAM` set, stderr connected to the journal) text lines carry no timestamp
/// of their own, since journald stamps every line; colours are used only on a terminal.
pub fn init(format: LogFormat) {
    init_with_default(format, DEFAULT_FILTER);
}

/// The filter for interactive commands (`chat`, `demo`) when `RUST_LOG` is unset: only warnings, so log
/// lines do not interleave with the conversation on the terminal.
pub const QUIET_FILTER: &str = "warn";

/// [`init`] with another default filter for when `RUST_LOG` is unset.
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let to_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| ScrubbedStderr(Vec::new()))
        .with_ansi(ansi)
        .with_target(false);
    let _ = match (format, to_journal) {
        (LogFormat::Text, false) => builder.try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Json, _) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// One log event on its way to stderr: buffered whole (the formatter writes an event, then drops its
/// writer), scrubbed of every installed secret, then written in one call so lines never interleave.
struct ScrubbedStderr(Vec<u8>);

impl Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ScrubbedStderr {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let _ = std::io::stderr().write_all(crate::secrets::scrub(&text).as_bytes());
    }
}
