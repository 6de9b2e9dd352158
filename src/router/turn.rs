//! One turn: walks the candidates in policy order, reserves a request on an account, calls the provider
//! and streams the answer as reply events, or reacts to the failure before the first token and moves
//! on (another account, another key, another model, a smaller context, a short wait for a busy free
//! account), until something answers or the candidates run out.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::Duration;

use futures_util::stream::StreamExt;
use tokio::sync::mpsc;

use super::accounts::{load_sticky, remember_sticky, Lease, Shared};
use super::notices::{
    out_notice_key, out_of_free_notice, paid_notice, paid_notice_key, unavailable_message,
    TierOutcome, DECLINED_MESSAGE, INTERRUPTED_MESSAGE, NO_MODELS_MESSAGE,
};
use super::policy::{Candidate, ModelSpec, Policy, Sticky, Tier, TierIdx};
use super::reaction::Next;
use super::select;
use super::{CompletionRequest, ModelSelector};
use crate::clock::{until, utc_day};
use crate::context::{estimate_tokens, fit_context, message_tokens, prompt_budget};
use crate::domain::{
    AnswerSource, ChatMessage, Completion, FailureKind, Platform, ReplyEvent, Usage,
    UserFacingError,
};
use crate::providers::{ProviderError, ProviderEvent, ProviderRequest, ProviderStream};

/// At most this many provider calls for one turn. Every failure changes state (an account held, a model
/// skipped, a key avoided, a smaller context), so the loop ends by itself; this bounds it even against a
/// provider that answers every call with a fresh error.
pub(super) const MAX_ATTEMPTS_PER_TURN: usize = 24;
/// A context that was "too long" is refitted with this fraction of what was sent (halving converges in
/// a few steps without throwing away more history than needed).
const REFIT_DIVISOR: usize = 2;

/// How one provider stream ended.
enum StreamEnd {
    Finished,
    FailedBeforeFirst(ProviderError),
    Interrupted,
    ConsumerGone,
}

/// A free tier found with every account at its per-minute limit: when the first frees, and where in the
/// candidate list its models start.
#[derive(Clone, Copy)]
struct FreeBusy {
    until_ms: i64,
    tier: TierIdx,
    from: usize,
}

/// What was sent in one attempt, to refit a context that was too long.
#[derive(Clone, Copy)]
struct Sent {
    tokens: usize,
    messages: usize,
}

/// The turn's progress over its candidates.
struct Walk {
    order: Vec<Candidate>,
    /// The candidate being tried.
    i: usize,
    /// Tiers skipped for the rest of the turn, with why.
    blocked: Vec<Option<TierOutcome>>,
    /// Token budgets per (tier, model), lowered when a context was too long.
    budgets: HashMap<(TierIdx, String), usize>,
    /// Keys that failed for now (5xx, timeout, stall) in this turn: other keys go first.
    failed_keys: Vec<usize>,
    /// What is left of the turn's allowance to wait for a busy free account.
    wait_left: Duration,
    free_busy: Option<FreeBusy>,
    attempts: usize,
}

impl Walk {
    fn new(order: Vec<Candidate>, policy: &Policy) -> Self {
        Self {
            order,
            i: 0,
            blocked: vec![None; policy.tiers.len()],
            budgets: HashMap::new(),
            failed_keys: Vec::new(),
            wait_left: policy.switches.free_wait_max,
            free_busy: None,
            attempts: 0,
        }
    }

    /// The candidate to try now, while attempts are left.
    fn current(&self) -> Option<Candidate> {
        (self.attempts < MAX_ATTEMPTS_PER_TURN)
            .then(|| self.order.get(self.i).cloned())
            .flatten()
    }

    fn block(&mut self, t: TierIdx, why: TierOutcome) {
        self.blocked[t.0] = Some(why);
    }

    /// Whether a later candidate of tier `t` is left in the order.
    fn tier_has_more(&self, t: TierIdx) -> bool {
        self.order
            .get(self.i + 1..)
            .is_some_and(|rest| rest.iter().any(|c| c.tier == t))
    }

