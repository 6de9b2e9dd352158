//! The conversation core: turns an [`Inbound`] into a command reply or an LLM turn, enforcing access and
//! limits, keeping one conversation's turns in order while different conversations run concurrently
//! (under a global bound), writing history, and containing panics to the message that caused them.
//! Knows no platform, provider or storage crate: it talks to [`LlmRouter`] and [`Store`] only.

mod access;
mod commands;
mod delivery;
pub mod journal;
mod media;
mod queue;
mod turn;
mod usage;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::future::Shared;
use futures_util::stream::{self, StreamExt};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::access::Access;
pub use self::commands::{CommandInfo, COMMANDS};
pub use self::delivery::{Delivery, Receipt};
pub use self::journal::{Journal, JournalEntry, JournalTicket, ReplyState};
pub use self::media::{MAX_ATTACHMENTS, NO_VISION, NO_VISION_PAID_OFF};
pub use self::usage::UsageCounter;
use crate::clock::{utc_day, SharedClock};
use crate::config::{Config, Scope};
use crate::domain::{
    ChatKind, Completion, ConversationKey, FailureKind, Inbound, Platform, ReplyEvent, ReplyStream,
    UserFacingError,
};
use crate::router::LlmRouter;
use crate::store::{DatedNamespace, Store};

/// Reply events buffered between a turn and its adapter. Small: adapters consume as fast as deltas come,
/// and a full buffer only slows the model stream down (backpressure), never drops text.
const EVENT_BUFFER: usize = 64;
/// After the shutdown grace, cut turns get this long to write their "restarting" note and history.
const CUT_GRACE: Duration = Duration::from_secs(2);

/// Refusal markers, one per refused user and UTC day. Only today's are read; yesterday's is kept too so
/// a sweep running just after midnight never races a refusal written just before it.
const REFUSED: DatedNamespace = DatedNamespace {
    ns: "core.refused",
    keep_days: 1,
};

/// The message a user gets when something broke on our side (a contained panic).
pub const INTERNAL_ERROR_MESSAGE: &str =
    "Sorry — something went wrong on our side while answering. Please try again.";
/// The one "slow down" a user over the per-user rate gets per window.
pub const RATE_LIMITED_MESSAGE: &str =
    "You're sending messages faster than I can answer. Please wait a moment and try again; I'll ignore messages until then.";
/// The note a reply in flight gets when the daemon stops before it finishes.
pub const RESTARTING_MESSAGE: &str =
    "switchboard is restarting; this reply was cut short. Please ask again in a minute.";

/// The turn that must finish before the next one of the same conversation starts.
type Tail = Shared<oneshot::Receiver<()>>;

/// The conversation core, shared by every adapter.
pub struct Core {
    config: RwLock<Arc<Config>>,
    store: Arc<dyn Store>,
    router: Arc<dyn LlmRouter>,
    clock: SharedClock,
    access: Access,
    /// Per conversation, the last queued job's completion signal (and its id, to clean up after itself).
    queues: Mutex<HashMap<ConversationKey, (u64, Tail)>>,
    /// Per conversation, the cancel switches of its turns answering or waiting (for `/cancel`, `/reset`).
    stoppable: Mutex<HashMap<ConversationKey, Vec<(u64, CancellationToken)>>>,
    permits: RwLock<Arc<Semaphore>>,
    tracker: TaskTracker,
    shutting_down: AtomicBool,
    /// Cancelled when the shutdown grace has passed: turns still running end with [`RESTARTING_MESSAGE`].
    cut: CancellationToken,
    next_turn: AtomicU64,
    started_ms: i64,
    /// The reply journal over the same store.
    journal: Arc<Journal>,
    /// Each platform's way to fetch the images and files people send.
    media: media::Sources,
}

