//! The Discord adapter (serenity 0.12, rustls): gateway events in, [`Inbound`] to the core, reply
//! streams rendered back with typing, paced edits and splitting. Guild policy, allow lists and
//! conversation scoping live in [`policy`], the reply-chain map in [`chain`], REST (and the one switch
//! between Discord and a test proxy) in [`rest`], streaming in [`render`], slash commands in
//! [`commands`], the watchdog's view of the adapter in [`liveness`].
//!
//! A thread belongs to its parent channel: the core sees the parent as the chat (so `access.allowed_chats`,
//! per-chat settings and usage follow the channel a thread was opened in), and the thread as one
//! conversation within it.

pub mod attachments;
pub mod chain;
pub mod commands;
pub mod liveness;
pub mod policy;
mod recover;
pub mod render;
pub mod rest;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use secrecy::SecretString;
use serenity::all::{
    ClientBuilder, ConnectionStage, Context, EventHandler, GatewayError, GatewayIntents,
    Interaction, Message, Ready, ResumedEvent, ShardStageUpdateEvent,
};
use serenity::model::id::{ApplicationId, ChannelId, GuildId, MessageId, UserId};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::chain::ChainMap;
use self::liveness::{Liveness, ReconnectMeter};
use self::policy::{GuildMessageFacts, Scope};
use self::recover::Answering;
use self::render::Target;
use self::rest::{ChannelKind, Rest};
use super::{AdapterContext, PlatformAdapter};
use crate::clock::SystemClock;

use crate::domain::{ChatKind, ChatRef, Inbound, Platform, Sender, UserRef};
use crate::exit::Fatal;
use crate::health::ComponentHandle;
use crate::platforms::stream::Stage;

/// How many recent message ids are remembered to drop events the gateway replays after a resume
/// (reliability row 14). A resume replays at most the events missed during a short drop — far fewer.
const SEEN_CAPACITY: usize = 4096;

/// The health component name.
pub const COMPONENT: &str = "discord";

/// The answer to a message that arrives while switchboard is stopping: Discord never redelivers a
/// gateway event, so silence would lose the message without the sender knowing.
pub const SHUTTING_DOWN_NOTE: &str =
    "⚠️ switchboard is restarting. Please send that again in a minute.";

/// What the bot fixes on: guild messages, DMs, and their text (privileged: enabled in the portal).
pub fn intents() -> GatewayIntents {
    GatewayIntents::GUILD_MESSAGES
        | GatewayIntents::DIRECT_MESSAGES
        | GatewayIntents::MESSAGE_CONTENT
}

/// The message for gateway close 4004.
pub const BAD_TOKEN_HINT: &str = "DISCORD_BOT_TOKEN was rejected by Discord (gateway close 4004, \
authentication failed). Fix: in the Discord developer portal open your application → Bot → Reset Token, \
and put the new token in DISCORD_BOT_TOKEN (or its credentials file).";

/// The message for gateway closes 4013/4014.
pub const INTENTS_HINT: &str = "Discord refused the gateway intents (gateway close 4013/4014, \
disallowed intents). Fix: enable the Message Content intent in the Discord developer portal \
(your application → Bot → Privileged Gateway Intents → MESSAGE CONTENT INTENT), save, and start \
switchboard again.";

/// Why the adapter stopped after a reconnect storm.
pub const STORM_MESSAGE: &str =
    "discord: the gateway connection kept dropping (a reconnect storm); \
exiting so that systemd restarts switchboard after its pause";

/// The Discord adapter. Holds the bot token; deliberately not `Debug`.
pub struct DiscordAdapter {
    token: SecretString,
}

impl DiscordAdapter {
    /// An adapter for the bot with `token` (`DISCORD_BOT_TOKEN`).
    pub fn new(token: SecretString) -> Self {
        Self { token }
    }
}

