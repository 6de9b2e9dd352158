//! The Telegram adapter: long polling over teloxide's Bot API client, private chats and groups
//! (mention / reply / command policies), streamed replies with paced edits, exactly-once answering
//! across restarts, and a clean stop that acknowledges the update offset.
//!
//! Polling is driven here (`getUpdates` through teloxide's `Requester`) rather than by teloxide's
//! dispatcher: the adapter must own the offset (persist it, acknowledge it only at a clean stop),
//! see HTTP 409 and 401 as fatal instead of having them logged and retried forever, dedupe redelivered
//! batches against the store, and keep answering in-flight replies after intake stops.

pub mod api;
pub mod files;
pub mod format;
pub mod inbound;
pub mod ledger;
mod recover;
pub mod reply;
pub mod updates;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use secrecy::SecretString;
use teloxide::types::{ChatId, Message, MessageId, UpdateKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use self::api::{Api, ApiFailure};
use self::inbound::{translate, BotIdentity};
use self::ledger::Ledger;
use self::reply::TelegramSurface;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::core::{Core, JournalTicket};
use crate::domain::{ChatKind, Inbound};
use crate::exit::Fatal;
use crate::health::{ComponentHandle, FailureStreak, DEGRADED_AFTER};
use crate::platforms::stream::{Reply, Settings, Stage};
use crate::platforms::{AdapterContext, PlatformAdapter};
use crate::secrets::fingerprint;

/// Updates fetched per `getUpdates` call (Telegram's maximum).
const POLL_LIMIT: u8 = 100;
/// Backoff after a failed poll starts here and doubles up to [`MAX_POLL_BACKOFF`]; a network blip
/// recovers within a second, an outage is not hammered.
const FIRST_POLL_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between failed polls.
const MAX_POLL_BACKOFF: Duration = Duration::from_secs(30);
/// At most this many replies are in flight (answering or queued in the core) before the adapter stops
/// fetching updates; further messages wait at Telegram, which keeps them for 24 hours, instead of in
/// memory. The core answers at most `core.max_concurrent_turns` (64 by default) at once, so 256 keeps a
/// deep queue ready while bounding the memory a burst can take.
const MAX_REPLIES_IN_FLIGHT: usize = 256;
/// How often old answered-message records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// While waiting for in-flight replies at shutdown, the health beat repeats this often (the watchdog
/// must not think the adapter hung).
const DRAIN_BEAT: Duration = Duration::from_secs(1);

/// The Telegram platform adapter.
pub struct TelegramAdapter {
    token: SecretString,
}

impl TelegramAdapter {
    /// An adapter for the bot with `token` (`TELEGRAM_BOT_TOKEN`).
    pub fn new(token: SecretString) -> Self {
        Self { token }
    }
}

impl std::fmt::Debug for TelegramAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TelegramAdapter({})", fingerprint(&self.token))
    }
}

impl PlatformAdapter for TelegramAdapter {
    fn name(&self) -> &'static str {
        "telegram"
    }

    fn run(self: Box<Self>, ctx: AdapterContext) -> BoxFuture<'static, Result<(), Fatal>> {
        Box::pin(run(self.token, ctx))
    }
}

/// A message recorded for answering (journal and ledger), not yet handed to the core.
struct Accepted {
    chat: ChatId,
    message: MessageId,
    inbound: Inbound,
    ticket: JournalTicket,
}

/// Everything the poll loop shares with reply tasks.
struct Poller {
    api: Api,
    core: Arc<Core>,
    ledger: Ledger,
    /// Pacing and reply order of every chat.
    stage: Arc<Stage>,
    me: BotIdentity,
    tracker: TaskTracker,
    /// One permit per reply in flight ([`MAX_REPLIES_IN_FLIGHT`]).
    replies: Arc<Semaphore>,
}

