//! `serve` with injected parts: a fake adapter over the scripted router and the in-memory store, a
//! channel of signals and a recording notifier. Paused tokio time drives every deadline.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;

use super::*;
use crate::clock::TokioClock;
use crate::config::Secrets;
use crate::core::RESTARTING_MESSAGE;
use crate::domain::{ChatKind, ChatRef, Inbound, Platform, ReplyEvent, Sender, UserRef};
use crate::platforms::AdapterContext;
use crate::router::scripted::{Script, ScriptedRouter};
use crate::store::memory::MemoryStore;
use crate::store::{HistoryStore, Store, TurnStatus};

/// What the fake adapter does at start.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Startup {
    /// Report "polling" after this delay.
    UpAfter(Duration),
    /// Stay "starting" forever (an unreachable upstream that never answers).
    Never,
    /// Fail at once as a bad token would.
    BadToken,
}

/// A platform adapter driven by the test: it answers every inbound sent on its channel through the
/// core and records the rendered text of each reply.
struct FakeAdapter {
    startup: Startup,
    inbox: mpsc::UnboundedReceiver<Inbound>,
    /// Whether the loop keeps beating (false simulates a hung poller).
    beats: Arc<std::sync::atomic::AtomicBool>,
    shared: Shared,
}

#[derive(Clone, Default)]
struct Shared {
    replies: Arc<Mutex<Vec<String>>>,
    ctx: Arc<Mutex<Option<AdapterContext>>>,
}

impl PlatformAdapter for FakeAdapter {
    fn name(&self) -> &'static str {
        "telegram"
    }

    fn run(self: Box<Self>, ctx: AdapterContext) -> BoxFuture<'static, Result<(), Fatal>> {
        async move {
            let FakeAdapter {
                startup,
                mut inbox,
                beats,
                shared,
            } = *self;
            *shared.ctx.lock().unwrap() = Some(ctx.clone());
            let health = ctx.health.component("telegram");
            match startup {
                Startup::BadToken => {
                    return Err(Fatal::Config(
                        "configuration error at `TELEGRAM_BOT_TOKEN`: rejected".into(),
                    ))
                }
                Startup::UpAfter(d) => {
                    health.set_status("connecting");
                    tokio::time::sleep(d).await;
                    health.set_status("polling");
                }
                Startup::Never => {}
            }
            let mut handlers = tokio::task::JoinSet::new();
            let mut beat = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    () = ctx.intake.cancelled() => break,
                    _ = beat.tick() => {
                        if beats.load(std::sync::atomic::Ordering::SeqCst) {
                            health.beat();
                        }
                    }
                    Some(inbound) = inbox.recv() => {
                        if let Some(mut stream) = ctx.core.handle(inbound) {
                            let replies = shared.replies.clone();
                            handlers.spawn(async move {
                                let mut text = String::new();
                                while let Some(event) = stream.next().await {
                                    match event {
                                        ReplyEvent::Delta(d) => text.push_str(&d),
                                        ReplyEvent::Failed(e) => {
                                            let _ = write!(text, "[{}]", e.message);
                                        }
                                        _ => {}
                                    }
                                }
                                replies.lock().unwrap().push(text);
                            });
                        }
                    }
                }
            }
            // Deliver what is in flight (the core ends each reply by the deadline), then return.
            while handlers.join_next().await.is_some() {}
            ctx.health.remove("telegram");
            Ok(())
        }
        .boxed()
    }
}

struct Harness {
    signals: mpsc::UnboundedSender<Signal>,
    inbox: mpsc::UnboundedSender<Inbound>,
    notifier: RecordingNotifier,
    store: Arc<MemoryStore>,
    router: Arc<ScriptedRouter>,
    shared: Shared,
    beats: Arc<std::sync::atomic::AtomicBool>,
    reload_with: Arc<Mutex<Result<Config, ConfigError>>>,
    /// While set, the config loader blocks (a config file on a dead file system).
    reload_hold: Arc<std::sync::atomic::AtomicBool>,
    health: Health,
    serve: tokio::task::JoinHandle<Result<(), Fatal>>,
}