impl PlatformAdapter for DiscordAdapter {
    fn name(&self) -> &'static str {
        "discord"
    }

    fn run(self: Box<Self>, ctx: AdapterContext) -> BoxFuture<'static, Result<(), Fatal>> {
        Box::pin(run(self.token, ctx))
    }
}

/// The bot's own identity, learned from READY.
#[derive(Clone, Copy, Debug)]
struct BotIdentity {
    user_id: UserId,
    application_id: ApplicationId,
}

/// State shared by the event handler and the run loop.
struct Shared {
    ctx: AdapterContext,
    rest: OnceLock<Arc<Rest>>,
    bot: OnceLock<BotIdentity>,
    /// Reply renders in flight; waited for on shutdown.
    tasks: TaskTracker,
    /// Pacing and reply order of every channel.
    stage: Arc<Stage>,
    /// Channel kinds already looked up (a channel never turns into a thread or back).
    channels: Mutex<HashMap<ChannelId, ChannelKind>>,
    status: ComponentHandle,
    commands_registered: AtomicBool,
    /// Recently handled message ids (see [`SEEN_CAPACITY`]).
    seen: Mutex<RecentIds>,
    /// Which conversation each message belongs to.
    chains: ChainMap,
    /// Event handlers in progress, watched by the liveness pulse.
    liveness: Arc<Liveness>,
    /// Gateway reconnects, for the log and the storm verdict.
    reconnects: ReconnectMeter,
    /// Cancelled when the reconnects amount to a storm: the adapter then stops with [`Fatal::Unstable`].
    storm: CancellationToken,
}

/// A bounded set of recent ids, oldest evicted first.
#[derive(Default)]
struct RecentIds {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl RecentIds {
    /// Records `id`; false if it was already there.
    fn insert(&mut self, id: u64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

struct Handler(Arc<Shared>);

async fn run(token: SecretString, ctx: AdapterContext) -> Result<(), Fatal> {
    let config = ctx.config.borrow().clone();
    let (http, reqwest_client, mode) =
        rest::build_http(&token, config.discord.proxy_url.as_deref())
            .map_err(|e| Fatal::Other(anyhow::anyhow!("discord: {e}")))?;
    drop(token);
    attachments::register_source(&ctx, &config)?;
    let status = ctx.health.component(COMPONENT);
    status.set_status("connecting");
    let shared = Arc::new(Shared::new(&ctx, status.clone()));
    // The pulse and the chain sweep run until this function returns (also when it is dropped), so the
    // adapter keeps beating while it drains replies on shutdown.
    let background = CancellationToken::new();
    let _stop_background = background.clone().drop_guard();
    tokio::spawn(liveness::pulse(
        shared.liveness.clone(),
        status,
        background.clone(),
    ));
    tokio::spawn(sweep_chains(shared.chains.clone(), background));
    let mut client = ClientBuilder::new_with_http(http, intents())
        .event_handler_arc(Arc::new(Handler(shared.clone())))
        .await
        .map_err(|e| Fatal::Other(anyhow::anyhow!("discord: could not build the client: {e}")))?;
    let rest = Arc::new(Rest::new(client.http.clone(), reqwest_client, mode));
    let _ = shared.rest.set(rest.clone());
    // Replies the last run left cut short, before the gateway delivers any new message.
    recover::run(&shared, &rest, &config).await;
    if mode == rest::Mode::Proxy {
        // serenity falls back to the real gateway when this call fails: make sure it cannot.
        rest.preflight_gateway()
            .await
            .map_err(|e| Fatal::Config(format!("discord.proxy_url: the proxy's gateway lookup failed ({e}); refusing to fall back to the real Discord")))?;
    }
    let shard_manager = client.shard_manager.clone();
    let mut gateway = tokio::spawn(async move { client.start().await });
    let outcome = tokio::select! {
        result = &mut gateway => Some(result),
        () = ctx.intake.cancelled() => None,
        () = shared.storm.cancelled() => {
            shard_manager.shutdown_all().await;
            shared.tasks.close();
            shared.status.set_status("stopped: reconnect storm");
            return Err(Fatal::Unstable(STORM_MESSAGE.to_owned()));
        }
    };
    if let Some(result) = outcome {
        // The gateway ended by itself: a fatal close or a bug; the daemon decides what happens next.
        shard_manager.shutdown_all().await;
        shared.tasks.close();
        shared.status.set_status("stopped");
        return Err(match result {
            Ok(Ok(())) => {
                Fatal::Other(anyhow::anyhow!("discord: the gateway stopped unexpectedly"))
            }
            Ok(Err(e)) => map_gateway_error(&e),
            Err(join) => Fatal::Other(anyhow::anyhow!("discord: the gateway task failed: {join}")),
        });
    }
    tracing::info!(
        in_flight = shared.tasks.len(),
        "discord: stopping intake, finishing replies"
    );
    shared.tasks.close();
    shared.tasks.wait().await;
    shard_manager.shutdown_all().await;
    let _ = gateway.await;
    shared.status.set_status("stopped");
    Ok(())
}

impl Shared {
    /// The adapter's state before the gateway connects: no bot identity or REST handle yet.
    fn new(ctx: &AdapterContext, status: ComponentHandle) -> Self {
        Self {
            ctx: ctx.clone(),
            rest: OnceLock::new(),
            bot: OnceLock::new(),
            tasks: TaskTracker::new(),
            stage: Arc::new(Stage::default()),
            channels: Mutex::new(HashMap::new()),
            status,
            commands_registered: AtomicBool::new(false),
            seen: Mutex::new(RecentIds::default()),
            chains: ChainMap::new(ctx.store.clone().into_state(), Arc::new(SystemClock)),
            liveness: Arc::new(Liveness::default()),
            reconnects: ReconnectMeter::default(),
            storm: CancellationToken::new(),
        }
    }
}

/// Prunes the reply-chain map every [`chain::CHAIN_SWEEP_EVERY`] until `stop`.
async fn sweep_chains(chains: ChainMap, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(chain::CHAIN_SWEEP_EVERY) => {}
        }
        match chains.prune() {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "discord: swept old reply-chain entries"),
            Err(e) => tracing::warn!(error = %e, "discord: could not sweep the reply-chain map"),
        }
    }
}

