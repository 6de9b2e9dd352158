//! Soak benchmark (issue 11): does the store stay small and the daemon's memory flat over a long run?
//! The release binary `switchboard run` (its own process, sled in a temporary directory) answers 1,000
//! private chats through the fake Bot API and a zero-latency simulated OpenRouter, as in
//! `benches/telegram.rs`, while this process samples the sled directory's size and the daemon's RSS.
//!
//! Two runs, each on a fresh daemon and store:
//! - **burst**: 100,000 messages as fast as they go (each chat sends its next message once its previous
//!   one was answered, so 1,000 are in flight);
//! - **rate**: a realistic 20 messages/s round-robin over the chats, for a bounded time (a full 100,000 at
//!   that rate would take 80 minutes): 10 minutes by default.
//!
//! Knobs: `SB_SOAK_MODE` (`burst`, `rate` or `both`, the default), `SB_SOAK_MESSAGES` (100000, the burst's
//! count and the rate run's cap), `SB_SOAK_CHATS` (1000), `SB_SOAK_RATE` (20 per second),
//! `SB_SOAK_SECONDS` (600, the rate run's length), `SB_SOAK_SAMPLE_SECS` (10 burst / 60 rate),
//! `SB_BENCH_BIN` (another daemon build). `SWITCHBOARD__*` variables reach the daemon and are printed.
//! Run: `cargo bench --bench soak`.

// Scenarios and measurements read best whole, their arithmetic is on small known values (counts,
// nanoseconds, ids) and their JSON builders take values whole: these pedantic lints are off for test and
// benchmark code only.
#![allow(
    clippy::too_many_lines,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    clippy::needless_pass_by_value
)]

#[path = "support/daemon.rs"]
mod daemon;
#[path = "../tests/support/telegram_fake.rs"]
mod telegram_fake;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use switchboard::store::sled_store::{CompactPolicy, SledStore};
use tokio::time::Instant;

use daemon::PING;

/// No answer for this long means the daemon lost messages or hung: the benchmark fails.
const STALL_LIMIT: Duration = Duration::from_secs(120);
/// After the last answer, sled flushes within ~500 ms and the coalesced counters within their interval
/// (5 s by default): wait this long before the final idle sample so it shows what stays on disk.
const SETTLE: Duration = Duration::from_secs(8);

/// The daemon's settings that differ from the defaults, each with the reason (as in the Telegram bench).
const DAEMON_CONFIG: &[daemon::Setting] = &[
    (
        "telegram",
        "edit_interval_private_ms = 0",
        "edit pacing off: the store's writes per answer do not depend on it, and the burst goes faster",
    ),
    (
        "access",
        "user_messages_per_minute = 0",
        "a burst user sends ~100 messages within a minute; the default 12/min limiter would answer \
         \"slow down\" instead of asking the model",
    ),
    (
        "openrouter",
        "requests_per_minute = 0",
        "OpenRouter's real 20 requests/min per account would cap the run at 20 messages a minute",
    ),
    (
        "openrouter",
        "free_requests_per_day = 1000000000",
        "the real daily quota (50 or 1000) would run out at once",
    ),
    (
        "router",
        "paid_enabled = false",
        "no paid tier exists here; every answer comes from the free tier",
    ),
];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mode = std::env::var("SB_SOAK_MODE").unwrap_or_else(|_| "both".into());
    let messages = env_or("SB_SOAK_MESSAGES", 100_000);
    let chats = env_or("SB_SOAK_CHATS", 1_000) as i64;
    println!("== soak: `switchboard run` (release binary), sled, {chats} private chats");
    daemon::print_settings(DAEMON_CONFIG);
    runtime.block_on(async {
        if mode != "rate" {
            let plan = Plan {
                label: "burst",
                chats,
                messages,
                rate: None,
                sample_every: Duration::from_secs(env_or("SB_SOAK_SAMPLE_SECS", 10)),
            };
            soak(plan).await;
        }
        if mode != "burst" {
            let seconds = env_or("SB_SOAK_SECONDS", 600);
            let rate = env_or("SB_SOAK_RATE", 20).max(1);
            let plan = Plan {
                label: "rate",
                chats,
                messages: messages.min(seconds * rate),
                rate: Some(rate),
                sample_every: Duration::from_secs(env_or("SB_SOAK_SAMPLE_SECS", 60)),
            };
            soak(plan).await;
        }
    });
}

