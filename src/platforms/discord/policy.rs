//! Who the Discord adapter answers and in which conversation: allow lists, the per guild/channel
//! policy (mention / reply / all), mention stripping and reply-chain scoping. Pure functions, so every
//! rule is unit-tested without a gateway.

use crate::config::discord::{DiscordConfig, GroupPolicy};

/// What the adapter knows about one guild message before deciding.
#[derive(Clone, Debug, Default)]
pub struct GuildMessageFacts<'a> {
    /// The guild id.
    pub guild_id: &'a str,
    /// The channel (or thread) id.
    pub channel_id: &'a str,
    /// The parent channel when the channel is a thread (policies set on the parent apply).
    pub parent_id: Option<&'a str>,
    /// The sender's role ids.
    pub roles: &'a [String],
    /// Whether the message mentions the bot.
    pub mentions_bot: bool,
    /// Whether the message replies to one of the bot's messages.
    pub replies_to_bot: bool,
    /// Whether the text is one of the core's commands (`/ask …`): addressed like a mention.
    pub is_command: bool,
}

/// Why a guild message is not answered (for debug logs only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The guild is not in `discord.allowed_guilds`.
    GuildNotAllowed,
    /// The sender has none of `discord.allowed_roles`.
    RoleNotAllowed,
    /// The policy in force does not consider the message addressed to the bot.
    NotAddressed,
}

/// The policy in force for a channel: the channel's own, else its parent's (threads), else the guild's,
/// else the default `guild_policy`.
pub fn policy_for(config: &DiscordConfig, facts: &GuildMessageFacts<'_>) -> GroupPolicy {
    [
        Some(facts.channel_id),
        facts.parent_id,
        Some(facts.guild_id),
    ]
    .into_iter()
    .flatten()
    .find_map(|id| config.policies.get(id).copied())
    .unwrap_or(config.guild_policy)
}

/// Decides whether a guild message is answered. `Ok(())`: hand it to the core.
pub fn admit_guild_message(
    config: &DiscordConfig,
    facts: &GuildMessageFacts<'_>,
) -> Result<(), Skip> {
    if !config.allowed_guilds.is_empty()
        && !config.allowed_guilds.iter().any(|g| g == facts.guild_id)
    {
        return Err(Skip::GuildNotAllowed);
    }
    if !config.allowed_roles.is_empty()
        && !facts
            .roles
            .iter()
            .any(|r| config.allowed_roles.iter().any(|a| a == r))
    {
        return Err(Skip::RoleNotAllowed);
    }
    let addressed = match policy_for(config, facts) {
        GroupPolicy::Mention => facts.mentions_bot || facts.replies_to_bot || facts.is_command,
        GroupPolicy::Reply => facts.replies_to_bot || facts.is_command,
        GroupPolicy::All => true,
    };
    if addressed {
        Ok(())
    } else {
        Err(Skip::NotAddressed)
    }
}

/// Whether a DM from `user` (`discord:<id>`) may pass the role allow list: roles do not exist in DMs,
/// so with `allowed_roles` set only users named in `[access]` (allowed users or admins) are let through;
/// otherwise a role restriction could be bypassed by writing to the bot directly.
pub fn admit_direct_message(
    config: &DiscordConfig,
    allowed_users: &[String],
    admins: &[String],
    user: &str,
) -> bool {
    config.allowed_roles.is_empty()
        || allowed_users.iter().any(|u| u == user)
        || admins.iter().any(|u| u == user)
}

/// Whether `text` starts with one of `commands` (`/name` or `/name args`), the form the core parses.
pub fn is_command(text: &str, commands: &[crate::core::CommandInfo]) -> bool {
    let Some(rest) = text.trim_start().strip_prefix('/') else {
        return false;
    };
    let name = rest.split_whitespace().next().unwrap_or("");
    commands.iter().any(|c| c.name.eq_ignore_ascii_case(name))
}

/// Whether `content` mentions the bot (`<@id>` or the legacy nickname form `<@!id>`).
pub fn mentions(content: &str, bot_id: &str) -> bool {
    content.contains(&format!("<@{bot_id}>")) || content.contains(&format!("<@!{bot_id}>"))
}

/// The message text with every mention of the bot removed and the join tidied, so `@bot /reset`
/// reaches the core as `/reset` and "hey @bot, summarize" as "hey, summarize".
pub fn strip_bot_mention(content: &str, bot_id: &str) -> String {
    let mut ranges: Vec<_> = [format!("<@!{bot_id}>"), format!("<@{bot_id}>")]
        .iter()
        .flat_map(|m| {
            content
                .match_indices(m.as_str())
                .map(|(start, m)| start..start + m.len())
                .collect::<Vec<_>>()
        })
        .collect();
    ranges.sort_by_key(|r| r.start);
    crate::platforms::mention::splice_out(content, &ranges)
}