/// Maps what `Client::start` returned to the daemon's fatal errors: bad token and refused intents are
/// configuration errors (exit 78, no restart: a crash loop burns the daily IDENTIFY budget).
fn map_gateway_error(error: &serenity::Error) -> Fatal {
    match error {
        serenity::Error::Gateway(GatewayError::InvalidAuthentication) => {
            Fatal::Config(BAD_TOKEN_HINT.to_owned())
        }
        serenity::Error::Gateway(
            GatewayError::DisallowedGatewayIntents | GatewayError::InvalidGatewayIntents,
        ) => Fatal::Config(INTENTS_HINT.to_owned()),
        serenity::Error::Gateway(e) => {
            Fatal::Other(anyhow::anyhow!("discord: the gateway failed: {e}"))
        }
        _ => Fatal::Other(anyhow::anyhow!(
            "discord: the gateway client stopped with an error"
        )),
    }
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        let _busy = self.0.liveness.enter();
        let identity = BotIdentity {
            user_id: ready.user.id,
            application_id: ready.application.id,
        };
        if self.0.bot.set(identity).is_err() {
            // A READY after the first: the session was lost and identified again.
            self.0.reconnected();
        }
        self.0.status.set_status("connected");
        tracing::info!(bot_user = %identity.user_id, "discord: connected");
        if !self.0.commands_registered.swap(true, Ordering::SeqCst) {
            let shared = self.0.clone();
            tokio::spawn(async move {
                commands::register(&shared_rest(&shared), &shared.ctx, identity.application_id)
                    .await;
            });
        }
    }

    async fn resume(&self, _ctx: Context, _event: ResumedEvent) {
        let _busy = self.0.liveness.enter();
        self.0.reconnected();
        self.0.status.set_status("connected");
    }

    async fn shard_stage_update(&self, _ctx: Context, event: ShardStageUpdateEvent) {
        let _busy = self.0.liveness.enter();
        let status = match event.new {
            ConnectionStage::Connected => "connected",
            _ => "reconnecting",
        };
        self.0.status.set_status(status);
    }

    async fn message(&self, _ctx: Context, message: Message) {
        let _busy = self.0.liveness.enter();
        self.0.on_message(message).await;
    }

    async fn interaction_create(&self, _ctx: Context, interaction: Interaction) {
        let _busy = self.0.liveness.enter();
        if let Interaction::Command(command) = interaction {
            let shared = self.0.clone();
            let Some(rest) = shared.rest.get().cloned() else {
                return;
            };
            let Some(bot) = shared.bot.get().copied() else {
                return;
            };
            commands::handle(&shared, &rest, bot.application_id, command).await;
        }
    }
}

