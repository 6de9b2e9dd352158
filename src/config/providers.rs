//! `[router]`, `[openrouter]`, `[ollama]` and `[[tiers]]`: the routing policy and the provider endpoints.
//! Keys are not here: they are secrets (see [`super::secrets`]); this only says which account a key is on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{validate_url, ConfigError};

/// `[router]`: the policy switches.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Answer only from free tiers, never the paid one.
    pub free_only: bool,
    /// Whether the paid tier may be used at all.
    pub paid_enabled: bool,
    /// Paid-tier requests per UTC day across all users (0 = unlimited).
    pub paid_daily_cap: u64,
    /// Log a warning once a day when the estimated paid spend passes this many US dollars (0 = off).
    pub paid_spend_alert_usd: f64,
    /// Keep answering a conversation with the model that answered it while that model is healthy.
    pub sticky: bool,
    /// Connect timeout for every provider request, in seconds.
    pub connect_timeout_secs: u64,
    /// A stream that sends nothing (not even a keep-alive) for this long is stalled.
    pub idle_timeout_secs: u64,
    /// The whole request, from send to last byte, may take at most this long.
    pub deadline_secs: u64,
    /// How long an account that answered 402 (no credits) stays out. Credits come back only when someone
    /// buys them, which takes hours, and every attempt in between still counts against the daily quota:
    /// probing every few minutes would burn free requests for nothing. 6 hours by default.
    pub payment_cooldown_secs: u64,
    /// How often `GET /key` is asked for every OpenRouter account's remaining free requests, in seconds.
    /// Our own count is exact between refreshes; the refresh catches use by other programs on the same
    /// account. 15 minutes by default.
    pub quota_refresh_secs: u64,
    /// When every free account is only at its per-minute limit and the first one frees up within this
    /// many seconds, wait for it instead of answering from the paid tier (0 = never wait). A per-minute
    /// window frees within a minute, so a short wait saves money at the price of a slower answer; past a
    /// few seconds the user would rather have the paid answer now. 5 by default.
    pub free_wait_max_secs: u64,
    /// The order tiers are tried in, by name: `free`, `paid` and the `[[tiers]]` names. Tiers not listed
    /// follow in the default order (free, paid, then `[[tiers]]` as written). Empty = the default order.
    /// E.g. `["free", "local", "paid"]` asks a local Ollama before spending paid requests.
    pub tier_order: Vec<String>,
    /// Model names the local API accepts besides the real ones: `{ fast = "gpt-oss:120b", cheap =
    /// "free" }`. A target is a model some tier serves or a virtual name (`auto`, `free`, `paid`).
    pub aliases: BTreeMap<String, String>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            free_only: false,
            paid_enabled: true,
            paid_daily_cap: 2000,
            paid_spend_alert_usd: 5.0,
            sticky: true,
            connect_timeout_secs: 5,
            idle_timeout_secs: 60,
            deadline_secs: 300,
            payment_cooldown_secs: 6 * 3600,
            quota_refresh_secs: 15 * 60,
            free_wait_max_secs: 5,
            tier_order: Vec::new(),
            aliases: BTreeMap::new(),
        }
    }
}

impl RouterConfig {
    /// Checks that `tier_order` names only known tiers (`free`, `paid`, one of `extra`), each once.
    pub fn check_tier_order(&self, extra: &[ExtraTierConfig]) -> Result<(), ConfigError> {
        for (i, name) in self.tier_order.iter().enumerate() {
            let known = name == "free" || name == "paid" || extra.iter().any(|t| &t.name == name);
            if !known {
                let mut names = vec!["free".to_owned(), "paid".to_owned()];
                names.extend(extra.iter().map(|t| t.name.clone()));
                return Err(ConfigError::new(
                    format!("router.tier_order[{i}]"),
                    format!("names {name:?}, which is not a tier"),
                    format!("use the tier names {}", names.join(", ")),
                ));
            }
            if self.tier_order[..i].contains(name) {
                return Err(ConfigError::new(
                    format!("router.tier_order[{i}]"),
                    format!("lists {name:?} twice"),
                    "list each tier once",
                ));
            }
        }
        Ok(())
    }

