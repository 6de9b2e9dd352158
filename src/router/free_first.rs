//! The free-first router: ordered tiers (OpenRouter free models over every account, then the paid RC2
//! models on Ollama Cloud, then any extra tiers), account-aware quotas, the error taxonomy with one
//! reaction per error, fallback before the first token, stickiness, the one-time paid notice and usage
//! accounting. The routing decision takes one short mutex hold over in-memory state; store writes happen
//! after it is released (versioned, so a late write of an older record is skipped).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::Poll;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::quota::{
    backoff_with_jitter, free_daily_limit, write_newer, AccountBook, Availability, Hold, Persist,
    Reserved, Spread, NS,
};
use super::usage::{self, PaidDay, PAID_DAY_KEY};
use super::{AccountStatus, CompletionRequest, LlmRouter, ModelInfo, RouterStatus, TierStatus};
use crate::clock::{next_utc_midnight, until, utc_day, SharedClock};
use crate::config::providers::{ExtraTierConfig, Price};
use crate::config::{Config, ConfigError, Env, Secrets};
use crate::context::{fit_context, message_tokens, prompt_budget};
use crate::domain::{
    AnswerSource, Completion, ConversationKey, FailureKind, ReplyEvent, ReplyStream, TierName,
    Usage, UserFacingError,
};
use crate::providers::{ChatProvider, ProviderError, ProviderEvent, ProviderRequest};
use crate::secrets::NamedSecret;
use crate::store::{self, Store};

/// The provider name of the free tier.
pub const OPENROUTER: &str = "openrouter";
/// The provider name of the paid tier.
pub const OLLAMA_CLOUD: &str = "ollama-cloud";
/// At most this many provider calls for one turn. Every failure changes state (an account held, a model
/// skipped, a smaller context), so the loop ends by itself; this bounds it even against a provider that
/// answers every call with a fresh error.
const MAX_ATTEMPTS_PER_TURN: usize = 24;
/// A model the provider said does not exist is skipped this long before it is tried again (providers
/// add and remove free models; an hour keeps a missing one from costing a request per turn).
const MODEL_MISSING_RETRY_MS: i64 = 3_600_000;
/// Reply events buffered between the router task and the consumer: enough for bursts of small deltas,
/// small enough that a stalled consumer applies backpressure to the provider stream.
const EVENT_BUFFER: usize = 64;
/// A context that was "too long" is refitted with this fraction of what was sent (halving converges in
/// a few steps without throwing away more history than needed).
const REFIT_DIVISOR: usize = 2;

/// The quota a `GET /key` reported for one account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyQuota {
    /// Free-model requests per UTC day (50 or 1000 on OpenRouter), if reported.
    pub daily_limit: Option<u64>,
    /// Free-model requests left today, if reported.
    pub remaining: Option<u64>,
    /// Whether the account is on the free tier (never bought credits), if reported.
    pub is_free_tier: Option<bool>,
}

/// Asks a provider how much quota a key's account has left (OpenRouter's `GET /key`).
pub trait QuotaProbe: Send + Sync + 'static {
    /// `Ok(None)` when the endpoint lacks the route (404): quota unknown, not an error.
    fn key_quota(
        &self,
        key: &SecretString,
    ) -> BoxFuture<'static, Result<Option<KeyQuota>, ProviderError>>;
}

/// The provider clients a router uses; [`FreeFirstRouter::from_config`] builds the real ones, tests
/// inject fakes or clients pointed at the simulators.
#[derive(Default, Clone)]
pub struct ProviderSet {
    /// The OpenRouter client (free tier), if any.
    pub openrouter: Option<Arc<dyn ChatProvider>>,
    /// Its `GET /key` probe.
    pub quota_probe: Option<Arc<dyn QuotaProbe>>,
    /// The Ollama Cloud client (paid tier), if any.
    pub ollama: Option<Arc<dyn ChatProvider>>,
    /// Clients of the extra tiers, by tier name, with the tier's key if it has one.
    pub extra: BTreeMap<String, (Arc<dyn ChatProvider>, Option<NamedSecret>)>,
}

#[derive(Clone)]
struct ModelSpec {
    name: String,
    context_window: usize,
}

#[derive(Clone)]
struct Tier {
    name: TierName,
    provider_name: String,
    /// How the provider is named to users in the paid notice.
    display: String,
    provider: Arc<dyn ChatProvider>,
    models: Vec<ModelSpec>,
    /// Context windows of models not in `models` that the tier can still route (see `routes`).
    context_windows: BTreeMap<String, usize>,
    default_context_window: usize,
    /// Whether any `:free` model id is routable here (OpenRouter): `openrouter/free` answers with one,
    /// and stickiness keeps it.
    routes_free_ids: bool,
    accounts: Vec<usize>,
    spread: Spread,
    paid: bool,
}

impl Tier {
    /// A model this tier can be asked for by name: a configured one, or on OpenRouter any `:free` id.
    fn routes(&self, model: &str) -> Option<ModelSpec> {
        if let Some(m) = self.models.iter().find(|m| m.name == model) {
            return Some(m.clone());
        }
        (self.routes_free_ids && model.ends_with(":free")).then(|| ModelSpec {
            name: model.to_owned(),
            context_window: window(&self.context_windows, self.default_context_window, model),
        })
    }
}

#[derive(Clone)]
struct Switches {
    free_only: bool,
    paid_enabled: bool,
    paid_daily_cap: u64,
    paid_spend_alert_usd: f64,
    sticky: bool,
    payment_cooldown: Duration,
    quota_refresh: Duration,
    free_wait_max: Duration,
}

#[derive(Clone)]
struct Policy {
    tiers: Vec<Tier>,
    switches: Switches,
    prices: BTreeMap<String, Price>,
}

/// Mutable state behind one mutex: quotas, cursors, missing models and daily counters.
struct State {
    book: AccountBook,
    cursors: Vec<usize>,
    missing: HashMap<(String, String), i64>,
    paid: PaidDay,
    tier_requests: HashMap<String, (i64, u64)>,
}

/// What conversations remember: the model that last answered (stickiness).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Sticky {
    tier: String,
    model: String,
}

