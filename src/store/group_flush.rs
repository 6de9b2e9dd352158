//! Group commit for the store's flushes: turns that finish together share one fsync.
//!
//! The core flushes after every completed turn, so under load hundreds of flushes are asked for at once.
//! Each one only needs *a* flush that started after its own writes. One background thread runs the flushes:
//! it takes every request made so far, flushes once, and answers all of them. A burst of N turns costs a
//! few fsyncs instead of N, and no thread pool grows with the load (sled 0.34's own `flush_async` cannot be
//! used: concurrent calls can stop being woken, spacejam/sled#1308).
//!
//! Under sustained load the flushes would still run back to back, each covering only the requests that
//! came in while the one before it ran (about a millisecond's worth). So when requests were already
//! waiting as a flush ended, the thread first lets more gather ([`GATHER_UNDER_LOAD`]), as PostgreSQL's
//! `commit_delay` does; a request on an idle flusher is flushed at once.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use tokio::sync::watch;

/// How long a busy flusher lets requests gather before its next flush. Measured on the Telegram
/// benchmark's 1,000-chat burst (about 4 flush requests per message: the journal's accept and each new bot
/// message, and the finished turn): back to back, sled ran ~1,400 flushes a second and its I/O threads
/// took a sixth of the CPU; with 2 ms, a few hundred, and the burst ran about a third faster. The cost is
/// at most 2 ms on a flush that was going to wait behind another one anyway.
pub const GATHER_UNDER_LOAD: Duration = Duration::from_millis(2);

/// The outcome of the flushes run so far.
#[derive(Clone, Debug, Default)]
struct Flushed {
    /// Every request numbered up to this one is answered.
    upto: u64,
    /// The error of the latest flush, if it failed.
    error: Option<String>,
}

#[derive(Debug, Default)]
struct Requests {
    /// The number of the latest request.
    latest: u64,
    /// Set when the owner goes away: the thread answers what is left and stops.
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    requests: Mutex<Requests>,
    wake: Condvar,
    flushed: watch::Sender<Flushed>,
}

/// A background flusher; dropping it answers every pending request and stops its thread.
#[derive(Debug)]
pub struct GroupFlush {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl GroupFlush {
    /// Starts the flusher thread; `flush` makes everything written so far durable. Under load it waits
    /// [`GATHER_UNDER_LOAD`] between flushes.
    pub fn start<F>(name: &str, flush: F) -> std::io::Result<Self>
    where
        F: Fn() -> Result<(), String> + Send + 'static,
    {
        Self::start_gathering(name, flush, || std::thread::sleep(GATHER_UNDER_LOAD))
    }

    /// [`Self::start`] with `gather` run instead of the wait under load (tests observe it).
    fn start_gathering<F, G>(name: &str, flush: F, gather: G) -> std::io::Result<Self>
    where
        F: Fn() -> Result<(), String> + Send + 'static,
        G: Fn() + Send + 'static,
    {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Requests::default()),
            wake: Condvar::new(),
            flushed: watch::Sender::new(Flushed::default()),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(&worker, &flush, &gather))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Resolves once a flush that started after this call has finished.
    pub fn flush(&self) -> BoxFuture<'static, Result<(), String>> {
        let mut flushed = self.shared.flushed.subscribe();
        let ticket = {
            let mut requests = lock(&self.shared.requests);
            requests.latest += 1;
            requests.latest
        };
        self.shared.wake.notify_one();
        async move {
            let outcome = flushed
                .wait_for(|f| f.upto >= ticket)
                .await
                .map_err(|_| "the store's flusher stopped".to_owned())?;
            // The latest flush covers everything written before it started, ours included: its result is
            // ours even when an earlier flush that also covered us failed.
            outcome.error.clone().map_or(Ok(()), Err)
        }
        .boxed()
    }
}

