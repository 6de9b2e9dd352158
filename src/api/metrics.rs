//! `/metrics`: a small hand-written Prometheus registry. The label sets are fixed and few (surface,
//! route, status, provider, tier, token type, cause), so counters and histograms keyed by label values
//! behind one mutex each are all that is needed; a metrics crate would add a dependency and its own
//! registry for what fits in this file. No label ever carries a user, key or prompt. Names follow
//! OpenTelemetry's GenAI conventions where one exists, in base units with `_seconds` / `_total`.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::router::RouterStatus;

/// Bucket bounds for request durations and time to first chunk (seconds): LLM answers take from tens
/// of milliseconds (a cached or tiny answer) to minutes.
const DURATION_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];
/// Bucket bounds for switchboard's own added latency (seconds): its work should stay well under a
/// millisecond; the top bound catches a request kept waiting for an account to free up.
const OVERHEAD_BUCKETS: [f64; 11] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0,
];
/// Bucket bounds for token counts per request (OpenTelemetry's advice for `gen_ai.client.token.usage`).
const TOKEN_BUCKETS: [f64; 10] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262_144.0,
];

/// One histogram's counts.
#[derive(Clone, Debug, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len()];
        }
        for (i, bound) in bounds.iter().enumerate() {
            if value <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }
}

/// A histogram family: one histogram per label-value tuple.
#[derive(Debug)]
struct HistogramFamily {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    bounds: &'static [f64],
    series: Series<Histogram>,
}

impl HistogramFamily {
    const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        bounds: &'static [f64],
    ) -> Self {
        Self {
            name,
            help,
            labels,
            bounds,
            series: Series::new(),
        }
    }

    fn observe(&self, values: &[&str], value: f64) {
        self.series
            .update(values, |h: &mut Histogram| h.observe(self.bounds, value));
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        for (values, h) in &self.series.sorted() {
            let labels = label_text(self.labels, values);
            let sep = if labels.is_empty() { "" } else { "," };
            for (bound, count) in self.bounds.iter().zip(&h.counts) {
                let _ = writeln!(
                    out,
                    "{}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}",
                    self.name
                );
            }
            let _ = writeln!(
                out,
                "{}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
                self.name, h.count
            );
            let braces = braced(&labels);
            let _ = writeln!(out, "{}_sum{braces} {}", self.name, h.sum);
            let _ = writeln!(out, "{}_count{braces} {}", self.name, h.count);
        }
    }
}

/// A counter family.
#[derive(Debug)]
struct CounterFamily {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    series: Series<u64>,
}

impl CounterFamily {
    const fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self {
            name,
            help,
            labels,
            series: Series::new(),
        }
    }

    fn add(&self, values: &[&str], n: u64) {
        self.series.update(values, |total| *total += n);
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} counter", self.name);
        for (values, n) in &self.series.sorted() {
            let braces = braced(&label_text(self.labels, values));
            let _ = writeln!(out, "{}{braces} {n}", self.name);
        }
    }
}

/// The series of one family, keyed by their label values. The label sets are small (tens of series at
/// most), so a list searched in order serves them; unlike a map keyed by owned strings, recording into an
/// existing series allocates nothing, which matters on a request path that adds well under a millisecond.
#[derive(Debug)]
struct Series<T> {
    list: Mutex<Vec<(Vec<String>, T)>>,
}

impl<T: Clone + Default> Series<T> {
    const fn new() -> Self {
        Self {
            list: Mutex::new(Vec::new()),
        }
    }

    /// Applies `change` to the series labelled `values`, created empty the first time.
    fn update(&self, values: &[&str], change: impl FnOnce(&mut T)) {
        let mut list = lock(&self.list);
        let same = |key: &Vec<String>| key.iter().map(String::as_str).eq(values.iter().copied());
        if let Some((_, value)) = list.iter_mut().find(|(key, _)| same(key)) {
            change(value);
            return;
        }
        let mut value = T::default();
        change(&mut value);
        list.push((values.iter().map(|v| (*v).to_owned()).collect(), value));
    }