async fn run(token: SecretString, ctx: AdapterContext) -> Result<(), Fatal> {
    let config = ctx.config.borrow().clone();
    let api = Api::new(&token, &config.telegram.api_url).map_err(Fatal::Config)?;
    let health = ctx.health.component("telegram");
    health.set_status("starting");
    let Some(me) = connect(&api, &token, &config, &ctx, &health).await? else {
        return Ok(()); // Stopped before Telegram could be reached.
    };
    register_commands(&api).await;
    register_files(&api, token, &config, &ctx.core)?;
    let ledger = Ledger::new(
        ctx.store.clone().into_state(),
        Arc::new(SystemClock),
        me.id.0,
    );
    let poller = Poller {
        api,
        core: ctx.core.clone(),
        ledger,
        stage: Arc::new(Stage::default()),
        me,
        tracker: TaskTracker::new(),
        replies: Arc::new(Semaphore::new(MAX_REPLIES_IN_FLIGHT)),
    };
    // Replies the last run left cut short are dealt with before any new message is taken: their
    // answers queue first in their conversations.
    health.set_status("recovering");
    recover::run(&poller, &config).await;
    let result = poller.poll(&ctx, &health).await;
    // After a 409 or 401 another getUpdates would only fail again: acknowledge only on a clean stop.
    poller.stop(&health, result.is_ok()).await;
    result
}

/// Lets the core fetch photos and documents through this bot's `getFile`.
fn register_files(
    api: &Api,
    token: SecretString,
    config: &Config,
    core: &Core,
) -> Result<(), Fatal> {
    let connect = Duration::from_secs(config.media.connect_timeout_secs);
    let downloader = crate::media::download::Downloader::new(connect)
        .map_err(|e| Fatal::Other(anyhow::anyhow!("telegram: the download client: {e}")))?;
    let files = files::TelegramFiles::new(api.clone(), token, &config.telegram.api_url, downloader);
    core.set_media_source(crate::domain::Platform::Telegram, Arc::new(files));
    Ok(())
}

/// `getWebhookInfo` / `getMe` until they answer: a bad token is fatal, a network problem is retried.
async fn connect(
    api: &Api,
    token: &SecretString,
    config: &Config,
    ctx: &AdapterContext,
    health: &ComponentHandle,
) -> Result<Option<BotIdentity>, Fatal> {
    let mut backoff = FIRST_POLL_BACKOFF;
    loop {
        let attempt = async {
            api.prepare_polling().await?;
            api.get_me().await
        };
        let result = tokio::select! {
            () = ctx.intake.cancelled() => return Ok(None),
            r = attempt => r,
        };
        match result {
            Ok(me) => {
                let username = config
                    .telegram
                    .bot_username
                    .clone()
                    .unwrap_or_else(|| me.username().to_owned());
                tracing::info!(bot = %username, token = %fingerprint(token), "telegram: connected");
                return Ok(Some(BotIdentity::new(me.id, &username)));
            }
            Err(ApiFailure::Unauthorized) => {
                return Err(Fatal::Config(format!(
                    "Telegram rejected TELEGRAM_BOT_TOKEN ({}): 401 Unauthorized. Fix: copy the token from \
                     @BotFather again, or remove TELEGRAM_BOT_TOKEN to run without Telegram",
                    fingerprint(token)
                )));
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "telegram: cannot reach the Bot API yet");
                health.set_status("connecting");
                tokio::select! {
                    () = ctx.intake.cancelled() => return Ok(None),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_POLL_BACKOFF);
            }
        }
    }
}

async fn register_commands(api: &Api) {
    let commands = Core::commands()
        .iter()
        .map(|c| (c.name.to_owned(), c.description.to_owned()))
        .collect();
    if let Err(e) = api.set_commands(commands).await {
        tracing::warn!(error = %e, "telegram: setMyCommands failed; commands still work, the menu may be stale");
    }
}