struct Shared {
    clock: SharedClock,
    store: Arc<dyn Store>,
    policy: RwLock<Arc<Policy>>,
    state: Mutex<State>,
    /// Secrets by key index of the account book (`None` for keyless endpoints).
    secrets: Vec<Option<SecretString>>,
    probe: Option<Arc<dyn QuotaProbe>>,
    providers: ProviderSet,
}

/// The free-first [`LlmRouter`].
pub struct FreeFirstRouter {
    shared: Arc<Shared>,
}

/// Why a tier did not answer, for the paid notice and the final "unavailable" message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TierOutcome {
    /// Not tried (an earlier tier answered or it was never reached).
    Untried,
    /// Every account's daily quota is spent.
    QuotaUsedUp,
    /// Accounts are at their per-minute limit.
    Busy,
    /// Accounts are out of credits.
    NoCredits,
    /// Every key was rejected.
    KeysRejected,
    /// Providers failed (5xx, timeouts, missing models, …).
    Failing,
    /// The provider's content filter declined this message.
    Refused,
    /// Policy: free only.
    FreeOnly,
    /// Policy: the paid tier is off.
    PaidOff,
    /// This user's paid cap is reached.
    UserCap,
    /// The global paid cap is reached.
    GlobalCap,
}

impl FreeFirstRouter {
    /// Builds the router and its provider clients from the configuration.
    pub fn from_config(
        config: &Config,
        secrets: &Secrets,
        store: Arc<dyn Store>,
        clock: SharedClock,
    ) -> Result<Arc<Self>, ConfigError> {
        let providers = super::clients::build(config, &Env::from_process(), clock.clone())?;
        Self::with_providers(config, secrets, providers, store, clock)
    }

    /// Builds the router over the given provider clients (tests point them at fakes or simulators).
    pub fn with_providers(
        config: &Config,
        secrets: &Secrets,
        providers: ProviderSet,
        store: Arc<dyn Store>,
        clock: SharedClock,
    ) -> Result<Arc<Self>, ConfigError> {
        let mut book = AccountBook::default();
        let mut key_secrets = Vec::new();
        if providers.openrouter.is_some() {
            let or = &config.openrouter;
            let per_minute = (or.requests_per_minute > 0).then_some(or.requests_per_minute);
            let daily =
                (or.free_requests_per_day > 0).then_some(u64::from(or.free_requests_per_day));
            for key in &secrets.openrouter_keys {
                let label = or
                    .accounts
                    .get(&key.name)
                    .cloned()
                    .unwrap_or_else(|| key.name.clone());
                let a = book.account(OPENROUTER, &label, per_minute, daily);
                book.add_key(a, &key.name, Some(key.fingerprint()));
                key_secrets.push(Some(key.value.clone()));
            }
        }
        if providers.ollama.is_some() {
            for key in &secrets.ollama_keys {
                let a = book.account(OLLAMA_CLOUD, &key.name, None, None);
                book.add_key(a, &key.name, Some(key.fingerprint()));
                key_secrets.push(Some(key.value.clone()));
            }
        }
        for tier in &config.tiers {
            let Some((_, key)) = providers.extra.get(&tier.name) else {
                continue;
            };
            let a = book.account(&tier.name, "default", None, None);
            book.add_key(
                a,
                key.as_ref().map_or("(no key)", |k| k.name.as_str()),
                key.as_ref().map(NamedSecret::fingerprint),
            );
            key_secrets.push(key.as_ref().map(|k| k.value.clone()));
        }
        book.load(store.as_ref());
        usage::prepare(store.as_ref());
        let paid = store::get_json::<PaidDay>(store.as_ref(), NS, PAID_DAY_KEY)
            .ok()
            .flatten()
            .unwrap_or_default();
        let policy = build_policy(config, &providers, &book)?;
        if policy.tiers.is_empty() {
            tracing::warn!("no model tier is usable: set OPENROUTER_API_KEY_1 or OLLAMA_API_KEY (see `switchboard check`)");
        }
        let cursors = vec![0; policy.tiers.len().max(8)];
        Ok(Arc::new(Self {
            shared: Arc::new(Shared {
                clock,
                store,
                policy: RwLock::new(Arc::new(policy)),
                state: Mutex::new(State {
                    book,
                    cursors,
                    missing: HashMap::new(),
                    paid,
                    tier_requests: HashMap::new(),
                }),
                secrets: key_secrets,
                probe: providers.quota_probe.clone(),
                providers,
            }),
        }))
    }

    /// Asks `GET /key` for every OpenRouter account's quota (one key per account) and learns the daily
    /// limit and what is left. A missing route (404) leaves the quota unknown; a rejected key is taken
    /// out and warned about; other errors are logged and the account keeps its current state.
    pub async fn refresh_quotas(&self) {
        let Some(probe) = self.shared.probe.clone() else {
            return;
        };
        let accounts: Vec<(usize, usize, String)> = {
            let st = self.shared.lock();
            st.book
                .accounts
                .iter()
                .enumerate()
                .filter(|(_, a)| a.provider == OPENROUTER)
                .filter_map(|(i, a)| {
                    let k = a
                        .keys
                        .iter()
                        .copied()
                        .find(|&k| st.book.keys[k].rejected.is_none())?;
                    Some((i, k, a.label.clone()))
                })
                .collect()
        };
        for (account, key, label) in accounts {
            let Some(secret) = self.shared.secrets[key].clone() else {
                continue;
            };
            match probe.key_quota(&secret).await {
                Ok(Some(q)) => {
                    let now = self.shared.clock.now_ms();
                    let limit = free_daily_limit(q.daily_limit, q.is_free_tier);
                    let p = self
                        .shared
                        .lock()
                        .book
                        .learn(account, limit, q.remaining, now);
                    self.shared.write(&p);
                    tracing::info!(account = %label, limit = ?limit, remaining = ?q.remaining, free_tier = ?q.is_free_tier, "free quota learned");
                }
                Ok(None) => {
                    tracing::debug!(account = %label, "GET /key not offered: quota unknown")
                }
                Err(ProviderError::Unauthorized { status }) => {
                    self.shared.reject(key, status);
                }
                Err(e) => {
                    tracing::info!(account = %label, "GET /key failed, keeping the current quota state: {e}")
                }
            }
        }
    }

