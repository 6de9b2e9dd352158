//! The commands every platform offers (`/help`, `/reset`, `/model`, `/system`, `/usage`, `/status`,
//! `/cancel`, `/ask`): parsing and answers. Per-chat settings set by commands live in the store.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{failed, reply_text, usage, Access, Core};
use crate::config::{Config, MAX_SYSTEM_PROMPT_CHARS};
use crate::domain::{
    ChatKind, ChatRef, Completion, ConversationKey, FailureKind, Inbound, ReplyEvent, ReplyStream,
    UserFacingError,
};
use crate::store::{get_json, put_json, Store, StoreError};
use crate::text::count;

/// A command every platform offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandInfo {
    /// The name without the slash (`reset`).
    pub name: &'static str,
    /// Argument synopsis (`[name]`), empty if none.
    pub args: &'static str,
    /// One line for `/help`, `setMyCommands` and Discord slash commands.
    pub description: &'static str,
}

/// The commands, in the order `/help` lists them.
pub const COMMANDS: &[CommandInfo] = &[
    CommandInfo {
        name: "help",
        args: "",
        description: "What I can do and how to talk to me",
    },
    CommandInfo {
        name: "ask",
        args: "<question>",
        description: "Ask a question (in groups, without mentioning me)",
    },
    CommandInfo {
        name: "reset",
        args: "",
        description: "Start a new conversation; I forget this one",
    },
    CommandInfo {
        name: "model",
        args: "[name|auto]",
        description: "Show or choose the model for this chat",
    },
    CommandInfo {
        name: "long",
        args: "[on|off]",
        description: "Allow long answers in this chat (they are capped at chat length otherwise)",
    },
    CommandInfo {
        name: "system",
        args: "[prompt|reset]",
        description: "Show or set this chat's system prompt",
    },
    CommandInfo {
        name: "usage",
        args: "",
        description: "Your and this chat's usage today, and free quota left",
    },
    CommandInfo {
        name: "status",
        args: "",
        description: "Whether I'm healthy and which tiers are answering",
    },
    CommandInfo {
        name: "cancel",
        args: "",
        description: "Stop the reply in progress",
    },
];

/// Per-chat settings chosen with commands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatSettings {
    /// `/system`: this chat's system prompt.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// `/model`: this chat's model.
    #[serde(default)]
    pub model: Option<String>,
    /// `/long on`: answers here may run to `core.long_max_tokens` instead of `core.max_tokens`.
    #[serde(default)]
    pub long: bool,
}

const SETTINGS_NS: &str = "core.chat";
/// The reply when `/reset` could not reach the store.
const COMMAND_FAILED_MESSAGE: &str = "Sorry — I couldn't do that just now. Please try again.";

/// This chat's settings.
pub(super) fn chat_settings(store: &dyn Store, chat: &ChatRef) -> Result<ChatSettings, StoreError> {
    Ok(get_json(store, SETTINGS_NS, &chat.to_string())?.unwrap_or_default())
}

fn save_settings(
    store: &dyn Store,
    chat: &ChatRef,
    settings: &ChatSettings,
) -> Result<(), StoreError> {
    put_json(store, SETTINGS_NS, &chat.to_string(), settings)
}

/// A message parsed as a command or a prompt.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parsed<'a> {
    /// A known command (by its entry) with its arguments.
    Command(&'static CommandInfo, &'a str),
    /// `/something` we do not know.
    Unknown(&'a str),
    /// Text for the model (`/ask`'s argument, or a plain message).
    Prompt(&'a str),
}

/// Parses `text`: `/name[@bot] args` is a command; `/ask q` and plain text are prompts.
pub(super) fn parse(text: &str) -> Parsed<'_> {
    let Some(rest) = text.strip_prefix('/') else {
        return Parsed::Prompt(text);
    };
    let (word, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let name = word.split('@').next().unwrap_or(word);
    let args = args.trim();
    match name.to_ascii_lowercase().as_str() {
        "ask" => Parsed::Prompt(args),
        "start" => Parsed::Command(&COMMANDS[0], ""),
        lower => match COMMANDS.iter().find(|c| c.name == lower) {
            Some(command) => Parsed::Command(command, args),
            // A lone "/" or a path-like message ("/etc/hosts?") is a prompt, not a command.
            None if name.is_empty()
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                Parsed::Prompt(text)
            }
            None => Parsed::Unknown(name),
        },
    }
}

