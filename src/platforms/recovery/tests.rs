//! Recovery's rules, over an in-memory journal and a recording fake platform.

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

    fn note_question<'a>(
        &'a self,
        entry: &'a JournalEntry,
        _text: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("note question {}", entry.message));
        async { Ok(()) }.boxed()
    }

    fn reanswer(&self, entry: JournalEntry, ticket: JournalTicket) {
        let attempt = entry.recoveries;
        self.calls
            .lock()
            .unwrap()
            .push(format!("answer {} #{attempt}", entry.message));
        ticket.bot_message(&format!("re{}.{attempt}", entry.message));
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
        attachments: Vec::new(),
    }
}

fn empty_journal() -> Arc<Journal> {
    Journal::new(
        Arc::new(MemoryStore::new()),
        Arc::new(TokioClock::starting_at(1_000_000)),
    )
}

/// A journal as a crash leaves it: records 1…4 in each state, 5 `recovering` from an earlier start.
fn crashed_journal() -> Arc<Journal> {
    let journal = empty_journal();
    journal.accept("1", &inbound()); // accepted, never started
    let streaming = journal.accept("2", &inbound());
    streaming.question_stored();
    streaming.bot_message("20");
    let finished = journal.accept("3", &inbound());
    finished.question_stored();
    finished.bot_message("30");
    finished.bot_message("31");
    finished.advance(ReplyState::Finished);
    let delivered = journal.accept("4", &inbound());
    delivered.bot_message("40");
    delivered.advance(ReplyState::Delivered);
    let recovering = journal.accept("5", &inbound());
    recovering.bot_message("50");
    recovering.recovering(true);
    journal
}

#[tokio::test(start_paused = true)]
async fn each_start_notes_everything_a_cut_reply_showed_and_answers_it_once() {
    let journal = crashed_journal();
    let platform = Recorder::default();
    let report = recover(&journal, Platform::Telegram, Recovery::Reanswer, &platform).await;
    assert_eq!(
        platform.take(),
        [
            "answer 1 #1",
            "note 2 20 again",
            "answer 2 #1",
            "note 3 30 again",
            "note 3 31 again",
            "answer 3 #1",
            // Found `recovering`: what it showed (maybe even complete) becomes the note, then one answer.
            "note 5 50 again",
            "answer 5 #2",
        ]
    );
    assert_eq!(
        report,
        Report {
            noted: 4,
            reanswered: 4
        }
    );
    // The process dies again while those answers are in flight: the next start notes what each showed
    // and answers each once more, never twice in one start.
    recover(&journal, Platform::Telegram, Recovery::Reanswer, &platform).await;
    let calls = platform.take();
    for message in ["1", "2", "3", "5"] {
        let answers = calls
            .iter()
            .filter(|c| c.starts_with(&format!("answer {message} ")))
            .count();
        assert_eq!(answers, 1, "{calls:?}");
    }
    assert!(
        calls.contains(&"note 5 re5.2 again".to_owned()),
        "{calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_question_that_keeps_crashing_the_process_is_answered_again_at_most_three_times() {
    let journal = empty_journal();
    let ticket = journal.accept("1", &inbound());
    ticket.bot_message("10");
    let platform = Recorder::default();
    let mut answers = 0;
    for _ in 0..6 {
        recover(&journal, Platform::Telegram, Recovery::Reanswer, &platform).await;
        answers += platform
            .take()
            .iter()
            .filter(|c| c.starts_with("answer"))
            .count();
    }
    assert_eq!(answers, MAX_RECOVERIES as usize);
    // The last start only noted it and settled it.
    assert!(journal.unsettled(Platform::Telegram).unwrap().is_empty());
    assert_eq!(
        plan(&ticket.entry().unwrap(), Recovery::Reanswer).replace,
        Vec::<String>::new()
    );
}

#[tokio::test(start_paused = true)]
async fn note_mode_only_notes_but_still_answers_a_message_never_answered() {
    let journal = crashed_journal();
    let platform = Recorder::default();
    recover(&journal, Platform::Telegram, Recovery::Note, &platform).await;
    assert_eq!(
        platform.take(),
        [
            "answer 1 #1",
            "note 2 20 cut",
            "note 3 30 cut",
            "note 3 31 cut",
            "note 5 50 cut"
        ]
    );
    // Records of another platform are that adapter's to recover.
    assert!(journal.unsettled(Platform::Discord).unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_message_posted_without_a_recorded_id_gets_a_note_on_its_question_once() {
    let journal = empty_journal();
    let ticket = journal.accept("1", &inbound());
    ticket.question_stored();
    ticket.bot_message("10");
    // The process died while posting the second message: the platform may have created it.
    ticket.posting(true);
    let platform = Recorder::default();
    recover(&journal, Platform::Telegram, Recovery::Reanswer, &platform).await;
    assert_eq!(
        platform.take(),
        ["note 1 10 again", "note question 1", "answer 1 #1"]
    );
    // Noted once: the next start does not note the question again (the re-answer is in flight).
    recover(&journal, Platform::Telegram, Recovery::Reanswer, &platform).await;
    let calls = platform.take();
    assert!(!calls.contains(&"note question 1".to_owned()), "{calls:?}");
}