    /// Refreshes quotas now and then every `[router].quota_refresh_secs` until `shutdown`.
    pub fn spawn_background(self: &Arc<Self>, shutdown: CancellationToken) {
        let router = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                router.refresh_quotas().await;
                let every = router.shared.policy().switches.quota_refresh;
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
    }

    /// Applies a reloaded configuration: model lists, switches, prices and tiers; keys rejected with
    /// 401/403 get another chance. Quota and cooldown state is kept. New extra tiers, new keys or changed
    /// base URLs need a restart (their clients are built at start-up); a warning says so. A configuration
    /// the router cannot apply is an error, and the current one stays in force.
    pub fn reload(&self, config: &Config) -> Result<(), ConfigError> {
        let mut st = self.shared.lock();
        let policy = build_policy(config, &self.shared.providers, &st.book)?;
        for tier in &config.tiers {
            if !self.shared.providers.extra.contains_key(&tier.name) {
                tracing::warn!(tier = %tier.name, "new tier needs a restart to be used");
            }
        }
        st.book.clear_rejections();
        if st.cursors.len() < policy.tiers.len() {
            st.cursors.resize(policy.tiers.len(), 0);
        }
        st.missing.clear();
        drop(st);
        *self
            .shared
            .policy
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        tracing::info!("router configuration reloaded");
        Ok(())
    }

    /// The routing decision alone, for the benchmark and diagnostics: picks and reserves an account in the first tier
    /// with one ready, without sending anything. Returns (tier, key fingerprint).
    pub fn decide(&self) -> Option<(TierName, Option<String>)> {
        let policy = self.shared.policy();
        let now = self.shared.clock.now_ms();
        let mut st = self.shared.lock();
        for (t, tier) in policy.tiers.iter().enumerate() {
            let State { book, cursors, .. } = &mut *st;
            if let Some(r) = book.reserve(&tier.accounts, tier.spread, &mut cursors[t], now) {
                return Some((tier.name.clone(), book.keys[r.key].fingerprint.clone()));
            }
        }
        None
    }
}

fn window(map: &BTreeMap<String, usize>, default: usize, model: &str) -> usize {
    map.get(model).copied().unwrap_or(default)
}

fn build_policy(
    config: &Config,
    providers: &ProviderSet,
    book: &AccountBook,
) -> Result<Policy, ConfigError> {
    config.router.check_tier_order(&config.tiers)?;
    let accounts_of = |provider: &str| -> Vec<usize> {
        book.accounts
            .iter()
            .enumerate()
            .filter(|(_, a)| a.provider == provider)
            .map(|(i, _)| i)
            .collect()
    };
    // The default order: free, paid, then the extra tiers as written.
    let mut tiers = Vec::new();
    if let Some(client) = &providers.openrouter {
        let accounts = accounts_of(OPENROUTER);
        let or = &config.openrouter;
        if !accounts.is_empty() && !or.free_models.is_empty() {
            tiers.push(Tier {
                name: TierName::free(),
                provider_name: OPENROUTER.into(),
                display: "OpenRouter".into(),
                provider: Arc::clone(client),
                models: or
                    .free_models
                    .iter()
                    .map(|m| ModelSpec {
                        name: m.clone(),
                        context_window: window(&or.context_windows, or.default_context_window, m),
                    })
                    .collect(),
                context_windows: or.context_windows.clone(),
                default_context_window: or.default_context_window,
                routes_free_ids: true,
                accounts,
                spread: Spread::InOrder,
                paid: false,
            });
        }
    }
    if let Some(client) = &providers.ollama {
        let accounts = accounts_of(OLLAMA_CLOUD);
        let ol = &config.ollama;
        if !accounts.is_empty() && !ol.models.is_empty() {
            tiers.push(Tier {
                name: TierName::paid(),
                provider_name: OLLAMA_CLOUD.into(),
                display: "Ollama Cloud".into(),
                provider: Arc::clone(client),
                models: ol
                    .models
                    .iter()
                    .map(|m| ModelSpec {
                        name: m.clone(),
                        context_window: window(&ol.context_windows, ol.default_context_window, m),
                    })
                    .collect(),
                context_windows: ol.context_windows.clone(),
                default_context_window: ol.default_context_window,
                routes_free_ids: false,
                accounts,
                spread: Spread::LeastUsed,
                paid: true,
            });
        }
    }
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
    let r = &config.router;
    Ok(Policy {
        tiers,
        switches: Switches {
            free_only: r.free_only,
            paid_enabled: r.paid_enabled,
            paid_daily_cap: r.paid_daily_cap,
            paid_spend_alert_usd: r.paid_spend_alert_usd,
            sticky: r.sticky,
            payment_cooldown: Duration::from_secs(r.payment_cooldown_secs),
            quota_refresh: Duration::from_secs(r.quota_refresh_secs),
            free_wait_max: Duration::from_secs(r.free_wait_max_secs),
        },
        prices: config.ollama.prices.clone(),
    })
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
        models: extra
            .models
            .iter()
            .map(|m| ModelSpec {
                name: m.clone(),
                context_window: extra.context_window,
            })
            .collect(),
        context_windows: BTreeMap::new(),
        default_context_window: extra.context_window,
        routes_free_ids: false,
        accounts,
        spread: Spread::LeastUsed,
    }
}

/// One model to try on one tier.
#[derive(Clone)]
struct Candidate {
    tier: usize,
    model: ModelSpec,
}