/// One soak run.
struct Plan {
    label: &'static str,
    chats: i64,
    /// Messages to send in all.
    messages: u64,
    /// Messages per second, or `None` for as fast as answers come back.
    rate: Option<u64>,
    sample_every: Duration,
}

/// The daemon under test with its fakes and temporary directory.
struct Rig {
    up: daemon::Upstreams,
    child: tokio::process::Child,
    pid: u32,
    dir: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Self {
        let up = daemon::upstreams().await;
        let dir = tempfile::tempdir().unwrap();
        let child = daemon::spawn(&up, dir.path(), DAEMON_CONFIG);
        let pid = child.id().expect("the daemon's pid");
        Self {
            up,
            child,
            pid,
            dir,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Bytes of the sled directory: (apparent length, allocated blocks).
    fn store_bytes(&self) -> (u64, u64) {
        dir_bytes(&self.dir.path().join("state").join("db"))
    }

    fn sample(&self, started: Instant, answered: u64) -> Sample {
        let (apparent, allocated) = self.store_bytes();
        Sample {
            secs: started.elapsed().as_secs_f64(),
            answered,
            apparent,
            allocated,
            rss_kb: daemon::proc_status_kb(self.pid, "VmRSS:"),
        }
    }

    /// SIGTERM, and the exit status within a minute.
    async fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: `kill` with a pid we spawned and still own (not yet reaped), and a valid signal.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the daemon stops after SIGTERM")
            .unwrap()
    }
}

/// One point of the time series.
struct Sample {
    secs: f64,
    answered: u64,
    apparent: u64,
    allocated: u64,
    rss_kb: u64,
}

impl Sample {
    fn print(&self) {
        let per = |bytes: u64| bytes.checked_div(self.answered).unwrap_or(0);
        println!(
            "  {:>7.1} s | {:>7} answered | sled {:>8.1} MiB ({:>6} B/message) | du {:>8.1} MiB ({:>6} B/message) | RSS {:>6.1} MB",
            self.secs,
            self.answered,
            mib(self.apparent),
            per(self.apparent),
            mib(self.allocated),
            per(self.allocated),
            self.rss_kb as f64 / 1024.0
        );
    }
}

async fn soak(plan: Plan) {
    let mut rig = Rig::start().await;
    println!(
        "-- {}: {} messages over {} chats, {}",
        plan.label,
        plan.messages,
        plan.chats,
        plan.rate
            .map_or("as fast as answers come back".to_owned(), |r| format!(
                "{r} messages/s"
            ))
    );
    let started = Instant::now();
    let mut samples = vec![rig.sample(started, 0)];
    samples[0].print();
    let outcome = drive(&rig, &plan, started, &mut samples).await;
    if let Err(e) = outcome {
        let logs = rig.logs();
        let tail: Vec<&str> = logs.lines().rev().take(40).collect();
        panic!(
            "{e}; the daemon's last log lines (newest first):\n{}",
            tail.join("\n")
        );
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    let idle = rig.sample(started, plan.messages);
    idle.print();
    let peak_kb = daemon::proc_status_kb(rig.pid, "VmHWM:");
    let status = rig.stop().await;
    let (stopped, stopped_du) = rig.store_bytes();
    let logs = rig.logs();
    let warnings = logs
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    println!(
        "  {} messages in {:.1} s ({:.0}/s); model requests {}; Bot API writes {}",
        plan.messages,
        elapsed.as_secs_f64(),
        plan.messages as f64 / elapsed.as_secs_f64(),
        rig.up.sim.requests().iter().filter(|r| r.is_chat()).count(),
        rig.up.fake.writes()
    );
    println!(
        "  after SIGTERM: sled {:.1} MiB = {} B/message (du {:.1} MiB = {} B/message); daemon peak RSS {:.1} MB; exit {status}; warning/error log lines {warnings}",
        mib(stopped),
        stopped / plan.messages.max(1),
        mib(stopped_du),
        stopped_du / plan.messages.max(1),
        peak_kb as f64 / 1024.0
    );
    for line in logs
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .take(5)
    {
        println!("    {line}");
    }
    growth(&samples);
    live_and_compacted(&rig.dir.path().join("state"), plan.messages);
    assert!(
        rig.up.fake.unexpected().is_empty(),
        "{:?}",
        rig.up.fake.unexpected()
    );
    assert!(status.success(), "the daemon did not exit cleanly");
}

/// Sends the plan's messages, one outstanding per chat, sampling every `plan.sample_every`.
async fn drive(
    rig: &Rig,
    plan: &Plan,
    started: Instant,
    samples: &mut Vec<Sample>,
) -> Result<(), String> {
    let mut outstanding: HashSet<i64> = HashSet::new();
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut next_chat = 1i64;
    let mut last_answer = Instant::now();
    let mut next_sample = started + plan.sample_every;
    let pace = plan.rate.map(|r| Duration::from_secs_f64(1.0 / r as f64));
    let mut next_send = Instant::now();
    while answered < plan.messages {
        for (chat, _) in rig.up.fake.take_delivered() {
            if outstanding.remove(&chat) {
                answered += 1;
                last_answer = Instant::now();
            }
        }
        // Burst: every chat without an outstanding message sends; rate: one message per tick.
        while sent < plan.messages && outstanding.len() < plan.chats as usize {
            if pace.is_some() && Instant::now() < next_send {
                break;
            }
            while outstanding.contains(&next_chat) {
                next_chat = next_chat % plan.chats + 1;
            }
            rig.up.fake.push_text(next_chat, next_chat, "User", PING);
            outstanding.insert(next_chat);
            next_chat = next_chat % plan.chats + 1;
            sent += 1;
            if let Some(pace) = pace {
                next_send += pace;
            }
        }
        if Instant::now() >= next_sample {
            let sample = rig.sample(started, answered);
            sample.print();
            samples.push(sample);
            next_sample += plan.sample_every;
        }
        if last_answer.elapsed() > STALL_LIMIT {
            return Err(format!(
                "no answer for {} s: {answered} of {sent} sent answered",
                STALL_LIMIT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Bytes per message between successive halves of the run: linear growth keeps it level.
fn growth(samples: &[Sample]) {
    let points: Vec<&Sample> = samples.iter().filter(|s| s.answered > 0).collect();
    if points.len() < 3 {
        return;
    }
    let mid = points[points.len() / 2];
    let last = points[points.len() - 1];
    let first = points[0];
    let rate = |a: &Sample, b: &Sample| {
        (b.apparent as f64 - a.apparent as f64) / (b.answered - a.answered).max(1) as f64
    };
    let rss = |s: &Sample| s.rss_kb as f64 / 1024.0;
    println!(
        "  growth: {:.0} B/message over the first half, {:.0} B/message over the second half; RSS {:.1} MB at the first sample, {:.1} MB at the middle, {:.1} MB at the end",
        rate(first, mid),
        rate(mid, last),
        rss(first),
        rss(mid),
        rss(last)
    );
}

/// What of the stopped daemon's store is live data, and its size after the start-up compaction
/// (`[store] compact_ratio`) would copy it into a fresh database.
fn live_and_compacted(state: &Path, messages: u64) {
    let always = CompactPolicy {
        max_ratio: 1,
        min_on_disk: 0,
    };
    let Ok((opened, report)) = SledStore::open_compacting(state, 16, 0, always) else {
        println!("  (the stopped store could not be reopened)");
        return;
    };
    let Some(report) = report else { return };
    drop(opened);
    let per = |bytes: u64| bytes / messages.max(1);
    println!(
        "  live data (keys + values): {} B/message; size/live {:.1}; after a compaction: {:.1} MiB = {} B/message ({} ms)",
        per(report.before.live),
        report.before.ratio(),
        mib(report.after_on_disk),
        per(report.after_on_disk),
        report.took_ms
    );
}

/// (apparent length, allocated bytes) of every file under `dir`.
fn dir_bytes(dir: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    let mut total = (0, 0);
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let (len, blocks) = if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            (meta.len(), meta.blocks() * 512)
        };
        total = (total.0 + len, total.1 + blocks);
    }
    total
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
