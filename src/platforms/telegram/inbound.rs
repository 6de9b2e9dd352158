//! Telegram message → [`Inbound`]: whether the bot was addressed (private chat, `@mention`, reply to
//! the bot, `/command` or `/command@bot`), under the chat's group policy, and the text with the mention
//! removed. Pure: no I/O, so every rule is unit-tested.

use teloxide::types::{Message, UserId};

use crate::config::telegram::GroupPolicy;
use crate::domain::{ChatKind, ChatRef, Inbound, Platform, Sender, UserRef};

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

/// Translates `msg` into an [`Inbound`], or `None` when it is not for the bot: not text, sent by a bot,
/// a command addressed to another bot, or a group message the policy does not answer.
pub fn translate(msg: &Message, me: &BotIdentity, policy: GroupPolicy) -> Option<Inbound> {
    let from = msg.from.as_ref()?;
    if from.is_bot {
        return None;
    }
    let raw = msg.text().or_else(|| msg.caption())?;
    let direct = msg.chat.is_private();
    let (text, command) = match strip_command_target(raw, &me.username) {
        CommandTarget::Other => return None,
        CommandTarget::Us(text) => (text, true),
        CommandTarget::NotACommand => (raw.to_owned(), false),
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
            GroupPolicy::All => true,
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
    })
}

enum CommandTarget {
    NotACommand,
    /// A command for us, with any `@botname` suffix removed from it.
    Us(String),
    /// `/cmd@otherbot`: not ours to answer.
    Other,
}

fn strip_command_target(text: &str, username: &str) -> CommandTarget {
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
        None => CommandTarget::Us(text.to_owned()),
    }
}

/// Removes every `@username` (case-insensitive, as a whole word) and tidies the spaces it leaves.
fn strip_mention(text: &str, username: &str) -> (String, bool) {
    let needle = format!("@{username}");
    let lower = text.to_lowercase();
    if username.is_empty() || lower.len() != text.len() {
        // Lowercasing changed byte lengths (rare scripts): fall back to an exact-case search.
        return strip_exact(text, &needle);
    }
    let mut out = String::with_capacity(text.len());
    let mut found = false;
    let mut i = 0;
    while let Some(pos) = lower[i..].find(&needle) {
        let start = i + pos;
        let end = start + needle.len();
        let word_end = lower[end..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        out.push_str(&text[i..start]);
        if word_end {
            found = true;
        } else {
            out.push_str(&text[start..end]);
        }
        i = end;
    }
    out.push_str(&text[i..]);
    (tidy(&out), found)
}

fn strip_exact(text: &str, needle: &str) -> (String, bool) {
    if text.contains(needle) {
        (tidy(&text.replace(needle, "")), true)
    } else {
        (text.to_owned(), false)
    }
}

fn tidy(text: &str) -> String {
    let trimmed = text.trim();
    let mut out = String::with_capacity(trimmed.len());
    let mut prev_space = false;
    for c in trimmed.chars() {
        if c == ' ' {
            if !prev_space {
                out.push(c);
            }
            prev_space = true;
        } else {
            out.push(c);
            prev_space = false;
        }
    }
    // "@bot, what is…" leaves a leading comma.
    out.trim_start_matches([',', ':']).trim_start().to_owned()
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
}
