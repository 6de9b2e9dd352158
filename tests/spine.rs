//! The spine through the real binary: the CLI, the offline demo, configuration errors (exit 78), the
//! terminal chat's history across restarts in sled, a corrupt store quarantined, and a canary key that
//! must never reach a log line or a reply. Upstreams are simulators on 127.0.0.1.

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

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use switchboard::sim::openrouter::{SimKey, SimOpenRouter, SimOpenRouterOptions};
use switchboard::store::sled_store::SledStore;
use switchboard::store::HistoryStore;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// Runs the binary with `args`, `stdin` piped in, a clean environment (no keys, no tokens, no proxies)
/// plus `envs`, in `cwd`.
fn run(args: &[&str], stdin: &str, envs: &[(&str, &str)], cwd: &Path) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn switchboard");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_the_four_commands() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["--help"], "", &[], dir.path());
    assert!(out.status.success());
    let help = text(&out.stdout);
    for command in ["run", "chat", "demo", "check"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} missing from:\n{help}"
        );
    }
}

#[test]
fn the_demo_walks_free_keys_then_switches_to_paid_with_one_notice() {
    let dir = tempfile::tempdir().unwrap();
    let input = "hello\nwhat is sled?\nand Rust?\ntell me more\nstill free?\nand now?\n";
    let out = run(
        &["demo"],
        input,
        &[("SWITCHBOARD_DEMO_PACE", "instant")],
        dir.path(),
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("SIMULATED"),
        "the demo says its upstreams are simulated"
    );
    let tiers: Vec<&str> = stdout.lines().filter(|l| l.starts_with("— ")).collect();
    assert_eq!(tiers.len(), 6, "{stdout}");
    assert!(
        tiers[..4]
            .iter()
            .all(|l| l.starts_with("— free tier · openrouter")),
        "{tiers:#?}"
    );
    assert!(
        tiers[4..]
            .iter()
            .all(|l| l.starts_with("— paid tier · ollama-cloud · gpt-oss:120b")),
        "{tiers:#?}"
    );
    // Two answers per key: the first key runs out, then the second.
    let key = |l: &str| {
        l.split("key ")
            .nth(1)
            .map(|s| s.split(' ').next().unwrap().to_owned())
    };
    assert_eq!(key(tiers[0]), key(tiers[1]));
    assert_eq!(key(tiers[2]), key(tiers[3]));
    assert_ne!(key(tiers[1]), key(tiers[2]));
    assert_eq!(
        stdout.matches("Free quota is used up").count(),
        1,
        "the paid notice comes once:\n{stdout}"
    );
    // The demo never writes anywhere but a throwaway state directory.
    assert!(!dir.path().join("state").exists());
}

#[test]
fn a_config_error_names_the_key_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[core]\nmax_concurent_turns = 4\n",
    )
    .unwrap();
    let out = run(&["--config", "bad.toml", "chat"], "", &[], dir.path());
    assert_eq!(out.status.code(), Some(78));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("max_concurent_turns") && stderr.contains("Fix:"),
        "{stderr}"
    );

    std::fs::write(
        dir.path().join("range.toml"),
        "[core]\nmax_concurrent_turns = 0\n",
    )
    .unwrap();
    let out = run(&["--config", "range.toml", "chat"], "", &[], dir.path());
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out.stderr).contains("core.max_concurrent_turns"));

    let out = run(
        &["chat"],
        "",
        &[("SWITCHBOARD__OPENROUTER__BASE_URL", "not a url")],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out.stderr).contains("openrouter.base_url"));

    let out = run(
        &["chat"],
        "",
        &[("SWITCHBOARD__CORE__MAX_CONCURENT_TURNS", "4")],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(78));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("`core.max_concurent_turns`")
            && stderr.contains("SWITCHBOARD__CORE__MAX_CONCURENT_TURNS"),
        "an override's error names the key and the variable: {stderr}"
    );

    let out = run(
        &["chat"],
        "",
        &[("TELEGRAM_BOT_TOKEN_FILE", "/nonexistent/token")],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out.stderr).contains("TELEGRAM_BOT_TOKEN_FILE"));
}

/// Starts a simulated OpenRouter with one accepted key on a runtime that outlives the test's commands.
fn simulator(key: &str) -> (tokio::runtime::Runtime, SimOpenRouter) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sim = rt
        .block_on(SimOpenRouter::start(SimOpenRouterOptions {
            keys: vec![SimKey::new(key, "acct", 50)],
            ..Default::default()
        }))
        .unwrap();
    (rt, sim)
}