impl Core {
    pub(super) fn run_command(
        self: &Arc<Self>,
        config: &Config,
        inbound: &Inbound,
        key: &ConversationKey,
        command: &CommandInfo,
        args: &str,
    ) -> ReplyStream {
        let text = match command.name {
            "help" => help_text(),
            "reset" => return self.reset_in_order(key),
            "model" => return self.model_command(config, inbound, args),
            "long" => return self.long_command(config, inbound, args),
            "system" => return self.system_command(config, inbound, args),
            "usage" => self.usage_text(inbound, detail(config, inbound)),
            "status" => self.status_text(detail(config, inbound)),
            "cancel" => match self.cancel_queued(key) {
                0 => "Nothing to cancel.".to_owned(),
                1 => "Stopping the reply in progress.".to_owned(),
                n => format!("Stopping {n} replies: the one in progress and those waiting."),
            },
            other => format!("/{other} is not available here."),
        };
        reply_text(text)
    }

    /// `/reset`: stops this conversation's replies (answering or waiting), then starts the new epoch in
    /// the conversation's order — after those turns have wound up — so nothing asked before the reset
    /// is answered in, or stored into, the new conversation.
    fn reset_in_order(self: &Arc<Self>, key: &ConversationKey) -> ReplyStream {
        self.cancel_queued(key);
        let (mut slot, _) = self.take_slot(key, false);
        let previous = slot.previous.take();
        // Two events: the confirmation and `Finished`, or one `Failed`.
        let (tx, rx) = mpsc::channel(2);
        let core = Arc::clone(self);
        let key = key.clone();
        self.spawn_job(key.clone(), slot, tx.clone(), async move {
            super::queue::Slot::wait_previous(previous).await;
            let events = match core.store.reset_conversation(&key, core.now_ms()) {
                Ok(_) => vec![
                    ReplyEvent::Delta(
                        "Started a new conversation — I've forgotten the earlier messages."
                            .to_owned(),
                    ),
                    ReplyEvent::Finished(Completion::default()),
                ],
                Err(e) => {
                    tracing::error!(error = %e, "store failure in /reset");
                    vec![ReplyEvent::Failed(UserFacingError::new(
                        FailureKind::Internal,
                        COMMAND_FAILED_MESSAGE,
                    ))]
                }
            };
            for event in events {
                let _ = tx.send(event).await;
            }
        });
        super::tokio_stream_from(rx)
    }

    fn model_command(&self, config: &Config, inbound: &Inbound, args: &str) -> ReplyStream {
        let models = self.router.models();
        let mut settings = match self.settings_of(&inbound.chat) {
            Ok(s) => s,
            Err(unreadable) => return unreadable,
        };
        if args.is_empty() {
            let mut text = match &settings.model {
                Some(m) => format!("This chat uses **{m}**.\n"),
                None => {
                    "This chat uses automatic routing: free models first, then the paid tier.\n"
                        .to_owned()
                }
            };
            text.push_str("Available models:\n");
            for m in &models {
                let _ = writeln!(text, "• {} ({} tier, {})", m.name, m.tier, m.provider);
            }
            text.push_str("Choose one with /model <name>, or /model auto.");
            return reply_text(text);
        }
        if config.access.model_admin_only && !Access::is_admin(&config.access, &inbound.sender.user)
        {
            return failed(
                FailureKind::Refused,
                "Only the bot's admins can change the model here.",
            );
        }
        let reply = if args.eq_ignore_ascii_case("auto") {
            settings.model = None;
            "Back to automatic routing: free models first, then the paid tier.".to_owned()
        } else if let Some(model) = models.iter().find(|m| m.name == args) {
            settings.model = Some(model.name.clone());
            format!(
                "This chat now uses **{}** ({} tier).",
                model.name, model.tier
            )
        } else {
            let names: Vec<_> = models.iter().map(|m| m.name.as_str()).collect();
            return reply_text(format!(
                "I don't know the model `{args}`. Available: {}.",
                names.join(", ")
            ));
        };
        self.save_then_reply(&inbound.chat, &settings, reply)
    }

    /// This chat's settings, or the friendly error to answer when they cannot be read.
    fn settings_of(&self, chat: &ChatRef) -> Result<ChatSettings, ReplyStream> {
        chat_settings(self.store.as_ref(), chat).map_err(|_| {
            failed(
                FailureKind::Internal,
                "Sorry — I couldn't read this chat's settings. Please try again.",
            )
        })
    }