/// A failed `getUpdates`: fatal for 409 and 401; otherwise how long to wait before the next try
/// (exactly `retry_after` for flood control, else `backoff`). Failures that have lasted
/// [`DEGRADED_AFTER`] mark the adapter degraded (ERROR once, then in the status).
fn poll_failed(
    e: &ApiFailure,
    streak: &mut FailureStreak,
    backoff: Duration,
    health: &ComponentHandle,
) -> Result<Duration, Fatal> {
    let wait = match e {
        ApiFailure::Conflict => {
            return Err(Fatal::Conflict(
                "another process is polling this Telegram token (HTTP 409 from getUpdates). Fix: stop \
                 the other switchboard or bot using TELEGRAM_BOT_TOKEN; this one will not fight it"
                    .into(),
            ));
        }
        ApiFailure::Unauthorized => {
            return Err(Fatal::Config(
                "Telegram rejected TELEGRAM_BOT_TOKEN while polling (401: revoked?). Fix: put the \
                 current token from @BotFather into TELEGRAM_BOT_TOKEN"
                    .into(),
            ));
        }
        ApiFailure::RetryAfter(wait) => *wait,
        _ => backoff,
    };
    let failing_for = streak.failed();
    tracing::warn!(error = %e, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "telegram: getUpdates failed");
    if failing_for < DEGRADED_AFTER {
        health.set_status("polling (retrying)");
        return Ok(wait);
    }
    if !health.is_degraded() {
        tracing::error!(
            failing_secs = failing_for.as_secs(),
            "telegram: getUpdates keeps failing; no new messages are coming in"
        );
    }
    health.set_degraded(format!(
        "getUpdates failing for {} min",
        failing_for.as_secs() / 60
    ));
    Ok(wait)
}

impl Poller {
    /// Polls until intake stops (Ok) or a fatal error.
    async fn poll(&self, ctx: &AdapterContext, health: &ComponentHandle) -> Result<(), Fatal> {
        let mut offset = self.ledger.offset();
        let mut backoff = FIRST_POLL_BACKOFF;
        let mut streak = FailureStreak::default();
        let mut next_prune = Instant::now();
        loop {
            if streak.is_failing() {
                health.beat(); // The status says how long it has been failing.
            } else {
                health.set_status("polling");
            }
            if Instant::now() >= next_prune {
                let removed = self.ledger.prune();
                tracing::debug!(removed, "telegram: pruned answered-message records");
                next_prune = Instant::now() + PRUNE_EVERY;
            }
            // Room for a whole batch first, so no fetched message has to wait in memory for it.
            let Some(mut room) = self.room_for_a_batch(ctx, health).await else {
                return Ok(());
            };
            let config = ctx.config.borrow().clone();
            let request =
                self.api
                    .get_updates(offset, config.telegram.poll_timeout_secs, POLL_LIMIT);
            let result = tokio::select! {
                // Dropping the request is safe: what it would have returned was not acknowledged and is
                // delivered again to the next poll (or the next run).
                () = ctx.intake.cancelled() => return Ok(()),
                r = request => r,
            };
            let batch = match result {
                Ok(batch) => batch,
                Err(e) => {
                    let wait = poll_failed(&e, &mut streak, backoff, health)?;
                    tokio::select! {
                        () = ctx.intake.cancelled() => return Ok(()),
                        () = tokio::time::sleep(wait) => {}
                    }
                    backoff = (backoff * 2).min(MAX_POLL_BACKOFF);
                    continue;
                }
            };
            backoff = FIRST_POLL_BACKOFF;
            let failures = streak.succeeded();
            if failures > 0 {
                tracing::info!(failures, "telegram: getUpdates works again");
            }
            let Some(next) = batch.next_offset else {
                continue;
            };
            let accepted: Vec<Accepted> = batch
                .updates
                .into_iter()
                .filter_map(|update| match update.kind {
                    UpdateKind::Message(msg) => self.accept(&config, &msg),
                    _ => None,
                })
                .collect();
            // Past skipped (undecodable) updates too: they must not come back forever.
            offset = Some(next);
            self.ledger.save_offset(next);
            // Durable before acknowledged: the batch's journal records, dedupe records and offset take
            // one group-committed flush here, before the next getUpdates confirms the batch to Telegram
            // and before any of its replies starts. A crash before it gets the batch redelivered; after
            // it, recovery finds every accepted message.
            self.ledger.flush().await;
            for message in accepted {
                let in_flight = room.split(1);
                self.start(&config, message, in_flight);
            }
        }
    }

