//! The provider clients against the simulated OpenRouter and Ollama on 127.0.0.1: streaming, status
//! mapping, timeouts, truncation, mid-stream errors, listings, and that no error ever shows a key or URL.

// Scenarios and measurements read best whole, their arithmetic is on small known values (counts,
// nanoseconds, ids) and their JSON builders take values whole: these pedantic lints are off for test and
// benchmark code only.
#![allow(
    clippy::too_many_lines,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::needless_pass_by_value
)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use secrecy::SecretString;
use switchboard::clock::{next_utc_midnight, ManualClock, TokioClock, DAY_MS};
use switchboard::domain::{ChatMessage, Role};
use switchboard::providers::http::Timeouts;
use switchboard::providers::ollama::OllamaClient;
use switchboard::providers::openai::{Attribution, OpenAiClient};
use switchboard::providers::{
    ChatProvider, ProviderError, ProviderEvent, ProviderRequest, ProviderStream,
};
use switchboard::sim::ollama::{SimOllama, SimOllamaOptions};
use switchboard::sim::openrouter::{SimKey, SimOpenRouter, SimOpenRouterOptions};
use switchboard::sim::{reply_text, Fault, ReplyShape};

const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    idle: Duration::from_secs(10),
    deadline: Duration::from_secs(30),
};

fn key(k: &str) -> SecretString {
    SecretString::from(k.to_owned())
}

fn request(model: &str, prompt: &str) -> ProviderRequest {
    ProviderRequest {
        model: model.into(),
        messages: vec![
            ChatMessage::new(Role::System, "Be brief."),
            ChatMessage::new(Role::User, prompt),
        ],
        max_tokens: None,
        params: switchboard::generation::GenerationParams::default(),
    }
}

fn openrouter(sim: &SimOpenRouter) -> OpenAiClient {
    OpenAiClient::new(
        "openrouter",
        &sim.base_url(),
        TIMEOUTS,
        Attribution {
            referer: Some("https://example.invalid/switchboard".into()),
            title: Some("switchboard tests".into()),
        },
    )
    .unwrap()
}

fn ollama(sim: &SimOllama) -> OllamaClient {
    OllamaClient::new("ollama-cloud", &sim.base_url(), TIMEOUTS).unwrap()
}

/// Drains a stream: the events, and the error it ended with, if any.
async fn drain(mut stream: ProviderStream) -> (Vec<ProviderEvent>, Option<ProviderError>) {
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(e) => events.push(e),
            Err(e) => {
                assert!(stream.next().await.is_none(), "nothing may follow an error");
                return (events, Some(e));
            }
        }
    }
    (events, None)
}

fn text_of(events: &[ProviderEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            ProviderEvent::Delta(d) => Some(d.as_str()),
            _ => None,
        })
        .collect()
}

async fn stream_err(
    client: &dyn ChatProvider,
    k: Option<&SecretString>,
    model: &str,
) -> ProviderError {
    match client.chat_stream(k, request(model, "hi")).await {
        Ok(_) => panic!("expected an error before the stream"),
        Err(e) => e,
    }
}

const OR_MODEL: &str = "deepseek/deepseek-chat-v3-0324:free";

/// Drains an OpenRouter answer to `prompt` and checks it whole: the model first, the simulator's text,
/// and `Done` with usage and `stop`. Returns the events.
async fn assert_answered(stream: ProviderStream, prompt: &str) -> Vec<ProviderEvent> {
    let (events, error) = drain(stream).await;
    assert_eq!(error, None);
    assert_eq!(events[0], ProviderEvent::Model(OR_MODEL.into()));
    assert_eq!(text_of(&events), reply_text(OR_MODEL, prompt, 3));
    let Some(ProviderEvent::Done {
        usage,
        finish_reason,
    }) = events.last()
    else {
        panic!("no Done: {events:?}")
    };
    assert_eq!(finish_reason.as_deref(), Some("stop"));
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    events
}