    /// A copy of every series, ordered by label values so the rendered text is stable.
    fn sorted(&self) -> Vec<(Vec<String>, T)> {
        let mut copy = lock(&self.list).clone();
        copy.sort_by(|a, b| a.0.cmp(&b.0));
        copy
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `a="x",b="y"` with values escaped as the text format requires.
fn label_text(names: &[&str], values: &[String]) -> String {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{n}=\"{v}\"")
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn braced(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

/// Why a stream ended without its answer, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortCause {
    /// The upstream failed after the first byte.
    Upstream,
    /// The request deadline passed.
    Deadline,
    /// The daemon stopped past its grace.
    Shutdown,
    /// The client hung up.
    ClientDisconnect,
}

impl AbortCause {
    fn as_str(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Deadline => "deadline",
            Self::Shutdown => "shutdown",
            Self::ClientDisconnect => "client_disconnect",
        }
    }
}

/// The API's metrics.
#[derive(Debug)]
pub struct Metrics {
    requests: CounterFamily,
    duration: HistogramFamily,
    tokens: HistogramFamily,
    first_chunk: HistogramFamily,
    overhead: HistogramFamily,
    fallbacks: CounterFamily,
    aborts: CounterFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry.
    pub const fn new() -> Self {
        Self {
            requests: CounterFamily::new(
                "switchboard_api_requests_total",
                "API requests answered, by surface, route and status.",
                &["surface", "route", "status"],
            ),
            duration: HistogramFamily::new(
                "gen_ai_client_operation_duration_seconds",
                "Duration of a model request, from arrival to its last byte.",
                &["gen_ai_provider_name", "tier"],
                &DURATION_BUCKETS,
            ),
            tokens: HistogramFamily::new(
                "gen_ai_client_token_usage",
                "Tokens used per model request.",
                &["gen_ai_provider_name", "gen_ai_token_type"],
                &TOKEN_BUCKETS,
            ),
            first_chunk: HistogramFamily::new(
                "gen_ai_client_operation_time_to_first_chunk_seconds",
                "Time from a request's arrival to the first piece of its answer.",
                &["gen_ai_provider_name", "tier"],
                &DURATION_BUCKETS,
            ),
            overhead: HistogramFamily::new(
                "switchboard_api_latency_overhead_seconds",
                "Time switchboard itself spends on an answered request: its time to the first byte \
                 (to the whole answer when not streamed) less the time spent waiting on providers.",
                &["surface"],
                &OVERHEAD_BUCKETS,
            ),
            fallbacks: CounterFamily::new(
                "switchboard_api_fallbacks_total",
                "Times a request moved to another account, model or tier before its first byte.",
                &[],
            ),
            aborts: CounterFamily::new(
                "switchboard_api_stream_aborts_total",
                "Answers that ended without completing after the first byte, by cause.",
                &["surface", "cause"],
            ),
        }
    }

    /// One request answered with `status` on `route` (the route pattern, never the raw path).
    pub fn request(&self, surface: &str, route: &str, status: u16) {
        self.requests.add(&[surface, route, &status.to_string()], 1);
    }

    /// Switchboard's own time on an answered request (see `dispatch::own_time`).
    pub fn overhead(&self, surface: &str, spent: Duration) {
        self.overhead.observe(&[surface], spent.as_secs_f64());
    }

    /// The first piece of an answer arrived after `after`; `attempts` `Started`s came before it.
    pub fn first_chunk(&self, provider: &str, tier: &str, after: Duration, attempts: u32) {
        self.first_chunk
            .observe(&[provider, tier], after.as_secs_f64());
        if attempts > 1 {
            self.fallbacks.add(&[], u64::from(attempts - 1));
        }
    }

