//! The daemon (`switchboard run`): wiring, signals, systemd notify/watchdog and reload.
//!
//! [`run`] loads configuration and secrets and builds the real components through the composition root
//! ([`crate::app`], [`build_parts`]), then hands them to
//! [`serve`], which owns the process lifecycle: start every adapter over one core, announce `READY=1` once
//! they are up, keep `STATUS=` current, ping the watchdog while our own loops (its own main loop included)
//! live, reload on SIGHUP, and on SIGTERM/SIGINT stop intake, drain in-flight replies within the grace,
//! stop adapters, flush, exit 0.
//! Tests call [`serve`] with injected parts, a signal stream and a recording notifier.

mod build;
mod lifecycle;
pub mod notify;
pub mod signals;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::clock::SharedClock;
use crate::config::daemon::LogFormat;
use crate::config::{Config, ConfigError};
use crate::core::Core;
use crate::exit::Fatal;
use crate::health::Health;
use crate::platforms::PlatformAdapter;
use crate::router::LlmRouter;
use crate::store::Store;

pub use self::build::build_parts;
pub use self::notify::{Notice, Notifier, RecordingNotifier, SdNotifier};
pub use self::signals::Signal;

/// How often `STATUS=` is refreshed while running. Cheap (a lock and a format); 10 s keeps
/// `systemctl status` current without spamming the manager. The same tick is the main loop's beat, so
/// it runs at least twice per `[daemon].stale_after_secs`.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// The health name of `serve`'s own select loop (signals, adapter ends, the status tick). If it wedges,
/// SIGTERM and SIGHUP go unanswered, so it beats like any adapter's loop and the watchdog watches it.
const MAIN_LOOP: &str = "daemon";
/// How often start-up re-checks whether every adapter left "starting"; short so READY follows at once.
const READY_POLL: Duration = Duration::from_millis(5);
/// After the grace, adapters get this long to deliver the cut replies, acknowledge Telegram's offset and
/// return. Part of `STOP_RESERVE_SECS` (10 s) below `TimeoutStopSec=`.
const ADAPTER_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// A liveness probe (a fresh task scheduled, a store read) slower than this means the runtime or the
/// store is wedged. Normal probes take microseconds; capped at a quarter of the watchdog period.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The store namespace the watchdog's read probe touches (never written).
const PROBE_NS: &str = "daemon";

/// Runs every configured adapter until SIGTERM/SIGINT. Configuration and credential errors are
/// [`Fatal::Config`] (exit 78) naming the key and the fix.
pub async fn run(config_path: Option<PathBuf>, log_format: Option<LogFormat>) -> Result<(), Fatal> {
    // Install the handlers first, before the configuration is even read: a SIGTERM at any moment of
    // start-up is then an orderly stop, never the signal's default action.
    let signals = signals::unix_signals()
        .map_err(|e| Fatal::Other(anyhow::anyhow!("cannot install signal handlers: {e}")))?;
    let loaded = match crate::app::load(config_path.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            crate::logging::init(log_format.unwrap_or_default());
            return Err(config_fatal(&e));
        }
    };
    crate::logging::init(log_format.unwrap_or(loaded.config.daemon.log_format));
    // `systemctl status` shows what start-up is waiting for (the store lock, then each adapter).
    SdNotifier.notify(&[Notice::Status("starting: opening the store".into())]);
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %loaded.path.as_deref().map_or_else(|| "<defaults>".into(), |p| p.display().to_string()),
        "switchboard starting"
    );
    let parts = build_parts(loaded.config, &loaded.secrets, loaded.path, &loaded.env).await?;
    serve(parts, signals, SdNotifier).await
}

/// A configuration error as the fatal error that exits 78.
pub fn config_fatal(e: &ConfigError) -> Fatal {
    Fatal::Config(e.to_string())
}

/// Live control over a router beyond the [`LlmRouter`] seam: reload and background upkeep.
pub trait RouterControl: Send + Sync + 'static {
    /// Applies a reloaded configuration (model lists, pacing, tiers). An error rejects the whole reload.
    fn reload(&self, config: &Config) -> Result<(), ConfigError>;
    /// Starts the router's background upkeep (quota resets, persistence), stopped by `stop`.
    fn spawn_background(&self, stop: CancellationToken);
}

/// Reads the configuration again for SIGHUP.
pub type ConfigLoader = Box<dyn FnMut() -> Result<Config, ConfigError> + Send>;

/// Everything [`serve`] runs: the real ones from [`build_parts`], or fakes in tests.
pub struct Parts {
    /// The configuration in force at start.
    pub config: Arc<Config>,
    /// The one store of this process.
    pub store: Arc<dyn Store>,
    /// The router the core asks for replies.
    pub router: Arc<dyn LlmRouter>,
    /// Reload and background upkeep of the same router, if it has any.
    pub router_control: Option<Arc<dyn RouterControl>>,
    /// The adapters to run (at least one).
    pub adapters: Vec<Box<dyn PlatformAdapter>>,
    /// Wall-clock time for the core.
    pub clock: SharedClock,
    /// The liveness registry the adapters report into.
    pub health: Health,
    /// Re-reads the configuration on SIGHUP.
    pub reload: ConfigLoader,
    /// `WATCHDOG_USEC`: ping every half of it while alive; `None` when systemd set no watchdog.
    pub watchdog: Option<Duration>,
}

