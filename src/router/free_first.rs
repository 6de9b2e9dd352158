//! The free-first router: ordered tiers (OpenRouter free models over every account, then the paid RC2
//! models on Ollama Cloud, then any extra tiers), account-aware quotas, fallback before the first token,
//! stickiness, the one-time notices and usage accounting. This file holds the [`FreeFirstRouter`] itself
//! (building, reloading, the background quota refresh) and its [`LlmRouter`] seam; the policy lives in
//! [`super::policy`], the state in [`super::accounts`], the error reactions in [`super::reaction`], the
//! turn loop in [`super::turn`] and what users are told in [`super::notices`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::task::Poll;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::accounts::{load_paid, KeyRing, Shared, State};
use super::policy::build_policy;
use super::quota::free_daily_limit;
use super::select::Learned;
use super::turn::Turn;
use super::usage;
use super::{
    CompletionRequest, EmbedRequest, Embeddings, LlmRouter, ModelInfo, ModelSelector, RouterStatus,
};
use crate::clock::SharedClock;
use crate::config::{Config, ConfigError, Env, Secrets};
use crate::domain::{ReplyStream, TierName, UserFacingError};
use crate::providers::{ChatProvider, ProviderError};
use crate::secrets::NamedSecret;
use crate::store::Store;

pub use super::policy::{OLLAMA_CLOUD, OPENROUTER};
pub use super::status::state_text;

/// Reply events buffered between the router task and the consumer: enough for bursts of small deltas,
/// small enough that a stalled consumer applies backpressure to the provider stream.
const EVENT_BUFFER: usize = 64;

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

    /// The provider's model list (OpenRouter's public `GET /models`): what each model can do and its
    /// context window. The default lists nothing.
    fn models(&self) -> BoxFuture<'static, Result<Vec<(String, Learned)>, ProviderError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
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

/// One `GET /key` to make: an OpenRouter account, the key to ask with, and its label for the log.
struct Probe {
    account: usize,
    key: usize,
    label: String,
}

/// The free-first [`LlmRouter`].
pub struct FreeFirstRouter {
    shared: Arc<Shared>,
}

impl FreeFirstRouter {
    /// Builds the router and its provider clients from the configuration.
    pub fn from_config(
        config: &Config,
        secrets: &Secrets,
        store: Arc<dyn Store>,
        clock: SharedClock,
    ) -> Result<Arc<Self>, ConfigError> {
        let providers = super::clients::build(config, &Env::from_process(), &clock)?;
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
        let KeyRing { book, secrets } = KeyRing::build(config, secrets, &providers, store.as_ref());
        usage::prepare(store.as_ref());
        let paid = load_paid(store.as_ref());
        let policy = build_policy(config, &providers, &book)?;
        if policy.tiers.is_empty() {
            tracing::warn!("no model tier is usable: set OPENROUTER_API_KEY_1 or OLLAMA_API_KEY (see `switchboard check`)");
        }
        // At least eight cursors, so a reload that adds tiers rarely needs to grow them.
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
                    out_logged: HashMap::new(),
                }),
                secrets,
                probe: providers.quota_probe.clone(),
                providers,
                learned: RwLock::default(),
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
        self.learn_models(probe.as_ref()).await;
        let probes: Vec<Probe> = {
            let st = self.shared.lock();
            st.book
                .accounts
                .iter()
                .enumerate()
                .filter(|(_, a)| a.provider == OPENROUTER)
                .filter_map(|(i, a)| {
                    let key = a
                        .keys
                        .iter()
                        .copied()
                        .find(|&k| st.book.keys[k].rejected.is_none())?;
                    Some(Probe {
                        account: i,
                        key,
                        label: a.label.clone(),
                    })
                })
                .collect()
        };
        for Probe {
            account,
            key,
            label,
        } in probes
        {
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
                    tracing::debug!(account = %label, "GET /key not offered: quota unknown");
                }
                Err(ProviderError::Unauthorized { status }) => {
                    self.shared.reject(key, status);
                }
                Err(e) => {
                    tracing::info!(account = %label, "GET /key failed, keeping the current quota state: {e}");
                }
            }
        }
    }

    /// Learns what the provider's model list says (capabilities, context windows) for `models()` and
    /// capability routing; a failed fetch keeps what was learned before.
    async fn learn_models(&self, probe: &dyn QuotaProbe) {
        match probe.models().await {
            Ok(list) if !list.is_empty() => {
                let count = list.len();
                *self
                    .shared
                    .learned
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    list.into_iter().collect();
                tracing::debug!(count, "model list learned");
            }
            Ok(_) => {}
            Err(e) => tracing::info!("model list fetch failed, keeping what was learned: {e}"),
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
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policy);
        tracing::info!("router configuration reloaded");
        Ok(())
    }

    /// The routing decision alone, for the benchmark and diagnostics: picks and reserves an account in
    /// the first tier with one ready, without sending anything. Returns (tier, key fingerprint).
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

impl LlmRouter for FreeFirstRouter {
    fn complete(&self, request: CompletionRequest) -> ReplyStream {
        let (tx, mut rx) = mpsc::channel(EVENT_BUFFER);
        let shared = Arc::clone(&self.shared);
        // The turn runs inside the reply stream's own polls (no spawned task): no hand-off between
        // worker threads on the way to the first token, and dropping the stream drops the turn, which
        // cancels the provider request at once.
        let mut driver: Option<BoxFuture<'static, ()>> = Some(Box::pin(async move {
            let policy = shared.policy();
            Turn::new(&shared, &policy, &request, &tx).run().await;
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
        super::select::model_infos(&self.shared.policy(), &self.shared.learned)
    }

    fn embedding_models(&self) -> Vec<ModelInfo> {
        super::select::embedding_infos(&self.shared.policy(), &self.shared.learned)
    }

    fn resolve_model(&self, name: &str) -> Option<ModelSelector> {
        super::select::resolve(&self.shared.policy(), name)
    }

    fn embed(
        &self,
        request: EmbedRequest,
    ) -> BoxFuture<'static, Result<Embeddings, UserFacingError>> {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { shared.embed(request).await })
    }

    fn status(&self) -> RouterStatus {
        self.shared.status(&self.shared.policy())
    }
}
