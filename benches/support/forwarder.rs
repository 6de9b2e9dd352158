//! The reference for the API benchmark's added latency: the thinnest proxy axum and reqwest make (read
//! the body, post it upstream with the key, stream the answer back byte for byte; no parsing, routing,
//! accounting or store), on its own thread with a one-thread runtime, as switchboard runs on this
//! machine. What it adds is what a loopback hop through these libraries costs here, before any work.
//! [`spawn_process`] runs the same forwarder in a process of its own (this executable again), as
//! switchboard runs: what the process boundary adds on top of the hop.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;

#[derive(Clone)]
struct Upstream {
    client: reqwest::Client,
    url: String,
    key: String,
}

/// The environment variable that makes this executable the forwarder's own process: the upstream URL.
const CHILD_UPSTREAM: &str = "SB_BENCH_FORWARDER_UPSTREAM";
/// The key the child forwarder sends upstream.
const CHILD_KEY: &str = "SB_BENCH_FORWARDER_KEY";

/// Starts the forwarder in front of `upstream_url` (a chat completions URL) with `key`, on a thread
/// of this process; returns its chat completions URL. It runs until the process ends.
pub fn start(upstream_url: String, key: &str) -> String {
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let key = key.to_owned();
    std::thread::spawn(move || serve(upstream_url, key, |addr| tx.send(addr).unwrap()));
    format!("http://{}/v1/chat/completions", rx.recv().unwrap())
}

/// Starts the forwarder in a process of its own (this executable, see [`child_main`]); returns the
/// process (killed when dropped) and its chat completions URL.
pub async fn spawn_process(upstream_url: &str, key: &str) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD_UPSTREAM, upstream_url)
        .env(CHILD_KEY, key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .unwrap();
    let url = format!("http://{}/v1/chat/completions", line.trim());
    (child, url)
}

/// When this executable was started by [`spawn_process`]: serves the forwarder (its address on
/// stdout) until stdin closes (the benchmark ended or died), then exits. Returns otherwise.
pub fn child_main() {
    let Ok(upstream) = std::env::var(CHILD_UPSTREAM) else {
        return;
    };
    let key = std::env::var(CHILD_KEY).unwrap_or_default();
    std::thread::spawn(|| {
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        std::process::exit(0);
    });
    serve(upstream, key, |addr| println!("{addr}"));
    std::process::exit(0);
}

/// Runs the forwarder on a one-worker runtime on this thread; `bound` gets its address.
fn serve(upstream_url: String, key: String, bound: impl FnOnce(SocketAddr)) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let state = Upstream {
            client: reqwest::Client::builder()
                .tcp_nodelay(true)
                .build()
                .unwrap(),
            url: upstream_url,
            key,
        };
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(forward))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        bound(listener.local_addr().unwrap());
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await.unwrap();
    });
}

async fn forward(State(up): State<Upstream>, body: Bytes) -> Response {
    let answer = up
        .client
        .post(&up.url)
        .bearer_auth(&up.key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let content_type = answer.headers().get("content-type").cloned();
    let mut response = Response::new(Body::from_stream(answer.bytes_stream()));
    if let Some(v) = content_type {
        response.headers_mut().insert("content-type", v);
    }
    response
}