    /// After waiting for a busy free tier: its candidates again from where they were first skipped,
    /// then the candidates not tried yet.
    fn retry_busy_tier(&mut self) {
        let Some(b) = self.free_busy.take() else {
            return;
        };
        let end = self.i.min(self.order.len());
        let mut next: Vec<Candidate> = self.order[b.from..end]
            .iter()
            .filter(|c| c.tier == b.tier)
            .cloned()
            .collect();
        next.extend_from_slice(&self.order[end..]);
        self.order = next;
        self.i = 0;
        self.blocked[b.tier.0] = None;
    }
}

/// One turn in flight: the request, where its events go, and what it learned about the tiers.
pub(super) struct Turn<'a> {
    shared: &'a Shared,
    policy: &'a Policy,
    req: &'a CompletionRequest,
    tx: &'a mpsc::Sender<ReplyEvent>,
    free: TierOutcome,
    paid: TierOutcome,
    explicit_paid: bool,
    /// A model's content filter declined the message (the final message then says so).
    declined: bool,
    /// The first reason each tier (by name) did not answer, for the final failure's kind and wait.
    outcomes: HashMap<String, TierOutcome>,
}

impl<'a> Turn<'a> {
    /// A turn for `req` under `policy`, sending its events to `tx`.
    pub fn new(
        shared: &'a Shared,
        policy: &'a Policy,
        req: &'a CompletionRequest,
        tx: &'a mpsc::Sender<ReplyEvent>,
    ) -> Self {
        Self {
            shared,
            policy,
            req,
            tx,
            free: TierOutcome::Untried,
            paid: TierOutcome::Untried,
            explicit_paid: false,
            declined: false,
            outcomes: HashMap::new(),
        }
    }

    async fn send(&self, event: ReplyEvent) -> bool {
        self.tx.send(event).await.is_ok()
    }

    /// Runs the turn to its end: exactly one `Finished` or `Failed` is sent (unless the consumer left).
    pub async fn run(mut self) {
        let policy = self.policy;
        let req = self.req;
        let sticky: Option<Sticky> = (policy.switches.sticky && req.sticky)
            .then(|| load_sticky(self.shared.store.as_ref(), &req.conversation))
            .flatten();
        let order = match select::candidates(policy, req, sticky.as_ref(), &self.shared.learned) {
            Ok(order) => order,
            Err(failure) => {
                let _ = self.send(ReplyEvent::Failed(failure)).await;
                return;
            }
        };
        if let (Some(name), Some(first)) = (req.model.as_deref(), order.first()) {
            let tier = policy.tier(first.tier);
            self.explicit_paid = tier.paid && tier.models.iter().any(|m| m.name == name);
        }
        if let (ModelSelector::Exact(_), Some(first)) = (&req.selector, order.first()) {
            self.explicit_paid = policy.tier(first.tier).paid;
        }
        let mut walk = Walk::new(order, policy);
        loop {
            while let Some(candidate) = walk.current() {
                if self.try_candidate(&mut walk, candidate).await.is_break() {
                    return;
                }
            }
            // Nothing answered: rather than give up, wait for a free account about to free up.
            if walk.attempts < MAX_ATTEMPTS_PER_TURN && self.wait_for_free(&mut walk).await {
                walk.retry_busy_tier();
                continue;
            }
            break;
        }
        let failure = if self.declined {
            UserFacingError::new(FailureKind::Refused, DECLINED_MESSAGE)
        } else if self.policy.tiers.is_empty() {
            UserFacingError::new(FailureKind::Unavailable, NO_MODELS_MESSAGE)
        } else if let Some(wait) = self.rate_limited_wait(&walk) {
            let message = unavailable_message(self.free, self.paid);
            // The bots keep the kind they have always rendered (their message already says when to try
            // again); the local API needs the limit as such, to answer 429 with `Retry-After`.
            let kind = if self.req.chat.platform == Platform::Api {
                FailureKind::RateLimited
            } else {
                FailureKind::Unavailable
            };
            UserFacingError::new(kind, message).retry_after(wait)
        } else {
            let message = unavailable_message(self.free, self.paid);
            UserFacingError::new(FailureKind::Unavailable, message)
        };
        let _ = self.send(ReplyEvent::Failed(failure)).await;
    }

