//! Crash safety, measured as an operator would: the real `switchboard run` killed with SIGKILL at
//! random moments (at least 20 times) while chats keep sending, against a fake Bot API that keeps every
//! unconfirmed update as Telegram does and a slowly streaming simulated model. After the drain every
//! question is answered completely exactly once, or — only when a kill cut its reply — its partial reply
//! carries the restart note and the complete answer follows; nothing acknowledged is lost, history has
//! no holes, and no answer is stored complete that the user did not receive. The same scenario runs
//! for 15 minutes as `cargo bench --bench crash`.

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

#[path = "support/telegram_fake.rs"]
mod telegram_fake;

#[path = "support/crash_run.rs"]
mod crash_run;

use std::time::Duration;

use crash_run::Scenario;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kill_9s_under_load_lose_nothing_duplicate_nothing_and_leave_no_partial_reply_unnoted(
) {
    let seed = std::env::var("SB_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let outcome = crash_run::run(Scenario {
        kills: 20,
        chats: 6,
        // Lives shorter than an answer plus a restart would cut one question more than
        // `MAX_RECOVERIES` times in a row (it then only gets the note, by design).
        min_life: Duration::from_secs(1),
        max_life: Duration::from_secs(4),
        send_every: (Duration::from_secs(1), Duration::from_secs(3)),
        seed,
    })
    .await;
    let failures = outcome.failures();
    assert!(
        failures.is_empty(),
        "seed {seed} (replay with SB_CRASH_SEED): {failures:#?}\n{outcome:#?}"
    );
    assert_eq!(outcome.kills, 20);
    assert!(outcome.questions >= 60, "{outcome:#?}");
    assert_eq!(outcome.answered_once, outcome.questions);
    // Kills land mid-reply often enough that recovery must have noted some partial replies.
    assert!(outcome.noted > 0, "no kill cut a reply: {outcome:#?}");
}
