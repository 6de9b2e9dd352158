//! The configuration model: one TOML file, overridden by `SWITCHBOARD__SECTION__KEY` environment variables,
//! validated once at start-up into typed sections. Secrets are never part of it: they come from the
//! environment, `*_FILE` variables or `$CREDENTIALS_DIRECTORY` ([`secrets`]), so the config itself may be
//! logged. Every error names the key, what is wrong and how to fix it; the process then exits 78.

pub mod access;
pub mod api;
pub mod daemon;
pub mod discord;
pub mod env;
pub mod media;
pub mod providers;
pub mod secrets;
pub mod telegram;
mod toml_error;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use self::env::Env;
pub use self::secrets::Secrets;

/// The default config path under systemd (`ConfigurationDirectory=switchboard`).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/switchboard/switchboard.toml";
/// The fallback config path for development.
pub const LOCAL_CONFIG_PATH: &str = "./switchboard.toml";
/// Prefix of environment variables that override config keys: `SWITCHBOARD__TELEGRAM__API_URL`.
pub const ENV_PREFIX: &str = "SWITCHBOARD__";

/// A configuration problem, phrased for the operator.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("configuration error at `{key}`: {problem}. Fix: {fix}")]
pub struct ConfigError {
    /// The key (`telegram.api_url`), variable (`TELEGRAM_BOT_TOKEN`) or file at fault.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl ConfigError {
    /// A config error for `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// The whole configuration. Every section has defaults, so an empty file is valid.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where and how history is kept.
    pub store: StoreConfig,
    /// Conversation behaviour.
    pub core: CoreConfig,
    /// Who may talk to the bot, and limits.
    pub access: access::AccessConfig,
    /// Tiers and routing policy.
    pub router: providers::RouterConfig,
    /// OpenRouter (the free tier).
    pub openrouter: providers::OpenRouterConfig,
    /// Ollama Cloud (the paid tier).
    pub ollama: providers::OllamaConfig,
    /// Extra tiers after the default ones (local Ollama, any OpenAI-compatible server).
    pub tiers: Vec<providers::ExtraTierConfig>,
    /// The Telegram adapter.
    pub telegram: telegram::TelegramConfig,
    /// The Discord adapter.
    pub discord: discord::DiscordConfig,
    /// Service behaviour: shutdown, watchdog, logs.
    pub daemon: daemon::DaemonConfig,
    /// The local LLM API (Ollama- and OpenAI-compatible).
    pub api: api::ApiConfig,
    /// Limits for images and files people send.
    pub media: media::MediaConfig,
}

/// `[store]`: the sled database and retention.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The state directory; the database lives in `<dir>/db`. Default: `$STATE_DIRECTORY` under systemd,
    /// else `./state`.
    pub dir: Option<PathBuf>,
    /// sled's page cache in MiB, filled only as the history is used. 64 MiB keeps a turn's append under
    /// 0.5 ms at p99 with a million stored messages (docs/bench-store.md) while staying small for a server.
    pub cache_mb: u64,
    /// Keep at most this many turns per conversation (0 = unlimited).
    pub max_turns: usize,
    /// Forget turns older than this many days (0 = never).
    pub max_age_days: u64,
    /// How many recent turns are loaded as candidate context for a reply (then trimmed to the model's
    /// window). 200 covers any realistic window while keeping a load under a millisecond.
    pub load_turns: usize,
    /// Compact the database at start-up when its size on disk is more than this many times its live data
    /// (0 = never). A fresh copy sits at 2–3 times, so 8 fires only on real bloat (the why is in
    /// `store::sled_store::compact`).
    pub compact_ratio: u64,
    /// …and only when it takes at least this many MiB on disk: below that, sled's fixed overhead dominates
    /// the ratio and a compaction wins nothing worth a slower start.
    pub compact_min_mb: u64,
    /// Usage counters (requests and tokens per user, chat and model) are held in memory and written
    /// every this many seconds and at shutdown, instead of on every turn: at most this much counting is
    /// lost in a crash (0 = write on every turn). The default, 5 s, turns a busy chat's dozens of counter
    /// rewrites into one while a crash loses a few messages' worth of statistics. The why is in
    /// `store::coalesce`.
    pub counter_flush_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            dir: None,
            cache_mb: 64,
            max_turns: 1000,
            max_age_days: 90,
            load_turns: 200,
            compact_ratio: 8,
            compact_min_mb: 64,
            counter_flush_secs: 5,
        }
    }
}