#[test]
fn chat_history_persists_across_restarts_in_sled() {
    let (_rt, sim) = simulator("sk-or-v1-persist");
    let dir = tempfile::tempdir().unwrap();
    let base = sim.base_url();
    let envs = [
        ("OPENROUTER_API_KEY_1", "sk-or-v1-persist"),
        ("SWITCHBOARD__OPENROUTER__BASE_URL", base.as_str()),
    ];
    let first = run(&["chat"], "my name is Ada\n", &envs, dir.path());
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stdout).contains("You said: my name is Ada"));
    let second = run(&["chat"], "what is my name?\n", &envs, dir.path());
    assert!(second.status.success(), "{}", text(&second.stderr));
    let store = SledStore::open(&dir.path().join("state"), 4, 0)
        .unwrap()
        .store;
    let conversations = store.list_conversations().unwrap();
    assert_eq!(conversations.len(), 1);
    let (key, meta) = &conversations[0];
    let turns = store.recent_turns(key, meta.epoch, 10).unwrap();
    let texts: Vec<&str> = turns.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(texts.len(), 4, "{texts:?}");
    assert_eq!(texts[0], "my name is Ada");
    assert_eq!(texts[2], "what is my name?");
}

#[test]
fn a_corrupt_store_is_quarantined_and_a_fresh_one_started() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state").join("db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(
        db.join("conf"),
        b"\x00garbage that is not a sled config\xff",
    )
    .unwrap();
    std::fs::write(db.join("db"), vec![0xAB; 4096]).unwrap();
    let out = run(&["chat"], "/status\n", &[], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("CORRUPT"),
        "reported loudly: {}",
        text(&out.stderr)
    );
    let moved: Vec<_> = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("db.corrupt-"))
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "the damaged directory is kept aside for inspection"
    );
    assert!(
        text(&out.stdout).contains("switchboard"),
        "the chat still answers"
    );
}

#[test]
fn a_canary_key_never_reaches_logs_or_replies() {
    // The simulator accepts another key, so the canary is rejected (401): the error path is exercised.
    let (_rt, sim) = simulator("sk-or-v1-accepted");
    let canary = "sk-or-v1-CANARY-7f3a9c1e5b";
    let dir = tempfile::tempdir().unwrap();
    let base = sim.base_url();
    let envs = [
        ("OPENROUTER_API_KEY_1", canary),
        ("SWITCHBOARD__OPENROUTER__BASE_URL", base.as_str()),
        ("SWITCHBOARD__ROUTER__PAID_ENABLED", "false"),
        ("RUST_LOG", "trace"),
    ];
    let out = run(&["chat"], "hello\n/usage\n/status\n", &envs, dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stdout.contains('⚠'),
        "the user gets a friendly failure:\n{stdout}"
    );
    assert!(!stderr.is_empty(), "trace logging produced output");
    for needle in [canary, "CANARY", "7f3a9c1e5b"] {
        assert!(!stdout.contains(needle), "secret in a reply:\n{stdout}");
        assert!(!stderr.contains(needle), "secret in the logs");
    }
    assert!(!stdout.contains("http://"), "no URL in a reply:\n{stdout}");
    let check = run(&["check"], "", &envs, dir.path());
    for needle in [canary, "CANARY"] {
        assert!(!text(&check.stdout).contains(needle) && !text(&check.stderr).contains(needle));
    }
}

#[test]
fn the_example_config_is_valid_and_documents_every_key() {
    use switchboard::config::{self, Config, Env};
    let example = include_str!("../config/switchboard.example.toml");
    config::parse(example, "config/switchboard.example.toml", &Env::default())
        .expect("the example config is valid");
    // Every key of the model (with its defaults) appears in its section, set or commented out.
    let defaults = toml::Value::try_from(Config::default()).unwrap();
    let mut missing = Vec::new();
    for (section, table) in defaults.as_table().unwrap() {
        let Some(table) = table.as_table() else {
            continue;
        };
        let header = format!("[{section}]");
        let Some(start) = example.find(&format!("\n{header}\n")) else {
            missing.push(header);
            continue;
        };
        let body = &example[start + header.len() + 1..];
        let body = &body[..body.find("\n[").unwrap_or(body.len())];
        for key in table.keys() {
            let documented = body.lines().any(|line| {
                let line = line.trim_start_matches('#').trim_start();
                line.strip_prefix(key.as_str())
                    .is_some_and(|rest| rest.trim_start().starts_with('=') || rest.starts_with('.'))
            });
            // A table may be documented by its own (possibly commented-out) header instead.
            let documented = documented || body.contains(&format!("[{section}.{key}"));
            if !documented {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "undocumented in config/switchboard.example.toml: {missing:?}"
    );
}