impl Policy {
    /// Candidates in order: an explicitly chosen model first, then every tier's models in order with the
    /// conversation's sticky model first within its tier. Tier order always wins over stickiness, so a
    /// conversation that fell back to the paid tier returns to the free tier when quota is back. A sticky
    /// model the tier routes without listing it (a `:free` id `openrouter/free` picked) is tried first too.
    fn candidates(&self, explicit: Option<&str>, sticky: Option<&Sticky>) -> Vec<Candidate> {
        let mut out: Vec<Candidate> =
            Vec::with_capacity(self.tiers.iter().map(|t| t.models.len() + 1).sum());
        let push = |out: &mut Vec<Candidate>, tier: usize, model: ModelSpec| {
            if !out
                .iter()
                .any(|c| c.tier == tier && c.model.name == model.name)
            {
                out.push(Candidate { tier, model });
            }
        };
        if let Some(name) = explicit {
            if let Some((t, m)) = self.find(|_, m| m.name == name) {
                push(&mut out, t, self.tiers[t].models[m].clone());
            }
        }
        for (t, tier) in self.tiers.iter().enumerate() {
            if let Some(s) = sticky.filter(|s| s.tier == tier.name.0) {
                if let Some(spec) = tier.routes(&s.model) {
                    push(&mut out, t, spec);
                }
            }
            for m in &tier.models {
                push(&mut out, t, m.clone());
            }
        }
        out
    }

    fn find(&self, pred: impl Fn(&Tier, &ModelSpec) -> bool) -> Option<(usize, usize)> {
        self.tiers.iter().enumerate().find_map(|(t, tier)| {
            tier.models
                .iter()
                .position(|m| pred(tier, m))
                .map(|m| (t, m))
        })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn write(&self, (key, record): &Persist) {
        if let Err(e) = write_newer(self.store.as_ref(), key, record) {
            tracing::warn!("router state not written: {e}");
        }
    }

    fn write_paid(&self, paid: &PaidDay) {
        if let Err(e) = write_newer(self.store.as_ref(), PAID_DAY_KEY, paid) {
            tracing::warn!("paid counter not written: {e}");
        }
    }

    /// Makes the state just written durable: a hold must survive a crash right after it was learned
    /// (sled alone would lose the last half second), or the restarted router spends on it again.
    async fn flush(&self) {
        if let Err(e) = self.store.flush().await {
            tracing::warn!("router state not flushed: {e}");
        }
    }

    fn reject(&self, key: usize, status: u16) {
        let (first, name, fp) = {
            let mut st = self.lock();
            let first = st.book.reject_key(key, status);
            let k = &st.book.keys[key];
            (
                first,
                k.name.clone(),
                k.fingerprint.clone().unwrap_or_default(),
            )
        };
        if first {
            tracing::error!(
                key = %name,
                fingerprint = %fp,
                "API key REJECTED by the provider (HTTP {status}): it is out of rotation until the configuration is reloaded (SIGHUP). Replace or remove it; run `switchboard check`."
            );
        }
    }

    /// Whether a paid tier may take a request for this turn; `Err` says why not.
    fn paid_gate(
        &self,
        policy: &Policy,
        req: &CompletionRequest,
        now: i64,
    ) -> Result<(), TierOutcome> {
        let s = &policy.switches;
        if s.free_only {
            return Err(TierOutcome::FreeOnly);
        }
        if !s.paid_enabled {
            return Err(TierOutcome::PaidOff);
        }
        if !req.paid_allowed {
            return Err(TierOutcome::UserCap);
        }
        if s.paid_daily_cap > 0 {
            let st = self.lock();
            if st.paid.day == utc_day(now) && st.paid.requests >= s.paid_daily_cap {
                return Err(TierOutcome::GlobalCap);
            }
        }
        Ok(())
    }

    /// Reserves a request on a ready account of tier `t`: (account, key, ticket). On `Err`, says why no
    /// account was ready.
    fn reserve(&self, t: usize, tier: &Tier, now: i64) -> Result<(usize, usize, u64), TierOutcome> {
        let (reserved, paid_write) = {
            let mut st = self.lock();
            let State {
                book,
                cursors,
                paid,
                tier_requests,
                ..
            } = &mut *st;
            match book.reserve(&tier.accounts, tier.spread, &mut cursors[t], now) {
                Some(reserved) => {
                    let today = utc_day(now);
                    let entry = tier_requests
                        .entry(tier.name.0.clone())
                        .or_insert((today, 0));
                    if entry.0 != today {
                        *entry = (today, 0);
                    }
                    entry.1 += 1;
                    let paid_write = tier.paid.then(|| {
                        if paid.day != today {
                            *paid = PaidDay {
                                day: today,
                                version: paid.version,
                                ..PaidDay::default()
                            };
                        }
                        paid.requests += 1;
                        paid.version += 1;
                        *paid
                    });
                    (Ok(reserved), paid_write)
                }
                None => (Err(why_unavailable(book, &tier.accounts, now)), None),
            }
        };
        let Reserved {
            account,
            key,
            ticket,
            persist,
        } = reserved?;
        self.write(&persist);
        if let Some(p) = paid_write {
            self.write_paid(&p);
        }
        Ok((account, key, ticket))
    }

    /// When tier `tier`'s first account held back only by its per-minute limit frees up, if one will.
    fn soonest_minute_free(&self, tier: &Tier, now: i64) -> Option<i64> {
        self.lock().book.soonest_minute_free(&tier.accounts, now)
    }

    fn model_missing(&self, tier: &Tier, model: &str, now: i64) -> bool {
        let st = self.lock();
        st.missing
            .get(&(tier.provider_name.clone(), model.to_owned()))
            .is_some_and(|&until| until > now)
    }

    /// The error taxonomy: how the router reacts to each provider error before the first token. A hold
    /// it records is flushed to disk before the turn goes on.
    async fn react(
        &self,
        policy: &Policy,
        tier: &Tier,
        model: &str,
        (account, key): (usize, usize),
        error: &ProviderError,
        now: i64,
    ) -> Reaction {
        let persist = {
            let mut st = self.lock();
            let book = &mut st.book;
            match *error {
                ProviderError::RateLimited { daily: true, .. } => {
                    Some(book.hold_daily(account, now))
                }
                ProviderError::RateLimited {
                    retry_after,
                    reset_at_ms,
                    daily: false,
                } => {
                    let (until, backed_off) = match (retry_after, reset_at_ms) {
                        (Some(wait), _) => (
                            now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2),
                            false,
                        ),
                        (None, Some(reset)) if reset > now => (reset, false),
                        _ => {
                            let step = book.accounts[account].record.backoff_step;
                            let wait = backoff_with_jitter(step, fastrand::f64());
                            (now + i64::try_from(wait.as_millis()).unwrap_or(0), true)
                        }
                    };
                    Some(book.hold_rate_limited(account, until, backed_off))
                }
                ProviderError::PaymentRequired => {
                    Some(book.hold_no_credits(account, now, policy.switches.payment_cooldown))
                }
                ProviderError::ModelNotFound => {
                    st.missing.insert(
                        (tier.provider_name.clone(), model.to_owned()),
                        now + MODEL_MISSING_RETRY_MS,
                    );
                    None
                }
                _ => None,
            }
        };
        if let Some(p) = persist {
            self.write(&p);
            self.flush().await;
        }
        tracing::info!(tier = %tier.name, provider = %tier.provider_name, model, "provider call failed: {error}");
        match error {
            ProviderError::RateLimited { .. } | ProviderError::PaymentRequired => {
                Reaction::NextAccount
            }
            ProviderError::Unauthorized { status } => {
                self.reject(key, *status);
                Reaction::NextAccount
            }
            ProviderError::ContextTooLong => Reaction::Refit,
            ProviderError::Refused => Reaction::Declined,
            ProviderError::Connect => Reaction::EndpointDown,
            ProviderError::ModelNotFound
            | ProviderError::Upstream { .. }
            | ProviderError::Timeout
            | ProviderError::Stalled
            | ProviderError::Truncated
            | ProviderError::MidStream { .. }
            | ProviderError::Malformed(_) => Reaction::NextModel,
        }
    }

