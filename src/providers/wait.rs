//! How long a request spent waiting on providers, so the local API can report switchboard's own share
//! of a request's time (elapsed less this wait) as gateways do (`..._latency_overhead_seconds`).
//!
//! The HTTP layer times every await on a provider (the request and its response head, each body read)
//! with [`waiting`]; a caller that wants the total runs its work inside [`measured`]. The total lives in
//! a task-local, so nothing between the two (the router, its turn, fallbacks) carries it: the turn runs
//! inside the reply stream's own polls, in the caller's task. Outside a [`measured`] scope (the bots, a
//! stream body polled after its handler returned) [`waiting`] only awaits.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static WAITED: Cell<Duration>;
}

/// Runs `work` and returns its output with the time it spent inside [`waiting`] (every provider call
/// it made, failed attempts included).
pub async fn measured<F: Future>(work: F) -> (F::Output, Duration) {
    WAITED
        .scope(Cell::new(Duration::ZERO), async move {
            let out = work.await;
            (out, WAITED.with(Cell::get))
        })
        .await
}

/// Awaits `io` (a wait on a provider), adding its time to the enclosing [`measured`] scope if any.
pub async fn waiting<F: Future>(io: F) -> F::Output {
    let started = Instant::now();
    let out = io.await;
    let spent = started.elapsed();
    // No scope: nobody is counting (not an error).
    let _ = WAITED.try_with(|w| w.set(w.get() + spent));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn only_the_waits_on_providers_are_counted() {
        let ((), waited) = measured(async {
            // Switchboard's own time (a queue, say): not a provider's.
            tokio::time::sleep(Duration::from_millis(300)).await;
            waiting(tokio::time::sleep(Duration::from_secs(2))).await;
            waiting(tokio::time::sleep(Duration::from_millis(500))).await;
        })
        .await;
        assert_eq!(waited, Duration::from_millis(2_500));
    }

    #[tokio::test(start_paused = true)]
    async fn outside_a_scope_a_wait_just_waits() {
        let started = Instant::now();
        assert_eq!(waiting(async { 7 }).await, 7);
        waiting(tokio::time::sleep(Duration::from_secs(1))).await;
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        // A scope after it starts from zero.
        let ((), waited) = measured(async {}).await;
        assert_eq!(waited, Duration::ZERO);
    }
}
