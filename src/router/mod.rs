//! The router: picks tier → account → model by policy and quota state, calls a provider client, and turns
//! the result into reply events, falling back to the next candidate on failure before the first token.
//! This file is the seam the core calls ([`LlmRouter`]); the policy, quota bookkeeping and error taxonomy
//! live in the submodules. The router knows no platform crate and no sled (state goes through the store trait).

mod accounts;
pub mod clients;
mod embed;
pub mod free_first;
mod notices;
mod policy;
pub mod quota;
mod reaction;
pub mod scripted;
mod select;
mod status;
mod turn;
pub mod usage;

#[cfg(test)]
mod tests;

pub use free_first::{FreeFirstRouter, KeyQuota, ProviderSet, QuotaProbe};
pub use select::{Learned, VIRTUAL_MODELS};

use serde::{Deserialize, Serialize};

use futures_util::future::BoxFuture;

use crate::domain::{
    AnswerSource, ChatMessage, ChatRef, ConversationKey, FailureKind, ReplyStream, TierName,
    UserFacingError, UserRef,
};
use crate::generation::{Capabilities, GenerationParams};

/// What the core asks of the router for one turn.
#[derive(Clone, Debug)]
pub struct CompletionRequest {
    /// The conversation (for stickiness and the one-time paid-tier notice).
    pub conversation: ConversationKey,
    /// Who asked (for per-user usage accounting).
    pub user: UserRef,
    /// Where they asked.
    pub chat: ChatRef,
    /// The system prompt in force for this chat (may be empty).
    pub system_prompt: String,
    /// Earlier turns, oldest first, without the system prompt or the new prompt. The router fits them to
    /// each candidate model's window with [`crate::context::fit_context`].
    pub history: Vec<ChatMessage>,
    /// The newest user turn.
    pub prompt: ChatMessage,
    /// A model the chat picked with `/model`; `None` lets the policy choose. Tried first, then the
    /// policy's order (the bots' preference); [`CompletionRequest::selector`] restricts instead.
    pub model: Option<String>,
    /// Which models may answer at all (the local API's `auto`, `free`, `paid` or an exact model).
    /// The bots use [`ModelSelector::Policy`].
    pub selector: ModelSelector,
    /// Sampling, tools, output format and reasoning (the local API's); the bots send the defaults.
    pub params: GenerationParams,
    /// Whether the answer may be remembered as this conversation's sticky model. The local API's
    /// requests are stateless and leave it off.
    pub sticky: bool,
    /// False when this user's daily paid-tier cap is reached: only free tiers may answer.
    pub paid_allowed: bool,
    /// The most tokens the answer may have (`core.max_tokens`, or `core.long_max_tokens` after `/long`),
    /// passed to the provider; `None` sends no cap.
    pub max_tokens: Option<u32>,
}

/// Which models may answer a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ModelSelector {
    /// The free-first policy, as the bots use it (the API's `auto`).
    #[default]
    Policy,
    /// Free tiers only (the API's `free`): never a paid request, whatever happens.
    FreeOnly,
    /// Paid tiers only (the API's `paid`), still subject to the paid switches and caps.
    PaidOnly,
    /// Exactly this model, on whichever tier and accounts serve it (fallback over accounts and keys,
    /// never to another model). `openrouter/free` is a model here.
    Exact(String),
}

/// A request for embeddings (the local API's `/api/embed`, `/api/embeddings`, `/v1/embeddings`).
#[derive(Clone, Debug)]
pub struct EmbedRequest {
    /// Who asked (usage accounting).
    pub user: UserRef,
    /// The embedding model, as the client named it (after alias resolution).
    pub model: String,
    /// The texts to embed, in order.
    pub inputs: Vec<String>,
}

/// The embeddings of an [`EmbedRequest`], one vector per input in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    /// The model that answered.
    pub source: AnswerSource,
    /// One vector per input.
    pub vectors: Vec<Vec<f32>>,
    /// Prompt tokens, as reported (or estimated).
    pub prompt_tokens: u64,
}

