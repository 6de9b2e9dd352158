//! Start-up recovery of replies a crash (`kill -9`, OOM, power loss) cut short, from the reply journal
//! ([`crate::core::journal`]), run by each adapter before it takes new messages. Every record that is
//! not delivered is dealt with exactly once:
//!
//! - never answered (no bot message sent): answered now — nothing was shown, so nothing is shown twice;
//! - partly shown: its last bot message is replaced by a note that a restart cut it short, and (with
//!   `core.recovery = "reanswer"`, the default) the question is answered again as a fresh reply;
//! - already `recovering` (a crash during an earlier recovery): only the note, on whatever it sent —
//!   recovery never starts a second answer to a question it already answered again.
//!
//! The records are marked `recovering` and flushed before any note or answer goes out. The partial
//! message is replaced rather than appended to: the journal records a message's id when it is created,
//! never its text on each edit (that would be a write per edit), so the text shown is not known here.
//! The platform's side (edit a message, start a reply) is a small [`Recoverer`].

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::config::Recovery;
use crate::core::{Journal, JournalEntry, JournalTicket, ReplyState};
use crate::domain::Platform;

/// Replaces a partial reply whose question is answered again below it.
pub const NOTE_ANSWERING_AGAIN: &str =
    "✂️ This answer was cut short by a restart; answering again below.";
/// Replaces a partial reply that is not answered again (`core.recovery = "note"`, or the second
/// recovery of the same question).
pub const NOTE_CUT_SHORT: &str =
    "✂️ This answer was cut short by a restart. Please ask again if you still need it.";

/// What recovery does with one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The bot message to replace, and with which note.
    pub note: Option<(String, &'static str)>,
    /// Whether the question is answered again.
    pub reanswer: bool,
}

/// The plan for `entry` under `mode` (pure: the exactly-once rules in one place).
pub fn plan(entry: &JournalEntry, mode: Recovery) -> Plan {
    let last = entry.bot_messages.last().cloned();
    match (entry.state, last) {
        (ReplyState::Delivered, _) => Plan {
            note: None,
            reanswer: false,
        },
        // Nothing was shown: answering now cannot show anything twice.
        (_, None) => Plan {
            note: None,
            reanswer: true,
        },
        (ReplyState::Recovering, Some(id)) => Plan {
            note: Some((id, NOTE_CUT_SHORT)),
            reanswer: false,
        },
        (_, Some(id)) => match mode {
            Recovery::Reanswer => Plan {
                note: Some((id, NOTE_ANSWERING_AGAIN)),
                reanswer: true,
            },
            Recovery::Note => Plan {
                note: Some((id, NOTE_CUT_SHORT)),
                reanswer: false,
            },
        },
    }
}

/// One platform's side of recovery.
pub trait Recoverer: Sync {
    /// Replaces the text of bot message `message` (in `entry`'s chat) with `text`.
    fn note<'a>(
        &'a self,
        entry: &'a JournalEntry,
        message: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), String>>;

    /// Starts answering `entry`'s question again as a fresh reply, recorded under `ticket`; returns at
    /// once (the reply renders in the background, in the chat's order).
    fn reanswer(&self, entry: JournalEntry, ticket: JournalTicket);
}

/// What a recovery did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Partial replies replaced by the note.
    pub noted: usize,
    /// Questions answered again (or for the first time).
    pub reanswered: usize,
}

/// Deals with every unsettled record of `platform` (see the module doc); prunes old settled records.
pub async fn recover(
    journal: &Arc<Journal>,
    platform: Platform,
    mode: Recovery,
    recoverer: &dyn Recoverer,
) -> Report {
    match journal.prune() {
        Ok(removed) => tracing::debug!(removed, "pruned settled reply-journal records"),
        Err(e) => tracing::warn!(error = %e, "could not prune the reply journal"),
    }
    let entries = match journal.unsettled(platform) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::error!(error = %e, %platform, "could not read the reply journal; replies cut short by the last stop stay as they are");
            return Report::default();
        }
    };
    let mut report = Report::default();
    if entries.is_empty() {
        return report;
    }
    let plans: Vec<Plan> = entries.iter().map(|(_, e)| plan(e, mode)).collect();
    // Durable before anything is shown: a crash from here on finds them `recovering`.
    for (ticket, _) in &entries {
        ticket.advance(ReplyState::Recovering);
    }
    if let Err(e) = journal.flush().await {
        tracing::error!(error = %e, "could not make the recovery marks durable");
    }
    for ((ticket, entry), plan) in entries.into_iter().zip(plans) {
        if let Some((message, text)) = &plan.note {
            match recoverer.note(&entry, message, text).await {
                Ok(()) => report.noted += 1,
                Err(e) => {
                    tracing::warn!(error = %e, chat = %entry.inbound.chat, "could not mark a reply cut short by a restart");
                }
            }
        }
        if plan.reanswer {
            report.reanswered += 1;
            recoverer.reanswer(entry, ticket);
        } else {
            ticket.advance(ReplyState::Delivered);
        }
    }
    tracing::info!(
        %platform,
        noted = report.noted,
        answered_again = report.reanswered,
        "recovered replies cut short by the last stop"
    );
    report
}

#[cfg(test)]
mod tests;