impl StoreConfig {
    /// The state directory in force: the configured one, else `$STATE_DIRECTORY`, else `./state`.
    pub fn state_dir(&self, env: &Env) -> PathBuf {
        if let Some(dir) = &self.dir {
            return dir.clone();
        }
        // systemd may pass several colon-separated directories; the first is ours.
        env.get("STATE_DIRECTORY")
            .and_then(|v| v.split(':').next().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("./state"))
    }
}

/// How conversations are scoped in group chats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One conversation per chat (everyone shares the history).
    #[default]
    Chat,
    /// One conversation per person within each chat.
    User,
}

/// What start-up does with a reply that a crash cut short (`core.recovery`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recovery {
    /// The partial reply gets a note that a restart cut it short, and the question is answered again.
    #[default]
    Reanswer,
    /// Only the note; the user asks again if they want to.
    Note,
}

/// `[core]`: conversation behaviour.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoreConfig {
    /// The system prompt for every chat without its own (`/system`).
    pub system_prompt: String,
    /// Conversation scope in group chats (direct chats are always per person).
    pub scope: Scope,
    /// At most this many replies are generated at once across all conversations; more wait their turn.
    /// 64 keeps a 2-core server responsive while providers stream.
    pub max_concurrent_turns: usize,
    /// Longer messages are refused politely: bounded work per message (reliability row 19).
    pub max_input_chars: usize,
    /// Seconds an answer may take from first request to last token before it is cut.
    pub turn_deadline_secs: u64,
    /// The most tokens one answer may have, sent to every model (`max_tokens` / `num_predict`). 1024
    /// tokens is about 750 words: a full chat answer, a screen of code, at most a few messages; without a
    /// cap a rambling model streams for the whole turn deadline and floods the chat with edits.
    pub max_tokens: u32,
    /// The cap in a chat that turned long answers on with `/long`: 8192 tokens (about 6,000 words) fits
    /// an essay or a long file and every model's output limit we route to.
    pub long_max_tokens: u32,
    /// What start-up does with replies a crash cut short (see [`Recovery`]).
    pub recovery: Recovery,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            system_prompt:
                "You are switchboard, a helpful assistant in a chat. Answer clearly and concisely; \
                            use Markdown where it helps."
                    .into(),
            scope: Scope::Chat,
            max_concurrent_turns: 64,
            max_input_chars: 16_000,
            turn_deadline_secs: 300,
            max_tokens: 1024,
            long_max_tokens: 8192,
            recovery: Recovery::Reanswer,
        }
    }
}

/// Where the config file is: `--config`, else `/etc/switchboard/switchboard.toml` if it exists, else
/// `./switchboard.toml` if it exists, else none (all defaults).
pub fn resolve_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    [DEFAULT_CONFIG_PATH, LOCAL_CONFIG_PATH]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Reads, overrides and validates the configuration. `path` is `None` for an all-defaults config.
pub fn load(path: Option<&Path>, env: &Env) -> Result<Config, ConfigError> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p).map_err(|e| {
            ConfigError::new(
                p.display().to_string(),
                format!("cannot read the config file ({e})"),
                "check the path given with --config and its permissions",
            )
        })?,
        None => String::new(),
    };
    let source = path.map_or_else(|| "<defaults>".to_string(), |p| p.display().to_string());
    parse(&text, &source, env)
}

/// Parses config text, applies environment overrides and validates.
pub fn parse(text: &str, source: &str, env: &Env) -> Result<Config, ConfigError> {
    let mut value: toml::Value =
        toml::from_str(text).map_err(|e| toml_error::syntax_error(text, source, &e))?;
    let overrides = env::apply_overrides(&mut value, env)?;
    let config: Config = serde_path_to_error::deserialize(value)
        .map_err(|e| {
            // The path includes an unknown key itself (`core.max_concurent_turns`).
            let key = e.path().to_string();
            let key = if key == "." { source.to_string() } else { key };
            let inner = e.into_inner().to_string();
            let fix = if inner.starts_with("unknown field") {
                "remove or correct the key (see config/switchboard.example.toml for every key)"
            } else {
                "give a value of the documented type (see config/switchboard.example.toml)"
            };
            ConfigError::new(key, inner, fix)
        })
        .map_err(|e| blame_override(e, &overrides))?;
    config
        .validate()
        .map_err(|e| blame_override(e, &overrides))?;
    Ok(config)
}

