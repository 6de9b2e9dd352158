//! Telegram message → [`Inbound`]: whether the bot was addressed (private chat, `@mention`, reply to
//! the bot, one of our `/command`s or any `/command@bot`), under the chat's group policy, and the text
//! with the mention removed. Pure: no I/O, so every rule is unit-tested.

use teloxide::types::{Message, UserId};

use crate::config::telegram::GroupPolicy;
use crate::core::Core;
use crate::domain::{ChatKind, ChatRef, Inbound, Platform, Sender, UserRef};
use crate::platforms::mention::splice_out;

/// Who the bot is, as needed to recognise mentions and replies to it.
#[derive(Clone, Debug)]
pub struct BotIdentity {
    /// The bot's user id.
    pub id: UserId,
    /// The bot's username without `@`, lowercased (Telegram usernames are case-insensitive).
    pub username: String,
}

impl BotIdentity {
    /// An identity for `id` with `username` (a leading `@` is dropped).
    pub fn new(id: UserId, username: &str) -> Self {
        Self {
            id,
            username: username.trim_start_matches('@').to_lowercase(),
        }
    }
}

/// Translates `msg` into an [`Inbound`], or `None` when it is not for the bot: neither text nor a photo
/// or document, sent by a bot,
/// a command addressed to another bot, or a group message the policy does not answer. In a group a bare
/// `/command` (no `@bot`) is ours only if the core knows it: other bots' commands are not answered with
/// "unknown command" unless we are mentioned or replied to.
pub fn translate(msg: &Message, me: &BotIdentity, policy: GroupPolicy) -> Option<Inbound> {
    let from = msg.from.as_ref()?;
    if from.is_bot {
        return None;
    }
    // A photo or document without a caption is still a message for the bot (the attachment is the
    // question); the adapter adds the attachments themselves (`files::attachments`).
    let raw = msg
        .text()
        .or_else(|| msg.caption())
        .or_else(|| super::files::has_media(msg).then_some(""))?;
    let direct = msg.chat.is_private();
    let (text, command, foreign) = match strip_command_target(raw, &me.username) {
        CommandTarget::Other => return None,
        CommandTarget::Us(text) => (text, true, false),
        CommandTarget::Bare(name) if is_our_command(name) => (raw.to_owned(), true, false),
        // Possibly another bot's: only an explicit mention or reply makes it ours in a group.
        CommandTarget::Bare(_) => (raw.to_owned(), false, true),
        CommandTarget::NotACommand => (raw.to_owned(), false, false),
    };
    let reply_to_bot = msg
        .reply_to_message()
        .and_then(|r| r.from.as_ref())
        .is_some_and(|u| u.id == me.id);
    let (text, mentioned) = strip_mention(&text, &me.username);
    let addressed = direct
        || command
        || reply_to_bot
        || match policy {
            GroupPolicy::All => !foreign,
            GroupPolicy::Mention => mentioned,
            GroupPolicy::Reply => false,
        };
    if !addressed {
        return None;
    }
    Some(Inbound {
        chat: ChatRef::new(Platform::Telegram, msg.chat.id.0.to_string()),
        chat_kind: if direct {
            ChatKind::Direct
        } else {
            ChatKind::Group
        },
        sender: Sender {
            user: UserRef::new(Platform::Telegram, from.id.0.to_string()),
            display_name: from.full_name(),
        },
        text,
        addressed: true,
        reply_to: msg.reply_to_message().map(|r| r.id.0.to_string()),
        thread: None,
        attachments: Vec::new(),
    })
}

enum CommandTarget<'a> {
    NotACommand,
    /// `/cmd@ourbot`, with the `@botname` suffix removed.
    Us(String),
    /// `/cmd` with no bot named: its name.
    Bare(&'a str),
    /// `/cmd@otherbot`: not ours to answer.
    Other,
}

/// Whether the core answers `/name` (its command list, plus Telegram's `/start`, which the core
/// treats as `/help`).
fn is_our_command(name: &str) -> bool {
    name.eq_ignore_ascii_case("start")
        || Core::commands()
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(name))
}

fn strip_command_target<'a>(text: &'a str, username: &str) -> CommandTarget<'a> {
    let Some(rest) = text.strip_prefix('/') else {
        return CommandTarget::NotACommand;
    };
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let word = &rest[..end];
    if word.is_empty()
        || !word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@')
    {
        // "/etc/hosts?" or a lone "/": a prompt, not a command.
        return CommandTarget::NotACommand;
    }
    match word.split_once('@') {
        Some((name, target)) if target.eq_ignore_ascii_case(username) => {
            CommandTarget::Us(format!("/{name}{}", &rest[end..]))
        }
        Some(_) => CommandTarget::Other,
        None => CommandTarget::Bare(word),
    }
}