    /// One step on one candidate: skip it, wait, or make one attempt and react to how it ended.
    /// `Break` when the turn is over (answered, interrupted, or nobody listens any more).
    async fn try_candidate(&mut self, walk: &mut Walk, candidate: Candidate) -> ControlFlow<()> {
        let Candidate { tier: t, model } = candidate;
        let policy = self.policy;
        let tier = policy.tier(t);
        let now = self.shared.clock.now_ms();
        if walk.blocked[t.0].is_some() || self.shared.model_missing(tier, &model.name, now) {
            walk.i += 1;
            return ControlFlow::Continue(());
        }
        if tier.paid {
            let gate = {
                let paid = self.shared.lock().paid;
                policy.paid_gate(self.req.paid_allowed, &paid, now)
            };
            if let Err(why) = gate {
                self.note(tier, why);
                walk.block(t, why);
                walk.i += 1;
                return ControlFlow::Continue(());
            }
            // About to spend a paid request: a free account freeing within the wait is cheaper.
            if self.wait_for_free(walk).await {
                walk.retry_busy_tier();
                return ControlFlow::Continue(());
            }
        }
        let budget = *walk
            .budgets
            .entry((t, model.name.clone()))
            .or_insert_with(|| {
                let window = select::window_of(tier, &model, &self.shared.learned);
                let asked = req_window(self.req);
                prompt_budget(window.min(asked))
            });
        let req = self.req;
        let messages = fit_context(&req.system_prompt, &req.history, &req.prompt, budget);
        let lease = match self.shared.reserve(t, tier, now, &walk.failed_keys) {
            Ok(lease) => lease,
            Err(why) => {
                self.unavailable(walk, t, why, now);
                return ControlFlow::Continue(());
            }
        };
        walk.attempts += 1;
        let sent = Sent {
            tokens: messages.iter().map(message_tokens).sum(),
            messages: messages.len(),
        };
        let Some(error) = self.attempt(tier, &model, lease, messages).await else {
            return ControlFlow::Break(());
        };
        let now = self.shared.clock.now_ms();
        let next = (self.shared)
            .react(policy, tier, &model.name, lease, &error, now)
            .await;
        self.follow(walk, next, t, &model, lease, sent);
        ControlFlow::Continue(())
    }

    /// No account of tier `t` could take the request: block the tier for this turn, remembering a busy
    /// free tier that frees soon enough to be waited for.
    fn unavailable(&mut self, walk: &mut Walk, t: TierIdx, why: TierOutcome, now: i64) {
        let policy = self.policy;
        let tier = policy.tier(t);
        if why == TierOutcome::Busy && !tier.paid && walk.free_busy.is_none() {
            walk.free_busy = self
                .shared
                .soonest_minute_free(tier, now)
                .map(|until_ms| FreeBusy {
                    until_ms,
                    tier: t,
                    from: walk.i,
                });
        }
        self.note(tier, why);
        walk.block(t, why);
        walk.i += 1;
    }

    /// Sends one request and streams its answer. `None` when the turn is over; the error when it failed
    /// before the first token.
    async fn attempt(
        &mut self,
        tier: &Tier,
        model: &ModelSpec,
        lease: Lease,
        messages: Vec<ChatMessage>,
    ) -> Option<ProviderError> {
        let request = ProviderRequest {
            model: model.name.clone(),
            messages,
            max_tokens: self.req.max_tokens,
            params: self.req.params.clone(),
        };
        let secret = self.shared.secrets[lease.key].clone();
        let prompt_estimate = request.messages.iter().map(message_tokens).sum::<usize>() as u64;
        match tier.provider.chat_stream(secret.as_ref(), request).await {
            Ok(stream) => match self
                .consume(tier, model, lease, stream, prompt_estimate)
                .await
            {
                StreamEnd::Finished | StreamEnd::Interrupted | StreamEnd::ConsumerGone => None,
                StreamEnd::FailedBeforeFirst(e) => Some(e),
            },
            Err(e) => Some(e),
        }
    }

