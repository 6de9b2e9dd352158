//! Plumbing both simulators share: the request log, fault queues, serving on 127.0.0.1:0 with a
//! cancellable shutdown, and playing a scripted streamed body.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{EndlessStats, Fault, SimRequest};
use crate::secrets::fingerprint_str;

/// How long `shutdown()` waits for open connections to close before abandoning the server task.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Chunks buffered between the body writer and the connection. Small, so pacing stays visible.
const BODY_CHANNEL_CAPACITY: usize = 16;

/// Locks a mutex, recovering from poisoning (a panicking test must not cascade into every later call).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The log, the "unexpected" list and the fault queues.
#[derive(Default)]
pub(crate) struct Book {
    pub requests: Mutex<Vec<SimRequest>>,
    pub unexpected: Mutex<Vec<String>>,
    faults: Mutex<Faults>,
    /// The tally of endless bodies ([`Fault::Unterminated`]).
    pub endless: Arc<Endless>,
}

/// Counts what endless bodies sent, shared with the tasks that write them.
#[derive(Default)]
pub(crate) struct Endless {
    started: AtomicUsize,
    open: AtomicUsize,
    bytes_sent: AtomicU64,
}

impl Endless {
    /// A snapshot.
    pub fn stats(&self) -> EndlessStats {
        EndlessStats {
            started: self.started.load(Ordering::SeqCst),
            open: self.open.load(Ordering::SeqCst),
            bytes_sent: self.bytes_sent.load(Ordering::SeqCst),
        }
    }

    /// Sends `piece` until the client hangs up or the server stops.
    async fn run(&self, piece: Bytes, tx: &mpsc::Sender<Bytes>, cancel: &CancellationToken) {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.open.fetch_add(1, Ordering::SeqCst);
        loop {
            let sent = tokio::select! {
                sent = tx.send(piece.clone()) => sent.is_ok(),
                () = cancel.cancelled() => false,
            };
            if !sent {
                break;
            }
            self.bytes_sent
                .fetch_add(piece.len() as u64, Ordering::SeqCst);
        }
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Faults {
    standing: Option<Fault>,
    queued: VecDeque<Fault>,
    by_key: HashMap<String, VecDeque<Fault>>,
}

impl Book {
    pub fn record(&self, request: SimRequest) {
        lock(&self.requests).push(request);
    }

    pub fn unexpected(&self, what: String) {
        tracing::warn!(%what, "simulator saw an unexpected request");
        lock(&self.unexpected).push(what);
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        lock(&self.faults).standing = fault;
    }

    pub fn push_fault(&self, fault: Fault) {
        lock(&self.faults).queued.push_back(fault);
    }

    pub fn push_key_fault(&self, key: &str, fault: Fault) {
        lock(&self.faults)
            .by_key
            .entry(key.to_owned())
            .or_default()
            .push_back(fault);
    }

    /// Records a request made with an unknown or missing `key`: unexpected, answered 401.
    pub fn unknown_key(&self, method: &str, path: &str, key: Option<&str>) {
        let fp = key.map(fingerprint_str);
        self.unexpected(format!(
            "{method} {path} with unknown key {}",
            fp.as_deref().unwrap_or("(none)")
        ));
        let mut request = SimRequest::new(method, path, 401);
        request.key_fingerprint = fp;
        self.record(request);
    }

    /// Records a request to a route the simulator does not serve (unexpected, answered 404) and returns
    /// the message for the client.
    pub fn unknown_route(&self, method: &Method, uri: &Uri) -> String {
        let what = format!("{method} {} (no such route)", uri.path());
        self.unexpected(what.clone());
        self.record(SimRequest::new(method.as_str(), uri.path(), 404));
        format!("simulator: {what}")
    }

    /// The JSON of a chat body; an unreadable one is recorded (unexpected, `log` with 400) and the
    /// message for the client returned.
    pub fn read_json(&self, log: &SimRequest, body: &[u8]) -> Result<serde_json::Value, String> {
        serde_json::from_slice(body).map_err(|e| {
            self.unexpected(format!(
                "{} {}: body is not JSON: {e}",
                log.method, log.path
            ));
            self.record(SimRequest {
                status: 400,
                ..log.clone()
            });
            format!("simulator: body is not JSON: {e}")
        })
    }

    /// A readable body with a wrong field: recorded as unexpected and as a 400 request; returns the
    /// message for the 400 answer.
    pub fn invalid(&self, log: &SimRequest, problem: &str) -> String {
        self.unexpected(format!("{} {}: {problem}", log.method, log.path));
        self.record(SimRequest {
            status: 400,
            ..log.clone()
        });
        format!("simulator: {problem}")
    }

    /// The fault for the next chat request with `key`: key queue, then global queue, then standing.
    pub fn take_fault(&self, key: Option<&str>) -> Option<Fault> {
        let mut f = lock(&self.faults);
        if let Some(k) = key {
            if let Some(fault) = f.by_key.get_mut(k).and_then(VecDeque::pop_front) {
                return Some(fault);
            }
        }
        f.queued.pop_front().or_else(|| f.standing.clone())
    }
}

/// A running axum server and the token that stops it.
pub(crate) struct Running {
    pub addr: SocketAddr,
    pub cancel: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Running {
    pub async fn serve(router: axum::Router, cancel: CancellationToken) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // No Nagle: every streamed chunk leaves at once. With Nagle a small write waits for the peer's
        // delayed ACK, which makes streaming jerky and lets paused-time tests advance past the wait.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "simulator could not set TCP_NODELAY");
            }
        });
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "simulator server stopped with an error");
            }
        });
        Ok(Self {
            addr,
            cancel,
            task: Mutex::new(Some(task)),
        })
    }

    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let task = lock(&self.task).take();
        if let Some(task) = task {
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                tracing::warn!("simulator connections still open after shutdown grace");
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(|k| k.trim().to_owned())
}

/// A JSON response with `status`.
pub(crate) fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// One step of a scripted streamed body.
pub(crate) enum Step {
    /// Send these bytes.
    Send(Bytes),
    /// Wait (skipped when zero).
    Sleep(Duration),
    /// Send nothing more but keep the connection open until the client leaves or the server stops.
    Stall,
    /// Send these bytes again and again until the client leaves or the server stops.
    Endless(Bytes),
}

/// A response body fed by `steps`, played in a task. Ends when the steps run out (the client then sees
/// exactly what the script sent: with or without an end marker).
pub(crate) fn scripted_body(
    steps: Vec<Step>,
    cancel: CancellationToken,
    endless: Arc<Endless>,
) -> Body {
    let (tx, rx) = mpsc::channel::<Bytes>(BODY_CHANNEL_CAPACITY);
    tokio::spawn(async move {
        for step in steps {
            match step {
                Step::Send(bytes) => {
                    if tx.send(bytes).await.is_err() {
                        return; // The client went away.
                    }
                }
                Step::Sleep(d) if d.is_zero() => {}
                Step::Sleep(d) => {
                    tokio::select! {
                        () = tokio::time::sleep(d) => {}
                        () = cancel.cancelled() => return,
                    }
                }
                Step::Stall => {
                    tokio::select! {
                        () = tx.closed() => {}
                        () = cancel.cancelled() => {}
                    }
                    return;
                }
                Step::Endless(piece) => {
                    endless.run(piece, &tx, &cancel).await;
                    return;
                }
            }
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    }))
}

/// Waits for `d` (or the shutdown); false if the server is shutting down.
pub(crate) async fn pause(d: Duration, cancel: &CancellationToken) -> bool {
    if d.is_zero() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = cancel.cancelled() => false,
    }
}