    /// Saves this chat's settings and answers `reply`, or a friendly error when they cannot be saved.
    fn save_then_reply(
        &self,
        chat: &ChatRef,
        settings: &ChatSettings,
        reply: String,
    ) -> ReplyStream {
        match save_settings(self.store.as_ref(), chat, settings) {
            Ok(()) => reply_text(reply),
            Err(_) => failed(
                FailureKind::Internal,
                "Sorry — I couldn't save that. Please try again.",
            ),
        }
    }

    /// `/long [on|off]`: shows or switches this chat's answer cap between `core.max_tokens` and
    /// `core.long_max_tokens`. Changing it follows the same rule as `/model` (`model_admin_only`): long
    /// answers cost more tokens.
    fn long_command(&self, config: &Config, inbound: &Inbound, args: &str) -> ReplyStream {
        let mut settings = match self.settings_of(&inbound.chat) {
            Ok(s) => s,
            Err(unreadable) => return unreadable,
        };
        let core = &config.core;
        let long = match args.to_ascii_lowercase().as_str() {
            "" => {
                return reply_text(if settings.long {
                    format!("Long answers are on here (up to {} tokens). /long off for chat-sized ones.", core.long_max_tokens)
                } else {
                    format!(
                        "Answers here are chat-sized (up to {} tokens). /long on allows up to {}.",
                        core.max_tokens, core.long_max_tokens
                    )
                })
            }
            "on" => true,
            "off" => false,
            _ => return reply_text("Use /long on or /long off.".to_owned()),
        };
        if config.access.model_admin_only && !Access::is_admin(&config.access, &inbound.sender.user)
        {
            return failed(
                FailureKind::Refused,
                "Only the bot's admins can change the answer length here.",
            );
        }
        settings.long = long;
        let reply = if long {
            format!(
                "Long answers are on: up to {} tokens each.",
                core.long_max_tokens
            )
        } else {
            format!(
                "Back to chat-sized answers: up to {} tokens each.",
                core.max_tokens
            )
        };
        self.save_then_reply(&inbound.chat, &settings, reply)
    }

    fn system_command(&self, config: &Config, inbound: &Inbound, args: &str) -> ReplyStream {
        let mut settings = match self.settings_of(&inbound.chat) {
            Ok(s) => s,
            Err(unreadable) => return unreadable,
        };
        if args.is_empty() {
            let (prompt, whose) = match &settings.system_prompt {
                Some(p) => (p.as_str(), "this chat's own"),
                None => (config.core.system_prompt.as_str(), "the default"),
            };
            return reply_text(format!("The system prompt here is {whose}:\n\n{prompt}"));
        }
        if !Access::is_admin(&config.access, &inbound.sender.user) {
            return failed(
                FailureKind::Refused,
                "Only the bot's admins can change the system prompt.",
            );
        }
        let reply = if args.eq_ignore_ascii_case("reset") {
            settings.system_prompt = None;
            "This chat uses the default system prompt again.".to_owned()
        } else if args.chars().count() > MAX_SYSTEM_PROMPT_CHARS {
            return reply_text(format!("That system prompt is too long (the limit is {MAX_SYSTEM_PROMPT_CHARS} characters)."));
        } else {
            settings.system_prompt = Some(args.to_owned());
            "Saved. New replies in this chat follow that system prompt.".to_owned()
        };
        self.save_then_reply(&inbound.chat, &settings, reply)
    }

    fn usage_text(&self, inbound: &Inbound, detail: Detail) -> String {
        let mine = usage::user_today(self, &inbound.sender.user);
        let chat = usage::chat_today(self, &inbound.chat);
        let mut text = format!(
            "Today (UTC):\n• you: {} ({} paid), {}\n• this chat: {}, {}\n",
            count(mine.requests, "request"),
            mine.paid_requests,
            count(mine.prompt_tokens + mine.completion_tokens, "token"),
            count(chat.requests, "request"),
            count(chat.prompt_tokens + chat.completion_tokens, "token"),
        );
        let cap = self.config().access.user_paid_requests_per_day;
        if cap > 0 && !super::is_local(inbound.sender.user.platform) {
            let _ = writeln!(
                text,
                "• your paid-tier allowance: {} of {cap} left",
                u64::from(cap).saturating_sub(mine.paid_requests)
            );
        }
        self.push_api_line(&mut text, detail);
        text.push_str(&tier_lines(&self.router.status(), detail));
        text
    }

