//! The own-overhead metric: a request's time less what it spent waiting on providers, streamed (to the
//! first byte) and whole, on the paused clock so the figures are exact.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{finished, FakeRouter};
use crate::api::auth::Caller;
use crate::api::convert::Ask;
use crate::api::dispatch;
use crate::api::error::Surface;
use crate::api::metrics::Metrics;
use crate::api::stream::Framing;
use crate::api::ApiState;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::domain::{ChatMessage, ReplyEvent, Role};
use crate::router::RouterStatus;

/// 300 ms of switchboard's own waiting, then 2 s on the provider, then the answer.
fn state() -> (ApiState, watch::Sender<Arc<Config>>) {
    let router = FakeRouter {
        queue_wait: Duration::from_millis(300),
        upstream_wait: Duration::from_secs(2),
        ..FakeRouter::default()
    };
    let router = Arc::new(router);
    router
        .scripts
        .lock()
        .unwrap()
        .push_back(vec![ReplyEvent::Delta("hi".into()), finished()]);
    let (tx, rx) = watch::channel(Arc::new(Config::default()));
    let state = ApiState {
        router,
        metrics: Arc::new(Metrics::new()),
        clock: Arc::new(SystemClock),
        started: Instant::now(),
        config: rx,
        cut: CancellationToken::new(),
    };
    (state, tx)
}

fn ask() -> Ask {
    Ask {
        model: "m-free".into(),
        messages: vec![ChatMessage::new(Role::User, "hello")],
        params: crate::generation::GenerationParams::default(),
        max_tokens: None,
    }
}

fn overhead_sum(state: &ApiState) -> String {
    let text = state.metrics.render(&RouterStatus::default());
    text.lines()
        .find_map(|l| {
            l.strip_prefix("switchboard_api_latency_overhead_seconds_sum{surface=\"openai\"} ")
        })
        .unwrap_or_else(|| panic!("no overhead sum in {text}"))
        .to_owned()
}

/// Writes nothing: only the response's making matters here.
struct Silent;

impl Framing for Silent {
    fn event(&mut self, _event: &ReplyEvent, _out: &mut Vec<u8>) {}
}

/// The request begun as the local caller, answered whole or streamed, and when it arrived.
async fn begun(state: &ApiState, stream: bool) -> (dispatch::Begun, Instant) {
    let arrived = Instant::now();
    let caller = Caller::local();
    let (begun, _) = dispatch::begin_ask(state, Surface::OpenAi, &caller, ask(), stream, arrived)
        .await
        .unwrap();
    (begun, arrived)
}

#[tokio::test(start_paused = true)]
async fn a_whole_answer_counts_its_time_less_the_providers() {
    let (state, _config) = state();
    let (begun, arrived) = begun(&state, false).await;
    let (answer, _) = dispatch::gathered(&state, begun).await.unwrap();
    assert_eq!(answer.content, "hi");
    assert_eq!(arrived.elapsed(), Duration::from_millis(2_300));
    // The 2 s on the provider are not switchboard's; the 300 ms it kept the request waiting are.
    assert_eq!(overhead_sum(&state), "0.3");
}

#[tokio::test(start_paused = true)]
async fn a_stream_counts_its_time_to_the_first_byte_less_the_providers() {
    let (state, _config) = state();
    let (begun, _) = begun(&state, true).await;
    let _response = dispatch::streamed(&state, begun, Silent, "text/event-stream");
    assert_eq!(overhead_sum(&state), "0.3");
}
