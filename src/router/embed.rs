//! Embeddings through the router: the tiers that list the model among their embedding models, in
//! policy order, over their accounts and keys with the same quota bookkeeping, paid gate, error
//! reactions and usage accounting as a chat turn (one vector request counts as one request).

use std::collections::HashMap;

use super::accounts::Shared;
use super::notices::TierOutcome;
use super::policy::{ModelSpec, Policy, Tier, TierIdx};
use super::reaction::Next;
use super::select::limit_wait;
use super::turn::{keep_first, MAX_ATTEMPTS_PER_TURN};
use super::{EmbedRequest, Embeddings};
use crate::context::estimate_tokens;
use crate::domain::{AnswerSource, FailureKind, Usage, UserFacingError};
use crate::providers::{EmbedCall, EmbedResult};

impl Shared {
    /// Embeds `request.inputs` with `request.model` on the first tier and account that can: an
    /// unknown model is `UnknownModel`, a chat model `BadRequest`, every tier at a limit `RateLimited`
    /// (with the wait), anything else `Unavailable`.
    pub(super) async fn embed(&self, request: EmbedRequest) -> Result<Embeddings, UserFacingError> {
        let policy = self.policy();
        let model = request.model.as_str();
        let tiers: Vec<TierIdx> = (0..policy.tiers.len())
            .map(TierIdx)
            .filter(|&t| policy.tier(t).embedding_models.iter().any(|m| m == model))
            .collect();
        if tiers.is_empty() {
            let chat = policy.tiers.iter().any(|t| t.routes(model).is_some());
            return Err(if chat {
                let message = format!("{model} is not an embedding model, so it cannot embed.");
                UserFacingError::new(FailureKind::BadRequest, message)
            } else {
                let message = format!("The model {model} is not served here.");
                UserFacingError::new(FailureKind::UnknownModel, message)
            });
        }
        let mut outcomes: HashMap<usize, TierOutcome> = HashMap::new();
        let mut attempts = 0;
        for &t in &tiers {
            let tier = policy.tier(t);
            let outcome = outcomes.entry(t.0).or_insert(TierOutcome::Untried);
            match self.embed_on(&policy, t, &request, &mut attempts).await {
                Ok(done) => return Ok(done),
                Err(why) => keep_first(outcome, why),
            }
            tracing::debug!(tier = %tier.name, model, "embedding tier did not answer");
        }
        let now = self.clock.now_ms();
        let tried = tiers.iter().map(|&t| {
            let why = outcomes.get(&t.0).copied();
            (policy.tier(t), why.unwrap_or(TierOutcome::Untried))
        });
        let failure = if let Some(wait) = limit_wait(self, tried, now) {
            let message = format!("Every account that serves {model} is at its limit.");
            UserFacingError::new(FailureKind::RateLimited, message).retry_after(wait)
        } else {
            let message =
                format!("{model} is not answering right now. Please try again in a minute.");
            UserFacingError::new(FailureKind::Unavailable, message)
        };
        Err(failure)
    }

    /// Tries tier `t`'s accounts and keys until one answers; `Err` says why the tier did not.
    async fn embed_on(
        &self,
        policy: &Policy,
        t: TierIdx,
        request: &EmbedRequest,
        attempts: &mut usize,
    ) -> Result<Embeddings, TierOutcome> {
        let tier = policy.tier(t);
        let mut failed_keys: Vec<usize> = Vec::new();
        loop {
            if *attempts >= MAX_ATTEMPTS_PER_TURN {
                return Err(TierOutcome::Failing);
            }
            let now = self.clock.now_ms();
            if tier.paid {
                let paid = self.lock().paid;
                // The local API has no per-user paid cap yet; the paid switches and the daily cap apply.
                policy.paid_gate(true, &paid, now)?;
            }
            let lease = self.reserve(t, tier, now, &failed_keys)?;
            *attempts += 1;
            let call = EmbedCall {
                model: request.model.clone(),
                inputs: request.inputs.clone(),
            };
            let secret = self.secrets[lease.key].clone();
            match tier.provider.embed(secret.as_ref(), call).await {
                Ok(result) => {
                    self.succeeded(lease);
                    return Ok(self.embedded(policy, tier, request, lease.key, result));
                }
                Err(error) => {
                    let now = self.clock.now_ms();
                    let next = self
                        .react(policy, tier, &request.model, lease, &error, now)
                        .await;
                    match next {
                        Next::Account => {}
                        Next::OtherKey => {
                            failed_keys.push(lease.key);
                            if !self.has_other_key(tier, now, &failed_keys) {
                                return Err(TierOutcome::Failing);
                            }
                        }
                        Next::Model | Next::Refit | Next::Declined | Next::EndpointDown => {
                            return Err(TierOutcome::Failing);
                        }
                    }
                }
            }
        }
    }

    /// The answer of one successful call, with its usage counted (reported, else estimated).
    fn embedded(
        &self,
        policy: &Policy,
        tier: &Tier,
        request: &EmbedRequest,
        key: usize,
        result: EmbedResult,
    ) -> Embeddings {
        let prompt_tokens = result.prompt_tokens.unwrap_or_else(|| {
            request
                .inputs
                .iter()
                .map(|i| estimate_tokens(i) as u64)
                .sum()
        });
        let answered = result.model.unwrap_or_else(|| request.model.clone());
        let spec = ModelSpec {
            name: request.model.clone(),
            context_window: 0,
            capabilities: None,
        };
        let usage = Usage {
            prompt_tokens,
            completion_tokens: 0,
        };
        self.account_usage(policy, tier, &spec, &answered, &request.user, usage);
        let key_fingerprint = self.lock().book.keys[key].fingerprint.clone();
        Embeddings {
            source: AnswerSource {
                tier: tier.name.clone(),
                provider: tier.provider_name.clone(),
                model: answered,
                key_fingerprint,
            },
            vectors: result.vectors,
            prompt_tokens,
        }
    }
}