fn shared_rest(shared: &Shared) -> Arc<Rest> {
    shared
        .rest
        .get()
        .cloned()
        .expect("the REST handle is set before the gateway starts")
}

impl Shared {
    /// Counts a gateway reconnect; a storm stops the adapter.
    fn reconnected(&self) {
        if let Some(count) = self.reconnects.record() {
            if !self.storm.is_cancelled() {
                tracing::error!(
                    reconnects = count,
                    window_secs = liveness::STORM_WINDOW.as_secs(),
                    "{STORM_MESSAGE}"
                );
                self.storm.cancel();
            }
        }
    }

    /// Answers one message: skips our own, bots' and replayed events, applies the admission policy,
    /// hands the message to the core and renders its reply.
    async fn on_message(self: &Arc<Self>, message: Message) {
        let (Some(bot), Some(rest)) = (self.bot.get().copied(), self.rest.get().cloned()) else {
            return;
        };
        if !self.is_fresh_from_a_person(&message, bot) {
            return;
        }
        let config = self.ctx.config.borrow().clone();
        let user = UserRef::new(Platform::Discord, message.author.id.to_string());
        let reply_to = message
            .message_reference
            .as_ref()
            .and_then(|r| r.message_id)
            .or_else(|| message.referenced_message.as_ref().map(|m| m.id));
        let admitted = if let Some(guild_id) = message.guild_id {
            self.admit_guild(&message, guild_id, bot, &rest, &config, reply_to)
                .await
        } else {
            admit_direct(&message, &config, &user)
        };
        let Some(Admitted {
            chat,
            chat_kind,
            scope,
        }) = admitted
        else {
            return;
        };
        if self.ctx.intake.is_cancelled() {
            // Checked after the policy: only a message the bot would have answered gets the note.
            if let Err(e) = rest
                .create_message(message.channel_id, SHUTTING_DOWN_NOTE, Some(message.id))
                .await
            {
                tracing::warn!(error = %e, "discord: could not send the restarting note");
            }
            return;
        }
        if let Some(scope) = &scope {
            self.record_chain(&message.id.to_string(), scope);
        }
        let inbound = Inbound {
            chat,
            chat_kind,
            sender: Sender {
                user,
                display_name: display_name(&message),
            },
            text: quoted_text(&message, bot),
            addressed: true,
            reply_to: reply_to.map(|id| id.to_string()),
            thread: scope.clone().and_then(Scope::into_thread),
            attachments: attachments::attachments(&message),
        };
        // Recorded durably before the reply starts: Discord has no acknowledgement, so the record is
        // what makes a replayed event idempotent and lets the next start finish a reply a crash cut.
        let journal = self.ctx.core.journal();
        let journal_id = recover::journal_id(message.channel_id, message.id);
        if journal.contains(&inbound.chat, &journal_id) {
            tracing::debug!("discord: dropped a message already recorded in the reply journal");
            return;
        }
        let ticket = journal.accept(&journal_id, &inbound);
        if let Err(e) = journal.flush().await {
            tracing::warn!(error = %e, "discord: could not make a message's record durable");
        }
        let Some(reply) = Answering::start(&self.ctx.core, inbound, ticket) else {
            return;
        };
        self.render_reply(
            message.channel_id,
            Some(message.id),
            rest,
            &config,
            reply,
            scope,
        );
    }