/// Points an error at the `SWITCHBOARD__…` variable that set its key, if one did: the file may be fine.
fn blame_override(mut error: ConfigError, overrides: &env::Overrides) -> ConfigError {
    if let Some(variable) = overrides.variable_for(&error.key) {
        error.problem = format!(
            "{} (set by the environment variable {variable})",
            error.problem
        );
        error.fix = format!("{} — in the environment variable {variable}", error.fix);
    }
    error
}

impl Config {
    /// Checks values that types alone cannot (ranges, URLs, cross-section rules).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.core.validate()?;
        self.store.validate()?;
        self.access.validate()?;
        self.router.validate()?;
        self.openrouter.validate()?;
        self.ollama.validate()?;
        for (i, tier) in self.tiers.iter().enumerate() {
            tier.validate(i)?;
        }
        self.telegram.validate()?;
        self.discord.validate()?;
        self.daemon.validate()?;
        self.api.validate()?;
        self.media.validate()?;
        Ok(())
    }
}

impl CoreConfig {
    /// Range checks of `[core]`.
    fn validate(&self) -> Result<(), ConfigError> {
        let core = self;
        check_range(
            "core.max_concurrent_turns",
            core.max_concurrent_turns,
            1,
            MAX_CONCURRENT_TURNS,
            "the number of replies generated at once",
            CoreConfig::default().max_concurrent_turns,
        )?;
        check_range(
            "core.max_input_chars",
            core.max_input_chars,
            1,
            MAX_INPUT_CHARS,
            "the longest message accepted, in characters",
            CoreConfig::default().max_input_chars,
        )?;
        check_range(
            "core.turn_deadline_secs",
            core.turn_deadline_secs,
            1,
            MAX_TURN_DEADLINE_SECS,
            "how long one answer may take, in seconds",
            CoreConfig::default().turn_deadline_secs,
        )?;
        check_range(
            "core.max_tokens",
            core.max_tokens,
            MIN_MAX_TOKENS,
            MAX_MAX_TOKENS,
            "the most tokens one answer may have",
            CoreConfig::default().max_tokens,
        )?;
        check_range(
            "core.long_max_tokens",
            core.long_max_tokens,
            core.max_tokens,
            MAX_MAX_TOKENS,
            "the answer cap after /long; at least core.max_tokens",
            CoreConfig::default().long_max_tokens,
        )?;
        check_range(
            "core.system_prompt",
            core.system_prompt.chars().count(),
            0,
            MAX_SYSTEM_PROMPT_CHARS,
            "its length in characters; a longer prompt crowds the conversation out of small windows",
            CoreConfig::default().system_prompt.chars().count(),
        )?;
        Ok(())
    }
}

impl StoreConfig {
    /// Range checks of `[store]`.
    fn validate(&self) -> Result<(), ConfigError> {
        let store = self;
        check_range(
            "store.cache_mb",
            store.cache_mb,
            1,
            MAX_CACHE_MB,
            "sled's page cache in MiB",
            StoreConfig::default().cache_mb,
        )?;
        check_range(
            "store.load_turns",
            store.load_turns,
            1,
            MAX_LOAD_TURNS,
            "how many recent turns each reply loads",
            StoreConfig::default().load_turns,
        )?;
        check_range(
            "store.counter_flush_secs",
            store.counter_flush_secs,
            0,
            MAX_COUNTER_FLUSH_SECS,
            "seconds between writes of the usage counters (the most a crash can lose); 0 writes every turn",
            StoreConfig::default().counter_flush_secs,
        )?;
        if store.compact_ratio != 0 {
            check_range(
                "store.compact_ratio",
                store.compact_ratio,
                MIN_COMPACT_RATIO,
                MAX_COMPACT_RATIO,
                "size on disk per live byte that triggers a start-up compaction; 0 turns it off",
                StoreConfig::default().compact_ratio,
            )?;
        }
        Ok(())
    }
}

