//! The routing policy as data: the ordered tiers built from the configuration (free OpenRouter models,
//! paid Ollama Cloud models, extra tiers, `tier_order`), the switches that gate the paid tier, and the
//! candidate order of one turn (an explicit `/model` first, then each tier with its sticky model first).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::free_first::ProviderSet;
use super::notices::TierOutcome;
use super::quota::{AccountBook, Spread};
use super::usage::PaidDay;
use crate::clock::utc_day;
use crate::config::providers::{listed_capabilities, ExtraTierConfig, Price};
use crate::config::{Config, ConfigError};
use crate::domain::TierName;
use crate::generation::Capabilities;
use crate::providers::ChatProvider;

/// The provider name of the free tier.
pub const OPENROUTER: &str = "openrouter";
/// The provider name of the paid tier.
pub const OLLAMA_CLOUD: &str = "ollama-cloud";
/// OpenRouter's router model: it picks a free model itself. A model like any other to a selector.
pub const FREE_ROUTER: &str = "openrouter/free";

/// A tier's position in [`Policy::tiers`] (also its round-robin cursor's index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct TierIdx(pub usize);

/// One model of a tier, its context window and what the configuration says it can do.
#[derive(Clone)]
pub(super) struct ModelSpec {
    /// The model name exactly as sent to the provider.
    pub name: String,
    /// Its context window in tokens.
    pub context_window: usize,
    /// Its capabilities as configured; `None` when the configuration does not list it (then what the
    /// provider's model list said, else text only).
    pub capabilities: Option<Capabilities>,
}

/// One tier: a provider, its models and the accounts (quotas) that pay for them.
#[derive(Clone)]
pub(super) struct Tier {
    /// The tier's name (`free`, `paid`, an extra tier's).
    pub name: TierName,
    /// The provider's name, for logs, usage and `/status`.
    pub provider_name: String,
    /// How the provider is named to users in the paid notice.
    pub display: String,
    /// Its client.
    pub provider: Arc<dyn ChatProvider>,
    /// Its configured models, in order.
    pub models: Vec<ModelSpec>,
    /// Its embedding models (served by `LlmRouter::embed`, never by chat).
    pub embedding_models: Vec<String>,
    /// Context windows of models not in `models` that the tier can still route (see `routes`).
    context_windows: BTreeMap<String, usize>,
    /// Configured capabilities of models not in `models` that the tier can still route.
    capabilities: BTreeMap<String, Vec<String>>,
    default_context_window: usize,
    /// Whether any `:free` model id is routable here (OpenRouter): `openrouter/free` answers with one,
    /// and stickiness keeps it.
    routes_free_ids: bool,
    /// Indices of its accounts in the account book.
    pub accounts: Vec<usize>,
    /// How requests are spread over the accounts.
    pub spread: Spread,
    /// Whether requests here cost money (the paid gate and notice apply).
    pub paid: bool,
}

impl Tier {
    /// Whether the configuration gives `model` a context window of its own.
    pub fn window_configured(&self, model: &str) -> bool {
        self.context_windows.contains_key(model)
    }

    /// A model this tier can be asked for by name: a configured one, or on OpenRouter any `:free` id
    /// and the `openrouter/free` router model.
    pub fn routes(&self, model: &str) -> Option<ModelSpec> {
        if let Some(m) = self.models.iter().find(|m| m.name == model) {
            return Some(m.clone());
        }
        let free_id = model.ends_with(":free") || model == FREE_ROUTER;
        (self.routes_free_ids && free_id).then(|| ModelSpec {
            name: model.to_owned(),
            context_window: window(&self.context_windows, self.default_context_window, model),
            capabilities: listed_capabilities(&self.capabilities, model),
        })
    }
}

/// The `[router]` switches in force.
#[derive(Clone)]
pub(super) struct Switches {
    /// `[router] free_only`: never use a paid tier.
    pub free_only: bool,
    /// `[router] paid_enabled`: the paid tier may be used.
    pub paid_enabled: bool,
    /// `[router] paid_daily_cap`: paid requests per UTC day (0 = unlimited).
    pub paid_daily_cap: u64,
    /// `[router] paid_spend_alert_usd`: the daily spend that is warned about (0 = off).
    pub paid_spend_alert_usd: f64,
    /// `[router] sticky`: keep the model that answered a conversation.
    pub sticky: bool,
    /// How long a 402 keeps an account out.
    pub payment_cooldown: Duration,
    /// How often `GET /key` is asked.
    pub quota_refresh: Duration,
    /// The longest wait for a busy free account per turn.
    pub free_wait_max: Duration,
}