    fn succeeded(&self, account: usize, ticket: u64) {
        let now = self.clock.now_ms();
        let p = self.lock().book.succeeded(account, ticket, now);
        if let Some(p) = p {
            self.write(&p);
        }
    }

    fn kv_flag(&self, key: &str) -> bool {
        matches!(self.store.kv_get(NS, key), Ok(Some(_)))
    }

    fn set_flag(&self, key: &str) {
        if let Err(e) = self.store.kv_put(NS, key, &[1]) {
            tracing::warn!("router flag not written: {e}");
        }
    }

    fn account_usage(
        &self,
        policy: &Policy,
        tier: &Tier,
        model: &ModelSpec,
        real_model: &str,
        req: &CompletionRequest,
        usage: Usage,
    ) {
        let now = self.clock.now_ms();
        let day = utc_day(now);
        usage::record(
            self.store.as_ref(),
            day,
            &tier.provider_name,
            real_model,
            &req.user,
            usage,
        );
        if !tier.paid {
            return;
        }
        let Some(price) = policy
            .prices
            .get(&model.name)
            .or_else(|| policy.prices.get(real_model))
        else {
            return;
        };
        let cost = usage::cost(*price, usage);
        let (paid, alert) = {
            let mut st = self.lock();
            if st.paid.day != day {
                st.paid = PaidDay {
                    day,
                    version: st.paid.version,
                    ..PaidDay::default()
                };
            }
            st.paid.cost_usd += cost;
            st.paid.version += 1;
            let limit = policy.switches.paid_spend_alert_usd;
            let alert = limit > 0.0 && !st.paid.alerted && st.paid.cost_usd >= limit;
            if alert {
                st.paid.alerted = true;
            }
            (st.paid, alert)
        };
        if alert {
            tracing::warn!(
                spent_usd = paid.cost_usd,
                alert_usd = policy.switches.paid_spend_alert_usd,
                "estimated paid-tier spend today passed the alert threshold"
            );
        }
        self.write_paid(&paid);
    }
}

