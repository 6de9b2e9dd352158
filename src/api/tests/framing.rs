//! Byte-exact framing of fixed answers on both surfaces, and the property that any chunking of the
//! same answer upstream gives the same client-visible result.

use futures_util::stream::{self, StreamExt};
use proptest::prelude::*;
use tokio::time::Instant;

use super::finished;
use crate::api::ollama::ndjson::{Kind as OKind, Ndjson, Timing};
use crate::api::openai::sse::{Kind as SKind, Sse};
use crate::api::stream::framed;
use crate::domain::{FailureKind, ReplyEvent, UserFacingError};
use crate::generation::ToolCallDelta;

const AT: &str = "2026-12-01T12:00:00Z";

fn ndjson(kind: OKind) -> Ndjson {
    let now = Instant::now();
    Ndjson::new(
        kind,
        "m-free".into(),
        AT.into(),
        Timing {
            arrived: now,
            first: now,
        },
    )
}

fn sse(kind: SKind, usage: bool) -> Sse {
    Sse::new(
        kind,
        "chatcmpl-1".into(),
        1_764_590_400,
        "m-free".into(),
        usage,
    )
}

async fn bytes_of(framing: impl crate::api::stream::Framing, events: Vec<ReplyEvent>) -> String {
    let chunks: Vec<_> = framed(framing, stream::iter(events).boxed())
        .collect()
        .await;
    String::from_utf8(chunks.concat()).unwrap()
}

fn cut() -> ReplyEvent {
    ReplyEvent::Failed(UserFacingError::new(
        FailureKind::Interrupted,
        "the answer was cut off",
    ))
}

#[tokio::test(start_paused = true)]
async fn ollama_chat_ndjson_is_byte_exact() {
    let got = bytes_of(
        ndjson(OKind::Chat),
        vec![
            ReplyEvent::Delta("Hel".into()),
            ReplyEvent::Delta("lo".into()),
            finished(),
        ],
    )
    .await;
    let want = concat!(
        r#"{"model":"m-free","created_at":"2026-12-01T12:00:00Z","message":{"role":"assistant","content":"Hel"},"done":false}"#,
        "\n",
        r#"{"model":"m-free","created_at":"2026-12-01T12:00:00Z","message":{"role":"assistant","content":"lo"},"done":false}"#,
        "\n",
        r#"{"model":"m-free","created_at":"2026-12-01T12:00:00Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","total_duration":0,"load_duration":0,"prompt_eval_count":3,"prompt_eval_duration":0,"eval_count":2,"eval_duration":0}"#,
        "\n",
    );
    assert_eq!(got, want);
}

#[tokio::test(start_paused = true)]
async fn ollama_generate_thinking_tool_calls_and_a_cut_are_byte_exact() {
    let got = bytes_of(
        ndjson(OKind::Generate),
        vec![
            ReplyEvent::Reasoning("hm".into()),
            ReplyEvent::Delta("Hi".into()),
            finished(),
        ],
    )
    .await;
    let want = concat!(
        r#"{"model":"m-free","created_at":"2026-12-01T12:00:00Z","response":"","thinking":"hm","done":false}"#,
        "\n",
        r#"{"model":"m-free","created_at":"2026-12-01T12:00:00Z","response":"Hi","done":false}"#,
        "\n",
        r#"{"model":"m-free","created_at":"2026-12-01T12:00:00Z","response":"","done":true,"done_reason":"stop","context":[],"total_duration":0,"load_duration":0,"prompt_eval_count":3,"prompt_eval_duration":0,"eval_count":2,"eval_duration":0}"#,
        "\n",
    );
    assert_eq!(got, want);
    let piece = |id: Option<&str>, args: &str| {
        ReplyEvent::ToolCall(ToolCallDelta {
            index: 0,
            id: id.map(str::to_owned),
            name: id.map(|_| "weather".to_owned()),
            arguments: args.into(),
        })
    };
    let got = bytes_of(
        ndjson(OKind::Chat),
        vec![
            piece(Some("c1"), "{\"city\":"),
            piece(None, "\"Oslo\"}"),
            finished(),
        ],
    )
    .await;
    let first = got.lines().next().unwrap();
    assert_eq!(
        first,
        r#"{"model":"m-free","created_at":"2026-12-01T12:00:00Z","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"weather","arguments":{"city":"Oslo"}}}]},"done":false}"#
    );
    let got = bytes_of(
        ndjson(OKind::Chat),
        vec![ReplyEvent::Delta("Hi".into()), cut()],
    )
    .await;
    assert!(
        got.ends_with("}\n{\"error\":\"the answer was cut off\"}\n"),
        "{got}"
    );
}