/// Everything a reload replaces: the tiers in order, the switches and the paid prices.
#[derive(Clone)]
pub(super) struct Policy {
    /// The tiers in the order they are tried.
    pub tiers: Vec<Tier>,
    /// The `[router]` switches.
    pub switches: Switches,
    /// Paid model prices, for the spend estimate.
    pub prices: BTreeMap<String, Price>,
    /// `[router.aliases]`: model names the local API accepts, to a model or a virtual name.
    pub aliases: BTreeMap<String, String>,
}

/// What conversations remember: the model that last answered (stickiness).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Sticky {
    /// The tier that answered.
    pub tier: String,
    /// The model, as the tier can be asked for it.
    pub model: String,
}

/// One model to try on one tier.
#[derive(Clone)]
pub(super) struct Candidate {
    /// The tier.
    pub tier: TierIdx,
    /// The model on it.
    pub model: ModelSpec,
}

fn window(map: &BTreeMap<String, usize>, default: usize, model: &str) -> usize {
    map.get(model).copied().unwrap_or(default)
}

/// The configured models of a tier: names in order, their windows and listed capabilities.
struct ModelList<'a> {
    names: &'a [String],
    windows: &'a BTreeMap<String, usize>,
    default_window: usize,
    capabilities: &'a BTreeMap<String, Vec<String>>,
}

fn specs(list: &ModelList<'_>) -> Vec<ModelSpec> {
    list.names
        .iter()
        .map(|m| ModelSpec {
            name: m.clone(),
            context_window: window(list.windows, list.default_window, m),
            capabilities: listed_capabilities(list.capabilities, m),
        })
        .collect()
}

/// Builds the policy from the configuration, over the clients that exist and the book's accounts.
pub(super) fn build_policy(
    config: &Config,
    providers: &ProviderSet,
    book: &AccountBook,
) -> Result<Policy, ConfigError> {
    config.router.check_tier_order(&config.tiers)?;
    super::select::check_aliases(config)?;
    let accounts_of = |provider: &str| -> Vec<usize> {
        book.accounts
            .iter()
            .enumerate()
            .filter(|(_, a)| a.provider == provider)
            .map(|(i, _)| i)
            .collect()
    };
    // The default order: free, paid, then the extra tiers as written.
    let mut tiers: Vec<Tier> = [
        free_tier(config, providers, accounts_of(OPENROUTER)),
        paid_tier(config, providers, accounts_of(OLLAMA_CLOUD)),
    ]
    .into_iter()
    .flatten()
    .collect();
    for extra in &config.tiers {
        if let Some((client, _)) = providers.extra.get(&extra.name) {
            tiers.push(extra_tier(extra, client, accounts_of(&extra.name)));
        }
    }
    // `tier_order` moves the tiers it names to the front, in its order (a stable sort keeps the rest).
    let order = &config.router.tier_order;
    tiers.sort_by_key(|t| {
        order
            .iter()
            .position(|n| *n == t.name.0)
            .unwrap_or(order.len())
    });
    Ok(Policy {
        tiers,
        switches: switches(config),
        prices: config.ollama.prices.clone(),
        aliases: config.router.aliases.clone(),
    })
}

/// The free tier: OpenRouter's free models over every OpenRouter account, drained in order.
fn free_tier(config: &Config, providers: &ProviderSet, accounts: Vec<usize>) -> Option<Tier> {
    let client = providers.openrouter.as_ref()?;
    let or = &config.openrouter;
    (!accounts.is_empty() && !or.free_models.is_empty()).then(|| Tier {
        name: TierName::free(),
        provider_name: OPENROUTER.into(),
        display: "OpenRouter".into(),
        provider: Arc::clone(client),
        models: specs(&ModelList {
            names: &or.free_models,
            windows: &or.context_windows,
            default_window: or.default_context_window,
            capabilities: &or.capabilities,
        }),
        embedding_models: or.embedding_models.clone(),
        context_windows: or.context_windows.clone(),
        capabilities: or.capabilities.clone(),
        default_context_window: or.default_context_window,
        routes_free_ids: true,
        accounts,
        spread: Spread::InOrder,
        paid: false,
    })
}

