//! The reference for the API benchmark's added latency: the thinnest proxy axum and reqwest make (read
//! the body, post it upstream with the key, stream the answer back byte for byte; no parsing, routing,
//! accounting or store), on its own thread with a one-thread runtime, as switchboard runs on this
//! machine. What it adds is what a loopback hop through these libraries costs here, before any work.

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

/// Starts the forwarder in front of `upstream_url` (a chat completions URL) with `key`; returns its
/// chat completions URL. It runs until the process ends.
pub fn start(upstream_url: String, key: &str) -> String {
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let key = key.to_owned();
    std::thread::spawn(move || {
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
            tx.send(listener.local_addr().unwrap()).unwrap();
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}/v1/chat/completions", rx.recv().unwrap())
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
