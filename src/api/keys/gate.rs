//! A key's gate for one request: the permission checks (a tier or model the key lacks is 403, and a
//! free-only key's `auto` becomes free-only routing, so no model name reaches a paid tier), the atomic
//! reservation ([`super::admission`]) and the [`Ticket`] that settles it with the real usage when the
//! answer ends — streamed or not, finished, failed or abandoned by the client.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;

use super::admission::{Held, Refusal, Snapshot};
use super::ledger::Outcome;
use super::{KeyEntry, Keys};
use crate::api::auth::Caller;
use crate::api::error::{ApiError, Surface};
use crate::domain::{AnswerSource, ReplyEvent, TierName, Usage};
use crate::router::{CompletionRequest, EmbedRequest, Embeddings, LlmRouter, ModelSelector};

/// Tokens reserved for an answer whose request sets no cap: a long chat answer's size, so a daily
/// budget is not overdrawn by much before the real usage settles it.
pub const DEFAULT_ANSWER_TOKENS: u64 = 1_024;
/// Characters per token for estimates (the router's own estimate uses the same rule of thumb).
const CHARS_PER_TOKEN: u64 = 4;

/// One key's admission for requests.
pub struct Gate {
    keys: Arc<Keys>,
    entry: Arc<KeyEntry>,
}

impl Gate {
    /// The gate of `entry`.
    pub fn new(keys: Arc<Keys>, entry: Arc<KeyEntry>) -> Self {
        Self { keys, entry }
    }

    /// The key's public id.
    pub fn id(&self) -> &str {
        &self.entry.record.id
    }

    /// The keys this gate belongs to.
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    /// What the `x-ratelimit-*` headers say now.
    pub fn snapshot(&self) -> Snapshot {
        self.entry
            .limiter
            .snapshot(&self.entry.record.limits, self.keys.now_ms())
    }

    /// Counts a refusal in the ledger.
    pub fn refused(&self) {
        self.keys.ledger.refused(self.id(), self.keys.now_ms());
    }

    /// Checks what `request` asks for against the key's tiers and models and adjusts its routing: a
    /// key without the paid tier routes `auto` as free-only. 403 naming what the key lacks.
    pub fn permit(
        &self,
        surface: Surface,
        router: &dyn LlmRouter,
        request: &mut CompletionRequest,
        requested: &str,
    ) -> Result<(), ApiError> {
        let record = &self.entry.record;
        let has_tier = |t: &str| {
            record
                .tiers
                .as_ref()
                .is_none_or(|ts| ts.iter().any(|x| x == t))
        };
        let paid = has_tier(TierName::paid().0.as_str());
        let refuse = |what: String| {
            self.refused();
            Err(ApiError::new(surface, StatusCode::FORBIDDEN, what))
        };
        if let Some(allowed) = &record.models {
            if !allowed.iter().any(|m| m == requested) {
                return refuse(format!("this API key may not use model '{requested}'"));
            }
        }
        match &request.selector {
            ModelSelector::Exact(name) => {
                let tier = router
                    .models()
                    .into_iter()
                    .find(|m| &m.name == name)
                    .map(|m| m.tier);
                match tier {
                    Some(t) if has_tier(&t.0) => {}
                    Some(t) => {
                        return refuse(format!(
                            "this API key may not use the {} tier (model '{name}')",
                            t.0
                        ))
                    }
                    None if record.tiers.is_none() => {}
                    None => return refuse(format!("this API key may not use model '{name}'")),
                }
            }
            ModelSelector::PaidOnly if !paid => {
                return refuse("this API key may not use the paid tier".into());
            }
            ModelSelector::Policy if !paid => request.selector = ModelSelector::FreeOnly,
            ModelSelector::FreeOnly if !has_tier(TierName::free().0.as_str()) => {
                return refuse("this API key may not use the free tier".into());
            }
            _ => {}
        }
        request.paid_allowed &= paid;
        Ok(())
    }

    /// Reserves every limit at once for `request`: its prompt (estimated) plus its answer cap (or
    /// [`DEFAULT_ANSWER_TOKENS`]). 429 with the wait when a limit is reached.
    pub fn admit(&self, surface: Surface, request: &CompletionRequest) -> Result<Ticket, ApiError> {
        let prompt = estimate_prompt(request);
        let answer = request.max_tokens.map_or(DEFAULT_ANSWER_TOKENS, u64::from);
        self.reserve(surface, prompt + answer, prompt)
    }

    /// Reserves `want` tokens (at least `floor`) and a request.
    fn reserve(&self, surface: Surface, want: u64, prompt: u64) -> Result<Ticket, ApiError> {
        let now = self.keys.now_ms();
        match self
            .entry
            .limiter
            .reserve(&self.entry.record.limits, now, want, prompt)
        {
            Ok(held) => Ok(Ticket {
                keys: self.keys.clone(),
                entry: self.entry.clone(),
                held: Some(held),
                prompt_estimate: prompt,
                seen_chars: 0,
                source: None,
            }),
            Err(refusal) => {
                self.refused();
                Err(refusal_error(surface, refusal))
            }
        }
    }
}