/// Runs `parts` until a [`Signal::Terminate`] arrives or an adapter fails, then stops in order. Returns
/// `Ok` after a clean stop; an adapter's fatal error (bad token → `Config`, second instance → `Conflict`)
/// after stopping the rest cleanly.
pub async fn serve(
    parts: Parts,
    signals: impl Stream<Item = Signal> + Unpin + Send,
    notifier: impl Notifier,
) -> Result<(), Fatal> {
    let mut signals = signals;
    let mut running = lifecycle::Running::start(parts, Arc::new(notifier));
    if running.until_ready(&mut signals).await {
        running.until_stopped(&mut signals).await;
    }
    running.shut_down().await
}

/// What `serve` keeps while running, for status lines and reloads.
struct Daemon {
    config: Arc<Config>,
    core: Arc<Core>,
    router: Arc<dyn LlmRouter>,
    router_control: Option<Arc<dyn RouterControl>>,
    health: Health,
    notifier: Arc<dyn Notifier>,
    config_tx: watch::Sender<Arc<Config>>,
    /// Shared with the blocking thread that runs it (it reads a file).
    reload: Arc<Mutex<ConfigLoader>>,
}

impl Daemon {
    /// `telegram: polling, discord: connected; free tier: 3 accounts, 412 requests left; 2 replies in flight`.
    fn status_line(&self) -> String {
        let mut parts = Vec::new();
        let adapters = self.health.summary();
        if !adapters.is_empty() {
            parts.push(adapters);
        }
        let router = self.router.status().one_line();
        if !router.is_empty() {
            parts.push(router);
        }
        let in_flight = self.core.in_flight();
        if in_flight > 0 {
            parts.push(format!(
                "{in_flight} repl{} in flight",
                if in_flight == 1 { "y" } else { "ies" }
            ));
        }
        parts.join("; ")
    }

    /// SIGHUP: read the file again; a valid config goes live everywhere, an invalid one is rejected and
    /// the running one kept. Settings that only a restart applies are named in a warning and `STATUS=`.
    async fn reload(&mut self) {
        self.notifier.notify(&[Notice::Reloading]);
        // Reading the file is blocking I/O: keep it off the async workers. The main loop waits for it
        // (and does not beat meanwhile: a reload stuck on a dead file system is a hung daemon).
        let loader = self.reload.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            (loader
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner))()
        })
        .await
        .unwrap_or_else(|e| {
            Err(ConfigError::new(
                "<config file>",
                format!("reading the configuration failed: {e}"),
                "see the log above; the running configuration stays",
            ))
        });
        let result = loaded.and_then(|new| {
            if let Some(rc) = &self.router_control {
                rc.reload(&new)?;
            }
            Ok(new)
        });
        match result {
            Ok(new) => {
                let restart_only = restart_only_changes(&self.config, &new);
                let pending = if restart_only.is_empty() {
                    String::new()
                } else {
                    let keys = restart_only.join(", ");
                    warn!(
                        keys = %keys,
                        "configuration reloaded, but these changed settings need a restart to take effect \
                         (systemctl restart switchboard); until then the old values stay in force"
                    );
                    format!(" (needs a restart: {keys})")
                };
                let new = Arc::new(new);
                self.core.reload(new.clone());
                self.config = new.clone();
                self.config_tx.send_replace(new);
                info!("configuration reloaded");
                self.notifier.notify(&[
                    Notice::Ready,
                    Notice::Status(format!("reloaded{pending}; {}", self.status_line())),
                ]);
            }
            Err(e) => {
                error!(key = %e.key, error = %e, "configuration reload rejected; keeping the running configuration");
                self.notifier.notify(&[
                    Notice::Ready,
                    Notice::Status(format!(
                        "reload rejected ({}); running on the previous configuration; {}",
                        e.key,
                        self.status_line()
                    )),
                ]);
            }
        }
    }
}

