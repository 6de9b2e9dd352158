//! Tests of the HTTP helpers every provider uses: how statuses, `Retry-After` and error codes map to
//! the error taxonomy, how a request URL is built, and that the wait on a provider is measured.

use super::*;
use reqwest::header::HeaderValue;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

const NOW: i64 = 1_700_000_000_000;

#[test]
fn rate_limits_per_minute_and_daily() {
    let per_minute = map_status(
        429,
        &headers(&[
            ("retry-after", "7"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &(NOW + 30_000).to_string()),
        ]),
        r#"{"error":{"message":"Rate limit exceeded: free-models-per-min.","code":429}}"#,
        NOW,
    );
    assert_eq!(
        per_minute,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            reset_at_ms: Some(NOW + 30_000),
            daily: false
        }
    );
    let daily_by_message = map_status(
        429,
        &HeaderMap::new(),
        r#"{"error":{"message":"Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day","code":429}}"#,
        NOW,
    );
    assert!(matches!(
        daily_by_message,
        ProviderError::RateLimited { daily: true, .. }
    ));
    let daily_by_headers = map_status(
        429,
        &headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &(NOW / 1000 + 3600).to_string()),
        ]),
        "",
        NOW,
    );
    assert_eq!(
        daily_by_headers,
        ProviderError::RateLimited {
            retry_after: None,
            reset_at_ms: Some((NOW / 1000 + 3600) * 1000),
            daily: true
        }
    );
}

#[test]
fn other_statuses() {
    let h = HeaderMap::new();
    assert_eq!(map_status(402, &h, "", NOW), ProviderError::PaymentRequired);
    assert_eq!(
        map_status(401, &h, "", NOW),
        ProviderError::Unauthorized { status: 401 }
    );
    assert_eq!(
        map_status(403, &h, "", NOW),
        ProviderError::Unauthorized { status: 403 }
    );
    assert_eq!(
        map_status(
            400,
            &h,
            r#"{"error":{"message":"This endpoint's maximum context length is 8192 tokens. However, you requested about 9000 tokens"}}"#,
            NOW
        ),
        ProviderError::ContextTooLong
    );
    assert_eq!(
        map_status(400, &h, "bad", NOW),
        ProviderError::Upstream { status: 400 }
    );
    assert_eq!(
        map_status(404, &h, r#"{"error":"model 'x' not found"}"#, NOW),
        ProviderError::ModelNotFound
    );
    assert_eq!(
        map_status(503, &h, "", NOW),
        ProviderError::Upstream { status: 503 }
    );
}

#[test]
fn retry_after_as_an_http_date_is_a_wait_from_now() {
    // NOW is 2023-11-14T22:13:20Z.
    let limited = map_status(
        429,
        &headers(&[("retry-after", "Tue, 14 Nov 2023 22:13:50 GMT")]),
        "",
        NOW,
    );
    assert_eq!(
        limited,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
            reset_at_ms: None,
            daily: false
        }
    );
    let past = map_status(
        429,
        &headers(&[("retry-after", "Tue, 14 Nov 2023 22:00:00 GMT")]),
        "",
        NOW,
    );
    assert!(matches!(past, ProviderError::RateLimited { retry_after: Some(d), .. } if d.is_zero()));
    let garbage = map_status(429, &headers(&[("retry-after", "soon")]), "", NOW);
    assert!(matches!(
        garbage,
        ProviderError::RateLimited {
            retry_after: None,
            ..
        }
    ));
}

