//! Slash commands: the core's commands registered at start-up (globally, or in each of
//! `discord.command_guilds` where they appear at once), and invocations answered through the same core
//! as text commands: a deferred "thinking…" response, then the reply rendered into it and follow-ups.

use std::sync::Arc;

use serde_json::{json, Value};
use serenity::all::{CommandDataOptionValue, CommandInteraction};
use serenity::model::id::{ApplicationId, GuildId};

use super::policy::Scope;
use super::render::{self, Target};
use super::rest::{Rest, RestError};
use super::{chat_of, policy, Shared, SHUTTING_DOWN_NOTE};
use crate::core::{CommandInfo, Core};
use crate::domain::{ChatKind, ChatRef, Inbound, Platform, Sender, UserRef};
use crate::platforms::AdapterContext;

/// Discord's limit on a command description.
const DESCRIPTION_LIMIT: usize = 100;
/// The name of the free-text option carrying a command's arguments.
pub const ARGS_OPTION: &str = "args";
/// Registration attempts: a 429 or a transient failure at start-up gets two more chances; commands
/// still work as text if registration fails.
const REGISTER_ATTEMPTS: u32 = 3;
/// Shown when the core has nothing to say to a slash command (e.g. a refused user already told once).
const NOTHING_TO_SAY: &str = "⚠️ This command cannot be used here.";

/// The bulk-overwrite body for `commands` (Discord application command objects, type 1 = chat input).
pub fn command_payload(commands: &[CommandInfo]) -> Value {
    Value::Array(
        commands
            .iter()
            .map(|c| {
                let description: String = c.description.chars().take(DESCRIPTION_LIMIT).collect();
                let mut command = json!({
                    "name": c.name,
                    "type": 1,
                    "description": if description.is_empty() { c.name.to_owned() } else { description },
                });
                if !c.args.is_empty() {
                    let args: String = c.args.chars().take(DESCRIPTION_LIMIT).collect();
                    command["options"] = json!([{
                        "type": 3,
                        "name": ARGS_OPTION,
                        "description": args,
                        "required": c.args.starts_with('<'),
                    }]);
                }
                command
            })
            .collect(),
    )
}

/// Registers the core's commands (see the module doc). Failures are logged, never fatal.
pub(super) async fn register(rest: &Rest, ctx: &AdapterContext, application_id: ApplicationId) {
    let payload = command_payload(Core::commands());
    let guilds: Vec<Option<GuildId>> = {
        let config = ctx.config.borrow();
        if config.discord.command_guilds.is_empty() {
            vec![None]
        } else {
            config
                .discord
                .command_guilds
                .iter()
                .filter_map(|g| g.parse::<u64>().ok())
                .filter(|g| *g != 0)
                .map(|g| Some(GuildId::new(g)))
                .collect()
        }
    };
    for guild in guilds {
        for attempt in 1..=REGISTER_ATTEMPTS {
            match rest
                .register_commands(application_id, guild, &payload)
                .await
            {
                Ok(()) => {
                    tracing::info!(guild = ?guild.map(serenity::all::GuildId::get), "discord: slash commands registered");
                    break;
                }
                Err(RestError::RateLimited(wait)) if attempt < REGISTER_ATTEMPTS => {
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "discord: slash command registration failed; commands still work as text");
                    break;
                }
            }
        }
    }
}

/// The text the core sees for a slash command: `/name args`.
pub fn command_text(command: &CommandInteraction) -> String {
    let mut text = format!("/{}", command.data.name);
    for option in &command.data.options {
        match &option.value {
            CommandDataOptionValue::String(s) => {
                text.push(' ');
                text.push_str(s);
            }
            CommandDataOptionValue::Integer(i) => text = format!("{text} {i}"),
            CommandDataOptionValue::Boolean(b) => text = format!("{text} {b}"),
            _ => {}
        }
    }
    text
}

