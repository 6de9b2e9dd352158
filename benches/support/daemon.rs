//! What the benchmarks of the real daemon share (`telegram`, `soak`): the simulated OpenRouter and fake
//! Bot API it talks to, its config file from a table of settings with their reasons, spawning
//! `switchboard run` in its own process, and reading its figures from `/proc`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;

use switchboard::sim::openrouter::{SimKey, SimOpenRouter, SimOpenRouterOptions};
use switchboard::sim::{reply_text, ReplyShape};

use crate::telegram_fake::{FakeTelegram, TOKEN};

/// The simulated OpenRouter key (accepted only by the simulator).
pub const SIM_KEY: &str = "sk-or-sim-bench";
/// The text every bench user sends.
pub const PING: &str = "ping";

/// A daemon setting that differs from the default: section, `key = value`, and why.
pub type Setting = (&'static str, &'static str, &'static str);

/// The daemon's two peers: a zero-latency simulated OpenRouter and the fake Bot API.
pub struct Upstreams {
    /// The simulated OpenRouter (15 chunks per answer).
    pub sim: SimOpenRouter,
    /// The fake Bot API, logging each chat's final text.
    pub fake: FakeTelegram,
}

/// Starts both peers; the fake logs a delivery when a text ends as the simulator's answers end.
pub async fn upstreams() -> Upstreams {
    let sim = SimOpenRouter::start(SimOpenRouterOptions {
        keys: vec![SimKey::new(SIM_KEY, "bench", u32::MAX)],
        per_minute_limit: None,
        reply: ReplyShape::default(),
        ..SimOpenRouterOptions::default()
    })
    .await
    .unwrap();
    let fake = FakeTelegram::start_with(false).await;
    // The simulator's reply ends the same way whichever model answers: that marks the final text.
    let full = reply_text("m", PING, ReplyShape::default().sentences);
    let suffix = full
        .split_once(". ")
        .map_or(full.as_str(), |(_, rest)| rest);
    fake.set_final_suffix(suffix);
    Upstreams { sim, fake }
}

/// Spawns `switchboard run` (or `SB_BENCH_BIN`) with its state and config in `dir` and its log in
/// `dir/daemon.log`, pointed at `up`. `SWITCHBOARD__*` variables of the bench reach the daemon.
pub fn spawn(up: &Upstreams, dir: &Path, settings: &[Setting]) -> tokio::process::Child {
    let config_path = dir.join("switchboard.toml");
    std::fs::write(&config_path, config_text(settings)).unwrap();
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    // SB_BENCH_BIN runs another build of the daemon (an older commit, side by side in one run).
    let daemon =
        std::env::var("SB_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_switchboard").into());
    tokio::process::Command::new(daemon)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("STATE_DIRECTORY", dir.join("state"))
        // Unset (the daemon's default, info) unless the bench is run with SB_BENCH_DAEMON_LOG.
        .envs(std::env::var("SB_BENCH_DAEMON_LOG").map(|l| ("RUST_LOG", l)))
        .envs(std::env::var("SB_BENCH_MALLOC_CONF").map(|c| ("_RJEM_MALLOC_CONF", c)))
        // Experiments: SWITCHBOARD__SECTION__KEY variables given to the bench reach the daemon (and are
        // printed, so a figure never hides a changed setting).
        .envs(overrides())
        .env("TELEGRAM_BOT_TOKEN", TOKEN)
        .env("OPENROUTER_API_KEY_1", SIM_KEY)
        .env("SWITCHBOARD__TELEGRAM__API_URL", &up.fake.url)
        .env("SWITCHBOARD__OPENROUTER__BASE_URL", up.sim.base_url())
        .arg("--config")
        .arg(&config_path)
        .arg("run")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn switchboard run")
}

/// Prints each setting with its reason, and the overrides passed on from the environment.
pub fn print_settings(settings: &[Setting]) {
    for (section, setting, why) in settings {
        println!("  [{section}] {setting}  -- {why}");
    }
    for (name, value) in overrides() {
        println!("  override from the environment: {name}={value}");
    }
}

/// The config file: each section with its settings.
fn config_text(settings: &[Setting]) -> String {
    let mut text = String::new();
    let mut sections: Vec<&str> = settings.iter().map(|(s, _, _)| *s).collect();
    sections.dedup();
    for section in sections {
        let _ = writeln!(text, "[{section}]");
        for (s, setting, _) in settings {
            if *s == section {
                text.push_str(setting);
                text.push('\n');
            }
        }
    }
    text
}

/// `SWITCHBOARD__*` variables of the bench's environment, passed on to the daemon.
pub fn overrides() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(name, _)| name.starts_with("SWITCHBOARD__"))
        .collect()
}

#[path = "procfs.rs"]
mod procfs;
/// The `/proc/<pid>/status` reader, shared with the benchmarks that do not start the daemon this way.
pub use procfs::proc_status_kb;
