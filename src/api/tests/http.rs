//! The API over real HTTP on 127.0.0.1 against [`FakeRouter`]: statuses and bodies of each failure
//! before the first byte, the answering model in body and headers, the body cap, and a client that
//! hangs up cancelling the reply.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{finished, free_source, FakeRouter};
use crate::api::auth::LoopbackOnly;
use crate::api::metrics::Metrics;
use crate::api::{routes, ApiState};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::domain::{AnswerSource, FailureKind, ReplyEvent, TierName, UserFacingError};

/// A server over `router`; the config sender lives as long as the test.
struct Server {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    config: watch::Sender<Arc<Config>>,
}

async fn serve(router: Arc<FakeRouter>, max_body: usize) -> Server {
    let (tx, rx) = watch::channel(Arc::new(Config::default()));
    let metrics = Arc::new(Metrics::new());
    let state = ApiState {
        router,
        metrics: metrics.clone(),
        clock: Arc::new(SystemClock),
        started: tokio::time::Instant::now(),
        config: rx,
        cut: CancellationToken::new(),
    };
    let app = routes(state, Arc::new(LoopbackOnly), max_body);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Server {
        addr,
        metrics,
        config: tx,
    }
}

fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

async fn post(addr: SocketAddr, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .json(body)
        .send()
        .await
        .unwrap()
}

fn failing(failure: UserFacingError) -> Arc<FakeRouter> {
    FakeRouter::answering(vec![
        ReplyEvent::Started(free_source()),
        ReplyEvent::Failed(failure),
    ])
}

#[tokio::test]
async fn failures_before_the_first_byte_get_their_status_in_each_surfaces_shape() {
    let cases = [
        (
            UserFacingError::new(FailureKind::Unavailable, "no tier can answer"),
            503,
        ),
        (
            UserFacingError::new(FailureKind::BadRequest, "this model takes no images"),
            400,
        ),
        (
            UserFacingError::new(FailureKind::Interrupted, "upstream failed"),
            502,
        ),
        (
            UserFacingError::new(FailureKind::UnknownModel, "no such model"),
            404,
        ),
    ];
    for (failure, status) in cases {
        let s = serve(failing(failure.clone()), 1 << 20).await;
        let r = post(s.addr, "/v1/chat/completions", &chat_body("auto", true)).await;
        assert_eq!(r.status().as_u16(), status, "{failure:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["message"], failure.message.as_str());
        assert!(body["error"]["code"].is_string());
        let r = post(s.addr, "/api/chat", &chat_body("auto", true)).await;
        assert_eq!(r.status().as_u16(), status);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body, json!({"error": failure.message}));
    }
}

#[tokio::test]
async fn a_long_rate_limit_is_429_with_retry_after_and_no_retry() {
    let failure = UserFacingError::new(
        FailureKind::RateLimited,
        "the free quota is spent until 00:00 UTC",
    )
    .retry_after(Duration::from_secs(7200));
    let s = serve(failing(failure), 1 << 20).await;
    let r = post(s.addr, "/v1/chat/completions", &chat_body("free", false)).await;
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "7200");
    assert_eq!(r.headers()["x-should-retry"], "false");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn an_unknown_model_is_404_before_the_router_is_asked() {
    let router = FakeRouter::answering(vec![]);
    let s = serve(router.clone(), 1 << 20).await;
    let r = post(s.addr, "/v1/chat/completions", &chat_body("gpt-9", false)).await;
    assert_eq!(r.status().as_u16(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["param"], "model");
    let r = post(s.addr, "/api/chat", &chat_body("gpt-9", false)).await;
    assert_eq!(r.status().as_u16(), 404);
    assert!(router.seen.lock().unwrap().is_empty());
    let r = reqwest::get(format!("http://{}/v1/models/gpt-9", s.addr))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = reqwest::get(format!("http://{}/v1/models/vendor/m-paid-70b", s.addr))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn a_wrong_type_is_400_naming_the_field_and_a_large_body_413() {
    let s = serve(FakeRouter::answering(vec![]), 4096).await;
    let bad = json!({"model": "auto", "messages": [{"role": "user", "content": 5}]});
    let r = post(s.addr, "/api/chat", &bad).await;
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("messages[0].content"),
        "{body}"
    );
    let bad = json!({"model": "auto", "messages": [], "temperature": "hot"});
    let r = post(s.addr, "/v1/chat/completions", &bad).await;
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("temperature"),
        "{body}"
    );
    let big = json!({"model": "auto", "messages": [{"role": "user", "content": "x".repeat(8000)}]});
    for path in ["/api/chat", "/v1/chat/completions"] {
        let r = post(s.addr, path, &big).await;
        assert_eq!(r.status().as_u16(), 413, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"].is_object() || body["error"].is_string(),
            "{body}"
        );
    }
}

