//! The reply journal: one durable record per platform message being answered — the question (the whole
//! [`Inbound`], enough to answer it again), whether its user turn is already in history, the bot messages
//! sent for it so far, and how far its reply got ([`ReplyState`]). Start-up recovery
//! (`platforms::recovery`) reads the records that are not settled and deals with each exactly once.
//!
//! Writes are cheap by design: one record per state change and one per new bot message (never per
//! delta or per edit), into the [`StateStore`] namespace [`JOURNAL_NS`] — sled in the daemon, memory in
//! tests. Durability comes from the flushes the callers already make (the Telegram batch flush, the
//! Discord record-before-reply flush, the flush after every turn).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::domain::{ChatRef, Inbound, Platform};
use crate::store::{self, StateStore, StoreError};

/// The namespace of journal records; keys are `platform/chat/message`.
pub const JOURNAL_NS: &str = "core.journal";
/// Settled records are kept this long, then pruned: long enough to make a gateway's replayed event
/// (minutes) idempotent, short enough that the journal holds about an hour of traffic.
pub const SETTLED_KEEP_MS: i64 = 3600 * 1000;
/// At most this many settled records are kept whatever their age (the oldest go first): the journal's
/// size is bounded by this plus [`PRUNE_EVERY`] plus the replies in flight (about 1 KB per record, so
/// ≤ ~11 MB).
pub const MAX_SETTLED: usize = 10_000;
/// The journal prunes itself every this many accepted messages (and recovery at each start): a scan of
/// at most ~11,000 small records, a few milliseconds per thousand messages, on every platform alike.
pub const PRUNE_EVERY: u64 = 1_000;

/// How far the reply to one message got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyState {
    /// Recorded (durably, before its platform was told it was handled); nothing answered yet.
    Accepted,
    /// Its turn started: the user turn is in history and the model is asked.
    Streaming,
    /// The model finished; the final text is being shown.
    Finished,
    /// The reply reached its end on the platform (the final text or note shown, or given up for good):
    /// nothing is left to recover.
    Delivered,
    /// Start-up recovery took it on (noted, and answering again). Found again at the next start, it only
    /// gets the note: recovery never answers one message twice.
    Recovering,
}

impl ReplyState {
    /// The state after a step to `to`. `Delivered` is final; `Recovering` is left only for `Delivered`
    /// (the re-answer's own turn reports `Streaming`/`Finished` without undoing it); otherwise states
    /// only move forward, so a late or repeated report never moves a reply back.
    #[must_use]
    pub fn advance(self, to: Self) -> Self {
        match (self, to) {
            (Self::Delivered, _) | (_, Self::Delivered) => Self::Delivered,
            (Self::Recovering, _) | (_, Self::Recovering) => Self::Recovering,
            (from, to) => {
                if to.rank() > from.rank() {
                    to
                } else {
                    from
                }
            }
        }
    }

    fn rank(self) -> u8 {
        match self {
            Self::Accepted => 0,
            Self::Streaming => 1,
            Self::Finished => 2,
            Self::Recovering => 3,
            Self::Delivered => 4,
        }
    }
}

/// One journal record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Order of acceptance (recovery answers a chat's questions in the order they came).
    pub seq: u64,
    /// When it was accepted (ms since the epoch).
    pub at_ms: i64,
    /// The platform's id of the user's message.
    pub message: String,
    /// The question as the core got it.
    pub inbound: Inbound,
    /// The user turn is stored in history: answering again must not store it twice.
    pub question_stored: bool,
    /// The platform ids of the bot messages sent for it so far, in order.
    pub bot_messages: Vec<String>,
    /// How far its reply got.
    pub state: ReplyState,
    /// A new bot message was being posted and its id is not recorded yet: if the process died then,
    /// a message recovery cannot name may be showing part of the answer.
    #[serde(default)]
    pub posting: bool,
    /// How many times start-up recovery answered it again (bounded, so a question whose answer
    /// brings the process down cannot make it crash in a loop).
    #[serde(default)]
    pub recoveries: u32,
}

/// The journal over a store.
pub struct Journal {
    store: Arc<dyn StateStore>,
    clock: SharedClock,
    next_seq: AtomicU64,
    /// Messages accepted by this process (for [`PRUNE_EVERY`]).
    accepted: AtomicU64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Journal")
    }
}