/// A model the router can use, for `/model` and `switchboard check`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model name exactly as sent to the provider.
    pub name: String,
    /// The tier it belongs to.
    pub tier: TierName,
    /// The provider name.
    pub provider: String,
    /// Its context window in tokens.
    pub context_window: usize,
    /// What it can do (configured, or learned from the provider's model list).
    pub capabilities: Capabilities,
}

/// The state of one account (one quota) as shown by `/usage` and `/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStatus {
    /// The provider name.
    pub provider: String,
    /// The account label (a key's own name unless configured).
    pub account: String,
    /// Fingerprints of the keys on this account.
    pub keys: Vec<String>,
    /// Free requests left today, if known.
    pub requests_left_today: Option<u64>,
    /// The daily limit, if known.
    pub daily_limit: Option<u64>,
    /// One of `ready`, `cooling down until HH:MM:SS UTC`, `exhausted until 00:00 UTC`, `disabled: …`.
    pub state: String,
}

/// The state of one tier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TierStatus {
    /// The tier's name.
    pub name: TierName,
    /// Whether the policy currently allows it.
    pub enabled: bool,
    /// Its accounts.
    pub accounts: Vec<AccountStatus>,
    /// Requests answered by this tier today.
    pub requests_today: u64,
    /// The tier's daily request cap, if any.
    pub daily_cap: Option<u64>,
    /// Estimated spend today in US dollars (paid tiers with configured prices).
    pub estimated_cost_usd: Option<f64>,
}

/// A snapshot of the router's tiers, for `/usage`, `/status` and systemd's `STATUS=` line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouterStatus {
    /// Tiers in policy order.
    pub tiers: Vec<TierStatus>,
}

impl RouterStatus {
    /// A compact one-line summary, e.g. `free tier: 3 accounts, 412 requests left; paid: 12 today`.
    pub fn one_line(&self) -> String {
        self.tiers
            .iter()
            .map(|t| {
                let left: Option<u64> = t.accounts.iter().map(|a| a.requests_left_today).sum();
                let mut s = format!(
                    "{} tier: {} account{}",
                    t.name,
                    t.accounts.len(),
                    if t.accounts.len() == 1 { "" } else { "s" }
                );
                if let Some(left) = left {
                    s = format!("{s}, {} left", crate::text::count(left, "request"));
                }
                if t.requests_today > 0 {
                    s = format!("{s}, {} used today", t.requests_today);
                }
                if !t.enabled {
                    s.push_str(" (off)");
                }
                s
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The seam between the conversation core and the routing policy.
pub trait LlmRouter: Send + Sync + 'static {
    /// Answers one turn as a stream of reply events: zero or more `Notice`s, `Started`, `Delta`s, and
    /// exactly one `Finished` or `Failed`. Dropping the stream cancels the request.
    fn complete(&self, request: CompletionRequest) -> ReplyStream;

    /// The chat models this router may use, in policy order (what `/model` offers).
    fn models(&self) -> Vec<ModelInfo>;

    /// The embedding models [`LlmRouter::embed`] serves (`capabilities.embedding`), in policy order.
    /// A model listing for API clients shows [`LlmRouter::models`] and these. The default has none.
    fn embedding_models(&self) -> Vec<ModelInfo> {
        Vec::new()
    }

    /// The current tier and account state.
    fn status(&self) -> RouterStatus;

    /// What a model name a client sent means: a virtual name (`auto`, `free`, `paid`), a configured
    /// alias, or a model some tier serves. `None`: no such model (the local API answers 404).
    fn resolve_model(&self, name: &str) -> Option<ModelSelector> {
        match name {
            "auto" => Some(ModelSelector::Policy),
            "free" => Some(ModelSelector::FreeOnly),
            "paid" => Some(ModelSelector::PaidOnly),
            _ => self
                .models()
                .iter()
                .any(|m| m.name == name)
                .then(|| ModelSelector::Exact(name.to_owned())),
        }
    }

    /// Embeds `request.inputs` with an embedding model. The default serves none.
    fn embed(
        &self,
        request: EmbedRequest,
    ) -> BoxFuture<'static, Result<Embeddings, UserFacingError>> {
        let message = format!("{} is not an embedding model here", request.model);
        Box::pin(async move { Err(UserFacingError::new(FailureKind::BadRequest, message)) })
    }
}