/// Usage counters are written at least hourly: a longer interval would let a crash lose a day's
/// statistics and the per-user paid cap's count.
pub const MAX_COUNTER_FLUSH_SECS: u64 = 3600;

/// At most this many replies at once: each holds a provider connection (a socket), and past a few thousand
/// the process meets its file-descriptor limit long before any provider's; it is also far below the
/// largest semaphore tokio can build, which would otherwise panic at start-up.
pub const MAX_CONCURRENT_TURNS: usize = 10_000;
/// The longest message a config may allow: no model's window holds more than ~250k tokens (about a
/// million characters), and the limit is what keeps work per message bounded (reliability row 19).
pub const MAX_INPUT_CHARS: usize = 1_000_000;
/// An answer may be given at most an hour: far past the longest healthy reply, while stalled streams are
/// cut sooner by the providers' idle timeout anyway.
pub const MAX_TURN_DEADLINE_SECS: u64 = 3600;
/// An answer cap below 16 tokens cuts even a one-line answer mid-sentence: surely a mistake.
pub const MIN_MAX_TOKENS: u32 = 16;
/// No model we route to writes more than 128k tokens in one answer; a larger cap is a typo.
pub const MAX_MAX_TOKENS: u32 = 131_072;
/// The longest system prompt, in the config or set with `/system`: a longer one would crowd the
/// conversation itself out of an 8k-token window.
pub const MAX_SYSTEM_PROMPT_CHARS: usize = 4000;
/// sled's cache at most 64 GiB: anything larger is a unit mix-up (bytes or KiB given as MiB).
pub const MAX_CACHE_MB: u64 = 65_536;
/// The lowest compaction ratio accepted: a freshly compacted database already sits at 2–3 times its live
/// data, so a lower threshold would compact at every start-up for nothing.
pub const MIN_COMPACT_RATIO: u64 = 4;
/// The highest compaction ratio accepted: a database at a thousand times its live data has long filled
/// a small server's disk; a larger value is a typo for 0 (never).
pub const MAX_COMPACT_RATIO: u64 = 1000;
/// Each reply loads at most this many turns: no context window holds more, and a load of 10,000 turns
/// already costs more than a millisecond.
pub const MAX_LOAD_TURNS: usize = 10_000;

/// Checks `min <= value <= max` at `key`; the error gives the range, what the value means and the default.
fn check_range<T>(
    key: &str,
    value: T,
    min: T,
    max: T,
    meaning: &str,
    default: T,
) -> Result<(), ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if value >= min && value <= max {
        return Ok(());
    }
    Err(ConfigError::new(
        key,
        format!("{value} is outside {min}..={max} ({meaning})"),
        format!("set it between {min} and {max}, or leave it out for the default {default}"),
    ))
}