/// Removes every `@username` (case-insensitive, as a whole word), tidying the join it leaves
/// ([`splice_out`]: "hey @bot, summarize" → "hey, summarize").
fn strip_mention(text: &str, username: &str) -> (String, bool) {
    let needle = format!("@{username}");
    if username.is_empty() {
        return (text.to_owned(), false);
    }
    let lower = text.to_lowercase();
    // Lowercasing changed byte lengths (rare scripts): fall back to an exact-case search.
    let haystack = if lower.len() == text.len() {
        lower.as_str()
    } else {
        text
    };
    let ranges: Vec<_> = haystack
        .match_indices(&needle)
        .map(|(start, _)| start..start + needle.len())
        .filter(|range| {
            haystack[range.end..]
                .chars()
                .next()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
        })
        .collect();
    (splice_out(text, &ranges), !ranges.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(chat: i64, text: &str, reply_to_from: Option<u64>) -> Message {
        let chat_json = if chat > 0 {
            serde_json::json!({"id": chat, "type": "private", "first_name": "Alice"})
        } else {
            serde_json::json!({"id": chat, "type": "supergroup", "title": "G"})
        };
        let mut v = serde_json::json!({
            "message_id": 10, "date": 1_700_000_000, "chat": chat_json,
            "from": {"id": 7, "is_bot": false, "first_name": "Alice", "last_name": "Liddell"},
            "text": text,
        });
        if let Some(from) = reply_to_from {
            v["reply_to_message"] = serde_json::json!({
                "message_id": 9, "date": 1_700_000_000, "chat": v["chat"].clone(),
                "from": {"id": from, "is_bot": true, "first_name": "B", "username": "sb_bot"},
                "text": "earlier",
            });
        }
        serde_json::from_value(v).unwrap()
    }

    fn me() -> BotIdentity {
        BotIdentity::new(UserId(42), "SB_Bot")
    }

    #[test]
    fn private_messages_are_always_turns() {
        let i = translate(&message(7, "hello", None), &me(), GroupPolicy::Reply).unwrap();
        assert_eq!(i.chat_kind, ChatKind::Direct);
        assert_eq!(i.chat.to_string(), "telegram:7");
        assert_eq!(i.sender.display_name, "Alice Liddell");
        assert_eq!(i.text, "hello");
    }

    #[test]
    fn group_policy_decides() {
        let m = message(-100, "just chatting", None);
        assert!(translate(&m, &me(), GroupPolicy::Mention).is_none());
        assert!(translate(&m, &me(), GroupPolicy::All).is_some());
        let m = message(-100, "@sb_bot, what is 2+2?", None);
        let i = translate(&m, &me(), GroupPolicy::Mention).unwrap();
        assert_eq!(i.text, "what is 2+2?");
        assert_eq!(i.chat_kind, ChatKind::Group);
        // Mid-sentence, the mention goes without leaving " ," behind (issue 12, item 5).
        let m = message(-100, "hey @SB_bot, summarize", None);
        let i = translate(&m, &me(), GroupPolicy::Mention).unwrap();
        assert_eq!(i.text, "hey, summarize");
        assert!(translate(&m, &me(), GroupPolicy::Reply).is_none());
        let m = message(-100, "tell me more", Some(42));
        let i = translate(&m, &me(), GroupPolicy::Reply).unwrap();
        assert_eq!(i.reply_to.as_deref(), Some("9"));
        assert!(translate(&message(-100, "hm", Some(5)), &me(), GroupPolicy::Mention).is_none());
        assert!(translate(
            &message(-100, "@sb_botty hi", None),
            &me(),
            GroupPolicy::Mention
        )
        .is_none());
    }

    #[test]
    fn commands_lose_the_bot_suffix_and_other_bots_commands_are_ignored() {
        let i = translate(
            &message(-100, "/ask@SB_bot why?", None),
            &me(),
            GroupPolicy::Reply,
        )
        .unwrap();
        assert_eq!(i.text, "/ask why?");
        let i = translate(&message(-100, "/reset", None), &me(), GroupPolicy::Reply).unwrap();
        assert_eq!(i.text, "/reset");
        assert!(translate(
            &message(-100, "/ask@other_bot x", None),
            &me(),
            GroupPolicy::All
        )
        .is_none());
        let i = translate(&message(7, "/help@sb_bot", None), &me(), GroupPolicy::All).unwrap();
        assert_eq!(i.text, "/help");
    }

    #[test]
    fn in_groups_a_bare_unknown_command_needs_a_mention_or_a_reply() {
        for policy in [GroupPolicy::Mention, GroupPolicy::Reply, GroupPolicy::All] {
            // Another bot's command: not ours, whatever the policy.
            assert!(
                translate(&message(-100, "/roll 2d6", None), &me(), policy).is_none(),
                "{policy:?}"
            );
            // Ours, bare or addressed.
            for text in ["/usage", "/START", "/ask why?", "/frobnicate@sb_bot"] {
                assert!(
                    translate(&message(-100, text, None), &me(), policy).is_some(),
                    "{text} under {policy:?}"
                );
            }
            // An unknown command in a reply to the bot is addressed to us.
            let i = translate(&message(-100, "/roll", Some(42)), &me(), policy).unwrap();
            assert_eq!(i.text, "/roll");
        }
        let i = translate(
            &message(-100, "/roll @sb_bot", None),
            &me(),
            GroupPolicy::Mention,
        )
        .unwrap();
        assert_eq!(i.text, "/roll");
        // Private chats answer every command, so an unknown one gets the core's "unknown command" help.
        let i = translate(&message(7, "/roll", None), &me(), GroupPolicy::Mention).unwrap();
        assert_eq!(i.text, "/roll");
    }
}