    /// For operators: the local API's use today, when there was any.
    fn push_api_line(&self, text: &mut String, detail: Detail) {
        let api = usage::api_today(self);
        if detail == Detail::Operator && api.requests > 0 {
            let _ = writeln!(
                text,
                "• local API: {}, {}",
                count(api.requests, "request"),
                count(api.prompt_tokens + api.completion_tokens, "token"),
            );
        }
    }

    fn status_text(&self, detail: Detail) -> String {
        let up = (self.now_ms() - self.started_ms).max(0) / 1000;
        let mut text = format!(
            "switchboard {} — up {}h {:02}m; {} repl{} in progress.\n",
            env!("CARGO_PKG_VERSION"),
            up / 3600,
            (up % 3600) / 60,
            self.in_flight(),
            if self.in_flight() == 1 { "y" } else { "ies" },
        );
        self.push_api_line(&mut text, detail);
        text.push_str(&tier_lines(&self.router.status(), detail));
        text
    }
}

/// How much of the router's state a `/usage` or `/status` reply may show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Detail {
    /// Everything: accounts (key names, fingerprints), quotas, spend. For admins and direct chats.
    Operator,
    /// Which tiers are answering, nothing about keys or money: what every member of a group may see.
    Member,
}

/// Operators see every account; in a group, a non-admin sees only their own and the chat's usage and
/// whether each tier answers — key names, fingerprints and spend are the operator's business.
fn detail(config: &Config, inbound: &Inbound) -> Detail {
    if inbound.chat_kind == ChatKind::Direct
        || Access::is_admin(&config.access, &inbound.sender.user)
    {
        Detail::Operator
    } else {
        Detail::Member
    }
}

fn tier_lines(status: &crate::router::RouterStatus, detail: Detail) -> String {
    let mut text = String::new();
    if detail == Detail::Member {
        for tier in &status.tiers {
            let state = if tier.enabled { "answering" } else { "off" };
            let _ = writeln!(text, "\n**{} tier**: {state}", tier.name);
        }
        return text;
    }
    for tier in &status.tiers {
        let _ = write!(
            text,
            "\n**{} tier**{}",
            tier.name,
            if tier.enabled { "" } else { " (off)" }
        );
        if tier.requests_today > 0 || tier.daily_cap.is_some() {
            let cap = tier
                .daily_cap
                .map(|c| format!(" of {c}"))
                .unwrap_or_default();
            let _ = write!(
                text,
                " — {} today{cap}",
                count(tier.requests_today, "request")
            );
        }
        if let Some(cost) = tier.estimated_cost_usd {
            let _ = write!(text, ", about ${cost:.2}");
        }
        text.push('\n');
        for account in &tier.accounts {
            let left = match (account.requests_left_today, account.daily_limit) {
                (Some(left), Some(limit)) => {
                    format!("{left}/{} left", count(limit, "free request"))
                }
                (Some(left), None) => format!("{} left", count(left, "request")),
                _ => "quota unknown".to_owned(),
            };
            let _ = writeln!(
                text,
                "• {} {}: {left}, {}",
                account.provider, account.account, account.state
            );
        }
    }
    text
}

fn help_text() -> String {
    let mut text = "I'm switchboard: I answer with large language models — free models first, paid ones only when \
                    the free quota is used up. Talk to me directly; in groups, mention me or reply to me.\n\nCommands:\n"
        .to_owned();
    for c in COMMANDS {
        let args = if c.args.is_empty() {
            String::new()
        } else {
            format!(" {}", c.args)
        };
        let _ = writeln!(text, "/{}{args} — {}", c.name, c.description);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_prompts_and_bot_suffixes() {
        assert_eq!(parse("hello"), Parsed::Prompt("hello"));
        assert!(
            matches!(parse("/reset@switchboard_bot"), Parsed::Command(c, "") if c.name == "reset")
        );
        assert!(
            matches!(parse("/model  gpt-oss:120b "), Parsed::Command(c, "gpt-oss:120b") if c.name == "model")
        );
        assert_eq!(
            parse("/ask why is the sky blue?"),
            Parsed::Prompt("why is the sky blue?")
        );
        assert!(matches!(parse("/start"), Parsed::Command(c, _) if c.name == "help"));
        assert_eq!(parse("/frobnicate"), Parsed::Unknown("frobnicate"));
        assert_eq!(
            parse("/etc/hosts is what?"),
            Parsed::Prompt("/etc/hosts is what?")
        );
    }
}
