//! Telegram's side of start-up recovery ([`crate::platforms::recovery`]): a cut reply's messages are
//! edited to the restart note, and a question is answered again through the same path as
//! a new message.

use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use teloxide::types::{ChatId, MessageId};

use super::api::ApiFailure;
use super::{Accepted, Poller};
use crate::config::Config;
use crate::core::{JournalEntry, JournalTicket};
use crate::domain::Platform;
use crate::platforms::recovery::{self, Recoverer};

/// A note that meets flood control is tried this many times (waiting `retry_after` each time): a
/// restart with many cut replies in one chat runs into the per-chat limit, and a note is worth a wait.
const NOTE_ATTEMPTS: u32 = 3;
/// The longest `retry_after` a note waits for; longer, and start-up would stall behind one chat.
const MAX_NOTE_WAIT: Duration = Duration::from_secs(30);

/// Recovers the replies the last run left cut short (see [`recovery::recover`]).
pub(super) async fn run(poller: &Poller, config: &Config) {
    let recoverer = TelegramRecoverer { poller, config };
    recovery::recover(
        poller.core.journal(),
        Platform::Telegram,
        config.core.recovery,
        &recoverer,
    )
    .await;
}

struct TelegramRecoverer<'a> {
    poller: &'a Poller,
    config: &'a Config,
}

/// The chat and message ids of a record, as Telegram numbers them.
fn ids(entry: &JournalEntry) -> Option<(ChatId, MessageId)> {
    let chat = entry.inbound.chat.id.parse().ok()?;
    let message = entry.message.parse().ok()?;
    Some((ChatId(chat), MessageId(message)))
}

impl Recoverer for TelegramRecoverer<'_> {
    fn note<'a>(
        &'a self,
        entry: &'a JournalEntry,
        message: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let (chat, _) = ids(entry).ok_or("a journal record with a foreign id")?;
            let id = MessageId(message.parse().map_err(|_| "a foreign bot message id")?);
            let api = &self.poller.api;
            for _ in 0..NOTE_ATTEMPTS {
                let _slot = api.write_slot().await;
                match api.edit_text(chat, id, text, false).await {
                    Ok(()) | Err(ApiFailure::NotModified) => return Ok(()),
                    Err(ApiFailure::RetryAfter(wait)) if wait <= MAX_NOTE_WAIT => {
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            Err("flood control".to_owned())
        }
        .boxed()
    }

    fn note_question<'a>(
        &'a self,
        entry: &'a JournalEntry,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let (chat, question) = ids(entry).ok_or("a journal record with a foreign id")?;
            let api = &self.poller.api;
            let _slot = api.write_slot().await;
            api.send_text(chat, text, false, Some(question))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn reanswer(&self, entry: JournalEntry, ticket: JournalTicket) {
        let Some((chat, message)) = ids(&entry) else {
            tracing::warn!("telegram: a journal record with a foreign id was not answered again");
            return;
        };
        let accepted = Accepted {
            chat,
            message,
            inbound: entry.inbound,
            ticket,
        };
        self.poller.start(self.config, accepted, None);
    }
}