    /// Checks timeouts are sensible.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("router.connect_timeout_secs", self.connect_timeout_secs),
            ("router.idle_timeout_secs", self.idle_timeout_secs),
            ("router.deadline_secs", self.deadline_secs),
            ("router.payment_cooldown_secs", self.payment_cooldown_secs),
            ("router.quota_refresh_secs", self.quota_refresh_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::new(
                    key,
                    "must be at least 1 second",
                    "use the default from config/switchboard.example.toml",
                ));
            }
        }
        Ok(())
    }
}

/// `[openrouter]`: the free tier.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenRouterConfig {
    /// API base URL (tests point it at a simulator on 127.0.0.1).
    pub base_url: String,
    /// Sent as `HTTP-Referer` (app attribution).
    pub referer: String,
    /// Sent as `X-Title` (app attribution).
    pub title: String,
    /// Free models to try in order; `openrouter/free` lets OpenRouter pick one.
    pub free_models: Vec<String>,
    /// Which account each key belongs to, by variable name: `{ OPENROUTER_API_KEY_2 = "team" }`.
    /// A key not listed is its own account. Quota is counted per account.
    pub accounts: BTreeMap<String, String>,
    /// Requests per minute per account on `:free` models (OpenRouter: 20).
    pub requests_per_minute: u32,
    /// Free requests per account per UTC day; 0 = learn it from `GET /key` (50 or 1000).
    pub free_requests_per_day: u32,
    /// Context window assumed for a free model when `GET /models` does not say.
    pub default_context_window: usize,
    /// Context window per free model in tokens, for models whose window differs from the default.
    pub context_windows: BTreeMap<String, usize>,
    /// What models can do beyond text, by model: `{ "qwen/qwen2.5-vl-72b-instruct:free" = ["vision"] }`
    /// (`tools`, `vision`, `thinking`). Models not listed use what `GET /models` says.
    pub capabilities: BTreeMap<String, Vec<String>>,
    /// Embedding models served over `POST /embeddings` (none by default).
    pub embedding_models: Vec<String>,
}

impl Default for OpenRouterConfig {
    fn default() -> Self {
        Self {
            base_url: "https://openrouter.ai/api/v1".into(),
            referer: "https://github.com/switchboard-bot/switchboard".into(),
            title: "switchboard".into(),
            free_models: vec![
                "deepseek/deepseek-chat-v3-0324:free".into(),
                "meta-llama/llama-3.3-70b-instruct:free".into(),
                "openrouter/free".into(),
            ],
            accounts: BTreeMap::new(),
            requests_per_minute: 20,
            free_requests_per_day: 0,
            default_context_window: 32_768,
            context_windows: BTreeMap::new(),
            capabilities: BTreeMap::new(),
            embedding_models: Vec::new(),
        }
    }
}

impl OpenRouterConfig {
    /// Checks the URL and the capability names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_url("openrouter.base_url", &self.base_url)?;
        check_capabilities("openrouter.capabilities", &self.capabilities)
    }
}

/// `[ollama]`: the paid tier (the RC2 models on Ollama Cloud).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OllamaConfig {
    /// Base URL without `/api` (tests point it at a simulator on 127.0.0.1).
    pub base_url: String,
    /// Models in order of preference, sent exactly as written.
    pub models: Vec<String>,
    /// Context window per model in tokens; models not listed get `default_context_window`.
    pub context_windows: BTreeMap<String, usize>,
    /// Context window for models not in `context_windows`.
    pub default_context_window: usize,
    /// Estimated price per million tokens, `{ "gpt-oss:120b" = { prompt = 0.1, completion = 0.5 } }`.
    pub prices: BTreeMap<String, Price>,
    /// What models can do beyond text, by model (`tools`, `vision`, `thinking`); the defaults cover
    /// the default models and the RC2 vision model. A model not listed takes text only.
    pub capabilities: BTreeMap<String, Vec<String>>,
    /// Embedding models served over `POST /api/embed`.
    pub embedding_models: Vec<String>,
}

/// A price in US dollars per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Dollars per million prompt tokens.
    pub prompt: f64,
    /// Dollars per million completion tokens.
    pub completion: f64,
}

