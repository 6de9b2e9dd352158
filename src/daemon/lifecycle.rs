//! The phases of [`super::serve`]: start every adapter over one core, wait until they are up and announce
//! `READY=1`, run (signals, adapter ends, the status tick), then stop in order — intake first, in-flight
//! replies drained within the grace, adapters given their last word, the store flushed.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{
    adapter_ended, adapters_up, watchdog_loop, Daemon, Notice, Notifier, Parts, Signal,
    ADAPTER_STOP_TIMEOUT, MAIN_LOOP, READY_POLL, STATUS_INTERVAL,
};
use crate::core::Core;
use crate::exit::Fatal;
use crate::health::{ComponentHandle, Health};
use crate::platforms::{AdapterContext, PlatformAdapter};
use crate::store::Store;

/// Adapters in flight: each task ends with its name and how it ended.
type AdapterTasks = JoinSet<(&'static str, Result<(), Fatal>)>;

/// Starts every adapter with its own copy of `ctx`, each contained so a panic is its fatal end, not ours.
fn spawn_adapters(
    adapters: Vec<Box<dyn PlatformAdapter>>,
    ctx: &AdapterContext,
) -> (Vec<&'static str>, AdapterTasks) {
    let names = adapters.iter().map(|a| a.name()).collect();
    let mut tasks = AdapterTasks::new();
    for adapter in adapters {
        let name = adapter.name();
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let result = AssertUnwindSafe(adapter.run(ctx)).catch_unwind().await;
            let result = result.unwrap_or_else(|_| {
                Err(Fatal::Other(anyhow::anyhow!("the {name} adapter panicked")))
            });
            (name, result)
        });
        info!(adapter = name, "adapter started");
    }
    (names, tasks)
}

/// A daemon between start and stop: what every phase needs.
pub(super) struct Running {
    daemon: Daemon,
    core: Arc<Core>,
    store: Arc<dyn Store>,
    health: Health,
    notifier: Arc<dyn Notifier>,
    adapters: AdapterTasks,
    names: Vec<&'static str>,
    intake: CancellationToken,
    background: CancellationToken,
    watchdog: Option<JoinHandle<()>>,
    main_loop: ComponentHandle,
    grace: Duration,
    ready_timeout: Duration,
    stale_after: Duration,
    /// The first fatal error, reported as the process's exit.
    outcome: Result<(), Fatal>,
}

impl Running {
    /// Builds the core, starts the background sweeps, the watchdog and every adapter.
    pub(super) fn start(parts: Parts, notifier: Arc<dyn Notifier>) -> Self {
        let Parts {
            config,
            store,
            router,
            router_control,
            adapters,
            clock,
            health,
            reload,
            watchdog,
        } = parts;
        let core = Core::new(config.clone(), store.clone(), router.clone(), clock.clone());
        let (config_tx, config_rx) = watch::channel(config.clone());
        let intake = CancellationToken::new();
        let background = CancellationToken::new();
        // History retention follows reloads: the sweep reads the policy in force each time it runs.
        let retention_config = config_rx.clone();
        crate::store::open::spawn_retention(
            store.clone(),
            move || crate::store::open::retention_policy(&retention_config.borrow().store),
            clock,
            background.child_token(),
        );
        let stale_after = Duration::from_secs(config.daemon.stale_after_secs);
        let watchdog = watchdog.map(|period| {
            tokio::spawn(watchdog_loop(
                period,
                stale_after,
                health.clone(),
                store.clone(),
                notifier.clone(),
            ))
        });
        if let Some(rc) = &router_control {
            rc.spawn_background(background.child_token());
        }
        let ctx = AdapterContext {
            core: core.clone(),
            store: store.clone(),
            health: health.clone(),
            config: config_rx,
            intake: intake.clone(),
        };
        let (names, tasks) = spawn_adapters(adapters, &ctx);
        Self {
            grace: Duration::from_secs(config.daemon.shutdown_grace_secs),
            ready_timeout: Duration::from_secs(config.daemon.ready_timeout_secs),
            stale_after,
            daemon: Daemon {
                config,
                core: core.clone(),
                router,
                router_control,
                health: health.clone(),
                notifier: notifier.clone(),
                config_tx,
                reload: Arc::new(Mutex::new(reload)),
            },
            main_loop: health.internal(MAIN_LOOP),
            core,
            store,
            health,
            notifier,
            adapters: tasks,
            names,
            intake,
            background,
            watchdog,
            outcome: Ok(()),
        }
    }

