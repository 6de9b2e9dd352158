//! Per-conversation order: every turn (and every `/reset`) takes a slot in its conversation's queue the
//! moment it arrives and runs only after the slot before it is done. Replies that may still be stopped
//! carry a cancel switch, so `/cancel` and `/reset` reach turns that are waiting as well as the one
//! answering. Jobs run on the core's task tracker with their panics contained.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Core, Tail, INTERNAL_ERROR_MESSAGE};
use crate::domain::{ConversationKey, FailureKind, ReplyEvent, UserFacingError};

/// A place in one conversation's queue.
pub(super) struct Slot {
    /// This job's id, unique for the core's lifetime.
    pub id: u64,
    /// Resolves when the job before this one (and so every earlier one) is done.
    pub previous: Option<Tail>,
    /// Dropped when this job is done, releasing the next slot.
    done: oneshot::Sender<()>,
}

impl Slot {
    /// Waits until every job queued before this one is done.
    pub async fn wait_previous(previous: Option<Tail>) {
        if let Some(previous) = previous {
            // A sender dropped by a panicking job still releases us: `Err` is "done" too.
            let _ = previous.await;
        }
    }
}

impl Core {
    /// Takes the next slot in `key`'s queue, synchronously, so order is the order of arrival. With
    /// `stoppable`, the job also gets a cancel switch that `/cancel` and `/reset` reach (a child of the
    /// shutdown cut, so the cut stops it too).
    pub(super) fn take_slot(
        &self,
        key: &ConversationKey,
        stoppable: bool,
    ) -> (Slot, CancellationToken) {
        let id = self
            .next_turn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (done, done_rx) = oneshot::channel::<()>();
        let previous = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.clone(), (id, done_rx.shared()))
            .map(|(_, tail)| tail);
        let cancel = self.cut.child_token();
        if stoppable {
            self.stoppable
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(key.clone())
                .or_default()
                .push((id, cancel.clone()));
        }
        (Slot { id, previous, done }, cancel)
    }

    /// Runs `work` for `slot` on the tracker. When `work` ends (or panics) the slot is released; a panic
    /// also sends the user [`INTERNAL_ERROR_MESSAGE`] on `tx`. The reply stream ends only after the slot's
    /// bookkeeping is gone, so a `/cancel` sent after a reply ended finds nothing to cancel.
    pub(super) fn spawn_job(
        self: &Arc<Self>,
        key: ConversationKey,
        slot: Slot,
        tx: mpsc::Sender<ReplyEvent>,
        work: impl Future<Output = ()> + Send + 'static,
    ) {
        let core = Arc::clone(self);
        self.tracker.spawn(async move {
            let Slot { id, done, .. } = slot;
            let outcome = std::panic::AssertUnwindSafe(work).catch_unwind().await;
            core.release_slot(&key, id);
            drop(done);
            if outcome.is_err() {
                tracing::error!(
                    "a panic while answering a message was contained; the user got an error reply"
                );
                let _ = tx
                    .send(ReplyEvent::Failed(UserFacingError::new(
                        FailureKind::Internal,
                        INTERNAL_ERROR_MESSAGE,
                    )))
                    .await;
            }
        });
    }

    /// Stops every stoppable job of `key` queued so far (answering or waiting); how many were stopped.
    pub(super) fn cancel_queued(&self, key: &ConversationKey) -> usize {
        let stoppable = self
            .stoppable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stoppable.get(key).map_or(0, |jobs| {
            jobs.iter()
                .filter(|(_, token)| !token.is_cancelled())
                .inspect(|(_, token)| token.cancel())
                .count()
        })
    }

    fn release_slot(&self, key: &ConversationKey, id: u64) {
        let mut stoppable = self
            .stoppable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(jobs) = stoppable.get_mut(key) {
            jobs.retain(|(job, _)| *job != id);
            if jobs.is_empty() {
                stoppable.remove(key);
            }
        }
        drop(stoppable);
        let mut queues = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Only the last job of a conversation is its tail; an earlier one leaves the tail to its successor.
        if queues.get(key).is_some_and(|(tail, _)| *tail == id) {
            queues.remove(key);
        }
    }
}