    /// A request finished after `took`, with its token usage.
    pub fn finished(
        &self,
        provider: &str,
        tier: &str,
        took: Duration,
        usage: crate::domain::Usage,
    ) {
        self.duration.observe(&[provider, tier], took.as_secs_f64());
        self.tokens
            .observe(&[provider, "input"], usage.prompt_tokens as f64);
        self.tokens
            .observe(&[provider, "output"], usage.completion_tokens as f64);
    }

    /// An answer ended early after its first byte.
    pub fn abort(&self, surface: &str, cause: AbortCause) {
        self.aborts.add(&[surface, cause.as_str()], 1);
    }

    /// The whole text exposition, with the account gauges read from `status` now.
    pub fn render(&self, status: &RouterStatus) -> String {
        let mut out = String::with_capacity(4096);
        self.requests.render(&mut out);
        self.duration.render(&mut out);
        self.tokens.render(&mut out);
        self.first_chunk.render(&mut out);
        self.overhead.render(&mut out);
        self.fallbacks.render(&mut out);
        self.aborts.render(&mut out);
        render_accounts(status, &mut out);
        out
    }
}

/// Account state (one gauge per account, the state as a label with a fixed vocabulary) and free
/// requests left, from the router's status.
fn render_accounts(status: &RouterStatus, out: &mut String) {
    out.push_str("# HELP switchboard_account_up Whether an account can take requests now (1) or not (0), by state.\n");
    out.push_str("# TYPE switchboard_account_up gauge\n");
    let mut left = String::new();
    for tier in &status.tiers {
        for a in &tier.accounts {
            let state = state_word(&a.state);
            let labels = label_text(
                &["tier", "provider", "account", "state"],
                &[
                    tier.name.0.clone(),
                    a.provider.clone(),
                    a.account.clone(),
                    state.into(),
                ],
            );
            let up = u8::from(tier.enabled && state == "ready");
            let _ = writeln!(out, "switchboard_account_up{{{labels}}} {up}");
            if let Some(n) = a.requests_left_today {
                let labels = label_text(
                    &["provider", "account"],
                    &[a.provider.clone(), a.account.clone()],
                );
                let _ = writeln!(
                    left,
                    "switchboard_account_free_requests_left{{{labels}}} {n}"
                );
            }
        }
    }
    out.push_str(
        "# HELP switchboard_account_free_requests_left Free requests an account has left today.\n",
    );
    out.push_str("# TYPE switchboard_account_free_requests_left gauge\n");
    out.push_str(&left);
}

/// The first word of an account state (`ready`, `cooling`, `exhausted`, `disabled`): the full text
/// carries times and reasons, which would make the label set unbounded.
fn state_word(state: &str) -> &'static str {
    for word in ["ready", "cooling", "exhausted", "disabled"] {
        if state.starts_with(word) {
            return word;
        }
    }
    "other"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_text_format() {
        let m = Metrics::new();
        m.request("openai", "/v1/chat/completions", 200);
        m.request("openai", "/v1/chat/completions", 200);
        m.overhead("openai", Duration::from_micros(80));
        m.abort("ollama", AbortCause::ClientDisconnect);
        let text = m.render(&RouterStatus::default());
        assert!(text.contains(
            "switchboard_api_requests_total{surface=\"openai\",route=\"/v1/chat/completions\",status=\"200\"} 2"
        ), "{text}");
        assert!(text.contains(
            "switchboard_api_latency_overhead_seconds_bucket{surface=\"openai\",le=\"0.0001\"} 1"
        ), "{text}");
        assert!(text.contains(
            "switchboard_api_latency_overhead_seconds_bucket{surface=\"openai\",le=\"0.00005\"} 0"
        ) || text.contains("le=\"0.00005\"} 0"), "{text}");
        assert!(text.contains(
            "switchboard_api_stream_aborts_total{surface=\"ollama\",cause=\"client_disconnect\"} 1"
        ), "{text}");
        assert_eq!(state_word("cooling down until 12:00:00 UTC"), "cooling");
    }
}
