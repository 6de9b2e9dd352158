//! Parse throughput of the SSE and NDJSON stream parsers: MB/s over a long answer fed in network-sized
//! chunks, and the cost per event. Run: `cargo bench --bench parsers`.

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

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use switchboard::providers::ndjson::NdjsonParser;
use switchboard::providers::sse::SseParser;
use switchboard::providers::{parse_all, ParsedEvent, StreamParser};

/// Deltas in the synthetic answer: a long reply of about 10 000 tokens.
const EVENTS: usize = 10_000;
/// Timed repetitions per case; p50/p99 are over these.
const ROUNDS: usize = 60;

fn sse_body() -> Vec<u8> {
    let mut s = String::from(": OPENROUTER PROCESSING\n\n");
    for i in 0..EVENTS {
        let _ = writeln!(s,
            "data: {{\"id\":\"gen-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"deepseek/deepseek-chat-v3-0324:free\",\"provider\":\"Chutes\",\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"word{i} ünï \"}},\"finish_reason\":null}}]}}\n"
        );
    }
    s.push_str("data: {\"id\":\"gen-1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
    s.push_str("data: {\"id\":\"gen-1\",\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":10000,\"total_tokens\":10010}}\n\ndata: [DONE]\n\n");
    s.into_bytes()
}

fn ndjson_body() -> Vec<u8> {
    let mut s = String::new();
    for i in 0..EVENTS {
        let _ = writeln!(s,
            "{{\"model\":\"gpt-oss:120b\",\"created_at\":\"2025-01-01T00:00:00.000000Z\",\"message\":{{\"role\":\"assistant\",\"content\":\"word{i} ünï \"}},\"done\":false}}"
        );
    }
    s.push_str("{\"model\":\"gpt-oss:120b\",\"created_at\":\"2025-01-01T00:00:01Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":10,\"eval_count\":10000}\n");
    s.into_bytes()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn run<P: StreamParser>(name: &str, body: &[u8], chunk: usize, make: impl Fn() -> P) {
    let check: Vec<ParsedEvent> = parse_all(make(), body.chunks(chunk));
    assert_eq!(check.len(), EVENTS + 2, "{name}: unexpected event count");
    assert!(check.iter().all(Result::is_ok), "{name}: parse error");
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let events = parse_all(make(), black_box(body).chunks(chunk));
        times.push(start.elapsed());
        black_box(events);
    }
    times.sort_unstable();
    let p50 = percentile(&times, 0.5);
    let p99 = percentile(&times, 0.99);
    let mb = body.len() as f64 / 1_000_000.0;
    println!(
        "{name:<8} chunk {chunk:>5} B | {:.1} MB body | p50 {:>8.2?} ({:>6.0} MB/s, {:>5.0} ns/event) | p99 {:>8.2?} ({:>6.0} MB/s)",
        mb,
        p50,
        mb / p50.as_secs_f64(),
        p50.as_nanos() as f64 / (EVENTS + 2) as f64,
        p99,
        mb / p99.as_secs_f64(),
    );
}

fn main() {
    let sse = sse_body();
    let ndjson = ndjson_body();
    println!("{EVENTS} deltas per answer, {ROUNDS} rounds per case");
    for chunk in [7, 1024, 16 * 1024] {
        run("sse", &sse, chunk, SseParser::new);
        run("ndjson", &ndjson, chunk, NdjsonParser::new);
    }
}