fn signal_stream(mut rx: mpsc::UnboundedReceiver<Signal>) -> impl Stream<Item = Signal> + Unpin {
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

fn start(config: Config, startup: Startup, watchdog: Option<Duration>) -> Harness {
    start_with(config, startup, watchdog, None)
}

/// [`start`] with a router control for reloads (the real router's, say).
fn start_with(
    config: Config,
    startup: Startup,
    watchdog: Option<Duration>,
    router_control: Option<Arc<dyn RouterControl>>,
) -> Harness {
    let (sig_tx, sig_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let notifier = RecordingNotifier::new();
    let store = Arc::new(MemoryStore::new());
    let router = ScriptedRouter::new();
    let shared = Shared::default();
    let beats = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reload_with = Arc::new(Mutex::new(Ok(config.clone())));
    let adapter = FakeAdapter {
        startup,
        inbox: in_rx,
        beats: beats.clone(),
        shared: shared.clone(),
    };
    let reload_source = reload_with.clone();
    let reload_hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hold = reload_hold.clone();
    let health = Health::new();
    let parts = Parts {
        config: Arc::new(config),
        store: store.clone(),
        router: router.clone(),
        router_control,
        adapters: vec![Box::new(adapter)],
        clock: Arc::new(TokioClock::starting_at(1_700_000_000_000)),
        health: health.clone(),
        reload: Box::new(move || {
            while hold.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            reload_source.lock().unwrap().clone()
        }),
        watchdog,
    };
    let serve = tokio::spawn(serve(parts, signal_stream(sig_rx), notifier.clone()));
    Harness {
        signals: sig_tx,
        inbox: in_tx,
        notifier,
        store,
        router,
        shared,
        beats,
        reload_with,
        reload_hold,
        health,
        serve,
    }
}

fn inbound(text: &str) -> Inbound {
    Inbound {
        chat: ChatRef::new(Platform::Telegram, "42"),
        chat_kind: ChatKind::Direct,
        sender: Sender {
            user: UserRef::new(Platform::Telegram, "42"),
            display_name: "Ada".into(),
        },
        text: text.into(),
        addressed: true,
        reply_to: None,
        thread: None,
        attachments: Vec::new(),
    }
}

/// Waits (in paused time) until `cond` holds, failing after a minute of virtual time.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn statuses(n: &RecordingNotifier) -> Vec<String> {
    n.notices()
        .into_iter()
        .filter_map(|x| match x {
            Notice::Status(s) => Some(s),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn ready_waits_for_the_adapter_and_terminate_stops_cleanly() {
    let h = start(
        Config::default(),
        Startup::UpAfter(Duration::from_secs(2)),
        None,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        h.notifier.count(&Notice::Ready),
        0,
        "READY before the adapter was up"
    );
    until("READY", || h.notifier.count(&Notice::Ready) == 1).await;
    let line = statuses(&h.notifier).last().cloned().unwrap();
    assert!(line.contains("telegram: polling"), "{line}");
    // Before READY, STATUS= said what start-up was waiting for.
    let notices = h.notifier.notices();
    let ready = notices.iter().position(|n| *n == Notice::Ready).unwrap();
    assert!(
        notices[..ready].contains(&Notice::Status("starting: connecting telegram".into()))
            && notices[..ready].contains(&Notice::Status("starting: telegram: connecting".into())),
        "{notices:?}"
    );
    // The main loop's own health entry never shows.
    assert!(statuses(&h.notifier).iter().all(|s| !s.contains(MAIN_LOOP)));

    h.signals.send(Signal::Terminate).unwrap();
    let result = h.serve.await.unwrap();
    assert!(result.is_ok(), "{result:?}");
    let notices = h.notifier.notices();
    let ready = notices.iter().position(|n| *n == Notice::Ready).unwrap();
    let stopping = notices.iter().position(|n| *n == Notice::Stopping).unwrap();
    assert!(ready < stopping);
}

#[tokio::test(start_paused = true)]
async fn an_adapter_that_never_comes_up_still_gets_ready_after_the_bound() {
    let mut config = Config::default();
    config.daemon.ready_timeout_secs = 5;
    let h = start(config, Startup::Never, None);
    tokio::time::sleep(Duration::from_millis(4900)).await;
    assert_eq!(h.notifier.count(&Notice::Ready), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.notifier.count(&Notice::Ready), 1);
    h.signals.send(Signal::Terminate).unwrap();
    assert!(h.serve.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_reply_in_flight_finishes_within_the_grace_and_is_stored() {
    let h = start(Config::default(), Startup::UpAfter(Duration::ZERO), None);
    h.router.on("slow", Script::Slow(Duration::from_secs(5)));
    until("READY", || h.notifier.count(&Notice::Ready) == 1).await;
    h.inbox.send(inbound("a slow question")).unwrap();
    until("the turn to start", || h.router.request_count() == 1).await;
    h.signals.send(Signal::Terminate).unwrap();
    let result = h.serve.await.unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        *h.shared.replies.lock().unwrap(),
        vec!["echo: a slow question".to_string()]
    );
    let key = crate::domain::ConversationKey("telegram:42".into());
    let turns = h.store.recent_turns(&key, 0, 10).unwrap();
    assert_eq!(turns.len(), 2, "{turns:?}");
    assert_eq!(turns[1].text, "echo: a slow question");
    assert_eq!(turns[1].status, TurnStatus::Complete);
    assert!(h.notifier.count(&Notice::Stopping) == 1);
}

#[tokio::test(start_paused = true)]
async fn a_reply_longer_than_the_grace_is_cut_with_a_restarting_note() {
    let mut config = Config::default();
    config.daemon.shutdown_grace_secs = 3;
    let h = start(config, Startup::UpAfter(Duration::ZERO), None);
    h.router.on("slow", Script::Slow(Duration::from_secs(600)));
    until("READY", || h.notifier.count(&Notice::Ready) == 1).await;
    h.inbox.send(inbound("a very slow question")).unwrap();
    until("the turn to start", || h.router.request_count() == 1).await;
    let stop_at = tokio::time::Instant::now();
    h.signals.send(Signal::Terminate).unwrap();
    let result = h.serve.await.unwrap();
    assert!(result.is_ok(), "{result:?}");
    // Grace (3 s) plus the core's cut grace; far below TimeoutStopSec.
    assert!(
        stop_at.elapsed() < Duration::from_secs(10),
        "{:?}",
        stop_at.elapsed()
    );
    let replies = h.shared.replies.lock().unwrap().clone();
    assert_eq!(replies.len(), 1);
    assert!(replies[0].contains(RESTARTING_MESSAGE), "{replies:?}");
}

#[tokio::test(start_paused = true)]
async fn messages_after_terminate_are_not_taken() {
    let h = start(Config::default(), Startup::UpAfter(Duration::ZERO), None);
    until("READY", || h.notifier.count(&Notice::Ready) == 1).await;
    h.signals.send(Signal::Terminate).unwrap();
    assert!(h.serve.await.unwrap().is_ok());
    // The adapter stopped reading: nothing sent now reaches the router.
    let _ = h.inbox.send(inbound("too late"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.router.request_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_bad_token_stops_the_daemon_with_exit_78_and_no_ready() {
    let h = start(Config::default(), Startup::BadToken, None);
    let result = h.serve.await.unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.exit_code(), crate::exit::EXIT_CONFIG);
    assert!(err.to_string().contains("TELEGRAM_BOT_TOKEN"), "{err}");
    assert_eq!(h.notifier.count(&Notice::Ready), 0);
    assert_eq!(h.notifier.count(&Notice::Stopping), 1);
}

/// A daemon that is up, with a 1 s watchdog period and loops counted stale after 2 s.
async fn ready_with_a_watchdog() -> Harness {
    let mut config = Config::default();
    config.daemon.stale_after_secs = 2;
    let h = start(
        config,
        Startup::UpAfter(Duration::ZERO),
        Some(Duration::from_secs(1)),
    );
    until("READY", || h.notifier.count(&Notice::Ready) == 1).await;
    h
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_pings_while_loops_beat_and_stops_when_one_hangs() {
    let h = ready_with_a_watchdog().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pinged = h.notifier.count(&Notice::Watchdog);
    // One ping every half period: about 10 in 5 s.
    assert!((9..=12).contains(&pinged), "{pinged} pings in 5 s");

    // The poller hangs: after `stale_after` the pings stop.
    h.beats.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_hang = h.notifier.count(&Notice::Watchdog);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        h.notifier.count(&Notice::Watchdog),
        after_hang,
        "pinged while hung"
    );

    // It recovers: pings resume.
    h.beats.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(h.notifier.count(&Notice::Watchdog) > after_hang);
    h.signals.send(Signal::Terminate).unwrap();
    assert!(h.serve.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn sighup_applies_a_valid_config_and_rejects_an_invalid_one() {
    let h = start(Config::default(), Startup::UpAfter(Duration::ZERO), None);
    until("READY", || h.notifier.count(&Notice::Ready) == 1).await;
    let ctx = h.shared.ctx.lock().unwrap().clone().unwrap();

    let mut new = Config::default();
    new.core.system_prompt = "Answer in haiku.".into();
    *h.reload_with.lock().unwrap() = Ok(new);
    h.signals.send(Signal::Reload).unwrap();
    until("the reload", || h.notifier.count(&Notice::Reloading) == 1).await;
    until("READY after reload", || {
        h.notifier.count(&Notice::Ready) == 2
    })
    .await;
    assert_eq!(ctx.core.config().core.system_prompt, "Answer in haiku.");
    assert_eq!(ctx.config.borrow().core.system_prompt, "Answer in haiku.");
    assert!(statuses(&h.notifier)
        .last()
        .unwrap()
        .starts_with("reloaded"));
    h.inbox.send(inbound("hello")).unwrap();
    until("the turn", || h.router.request_count() == 1).await;
    assert_eq!(h.router.requests()[0].system_prompt, "Answer in haiku.");

    *h.reload_with.lock().unwrap() = Err(ConfigError::new(
        "core.max_concurrent_turns",
        "must be at least 1",
        "set it to 64",
    ));
    h.signals.send(Signal::Reload).unwrap();
    until("READY after rejected reload", || {
        h.notifier.count(&Notice::Ready) == 3
    })
    .await;
    let line = statuses(&h.notifier).last().cloned().unwrap();
    assert!(
        line.contains("reload rejected (core.max_concurrent_turns)"),
        "{line}"
    );
    assert_eq!(ctx.core.config().core.system_prompt, "Answer in haiku.");
    assert_eq!(ctx.config.borrow().core.system_prompt, "Answer in haiku.");

    h.signals.send(Signal::Terminate).unwrap();
    assert!(h.serve.await.unwrap().is_ok());
}

/// The reload contract with the real router: a configuration it cannot apply (a `tier_order` naming no
/// tier) rejects the whole reload — `STATUS=` says so and the running configuration stays everywhere.
#[tokio::test(start_paused = true)]
async fn sighup_with_a_config_the_router_rejects_keeps_the_old_one() {
    let router = crate::app::build_router(
        &Config::default(),
        &Secrets::default(),
        Arc::new(MemoryStore::new()),
        Arc::new(TokioClock::starting_at(1_700_000_000_000)),
    )
    .unwrap();
    let control: Arc<dyn RouterControl> = Arc::new(crate::app::RouterHandle(router));
    let h = start_with(
        Config::default(),
        Startup::UpAfter(Duration::ZERO),
        None,
        Some(control),
    );
    until("READY", || h.notifier.count(&Notice::Ready) == 1).await;
    let ctx = h.shared.ctx.lock().unwrap().clone().unwrap();
    let before = ctx.core.config().core.system_prompt.clone();

    let mut bad = Config::default();
    bad.core.system_prompt = "Answer in haiku.".into();
    bad.router.tier_order = vec!["bogus".into()];
    *h.reload_with.lock().unwrap() = Ok(bad);
    h.signals.send(Signal::Reload).unwrap();
    until("READY after the rejected reload", || {
        h.notifier.count(&Notice::Ready) == 2
    })
    .await;
    let line = statuses(&h.notifier).last().cloned().unwrap();
    assert!(
        line.starts_with(
            "reload rejected (router.tier_order[0]); running on the previous configuration"
        ),
        "{line}"
    );
    assert_eq!(ctx.core.config().core.system_prompt, before);
    assert_eq!(ctx.config.borrow().core.system_prompt, before);
    assert!(ctx.config.borrow().router.tier_order.is_empty());

    h.signals.send(Signal::Terminate).unwrap();
    assert!(h.serve.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn terminate_during_start_up_stops_without_ready() {
    let h = start(
        Config::default(),
        Startup::UpAfter(Duration::from_secs(10)),
        None,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.signals.send(Signal::Terminate).unwrap();
    assert!(h.serve.await.unwrap().is_ok());
    assert_eq!(h.notifier.count(&Notice::Ready), 0);
    assert_eq!(h.notifier.count(&Notice::Stopping), 1);
}

#[test]
fn no_token_is_a_config_error_naming_both_variables() {
    let Err(err) = build::wanted_adapters_for_test(&Config::default(), &Secrets::default()) else {
        panic!("no adapter should be wanted")
    };
    assert_eq!(err.exit_code(), crate::exit::EXIT_CONFIG);
    let text = err.to_string();
    assert!(
        text.contains("TELEGRAM_BOT_TOKEN") && text.contains("DISCORD_BOT_TOKEN"),
        "{text}"
    );
}

/// Moves the paused clock by hand in small steps: while a blocking task runs (the wedged config loader)
/// tokio does not auto-advance time.
async fn advance(total: Duration) {
    let step = Duration::from_millis(50);
    let mut moved = Duration::ZERO;
    while moved < total {
        tokio::time::advance(step).await;
        moved += step;
    }
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_pings_through_an_upstream_outage_and_stops_when_a_loop_stops_beating() {
    let health = Health::new();
    let poller = health.component("telegram");
    let gateway = health.status_only("discord");
    let notifier = RecordingNotifier::new();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let watchdog = tokio::spawn(watchdog_loop(
        Duration::from_secs(2),
        Duration::from_secs(3),
        health.clone(),
        store,
        Arc::new(notifier.clone()),
    ));
    // Telegram and Discord are unreachable, but our poller's loop still runs: pings go on.
    poller.set_status("connecting");
    gateway.set_status("reconnecting");
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        poller.beat();
    }
    let pinged = notifier.count(&Notice::Watchdog);
    // One ping a second (half the period) for 10 s.
    assert!((9..=11).contains(&pinged), "{pinged} pings in 10 s");

    // The poller's loop stops: after `stale_after` (3 s) no more pings.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after_hang = notifier.count(&Notice::Watchdog);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(notifier.count(&Notice::Watchdog), after_hang);

    poller.beat();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(notifier.count(&Notice::Watchdog) > after_hang);
    watchdog.abort();
}

/// Clears a hold flag when dropped.
struct ReleaseOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn a_wedged_main_loop_stops_the_watchdog_pings() {
    let h = ready_with_a_watchdog().await;
    // Idle for longer than `stale_after`: the main loop's tick keeps it fresh.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pinged = h.notifier.count(&Notice::Watchdog);
    assert!((19..=22).contains(&pinged), "{pinged} pings in 10 s");

    // A reload that never returns wedges the main loop (it would not see SIGTERM either); the
    // adapter's loop keeps beating, so only the main loop's silence can stop the pings.
    h.reload_hold
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // Released even if an assertion fails: the runtime waits for the blocking loader when it shuts down.
    let _release = ReleaseOnDrop(h.reload_hold.clone());
    h.signals.send(Signal::Reload).unwrap();
    advance(Duration::from_secs(3)).await;
    assert_eq!(h.notifier.count(&Notice::Reloading), 1);
    let after_wedge = h.notifier.count(&Notice::Watchdog);
    advance(Duration::from_secs(5)).await;
    assert_eq!(
        h.notifier.count(&Notice::Watchdog),
        after_wedge,
        "pinged while the main loop was wedged"
    );
    // And for the right reason: the main loop's silence, not a slow probe.
    let store: Arc<dyn Store> = h.store.clone();
    let why = liveness(
        &h.health,
        &store,
        Duration::from_secs(2),
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert_eq!(why, format!("no beat for 2s from {MAIN_LOOP}"));

    // The reload returns: the loop beats again and the pings resume.
    h.reload_hold
        .store(false, std::sync::atomic::Ordering::SeqCst);
    until("READY after the reload", || {
        h.notifier.count(&Notice::Ready) == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(h.notifier.count(&Notice::Watchdog) > after_wedge);
    h.signals.send(Signal::Terminate).unwrap();
    assert!(h.serve.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn sighup_names_the_changed_settings_that_need_a_restart() {
    let h = start(Config::default(), Startup::UpAfter(Duration::ZERO), None);
    until("READY", || h.notifier.count(&Notice::Ready) == 1).await;
    let mut new = Config::default();
    new.discord.command_guilds = vec!["400000000000000001".into()];
    new.core.system_prompt = "Answer in haiku.".into();
    *h.reload_with.lock().unwrap() = Ok(new);
    h.signals.send(Signal::Reload).unwrap();
    until("READY after reload", || {
        h.notifier.count(&Notice::Ready) == 2
    })
    .await;
    let line = statuses(&h.notifier).last().cloned().unwrap();
    assert!(
        line.starts_with("reloaded (needs a restart: discord.command_guilds);"),
        "{line}"
    );
    // The live part still applied.
    let ctx = h.shared.ctx.lock().unwrap().clone().unwrap();
    assert_eq!(ctx.core.config().core.system_prompt, "Answer in haiku.");
    h.signals.send(Signal::Terminate).unwrap();
    assert!(h.serve.await.unwrap().is_ok());
}

#[test]
fn restart_only_changes_name_each_key_and_ignore_live_ones() {
    let old = Config::default();
    let mut new = old.clone();
    new.core.system_prompt = "Answer in haiku.".into();
    new.store.max_turns += 1;
    new.discord.edit_interval_ms += 1;
    new.telegram.poll_timeout_secs += 1;
    assert!(restart_only_changes(&old, &new).is_empty());

    new.store.dir = Some("/var/lib/elsewhere".into());
    new.telegram.api_url = "http://127.0.0.1:1".into();
    new.discord.proxy_url = Some("http://127.0.0.1:2".into());
    new.discord.command_guilds = vec!["1".into()];
    new.openrouter.base_url = "http://127.0.0.1:3/api/v1".into();
    new.router.idle_timeout_secs += 1;
    assert_eq!(
        restart_only_changes(&old, &new),
        vec![
            "store.dir",
            "telegram.api_url",
            "discord.proxy_url",
            "discord.command_guilds",
            "openrouter.base_url",
            "router.idle_timeout_secs",
        ]
    );
}

#[test]
fn an_adapter_is_up_only_once_it_reached_its_platform_and_not_after_it_stopped() {
    let health = Health::new();
    assert!(!adapters_up(&health, &["discord"]), "not registered yet");
    let discord = health.component("discord");
    for not_up in ["starting", "connecting", "stopped"] {
        discord.set_status(not_up);
        assert!(!adapters_up(&health, &["discord"]), "{not_up}");
    }
    discord.set_status("connected");
    assert!(adapters_up(&health, &["discord"]));
}