    /// Moves the walk on as the reaction says.
    fn follow(
        &mut self,
        walk: &mut Walk,
        next: Next,
        t: TierIdx,
        model: &ModelSpec,
        lease: Lease,
        sent: Sent,
    ) {
        let policy = self.policy;
        let tier = policy.tier(t);
        match next {
            Next::Account => {}
            Next::OtherKey => {
                self.note(tier, TierOutcome::Failing);
                walk.failed_keys.push(lease.key);
                // The tier's last model is tried again on another key when there is one; otherwise the
                // next model goes to another key (`reserve` avoids the failed ones).
                let now = self.shared.clock.now_ms();
                if walk.tier_has_more(t) || !self.shared.has_other_key(tier, now, &walk.failed_keys)
                {
                    walk.i += 1;
                }
            }
            Next::Model => {
                self.note(tier, TierOutcome::Failing);
                walk.i += 1;
            }
            Next::Declined => {
                self.declined = true;
                self.note(tier, TierOutcome::Refused);
                walk.i += 1;
            }
            Next::EndpointDown => {
                self.note(tier, TierOutcome::Failing);
                walk.block(t, TierOutcome::Failing);
                walk.i += 1;
            }
            Next::Refit => {
                // Never resend unchanged: shrink the budget below what was sent; if the context cannot
                // shrink (only the system prompt and the prompt are left), try the next model (later
                // candidates may have larger windows).
                let smaller = sent.tokens / REFIT_DIVISOR;
                let req = self.req;
                let refit = fit_context(&req.system_prompt, &req.history, &req.prompt, smaller);
                if refit.len() < sent.messages {
                    walk.budgets.insert((t, model.name.clone()), smaller);
                } else {
                    self.note(tier, TierOutcome::Failing);
                    walk.i += 1;
                }
            }
        }
    }

    /// Waits for the busy free tier's first account when it frees within what is left of the turn's
    /// wait allowance (`[router] free_wait_max_secs`); returns whether it waited. The sleep is on tokio
    /// time, which the router's clock follows (the system clock; `TokioClock` under paused time).
    async fn wait_for_free(&self, walk: &mut Walk) -> bool {
        let Some(b) = walk.free_busy else {
            return false;
        };
        let wait = until(self.shared.clock.now_ms(), b.until_ms);
        if wait > walk.wait_left {
            // Too long: do not ask again this turn.
            walk.free_busy = None;
            return false;
        }
        walk.wait_left -= wait;
        tracing::debug!(
            wait_ms = wait.as_millis(),
            "every free account is at its per-minute limit: waiting for the first rather than paying"
        );
        tokio::time::sleep(wait).await;
        true
    }

    /// Remembers the first reason a free or paid tier (and this tier) could not answer.
    fn note(&mut self, tier: &Tier, why: TierOutcome) {
        let slot = if tier.paid {
            &mut self.paid
        } else {
            &mut self.free
        };
        keep_first(slot, why);
        let own = self
            .outcomes
            .entry(tier.name.0.clone())
            .or_insert(TierOutcome::Untried);
        keep_first(own, why);
    }

    /// When every tier this turn could use stopped at a rate, quota or paid limit (none failing, none
    /// untried), how long until the first of them may answer again: a per-minute limit's reset, or the
    /// UTC midnight that renews a daily quota or cap. `None`: not a rate limit.
    fn rate_limited_wait(&self, walk: &Walk) -> Option<Duration> {
        let now = self.shared.clock.now_ms();
        let mut tiers: Vec<TierIdx> = walk.order.iter().map(|c| c.tier).collect();
        tiers.dedup();
        let outcomes = tiers.into_iter().map(|t| {
            let tier = self.policy.tier(t);
            let why = self.outcomes.get(&tier.name.0).copied();
            (tier, why.unwrap_or(TierOutcome::Untried))
        });
        select::limit_wait(self.shared, outcomes, now)
    }

