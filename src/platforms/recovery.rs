//! Start-up recovery of replies a crash (`kill -9`, OOM, power loss) cut short, from the reply journal
//! ([`crate::core::journal`]), run by each adapter before it takes new messages. Every record that is
//! not delivered is dealt with once per start:
//!
//! - never answered (no bot message sent): answered now — nothing was shown, so nothing is shown twice;
//! - partly shown: every bot message it sent is replaced by a note that a restart cut it short, and
//!   (with `core.recovery = "reanswer"`, the default) the question is answered again as a fresh reply;
//! - a bot message was being posted when the process died (its id never recorded): the question also
//!   gets a note sent as a reply to it, since that message cannot be edited;
//! - found `recovering` (a crash during an earlier recovery or its answer): the same, on everything it
//!   sent — so whatever was shown before, complete or not, is a note now and the user ends with one
//!   complete answer — but at most [`MAX_RECOVERIES`] times; after that only the note.
//!
//! The records are marked `recovering` and flushed before any note or answer goes out. The partial
//! messages are replaced rather than appended to: the journal records a message's id when it is
//! created, never its text on each edit (that would be a write per edit), so the text shown is not
//! known here — and replacing it also means a reply that was complete but not yet marked delivered
//! when the process died is never shown twice. The platform's side (edit a message, start a reply) is
//! a small [`Recoverer`].

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::config::Recovery;
use crate::core::{Journal, JournalEntry, JournalTicket, ReplyState};
use crate::domain::Platform;

/// Replaces a partial reply whose question is answered again below it.
pub const NOTE_ANSWERING_AGAIN: &str =
    "✂️ This answer was cut short by a restart; answering again below.";
/// Replaces a partial reply that is not answered again (`core.recovery = "note"`, or past
/// [`MAX_RECOVERIES`]).
pub const NOTE_CUT_SHORT: &str =
    "✂️ This answer was cut short by a restart. Please ask again if you still need it.";

/// Sent as a reply to the question when a bot message may be showing part of its answer under an id
/// the journal never learned (the process died while posting it).
pub const NOTE_UNNAMED: &str =
    "✂️ An answer to this was cut short by a restart; any part of it shown above is incomplete.";

/// A question is answered again at most this many times: a question whose answer brings the process
/// down (a bug, memory) must not make it crash in a loop. Three covers a kill during the answer and
/// one during its re-answer with room to spare.
pub const MAX_RECOVERIES: u32 = 3;

/// What recovery does with one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The bot messages to replace with [`Self::note`].
    pub replace: Vec<String>,
    /// The note they show.
    pub note: &'static str,
    /// Whether the question gets [`NOTE_UNNAMED`] (a bot message was being posted when the process
    /// died, and its id is unknown).
    pub note_question: bool,
    /// Whether the question is answered again.
    pub reanswer: bool,
}

/// The plan for `entry` under `mode` (pure: the rules in one place).
pub fn plan(entry: &JournalEntry, mode: Recovery) -> Plan {
    let may_answer = entry.recoveries < MAX_RECOVERIES;
    let reanswer = match entry.state {
        ReplyState::Delivered => false,
        // Nothing was shown: answering now cannot show anything twice.
        _ if entry.bot_messages.is_empty() => may_answer,
        _ => may_answer && mode == Recovery::Reanswer,
    };
    Plan {
        replace: if entry.state == ReplyState::Delivered {
            Vec::new()
        } else {
            entry.bot_messages.clone()
        },
        note: if reanswer {
            NOTE_ANSWERING_AGAIN
        } else {
            NOTE_CUT_SHORT
        },
        note_question: entry.posting && entry.state != ReplyState::Delivered,
        reanswer,
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

    /// Posts `text` as a reply to `entry`'s question.
    fn note_question<'a>(
        &'a self,
        entry: &'a JournalEntry,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), String>>;

    /// Starts answering `entry`'s question again as a fresh reply, recorded under `ticket`; returns at
    /// once (the reply renders in the background, in the chat's order).
    fn reanswer(&self, entry: JournalEntry, ticket: JournalTicket);
}

/// What a recovery did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Bot messages replaced by the note, and notes sent to questions.
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
    let mut entries = match journal.unsettled(platform) {
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
    for ((ticket, entry), plan) in entries.iter_mut().zip(&plans) {
        ticket.recovering(plan.reanswer);
        entry.state = ReplyState::Recovering;
        entry.recoveries += u32::from(plan.reanswer);
    }
    if let Err(e) = journal.flush().await {
        tracing::error!(error = %e, "could not make the recovery marks durable");
    }
    for ((ticket, entry), plan) in entries.into_iter().zip(plans) {
        for message in &plan.replace {
            match recoverer.note(&entry, message, plan.note).await {
                Ok(()) => report.noted += 1,
                Err(e) => {
                    tracing::warn!(error = %e, chat = %entry.inbound.chat, "could not mark a reply cut short by a restart");
                }
            }
        }
        if plan.note_question {
            match recoverer.note_question(&entry, NOTE_UNNAMED).await {
                Ok(()) => {
                    report.noted += 1;
                    ticket.posting(false);
                }
                Err(e) => {
                    tracing::warn!(error = %e, chat = %entry.inbound.chat, "could not note a question whose reply was cut short");
                }
            }
        }
        if !plan.reanswer && entry.bot_messages.is_empty() {
            tracing::warn!(chat = %entry.inbound.chat, "a question was answered again {MAX_RECOVERIES} times and never finished; giving up on it");
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
