//! The crash test at benchmark size: `tests/crash.rs`'s scenario (the real daemon killed with SIGKILL
//! at random moments under load, restarted, drained, checked message by message) with at least 150
//! kills over about 15 minutes. Run: `cargo bench --bench crash`; `SB_CRASH_KILLS` and
//! `SB_CRASH_MINUTES` change the size, `SB_CRASH_SEED` replays a run.

// Scenarios and measurements read best whole, their arithmetic is on small known values (counts,
// milliseconds, ids) and the shared fakes take values whole: these pedantic lints are off for test and
// benchmark code only.
#![allow(
    clippy::too_many_lines,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::needless_pass_by_value
)]

#[path = "../tests/support/telegram_fake.rs"]
mod telegram_fake;

#[path = "../tests/support/crash_run.rs"]
mod crash_run;

use std::time::Duration;

use crash_run::Scenario;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let kills: usize = env_or("SB_CRASH_KILLS", 150);
    let minutes: f64 = env_or("SB_CRASH_MINUTES", 15.0);
    let seed: u64 = env_or("SB_CRASH_SEED", fastrand::u64(..));
    // The daemon lives `life` on average between kills: kills × life ≈ the run's length (restarts and
    // the drain add a little).
    let mean_life = Duration::from_secs_f64(minutes * 60.0 / kills.max(1) as f64);
    let scenario = Scenario {
        kills,
        chats: 20,
        min_life: mean_life / 4,
        max_life: mean_life * 7 / 4,
        send_every: (Duration::from_secs(2), Duration::from_secs(8)),
        seed,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("crash benchmark: {scenario:?}");
    let outcome = runtime.block_on(crash_run::run(scenario));
    println!("{outcome:#?}");
    let failures = outcome.failures();
    if failures.is_empty() {
        println!("every promise kept");
    } else {
        println!("BROKEN: {failures:#?}");
        std::process::exit(1);
    }
}