fn why_unavailable(book: &AccountBook, accounts: &[usize], now: i64) -> TierOutcome {
    let states: Vec<Availability> = accounts
        .iter()
        .map(|&a| book.availability(a, now))
        .collect();
    if states.iter().any(|s| {
        matches!(
            s,
            Availability::MinuteFull(_) | Availability::Held(Hold::RateLimited, _)
        )
    }) {
        TierOutcome::Busy
    } else if states
        .iter()
        .any(|s| matches!(s, Availability::Held(Hold::NoCredits, _)))
    {
        TierOutcome::NoCredits
    } else if !states.is_empty()
        && states
            .iter()
            .all(|s| matches!(s, Availability::Rejected(_)))
    {
        TierOutcome::KeysRejected
    } else {
        TierOutcome::QuotaUsedUp
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reaction {
    /// Same model, another account (this one is now held or rejected).
    NextAccount,
    /// Skip to the next model (the provider or model is failing).
    NextModel,
    /// Send again with a smaller context, or move on if it cannot shrink.
    Refit,
    /// The provider's content filter declined this request: try the next model (the key is fine).
    Declined,
    /// The endpoint cannot be reached at all: skip the rest of its candidates for this turn (every
    /// other model and key there would only fail the same way, one connect timeout each).
    EndpointDown,
}

/// The reason shown in the paid notice, from what happened to the free tiers.
fn notice_reason(free: TierOutcome, explicit: bool) -> &'static str {
    if explicit {
        return "You picked a paid model";
    }
    match free {
        TierOutcome::QuotaUsedUp => "Free quota is used up until 00:00 UTC",
        TierOutcome::Busy => "The free models are at their per-minute limit",
        TierOutcome::NoCredits => "The free accounts are out of credits",
        TierOutcome::KeysRejected => "The free tier's keys were rejected",
        TierOutcome::Failing => "The free models are not answering right now",
        TierOutcome::Refused => "The free models declined this message",
        _ => "No free tier is configured",
    }
}

/// The answer to every message when no model tier is usable at all (no key set, or no model listed):
/// waiting will not help, the operator has to add keys.
pub const NO_MODELS_MESSAGE: &str = "No model is set up, so I cannot answer: no model keys are \
     configured. The operator adds one — OPENROUTER_API_KEY_1 (free tier) or OLLAMA_API_KEY (paid tier) in \
     the environment, or a [[tiers]] entry with key_env — and restarts; `switchboard check` shows what is \
     missing.";

/// The friendly message when nothing could answer.
fn unavailable_message(free: TierOutcome, paid: TierOutcome) -> String {
    let free_part = match free {
        TierOutcome::QuotaUsedUp => "The free quota is used up until 00:00 UTC",
        TierOutcome::Busy => "The free models are busy right now",
        TierOutcome::NoCredits | TierOutcome::KeysRejected => "The free tier is unavailable",
        TierOutcome::Failing => "The free models are not answering right now",
        _ => "No free model is available",
    };
    let paid_part = match paid {
        TierOutcome::FreeOnly | TierOutcome::PaidOff => " and the paid models are switched off",
        TierOutcome::UserCap => " and you reached today's limit for the paid models",
        TierOutcome::GlobalCap => " and today's paid-model budget is spent",
        TierOutcome::Untried => "",
        _ => " and the paid models are not answering either",
    };
    let when = if free == TierOutcome::QuotaUsedUp && paid != TierOutcome::Failing {
        "after 00:00 UTC"
    } else {
        "in a minute"
    };
    format!("{free_part}{paid_part}. Please try again {when}.")
}

/// After waiting for a busy free tier: its candidates again from where they were first skipped, then
/// the candidates not tried yet.
fn retry_busy_tier(
    order: &mut Vec<Candidate>,
    i: &mut usize,
    blocked: &mut [Option<TierOutcome>],
    busy: Option<FreeBusy>,
) {
    let Some(b) = busy else {
        return;
    };
    let end = (*i).min(order.len());
    let mut next: Vec<Candidate> = order[b.from..end]
        .iter()
        .filter(|c| c.tier == b.tier)
        .cloned()
        .collect();
    next.extend_from_slice(&order[end..]);
    *order = next;
    *i = 0;
    blocked[b.tier] = None;
}

/// Shown when every model that was asked declined the message (a content filter flagged it).
const DECLINED_MESSAGE: &str =
    "The provider declined this message (its content filter flagged it), so there is no answer. Try rephrasing it.";

/// Shown when a reply is cut after it started.
const INTERRUPTED_MESSAGE: &str =
    "The model stopped answering mid-reply, so this answer is incomplete. Send your message again to retry.";

/// How one provider stream ended.
enum StreamEnd {
    Finished,
    FailedBeforeFirst(ProviderError),
    Interrupted,
    ConsumerGone,
}

struct Turn<'a> {
    shared: &'a Shared,
    policy: &'a Policy,
    req: &'a CompletionRequest,
    tx: &'a mpsc::Sender<ReplyEvent>,
    free: TierOutcome,
    paid: TierOutcome,
    explicit_paid: bool,
    /// A model's content filter declined the message (the final message then says so).
    declined: bool,
}

/// A free tier found with every account at its per-minute limit: when the first frees, and where in the
/// candidate list its models start.
#[derive(Clone, Copy)]
struct FreeBusy {
    until_ms: i64,
    tier: usize,
    from: usize,
}