/// The paid tier: Ollama Cloud's models over every Ollama key, load-balanced.
fn paid_tier(config: &Config, providers: &ProviderSet, accounts: Vec<usize>) -> Option<Tier> {
    let client = providers.ollama.as_ref()?;
    let ol = &config.ollama;
    (!accounts.is_empty() && !ol.models.is_empty()).then(|| Tier {
        name: TierName::paid(),
        provider_name: OLLAMA_CLOUD.into(),
        display: "Ollama Cloud".into(),
        provider: Arc::clone(client),
        models: specs(&ModelList {
            names: &ol.models,
            windows: &ol.context_windows,
            default_window: ol.default_context_window,
            capabilities: &ol.capabilities,
        }),
        embedding_models: ol.embedding_models.clone(),
        context_windows: ol.context_windows.clone(),
        capabilities: ol.capabilities.clone(),
        default_context_window: ol.default_context_window,
        routes_free_ids: false,
        accounts,
        spread: Spread::LeastUsed,
        paid: true,
    })
}

fn switches(config: &Config) -> Switches {
    let r = &config.router;
    Switches {
        free_only: r.free_only,
        paid_enabled: r.paid_enabled,
        paid_daily_cap: r.paid_daily_cap,
        paid_spend_alert_usd: r.paid_spend_alert_usd,
        sticky: r.sticky,
        payment_cooldown: Duration::from_secs(r.payment_cooldown_secs),
        quota_refresh: Duration::from_secs(r.quota_refresh_secs),
        free_wait_max: Duration::from_secs(r.free_wait_max_secs),
    }
}

fn extra_tier(
    extra: &ExtraTierConfig,
    client: &Arc<dyn ChatProvider>,
    accounts: Vec<usize>,
) -> Tier {
    let name = TierName(extra.name.clone());
    Tier {
        paid: name.is_paid(),
        name,
        provider_name: extra.name.clone(),
        display: extra.name.clone(),
        provider: Arc::clone(client),
        models: specs(&ModelList {
            names: &extra.models,
            windows: &BTreeMap::new(),
            default_window: extra.context_window,
            capabilities: &extra.capabilities,
        }),
        embedding_models: extra.embedding_models.clone(),
        context_windows: BTreeMap::new(),
        capabilities: extra.capabilities.clone(),
        default_context_window: extra.context_window,
        routes_free_ids: false,
        accounts,
        spread: Spread::LeastUsed,
    }
}

impl Policy {
    /// The tier at `t`.
    pub fn tier(&self, t: TierIdx) -> &Tier {
        &self.tiers[t.0]
    }

    /// Candidates in order: an explicitly chosen model first, then every tier's models in order with the
    /// conversation's sticky model first within its tier. Tier order always wins over stickiness, so a
    /// conversation that fell back to the paid tier returns to the free tier when quota is back. A sticky
    /// model the tier routes without listing it (a `:free` id `openrouter/free` picked) is tried first too.
    pub fn candidates(&self, explicit: Option<&str>, sticky: Option<&Sticky>) -> Vec<Candidate> {
        let mut out: Vec<Candidate> =
            Vec::with_capacity(self.tiers.iter().map(|t| t.models.len() + 1).sum());
        let push = |out: &mut Vec<Candidate>, tier: TierIdx, model: ModelSpec| {
            if !out
                .iter()
                .any(|c| c.tier == tier && c.model.name == model.name)
            {
                out.push(Candidate { tier, model });
            }
        };
        if let Some(name) = explicit {
            if let Some(c) = self.find(name) {
                push(&mut out, c.tier, c.model);
            }
        }
        for (t, tier) in self.tiers.iter().enumerate() {
            if let Some(s) = sticky.filter(|s| s.tier == tier.name.0) {
                if let Some(spec) = tier.routes(&s.model) {
                    push(&mut out, TierIdx(t), spec);
                }
            }
            for m in &tier.models {
                push(&mut out, TierIdx(t), m.clone());
            }
        }
        out
    }

    /// The first configured model of that name, on the first tier that lists it.
    fn find(&self, name: &str) -> Option<Candidate> {
        self.tiers.iter().enumerate().find_map(|(t, tier)| {
            tier.models
                .iter()
                .find(|m| m.name == name)
                .map(|m| Candidate {
                    tier: TierIdx(t),
                    model: m.clone(),
                })
        })
    }

    /// Whether a paid tier may take a request for this turn, given today's paid counters; `Err` says
    /// why not.
    pub fn paid_gate(
        &self,
        paid_allowed: bool,
        paid: &PaidDay,
        now: i64,
    ) -> Result<(), TierOutcome> {
        let s = &self.switches;
        if s.free_only {
            return Err(TierOutcome::FreeOnly);
        }
        if !s.paid_enabled {
            return Err(TierOutcome::PaidOff);
        }
        if !paid_allowed {
            return Err(TierOutcome::UserCap);
        }
        if s.paid_daily_cap > 0 && paid.day == utc_day(now) && paid.requests >= s.paid_daily_cap {
            return Err(TierOutcome::GlobalCap);
        }
        Ok(())
    }
}