    /// Streams one provider answer to the consumer; the first token makes it this turn's answer.
    async fn consume(
        &mut self,
        tier: &Tier,
        model: &ModelSpec,
        lease: Lease,
        mut stream: ProviderStream,
        prompt_estimate: u64,
    ) -> StreamEnd {
        let mut real_model: Option<String> = None;
        let mut source: Option<AnswerSource> = None;
        // What the answer said, for a usage estimate when the provider reports none.
        let mut answered = String::new();
        // Bots do not show reasoning: for them it is neither sent nor the answer's first token (a model
        // that reasons and then fails can still be replaced). The local API shows it, so there it is.
        let show_reasoning = self.req.chat.platform == Platform::Api;
        loop {
            let event = stream.next().await.unwrap_or(Err(ProviderError::Truncated));
            match event {
                Ok(ProviderEvent::Model(name)) if source.is_none() => real_model = Some(name),
                Ok(ProviderEvent::Done {
                    usage,
                    finish_reason,
                }) => {
                    let source = match source {
                        Some(s) => s,
                        None => match self.start(tier, model, lease, real_model.take()).await {
                            Some(s) => s,
                            None => return StreamEnd::ConsumerGone,
                        },
                    };
                    let estimated = usage == Usage::default();
                    let usage = if estimated {
                        Usage {
                            prompt_tokens: prompt_estimate,
                            completion_tokens: estimate_tokens(&answered) as u64,
                        }
                    } else {
                        usage
                    };
                    let (policy, user) = (self.policy, &self.req.user);
                    (self.shared).account_usage(policy, tier, model, &source.model, user, usage);
                    let done = Completion {
                        source: Some(source),
                        usage,
                        usage_estimated: estimated,
                        finish_reason,
                    };
                    let _ = self.send(ReplyEvent::Finished(done)).await;
                    return StreamEnd::Finished;
                }
                Ok(ProviderEvent::Model(_)) => {}
                Ok(ProviderEvent::Reasoning(_)) if !show_reasoning => {}
                Ok(content) => {
                    note_text(&content, &mut answered);
                    let Some(event) = content_event(content) else {
                        continue;
                    };
                    if source.is_none() {
                        match self.start(tier, model, lease, real_model.take()).await {
                            Some(s) => source = Some(s),
                            None => return StreamEnd::ConsumerGone,
                        }
                    }
                    if !self.send(event).await {
                        return StreamEnd::ConsumerGone;
                    }
                }
                Err(e) => {
                    if source.is_none() {
                        return StreamEnd::FailedBeforeFirst(e);
                    }
                    return self.interrupted(tier, model, lease, &e).await;
                }
            }
        }
    }

    /// The answer broke after the user saw part of it: the account still learns from the error (e.g.
    /// a mid-stream rate limit), but there is no fallback; the reply ends with the interrupted note.
    async fn interrupted(
        &self,
        tier: &Tier,
        model: &ModelSpec,
        lease: Lease,
        error: &ProviderError,
    ) -> StreamEnd {
        let now = self.shared.clock.now_ms();
        let _ = (self.shared)
            .react(self.policy, tier, &model.name, lease, error, now)
            .await;
        let failure = UserFacingError::new(FailureKind::Interrupted, INTERRUPTED_MESSAGE);
        let _ = self.send(ReplyEvent::Failed(failure)).await;
        StreamEnd::Interrupted
    }