/// The most characters of a quoted message given to the model: enough for a paragraph or a short code
/// snippet to be explained, small enough that replying to a wall of text does not crowd out the
/// conversation (the whole prompt is also bounded by `core.max_input_chars`).
pub const MAX_QUOTE_CHARS: usize = 1000;

/// The text for the model when a person replies to someone else's message: that message (its author
/// and at most [`MAX_QUOTE_CHARS`] of its text) first, then what they asked — "what does this mean?"
/// means nothing without it. Commands and empty quotes are left alone.
pub fn with_quote(text: &str, quoted: Option<(&str, &str)>) -> String {
    let Some((author, quote)) = quoted else {
        return text.to_owned();
    };
    let quote = quote.trim();
    if quote.is_empty() || text.trim_start().starts_with('/') {
        return text.to_owned();
    }
    let mut shown: String = quote.chars().take(MAX_QUOTE_CHARS).collect();
    if shown.len() < quote.len() {
        shown.push('…');
    }
    format!("(in reply to {author}, who wrote: \"{shown}\")\n{text}")
}

/// Where a guild message belongs, given what the adapter knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The chat's default scope (`Inbound.thread = None`).
    Chat,
    /// A named conversation within the chat (`Inbound.thread = Some(..)`).
    Thread(String),
}

impl Scope {
    /// The value for [`crate::domain::Inbound::thread`].
    pub fn into_thread(self) -> Option<String> {
        match self {
            Self::Chat => None,
            Self::Thread(t) => Some(t),
        }
    }
}

/// What [`guild_scope`] needs to know about one guild message (named, so no call passes bare booleans).
#[derive(Clone, Debug)]
pub struct ScopeFacts<'a> {
    /// The message was posted in a thread channel.
    pub in_thread_channel: bool,
    /// The channel (or thread) id.
    pub channel_id: &'a str,
    /// The message's own id, which names a conversation it starts.
    pub message_id: &'a str,
    /// The conversation of the message this one replies to, when we know it.
    pub replied_scope: Option<Scope>,
    /// The message replies to one of the bot's messages.
    pub replies_to_bot: bool,
    /// The message mentions the bot.
    pub mentions_bot: bool,
}