/// The key of the record for `message` in `chat`.
fn key_of(chat: &ChatRef, message: &str) -> String {
    format!("{}/{}/{message}", chat.platform, chat.id)
}

impl Journal {
    /// A journal over `store`, dating records with `clock`.
    pub fn new(store: Arc<dyn StateStore>, clock: SharedClock) -> Arc<Self> {
        // Sequence numbers start at the clock's microseconds, so they keep growing across restarts
        // without a scan (1,000 acceptances per ms before two runs could overlap).
        let base = u64::try_from(clock.now_ms())
            .unwrap_or(0)
            .saturating_mul(1000);
        Arc::new(Self {
            store,
            clock,
            next_seq: AtomicU64::new(base),
            accepted: AtomicU64::new(0),
        })
    }

    /// Records `inbound` (platform message id `message`) as accepted and returns its handle. Not yet
    /// durable: the caller flushes ([`Self::flush`]) before it acknowledges the message or replies.
    pub fn accept(self: &Arc<Self>, message: &str, inbound: &Inbound) -> JournalTicket {
        let entry = JournalEntry {
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            at_ms: self.clock.now_ms(),
            message: message.to_owned(),
            inbound: inbound.clone(),
            question_stored: false,
            bot_messages: Vec::new(),
            state: ReplyState::Accepted,
            posting: false,
            recoveries: 0,
        };
        let ticket = JournalTicket {
            journal: Arc::clone(self),
            key: key_of(&inbound.chat, message),
        };
        if let Err(e) = store::put_json(self.store.as_ref(), JOURNAL_NS, &ticket.key, &entry) {
            tracing::warn!(error = %e, "could not record a message in the reply journal");
        }
        if (self.accepted.fetch_add(1, Ordering::Relaxed) + 1) % PRUNE_EVERY == 0 {
            // A walk over ~11,000 records: on the blocking pool, not on the async worker that is
            // accepting messages (a stall of every chat it serves). Settled records are final, so
            // nothing the prune removes can be changing under it.
            let journal = Arc::clone(self);
            let prune = move || {
                if let Err(e) = journal.prune() {
                    tracing::warn!(error = %e, "could not prune the reply journal");
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(prune)),
                Err(_) => prune(),
            }
        }
        ticket
    }

    /// Whether message `message` of `chat` is already recorded (a replayed event is then dropped).
    pub fn contains(&self, chat: &ChatRef, message: &str) -> bool {
        match self.store.kv_get(JOURNAL_NS, &key_of(chat, message)) {
            Ok(v) => v.is_some(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the reply journal");
                false
            }
        }
    }

    /// Every record of `platform` that is not delivered, in the order accepted.
    pub fn unsettled(
        self: &Arc<Self>,
        platform: Platform,
    ) -> Result<Vec<(JournalTicket, JournalEntry)>, StoreError> {
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        self.store
            .kv_visit(
                JOURNAL_NS,
                &format!("{platform}/"),
                &mut |key, value| match store::decode::<JournalEntry>(value) {
                    Ok(entry) if entry.state != ReplyState::Delivered => {
                        let ticket = JournalTicket {
                            journal: Arc::clone(self),
                            key: key.to_owned(),
                        };
                        out.push((ticket, entry));
                    }
                    Ok(_) => {}
                    Err(e) => unreadable.push((key.to_owned(), e)),
                },
            )?;
        for (key, e) in unreadable {
            tracing::warn!(error = %e, key, "an unreadable reply-journal record was dropped");
            let _ = self.store.kv_remove(JOURNAL_NS, &key);
        }
        out.sort_by_key(|(_, e)| e.seq);
        Ok(out)
    }

