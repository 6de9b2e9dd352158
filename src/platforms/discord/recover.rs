//! Discord's side of start-up recovery ([`crate::platforms::recovery`]), run before the gateway
//! connects: a cut reply's messages are edited to the restart note, and a question is answered again
//! as a reply to the user's message (through [`Answering`], the same hand-over as live intake). Journal
//! records name a message as `channel:message` (a thread's messages belong to its parent's chat, so the
//! chat alone does not say where to write).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use serenity::model::id::{ChannelId, MessageId};

use super::rest::{Rest, RestError};
use super::Shared;
use crate::config::Config;
use crate::core::{Core, JournalEntry, JournalTicket, Receipt};
use crate::domain::{Inbound, Platform, ReplyStream};
use crate::platforms::recovery::{self, Recoverer};

/// The longest rate-limit wait a note waits out once; longer, and start-up would stall behind it.
const MAX_NOTE_WAIT: Duration = Duration::from_secs(30);

/// A reply the core is producing for a journaled message.
pub(super) struct Answering {
    pub(super) stream: ReplyStream,
    pub(super) receipt: Receipt,
    pub(super) ticket: JournalTicket,
}

impl Answering {
    /// Hands a journaled message to the core; `None` when the core does not answer it.
    pub(super) fn start(core: &Arc<Core>, inbound: Inbound, ticket: JournalTicket) -> Option<Self> {
        let (stream, receipt) = core.handle_journaled(inbound, ticket.clone())?;
        Some(Self {
            stream,
            receipt,
            ticket,
        })
    }
}

/// How the journal names message `message` of `channel`.
pub(super) fn journal_id(channel: ChannelId, message: MessageId) -> String {
    format!("{channel}:{message}")
}

/// The channel and message a journal id names.
fn parse_id(id: &str) -> Option<(ChannelId, MessageId)> {
    let (channel, message) = id.split_once(':')?;
    let channel = channel.parse::<u64>().ok().filter(|&c| c != 0)?;
    let message = message.parse::<u64>().ok().filter(|&m| m != 0)?;
    Some((ChannelId::new(channel), MessageId::new(message)))
}

/// Recovers the replies the last run left cut short (see [`recovery::recover`]).
pub(super) async fn run(shared: &Arc<Shared>, rest: &Arc<Rest>, config: &Config) {
    let recoverer = DiscordRecoverer {
        shared,
        rest,
        config,
    };
    recovery::recover(
        shared.ctx.core.journal(),
        Platform::Discord,
        config.core.recovery,
        &recoverer,
    )
    .await;
}

struct DiscordRecoverer<'a> {
    shared: &'a Arc<Shared>,
    rest: &'a Arc<Rest>,
    config: &'a Config,
}

impl Recoverer for DiscordRecoverer<'_> {
    fn note<'a>(
        &'a self,
        entry: &'a JournalEntry,
        message: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let (channel, _) = parse_id(&entry.message).ok_or("a foreign journal id")?;
            let id = message
                .parse::<u64>()
                .ok()
                .filter(|&m| m != 0)
                .map(MessageId::new)
                .ok_or("a foreign bot message id")?;
            match self.rest.edit_message(channel, id, text).await {
                Err(RestError::RateLimited(wait)) if wait <= MAX_NOTE_WAIT => {
                    tokio::time::sleep(wait).await;
                    self.rest.edit_message(channel, id, text).await
                }
                result => result,
            }
            .map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn note_question<'a>(
        &'a self,
        entry: &'a JournalEntry,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let (channel, question) = parse_id(&entry.message).ok_or("a foreign journal id")?;
            self.rest
                .create_message(channel, text, Some(question))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn reanswer(&self, entry: JournalEntry, ticket: JournalTicket) {
        let Some((channel, message)) = parse_id(&entry.message) else {
            tracing::warn!("discord: a journal record with a foreign id was not answered again");
            return;
        };
        let Some(reply) = Answering::start(&self.shared.ctx.core, entry.inbound, ticket) else {
            return;
        };
        self.shared.render_reply(
            channel,
            Some(message),
            self.rest.clone(),
            self.config,
            reply,
            None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_ids_name_the_channel_and_the_message() {
        let id = journal_id(ChannelId::new(12), MessageId::new(34));
        assert_eq!(id, "12:34");
        assert_eq!(
            parse_id(&id),
            Some((ChannelId::new(12), MessageId::new(34)))
        );
        assert_eq!(parse_id("12"), None);
        assert_eq!(parse_id("0:1"), None);
    }
}