    /// Start-up: waits until every adapter is up (or the bound passed) and announces READY; `false` when
    /// told to stop, or an adapter failed, first.
    pub(super) async fn until_ready(
        &mut self,
        signals: &mut (impl Stream<Item = Signal> + Unpin + Send),
    ) -> bool {
        let ready_deadline = tokio::time::Instant::now() + self.ready_timeout;
        self.notifier.notify(&[Notice::Status(format!(
            "starting: connecting {}",
            self.names.join(", ")
        ))]);
        let mut last_progress = String::new();
        loop {
            self.main_loop.beat();
            if adapters_up(&self.health, &self.names) {
                break;
            }
            let progress = self.health.summary();
            if progress != last_progress {
                self.notifier
                    .notify(&[Notice::Status(format!("starting: {progress}"))]);
                last_progress = progress;
            }
            if tokio::time::Instant::now() >= ready_deadline {
                warn!(
                    status = %self.health.summary(),
                    "adapters not up after {}s; announcing READY anyway (an upstream outage must not fail the start)",
                    self.ready_timeout.as_secs()
                );
                break;
            }
            tokio::select! {
                sig = signals.next() => match sig {
                    Some(Signal::Reload) => self.daemon.reload().await,
                    Some(Signal::Terminate) | None => return false,
                },
                Some(joined) = self.adapters.join_next() => {
                    if let Some(fatal) = adapter_ended(joined, self.adapters.is_empty()) {
                        self.outcome = Err(fatal);
                        return false;
                    }
                },
                () = tokio::time::sleep(READY_POLL) => {}
            }
        }
        let line = self.daemon.status_line();
        info!(status = %line, "ready");
        self.notifier.notify(&[Notice::Ready, Notice::Status(line)]);
        true
    }

    /// Runs until SIGTERM/SIGINT or an adapter's fatal end, keeping `STATUS=` current and reloading on
    /// SIGHUP.
    pub(super) async fn until_stopped(
        &mut self,
        signals: &mut (impl Stream<Item = Signal> + Unpin + Send),
    ) {
        let mut status_tick = tokio::time::interval(STATUS_INTERVAL.min(self.stale_after / 2));
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.main_loop.beat();
            tokio::select! {
                sig = signals.next() => match sig {
                    Some(Signal::Reload) => self.daemon.reload().await,
                    Some(Signal::Terminate) | None => return,
                },
                Some(joined) = self.adapters.join_next() => {
                    if let Some(fatal) = adapter_ended(joined, self.adapters.is_empty()) {
                        self.outcome = Err(fatal);
                        return;
                    }
                },
                _ = status_tick.tick() => {
                    self.notifier.notify(&[Notice::Status(self.daemon.status_line())]);
                }
            }
        }
    }

    /// Shutdown: stop intake, drain within the grace, let adapters finish and acknowledge, flush. The main
    /// loop has ended on purpose; every step below has its own deadline within `TimeoutStopSec=`.
    pub(super) async fn shut_down(mut self) -> Result<(), Fatal> {
        self.health.remove(MAIN_LOOP);
        let in_flight = self.core.in_flight();
        info!(in_flight, grace_secs = self.grace.as_secs(), "stopping");
        self.notifier.notify(&[
            Notice::Stopping,
            Notice::Status(format!("stopping: finishing {in_flight} replies")),
        ]);
        self.intake.cancel();
        // The API's answers are not the core's: they get the same grace, counted from here.
        let grace_ends = tokio::time::Instant::now() + self.grace;
        self.core.begin_shutdown();
        self.core.drain(self.grace).await;
        self.notifier
            .notify(&[Notice::Status("stopping: waiting for adapters".into())]);
        self.stop_adapters(grace_ends).await;
        self.background.cancel();
        self.notifier
            .notify(&[Notice::Status("stopping: flushing the store".into())]);
        if let Err(e) = self.store.flush().await {
            error!(error = %e, "flushing the store at shutdown failed");
            self.fail(Fatal::Other(anyhow::anyhow!(
                "flushing the store at shutdown failed: {e}"
            )));
        }
        if let Some(task) = self.watchdog.take() {
            task.abort();
        }
        match &self.outcome {
            Ok(()) => info!("stopped cleanly"),
            Err(e) => error!(error = %e, "stopped after a fatal error"),
        }
        self.outcome
    }

    /// Gives the adapters what is left of the grace (the API's answers in flight finish within it)
    /// plus [`ADAPTER_STOP_TIMEOUT`] to deliver cut replies and return, then aborts them.
    async fn stop_adapters(&mut self, grace_ends: tokio::time::Instant) {
        let mut fatal = None;
        let stopped = tokio::time::timeout_at(
            grace_ends.max(tokio::time::Instant::now()) + ADAPTER_STOP_TIMEOUT,
            async {
                while let Some(joined) = self.adapters.join_next().await {
                    if let Some(e) = adapter_ended(joined, false) {
                        fatal.get_or_insert(e);
                    }
                }
            },
        )
        .await;
        if let Some(e) = fatal {
            self.fail(e);
        }
        if stopped.is_err() {
            warn!(
                "adapters did not stop within {}s; aborting them",
                ADAPTER_STOP_TIMEOUT.as_secs()
            );
            self.adapters.abort_all();
        }
    }

    /// Keeps the first fatal error as the outcome.
    fn fail(&mut self, fatal: Fatal) {
        if self.outcome.is_ok() {
            self.outcome = Err(fatal);
        }
    }
}