    /// Waits until [`POLL_LIMIT`] more replies may be in flight, beating the health check meanwhile (slow
    /// answers are not a hung adapter); `None` when intake stops first.
    async fn room_for_a_batch(
        &self,
        ctx: &AdapterContext,
        health: &ComponentHandle,
    ) -> Option<OwnedSemaphorePermit> {
        let room = self
            .replies
            .clone()
            .acquire_many_owned(u32::from(POLL_LIMIT));
        tokio::pin!(room);
        loop {
            tokio::select! {
                () = ctx.intake.cancelled() => return None,
                room = &mut room => return room.ok(),
                () = tokio::time::sleep(DRAIN_BEAT) => health.beat(),
            }
        }
    }

    /// Records one message of a batch for answering (if it is for us and not answered before): in the
    /// reply journal first, then in the dedupe ledger — sled keeps write order, so a durable ledger
    /// record means a durable journal record. Nothing is answered yet.
    fn accept(&self, config: &Config, msg: &Message) -> Option<Accepted> {
        let chat = msg.chat.id;
        let chat_key = chat.0.to_string();
        let mut inbound = translate(msg, &self.me, config.telegram.policy(&chat_key))?;
        inbound.attachments = files::attachments(msg, config.media.max_image_bytes);
        if self.ledger.answered(chat.0, msg.id.0) {
            tracing::info!(
                chat = chat.0,
                message = msg.id.0,
                "telegram: already answered; skipping a redelivered message"
            );
            return None;
        }
        let ticket = self.core.journal().accept(&msg.id.0.to_string(), &inbound);
        self.ledger.record(chat.0, msg.id.0);
        Some(Accepted {
            chat,
            message: msg.id,
            inbound,
            ticket,
        })
    }

    /// Hands an accepted message to the core and starts rendering its reply, which holds `in_flight`
    /// (a permit of [`MAX_REPLIES_IN_FLIGHT`]) until it is done.
    fn start(&self, config: &Config, accepted: Accepted, in_flight: Option<OwnedSemaphorePermit>) {
        let Accepted {
            chat,
            message,
            inbound,
            ticket,
        } = accepted;
        let direct = inbound.chat_kind == ChatKind::Direct;
        let Some((stream, receipt)) = self.core.handle_journaled(inbound, ticket.clone()) else {
            return;
        };
        // Taken here, in the order the messages arrived, so the chat's replies start in that order.
        let order = self.stage.order.ticket(chat.0);
        let interval = Duration::from_millis(if direct {
            config.telegram.edit_interval_private_ms
        } else {
            config.telegram.edit_interval_group_ms
        });
        let settings = Settings {
            streaming: config.telegram.streaming(&chat.0.to_string()),
            interval,
            max_messages: config.telegram.max_reply_messages,
        };
        // In groups the answer quotes the question, so it is clear whom it answers.
        let reply_to: Option<MessageId> = (!direct).then_some(message);
        let surface = Arc::new(TelegramSurface::new(self.api.clone(), chat, reply_to));
        let reply = Reply::new(surface, self.stage.clone(), order, settings, !direct)
            .journaled(Some(ticket));
        self.tracker.spawn(async move {
            receipt.report(reply.run(stream).await);
            drop(in_flight);
        });
    }

    /// Lets in-flight replies finish (the core ends each by its shutdown deadline), then acknowledges
    /// the offset with a final `getUpdates` and makes the records durable.
    async fn stop(&self, health: &ComponentHandle, acknowledge: bool) {
        self.tracker.close();
        if !self.tracker.is_empty() {
            health.set_status("finishing replies");
            tracing::info!(
                in_flight = self.tracker.len(),
                "telegram: finishing replies in flight"
            );
        }
        loop {
            tokio::select! {
                () = self.tracker.wait() => break,
                () = tokio::time::sleep(DRAIN_BEAT) => health.beat(),
            }
        }
        if let Some(offset) = self.ledger.offset().filter(|_| acknowledge) {
            // timeout 0: return at once. Updates from `offset` on stay unacknowledged for the next run.
            match self.api.get_updates(Some(offset), 0, 1).await {
                Ok(_) => tracing::info!(offset, "telegram: offset acknowledged"),
                Err(e) => {
                    tracing::warn!(error = %e, "telegram: could not acknowledge the offset; the next start dedupes");
                }
            }
        }
        self.ledger.flush().await;
        health.set_status("stopped");
    }
}
