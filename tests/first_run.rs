//! A first run through the real binary, against fakes on 127.0.0.1 only. `switchboard check` validates as
//! start-up does (a `tier_order` that `chat` rejects fails `check` too), and asks Telegram (`getMe`) and
//! Discord (`GET /users/@me`) whether they accept the tokens, so a garbage token fails `check` instead of
//! `run`. `run` with a bot token but no model keys says at start-up that every message will fail, and
//! each message gets an answer that says why.

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

#[path = "support/fake_discord.rs"]
mod fake_discord;
#[path = "support/telegram_fake.rs"]
mod telegram_fake;

use std::path::Path;
use std::process::Output;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use switchboard::sim::openrouter::{SimKey, SimModel, SimOpenRouter, SimOpenRouterOptions};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
/// The free model the simulated OpenRouter lists.
const FREE_MODEL: &str = "sim/free-model:free";
/// A liveness bound for one run of the binary (real time, generous for a loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(120);

struct Rig {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    telegram: telegram_fake::FakeTelegram,
    discord: fake_discord::FakeDiscord,
    _openrouter: SimOpenRouter,
}

/// The fakes and a config file pointing every base URL at them (`extra` appended to it).
async fn rig(extra: &str) -> Rig {
    let openrouter = SimOpenRouter::start(SimOpenRouterOptions {
        keys: vec![SimKey::new("sk-or-v1-doctor", "a1", 50)],
        models: vec![SimModel::free(FREE_MODEL, 8192)],
        ..SimOpenRouterOptions::default()
    })
    .await
    .unwrap();
    let telegram = telegram_fake::FakeTelegram::start().await;
    let discord = fake_discord::fake_discord().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            "[openrouter]\nbase_url = \"{}\"\nfree_models = [\"{FREE_MODEL}\"]\n\
             [telegram]\napi_url = \"{}\"\n[discord]\nproxy_url = \"{}\"\n{extra}",
            openrouter.base_url(),
            telegram.url,
            discord.url()
        ),
    )
    .unwrap();
    Rig {
        dir,
        config,
        telegram,
        discord,
        _openrouter: openrouter,
    }
}

/// Runs `switchboard <command> --config <file>` with a clean environment plus `envs`.
async fn run(command: &str, config: &Path, cwd: &Path, envs: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg(command)
        .arg("--config")
        .arg(config)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STATE_DIRECTORY", cwd.join("state"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("switchboard check ended")
        .unwrap()
}

/// `switchboard check` with the simulated OpenRouter's key and these platform tokens.
async fn check_with_tokens(rig: &Rig, telegram: &str, discord: &str) -> Output {
    let envs = [
        ("OPENROUTER_API_KEY_1", "sk-or-v1-doctor"),
        ("TELEGRAM_BOT_TOKEN", telegram),
        ("DISCORD_BOT_TOKEN", discord),
    ];
    run("check", &rig.config, rig.dir.path(), &envs).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn check_asks_the_platforms_and_accepts_good_tokens() {
    let rig = rig("").await;
    let out = check_with_tokens(&rig, telegram_fake::TOKEN, fake_discord::TOKEN).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("✓ telegram: getMe accepts TELEGRAM_BOT_TOKEN")
            && stdout.contains(&format!("the bot is @{}", telegram_fake::BOT_USERNAME)),
        "{stdout}"
    );
    assert!(
        stdout.contains("✓ discord: GET /users/@me accepts DISCORD_BOT_TOKEN"),
        "{stdout}"
    );
    assert!(stdout.contains("✓ configuration: valid"), "{stdout}");
    assert!(rig.telegram.calls().iter().any(|c| c.method == "getme"));
    assert!(rig.telegram.unexpected().is_empty());
    rig.discord.assert_no_unexpected_routes();
    for secret in [telegram_fake::TOKEN, fake_discord::TOKEN, "sk-or-v1-doctor"] {
        assert!(!stdout.contains(secret) && !text(&out.stderr).contains(secret));
    }
}

#[tokio::test]
async fn check_fails_on_garbage_platform_tokens_with_a_clear_reason() {
    let rig = rig("").await;
    let out = check_with_tokens(&rig, "123:garbage", "garbage.discord.token").await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(78),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "✗ telegram: getMe at {} rejected TELEGRAM_BOT_TOKEN",
            rig.telegram.url
        )) && stdout.contains("copy the token from @BotFather again"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "✗ discord: GET /users/@me at {} rejected DISCORD_BOT_TOKEN",
            rig.discord.url()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("2 failed"), "{stdout}");
    assert!(
        !stdout.contains("garbage"),
        "no token in the report: {stdout}"
    );
}

/// What start-up rejects, `check` rejects: the same `tier_order` makes `chat` exit 78 and `check` fail
/// on the configuration line (not only on a later provider call).
#[tokio::test]
async fn check_rejects_what_start_up_rejects() {
    let rig = rig("[router]\ntier_order = [\"bogus\"]\n").await;
    let envs = [("OPENROUTER_API_KEY_1", "sk-or-v1-doctor")];
    let chat = run("chat", &rig.config, rig.dir.path(), &envs).await;
    assert_eq!(chat.status.code(), Some(78), "{}", text(&chat.stderr));
    assert!(text(&chat.stderr).contains("router.tier_order[0]"));

    let check = run("check", &rig.config, rig.dir.path(), &envs).await;
    let stdout = text(&check.stdout);
    assert_eq!(check.status.code(), Some(78), "{stdout}");
    assert!(
        stdout.contains("✗ configuration: configuration error at `router.tier_order[0]`"),
        "{stdout}"
    );
}

#[tokio::test]
async fn run_without_model_keys_warns_at_start_and_every_message_says_why() {
    let rig = rig("").await;
    let mut child = tokio::process::Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(&rig.config)
        .current_dir(rig.dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STATE_DIRECTORY", rig.dir.path().join("state"))
        .env("TELEGRAM_BOT_TOKEN", telegram_fake::TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let warning = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("no model keys are configured") {
                return line;
            }
        }
        panic!("stderr ended without the warning");
    })
    .await
    .expect("the start-up warning");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains("every message will be answered with an error")
            && warning.contains("OPENROUTER_API_KEY_1")
            && warning.contains("OLLAMA_API_KEY"),
        "{warning}"
    );
    // Keep reading stderr so the daemon never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    rig.telegram.push_text(77, 77, "Ada", "hello?");
    rig.telegram
        .wait_until(WAIT, "the answer", |t| {
            t.bot_texts(77)
                .iter()
                .any(|text| text.contains("no model keys are configured"))
        })
        .await;
    let answer = rig.telegram.bot_texts(77).join("\n");
    assert!(!answer.contains("in a minute"), "{answer}");
    // SAFETY: a signal to our own child.
    assert_eq!(
        unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) },
        0
    );
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