    /// Removes settled records older than [`SETTLED_KEEP_MS`], and the oldest beyond [`MAX_SETTLED`];
    /// returns how many. Unsettled records stay until recovery settles them.
    pub fn prune(&self) -> Result<usize, StoreError> {
        /// The fields the prune reads (serde skips the rest, the question among them).
        #[derive(Deserialize)]
        struct Dated {
            seq: u64,
            at_ms: i64,
            state: ReplyState,
        }
        let cutoff = self.clock.now_ms() - SETTLED_KEEP_MS;
        let mut settled: Vec<(u64, i64, String)> = Vec::new();
        self.store.kv_visit(JOURNAL_NS, "", &mut |key, value| {
            if let Ok(entry) = store::decode::<Dated>(value) {
                if entry.state == ReplyState::Delivered {
                    settled.push((entry.seq, entry.at_ms, key.to_owned()));
                }
            }
        })?;
        settled.sort_unstable();
        let over = settled.len().saturating_sub(MAX_SETTLED);
        let mut removed = 0;
        for (i, (_, at_ms, key)) in settled.iter().enumerate() {
            if i < over || *at_ms < cutoff {
                self.store.kv_remove(JOURNAL_NS, key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Makes the records written so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush().await
    }
}

/// The handle of one record, shared by the adapter, the renderer and the turn; each step is one write.
#[derive(Clone)]
pub struct JournalTicket {
    journal: Arc<Journal>,
    key: String,
}

impl std::fmt::Debug for JournalTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JournalTicket({})", self.key)
    }
}

impl JournalTicket {
    /// The record as stored now.
    pub fn entry(&self) -> Option<JournalEntry> {
        store::get_json(self.journal.store.as_ref(), JOURNAL_NS, &self.key).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read the reply journal");
            None
        })
    }

    /// Moves the reply to `state` (see [`ReplyState::advance`]).
    pub fn advance(&self, state: ReplyState) {
        self.update(|entry| entry.state = entry.state.advance(state));
    }

    /// The user turn is stored in history; the turn is streaming.
    pub fn question_stored(&self) {
        self.update(|entry| {
            entry.question_stored = true;
            entry.state = entry.state.advance(ReplyState::Streaming);
        });
    }

    /// A new bot message is about to be posted (`true`), or the post failed (`false`).
    pub fn posting(&self, posting: bool) {
        self.update(|entry| entry.posting = posting);
    }

    /// A new bot message `id` was posted for this reply.
    pub fn bot_message(&self, id: &str) {
        self.update(|entry| {
            entry.posting = false;
            if !entry.bot_messages.iter().any(|m| m == id) {
                entry.bot_messages.push(id.to_owned());
            }
        });
    }

    /// Recovery takes the reply on: `recovering`, and one more recovery if it is answered again.
    pub fn recovering(&self, reanswer: bool) {
        self.update(|entry| {
            entry.state = entry.state.advance(ReplyState::Recovering);
            if reanswer {
                entry.recoveries += 1;
            }
        });
    }

    /// Makes the journal durable (after a new bot message: its id must survive a crash that follows).
    pub async fn flush(&self) {
        if let Err(e) = self.journal.flush().await {
            tracing::warn!(error = %e, "could not flush the reply journal");
        }
    }

    /// The message is not answered after all (the core ignores it): the record goes.
    pub fn discard(&self) {
        if let Err(e) = self.journal.store.kv_remove(JOURNAL_NS, &self.key) {
            tracing::warn!(error = %e, "could not remove a reply-journal record");
        }
    }

    /// Applies `change` to the record, atomically; writes nothing when it changes nothing or the record
    /// is gone (pruned, discarded).
    fn update(&self, change: impl Fn(&mut JournalEntry)) {
        let store = self.journal.store.as_ref();
        let unchanged = self.entry().is_none_or(|before| {
            let mut after = before.clone();
            change(&mut after);
            after == before
        });
        if unchanged {
            return;
        }
        let mut apply = |old: Option<&[u8]>| -> Option<Vec<u8>> {
            let mut entry: JournalEntry = store::decode(old?).ok()?;
            change(&mut entry);
            store::encode(&entry).ok()
        };
        if let Err(e) = store.kv_update(JOURNAL_NS, &self.key, &mut apply) {
            tracing::warn!(error = %e, "could not update the reply journal");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;
    use crate::domain::{ChatKind, Sender, UserRef};
    use crate::store::memory::MemoryStore;
    use ReplyState::{Accepted, Delivered, Finished, Recovering, Streaming};

    fn inbound(chat: &str) -> Inbound {
        Inbound {
            chat: ChatRef::new(Platform::Telegram, chat),
            chat_kind: ChatKind::Direct,
            sender: Sender {
                user: UserRef::new(Platform::Telegram, chat),
                display_name: "Ada".into(),
            },
            text: "hello".into(),
            addressed: true,
            reply_to: None,
            thread: None,
            attachments: Vec::new(),
        }
    }

    fn journal() -> Arc<Journal> {
        Journal::new(
            Arc::new(MemoryStore::new()),
            Arc::new(TokioClock::starting_at(1_000_000)),
        )
    }

    #[test]
    fn states_only_move_forward_delivered_is_final_and_recovering_holds() {
        assert_eq!(Accepted.advance(Streaming), Streaming);
        assert_eq!(Finished.advance(Streaming), Finished);
        assert_eq!(Streaming.advance(Accepted), Streaming);
        assert_eq!(Finished.advance(Delivered), Delivered);
        for s in [Accepted, Streaming, Finished, Recovering] {
            assert_eq!(Delivered.advance(s), Delivered);
            assert_eq!(s.advance(Recovering), Recovering);
        }
        // A re-answer's own turn reports progress; the record stays `recovering` until delivered.
        assert_eq!(Recovering.advance(Streaming), Recovering);
        assert_eq!(Recovering.advance(Finished), Recovering);
        assert_eq!(Recovering.advance(Delivered), Delivered);
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_follows_its_reply_and_settled_ones_leave_the_unsettled_list() {
        let journal = journal();
        let first = journal.accept("7", &inbound("1"));
        let second = journal.accept("8", &inbound("1"));
        assert!(journal.contains(&ChatRef::new(Platform::Telegram, "1"), "7"));
        assert!(!journal.contains(&ChatRef::new(Platform::Discord, "1"), "7"));
        first.question_stored();
        first.bot_message("100");
        first.bot_message("100");
        first.bot_message("101");
        first.advance(Finished);
        let entry = first.entry().unwrap();
        assert!(entry.question_stored);
        assert_eq!(entry.bot_messages, ["100", "101"]);
        assert_eq!(entry.state, Finished);
        let unsettled = journal.unsettled(Platform::Telegram).unwrap();
        let messages: Vec<_> = unsettled.iter().map(|(_, e)| e.message.as_str()).collect();
        assert_eq!(messages, ["7", "8"], "in the order accepted");
        first.advance(Delivered);
        second.discard();
        assert!(journal.unsettled(Platform::Telegram).unwrap().is_empty());
        assert!(journal.unsettled(Platform::Discord).unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn pruning_removes_old_settled_records_and_never_unsettled_ones() {
        let journal = journal();
        let settled = journal.accept("1", &inbound("1"));
        settled.advance(Delivered);
        let open = journal.accept("2", &inbound("1"));
        assert_eq!(journal.prune().unwrap(), 0);
        tokio::time::advance(std::time::Duration::from_millis(
            u64::try_from(SETTLED_KEEP_MS).unwrap() + 1,
        ))
        .await;
        assert_eq!(journal.prune().unwrap(), 1);
        assert!(settled.entry().is_none());
        assert_eq!(open.entry().unwrap().state, Accepted);
    }

    #[tokio::test(start_paused = true)]
    async fn every_thousandth_acceptance_prunes_on_the_blocking_pool() {
        let journal = journal();
        journal.accept("old", &inbound("1")).advance(Delivered);
        tokio::time::advance(std::time::Duration::from_millis(
            u64::try_from(SETTLED_KEEP_MS).unwrap() + 1,
        ))
        .await;
        let chat = ChatRef::new(Platform::Telegram, "1");
        for n in 1..PRUNE_EVERY - 1 {
            journal.accept(&n.to_string(), &inbound("1"));
        }
        assert!(
            journal.contains(&chat, "old"),
            "not pruned before the 1,000th"
        );
        journal.accept("last", &inbound("1"));
        // The prune runs on a blocking thread; this test only waits for it (no figure is asserted).
        for _ in 0..10_000 {
            if !journal.contains(&chat, "old") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(!journal.contains(&chat, "old"));
        assert!(journal.contains(&chat, "last"));
    }
}