impl Gate {
    /// Checks an embedding model against the key's models and tiers. The router's embedding request
    /// has no paid switch, so a key lacking a tier may use only a model no such tier serves.
    fn permit_embedding(
        &self,
        surface: Surface,
        router: &dyn LlmRouter,
        model: &str,
    ) -> Result<(), ApiError> {
        let record = &self.entry.record;
        let named = record
            .models
            .as_ref()
            .is_none_or(|m| m.iter().any(|n| n == model));
        let tiers_ok = record.tiers.as_ref().is_none_or(|allowed| {
            router
                .embedding_models()
                .iter()
                .filter(|m| m.name == model)
                .all(|m| allowed.contains(&m.tier.0))
        });
        if named && tiers_ok {
            return Ok(());
        }
        self.refused();
        Err(ApiError::new(
            surface,
            StatusCode::FORBIDDEN,
            format!("this API key may not use model '{model}'"),
        ))
    }
}

/// Embeds for `caller`: the key's permission and admission (tokens estimated from the inputs), the
/// router, then the ticket settled with the upstream's prompt count.
pub async fn embed(
    router: &dyn LlmRouter,
    caller: &Caller,
    surface: Surface,
    request: EmbedRequest,
) -> Result<Embeddings, ApiError> {
    let ticket = match &caller.gate.0 {
        Some(gate) => {
            gate.permit_embedding(surface, router, &request.model)?;
            let chars: usize = request.inputs.iter().map(String::len).sum();
            let tokens = (chars as u64).div_ceil(CHARS_PER_TOKEN);
            Some(gate.reserve(surface, tokens, tokens)?)
        }
        None => None,
    };
    let result = router
        .embed(request)
        .await
        .map_err(|f| ApiError::from_failure(surface, &f));
    if let (Some(mut ticket), Ok(e)) = (ticket, &result) {
        ticket.source = Some(e.source.clone());
        let usage = Usage {
            prompt_tokens: e.prompt_tokens,
            completion_tokens: 0,
        };
        ticket.settle(true, usage, false);
    }
    result
}

/// The 429 for a refusal: which limit, and `Retry-After`.
pub fn refusal_error(surface: Surface, refusal: Refusal) -> ApiError {
    let secs = refusal.retry_after.as_secs() + u64::from(refusal.retry_after.subsec_nanos() > 0);
    let mut e = ApiError::new(
        surface,
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "this API key's limit of {} {} is reached; try again in {secs} s",
            refusal.limit,
            refusal.which.describe()
        ),
    );
    e.retry_after = Some(refusal.retry_after.max(Duration::from_millis(1)));
    e
}

fn estimate_prompt(request: &CompletionRequest) -> u64 {
    let chars: usize = request.system_prompt.len()
        + request.prompt.content.len()
        + request
            .history
            .iter()
            .map(|m| m.content.len())
            .sum::<usize>();
    (chars as u64).div_ceil(CHARS_PER_TOKEN)
}

/// An admitted request's hold: watches the answer's events and, when it ends (or is dropped — a client
/// gone, a failure before the first byte), returns the reservation with the real usage and writes the
/// ledger once.
pub struct Ticket {
    keys: Arc<Keys>,
    entry: Arc<KeyEntry>,
    held: Option<Held>,
    prompt_estimate: u64,
    seen_chars: u64,
    source: Option<AnswerSource>,
}

impl Ticket {
    /// Records who answers.
    pub fn started(&mut self, source: Option<&AnswerSource>) {
        self.source = source.cloned();
    }

    /// Watches one event of the answer; the terminal one settles the ticket.
    pub fn observe(&mut self, event: &ReplyEvent) {
        match event {
            ReplyEvent::Delta(t) | ReplyEvent::Reasoning(t) => self.seen_chars += t.len() as u64,
            ReplyEvent::ToolCall(d) => self.seen_chars += d.arguments.len() as u64,
            ReplyEvent::Started(s) => self.source = Some(s.clone()),
            ReplyEvent::Finished(c) => {
                let source = c.source.clone().or_else(|| self.source.clone());
                self.source = source;
                self.settle(true, c.usage, c.usage_estimated);
            }
            ReplyEvent::Failed(_) => {
                let usage = self.estimate();
                self.settle(false, usage, true);
            }
            ReplyEvent::Notice(_) => {}
        }
    }

    fn estimate(&self) -> Usage {
        // Nothing sent upstream was answered: no prompt is counted for an answer that never began.
        let began = self.seen_chars > 0;
        Usage {
            prompt_tokens: if began { self.prompt_estimate } else { 0 },
            completion_tokens: self.seen_chars.div_ceil(CHARS_PER_TOKEN),
        }
    }

    fn settle(&mut self, answered: bool, usage: Usage, estimated: bool) {
        let Some(held) = self.held.take() else { return };
        let now = self.keys.now_ms();
        self.entry.limiter.settle(held, usage.total(), now);
        let source = self
            .source
            .as_ref()
            .map(|s| (s.tier.0.clone(), s.provider.clone(), s.model.clone()));
        let cost_usd = self
            .source
            .as_ref()
            .map_or(0.0, |s| self.keys.cost(&s.model, usage));
        self.keys.ledger.record(
            &self.entry.record.id,
            now,
            &Outcome {
                answered,
                usage,
                estimated,
                source,
                cost_usd,
            },
        );
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.held.is_some() {
            let usage = self.estimate();
            self.settle(false, usage, true);
        }
    }
}