#[tokio::test]
async fn openrouter_streams_a_whole_answer_with_keepalives_and_usage() {
    let sim = SimOpenRouter::start(SimOpenRouterOptions {
        reply: ReplyShape {
            keep_alive: true,
            ..ReplyShape::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let client = openrouter(&sim);
    let k = key("sk-or-sim-1");
    let stream = client
        .chat_stream(Some(&k), request(OR_MODEL, "hello there"))
        .await
        .unwrap();
    let events = assert_answered(stream, "hello there").await;
    assert!(events.len() > 4, "streamed in several deltas");

    // `openrouter/free` names the concrete model that answered.
    let stream = client
        .chat_stream(Some(&k), request("openrouter/free", "pick one"))
        .await
        .unwrap();
    let (events, error) = drain(stream).await;
    assert_eq!(error, None);
    assert_eq!(
        events[0],
        ProviderEvent::Model("mistralai/mistral-small-3.2-24b-instruct:free".into())
    );

    // The non-streaming call.
    let done = client
        .complete(Some(&k), request(OR_MODEL, "once"))
        .await
        .unwrap();
    assert_eq!(done.text, reply_text(OR_MODEL, "once", 3));
    assert_eq!(done.model.as_deref(), Some(OR_MODEL));
    assert!(done.usage.completion_tokens > 0);

    assert_eq!(sim.requests_for_key("sk-or-sim-1"), 3);
    assert_eq!(sim.requests()[0].model.as_deref(), Some(OR_MODEL));
    assert!(sim.requests()[0].stream);
    assert!(sim.unexpected().is_empty(), "{:?}", sim.unexpected());
    sim.shutdown().await;
}

#[tokio::test]
async fn ollama_streams_and_completes() {
    let sim = SimOllama::start(SimOllamaOptions::default()).await.unwrap();
    let client = ollama(&sim);
    let k = key("ollama-sim-1");
    let stream = client
        .chat_stream(Some(&k), request("gpt-oss:120b", "hallo"))
        .await
        .unwrap();
    let (events, error) = drain(stream).await;
    assert_eq!(error, None);
    assert_eq!(events[0], ProviderEvent::Model("gpt-oss:120b".into()));
    assert_eq!(text_of(&events), reply_text("gpt-oss:120b", "hallo", 3));
    assert!(matches!(
        events.last(),
        Some(ProviderEvent::Done { usage, finish_reason: Some(r) }) if r == "stop" && usage.completion_tokens > 0
    ));
    let done = client
        .complete(Some(&k), request("kimi-k2.5", "x"))
        .await
        .unwrap();
    assert_eq!(done.text, reply_text("kimi-k2.5", "x", 3));
    assert_eq!(done.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        client.tags(Some(&k)).await.unwrap(),
        SimOllamaOptions::default().models
    );
    assert_eq!(sim.requests_for_key("ollama-sim-1"), 2);
    assert_eq!(
        stream_err(&client, Some(&k), "no-such-model").await,
        ProviderError::ModelNotFound
    );
    assert!(sim.unexpected().is_empty(), "{:?}", sim.unexpected());

    // Local mode: no key at all.
    let local = SimOllama::start(SimOllamaOptions {
        keys: vec![],
        ..Default::default()
    })
    .await
    .unwrap();
    let stream = ollama(&local)
        .chat_stream(None, request("qwen3-next:80b", "local"))
        .await
        .unwrap();
    assert_eq!(drain(stream).await.1, None);
    assert!(local.unexpected().is_empty());
}

#[tokio::test]
async fn both_clients_send_the_answer_length_cap_in_their_own_wire_form() {
    let capped = |model: &str| ProviderRequest {
        max_tokens: Some(1024),
        params: switchboard::generation::GenerationParams::default(),
        ..request(model, "hi")
    };
    let or_sim = SimOpenRouter::start(SimOpenRouterOptions::default())
        .await
        .unwrap();
    let client = openrouter(&or_sim);
    let k = key("sk-or-sim-1");
    drain(
        client
            .chat_stream(Some(&k), capped(OR_MODEL))
            .await
            .unwrap(),
    )
    .await;
    client.complete(Some(&k), capped(OR_MODEL)).await.unwrap();
    drain(
        client
            .chat_stream(Some(&k), request(OR_MODEL, "uncapped"))
            .await
            .unwrap(),
    )
    .await;
    let sent: Vec<_> = or_sim
        .requests()
        .iter()
        .filter(|r| r.is_chat())
        .map(|r| r.max_tokens)
        .collect();
    assert_eq!(sent, [Some(1024), Some(1024), None], "`max_tokens`");

    let ol_sim = SimOllama::start(SimOllamaOptions::default()).await.unwrap();
    let client = ollama(&ol_sim);
    let k = key("ollama-sim-1");
    drain(
        client
            .chat_stream(Some(&k), capped("gpt-oss:120b"))
            .await
            .unwrap(),
    )
    .await;
    client
        .complete(Some(&k), capped("kimi-k2.5"))
        .await
        .unwrap();
    let sent: Vec<_> = ol_sim.requests().iter().map(|r| r.max_tokens).collect();
    assert_eq!(sent, [Some(1024), Some(1024)], "`options.num_predict`");
    assert!(or_sim.unexpected().is_empty() && ol_sim.unexpected().is_empty());
}

#[tokio::test]
async fn per_minute_and_daily_limits_are_per_account() {
    let day0 = 20_000 * DAY_MS + 10 * 3_600_000; // 10:00 UTC
    let clock = Arc::new(ManualClock::new(day0));
    let sim = SimOpenRouter::start(SimOpenRouterOptions {
        keys: vec![
            SimKey::new("sk-a1", "team", 3),
            SimKey::new("sk-a2", "team", 3),
            SimKey::new("sk-b", "solo", 50),
        ],
        per_minute_limit: Some(2),
        clock: clock.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = openrouter(&sim).with_clock(clock.clone());
    let (a1, a2, b) = (key("sk-a1"), key("sk-a2"), key("sk-b"));

    // Two requests per minute per account; the third is a per-minute 429 with its headers parsed.
    for _ in 0..2 {
        let s = client
            .chat_stream(Some(&a1), request(OR_MODEL, "x"))
            .await
            .unwrap();
        assert_eq!(drain(s).await.1, None);
    }
    let err = stream_err(&client, Some(&a2), OR_MODEL).await;
    assert_eq!(
        err,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(60)),
            reset_at_ms: Some(day0 + 60_000),
            daily: false
        }
    );
    // Another account is not affected.
    let s = client
        .chat_stream(Some(&b), request(OR_MODEL, "x"))
        .await
        .unwrap();
    assert_eq!(drain(s).await.1, None);

    // A minute later: the shared quota (3, the failed attempt counted) is spent for both keys.
    clock.advance(61_000);
    assert_eq!(sim.daily_used("team"), 3);
    let err = stream_err(&client, Some(&a2), OR_MODEL).await;
    assert_eq!(
        err,
        ProviderError::RateLimited {
            retry_after: None,
            reset_at_ms: Some(next_utc_midnight(day0)),
            daily: true
        }
    );
    let info = client.key_info(Some(&a1)).await.unwrap().unwrap();
    assert_eq!(info.free_daily_limit, Some(3));
    assert_eq!(info.free_remaining, Some(0));
    assert_eq!(info.is_free_tier, Some(true));

    // After 00:00 UTC the account may ask again.
    clock.set(next_utc_midnight(day0) + 1);
    let s = client
        .chat_stream(Some(&a1), request(OR_MODEL, "x"))
        .await
        .unwrap();
    assert_eq!(drain(s).await.1, None);
    assert_eq!(sim.requests_for_account("team"), 5);
    assert_eq!(sim.requests_for_key("sk-a2"), 2);
    assert!(sim.unexpected().is_empty(), "{:?}", sim.unexpected());
}

#[tokio::test]
async fn statuses_map_to_their_errors() {
    let sim = SimOpenRouter::start(SimOpenRouterOptions {
        max_prompt_chars: Some(1000),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = openrouter(&sim);
    let k = key("sk-or-sim-1");
    let cases = [
        (Fault::PaymentRequired, ProviderError::PaymentRequired),
        (
            Fault::Unauthorized,
            ProviderError::Unauthorized { status: 401 },
        ),
        (Fault::ServerError, ProviderError::Upstream { status: 500 }),
        (Fault::ContextTooLong, ProviderError::ContextTooLong),
    ];
    for (fault, expected) in cases {
        sim.push_fault(fault);
        assert_eq!(stream_err(&client, Some(&k), OR_MODEL).await, expected);
    }
    sim.push_key_fault("sk-or-sim-1", Fault::RateLimitDaily);
    assert!(matches!(
        stream_err(&client, Some(&k), OR_MODEL).await,
        ProviderError::RateLimited { daily: true, .. }
    ));
    sim.push_fault(Fault::RateLimitPerMinute {
        retry_after_secs: 7,
    });
    assert!(matches!(
        stream_err(&client, Some(&k), OR_MODEL).await,
        ProviderError::RateLimited { daily: false, retry_after: Some(d), .. } if d == Duration::from_secs(7)
    ));
    // A prompt over the limit is refused as too long; an unknown model is not found.
    let long = client
        .chat_stream(Some(&k), request(OR_MODEL, &"x".repeat(2000)))
        .await
        .err();
    assert_eq!(long, Some(ProviderError::ContextTooLong));
    assert_eq!(
        stream_err(&client, Some(&k), "nobody/nothing:free").await,
        ProviderError::ModelNotFound
    );
    assert!(sim.unexpected().is_empty(), "{:?}", sim.unexpected());

    // A key the simulator does not know: 401, and the simulator says so loudly.
    assert_eq!(
        stream_err(&client, Some(&key("sk-wrong")), OR_MODEL).await,
        ProviderError::Unauthorized { status: 401 }
    );
    assert_eq!(sim.unexpected().len(), 1);

    // Ollama maps the same way.
    let osim = SimOllama::start(SimOllamaOptions::default()).await.unwrap();
    let oc = ollama(&osim);
    let ok = key("ollama-sim-1");
    let cases = [
        (Fault::PaymentRequired, ProviderError::PaymentRequired),
        (
            Fault::Unauthorized,
            ProviderError::Unauthorized { status: 401 },
        ),
        (Fault::ServerError, ProviderError::Upstream { status: 500 }),
        (Fault::ContextTooLong, ProviderError::ContextTooLong),
    ];
    for (fault, expected) in cases {
        osim.push_fault(fault);
        assert_eq!(stream_err(&oc, Some(&ok), "gpt-oss:120b").await, expected);
    }
    osim.push_fault(Fault::RateLimitPerMinute {
        retry_after_secs: 3,
    });
    assert!(matches!(
        stream_err(&oc, Some(&ok), "gpt-oss:120b").await,
        ProviderError::RateLimited { daily: false, retry_after: Some(d), .. } if d == Duration::from_secs(3)
    ));
    assert!(osim.unexpected().is_empty(), "{:?}", osim.unexpected());
}

#[tokio::test]
async fn truncated_and_mid_stream_errors_end_the_stream() {
    let sim = SimOpenRouter::start(SimOpenRouterOptions::default())
        .await
        .unwrap();
    let client = openrouter(&sim);
    let k = key("sk-or-sim-1");
    sim.push_fault(Fault::TruncateAfter(2));
    let s = client
        .chat_stream(Some(&k), request(OR_MODEL, "x"))
        .await
        .unwrap();
    let (events, error) = drain(s).await;
    assert_eq!(error, Some(ProviderError::Truncated));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ProviderEvent::Delta(_)))
            .count(),
        2
    );

    sim.push_fault(Fault::MidStreamError {
        after: 1,
        message: "Provider returned error".into(),
    });
    let s = client
        .chat_stream(Some(&k), request(OR_MODEL, "x"))
        .await
        .unwrap();
    let (events, error) = drain(s).await;
    assert_eq!(
        error,
        Some(ProviderError::MidStream {
            message: "Provider returned error".into()
        })
    );
    assert_eq!(text_of(&events).split_whitespace().count(), 3);

    let osim = SimOllama::start(SimOllamaOptions::default()).await.unwrap();
    let oc = ollama(&osim);
    let ok = key("ollama-sim-1");
    osim.push_fault(Fault::TruncateAfter(3));
    let s = oc
        .chat_stream(Some(&ok), request("kimi-k2.5", "x"))
        .await
        .unwrap();
    assert_eq!(drain(s).await.1, Some(ProviderError::Truncated));
    osim.push_fault(Fault::MidStreamError {
        after: 0,
        message: "an error was encountered while running the model".into(),
    });
    let s = oc
        .chat_stream(Some(&ok), request("kimi-k2.5", "x"))
        .await
        .unwrap();
    assert!(matches!(
        drain(s).await.1,
        Some(ProviderError::MidStream { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_stalled_stream_is_stalled_and_a_hang_hits_the_deadline() {
    let sim = SimOpenRouter::start(SimOpenRouterOptions::default())
        .await
        .unwrap();
    let client = openrouter(&sim);
    let k = key("sk-or-sim-1");
    sim.push_fault(Fault::StallAfter(2));
    let s = client
        .chat_stream(Some(&k), request(OR_MODEL, "x"))
        .await
        .unwrap();
    let (events, error) = drain(s).await;
    assert_eq!(error, Some(ProviderError::Stalled));
    assert!(!events
        .iter()
        .any(|e| matches!(e, ProviderEvent::Done { .. })));

    // No response head within the idle timeout: stalled, long before the deadline.
    sim.push_fault(Fault::Hang);
    let started = tokio::time::Instant::now();
    assert_eq!(
        stream_err(&client, Some(&k), OR_MODEL).await,
        ProviderError::Stalled
    );
    assert!(started.elapsed() >= TIMEOUTS.idle && started.elapsed() < TIMEOUTS.deadline);

    // The non-streaming call waits for the head until the deadline.
    sim.push_fault(Fault::Hang);
    let started = tokio::time::Instant::now();
    assert_eq!(
        client.complete(Some(&k), request(OR_MODEL, "x")).await,
        Err(ProviderError::Timeout)
    );
    assert!(started.elapsed() >= TIMEOUTS.deadline);

    // A stream that trickles forever (a chunk every 8 s, under the idle timeout) meets the deadline.
    sim.set_reply_shape(ReplyShape {
        chunk_delay: Duration::from_secs(8),
        words_per_chunk: 1,
        ..ReplyShape::default()
    });
    let s = client
        .chat_stream(Some(&k), request(OR_MODEL, "x"))
        .await
        .unwrap();
    assert_eq!(drain(s).await.1, Some(ProviderError::Timeout));
    sim.set_reply_shape(ReplyShape::default());

    let osim = SimOllama::start(SimOllamaOptions::default()).await.unwrap();
    let oc = ollama(&osim);
    osim.push_fault(Fault::StallAfter(1));
    let s = oc
        .chat_stream(Some(&key("ollama-sim-1")), request("gpt-oss:120b", "x"))
        .await
        .unwrap();
    assert_eq!(drain(s).await.1, Some(ProviderError::Stalled));
    sim.shutdown().await;
    osim.shutdown().await;
}

#[tokio::test]
async fn models_key_and_tags_listings() {
    let sim = SimOpenRouter::start(SimOpenRouterOptions::default())
        .await
        .unwrap();
    let client = openrouter(&sim);
    let k = key("sk-or-sim-1");
    let models = client.models(None).await.unwrap();
    assert_eq!(models.len(), 3);
    assert!(models.iter().all(|m| m.is_free));
    assert_eq!(models[0].id, OR_MODEL);
    assert_eq!(models[0].context_length, Some(163_840));
    let info = client.key_info(Some(&k)).await.unwrap().unwrap();
    assert_eq!(info.free_daily_limit, Some(50));
    assert_eq!(info.free_remaining, Some(50));
    assert_eq!(info.label.as_deref(), Some("simulated key on default"));

    let no_key_endpoint = SimOpenRouter::start(SimOpenRouterOptions {
        key_endpoint: false,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        openrouter(&no_key_endpoint).key_info(Some(&k)).await,
        Ok(None)
    );
    assert!(sim.unexpected().is_empty() && no_key_endpoint.unexpected().is_empty());
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = OpenAiClient::new(
        "openrouter",
        &format!("http://{addr}/api/v1"),
        TIMEOUTS,
        Attribution::default(),
    )
    .unwrap();
    assert_eq!(
        stream_err(&client, None, OR_MODEL).await,
        ProviderError::Connect
    );
    let oc = OllamaClient::new("ollama", &format!("http://{addr}"), TIMEOUTS).unwrap();
    assert_eq!(oc.tags(None).await, Err(ProviderError::Connect));
}

#[tokio::test(start_paused = true)]
async fn no_error_shows_the_key_or_the_base_url() {
    const CANARY: &str = "sk-or-v1-CANARY0123456789abcdef";
    let sim = SimOpenRouter::start(SimOpenRouterOptions {
        keys: vec![SimKey::new(CANARY, "canary", 50)],
        ..Default::default()
    })
    .await
    .unwrap();
    let base = sim.base_url();
    let client = openrouter(&sim);
    let k = key(CANARY);
    let faults = [
        Fault::RateLimitPerMinute {
            retry_after_secs: 1,
        },
        Fault::RateLimitDaily,
        Fault::PaymentRequired,
        Fault::Unauthorized,
        Fault::ServerError,
        Fault::ContextTooLong,
        Fault::Hang,
        Fault::StallAfter(1),
        Fault::TruncateAfter(1),
        Fault::MidStreamError {
            after: 1,
            message: format!("upstream said {CANARY} at {base}/chat/completions"),
        },
        Fault::RateLimitResetOnly { reset_in_secs: 30 },
        Fault::Moderated,
        Fault::MidStreamStatus {
            after: 1,
            code: 429,
            message: format!("rate limited {CANARY} at {base}/chat/completions"),
        },
    ];
    let mut errors = Vec::new();
    for fault in faults {
        sim.push_fault(fault);
        match client.chat_stream(Some(&k), request(OR_MODEL, "x")).await {
            Err(e) => errors.push(e),
            Ok(s) => errors.push(drain(s).await.1.expect("an error")),
        }
    }
    errors.push(stream_err(&client, Some(&k), "missing/model").await);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dead = OpenAiClient::new(
        "x",
        &format!("http://{closed}/api/v1"),
        TIMEOUTS,
        Attribution::default(),
    )
    .unwrap();
    errors.push(stream_err(&dead, Some(&k), OR_MODEL).await);
    let kinds: Vec<&str> = errors
        .iter()
        .map(|e| match e {
            ProviderError::RateLimited { daily: false, .. } => "minute",
            ProviderError::RateLimited { daily: true, .. } => "daily",
            ProviderError::PaymentRequired => "402",
            ProviderError::Unauthorized { .. } => "401",
            ProviderError::Upstream { .. } => "5xx",
            ProviderError::ContextTooLong => "context",
            ProviderError::Timeout => "timeout",
            ProviderError::Stalled => "stalled",
            ProviderError::Truncated => "truncated",
            ProviderError::MidStream { .. } => "midstream",
            ProviderError::ModelNotFound => "404",
            ProviderError::Connect => "connect",
            ProviderError::Malformed(_) => "malformed",
            ProviderError::Refused => "refused",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "minute",
            "daily",
            "402",
            "401",
            "5xx",
            "context",
            "stalled",
            "stalled",
            "truncated",
            "midstream",
            "minute",
            "refused",
            "minute",
            "404",
            "connect"
        ]
    );
    for e in &errors {
        for shown in [format!("{e}"), format!("{e:?}")] {
            assert!(
                !shown.contains(CANARY) && !shown.contains("CANARY"),
                "{shown}"
            );
            assert!(
                !shown.contains("127.0.0.1") && !shown.contains("http"),
                "{shown}"
            );
        }
    }
    assert!(format!("{client:?}").find("127.0.0.1").is_none());
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn keepalives_count_as_activity_while_the_model_thinks() {
    // The model "thinks" for 60 s, far past the 10 s idle timeout, but keep-alive comments arrive
    // every 5 s: the stream is healthy and completes.
    let sim = SimOpenRouter::start(SimOpenRouterOptions {
        reply: ReplyShape {
            first_byte_latency: Duration::from_secs(60),
            chunk_delay: Duration::from_secs(2),
            keep_alive: true,
            ..ReplyShape::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let client = OpenAiClient::new(
        "openrouter",
        &sim.base_url(),
        Timeouts {
            deadline: Duration::from_secs(300),
            ..TIMEOUTS
        },
        Attribution::default(),
    )
    .unwrap();
    let s = client
        .chat_stream(Some(&key("sk-or-sim-1")), request(OR_MODEL, "think"))
        .await
        .unwrap();
    let (events, error) = drain(s).await;
    assert_eq!(error, None);
    assert_eq!(text_of(&events), reply_text(OR_MODEL, "think", 3));

    // Without keep-alives the same silence is a stall.
    sim.set_reply_shape(ReplyShape {
        first_byte_latency: Duration::ZERO,
        chunk_delay: Duration::from_secs(11),
        ..ReplyShape::default()
    });
    let s = client
        .chat_stream(Some(&key("sk-or-sim-1")), request(OR_MODEL, "think"))
        .await
        .unwrap();
    assert_eq!(drain(s).await.1, Some(ProviderError::Stalled));
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_daily_quota_resets_at_utc_midnight_on_tokio_time() {
    let start = 20_000 * DAY_MS + DAY_MS - 60_000; // 23:59 UTC
    let clock = Arc::new(TokioClock::starting_at(start));
    let sim = SimOpenRouter::start(SimOpenRouterOptions {
        keys: vec![SimKey::new("sk-day", "day", 1)],
        clock: clock.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = openrouter(&sim).with_clock(clock.clone());
    let k = key("sk-day");
    let s = client
        .chat_stream(Some(&k), request(OR_MODEL, "x"))
        .await
        .unwrap();
    assert_eq!(drain(s).await.1, None);
    assert!(matches!(
        stream_err(&client, Some(&k), OR_MODEL).await,
        ProviderError::RateLimited { daily: true, .. }
    ));
    tokio::time::advance(Duration::from_secs(61)).await;
    let s = client
        .chat_stream(Some(&k), request(OR_MODEL, "x"))
        .await
        .unwrap();
    assert_eq!(drain(s).await.1, None);
    assert_eq!(sim.daily_used("day"), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn clients_built_from_config_send_attribution_and_keep_model_names() {
    use switchboard::config::providers::{
        ExtraTierConfig, OpenRouterConfig, ProviderKind, RouterConfig,
    };
    let sim = SimOpenRouter::start(SimOpenRouterOptions::default())
        .await
        .unwrap();
    let config = OpenRouterConfig {
        base_url: sim.base_url(),
        referer: "https://example.invalid/bot".into(),
        title: "my bot".into(),
        ..OpenRouterConfig::default()
    };
    let client = OpenAiClient::openrouter(&config, &RouterConfig::default()).unwrap();
    assert_eq!(client.name(), "openrouter");
    let s = client
        .chat_stream(Some(&key("sk-or-sim-1")), request(OR_MODEL, "x"))
        .await
        .unwrap();
    assert_eq!(drain(s).await.1, None);
    let logged = &sim.requests()[0];
    assert_eq!(
        logged.referer.as_deref(),
        Some("https://example.invalid/bot")
    );
    assert_eq!(logged.title.as_deref(), Some("my bot"));

    let local = SimOllama::start(SimOllamaOptions {
        keys: vec![],
        models: vec!["llama3.2:3b-instruct-q4_K_M".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let tier = ExtraTierConfig {
        name: "local".into(),
        kind: ProviderKind::Ollama,
        base_url: local.base_url(),
        models: vec!["llama3.2:3b-instruct-q4_K_M".into()],
        key_env: None,
        context_window: 8192,
        capabilities: std::collections::BTreeMap::new(),
        embedding_models: Vec::new(),
    };
    let provider = switchboard::providers::client_for_tier(
        &tier,
        Timeouts::from_config(&RouterConfig::default()),
        std::sync::Arc::new(switchboard::clock::SystemClock),
    )
    .unwrap();
    assert_eq!(provider.name(), "local");
    let s = provider
        .chat_stream(None, request("llama3.2:3b-instruct-q4_K_M", "x"))
        .await
        .unwrap();
    assert_eq!(drain(s).await.1, None);
    assert_eq!(
        local.requests()[0].model.as_deref(),
        Some("llama3.2:3b-instruct-q4_K_M"),
        "model names are sent exactly as configured"
    );
    assert!(sim.unexpected().is_empty() && local.unexpected().is_empty());
}

// ---- What API clients ask beyond text: request bodies, tool calls, reasoning, images, embeddings ----

use switchboard::generation::{
    GenerationParams, ImageData, Reasoning, ResponseFormat, ToolCall, ToolCallDelta,
};
use switchboard::providers::wire::{ollama_body, openai_body, Dialect};
use switchboard::providers::EmbedCall;

/// A one-pixel PNG, base64 (67 bytes decoded).
const PIXEL_PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

fn weather_tool() -> serde_json::Value {
    serde_json::json!({"type": "function", "function": {"name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})
}

/// A request using every field: an image, a tool round trip in history, sampling, a schema, tools,
/// reasoning and an OpenRouter extra.
fn full_request() -> ProviderRequest {
    let mut user = ChatMessage::new(Role::User, "What is this, and the weather?");
    user.images.push(ImageData {
        media_type: "image/png".into(),
        base64: PIXEL_PNG.into(),
    });
    let mut call = ChatMessage::new(Role::Assistant, "");
    call.tool_calls.push(ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: "{\"city\":\"Paris\"}".into(),
    });
    let mut result = ChatMessage::new(Role::Tool, "{\"temp\":21}");
    result.tool_call_id = Some("call_1".into());
    let mut passthrough = serde_json::Map::new();
    passthrough.insert("provider".into(), serde_json::json!({"sort": "price"}));
    passthrough.insert("model".into(), "must-not-replace".into());
    ProviderRequest {
        model: "m".into(),
        messages: vec![
            ChatMessage::new(Role::System, "Be brief."),
            user,
            call,
            result,
        ],
        max_tokens: Some(64),
        params: GenerationParams {
            temperature: Some(0.5),
            top_p: Some(0.9),
            top_k: Some(40),
            min_p: Some(0.05),
            seed: Some(7),
            stop: vec!["END".into()],
            presence_penalty: Some(0.1),
            frequency_penalty: Some(0.2),
            repetition_penalty: Some(1.1),
            response_format: Some(ResponseFormat::JsonSchema {
                name: "answer".into(),
                schema: serde_json::json!({"type": "object"}),
                strict: Some(true),
            }),
            tools: vec![weather_tool()],
            tool_choice: Some("auto".into()),
            reasoning: Some(Reasoning::Effort("low".into())),
            passthrough,
            context_window: None,
            whole: false,
        },
    }
}

#[test]
fn openai_request_body_is_golden() {
    let body = openai_body(&full_request(), true, Dialect::OpenRouter);
    let image = format!("data:image/png;base64,{PIXEL_PNG}");
    let expected = serde_json::json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this, and the weather?"},
                {"type": "image_url", "image_url": {"url": image}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "content": "{\"temp\":21}", "tool_call_id": "call_1"}],
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": 64,
        "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 7,
        "presence_penalty": 0.1, "frequency_penalty": 0.2, "repetition_penalty": 1.1,
        "stop": ["END"],
        "response_format": {"type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}},
        "tools": [weather_tool()],
        "tool_choice": "auto",
        "reasoning": {"effort": "low"},
        "provider": {"sort": "price"},
    });
    assert_eq!(body, expected);
    // The bots' requests stay as they were: model, messages, stream, usage.
    let plain = openai_body(&request("m", "hi"), false, Dialect::OpenRouter);
    assert_eq!(
        plain,
        serde_json::json!({"model": "m", "stream": false, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]})
    );
}

/// Another OpenAI-compatible server (an extra tier of kind `openai`) gets OpenAI's own fields only:
/// no OpenRouter sampling extensions, no pass-through extras, the effort as `reasoning_effort`.
#[test]
fn an_openai_tier_gets_openais_fields_only() {
    let body = openai_body(&full_request(), true, Dialect::OpenAi);
    let openrouter = openai_body(&full_request(), true, Dialect::OpenRouter);
    for gone in [
        "top_k",
        "min_p",
        "repetition_penalty",
        "reasoning",
        "provider",
    ] {
        assert!(body.get(gone).is_none(), "{gone} in {body}");
        assert!(openrouter.get(gone).is_some(), "{gone}");
    }
    assert_eq!(body["reasoning_effort"], "low");
    for kept in [
        "messages",
        "max_tokens",
        "temperature",
        "top_p",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "stop",
        "response_format",
        "tools",
        "tool_choice",
        "stream_options",
    ] {
        assert_eq!(body[kept], openrouter[kept], "{kept}");
    }
}

#[test]
fn ollama_request_body_is_golden() {
    let mut req = full_request();
    req.params.reasoning = Some(Reasoning::Enabled(true));
    let body = ollama_body(&req, false);
    let expected = serde_json::json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is this, and the weather?", "images": [PIXEL_PNG]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "{\"temp\":21}", "tool_name": "get_weather"}],
        "stream": false,
        "options": {"num_predict": 64, "temperature": 0.5, "top_p": 0.9, "top_k": 40,
            "min_p": 0.05, "seed": 7, "presence_penalty": 0.1, "frequency_penalty": 0.2,
            "repeat_penalty": 1.1, "stop": ["END"]},
        "format": {"type": "object"},
        "tools": [weather_tool()],
        "think": true,
    });
    assert_eq!(body, expected);
    req.params.response_format = Some(ResponseFormat::JsonObject);
    req.params.reasoning = Some(Reasoning::Effort("high".into()));
    let body = ollama_body(&req, true);
    assert_eq!(body["format"], "json");
    assert_eq!(body["think"], "high");
}

/// A client, key and model for each simulator: OpenRouter's, then Ollama's.
fn both(
    sim: &SimOpenRouter,
    osim: &SimOllama,
) -> [(Arc<dyn ChatProvider>, SecretString, &'static str); 2] {
    [
        (Arc::new(openrouter(sim)), key("sk-or-sim-1"), OR_MODEL),
        (Arc::new(ollama(osim)), key("ollama-sim-1"), "gpt-oss:120b"),
    ]
}

fn tool_request(model: &str, prompt: &str) -> ProviderRequest {
    let mut req = request(model, prompt);
    req.params.tools = vec![weather_tool()];
    req
}

/// The tool calls of a stream, joined per index: (id, name, arguments).
fn joined_calls(events: &[ProviderEvent]) -> Vec<(Option<String>, String, String)> {
    let mut calls: Vec<(Option<String>, String, String)> = Vec::new();
    for e in events {
        if let ProviderEvent::ToolCall(ToolCallDelta {
            index,
            id,
            name,
            arguments,
        }) = e
        {
            let i = *index as usize;
            if calls.len() <= i {
                calls.resize(i + 1, (None, String::new(), String::new()));
            }
            if id.is_some() {
                calls[i].0.clone_from(id);
            }
            if let Some(n) = name {
                calls[i].1.push_str(n);
            }
            calls[i].2.push_str(arguments);
        }
    }
    calls
}

#[tokio::test]
async fn tool_calls_stream_through_both_formats() {
    let sim = SimOpenRouter::start(SimOpenRouterOptions::default())
        .await
        .unwrap();
    let k = key("sk-or-sim-1");
    let ask = tool_request(OR_MODEL, "call get_weather {\"city\":\"Paris\"}");
    let stream = openrouter(&sim).chat_stream(Some(&k), ask).await.unwrap();
    let (events, error) = drain(stream).await;
    assert_eq!(error, None);
    let pieces = events
        .iter()
        .filter(|e| matches!(e, ProviderEvent::ToolCall(_)))
        .count();
    assert!(
        pieces > 2,
        "OpenAI streams the arguments in pieces: {events:?}"
    );
    assert_eq!(
        joined_calls(&events),
        [(
            Some("call_sim_0".into()),
            "get_weather".into(),
            "{\"city\":\"Paris\"}".into()
        )]
    );
    assert!(
        matches!(events.last(), Some(ProviderEvent::Done { finish_reason: Some(r), .. }) if r == "tool_calls")
    );
    assert_eq!(text_of(&events), "");

    let osim = SimOllama::start(SimOllamaOptions::default()).await.unwrap();
    let ok = key("ollama-sim-1");
    let ask = tool_request("gpt-oss:120b", "call get_weather {\"city\":\"Paris\"}");
    let stream = ollama(&osim).chat_stream(Some(&ok), ask).await.unwrap();
    let (events, error) = drain(stream).await;
    assert_eq!(error, None);
    assert_eq!(
        joined_calls(&events),
        [(
            Some("call_0".into()),
            "get_weather".into(),
            "{\"city\":\"Paris\"}".into()
        )]
    );
    // The answer to the tool's result quotes it, in both formats.
    let mut answer = tool_request("gpt-oss:120b", "call get_weather {\"city\":\"Paris\"}");
    let mut call = ChatMessage::new(Role::Assistant, "");
    call.tool_calls.push(ToolCall {
        id: "call_0".into(),
        name: "get_weather".into(),
        arguments: "{\"city\":\"Paris\"}".into(),
    });
    let mut result = ChatMessage::new(Role::Tool, "sunny, 21 degrees");
    result.tool_call_id = Some("call_0".into());
    answer.messages.extend([call, result]);
    let stream = ollama(&osim)
        .chat_stream(Some(&ok), answer.clone())
        .await
        .unwrap();
    assert!(text_of(&drain(stream).await.0).contains("The tool said: sunny, 21 degrees"));
    answer.model = OR_MODEL.into();
    let stream = openrouter(&sim)
        .chat_stream(Some(&k), answer)
        .await
        .unwrap();
    assert!(text_of(&drain(stream).await.0).contains("The tool said: sunny, 21 degrees"));
    assert!(sim.unexpected().is_empty(), "{:?}", sim.unexpected());
    assert!(osim.unexpected().is_empty(), "{:?}", osim.unexpected());
}

#[tokio::test]
async fn reasoning_streams_before_the_answer_when_asked() {
    let sim = SimOpenRouter::start(SimOpenRouterOptions::default())
        .await
        .unwrap();
    let osim = SimOllama::start(SimOllamaOptions::default()).await.unwrap();
    for (client, k, model) in both(&sim, &osim) {
        let mut ask = request(model, "why?");
        ask.params.reasoning = Some(Reasoning::Enabled(true));
        let (events, error) = drain(client.chat_stream(Some(&k), ask).await.unwrap()).await;
        assert_eq!(error, None);
        let reasoning: String = events
            .iter()
            .filter_map(|e| match e {
                ProviderEvent::Reasoning(r) => Some(r.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(reasoning, "Let me think about this for a moment.");
        let first_reasoning = events
            .iter()
            .position(|e| matches!(e, ProviderEvent::Reasoning(_)));
        let first_text = events
            .iter()
            .position(|e| matches!(e, ProviderEvent::Delta(_)));
        assert!(first_reasoning < first_text, "{events:?}");
        assert_eq!(text_of(&events), reply_text(model, "why?", 3));
    }
    assert!(sim.unexpected().is_empty() && osim.unexpected().is_empty());
}

#[tokio::test]
async fn images_reach_both_simulators_intact() {
    use sha2::Digest as _;
    let sim = SimOpenRouter::start(SimOpenRouterOptions::default())
        .await
        .unwrap();
    let osim = SimOllama::start(SimOllamaOptions::default()).await.unwrap();
    let decoded: Vec<u8> = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(PIXEL_PNG)
            .unwrap()
    };
    let sha: String = sha2::Sha256::digest(&decoded)
        .iter()
        .fold(String::new(), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
            hex
        });
    for (client, k, model) in both(&sim, &osim) {
        let mut ask = request(model, "What is this?");
        ask.messages[1].images.push(ImageData {
            media_type: "image/png".into(),
            base64: PIXEL_PNG.into(),
        });
        let (events, _) = drain(client.chat_stream(Some(&k), ask).await.unwrap()).await;
        let said = format!("I see an image of {} bytes.", decoded.len());
        assert!(text_of(&events).ends_with(&said), "{}", text_of(&events));
    }
    for log in [sim.requests(), osim.requests()] {
        let chat = log.iter().find(|r| r.is_chat()).unwrap();
        assert_eq!(chat.images.len(), 1);
        assert_eq!(chat.images[0].bytes, decoded.len());
        assert_eq!(chat.images[0].sha256, sha);
    }
    // Broken base64 is refused loudly, as the real servers refuse it.
    let mut bad = request("gpt-oss:120b", "What is this?");
    bad.messages[1].images.push(ImageData {
        media_type: "image/png".into(),
        base64: "not base64!".into(),
    });
    let err = stream_err_req(&ollama(&osim), &key("ollama-sim-1"), bad).await;
    assert!(
        matches!(
            err,
            ProviderError::Upstream { status: 400 } | ProviderError::Malformed(_)
        ),
        "{err:?}"
    );
    assert_eq!(osim.unexpected().len(), 1, "{:?}", osim.unexpected());
    assert!(sim.unexpected().is_empty());
}

async fn stream_err_req(
    client: &dyn ChatProvider,
    k: &SecretString,
    req: ProviderRequest,
) -> ProviderError {
    match client.chat_stream(Some(k), req).await {
        Ok(_) => panic!("expected an error before the stream"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn wrong_field_types_are_refused_and_recorded() {
    let sim = SimOpenRouter::start(SimOpenRouterOptions::default())
        .await
        .unwrap();
    let mut ask = request(OR_MODEL, "hi");
    ask.params
        .passthrough
        .insert("reasoning".into(), serde_json::json!("yes"));
    let err = stream_err_req(&openrouter(&sim), &key("sk-or-sim-1"), ask).await;
    assert!(!matches!(err, ProviderError::RateLimited { .. }), "{err:?}");
    let unexpected = sim.unexpected();
    assert_eq!(unexpected.len(), 1);
    assert!(unexpected[0].contains("reasoning"), "{unexpected:?}");
    // Fields that are right are recorded as sent.
    let mut ask = request(OR_MODEL, "hi");
    ask.params.temperature = Some(0.25);
    drain(
        openrouter(&sim)
            .chat_stream(Some(&key("sk-or-sim-1")), ask)
            .await
            .unwrap(),
    )
    .await;
    let last = sim
        .requests()
        .into_iter()
        .rev()
        .find(switchboard::sim::SimRequest::is_chat)
        .unwrap();
    assert_eq!(last.fields["temperature"], 0.25);
    assert_eq!(last.fields["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn embeddings_through_both_simulators() {
    let sim = SimOpenRouter::start(SimOpenRouterOptions::default())
        .await
        .unwrap();
    let osim = SimOllama::start(SimOllamaOptions::default()).await.unwrap();
    let inputs = vec!["a cat".to_owned(), "a dog".to_owned(), "a cat".to_owned()];
    let or = openrouter(&sim)
        .embed(
            Some(&key("sk-or-sim-1")),
            EmbedCall {
                model: "openai/text-embedding-3-small".into(),
                inputs: inputs.clone(),
            },
        )
        .await
        .unwrap();
    let ol = ollama(&osim)
        .embed(
            Some(&key("ollama-sim-1")),
            EmbedCall {
                model: "nomic-embed-text-v2-moe".into(),
                inputs: inputs.clone(),
            },
        )
        .await
        .unwrap();
    for result in [&or, &ol] {
        assert_eq!(result.vectors.len(), 3);
        assert!(result.vectors.iter().all(|v| v.len() == 8));
        assert_eq!(result.vectors[0], result.vectors[2], "deterministic");
        assert_ne!(result.vectors[0], result.vectors[1]);
        assert_eq!(result.prompt_tokens, Some(6));
    }
    assert_eq!(or.vectors, ol.vectors, "the same texts, the same vectors");
    assert_eq!(ol.model.as_deref(), Some("nomic-embed-text-v2-moe"));
    // A chat model cannot embed: the servers say so with a 404 or 400.
    let err = ollama(&osim)
        .embed(
            Some(&key("ollama-sim-1")),
            EmbedCall {
                model: "gpt-oss:120b".into(),
                inputs: inputs.clone(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Upstream { status: 400 } | ProviderError::Malformed(_)
        ),
        "{err:?}"
    );
    let err = openrouter(&sim)
        .embed(
            Some(&key("sk-or-sim-1")),
            EmbedCall {
                model: OR_MODEL.into(),
                inputs,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err, ProviderError::ModelNotFound);
    assert!(sim.unexpected().is_empty() && osim.unexpected().is_empty());
}

#[tokio::test]
async fn models_listing_carries_capabilities() {
    use switchboard::sim::openrouter::SimModel;
    let sim = SimOpenRouter::start(SimOpenRouterOptions {
        models: vec![
            SimModel::free("v:free", 8192).with_vision().with_tools(),
            SimModel::free("r:free", 4096).with_reasoning(),
        ],
        ..SimOpenRouterOptions::default()
    })
    .await
    .unwrap();
    let models = openrouter(&sim).models(None).await.unwrap();
    let v = &models[0].capabilities;
    assert!(v.completion && v.vision && v.tools && !v.thinking && !v.embedding);
    let r = &models[1].capabilities;
    assert!(r.completion && !r.vision && !r.tools && r.thinking);
    assert_eq!(models[1].context_length, Some(4096));
}

#[tokio::test]
async fn json_format_and_tool_choice_none_are_honoured() {
    let sim = SimOpenRouter::start(SimOpenRouterOptions::default())
        .await
        .unwrap();
    let osim = SimOllama::start(SimOllamaOptions::default()).await.unwrap();
    for (client, k, model) in both(&sim, &osim) {
        let mut ask = request(model, "hi");
        ask.params.response_format = Some(ResponseFormat::JsonObject);
        let (events, _) = drain(client.chat_stream(Some(&k), ask).await.unwrap()).await;
        let answer: serde_json::Value = serde_json::from_str(&text_of(&events)).unwrap();
        assert_eq!(answer["answer"], reply_text(model, "hi", 3));
    }
    let mut ask = tool_request(OR_MODEL, "call get_weather {\"city\":\"Paris\"}");
    ask.params.tool_choice = Some("none".into());
    let (events, _) = drain(
        openrouter(&sim)
            .chat_stream(Some(&key("sk-or-sim-1")), ask)
            .await
            .unwrap(),
    )
    .await;
    assert!(joined_calls(&events).is_empty());
    assert!(text_of(&events).contains("You said: call get_weather"));
    assert!(sim.unexpected().is_empty() && osim.unexpected().is_empty());
}

/// Drains a stream that must be exactly one `get_weather` call for Paris with call id `id`.
async fn assert_weather_call(stream: ProviderStream, id: &str) -> Vec<ProviderEvent> {
    let (events, error) = drain(stream).await;
    assert_eq!(error, None);
    assert_eq!(
        joined_calls(&events),
        [(
            Some(id.to_owned()),
            "get_weather".into(),
            "{\"city\":\"Paris\"}".into()
        )]
    );
    events
}

/// A whole answer (`params.whole`, the local API's non-streamed requests): one `"stream": false`
/// request, read as the same events a stream gives (model, text, tool calls numbered in order,
/// usage and finish reason), in both formats.
#[tokio::test]
async fn whole_answers_are_one_request_and_the_same_events() {
    let sim = SimOpenRouter::start(SimOpenRouterOptions::default())
        .await
        .unwrap();
    let osim = SimOllama::start(SimOllamaOptions::default()).await.unwrap();
    let (k, ok) = (key("sk-or-sim-1"), key("ollama-sim-1"));
    let whole = |mut r: ProviderRequest| {
        r.params.whole = true;
        r
    };

    let stream = openrouter(&sim)
        .chat_stream(Some(&k), whole(request(OR_MODEL, "all at once")))
        .await
        .unwrap();
    assert_answered(stream, "all at once").await;
    assert!(!sim.requests()[0].stream, "asked for one body");

    let ask = whole(tool_request(
        OR_MODEL,
        "call get_weather {\"city\":\"Paris\"}",
    ));
    let stream = openrouter(&sim).chat_stream(Some(&k), ask).await.unwrap();
    let events = assert_weather_call(stream, "call_sim_0").await;
    assert!(
        matches!(events.last(), Some(ProviderEvent::Done { finish_reason: Some(r), .. }) if r == "tool_calls")
    );

    let stream = ollama(&osim)
        .chat_stream(Some(&ok), whole(request("gpt-oss:120b", "alles")))
        .await
        .unwrap();
    let (events, error) = drain(stream).await;
    assert_eq!(error, None);
    assert_eq!(text_of(&events), reply_text("gpt-oss:120b", "alles", 3));
    assert!(matches!(events.last(), Some(ProviderEvent::Done { .. })));
    assert!(!osim.requests()[0].stream, "asked for one body");
    let ask = whole(tool_request(
        "gpt-oss:120b",
        "call get_weather {\"city\":\"Paris\"}",
    ));
    let stream = ollama(&osim).chat_stream(Some(&ok), ask).await.unwrap();
    assert_weather_call(stream, "call_0").await;

    // An unknown model is still the status's error, before any event.
    let missing = whole(request("no/such-model:free", "hi"));
    assert!(openrouter(&sim)
        .chat_stream(Some(&k), missing)
        .await
        .is_err());
    assert!(sim.unexpected().is_empty(), "{:?}", sim.unexpected());
    assert!(osim.unexpected().is_empty(), "{:?}", osim.unexpected());
}

/// A whole answer as OpenRouter sends it: whitespace it writes while the model works, then the
/// completion; tool calls without an index are numbered in order; an answer without choices or an
/// `error` body is an error, never an empty answer.
#[test]
fn whole_answers_read_like_their_stream() {
    let body = br#"

{"model":"m","choices":[{"message":{"role":"assistant","content":"Hi","tool_calls":[
 {"id":"a","type":"function","function":{"name":"f","arguments":"{}"}},
 {"id":"b","type":"function","function":{"name":"g","arguments":"{\"x\":1}"}}]},
 "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
    let events = switchboard::providers::sse::SseParser::whole_answer(body);
    let call = |index: u32, id: &str, name: &str, arguments: &str| {
        Ok(ProviderEvent::ToolCall(ToolCallDelta {
            index,
            id: Some(id.into()),
            name: Some(name.into()),
            arguments: arguments.into(),
        }))
    };
    assert_eq!(
        events,
        vec![
            Ok(ProviderEvent::Model("m".into())),
            Ok(ProviderEvent::Delta("Hi".into())),
            call(0, "a", "f", "{}"),
            call(1, "b", "g", "{\"x\":1}"),
            Ok(ProviderEvent::Done {
                usage: switchboard::domain::Usage {
                    prompt_tokens: 3,
                    completion_tokens: 2
                },
                finish_reason: Some("tool_calls".into()),
            }),
        ]
    );
    let empty =
        switchboard::providers::sse::SseParser::whole_answer(br#"{"model":"m","choices":[]}"#);
    assert!(
        matches!(empty[..], [Err(ProviderError::Malformed(_))]),
        "{empty:?}"
    );
    let failed = switchboard::providers::sse::SseParser::whole_answer(
        br#"{"error":{"message":"overloaded","code":502}}"#,
    );
    assert!(matches!(failed[..], [Err(_)]), "{failed:?}");
    let cut = switchboard::providers::sse::SseParser::whole_answer(br#"{"model":"m","choi"#);
    assert!(
        matches!(cut[..], [Err(ProviderError::Malformed(_))]),
        "{cut:?}"
    );
}