    /// Whether a message is a person's (not ours, not a bot's) and seen for the first time: the
    /// gateway replays events after a resume.
    fn is_fresh_from_a_person(&self, message: &Message, bot: BotIdentity) -> bool {
        if message.author.bot || message.author.id == bot.user_id {
            return false;
        }
        let fresh = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(message.id.get());
        if !fresh {
            tracing::debug!("discord: dropped a replayed message event");
        }
        fresh
    }

    /// The chat and conversation of a guild message the policy admits; `None` when it is not answered.
    async fn admit_guild(
        &self,
        message: &Message,
        guild_id: GuildId,
        bot: BotIdentity,
        rest: &Rest,
        config: &crate::config::Config,
        reply_to: Option<MessageId>,
    ) -> Option<Admitted> {
        let bot_id = bot.user_id.to_string();
        let mentions_bot = message.mentions.iter().any(|u| u.id == bot.user_id)
            || policy::mentions(&message.content, &bot_id);
        let replied_scope = match reply_to {
            Some(id) => self.chains.lookup(&id.to_string()).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "discord: reply-chain lookup failed");
                None
            }),
            None => None,
        };
        let replies_to_bot = message
            .referenced_message
            .as_ref()
            .is_some_and(|m| m.author.id == bot.user_id);
        let kind = self.channel_kind(rest, message.channel_id).await;
        let roles: Vec<String> = message
            .member
            .as_ref()
            .map(|m| m.roles.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        let guild = guild_id.to_string();
        let channel = message.channel_id.to_string();
        let parent = kind.parent.map(|p| p.to_string());
        let facts = GuildMessageFacts {
            guild_id: &guild,
            channel_id: &channel,
            parent_id: parent.as_deref(),
            roles: &roles,
            mentions_bot,
            replies_to_bot,
            is_command: policy::is_command(
                &policy::strip_bot_mention(&message.content, &bot_id),
                crate::core::Core::commands(),
            ),
        };
        if let Err(why) = policy::admit_guild_message(&config.discord, &facts) {
            tracing::trace!(?why, "discord: message not answered");
            return None;
        }
        let scope = policy::guild_scope(policy::ScopeFacts {
            in_thread_channel: kind.is_thread,
            channel_id: &channel,
            message_id: &message.id.to_string(),
            replied_scope,
            replies_to_bot,
            mentions_bot,
        });
        Some(Admitted {
            chat: chat_of(message.channel_id, kind),
            chat_kind: ChatKind::Group,
            scope: Some(scope),
        })
    }

    /// Renders the core's reply to message `reply_to` in `channel_id` in a tracked task, recording each
    /// posted message in the conversation's reply chain and the reply journal, and reporting the
    /// delivery back to the core.
    fn render_reply(
        self: &Arc<Self>,
        channel_id: ChannelId,
        reply_to: Option<MessageId>,
        rest: Arc<Rest>,
        config: &crate::config::Config,
        reply: Answering,
        scope: Option<Scope>,
    ) {
        let Answering {
            stream,
            receipt,
            ticket: journal,
        } = reply;
        // Taken here, in the order the messages reached the core, so replies start in that order.
        let ticket = self.stage.order.ticket(render_key(channel_id));
        let target = Target::Channel {
            channel_id,
            reply_to,
        };
        let settings = render_settings(config);
        let shared = self.clone();
        let stage = self.stage.clone();
        self.tasks.spawn(async move {
            let chains = shared.clone();
            let on_posted = Box::new(move |id: MessageId| {
                journal.bot_message(&id.to_string());
                if let Some(scope) = &scope {
                    chains.record_chain(&id.to_string(), scope);
                }
            });
            let delivery =
                render::render(rest, stage, ticket, target, stream, settings, on_posted).await;
            receipt.report(delivery);
        });
    }

    fn record_chain(&self, message_id: &str, scope: &Scope) {
        if let Err(e) = self.chains.record(message_id, scope) {
            tracing::warn!(error = %e, "discord: could not record a reply chain");
        }
    }

    /// Whether a channel is a thread, looked up once per channel. A failed lookup counts as "not a
    /// thread" (the conversation then follows reply chains, which is still correct within a thread).
    async fn channel_kind(&self, rest: &Rest, channel_id: ChannelId) -> ChannelKind {
        if let Some(kind) = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&channel_id)
        {
            return *kind;
        }
        match rest.channel_kind(channel_id).await {
            Ok(kind) => {
                self.channels
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(channel_id, kind);
                kind
            }
            Err(e) => {
                tracing::warn!(error = %e, "discord: channel lookup failed");
                ChannelKind {
                    is_thread: false,
                    parent: None,
                }
            }
        }
    }
}