/// Answers one slash command, in the same conversation a text message in that channel would join (a
/// thread's own conversation in a thread).
pub(super) async fn handle(
    shared: &Arc<Shared>,
    rest: &Arc<Rest>,
    application_id: ApplicationId,
    command: CommandInteraction,
) {
    let config = shared.ctx.config.borrow().clone();
    let user = UserRef::new(Platform::Discord, command.user.id.to_string());
    let Some((chat, chat_kind, scope)) = admit(shared, rest, &config, &command, &user).await else {
        return;
    };
    if shared.ctx.intake.is_cancelled() {
        if let Err(e) = rest
            .respond_interaction(command.id, &command.token, SHUTTING_DOWN_NOTE)
            .await
        {
            tracing::warn!(error = %e, "discord: could not send the restarting note");
        }
        return;
    }
    if let Err(e) = rest.defer_interaction(command.id, &command.token).await {
        tracing::warn!(error = %e, "discord: could not acknowledge a slash command");
        return;
    }
    let display_name = command
        .member
        .as_ref()
        .and_then(|m| m.nick.clone())
        .or_else(|| command.user.global_name.clone())
        .unwrap_or_else(|| command.user.name.clone());
    let inbound = Inbound {
        chat,
        chat_kind,
        sender: Sender { user, display_name },
        text: command_text(&command),
        addressed: true,
        reply_to: None,
        thread: scope.clone().into_thread(),
        attachments: Vec::new(),
    };
    let target = Target::Interaction {
        channel_id: command.channel_id,
        application_id,
        token: command.token.clone(),
    };
    let Some((stream, receipt)) = shared.ctx.core.handle_with_receipt(inbound) else {
        let _ = rest
            .edit_interaction_message(application_id, &command.token, None, NOTHING_TO_SAY)
            .await;
        return;
    };
    let ticket = shared
        .stage
        .order
        .ticket(super::render_key(command.channel_id));
    let settings = super::render_settings(&config);
    let (rest, stage) = (rest.clone(), shared.stage.clone());
    // The answer joins the reply-chain map like an ordinary answer, so replying to it continues this
    // conversation (in DMs there is one conversation per channel and no map).
    let chain_scope = (chat_kind == ChatKind::Group).then_some(scope);
    let recorder = shared.clone();
    shared.tasks.spawn(async move {
        let on_posted = Box::new(move |id: serenity::model::id::MessageId| {
            if let Some(scope) = &chain_scope {
                recorder.record_chain(&id.to_string(), scope);
            }
        });
        let delivery =
            render::render(rest, stage, ticket, target, stream, settings, on_posted).await;
        receipt.report(delivery);
    });
}

/// The chat, its kind and the conversation of a slash command the policy admits; `None` when it is not
/// answered.
async fn admit(
    shared: &Shared,
    rest: &Rest,
    config: &crate::config::Config,
    command: &CommandInteraction,
    user: &UserRef,
) -> Option<(ChatRef, ChatKind, Scope)> {
    if let Some(guild_id) = command.guild_id {
        let kind = shared.channel_kind(rest, command.channel_id).await;
        let guild = guild_id.to_string();
        let channel = command.channel_id.to_string();
        let parent = kind.parent.map(|p| p.to_string());
        let roles: Vec<String> = command
            .member
            .as_ref()
            .map(|m| m.roles.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        let facts = policy::GuildMessageFacts {
            guild_id: &guild,
            channel_id: &channel,
            parent_id: parent.as_deref(),
            roles: &roles,
            // A slash command is addressed to the bot by construction.
            mentions_bot: true,
            replies_to_bot: true,
            is_command: true,
        };
        if policy::admit_guild_message(&config.discord, &facts).is_err() {
            return None;
        }
        // Not a reply and not a mention: a thread's conversation in a thread, else the channel's.
        let scope = policy::guild_scope(policy::ScopeFacts {
            in_thread_channel: kind.is_thread,
            channel_id: &channel,
            message_id: &command.id.to_string(),
            replied_scope: None,
            replies_to_bot: false,
            mentions_bot: false,
        });
        Some((chat_of(command.channel_id, kind), ChatKind::Group, scope))
    } else {
        if !policy::admit_direct_message(
            &config.discord,
            &config.access.allowed_users,
            &config.access.admins,
            &user.to_string(),
        ) {
            return None;
        }
        Some((
            ChatRef::new(Platform::Discord, command.channel_id.to_string()),
            ChatKind::Direct,
            Scope::Chat,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_options_only_for_commands_with_args() {
        let commands = [
            CommandInfo {
                name: "reset",
                args: "",
                description: "Start a new conversation",
            },
            CommandInfo {
                name: "model",
                args: "[name]",
                description: "Show or pick the model",
            },
        ];
        let payload = command_payload(&commands);
        assert_eq!(payload[0]["name"], "reset");
        assert!(payload[0].get("options").is_none());
        assert_eq!(payload[1]["options"][0]["name"], ARGS_OPTION);
        assert_eq!(payload[1]["options"][0]["required"], false);
    }
}
