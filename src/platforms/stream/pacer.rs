//! Per-chat write discipline shared by every reply of an adapter: the pacing slots ([`Pacer`]: when
//! the next request to a chat may go, and flood control's `retry_after`) and the order in which
//! replies of one chat may start ([`Order`]: a reply's first message never goes before the previous
//! reply's first message).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Per-chat send slots: when the next edit may go (pacing) and until when Telegram told us to wait
/// (`retry_after`). Shared by every reply in the process.
#[derive(Default)]
pub struct Pacer {
    slots: Mutex<HashMap<i64, Slot>>,
}

#[derive(Clone, Copy)]
struct Slot {
    next_edit: Instant,
    blocked_until: Instant,
}

/// Above this many chats the pacer forgets slots that are already free, so the map stays small.
const PACER_SWEEP_AT: usize = 4096;

impl Pacer {
    /// When the next update of `chat`'s messages may be sent.
    pub fn ready_at(&self, chat: i64) -> Instant {
        let now = Instant::now();
        self.lock()
            .get(&chat)
            .map_or(now, |s| s.next_edit.max(s.blocked_until))
    }

    /// Until when Telegram asked us not to write to `chat` (any request, "typing" included).
    pub fn blocked_until(&self, chat: i64) -> Instant {
        let now = Instant::now();
        self.lock().get(&chat).map_or(now, |s| s.blocked_until)
    }

    /// Takes `chat`'s slot for one request (a send or an edit) if it is free now, and then holds the
    /// next one back by `interval`; false if the slot is not free. Checking and taking happen under
    /// one lock, so two replies in one chat never both take the same slot.
    pub fn take(&self, chat: i64, interval: Duration) -> bool {
        let now = Instant::now();
        let mut taken = false;
        self.update(chat, |s| {
            if s.next_edit.max(s.blocked_until) <= now {
                s.next_edit = now + interval;
                taken = true;
            }
        });
        taken
    }

    /// Charges a request to `chat` that went without a slot (a resend right after a rejected one):
    /// the next slot moves back by `interval`.
    pub fn spent(&self, chat: i64, interval: Duration) {
        let now = Instant::now();
        self.update(chat, |s| s.next_edit = s.next_edit.max(now) + interval);
    }

    /// Records flood control on `chat`: nothing goes to it for `wait`.
    pub fn block(&self, chat: i64, wait: Duration) {
        let now = Instant::now();
        self.update(chat, |s| s.blocked_until = s.blocked_until.max(now + wait));
    }

    fn update(&self, chat: i64, f: impl FnOnce(&mut Slot)) {
        let now = Instant::now();
        let mut slots = self.lock();
        if slots.len() >= PACER_SWEEP_AT {
            slots.retain(|_, s| s.next_edit > now || s.blocked_until > now);
        }
        let slot = slots.entry(chat).or_insert(Slot {
            next_edit: now,
            blocked_until: now,
        });
        f(slot);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Per-chat order of replies: each reply takes a [`Ticket`] when its message arrives (in arrival
/// order), and may send its first message only after the previous ticket of the chat has sent its own
/// first message or ended. Shared by every reply of an adapter.
#[derive(Default)]
pub struct Order {
    /// Per chat, the release signal of the last ticket handed out.
    tails: Mutex<HashMap<i64, watch::Receiver<bool>>>,
}

/// A reply's place in its chat's [`Order`]. Dropping it releases the next reply too (a reply that
/// ended without a message must not hold the chat up).
pub struct Ticket {
    previous: Option<watch::Receiver<bool>>,
    mine: Option<watch::Sender<bool>>,
}

impl Order {
    /// The next place in `chat`'s order. Call it in the order the messages arrived.
    pub fn ticket(&self, chat: i64) -> Ticket {
        let (tx, rx) = watch::channel(false);
        let mut tails = self
            .tails
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tails.len() >= PACER_SWEEP_AT {
            // A tail whose ticket was released or dropped holds nobody up any more.
            tails.retain(|_, rx| !*rx.borrow() && rx.has_changed().is_ok());
        }
        let previous = tails.insert(chat, rx);
        Ticket {
            previous,
            mine: Some(tx),
        }
    }
}

impl Ticket {
    /// A ticket that waits for nobody (replies outside any chat order).
    pub fn first() -> Self {
        Self {
            previous: None,
            mine: None,
        }
    }

    /// Whether the previous reply of the chat has started (or ended), so this one may start.
    pub fn is_due(&self) -> bool {
        self.previous.is_none()
    }

    /// Waits until this reply may send its first message.
    pub async fn due(&mut self) {
        if let Some(previous) = &mut self.previous {
            // An error means the previous ticket was dropped: its reply ended, ours may go.
            let _ = previous.wait_for(|started| *started).await;
        }
        self.previous = None;
    }

    /// This reply's first message is out: the next reply of the chat may start.
    pub fn release(&mut self) {
        if let Some(mine) = self.mine.take() {
            let _ = mine.send(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOT: Duration = Duration::from_millis(3500);

    #[tokio::test(start_paused = true)]
    async fn one_request_per_slot_and_charges_add_up() {
        let pacer = Pacer::default();
        let t0 = Instant::now();
        assert!(pacer.take(-1, SLOT));
        // The slot is gone until the interval has passed, for every reply in the chat.
        assert!(!pacer.take(-1, SLOT));
        assert_eq!(pacer.ready_at(-1), t0 + SLOT);
        assert!(pacer.take(-2, SLOT), "chats are paced apart");
        // A resend without a slot pushes the next one back by another interval.
        pacer.spent(-1, SLOT);
        assert_eq!(pacer.ready_at(-1), t0 + 2 * SLOT);
        tokio::time::advance(2 * SLOT).await;
        assert!(pacer.take(-1, SLOT));
        // Idle time is not banked: after a long pause the chat still gets one request per slot.
        tokio::time::advance(10 * SLOT).await;
        assert!(pacer.take(-1, SLOT) && !pacer.take(-1, SLOT));
        // Flood control holds the slot exactly as long as Telegram said.
        tokio::time::advance(SLOT).await;
        pacer.block(-1, Duration::from_secs(5));
        assert!(!pacer.take(-1, SLOT));
        assert_eq!(pacer.ready_at(-1), Instant::now() + Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn tickets_start_in_order_and_a_dropped_one_lets_the_next_go() {
        let order = Order::default();
        let mut a = order.ticket(1);
        let mut b = order.ticket(1);
        let mut c = order.ticket(1);
        let mut other = order.ticket(2);
        assert!(a.is_due() && other.is_due());
        other.due().await;
        a.due().await;
        let waiting = tokio::spawn(async move {
            b.due().await;
            b
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "b went before a's first message");
        a.release();
        let b = waiting.await.unwrap();
        drop(b); // b ended without a message: c may go
        tokio::time::timeout(Duration::from_secs(1), c.due())
            .await
            .unwrap();
    }
}