/// Checks that `value` at `key` is an absolute http(s) URL with a host, parsed as the HTTP clients
/// parse it: a typo (a space, a bad port) stops the start-up here, naming the key, instead of failing
/// every request later as a connect error.
pub fn validate_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let why = match url::Url::parse(value) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            format!("its scheme is `{}`, not http or https", u.scheme())
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => "it has no host".to_owned(),
        Ok(_) => return Ok(()),
        Err(e) => format!("it does not parse ({e})"),
    };
    // A URL may carry credentials (a proxy's `user:password@`): such a value is not repeated.
    let shown = if value.contains('@') {
        "the URL".to_owned()
    } else {
        format!("`{value}`")
    };
    Err(ConfigError::new(
        key,
        format!("{shown} is not a usable http(s) URL: {why}"),
        "give a full URL such as https://example.org/api",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_parsed_as_the_clients_parse_it() {
        for good in [
            "https://openrouter.ai/api/v1",
            "http://127.0.0.1:11434",
            "http://[::1]:8080/x/",
            "http://user:pw@proxy.example:3128",
        ] {
            assert!(validate_url("k", good).is_ok(), "{good}");
        }
        for bad in [
            "openrouter.ai/api",
            "ftp://example.org",
            "http://",
            "https://exa mple.org",
            "http://127.0.0.1:99999",
        ] {
            let e = validate_url("k", bad).unwrap_err().to_string();
            assert!(e.contains("not a usable http(s) URL"), "{bad}: {e}");
        }
        let e = validate_url("k", "socks5://user:secret@proxy:1080")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn empty_config_is_valid() {
        let config = parse("", "<test>", &Env::default()).unwrap();
        assert_eq!(config.core.max_concurrent_turns, 64);
    }

    #[test]
    fn the_answer_caps_default_for_chat_and_are_validated() {
        let config = parse("", "<test>", &Env::default()).unwrap();
        assert_eq!(
            (config.core.max_tokens, config.core.long_max_tokens),
            (1024, 8192)
        );
        for (toml, key) in [
            ("[core]\nmax_tokens = 0\n", "core.max_tokens"),
            (
                "[core]\nmax_tokens = 2000\nlong_max_tokens = 1000\n",
                "core.long_max_tokens",
            ),
        ] {
            assert_eq!(parse(toml, "<test>", &Env::default()).unwrap_err().key, key);
        }
    }

    #[test]
    fn unknown_key_names_the_full_dotted_path() {
        let err = parse("[core]\nsytem_prompt = \"x\"\n", "<test>", &Env::default()).unwrap_err();
        assert_eq!(err.key, "core.sytem_prompt");
        assert!(err.problem.contains("unknown field"), "{err}");
        let err = parse("[coer]\nx = 1\n", "<test>", &Env::default()).unwrap_err();
        assert_eq!(err.key, "coer");
        let err = parse(
            "[[tiers]]\nname = \"local\"\nkind = \"ollama\"\nbase_url = \"http://127.0.0.1:1\"\nmodles = []\n",
            "<test>",
            &Env::default(),
        )
        .unwrap_err();
        assert_eq!(err.key, "tiers[0].modles", "{err}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = parse(
            "[core]\nmax_concurrent_turns = \"many\"\n",
            "<test>",
            &Env::default(),
        )
        .unwrap_err();
        assert_eq!(err.key, "core.max_concurrent_turns");
    }

    #[test]
    fn nonsense_values_are_refused_naming_the_key_and_the_fix() {
        let long_prompt = format!("[core]\nsystem_prompt = \"{}\"\n", "x".repeat(4001));
        for (toml, key) in [
            (
                "[core]\nturn_deadline_secs = 0\n",
                "core.turn_deadline_secs",
            ),
            (
                "[core]\nturn_deadline_secs = 86400\n",
                "core.turn_deadline_secs",
            ),
            (
                "[core]\nmax_concurrent_turns = 4611686018427387904\n",
                "core.max_concurrent_turns",
            ),
            ("[core]\nmax_input_chars = 0\n", "core.max_input_chars"),
            (
                "[core]\nmax_input_chars = 50000000\n",
                "core.max_input_chars",
            ),
            (long_prompt.as_str(), "core.system_prompt"),
            ("[store]\ncache_mb = 0\n", "store.cache_mb"),
            ("[store]\ncache_mb = 67108864\n", "store.cache_mb"),
            ("[store]\nload_turns = 0\n", "store.load_turns"),
            ("[store]\nload_turns = 1000000\n", "store.load_turns"),
            (
                "[store]\ncounter_flush_secs = 3601\n",
                "store.counter_flush_secs",
            ),
        ] {
            let err = parse(toml, "<test>", &Env::default()).unwrap_err();
            assert_eq!(err.key, key, "{err}");
            assert!(
                err.fix.contains("between") && err.fix.contains("default"),
                "{err}"
            );
        }
        let err = parse(
            "[core]\nturn_deadline_secs = 0\n",
            "<test>",
            &Env::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration error at `core.turn_deadline_secs`: 0 is outside 1..=3600 (how long one \
             answer may take, in seconds). Fix: set it between 1 and 3600, or leave it out for the \
             default 300"
        );
    }

    #[test]
    fn range_check_names_the_key() {
        let err = parse(
            "[core]\nmax_concurrent_turns = 0\n",
            "<test>",
            &Env::default(),
        )
        .unwrap_err();
        assert_eq!(err.key, "core.max_concurrent_turns");
        assert!(err.to_string().contains("Fix:"));
    }
}
