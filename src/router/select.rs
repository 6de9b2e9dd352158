//! Which models may answer a request: the selector (`auto`, `free`, `paid`, an exact model), what the
//! request needs (images → a vision model, tools → a tool model), what each model can do (configured,
//! else learned from OpenRouter's `GET /models`), model names the local API accepts (virtual names,
//! `[router.aliases]`, every model a tier serves) and the wait a rate-limited request is told.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

use super::accounts::Shared;
use super::notices::TierOutcome;
use super::policy::{Candidate, ModelSpec, Policy, Sticky, Tier, TierIdx, FREE_ROUTER};
use super::{CompletionRequest, ModelInfo, ModelSelector};
use crate::clock::{next_utc_midnight, until};
use crate::config::{Config, ConfigError};
use crate::domain::{ChatMessage, FailureKind, Role, UserFacingError};
use crate::generation::Capabilities;

/// The virtual model names: the free-first policy, free tiers only, paid tiers only.
pub const VIRTUAL_MODELS: [&str; 3] = ["auto", "free", "paid"];

/// What OpenRouter's `GET /models` said about one model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Learned {
    /// What it can do.
    pub capabilities: Capabilities,
    /// Its context window, if listed.
    pub context_length: Option<u64>,
}

/// Models learned from provider listings, by model id; replaced whole by each successful fetch.
pub(super) type LearnedModels = RwLock<BTreeMap<String, Learned>>;

/// The wait a rate-limited client is told when the per-minute window's end is unknown: OpenRouter's
/// limit is per minute, so a minute is the longest it can take.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(60);

/// When every tier a request could use stopped at a rate, quota or paid limit (none failing, none
/// untried), how long until the first of them may answer again: a per-minute limit's reset, or the UTC
/// midnight that renews a daily quota or cap. `None`: not a rate limit (a tier failed or was not
/// reached), so the request is unavailable rather than limited.
pub(super) fn limit_wait<'a>(
    shared: &Shared,
    outcomes: impl IntoIterator<Item = (&'a Tier, TierOutcome)>,
    now: i64,
) -> Option<Duration> {
    let mut wait: Option<Duration> = None;
    for (tier, why) in outcomes {
        let w = match why {
            TierOutcome::Busy => shared
                .soonest_minute_free(tier, now)
                .map_or(BUSY_RETRY_AFTER, |until_ms| until(now, until_ms)),
            TierOutcome::QuotaUsedUp | TierOutcome::UserCap | TierOutcome::GlobalCap => {
                until(now, next_utc_midnight(now))
            }
            // Switched off by configuration: no wait frees it, but it is no failure either.
            TierOutcome::FreeOnly | TierOutcome::PaidOff => continue,
            _ => return None,
        };
        wait = Some(wait.map_or(w, |x| x.min(w)));
    }
    wait
}

/// What a request needs of a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Needs {
    /// It carries images.
    pub vision: bool,
    /// It carries tool definitions, tool calls or tool results.
    pub tools: bool,
}

impl Needs {
    /// What `req` needs: images anywhere in its messages, tools in its parameters or its history.
    pub fn of(req: &CompletionRequest) -> Self {
        let messages = || req.history.iter().chain(std::iter::once(&req.prompt));
        let tool_turn = |m: &ChatMessage| !m.tool_calls.is_empty() || m.role == Role::Tool;
        Self {
            vision: messages().any(|m| !m.images.is_empty()),
            tools: req.params.wants_tools() || messages().any(tool_turn),
        }
    }

    fn met_by(self, c: Capabilities) -> bool {
        (!self.vision || c.vision) && (!self.tools || c.tools)
    }

    /// The plain reason no model fits, for the client.
    fn unmet_message(self, exact: Option<&str>) -> String {
        let what = match (self.vision, self.tools) {
            (true, true) => "images and tools",
            (true, false) => "images",
            _ => "tools",
        };
        match exact {
            Some(model) => format!("The model {model} does not take {what}."),
            None => format!("No model available here takes {what}."),
        }
    }
}

/// What `spec` can do: as configured; else as the provider's listing says; else text only. OpenRouter's
/// router model picks among models supporting the request's features, so it takes everything.
pub(super) fn capabilities_of(spec: &ModelSpec, learned: &LearnedModels) -> Capabilities {
    if let Some(c) = spec.capabilities {
        return c;
    }
    if spec.name == FREE_ROUTER {
        return Capabilities {
            completion: true,
            tools: true,
            vision: true,
            thinking: true,
            embedding: false,
        };
    }
    let learned = learned
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    learned
        .get(&spec.name)
        .map_or_else(text_only, |l| l.capabilities)
}

/// A chat model nothing is known about.
pub(super) fn text_only() -> Capabilities {
    Capabilities {
        completion: true,
        ..Capabilities::default()
    }
}

