//! `[api]`: the local LLM API (Ollama- and OpenAI-compatible HTTP on one listener).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{check_range, ConfigError};

/// Ollama's own port, so every Ollama client finds switchboard with no setting changed.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:11434";
/// Images travel base64-encoded inside the JSON body: 20 MiB holds a few phone photos, and a body is
/// buffered whole before parsing, so the cap is what one request may cost in memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 20 * 1024 * 1024;
/// The router's own deadline (`router.deadline_secs`, 300 s) bounds one answer; the API's bound is the
/// same by default so a client never waits longer than a chat would.
pub const DEFAULT_REQUEST_DEADLINE_SECS: u64 = 300;

/// `[api]` settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Serve the API inside `switchboard run`. Off by default: a bot deployment opens no port unless
    /// the operator asks for one.
    pub enabled: bool,
    /// The address to listen on. A non-loopback address needs client keys (refused at start-up
    /// otherwise); port 0 picks a free port (tests), logged at start.
    pub listen: String,
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: usize,
    /// A request still answering after this many seconds ends: with 504 before the first byte, with an
    /// error event after it.
    pub request_deadline_secs: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: DEFAULT_LISTEN.into(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_deadline_secs: DEFAULT_REQUEST_DEADLINE_SECS,
        }
    }
}

impl ApiConfig {
    /// The listen address, parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            ConfigError::new(
                "api.listen",
                format!("`{}` is not an IP address and port", self.listen),
                format!("use e.g. {DEFAULT_LISTEN} (a host name is not accepted)"),
            )
        })
    }

    /// Checks the address and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        // Below 1 KiB not even a short chat request fits; above 1 GiB one request could exhaust memory.
        check_range(
            "api.max_body_bytes",
            self.max_body_bytes,
            1024,
            1 << 30,
            "bytes of one request body",
            DEFAULT_MAX_BODY_BYTES,
        )?;
        // A day is longer than any answer; 0 would refuse every request.
        check_range(
            "api.request_deadline_secs",
            self.request_deadline_secs,
            1,
            86_400,
            "seconds one request may take",
            DEFAULT_REQUEST_DEADLINE_SECS,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_ollamas_loopback_port_and_validate() {
        let c = ApiConfig::default();
        assert!(!c.enabled);
        assert_eq!(c.listen_addr().unwrap().to_string(), "127.0.0.1:11434");
        assert!(c.validate().is_ok());
    }

    #[test]
    fn a_host_name_or_a_zero_body_cap_is_refused_naming_the_key() {
        let c = ApiConfig {
            listen: "localhost:11434".into(),
            ..ApiConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "api.listen");
        let c = ApiConfig {
            max_body_bytes: 0,
            ..ApiConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "api.max_body_bytes");
    }
}
