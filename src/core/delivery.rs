//! How an adapter tells the core whether the user got an answer: a turn whose reply has a [`Receipt`]
//! stores the model's answer as complete history only once the adapter reports it delivered; an answer
//! the user never saw is stored as incomplete, never fed back to the model as said.

use std::time::Duration;

use tokio::sync::oneshot;

use super::journal::{JournalTicket, ReplyState};

/// How long a turn waits for its adapter's report before storing the answer as incomplete. Rendering
/// the final text takes seconds (pacing, a few retries); minutes mean the platform is refusing.
pub const VERDICT_WAIT: Duration = Duration::from_secs(300);

/// Whether the user got the reply's final text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The final text (or the final note) is shown.
    Delivered,
    /// The reply could not be shown completely (given up after failures, or cut short by the
    /// adapter's message cap).
    Undelivered,
}

/// The adapter's half: report how the reply ended. Dropping it unreported counts as delivered (the
/// behaviour of adapters that do not report).
#[derive(Debug)]
pub struct Receipt {
    tx: Option<oneshot::Sender<Delivery>>,
    /// The reply's journal record, settled here when no turn waits for the report.
    journal: Option<JournalTicket>,
}

impl Receipt {
    /// A receipt with the turn's half that waits for it.
    pub(super) fn pair(journal: Option<JournalTicket>) -> (Self, oneshot::Receiver<Delivery>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                tx: Some(tx),
                journal,
            },
            rx,
        )
    }

    /// Tells the turn how its reply ended. A turn waiting for it (a finished answer) stores the answer
    /// and settles the journal record itself; otherwise (a command, a failure, a cut turn — their turn
    /// let go of the report before the reply's last event) the record is settled here.
    pub fn report(mut self, delivery: Delivery) {
        let Some(tx) = self.tx.take() else {
            return;
        };
        if tx.send(delivery).is_err() {
            if let Some(journal) = &self.journal {
                journal.advance(ReplyState::Delivered);
            }
        }
    }
}

/// The turn's half: waits for the adapter's report (bounded by [`VERDICT_WAIT`]).
pub(super) async fn verdict(rx: oneshot::Receiver<Delivery>) -> Delivery {
    match tokio::time::timeout(VERDICT_WAIT, rx).await {
        Ok(Ok(delivery)) => delivery,
        // The adapter dropped its receipt without a word: as before receipts existed.
        Ok(Err(_)) => Delivery::Delivered,
        Err(_) => {
            tracing::warn!(
                "no delivery report for an answer within 5 minutes; storing it as incomplete"
            );
            Delivery::Undelivered
        }
    }
}