impl Default for OllamaConfig {
    fn default() -> Self {
        Self {
            base_url: "https://ollama.com".into(),
            models: vec![
                "gpt-oss:120b".into(),
                "kimi-k2.5".into(),
                "deepseek-v3.1:671b".into(),
                "qwen3-next:80b".into(),
            ],
            context_windows: BTreeMap::new(),
            default_context_window: 131_072,
            prices: BTreeMap::new(),
            capabilities: [
                ("gpt-oss:120b", &["tools", "thinking"][..]),
                ("kimi-k2.5", &["tools", "vision", "thinking"]),
                ("deepseek-v3.1:671b", &["tools", "thinking"]),
                ("qwen3-next:80b", &["tools", "thinking"]),
                ("qwen3-vl:4b", &["tools", "vision"]),
            ]
            .into_iter()
            .map(|(m, c)| (m.to_owned(), c.iter().map(|&c| c.to_owned()).collect()))
            .collect(),
            embedding_models: vec!["nomic-embed-text-v2-moe".into()],
        }
    }
}

impl OllamaConfig {
    /// Checks the URL and the capability names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_url("ollama.base_url", &self.base_url)?;
        check_capabilities("ollama.capabilities", &self.capabilities)
    }
}

/// The wire format an extra tier speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI-compatible (`/chat/completions`, SSE).
    Openai,
    /// Ollama native (`/api/chat`, NDJSON).
    Ollama,
}

/// `[[tiers]]`: an extra tier after the default ones (e.g. a local Ollama).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraTierConfig {
    /// The tier's name (`local` counts as free).
    pub name: String,
    /// The wire format.
    pub kind: ProviderKind,
    /// Base URL.
    pub base_url: String,
    /// Models in order.
    pub models: Vec<String>,
    /// Environment variable holding its key, if it needs one.
    #[serde(default)]
    pub key_env: Option<String>,
    /// Context window of its models.
    #[serde(default = "default_extra_window")]
    pub context_window: usize,
    /// What its models can do beyond text, by model (`tools`, `vision`, `thinking`).
    #[serde(default)]
    pub capabilities: BTreeMap<String, Vec<String>>,
    /// Its embedding models (`POST /embeddings` or `/api/embed`, by its wire format).
    #[serde(default)]
    pub embedding_models: Vec<String>,
}

/// The capability names a model list may give (Ollama's names; `completion` is implied).
pub const CAPABILITY_NAMES: [&str; 3] = ["tools", "vision", "thinking"];

/// Checks that every capability named under `key` is one of [`CAPABILITY_NAMES`].
fn check_capabilities(
    key: &str,
    capabilities: &BTreeMap<String, Vec<String>>,
) -> Result<(), ConfigError> {
    for (model, names) in capabilities {
        if let Some(bad) = names
            .iter()
            .find(|n| !CAPABILITY_NAMES.contains(&n.as_str()))
        {
            return Err(ConfigError::new(
                format!("{key}.{model:?}"),
                format!("names {bad:?}, which is not a capability"),
                format!("use {}", CAPABILITY_NAMES.join(", ")),
            ));
        }
    }
    Ok(())
}

/// The capabilities a model list gives `model`: `None` when it does not list it.
pub fn listed_capabilities(
    capabilities: &BTreeMap<String, Vec<String>>,
    model: &str,
) -> Option<crate::generation::Capabilities> {
    let names = capabilities.get(model)?;
    let has = |c: &str| names.iter().any(|n| n == c);
    Some(crate::generation::Capabilities {
        completion: true,
        tools: has("tools"),
        vision: has("vision"),
        thinking: has("thinking"),
        embedding: false,
    })
}

fn default_extra_window() -> usize {
    8192
}

impl ExtraTierConfig {
    /// Checks the entry at position `index`.
    pub fn validate(&self, index: usize) -> Result<(), ConfigError> {
        validate_url(&format!("tiers[{index}].base_url"), &self.base_url)?;
        check_capabilities(&format!("tiers[{index}].capabilities"), &self.capabilities)?;
        if self.models.is_empty() {
            return Err(ConfigError::new(
                format!("tiers[{index}].models"),
                "is empty",
                "list at least one model",
            ));
        }
        Ok(())
    }
}