/// Settings that a SIGHUP cannot apply, by key: the store is open (its directory and cache), adapters are connected (Telegram's
/// API URL, Discord's proxy and slash-command guilds are used once, at start), the provider clients are
/// built (base URLs, timeouts, extra tiers' endpoints and keys), and logging is set up. Everything else
/// goes live on reload.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut check = |key: &str, changed: bool| {
        if changed {
            keys.push(key.to_owned());
        }
    };
    // Each `section.key` named here is compared between the two configurations.
    macro_rules! restart_only {
        ($($section:ident . $key:ident),* $(,)?) => {
            $(check(
                concat!(stringify!($section), ".", stringify!($key)),
                old.$section.$key != new.$section.$key,
            );)*
        };
    }
    // Retention (`store.max_turns`, `store.max_age_days`) is read by each sweep, so it reloads live.
    restart_only!(
        store.dir,
        store.cache_mb,
        store.compact_ratio,
        store.compact_min_mb,
        store.counter_flush_secs,
        telegram.enabled,
        telegram.api_url,
        discord.enabled,
        discord.proxy_url,
        discord.command_guilds,
        openrouter.base_url,
        ollama.base_url,
        router.connect_timeout_secs,
        router.idle_timeout_secs,
        router.deadline_secs,
        api.enabled,
        api.listen,
        api.max_body_bytes,
    );
    for (i, tier) in new.tiers.iter().enumerate() {
        // A tier's client and key are built at start; its models and context window reload live. (A
        // tier that is new altogether gets the router's own "needs a restart" warning.)
        let endpoint = |t: &crate::config::providers::ExtraTierConfig| {
            serde_json::to_value((&t.kind, &t.base_url, &t.key_env)).ok()
        };
        if let Some(before) = old.tiers.iter().find(|t| t.name == tier.name) {
            check(
                &format!("tiers[{i}] ({}) kind/base_url/key_env", tier.name),
                endpoint(before) != endpoint(tier),
            );
        }
    }
    restart_only!(daemon.log_format);
    keys
}

/// Statuses that mean an adapter has not reached its platform yet.
/// "stopped" counts too: an adapter that ended (a fatal gateway close, say) sets it just before its task
/// returns the error, and READY=1 must not slip out in between.
const NOT_UP: [&str; 3] = ["starting", "connecting", "stopped"];

/// Whether every adapter has registered a health component (named after it, or `name-…`) and none of
/// its components is still starting or connecting (Telegram: polling; Discord: connected).
fn adapters_up(health: &Health, names: &[&str]) -> bool {
    let statuses = health.statuses();
    names.iter().all(|name| {
        let mine: Vec<_> = statuses
            .iter()
            .filter(|(c, _)| c == name || c.starts_with(&format!("{name}-")))
            .collect();
        !mine.is_empty() && mine.iter().all(|(_, s)| !NOT_UP.contains(&s.as_str()))
    })
}

/// Logs an adapter's end; returns the error that must stop the daemon, if any. An adapter that returns
/// `Ok` while the daemon runs is unexpected but harmless unless it was the last one.
fn adapter_ended(
    joined: Result<(&'static str, Result<(), Fatal>), tokio::task::JoinError>,
    none_left: bool,
) -> Option<Fatal> {
    match joined {
        Ok((name, Ok(()))) => {
            info!(adapter = name, "adapter stopped");
            none_left.then(|| Fatal::Other(anyhow::anyhow!("every adapter stopped on its own")))
        }
        Ok((name, Err(fatal))) => {
            error!(adapter = name, error = %fatal, "adapter failed");
            Some(fatal)
        }
        // Cancelled (aborted at shutdown); panics are caught inside the task.
        Err(e) => Some(Fatal::Other(anyhow::anyhow!("an adapter task ended: {e}"))),
    }
}

/// Pings the watchdog every half period while every loop of ours beats and the runtime and store answer.
/// Upstream reachability plays no part: an outage must not get us restarted.
async fn watchdog_loop(
    period: Duration,
    stale_after: Duration,
    health: Health,
    store: Arc<dyn Store>,
    notifier: Arc<dyn Notifier>,
) {
    let probe_timeout = PROBE_TIMEOUT.min(period / 4);
    let mut tick = tokio::time::interval(period / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    loop {
        tick.tick().await;
        match liveness(&health, &store, stale_after, probe_timeout).await {
            Ok(()) => {
                if !healthy {
                    info!("liveness restored; watchdog pings resume");
                    healthy = true;
                }
                notifier.notify(&[Notice::Watchdog]);
            }
            Err(why) => {
                if healthy {
                    error!(reason = %why, "switchboard's own loop is hung; withholding watchdog pings so systemd restarts it");
                    healthy = false;
                }
            }
        }
    }
}

/// Our own liveness: no stale loop, a fresh task gets scheduled, and the store answers a read.
async fn liveness(
    health: &Health,
    store: &Arc<dyn Store>,
    stale_after: Duration,
    probe_timeout: Duration,
) -> Result<(), String> {
    let stale = health.stale(stale_after);
    if !stale.is_empty() {
        return Err(format!(
            "no beat for {}s from {}",
            stale_after.as_secs(),
            stale.join(", ")
        ));
    }
    match tokio::time::timeout(probe_timeout, tokio::spawn(async {})).await {
        Ok(Ok(())) => {}
        _ => return Err("the async runtime did not schedule a probe task".into()),
    }
    let store = store.clone();
    match tokio::time::timeout(
        probe_timeout,
        tokio::task::spawn_blocking(move || store.kv_get(PROBE_NS, "liveness").map(|_| ())),
    )
    .await
    {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("the store failed a read: {e}")),
        _ => Err("the store did not answer a read".into()),
    }
}

#[cfg(test)]
mod tests;
