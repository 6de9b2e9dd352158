//! The router: picks tier → account → model by policy and quota state, calls a provider client, and turns
//! the result into reply events, falling back to the next candidate on failure before the first token.
//! This file is the seam the core calls ([`LlmRouter`]); the policy, quota bookkeeping and error taxonomy
//! live in the submodules. The router knows no platform crate and no sled (state goes through the store trait).

mod accounts;
pub mod clients;
pub mod free_first;
mod notices;
mod policy;
pub mod quota;
mod reaction;
pub mod scripted;
mod status;
mod turn;
pub mod usage;

#[cfg(test)]
mod tests;

pub use free_first::{FreeFirstRouter, KeyQuota, ProviderSet, QuotaProbe};

use serde::{Deserialize, Serialize};

use crate::domain::{ChatMessage, ChatRef, ConversationKey, ReplyStream, TierName, UserRef};

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
    /// A model the chat picked with `/model`; `None` lets the policy choose.
    pub model: Option<String>,
    /// False when this user's daily paid-tier cap is reached: only free tiers may answer.
    pub paid_allowed: bool,
    /// The most tokens the answer may have (`core.max_tokens`, or `core.long_max_tokens` after `/long`),
    /// passed to the provider; `None` sends no cap.
    pub max_tokens: Option<u32>,
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

    /// The models this router may use, in policy order.
    fn models(&self) -> Vec<ModelInfo>;

    /// The current tier and account state.
    fn status(&self) -> RouterStatus;
}