#[test]
fn a_moderation_403_is_a_refusal_not_a_bad_key() {
    let h = HeaderMap::new();
    let flagged = r#"{"error":{"code":403,"message":"meta-llama/llama-guard requires moderation on OpenInference. Your input was flagged for \"violence\"","metadata":{"reasons":["violence"],"flagged_input":"...","provider_name":"X","model_slug":"m"}}}"#;
    assert_eq!(map_status(403, &h, flagged, NOW), ProviderError::Refused);
    let metadata_only =
        r#"{"error":{"code":403,"message":"Forbidden","metadata":{"flagged_input":"..."}}}"#;
    assert_eq!(
        map_status(403, &h, metadata_only, NOW),
        ProviderError::Refused
    );
    assert_eq!(
        map_status(403, &h, r#"{"error":{"message":"Key disabled"}}"#, NOW),
        ProviderError::Unauthorized { status: 403 }
    );
    // A 401 is always the key, whatever it says.
    assert_eq!(
        map_status(401, &h, r#"{"error":{"message":"flagged"}}"#, NOW),
        ProviderError::Unauthorized { status: 401 }
    );
}

#[test]
fn stream_error_codes_map_to_the_same_taxonomy() {
    let v = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
    assert_eq!(
        map_stream_error(&v(
            r#"{"code":429,"message":"Rate limit exceeded: free-models-per-min."}"#
        )),
        ProviderError::RateLimited {
            retry_after: None,
            reset_at_ms: None,
            daily: false
        }
    );
    assert!(matches!(
        map_stream_error(&v(
            r#"{"code":"429","message":"Rate limit exceeded: free-models-per-day"}"#
        )),
        ProviderError::RateLimited { daily: true, .. }
    ));
    assert_eq!(
        map_stream_error(&v(r#"{"code":402,"message":"Insufficient credits"}"#)),
        ProviderError::PaymentRequired
    );
    assert_eq!(
        map_stream_error(&v(r#"{"code":401,"message":"User not found."}"#)),
        ProviderError::Unauthorized { status: 401 }
    );
    assert_eq!(
        map_stream_error(&v(r#"{"code":403,"message":"Your input was flagged"}"#)),
        ProviderError::Refused
    );
    assert_eq!(
        map_stream_error(&v(r#"{"code":"server_error","message":"overloaded"}"#)),
        ProviderError::MidStream {
            message: "overloaded".into()
        }
    );
    assert_eq!(
        map_stream_error(&v(r#"{"code":502,"message":"bad gateway"}"#)),
        ProviderError::MidStream {
            message: "bad gateway".into()
        }
    );
    assert_eq!(
        map_stream_error(&serde_json::Value::String("model crashed".into())),
        ProviderError::MidStream {
            message: "model crashed".into()
        }
    );
}

/// A request's URL is the base and the path joined, as `{base}{path}` was written before the base was
/// parsed once: a path prefix, a port and a trailing slash all kept or dropped as they were.
#[test]
fn a_request_url_is_the_base_then_the_path() {
    for (base, path, want) in [
        (
            "http://127.0.0.1:8080/api/v1",
            "/chat/completions",
            "http://127.0.0.1:8080/api/v1/chat/completions",
        ),
        (
            "https://openrouter.ai/api/v1/",
            "/key",
            "https://openrouter.ai/api/v1/key",
        ),
        (
            "https://ollama.com",
            "/api/chat",
            "https://ollama.com/api/chat",
        ),
        (
            "http://localhost:11434/",
            "/api/tags",
            "http://localhost:11434/api/tags",
        ),
    ] {
        let endpoint = Endpoint::new("p", base, Timeouts::default()).unwrap();
        let request = endpoint
            .request(reqwest::Method::POST, path, None)
            .build()
            .unwrap();
        assert_eq!(request.url().as_str(), want, "{base} + {path}");
    }
}

/// The time a call spends on the provider (its head, then its body) is what `wait::measured` counts.
#[tokio::test]
async fn the_wait_on_a_provider_is_measured() {
    let app = axum::Router::new().route(
        "/slow",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_millis(60)).await;
            "{}"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let endpoint = Endpoint::new("p", &format!("http://{addr}"), Timeouts::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (body, waited) = crate::providers::wait::measured(async {
        let request = endpoint.request(reqwest::Method::GET, "/slow", None);
        let response = send(request, deadline, deadline, &endpoint.clock)
            .await
            .unwrap();
        read_limited(response, deadline, 1024).await.unwrap()
    })
    .await;
    assert_eq!(body, b"{}");
    assert!(waited >= Duration::from_millis(60), "{waited:?}");
}
