//! Log setup: one event per line (human-readable for journald by default, JSON with `--log-format json`),
//! levels from `RUST_LOG` (default `info`). Nothing that holds a secret implements a `Debug` that shows it.

use tracing_subscriber::EnvFilter;

use crate::config::daemon::LogFormat;

/// Installs the global subscriber writing to stderr. Safe to call more than once (later calls are no-ops).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