    /// The answer's first token arrived: tell the user (the paid notice, or that a free account ran
    /// out, each once per conversation), report the source, remember the model for stickiness and
    /// clear the account's backoff.
    async fn start(
        &mut self,
        tier: &Tier,
        model: &ModelSpec,
        lease: Lease,
        real_model: Option<String>,
    ) -> Option<AnswerSource> {
        let shared = self.shared;
        shared.succeeded(lease);
        let fingerprint = shared.lock().book.keys[lease.key].fingerprint.clone();
        let source = AnswerSource {
            tier: tier.name.clone(),
            provider: tier.provider_name.clone(),
            model: real_model.unwrap_or_else(|| model.name.clone()),
            key_fingerprint: fingerprint,
        };
        let told = if tier.paid {
            self.tell_paid(tier, &source.model).await
        } else {
            self.tell_out_of_free(tier, lease).await
        };
        if !told || !self.send(ReplyEvent::Started(source.clone())).await {
            return None;
        }
        if self.policy.switches.sticky && self.req.sticky {
            // Keep the model that really answered (`openrouter/free` names the one it picked) when the
            // tier can be asked for it by name; otherwise the configured one.
            let answered = tier
                .routes(&source.model)
                .map_or_else(|| model.name.clone(), |m| m.name);
            let sticky = Sticky {
                tier: tier.name.0.clone(),
                model: answered,
            };
            remember_sticky(shared.store.as_ref(), &self.req.conversation, &sticky);
        }
        Some(source)
    }

    /// The paid notice, once per conversation. False when the consumer is gone.
    async fn tell_paid(&self, tier: &Tier, model: &str) -> bool {
        let key = paid_notice_key(&self.req.conversation);
        if self.shared.kv_flag(&key) {
            return true;
        }
        let text = paid_notice(self.free, self.explicit_paid, model, &tier.display);
        if !self.send(ReplyEvent::Notice(text)).await {
            return false;
        }
        self.shared.set_flag(&key);
        true
    }

    /// When a free account answers after one whose daily quota is spent: says so once per conversation,
    /// spent account and UTC day. False when the consumer is gone.
    async fn tell_out_of_free(&self, tier: &Tier, lease: Lease) -> bool {
        let now = self.shared.clock.now_ms();
        let Some(spent) = self.shared.spent_before(tier, lease, now) else {
            return true;
        };
        let key = out_notice_key(&self.req.conversation);
        let told = format!("{}/{}", utc_day(now), spent.label);
        if self.shared.kv_get(&key).as_deref() == Some(told.as_bytes()) {
            return true;
        }
        let text = out_of_free_notice(&spent.label, spent.until_ms, now, &spent.next_label);
        if !self.send(ReplyEvent::Notice(text)).await {
            return false;
        }
        self.shared.kv_put(&key, told.as_bytes());
        true
    }
}

/// The context size the request's caller asked for (Ollama's `num_ctx`), or no bound.
fn req_window(req: &CompletionRequest) -> usize {
    req.params
        .context_window
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Keeps the first reason a tier did not answer, except that a plain failure gives way to a more
/// telling reason (a quota, a limit, a switch).
pub(super) fn keep_first(slot: &mut TierOutcome, why: TierOutcome) {
    if *slot == TierOutcome::Untried
        || (*slot == TierOutcome::Failing && why != TierOutcome::Failing)
    {
        *slot = why;
    }
}

/// Appends the text a piece carries (answer, reasoning, tool call) to `answered`.
fn note_text(event: &ProviderEvent, answered: &mut String) {
    match event {
        ProviderEvent::Delta(t) | ProviderEvent::Reasoning(t) => answered.push_str(t),
        ProviderEvent::ToolCall(c) => {
            answered.push_str(c.name.as_deref().unwrap_or_default());
            answered.push_str(&c.arguments);
        }
        ProviderEvent::Model(_) | ProviderEvent::Done { .. } => {}
    }
}

/// A piece of the answer as the consumer sees it; `None` for an empty piece (providers send empty
/// deltas around role and usage chunks, and they must not count as the first token).
fn content_event(event: ProviderEvent) -> Option<ReplyEvent> {
    match event {
        ProviderEvent::Delta(text) => (!text.is_empty()).then_some(ReplyEvent::Delta(text)),
        ProviderEvent::Reasoning(text) => (!text.is_empty()).then_some(ReplyEvent::Reasoning(text)),
        ProviderEvent::ToolCall(call) => Some(ReplyEvent::ToolCall(call)),
        ProviderEvent::Model(_) | ProviderEvent::Done { .. } => None,
    }
}