/// The chat the core sees for a guild channel: a thread's parent channel (see the module doc), else
/// the channel itself.
/// Where an admitted message belongs: its chat, the chat's kind and (in guilds) its conversation.
struct Admitted {
    chat: ChatRef,
    chat_kind: ChatKind,
    scope: Option<Scope>,
}

/// The chat of a direct message the role allow list admits; `None` when it is refused.
fn admit_direct(
    message: &Message,
    config: &crate::config::Config,
    user: &UserRef,
) -> Option<Admitted> {
    if !policy::admit_direct_message(
        &config.discord,
        &config.access.allowed_users,
        &config.access.admins,
        &user.to_string(),
    ) {
        tracing::debug!("discord: DM refused by the role allow list");
        return None;
    }
    Some(Admitted {
        chat: ChatRef::new(Platform::Discord, message.channel_id.to_string()),
        chat_kind: ChatKind::Direct,
        scope: None,
    })
}

/// The name the sender goes by here: their server nickname, else their global name, else their
/// username.
fn display_name(message: &Message) -> String {
    message
        .member
        .as_ref()
        .and_then(|m| m.nick.clone())
        .or_else(|| message.author.global_name.clone())
        .unwrap_or_else(|| message.author.name.clone())
}

/// The message's text without the bot's mention, quoting the message it replies to when that is
/// someone else's: the model needs that message to make sense of this one.
fn quoted_text(message: &Message, bot: BotIdentity) -> String {
    let bot_id = bot.user_id.to_string();
    let quoted = message
        .referenced_message
        .as_deref()
        .filter(|m| m.author.id != bot.user_id)
        .map(|m| {
            let author = m.author.global_name.as_deref().unwrap_or(&m.author.name);
            (author, policy::strip_bot_mention(&m.content, &bot_id))
        });
    let text = policy::strip_bot_mention(&message.content, &bot_id);
    policy::with_quote(&text, quoted.as_ref().map(|(a, q)| (*a, q.as_str())))
}

fn chat_of(channel_id: ChannelId, kind: ChannelKind) -> ChatRef {
    let chat = match kind.parent {
        Some(parent) if kind.is_thread => parent,
        _ => channel_id,
    };
    ChatRef::new(Platform::Discord, chat.to_string())
}

/// A channel's key for pacing and reply order.
fn render_key(channel_id: ChannelId) -> i64 {
    i64::try_from(channel_id.get()).unwrap_or(i64::MAX)
}

/// How replies are rendered under `config`.
fn render_settings(config: &crate::config::Config) -> crate::platforms::stream::Settings {
    crate::platforms::stream::Settings {
        streaming: true,
        interval: Duration::from_millis(config.discord.edit_interval_ms),
        max_messages: config.discord.max_reply_messages,
    }
}