impl Turn<'_> {
    async fn send(&self, event: ReplyEvent) -> bool {
        self.tx.send(event).await.is_ok()
    }

    async fn run(mut self) {
        let policy = self.policy;
        let req = self.req;
        let sticky_key = format!("sticky/{}", req.conversation);
        let sticky: Option<Sticky> = if policy.switches.sticky {
            store::get_json(self.shared.store.as_ref(), NS, &sticky_key)
                .ok()
                .flatten()
        } else {
            None
        };
        let mut order = policy.candidates(req.model.as_deref(), sticky.as_ref());
        if let (Some(name), Some(first)) = (req.model.as_deref(), order.first()) {
            let tier = &policy.tiers[first.tier];
            self.explicit_paid = tier.paid && tier.models.iter().any(|m| m.name == name);
        }
        let mut blocked: Vec<Option<TierOutcome>> = vec![None; policy.tiers.len()];
        let mut budgets: HashMap<(usize, String), usize> = HashMap::new();
        let mut wait_left = policy.switches.free_wait_max;
        let mut free_busy: Option<FreeBusy> = None;
        let mut i = 0;
        let mut attempts = 0;
        loop {
            while i < order.len() && attempts < MAX_ATTEMPTS_PER_TURN {
                let Candidate { tier: t, ref model } = order[i];
                let model = model.clone();
                let tier = &policy.tiers[t];
                let now = self.shared.clock.now_ms();
                if blocked[t].is_some() || self.shared.model_missing(tier, &model.name, now) {
                    i += 1;
                    continue;
                }
                if tier.paid {
                    if let Err(why) = self.shared.paid_gate(policy, req, now) {
                        self.note(tier, why);
                        blocked[t] = Some(why);
                        i += 1;
                        continue;
                    }
                    // About to spend a paid request: a free account freeing within the wait is cheaper.
                    if self.wait_for_free(&mut free_busy, &mut wait_left).await {
                        retry_busy_tier(&mut order, &mut i, &mut blocked, free_busy.take());
                        continue;
                    }
                }
                let budget = *budgets
                    .entry((t, model.name.clone()))
                    .or_insert_with(|| prompt_budget(model.context_window));
                let messages = fit_context(&req.system_prompt, &req.history, &req.prompt, budget);
                let (account, key, ticket) = match self.shared.reserve(t, tier, now) {
                    Ok(reserved) => reserved,
                    Err(why) => {
                        if why == TierOutcome::Busy && !tier.paid && free_busy.is_none() {
                            free_busy =
                                self.shared.soonest_minute_free(tier, now).map(|until_ms| {
                                    FreeBusy {
                                        until_ms,
                                        tier: t,
                                        from: i,
                                    }
                                });
                        }
                        self.note(tier, why);
                        blocked[t] = Some(why);
                        i += 1;
                        continue;
                    }
                };
                attempts += 1;
                let sent_tokens: usize = messages.iter().map(message_tokens).sum();
                let sent_len = messages.len();
                let request = ProviderRequest {
                    model: model.name.clone(),
                    messages,
                    max_tokens: req.max_tokens,
                };
                let secret = self.shared.secrets[key].clone();
                let error = match tier.provider.chat_stream(secret.as_ref(), request).await {
                    Ok(stream) => {
                        let reserved = (account, key, ticket);
                        match self.consume(tier, &model, reserved, stream).await {
                            StreamEnd::Finished
                            | StreamEnd::Interrupted
                            | StreamEnd::ConsumerGone => return,
                            StreamEnd::FailedBeforeFirst(e) => e,
                        }
                    }
                    Err(e) => e,
                };
                let now = self.shared.clock.now_ms();
                match self
                    .shared
                    .react(policy, tier, &model.name, (account, key), &error, now)
                    .await
                {
                    Reaction::NextAccount => {}
                    Reaction::NextModel => {
                        self.note(tier, TierOutcome::Failing);
                        i += 1;
                    }
                    Reaction::Declined => {
                        self.declined = true;
                        self.note(tier, TierOutcome::Refused);
                        i += 1;
                    }
                    Reaction::EndpointDown => {
                        self.note(tier, TierOutcome::Failing);
                        blocked[t] = Some(TierOutcome::Failing);
                        i += 1;
                    }
                    Reaction::Refit => {
                        // Never resend unchanged: shrink the budget below what was sent; if the context
                        // cannot shrink (only the system prompt and the prompt are left), try the next
                        // model (later candidates may have larger windows).
                        let smaller = sent_tokens / REFIT_DIVISOR;
                        let refit =
                            fit_context(&req.system_prompt, &req.history, &req.prompt, smaller);
                        if refit.len() < sent_len {
                            budgets.insert((t, model.name.clone()), smaller);
                        } else {
                            self.note(tier, TierOutcome::Failing);
                            i += 1;
                        }
                    }
                }
            }
            // Nothing answered: rather than give up, wait for a free account about to free up.
            if attempts < MAX_ATTEMPTS_PER_TURN
                && self.wait_for_free(&mut free_busy, &mut wait_left).await
            {
                retry_busy_tier(&mut order, &mut i, &mut blocked, free_busy.take());
                continue;
            }
            break;
        }
        let failure = if self.declined {
            UserFacingError::new(FailureKind::Refused, DECLINED_MESSAGE)
        } else if self.policy.tiers.is_empty() {
            UserFacingError::new(FailureKind::Unavailable, NO_MODELS_MESSAGE)
        } else {
            UserFacingError::new(
                FailureKind::Unavailable,
                unavailable_message(self.free, self.paid),
            )
        };
        let _ = self.send(ReplyEvent::Failed(failure)).await;
    }

    /// Waits for the busy free tier's first account when it frees within what is left of the turn's
    /// wait allowance (`[router] free_wait_max_secs`); returns whether it waited. The sleep is on tokio
    /// time, which the router's clock follows (the system clock; `TokioClock` under paused time).
    async fn wait_for_free(&self, busy: &mut Option<FreeBusy>, wait_left: &mut Duration) -> bool {
        let Some(b) = *busy else {
            return false;
        };
        let wait = until(self.shared.clock.now_ms(), b.until_ms);
        if wait > *wait_left {
            // Too long: do not ask again this turn.
            *busy = None;
            return false;
        }
        *wait_left -= wait;
        tracing::debug!(
            wait_ms = wait.as_millis(),
            "every free account is at its per-minute limit: waiting for the first rather than paying"
        );
        tokio::time::sleep(wait).await;
        true
    }

    /// Remembers the first reason a free or paid tier could not answer.
    fn note(&mut self, tier: &Tier, why: TierOutcome) {
        let slot = if tier.paid {
            &mut self.paid
        } else {
            &mut self.free
        };
        if *slot == TierOutcome::Untried
            || (*slot == TierOutcome::Failing && why != TierOutcome::Failing)
        {
            *slot = why;
        }
    }

    async fn consume(
        &mut self,
        tier: &Tier,
        model: &ModelSpec,
        reserved: (usize, usize, u64),
        mut stream: crate::providers::ProviderStream,
    ) -> StreamEnd {
        let (account, key, _) = reserved;
        let mut real_model: Option<String> = None;
        let mut source: Option<AnswerSource> = None;
        loop {
            let event = stream.next().await.unwrap_or(Err(ProviderError::Truncated));
            match event {
                Ok(ProviderEvent::Model(name)) => {
                    if source.is_none() {
                        real_model = Some(name);
                    }
                }
                Ok(ProviderEvent::Delta(text)) => {
                    if text.is_empty() {
                        continue;
                    }
                    if source.is_none() {
                        match self.start(tier, model, reserved, real_model.take()).await {
                            Some(s) => source = Some(s),
                            None => return StreamEnd::ConsumerGone,
                        }
                    }
                    if !self.send(ReplyEvent::Delta(text)).await {
                        return StreamEnd::ConsumerGone;
                    }
                }
                Ok(ProviderEvent::Done { usage, .. }) => {
                    let source = match source {
                        Some(s) => s,
                        None => match self.start(tier, model, reserved, real_model.take()).await {
                            Some(s) => s,
                            None => return StreamEnd::ConsumerGone,
                        },
                    };
                    self.shared.account_usage(
                        self.policy,
                        tier,
                        model,
                        &source.model,
                        self.req,
                        usage,
                    );
                    let _ = self
                        .send(ReplyEvent::Finished(Completion {
                            source: Some(source),
                            usage,
                        }))
                        .await;
                    return StreamEnd::Finished;
                }
                Err(e) => {
                    if source.is_none() {
                        return StreamEnd::FailedBeforeFirst(e);
                    }
                    let now = self.shared.clock.now_ms();
                    // The account still learns from it (e.g. a mid-stream rate limit), but there is no
                    // fallback once the user has seen part of an answer.
                    let _ = self
                        .shared
                        .react(self.policy, tier, &model.name, (account, key), &e, now)
                        .await;
                    let _ = self
                        .send(ReplyEvent::Failed(UserFacingError::new(
                            FailureKind::Interrupted,
                            INTERRUPTED_MESSAGE,
                        )))
                        .await;
                    return StreamEnd::Interrupted;
                }
            }
        }
    }

    /// The answer's first token arrived: tell the user (paid notice once per conversation), report the
    /// source, remember the model for stickiness and clear the account's backoff.
    async fn start(
        &mut self,
        tier: &Tier,
        model: &ModelSpec,
        (account, key, ticket): (usize, usize, u64),
        real_model: Option<String>,
    ) -> Option<AnswerSource> {
        let shared = self.shared;
        shared.succeeded(account, ticket);
        let fingerprint = shared.lock().book.keys[key].fingerprint.clone();
        let source = AnswerSource {
            tier: tier.name.clone(),
            provider: tier.provider_name.clone(),
            model: real_model.unwrap_or_else(|| model.name.clone()),
            key_fingerprint: fingerprint,
        };
        if tier.paid {
            let notice_key = format!("notice/{}", self.req.conversation);
            if !shared.kv_flag(&notice_key) {
                let reason = notice_reason(self.free, self.explicit_paid);
                let text = format!(
                    "{reason} — answering with {} on {}.",
                    source.model, tier.display
                );
                if !self.send(ReplyEvent::Notice(text)).await {
                    return None;
                }
                shared.set_flag(&notice_key);
            }
        }
        if !self.send(ReplyEvent::Started(source.clone())).await {
            return None;
        }
        if self.policy.switches.sticky {
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
}

fn remember_sticky(store: &dyn Store, conversation: &ConversationKey, sticky: &Sticky) {
    let key = format!("sticky/{conversation}");
    if store::get_json::<Sticky>(store, NS, &key)
        .ok()
        .flatten()
        .as_ref()
        == Some(sticky)
    {
        return;
    }
    if let Err(e) = store::put_json(store, NS, &key, sticky) {
        tracing::warn!("sticky model not written: {e}");
    }
}

impl LlmRouter for FreeFirstRouter {
    fn complete(&self, request: CompletionRequest) -> ReplyStream {
        let (tx, mut rx) = mpsc::channel(EVENT_BUFFER);
        let shared = Arc::clone(&self.shared);
        // The turn runs inside the reply stream's own polls (no spawned task): no hand-off between
        // worker threads on the way to the first token, and dropping the stream drops the turn, which
        // cancels the provider request at once.
        let mut driver: Option<BoxFuture<'static, ()>> = Some(Box::pin(async move {
            let policy = shared.policy();
            let turn = Turn {
                shared: &shared,
                policy: &policy,
                req: &request,
                tx: &tx,
                free: TierOutcome::Untried,
                paid: TierOutcome::Untried,
                explicit_paid: false,
                declined: false,
            };
            turn.run().await;
        }));
        stream::poll_fn(move |cx| {
            if let Poll::Ready(Some(event)) = rx.poll_recv(cx) {
                return Poll::Ready(Some(event));
            }
            if let Some(turn) = driver.as_mut() {
                if turn.as_mut().poll(cx).is_ready() {
                    // The turn's sender is dropped with it: the channel ends after its last event.
                    driver = None;
                }
            }
            rx.poll_recv(cx)
        })
        .boxed()
    }

    fn models(&self) -> Vec<ModelInfo> {
        let policy = self.shared.policy();
        policy
            .tiers
            .iter()
            .flat_map(|t| {
                t.models.iter().map(|m| ModelInfo {
                    name: m.name.clone(),
                    tier: t.name.clone(),
                    provider: t.provider_name.clone(),
                    context_window: m.context_window,
                })
            })
            .collect()
    }

    fn status(&self) -> RouterStatus {
        let policy = self.shared.policy();
        let now = self.shared.clock.now_ms();
        let today = utc_day(now);
        let st = self.shared.lock();
        let tiers = policy
            .tiers
            .iter()
            .map(|tier| {
                let accounts = tier
                    .accounts
                    .iter()
                    .map(|&a| {
                        let acc = &st.book.accounts[a];
                        AccountStatus {
                            provider: acc.provider.clone(),
                            account: acc.label.clone(),
                            keys: acc
                                .keys
                                .iter()
                                .filter_map(|&k| st.book.keys[k].fingerprint.clone())
                                .collect(),
                            requests_left_today: st.book.left_today(a, now),
                            daily_limit: st.book.daily_limit(a),
                            state: state_text(st.book.availability(a, now), now),
                        }
                    })
                    .collect();
                let requests_today = if tier.paid {
                    if st.paid.day == today {
                        st.paid.requests
                    } else {
                        0
                    }
                } else {
                    st.tier_requests
                        .get(&tier.name.0)
                        .filter(|(d, _)| *d == today)
                        .map_or(0, |(_, n)| *n)
                };
                let s = &policy.switches;
                let cap_reached = s.paid_daily_cap > 0 && requests_today >= s.paid_daily_cap;
                TierStatus {
                    name: tier.name.clone(),
                    enabled: !tier.paid || (!s.free_only && s.paid_enabled && !cap_reached),
                    accounts,
                    requests_today,
                    daily_cap: (tier.paid && s.paid_daily_cap > 0).then_some(s.paid_daily_cap),
                    estimated_cost_usd: tier.paid.then(|| {
                        if st.paid.day == today {
                            st.paid.cost_usd
                        } else {
                            0.0
                        }
                    }),
                }
            })
            .collect();
        RouterStatus { tiers }
    }
}

/// `HH:MM:SS` of a UTC timestamp.
fn hms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| "?".into(), |t| t.format("%H:%M:%S").to_string())
}

/// The human state of an account, for `/status` and `/usage`.
pub fn state_text(availability: Availability, now: i64) -> String {
    match availability {
        Availability::Ready => "ready".into(),
        Availability::MinuteFull(until) | Availability::Held(Hold::RateLimited, until) => {
            format!("cooling down until {} UTC", hms(until))
        }
        Availability::Held(Hold::DailyExhausted, until) if until <= next_utc_midnight(now) => {
            "exhausted until 00:00 UTC".into()
        }
        Availability::Held(Hold::DailyExhausted, until) => {
            format!("exhausted until {} UTC", hms(until))
        }
        Availability::Exhausted => "exhausted until 00:00 UTC".into(),
        Availability::Held(Hold::NoCredits, until) => {
            format!("out of credits (402) until {} UTC", hms(until))
        }
        Availability::Rejected(status) => format!("disabled: key rejected ({status})"),
    }
}