/// The candidates of one turn: the policy's order restricted by the selector and by what the request
/// needs. `Err` when nothing may answer as asked: an exact model no tier serves (`UnknownModel`), a
/// selector whose tiers do not exist (`Unavailable`), no model taking the request's images or tools
/// (`BadRequest`).
pub(super) fn candidates(
    policy: &Policy,
    req: &CompletionRequest,
    sticky: Option<&Sticky>,
    learned: &LearnedModels,
) -> Result<Vec<Candidate>, UserFacingError> {
    let order: Vec<Candidate> = match &req.selector {
        ModelSelector::Exact(model) => exact(policy, model),
        ModelSelector::Policy => policy.candidates(req.model.as_deref(), sticky),
        ModelSelector::FreeOnly | ModelSelector::PaidOnly => {
            let paid = req.selector == ModelSelector::PaidOnly;
            policy
                .candidates(req.model.as_deref(), sticky)
                .into_iter()
                .filter(|c| policy.tier(c.tier).paid == paid)
                .collect()
        }
    };
    if order.is_empty() {
        match &req.selector {
            ModelSelector::Policy => return Ok(order), // The turn says no model is set up.
            ModelSelector::Exact(model) => {
                let message = format!("The model {model} is not served here.");
                return Err(UserFacingError::new(FailureKind::UnknownModel, message));
            }
            ModelSelector::FreeOnly | ModelSelector::PaidOnly => {
                let which = if req.selector == ModelSelector::FreeOnly {
                    "free"
                } else {
                    "paid"
                };
                let message = format!("No {which} model is set up here.");
                return Err(UserFacingError::new(FailureKind::Unavailable, message));
            }
        }
    }
    let needs = Needs::of(req);
    if needs == Needs::default() {
        return Ok(order);
    }
    let fitting: Vec<Candidate> = order
        .into_iter()
        .filter(|c| needs.met_by(capabilities_of(&c.model, learned)))
        .collect();
    if fitting.is_empty() {
        let exact = match &req.selector {
            ModelSelector::Exact(m) => Some(m.as_str()),
            _ => None,
        };
        let message = needs.unmet_message(exact);
        return Err(UserFacingError::new(FailureKind::BadRequest, message));
    }
    Ok(fitting)
}

/// Every tier that serves `model`, in policy order: fallback goes over their accounts and keys, never
/// to another model.
fn exact(policy: &Policy, model: &str) -> Vec<Candidate> {
    policy
        .tiers
        .iter()
        .enumerate()
        .filter_map(|(t, tier)| {
            tier.routes(model).map(|spec| Candidate {
                tier: TierIdx(t),
                model: spec,
            })
        })
        .collect()
}

/// What a model name a client sent means: a virtual name, an alias (to a virtual name or a model), or
/// a chat or embedding model some tier serves.
pub(super) fn resolve(policy: &Policy, name: &str) -> Option<ModelSelector> {
    let target = policy.aliases.get(name).map_or(name, String::as_str);
    match target {
        "auto" => return Some(ModelSelector::Policy),
        "free" => return Some(ModelSelector::FreeOnly),
        "paid" => return Some(ModelSelector::PaidOnly),
        _ => {}
    }
    let served = policy
        .tiers
        .iter()
        .any(|t| t.routes(target).is_some() || t.embedding_models.iter().any(|m| m == target));
    // An alias's target is validated at start-up: it may name a tier's model whose keys are missing
    // now, and then the router says so (Unavailable) rather than pretending the name is unknown.
    (served || target != name).then(|| ModelSelector::Exact(target.to_owned()))
}

/// Checks `[router.aliases]`: names are not virtual names, targets are virtual names or configured
/// models (chat or embedding, any tier; on OpenRouter any `:free` id and `openrouter/free`).
pub(super) fn check_aliases(config: &Config) -> Result<(), ConfigError> {
    let or = &config.openrouter;
    let ol = &config.ollama;
    let known = |m: &str| {
        VIRTUAL_MODELS.contains(&m)
            || m.ends_with(":free")
            || m == FREE_ROUTER
            || [
                &or.free_models,
                &or.embedding_models,
                &ol.models,
                &ol.embedding_models,
            ]
            .iter()
            .any(|list| list.iter().any(|x| x == m))
            || config
                .tiers
                .iter()
                .any(|t| t.models.iter().chain(&t.embedding_models).any(|x| x == m))
    };
    for (name, target) in &config.router.aliases {
        let key = format!("router.aliases.{name:?}");
        if VIRTUAL_MODELS.contains(&name.as_str()) || name.trim().is_empty() {
            return Err(ConfigError::new(
                key,
                "renames a virtual model name (auto, free, paid) or is empty",
                "pick another alias name",
            ));
        }
        if !known(target) {
            return Err(ConfigError::new(
                key,
                format!("points at {target:?}, which no tier serves"),
                "use auto, free, paid or a model listed in [openrouter], [ollama] or [[tiers]]",
            ));
        }
    }
    Ok(())
}

/// Every chat model of every tier with what it can do and its context window (configured, else
/// learned from the provider's list), in policy order.
pub(super) fn model_infos(policy: &Policy, learned: &LearnedModels) -> Vec<ModelInfo> {
    let known = learned
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut out = Vec::new();
    for tier in &policy.tiers {
        for m in &tier.models {
            let listed = known.get(&m.name).and_then(|l| l.context_length);
            let context_window = match listed {
                Some(n) if !tier.window_configured(&m.name) => {
                    usize::try_from(n).unwrap_or(usize::MAX)
                }
                _ => m.context_window,
            };
            out.push(ModelInfo {
                name: m.name.clone(),
                tier: tier.name.clone(),
                provider: tier.provider_name.clone(),
                context_window,
                capabilities: capabilities_of(m, learned),
            });
        }
    }
    out
}

/// Every tier's embedding models, in policy order.
pub(super) fn embedding_infos(policy: &Policy, learned: &LearnedModels) -> Vec<ModelInfo> {
    let known = learned
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = Vec::new();
    for tier in &policy.tiers {
        for name in &tier.embedding_models {
            let listed = known.get(name).and_then(|l| l.context_length);
            out.push(ModelInfo {
                name: name.clone(),
                tier: tier.name.clone(),
                provider: tier.provider_name.clone(),
                context_window: listed.map_or(EMBEDDING_WINDOW, |n| {
                    usize::try_from(n).unwrap_or(usize::MAX)
                }),
                capabilities: Capabilities {
                    embedding: true,
                    ..Capabilities::default()
                },
            });
        }
    }
    out
}

/// The input window listed for an embedding model nothing else is known about: nomic-embed-text's
/// 8,192 tokens, the usual size for embedding models.
const EMBEDDING_WINDOW: usize = 8192;