impl Core {
    /// A core over `store` and `router` with `config`.
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        router: Arc<dyn LlmRouter>,
        clock: SharedClock,
    ) -> Arc<Self> {
        let started_ms = clock.now_ms();
        // The retention sweep ages these out; without it they would grow with every user and day.
        store.declare_dated(usage::DATED);
        store.declare_dated(REFUSED);
        // Pure counters: held in memory between periodic writes (store::coalesce), not rewritten per turn.
        store.declare_counters(usage::DATED.ns);
        let journal = Journal::new(store.clone().into_state(), clock.clone());
        Arc::new(Self {
            journal,
            access: Access::new(&config.access),
            permits: RwLock::new(Arc::new(Semaphore::new(config.core.max_concurrent_turns))),
            config: RwLock::new(config),
            store,
            router,
            clock,
            queues: Mutex::default(),
            stoppable: Mutex::default(),
            tracker: TaskTracker::new(),
            shutting_down: AtomicBool::new(false),
            cut: CancellationToken::new(),
            next_turn: AtomicU64::new(1),
            started_ms,
            media: media::Sources::default(),
        })
    }

    /// Handles one inbound message. `None`: the message is ignored (unaddressed in a group, from a
    /// refused user who was already told today, or over the rate limit and already told this window). Otherwise the stream ends with `Finished` or `Failed`.
    /// Turns of one conversation are answered in the order `handle` was called. A panic while handling
    /// the message (a command, a bug in a check) is contained: the user gets [`INTERNAL_ERROR_MESSAGE`]
    /// and the caller — an adapter's poll loop — carries on.
    pub fn handle(self: &Arc<Self>, inbound: Inbound) -> Option<ReplyStream> {
        self.answer(inbound, None, None)
    }

    /// [`Self::handle`] for an adapter that reports whether the user got the reply: a model answer
    /// is stored as complete history only once the [`Receipt`] says delivered.
    pub fn handle_with_receipt(
        self: &Arc<Self>,
        inbound: Inbound,
    ) -> Option<(ReplyStream, Receipt)> {
        let (receipt, verdict) = Receipt::pair(None);
        self.answer(inbound, Some(verdict), None)
            .map(|stream| (stream, receipt))
    }

    /// [`Self::handle_with_receipt`] for a message recorded in the reply [`Journal`] (`ticket`, from
    /// [`Journal::accept`]): the turn records its progress there, and a question whose user turn is
    /// already stored (answered again at recovery) is not stored twice. A message the core ignores has
    /// its record removed.
    pub fn handle_journaled(
        self: &Arc<Self>,
        inbound: Inbound,
        ticket: JournalTicket,
    ) -> Option<(ReplyStream, Receipt)> {
        let (receipt, verdict) = Receipt::pair(Some(ticket.clone()));
        let ignored = ticket.clone();
        let answered = self.answer(inbound, Some(verdict), Some(ticket));
        if answered.is_none() {
            ignored.discard();
        }
        answered.map(|stream| (stream, receipt))
    }

    /// The reply journal (adapters record accepted messages in it; recovery reads it at start-up).
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    fn answer(
        self: &Arc<Self>,
        inbound: Inbound,
        verdict: Option<oneshot::Receiver<Delivery>>,
        journal: Option<JournalTicket>,
    ) -> Option<ReplyStream> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.handle_inner(inbound, verdict, journal)
        }))
        .unwrap_or_else(|_| {
            tracing::error!(
                "a panic while handling a message was contained; the user got an error reply"
            );
            Some(failed(FailureKind::Internal, INTERNAL_ERROR_MESSAGE))
        })
    }

    fn handle_inner(
        self: &Arc<Self>,
        inbound: Inbound,
        verdict: Option<oneshot::Receiver<Delivery>>,
        journal: Option<JournalTicket>,
    ) -> Option<ReplyStream> {
        if !inbound.addressed && inbound.chat_kind == ChatKind::Group {
            return None;
        }
        let config = self.config();
        if let Err(refusal) = self.access.admit(&config.access, &inbound) {
            return self.refuse_once(&inbound, &refusal);
        }
        let text = inbound.text.trim();
        if text.chars().count() > config.core.max_input_chars {
            return Some(failed(FailureKind::Refused, format!(
                "That message is too long for me ({} characters; the limit is {}). Please shorten it or split it up.",
                text.chars().count(),
                config.core.max_input_chars
            )));
        }
        let key = self.conversation_key(&config, &inbound);
        let prompt = match commands::parse(text) {
            commands::Parsed::Command(command, args) => {
                return Some(self.run_command(&config, &inbound, &key, command, args))
            }
            commands::Parsed::Unknown(name) => {
                return Some(reply_text(format!(
                    "I don't know the command /{name}. Try /help."
                )));
            }
            commands::Parsed::Prompt(prompt) => prompt.to_owned(),
        };
        if inbound.attachments.len() > MAX_ATTACHMENTS {
            return Some(failed(
                FailureKind::Refused,
                format!("Please send at most {MAX_ATTACHMENTS} images or files in one message."),
            ));
        }
        if prompt.is_empty() && inbound.attachments.is_empty() {
            return Some(reply_text(
                "Yes? Send me a message and I'll answer.".to_owned(),
            ));
        }
        match self.access.rate(&inbound.sender.user) {
            access::Rate::Within => {}
            access::Rate::OverTell => {
                tracing::info!(user = %inbound.sender.user, "rate limited a user; further messages this window are ignored");
                return Some(failed(FailureKind::Refused, RATE_LIMITED_MESSAGE));
            }
            // Already told in this window: answering each extra message would be the flood itself.
            access::Rate::OverSilent => return None,
        }
        if self.shutting_down.load(Ordering::SeqCst) {
            return Some(failed(
                FailureKind::ShuttingDown,
                "switchboard is restarting. Please send that again in a minute.",
            ));
        }
        let turn = turn::Asked {
            key,
            prompt,
            verdict,
            journal,
        };
        Some(self.start_turn(config, inbound, turn))
    }

    /// The commands, for `/help`, Telegram's `setMyCommands` and Discord slash commands.
    pub fn commands() -> &'static [CommandInfo] {
        COMMANDS
    }

    /// Applies a reloaded configuration (allow lists, admins, prompts, limits).
    pub fn reload(&self, config: Arc<Config>) {
        self.access.reload(&config.access);
        let old_bound = self.config().core.max_concurrent_turns;
        if config.core.max_concurrent_turns != old_bound {
            // Turns holding permits of the old semaphore finish under it; new turns use the new bound.
            *self
                .permits
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Arc::new(Semaphore::new(config.core.max_concurrent_turns));
        }
        *self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    }

    /// Stops taking new turns: new messages get a "restarting" reply. Commands still work.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.tracker.close();
    }

    /// Waits for in-flight turns; after `grace` the rest end with a "restarting" note (stored as
    /// incomplete). Returns at once if nothing is in flight.
    pub async fn drain(&self, grace: Duration) {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.tracker.len(),
                "shutdown grace passed; cutting replies in flight"
            );
            self.cut.cancel();
            let _ = tokio::time::timeout(CUT_GRACE, self.tracker.wait()).await;
        }
    }

    /// Turns in flight (queued or answering) right now.
    pub fn in_flight(&self) -> usize {
        self.tracker.len()
    }

    /// Registers how `platform`'s attachments are fetched (its adapter calls this when it starts).
    pub fn set_media_source(&self, platform: Platform, source: crate::media::SharedSource) {
        self.media.set(platform, source);
    }

    /// The router this core answers with.
    pub fn router(&self) -> &Arc<dyn LlmRouter> {
        &self.router
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The conversation an inbound message belongs to: an adapter's thread if given; else per chat
    /// (direct chats are one person already), or per person within a group when `core.scope = "user"`.
    pub fn conversation_key(&self, config: &Config, inbound: &Inbound) -> ConversationKey {
        let base = inbound.chat.to_string();
        ConversationKey(
            match (&inbound.thread, inbound.chat_kind, config.core.scope) {
                (Some(thread), _, _) => format!("{base}/t:{thread}"),
                (None, ChatKind::Group, Scope::User) => {
                    format!("{base}/u:{}", inbound.sender.user.id)
                }
                _ => base,
            },
        )
    }

    /// The polite refusal, once per user per UTC day; after that the user's messages are ignored, so a
    /// stranger cannot make the bot talk (or spend) by repeating themselves.
    fn refuse_once(&self, inbound: &Inbound, refusal: &str) -> Option<ReplyStream> {
        let user = inbound.sender.user.to_string();
        let key = format!("{}/{user}", utc_day(self.now_ms()));
        match self.store.kv_get(REFUSED.ns, &key) {
            Ok(Some(_)) => None,
            Ok(None) => {
                if let Err(e) = self.store.kv_put(REFUSED.ns, &key, b"1") {
                    tracing::warn!(error = %e, "could not record a refusal");
                }
                tracing::info!(user = %user, chat = %inbound.chat, "refused a message (not on the allow list)");
                Some(failed(FailureKind::Refused, refusal.to_owned()))
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read refusal records");
                Some(failed(FailureKind::Refused, refusal.to_owned()))
            }
        }
    }

    fn start_turn(
        self: &Arc<Self>,
        config: Arc<Config>,
        inbound: Inbound,
        asked: turn::Asked,
    ) -> ReplyStream {
        let key = asked.key.clone();
        let (mut slot, cancel) = self.take_slot(&key, true);
        let previous = slot.previous.take();
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let core = Arc::clone(self);
        let (job_key, job_tx) = (key, tx.clone());
        let work = async move {
            let previous = queue::Slot::wait_previous(previous);
            tokio::pin!(previous);
            // A turn stopped while it waits (by /cancel, /reset or the shutdown cut) never starts: no
            // user turn is stored and no model is asked.
            let waited = tokio::select! {
                biased;
                () = cancel.cancelled() => false,
                () = &mut previous => true,
            };
            let permit = if waited {
                let permits = core
                    .permits
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => None,
                    permit = permits.acquire_owned() => permit.ok(),
                }
            } else {
                None
            };
            let Some(_permit) = permit else {
                // No turn waits for the delivery report: the adapter settles the journal record.
                drop(asked);
                let _ = tx.send(ReplyEvent::Failed(turn::stop_reason(&core))).await;
                // Keep the conversation's order: the slot is released only after the earlier turns.
                previous.await;
                return;
            };
            let spec = turn::TurnSpec {
                config,
                inbound,
                asked,
                cancel,
            };
            turn::run(&core, spec, &tx).await;
        };
        self.spawn_job(job_key, slot, job_tx, work);
        tokio_stream_from(rx)
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

fn tokio_stream_from(mut rx: mpsc::Receiver<ReplyEvent>) -> ReplyStream {
    stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// A reply the core writes itself: the text, then `Finished` with no model source.
pub(crate) fn reply_text(text: String) -> ReplyStream {
    stream::iter([
        ReplyEvent::Delta(text),
        ReplyEvent::Finished(Completion::default()),
    ])
    .boxed()
}

/// A reply that is only a failure with a friendly message.
pub(crate) fn failed(kind: FailureKind, message: impl Into<String>) -> ReplyStream {
    stream::iter([ReplyEvent::Failed(UserFacingError::new(kind, message))]).boxed()
}

/// Whether `platform` is the local terminal, whose user is the operator (always allowed, always admin).
pub(crate) fn is_local(platform: Platform) -> bool {
    platform == Platform::Terminal
}
