//! Recovery's exactly-once rules, over an in-memory journal and a recording fake platform.

use std::sync::Mutex;

use futures_util::FutureExt;

use super::*;
use crate::clock::TokioClock;
use crate::domain::{ChatKind, ChatRef, Inbound, Sender, UserRef};
use crate::store::memory::MemoryStore;

/// Records what recovery asked of the platform; a re-answer sends one bot message and stays in flight
/// (as if the process died before it was delivered).
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.calls.lock().unwrap())
    }
}

impl Recoverer for Recorder {
    fn note<'a>(
        &'a self,
        entry: &'a JournalEntry,
        message: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        let kind = if text == NOTE_ANSWERING_AGAIN {
            "again"
        } else {
            "cut"
        };
        self.calls
            .lock()
            .unwrap()
            .push(format!("note {} {message} {kind}", entry.message));
        async { Ok(()) }.boxed()
    }

    fn reanswer(&self, entry: JournalEntry, ticket: JournalTicket) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("answer {}", entry.message));
        ticket.bot_message(format!("re{}", entry.message));
    }
}

fn inbound() -> Inbound {
    Inbound {
        chat: ChatRef::new(Platform::Telegram, "5"),
        chat_kind: ChatKind::Direct,
        sender: Sender {
            user: UserRef::new(Platform::Telegram, "5"),
            display_name: "Ada".into(),
        },
        text: "question".into(),
        addressed: true,
        reply_to: None,
        thread: None,
    }
}

/// A journal as a crash leaves it: one record per state, in message order 1…5.
fn crashed_journal() -> Arc<Journal> {
    let journal = Journal::new(
        Arc::new(MemoryStore::new()),
        Arc::new(TokioClock::starting_at(1_000_000)),
    );
    journal.accept("1", &inbound()); // accepted, never started
    let streaming = journal.accept("2", &inbound());
    streaming.question_stored();
    streaming.bot_message("20".into());
    let finished = journal.accept("3", &inbound());
    finished.question_stored();
    finished.bot_message("30".into());
    finished.bot_message("31".into());
    finished.advance(ReplyState::Finished);
    let delivered = journal.accept("4", &inbound());
    delivered.bot_message("40".into());
    delivered.advance(ReplyState::Delivered);
    let recovering = journal.accept("5", &inbound());
    recovering.bot_message("50".into());
    recovering.advance(ReplyState::Recovering);
    journal
}

#[tokio::test(start_paused = true)]
async fn every_unsettled_reply_is_noted_or_answered_once_and_a_second_start_never_answers_again() {
    let journal = crashed_journal();
    let platform = Recorder::default();
    let report = recover(&journal, Platform::Telegram, Recovery::Reanswer, &platform).await;
    assert_eq!(
        platform.take(),
        [
            "answer 1",
            "note 2 20 again",
            "answer 2",
            "note 3 31 again",
            "answer 3",
            // Found `recovering`: an earlier recovery answered it already; only the note.
            "note 5 50 cut",
        ]
    );
    assert_eq!(
        report,
        Report {
            noted: 3,
            reanswered: 3
        }
    );
    // The process dies again while the three answers are in flight: the next start only notes what they
    // sent, and answers nothing a second time.
    let report = recover(&journal, Platform::Telegram, Recovery::Reanswer, &platform).await;
    assert_eq!(
        platform.take(),
        ["note 1 re1 cut", "note 2 re2 cut", "note 3 re3 cut"]
    );
    assert_eq!(
        report,
        Report {
            noted: 3,
            reanswered: 0
        }
    );
    // Everything is settled now.
    let report = recover(&journal, Platform::Telegram, Recovery::Reanswer, &platform).await;
    assert_eq!(report, Report::default());
    assert!(platform.take().is_empty());
}

#[tokio::test(start_paused = true)]
async fn note_mode_only_notes_but_still_answers_a_message_never_answered() {
    let journal = crashed_journal();
    let platform = Recorder::default();
    recover(&journal, Platform::Telegram, Recovery::Note, &platform).await;
    assert_eq!(
        platform.take(),
        [
            "answer 1",
            "note 2 20 cut",
            "note 3 31 cut",
            "note 5 50 cut"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_recovering_record_that_showed_nothing_is_answered_again() {
    let journal = Journal::new(
        Arc::new(MemoryStore::new()),
        Arc::new(TokioClock::starting_at(1_000_000)),
    );
    journal
        .accept("1", &inbound())
        .advance(ReplyState::Recovering);
    let platform = Recorder::default();
    recover(&journal, Platform::Telegram, Recovery::Reanswer, &platform).await;
    assert_eq!(platform.take(), ["answer 1"]);
    // Records of another platform are that adapter's to recover.
    assert!(journal.unsettled(Platform::Discord).unwrap().is_empty());
}