/// Picks the conversation of a guild message:
/// - in a thread channel, the thread is one conversation;
/// - a reply to a message whose conversation is known continues that conversation, so two people can
///   hold separate conversations in one channel;
/// - a fresh mention (or a reply to a message we never saw) starts a new conversation named after the
///   message itself;
/// - anything else (policy `all`, unaddressed by mention) shares the channel's conversation.
pub fn guild_scope(facts: ScopeFacts<'_>) -> Scope {
    if facts.in_thread_channel {
        return Scope::Thread(format!("thread-{}", facts.channel_id));
    }
    if let Some(scope) = facts.replied_scope {
        return scope;
    }
    if facts.mentions_bot || facts.replies_to_bot {
        return Scope::Thread(format!("chain-{}", facts.message_id));
    }
    Scope::Chat
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(mentions_bot: bool, replies_to_bot: bool) -> GuildMessageFacts<'a> {
        GuildMessageFacts {
            guild_id: "g1",
            channel_id: "c1",
            parent_id: None,
            roles: &[],
            mentions_bot,
            replies_to_bot,
            is_command: false,
        }
    }

    #[test]
    fn mention_policy_answers_mentions_and_replies_only() {
        let config = DiscordConfig::default();
        assert_eq!(
            admit_guild_message(&config, &facts(false, false)),
            Err(Skip::NotAddressed)
        );
        assert_eq!(admit_guild_message(&config, &facts(true, false)), Ok(()));
        assert_eq!(admit_guild_message(&config, &facts(false, true)), Ok(()));
    }

    #[test]
    fn channel_policy_beats_guild_policy_beats_default() {
        let mut config = DiscordConfig::default();
        config.policies.insert("g1".into(), GroupPolicy::All);
        assert_eq!(admit_guild_message(&config, &facts(false, false)), Ok(()));
        config.policies.insert("c1".into(), GroupPolicy::Reply);
        assert_eq!(
            admit_guild_message(&config, &facts(true, false)),
            Err(Skip::NotAddressed)
        );
        assert_eq!(admit_guild_message(&config, &facts(false, true)), Ok(()));
        let mut thread = facts(false, false);
        thread.channel_id = "t9";
        thread.parent_id = Some("c1");
        assert_eq!(policy_for(&config, &thread), GroupPolicy::Reply);
    }

    #[test]
    fn guild_and_role_allow_lists() {
        let mut config = DiscordConfig {
            allowed_guilds: vec!["g2".into()],
            ..DiscordConfig::default()
        };
        assert_eq!(
            admit_guild_message(&config, &facts(true, false)),
            Err(Skip::GuildNotAllowed)
        );
        config.allowed_guilds = vec!["g1".into()];
        config.allowed_roles = vec!["r1".into()];
        assert_eq!(
            admit_guild_message(&config, &facts(true, false)),
            Err(Skip::RoleNotAllowed)
        );
        let roles = vec!["r0".to_string(), "r1".to_string()];
        let mut f = facts(true, false);
        f.roles = &roles;
        assert_eq!(admit_guild_message(&config, &f), Ok(()));
        assert!(!admit_direct_message(&config, &[], &[], "discord:5"));
        assert!(admit_direct_message(
            &config,
            &[],
            &["discord:5".into()],
            "discord:5"
        ));
    }

    #[test]
    fn known_commands_count_as_addressed() {
        let commands = crate::core::Core::commands();
        assert!(is_command("/ask what is rust", commands));
        assert!(is_command("/RESET", commands));
        assert!(!is_command("/etc/hosts", commands));
        assert!(!is_command("ask", commands));
        let mut f = facts(false, false);
        f.is_command = true;
        assert_eq!(admit_guild_message(&DiscordConfig::default(), &f), Ok(()));
    }

    #[test]
    fn mention_is_detected_and_stripped() {
        assert!(mentions("hey <@42> there", "42"));
        assert!(mentions("<@!42> hi", "42"));
        assert!(!mentions("<@420> hi", "42"));
        assert_eq!(strip_bot_mention("<@42> /reset", "42"), "/reset");
        assert_eq!(strip_bot_mention("hi <@!42>  ", "42"), "hi");
        assert_eq!(strip_bot_mention("<@7> and <@42>", "42"), "<@7> and");
        assert_eq!(
            strip_bot_mention("hey <@42>, summarize", "42"),
            "hey, summarize"
        );
    }

    #[test]
    fn a_quoted_message_comes_first_bounded_and_commands_are_left_alone() {
        assert_eq!(
            with_quote("what does this mean?", Some(("Bob", "ship it"))),
            "(in reply to Bob, who wrote: \"ship it\")\nwhat does this mean?"
        );
        let long = "x".repeat(MAX_QUOTE_CHARS + 50);
        let text = with_quote("explain", Some(("Bob", &long)));
        assert!(text.contains(&format!("{}…\"", "x".repeat(MAX_QUOTE_CHARS))));
        assert!(!text.contains(&"x".repeat(MAX_QUOTE_CHARS + 1)));
        assert_eq!(with_quote("/reset", Some(("Bob", "hi"))), "/reset");
        assert_eq!(with_quote("hm", Some(("Bob", "  "))), "hm");
        assert_eq!(with_quote("hm", None), "hm");
    }

    #[test]
    fn scopes_follow_threads_chains_and_fresh_mentions() {
        assert_eq!(
            guild_scope(ScopeFacts {
                in_thread_channel: true,
                channel_id: "t1",
                message_id: "m1",
                replied_scope: None,
                replies_to_bot: false,
                mentions_bot: true,
            }),
            Scope::Thread("thread-t1".into())
        );
        let known = Scope::Thread("chain-m0".into());
        assert_eq!(
            guild_scope(ScopeFacts {
                in_thread_channel: false,
                channel_id: "c1",
                message_id: "m2",
                replied_scope: Some(known.clone()),
                replies_to_bot: true,
                mentions_bot: true,
            }),
            known
        );
        assert_eq!(
            guild_scope(ScopeFacts {
                in_thread_channel: false,
                channel_id: "c1",
                message_id: "m3",
                replied_scope: None,
                replies_to_bot: false,
                mentions_bot: true,
            }),
            Scope::Thread("chain-m3".into())
        );
        assert_eq!(
            guild_scope(ScopeFacts {
                in_thread_channel: false,
                channel_id: "c1",
                message_id: "m4",
                replied_scope: None,
                replies_to_bot: false,
                mentions_bot: false,
            }),
            Scope::Chat
        );
    }
}
