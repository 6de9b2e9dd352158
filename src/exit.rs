//! Process exit codes and the fatal errors that map onto them. Documented in the README.

use std::process::ExitCode;

/// Clean exit.
pub const EXIT_OK: u8 = 0;
/// Unexpected failure (a bug, or an I/O error we could not handle). systemd restarts on it.
pub const EXIT_UNEXPECTED: u8 = 1;
/// Another instance holds the store lock or polls the same Telegram token (HTTP 409). Distinct so an
/// operator sees "two instances" at once; we never fight the other process, and the unit's
/// `RestartPreventExitStatus=73 78` keeps systemd from restarting us into the same 409 every `RestartSec`.
pub const EXIT_CONFLICT: u8 = 73;
/// A connection that cannot hold (a Discord reconnect storm): sysexits `EX_TEMPFAIL`. Not in
/// `RestartPreventExitStatus=`, so systemd restarts us after `RestartSec=` — the paced back-off a
/// library's immediate reconnect loop lacks — and an operator sees why in the exit status.
pub const EXIT_UNSTABLE: u8 = 75;
/// Configuration or credentials are wrong (sysexits `EX_CONFIG`). The unit sets
/// `RestartPreventExitStatus=73 78`, so a bad token does not crash-loop (and burn Discord identifies).
pub const EXIT_CONFIG: u8 = 78;

/// An error that ends the process, classified by what the operator must do about it.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    /// Fix the configuration or credentials; restarting will not help.
    #[error("{0}")]
    Config(String),
    /// Another instance holds something we need (the store, the Telegram token).
    #[error("{0}")]
    Conflict(String),
    /// A platform connection kept dropping; a fresh process (after systemd's pause) may hold it.
    #[error("{0}")]
    Unstable(String),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Fatal {
    /// The exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => EXIT_CONFIG,
            Self::Conflict(_) => EXIT_CONFLICT,
            Self::Unstable(_) => EXIT_UNSTABLE,
            Self::Other(_) => EXIT_UNEXPECTED,
        }
    }

    /// The process exit code for this error.
    pub fn to_exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit_code())
    }
}