#[tokio::test]
async fn openai_sse_is_byte_exact_with_the_usage_chunk_only_when_asked() {
    let events = vec![ReplyEvent::Delta("Hi".into()), finished()];
    let got = bytes_of(sse(SKind::Chat, true), events.clone()).await;
    let head = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764590400,"model":"m-free","choices":[{"index":0,"delta":"#;
    let want = format!(
        "data: {head}{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n\
         data: {head}{{\"content\":\"Hi\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n\
         data: {head}{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}]}}\n\n\
         data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"m-free\",\"choices\":[],\"usage\":{{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}}}\n\n\
         data: [DONE]\n\n"
    );
    assert_eq!(got, want);
    let without = bytes_of(sse(SKind::Chat, false), events).await;
    assert!(!without.contains("usage"), "{without}");
    assert!(without.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn openai_sse_tool_call_pieces_and_a_cut_are_byte_exact() {
    let got = bytes_of(
        sse(SKind::Chat, false),
        vec![
            ReplyEvent::ToolCall(ToolCallDelta {
                index: 0,
                id: Some("c1".into()),
                name: Some("weather".into()),
                arguments: String::new(),
            }),
            ReplyEvent::ToolCall(ToolCallDelta {
                index: 0,
                id: None,
                name: None,
                arguments: "{}".into(),
            }),
            ReplyEvent::Finished(crate::domain::Completion::default()),
        ],
    )
    .await;
    let lines: Vec<&str> = got.split("\n\n").collect();
    assert!(lines[1].ends_with(r#""delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"weather","arguments":""}}]},"logprobs":null,"finish_reason":null}]}"#), "{}", lines[1]);
    assert!(lines[2].ends_with(r#""delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]},"logprobs":null,"finish_reason":null}]}"#), "{}", lines[2]);
    assert!(
        lines[3].ends_with(r#""finish_reason":"tool_calls"}]}"#),
        "{}",
        lines[3]
    );
    let got = bytes_of(
        sse(SKind::Chat, true),
        vec![ReplyEvent::Delta("Hi".into()), cut()],
    )
    .await;
    assert!(
        got.ends_with("data: {\"error\":{\"code\":\"upstream_error\",\"message\":\"the answer was cut off\",\"param\":null,\"type\":\"api_error\"}}\n\n"),
        "{got}"
    );
    assert!(!got.contains("[DONE]"), "a cut stream never ends cleanly");
}

/// What a client sees of an NDJSON chat stream: the text and the final object.
fn ndjson_view(body: &str) -> (String, String) {
    let mut text = String::new();
    let mut last = String::new();
    for line in body.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        text.push_str(v["message"]["content"].as_str().unwrap());
        last = line.to_owned();
    }
    (text, last)
}

/// What a client sees of an SSE chat stream: the text and every chunk after the last content.
fn sse_view(body: &str) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut tail = Vec::new();
    for event in body.split("\n\n").filter(|e| !e.is_empty()) {
        let data = event.strip_prefix("data: ").unwrap();
        if data == "[DONE]" {
            tail.push(data.to_owned());
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        match v["choices"][0]["delta"]["content"].as_str() {
            Some(piece) if !piece.is_empty() => text.push_str(piece),
            _ => tail.push(data.to_owned()),
        }
    }
    (text, tail)
}

/// `text` cut at `cuts` (byte offsets on char boundaries).
fn chunked(text: &str, cuts: &[usize]) -> Vec<ReplyEvent> {
    let mut bounds: Vec<usize> = cuts
        .iter()
        .map(|c| c % (text.len() + 1))
        .filter(|c| text.is_char_boundary(*c))
        .collect();
    bounds.extend([0, text.len()]);
    bounds.sort_unstable();
    bounds.dedup();
    let mut events: Vec<ReplyEvent> = bounds
        .windows(2)
        .map(|w| ReplyEvent::Delta(text[w[0]..w[1]].to_owned()))
        .collect();
    events.push(finished());
    events
}

/// `events` as hyper hands a response body over: the first at once (the reply held before the
/// response began), the rest through a one-slot channel fed by a task of its own, one per task switch;
/// the task sleeps `pause` before the event at index `at`.
fn handed_over(
    mut events: Vec<ReplyEvent>,
    pause: Option<(usize, std::time::Duration)>,
) -> futures_util::stream::BoxStream<'static, ReplyEvent> {
    let first = events.remove(0);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for (i, event) in events.into_iter().enumerate() {
            if let Some((at, wait)) = pause {
                if i + 1 == at {
                    tokio::time::sleep(wait).await;
                }
            }
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    let rest = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    stream::iter([first]).chain(rest).boxed()
}

/// A burst handed over one delta per task switch leaves in two writes, not one per delta: the first
/// token at once, then everything the burst still held. The bytes are the same as framed at once.
#[tokio::test(start_paused = true)]
async fn a_burst_handed_over_piece_by_piece_leaves_in_two_writes() {
    let events = chunked(
        "one two three four five six seven eight",
        &[4, 8, 14, 19, 24, 28, 34],
    );
    let whole = bytes_of(sse(SKind::Chat, false), events.clone()).await;
    let chunks: Vec<_> = framed(sse(SKind::Chat, false), handed_over(events, None))
        .collect()
        .await;
    assert_eq!(
        chunks.len(),
        2,
        "the first token, then the rest of the burst"
    );
    assert!(String::from_utf8_lossy(&chunks[0]).contains("\"one \""));
    assert_eq!(String::from_utf8(chunks.concat()).unwrap(), whole);
}

/// Gathering never holds an event back for one that has not arrived: a delta the model sends a
/// second later leaves on its own, and the one before it left at once.
#[tokio::test(start_paused = true)]
async fn an_event_never_waits_for_a_later_one() {
    let events = chunked("first second third", &[6, 13]);
    let start = Instant::now();
    let pause = Some((2, std::time::Duration::from_secs(1)));
    let mut chunks = framed(sse(SKind::Chat, false), handed_over(events, pause));
    let mut seen = Vec::new();
    while let Some(chunk) = chunks.next().await {
        seen.push((start.elapsed(), String::from_utf8(chunk.to_vec()).unwrap()));
    }
    let when = |piece: &str| seen.iter().find(|(_, c)| c.contains(piece)).unwrap().0;
    assert_eq!(when("\"first \""), std::time::Duration::ZERO);
    assert_eq!(
        when("\"second \""),
        std::time::Duration::ZERO,
        "sent before the pause"
    );
    assert_eq!(when("\"third\""), std::time::Duration::from_secs(1));
}

proptest! {
    #[test]
    fn any_upstream_chunking_gives_the_same_client_view(
        text in "[a-zé ✓\n\"\\\\]{1,60}",
        cuts_a in proptest::collection::vec(0usize..200, 0..12),
        cuts_b in proptest::collection::vec(0usize..200, 0..12),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let a = bytes_of(ndjson(OKind::Chat), chunked(&text, &cuts_a)).await;
            let b = bytes_of(ndjson(OKind::Chat), chunked(&text, &cuts_b)).await;
            let (va, vb) = (ndjson_view(&a), ndjson_view(&b));
            prop_assert_eq!(&va.0, &text);
            prop_assert_eq!(va, vb);
            let a = bytes_of(sse(SKind::Chat, true), chunked(&text, &cuts_a)).await;
            let b = bytes_of(sse(SKind::Chat, true), chunked(&text, &cuts_b)).await;
            let (va, vb) = (sse_view(&a), sse_view(&b));
            prop_assert_eq!(&va.0, &text);
            prop_assert_eq!(va, vb);
            Ok(())
        })?;
    }
}