#[tokio::test]
async fn the_model_that_answered_is_in_the_body_and_the_headers() {
    let paid = AnswerSource {
        tier: TierName::paid(),
        provider: "ollama-cloud".into(),
        model: "vendor/m-paid-70b".into(),
        key_fingerprint: None,
    };
    let router = FakeRouter::answering(vec![
        ReplyEvent::Started(free_source()),
        ReplyEvent::Started(paid),
        ReplyEvent::Delta("Hi".into()),
        finished(),
    ]);
    let s = serve(router, 1 << 20).await;
    let r = post(s.addr, "/v1/chat/completions", &chat_body("auto", false)).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-switchboard-tier"], "paid");
    assert_eq!(r.headers()["x-switchboard-provider"], "ollama-cloud");
    assert_eq!(r.headers()["x-switchboard-model"], "vendor/m-paid-70b");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["model"], "vendor/m-paid-70b");
    assert_eq!(body["choices"][0]["message"]["content"], "Hi");
    assert_eq!(body["usage"]["total_tokens"], 5);
    let r = post(s.addr, "/api/chat", &chat_body("auto", true)).await;
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    assert_eq!(r.headers()["x-switchboard-model"], "vendor/m-paid-70b");
    let text = r.text().await.unwrap();
    assert!(
        text.lines()
            .all(|l| l.contains("\"model\":\"vendor/m-paid-70b\"")),
        "{text}"
    );
    let metrics = s.metrics.render(&crate::router::RouterStatus::default());
    assert!(
        metrics.contains("switchboard_api_fallbacks_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_that_hangs_up_drops_the_reply_stream() {
    let router = FakeRouter::answering(vec![
        ReplyEvent::Started(free_source()),
        ReplyEvent::Delta("Hi".into()),
    ]);
    router.hold_open.store(true, Ordering::SeqCst);
    let s = serve(router.clone(), 1 << 20).await;
    let mut r = post(s.addr, "/v1/chat/completions", &chat_body("auto", true)).await;
    assert_eq!(r.status().as_u16(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    assert_eq!(router.dropped.load(Ordering::SeqCst), 0);
    drop(r);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while router.dropped.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reply stream was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let metrics = s.metrics.render(&crate::router::RouterStatus::default());
    assert!(
        metrics.contains("cause=\"client_disconnect\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn listings_health_and_the_unimplemented_routes() {
    let s = serve(FakeRouter::answering(vec![]), 1 << 20).await;
    let get = |path: &str| reqwest::get(format!("http://{}{path}", s.addr));
    let tags: Value = get("/api/tags").await.unwrap().json().await.unwrap();
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["auto", "free", "paid", "m-free", "vendor/m-paid-70b"]
    );
    assert_eq!(tags["models"][4]["model"], "vendor/m-paid-70b");
    assert_eq!(tags["models"][4]["details"]["parameter_size"], "70B");
    let show: Value = post(s.addr, "/api/show", &json!({"name": "m-free"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(show["parameters"], "num_ctx                        131072");
    assert_eq!(show["capabilities"], json!(["completion", "tools"]));
    let models: Value = get("/v1/models").await.unwrap().json().await.unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][3]["id"], "m-free");
    assert_eq!(
        get("/").await.unwrap().text().await.unwrap(),
        "Ollama is running"
    );
    let version: Value = get("/api/version").await.unwrap().json().await.unwrap();
    assert!(version["version"].is_string());
    let r = post(s.addr, "/api/pull", &json!({"model": "llama3"})).await;
    assert_eq!(r.status().as_u16(), 501);
    let health = get("/health").await.unwrap();
    assert_eq!(
        health.status().as_u16(),
        503,
        "no tier can answer the fake router"
    );
    let r = get("/api/providers/openrouter/stats").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = get("/api/tags/nobody").await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("route=\"/api/tags\",status=\"200\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn no_first_token_before_the_request_deadline_is_504() {
    let router = FakeRouter::answering(vec![ReplyEvent::Started(free_source())]);
    router.hold_open.store(true, Ordering::SeqCst);
    let s = serve(router.clone(), 1 << 20).await;
    s.config.send_modify(|c| {
        let mut c2 = (**c).clone();
        c2.api.request_deadline_secs = 1;
        *c = Arc::new(c2);
    });
    let r = post(s.addr, "/v1/chat/completions", &chat_body("auto", true)).await;
    assert_eq!(r.status().as_u16(), 504);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deadline"),
        "{body}"
    );
    assert_eq!(
        router.dropped.load(Ordering::SeqCst),
        1,
        "the router's stream is dropped"
    );
}

#[tokio::test]
async fn a_secret_split_across_deltas_never_reaches_the_client() {
    let key = "sk-or-v1-APItestSPLITkey0123456789";
    crate::secrets::install([&secrecy::SecretString::from(key)]);
    let router = FakeRouter::answering(vec![
        ReplyEvent::Started(free_source()),
        ReplyEvent::Delta("the key is sk-or-v1-APItest".into()),
        ReplyEvent::Delta("SPLITkey0123456789, done".into()),
        finished(),
    ]);
    let server = serve(router, 1 << 20).await;
    for (path, stream) in [
        ("/v1/chat/completions", true),
        ("/v1/chat/completions", false),
        ("/api/chat", true),
        ("/api/chat", false),
    ] {
        let body = post(server.addr, path, &chat_body("auto", stream))
            .await
            .text()
            .await
            .unwrap();
        assert!(!body.contains("SPLIT"), "{path} stream={stream}: {body}");
        assert!(
            body.contains("[redacted]"),
            "{path} stream={stream}: {body}"
        );
    }
}