impl Drop for GroupFlush {
    fn drop(&mut self) {
        lock(&self.shared.requests).closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(requests: &Mutex<Requests>) -> std::sync::MutexGuard<'_, Requests> {
    requests.lock().unwrap_or_else(PoisonError::into_inner)
}

fn run(shared: &Shared, flush: &dyn Fn() -> Result<(), String>, gather: &dyn Fn()) {
    let mut answered = 0;
    loop {
        let upto = {
            let mut requests = lock(&shared.requests);
            while requests.latest == answered && !requests.closed {
                requests = shared
                    .wake
                    .wait(requests)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if requests.latest == answered {
                return;
            }
            requests.latest
        };
        let error = flush().err();
        answered = upto;
        // Requests came in while this flush ran (checked before answering, so the answered callers'
        // next requests do not count): the flusher is behind, so more may join the next flush.
        let behind = {
            let requests = lock(&shared.requests);
            requests.latest != upto && !requests.closed
        };
        shared.flushed.send_replace(Flushed { upto, error });
        if behind {
            gather();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_requests_shares_few_flushes_and_every_one_is_answered() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&runs);
        let flusher = GroupFlush::start("test-flush", move || {
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            Ok(())
        })
        .unwrap();
        let waits: Vec<_> = (0..500).map(|_| flusher.flush()).collect();
        for result in futures_util::future::join_all(waits).await {
            assert_eq!(result, Ok(()));
        }
        let runs = runs.load(Ordering::SeqCst);
        assert!((1..=10).contains(&runs), "{runs} flushes for one burst");
    }

    #[tokio::test]
    async fn a_request_is_answered_only_by_a_flush_that_started_after_it() {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let flusher = GroupFlush::start("test-flush", move || {
            started_tx.send(()).unwrap();
            release_rx.lock().unwrap().recv().unwrap();
            Ok(())
        })
        .unwrap();
        let first = flusher.flush();
        started_rx.recv().unwrap();
        // Asked while the first flush runs: that flush may have missed our writes.
        let mut second = flusher.flush();
        release_tx.send(()).unwrap();
        first.await.unwrap();
        assert!(futures_util::poll!(&mut second).is_pending());
        started_rx.recv().unwrap();
        release_tx.send(()).unwrap();
        second.await.unwrap();
    }

    #[tokio::test]
    async fn only_a_flusher_that_is_behind_waits_for_more_requests() {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let gathered = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&gathered);
        let flusher = GroupFlush::start_gathering(
            "test-flush",
            move || {
                started_tx.send(()).unwrap();
                release_rx.lock().unwrap().recv().unwrap();
                Ok(())
            },
            move || {
                counter.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
        // A request on an idle flusher is flushed at once.
        let first = flusher.flush();
        started_rx.recv().unwrap();
        release_tx.send(()).unwrap();
        first.await.unwrap();
        assert_eq!(gathered.load(Ordering::SeqCst), 0);
        // One that arrives while a flush runs finds the flusher behind: it gathers, then flushes.
        let second = flusher.flush();
        started_rx.recv().unwrap();
        let third = flusher.flush();
        release_tx.send(()).unwrap();
        second.await.unwrap();
        started_rx.recv().unwrap();
        release_tx.send(()).unwrap();
        third.await.unwrap();
        assert_eq!(gathered.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_flush_is_reported_to_its_waiters() {
        let flusher = GroupFlush::start("test-flush", || Err("disk full".to_owned())).unwrap();
        assert_eq!(flusher.flush().await, Err("disk full".to_owned()));
    }

    #[tokio::test]
    async fn dropping_the_flusher_answers_pending_requests_and_stops_the_thread() {
        let flusher = GroupFlush::start("test-flush", || Ok(())).unwrap();
        let pending = flusher.flush();
        drop(flusher);
        // Answered by the final round, or told the flusher stopped; never left hanging.
        let outcome = tokio::time::timeout(Duration::from_secs(10), pending).await;
        assert!(outcome.is_ok());
    }
}
