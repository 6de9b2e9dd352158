//! The `kill -9` scenario shared by `tests/crash.rs` (CI size) and `benches/crash.rs` (15 minutes): the
//! real `switchboard run` binary against the fake Bot API (updates stay pending until a `getUpdates`
//! with a higher offset confirms them, as Telegram keeps them) and a slowly streaming simulated
//! OpenRouter; private chats keep sending while the daemon is killed with SIGKILL at random moments and
//! restarted; then the last run drains and stops with SIGTERM. What the users saw (the fake's messages
//! and every text each showed) and what the store holds (reopened after the stop) are then checked
//! question by question; [`Outcome`] counts every way the promise can break.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use switchboard::domain::{ConversationKey, Role};
use switchboard::platforms::recovery::{NOTE_ANSWERING_AGAIN, NOTE_CUT_SHORT, NOTE_UNNAMED};
use switchboard::sim::openrouter::{SimKey, SimOpenRouter, SimOpenRouterOptions};
use switchboard::sim::{reply_text, ReplyShape};
use switchboard::store::sled_store::SledStore;
use switchboard::store::{HistoryStore, TurnStatus};

use super::telegram_fake::{FakeTelegram, TOKEN};

/// The simulated OpenRouter key.
const SIM_KEY: &str = "sk-or-sim-crash";
/// Sentences after the echo line: about 70 words, streamed 4 at a time.
const SENTENCES: usize = 5;
/// After the last kill, every question must have its complete answer within this long.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// How big a run is.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// SIGKILLs (each followed by a restart).
    pub kills: usize,
    /// Chats sending messages.
    pub chats: i64,
    /// A daemon lives a random time in `min_life..max_life` before it is killed.
    pub min_life: Duration,
    /// See `min_life`.
    pub max_life: Duration,
    /// Each chat sends its next message a random time in `send_every.0..send_every.1` after its last.
    pub send_every: (Duration, Duration),
    /// The random seed (printed, so a failing run can be replayed).
    pub seed: u64,
}

/// What happened, question by question.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// SIGKILLs delivered.
    pub kills: usize,
    /// Messages the users sent.
    pub questions: usize,
    /// Questions answered completely exactly once.
    pub answered_once: usize,
    /// Partial replies replaced by the restart note (each followed by a complete answer).
    pub noted: usize,
    /// Questions with more than one complete answer.
    pub duplicates: usize,
    /// Questions never answered completely (every one was acknowledged by the end).
    pub lost: usize,
    /// Bot messages left showing part of an answer, without the note.
    pub partial_without_note: usize,
    /// A note whose complete answer does not follow it.
    pub note_without_answer: usize,
    /// Questions missing from (or repeated in) the stored history.
    pub history_holes: usize,
    /// Assistant turns stored as complete whose text no user received in full.
    pub stored_not_received: usize,
    /// Questions whose stored history has no complete answer right after them.
    pub history_unanswered: usize,
    /// Bot texts that are none of: an answer, a partial answer, a note (an error reply, …).
    pub unexpected_texts: Vec<String>,
    /// Calls the fakes did not expect.
    pub fake_complaints: Vec<String>,
    /// The run's wall time.
    pub elapsed: Duration,
}

impl Outcome {
    /// Every broken promise, as readable lines (empty: the run kept every promise).
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        let counts = [
            ("duplicates", self.duplicates),
            ("lost acknowledged messages", self.lost),
            ("partial replies without a note", self.partial_without_note),
            ("notes without a following answer", self.note_without_answer),
            ("history holes", self.history_holes),
            (
                "turns stored complete the user did not receive",
                self.stored_not_received,
            ),
            (
                "questions without a complete stored answer",
                self.history_unanswered,
            ),
        ];
        for (what, n) in counts {
            if n > 0 {
                out.push(format!("{n} {what}"));
            }
        }
        out.extend(
            self.unexpected_texts
                .iter()
                .map(|t| format!("unexpected bot text: {t}")),
        );
        out.extend(self.fake_complaints.iter().cloned());
        out
    }
}

/// One question a user sent.
struct Question {
    chat: i64,
    /// Its message id in the chat.
    id: i64,
    text: String,
}

/// Runs the scenario to its end and checks it.
pub async fn run(scenario: Scenario) -> Outcome {
    fastrand::seed(scenario.seed);
    let started = Instant::now();
    let shape = ReplyShape {
        first_byte_latency: Duration::from_millis(150),
        chunk_delay: Duration::from_millis(50),
        words_per_chunk: 4,
        sentences: SENTENCES,
        keep_alive: false,
    };
    let sim = SimOpenRouter::start(SimOpenRouterOptions {
        keys: vec![SimKey::new(SIM_KEY, "crash", u32::MAX)],
        per_minute_limit: None,
        reply: shape,
        ..SimOpenRouterOptions::default()
    })
    .await
    .unwrap();
    let fake = FakeTelegram::start().await;
    fake.stop_call_log();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::new(dir.path(), &fake.url, &sim.base_url());
    // SB_CRASH_KEEP keeps the state and every run's log for a look after the run.
    let _dir = if std::env::var_os("SB_CRASH_KEEP").is_some() {
        eprintln!("keeping {}", dir.path().display());
        let _ = dir.keep();
        None
    } else {
        Some(dir)
    };

    let mut questions: Vec<Question> = Vec::new();
    let mut next_send: HashMap<i64, Instant> = (1..=scenario.chats)
        .map(|c| (chat_id(c), Instant::now()))
        .collect();
    let mut sent: HashMap<i64, usize> = HashMap::new();
    let mut outcome = Outcome::default();
    for _ in 0..scenario.kills {
        let mut child = daemon.spawn(outcome.kills);
        let life = random_between(scenario.min_life, scenario.max_life);
        let until = Instant::now() + life;
        while Instant::now() < until {
            send_due(
                &fake,
                &mut next_send,
                &mut sent,
                &mut questions,
                scenario.send_every,
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.start_kill().expect("SIGKILL the daemon");
        let _ = child.wait().await;
        outcome.kills += 1;
    }
    // The last run: no new messages; it must finish everything, then stop cleanly.
    let mut child = daemon.spawn(outcome.kills);
    let drained = wait_drained(&fake, &questions).await;
    // Everything may have been answered before this run even started; a SIGTERM before the daemon has
    // installed its handlers (the first milliseconds after exec) would kill it by the signal's default
    // action, which is not the orderly stop this checks. So stop it once it said it is ready.
    daemon.wait_ready(outcome.kills).await;
    // SAFETY: a pid we spawned and have not reaped; SIGTERM is a valid signal.
    unsafe { libc::kill(child.id().expect("pid") as i32, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the daemon stops after SIGTERM")
        .unwrap();
    if !drained || !status.success() {
        outcome.fake_complaints.push(format!(
            "drained: {drained}, final exit: {status}; {}",
            daemon.log_tail()
        ));
    }
    outcome.questions = questions.len();
    check_chats(&fake, &questions, &mut outcome);
    check_history(&daemon.state_dir(), &fake, &questions, &mut outcome);
    outcome.fake_complaints.extend(fake.unexpected());
    outcome
        .fake_complaints
        .extend(sim.unexpected().into_iter().map(|u| format!("sim: {u:?}")));
    outcome.elapsed = started.elapsed();
    outcome
}

/// Private chats have the user's id as their id.
fn chat_id(n: i64) -> i64 {
    1000 + n
}

fn random_between(low: Duration, high: Duration) -> Duration {
    let span = high.saturating_sub(low).as_millis() as u64;
    low + Duration::from_millis(fastrand::u64(0..=span))
}

/// Sends each chat's next message when it is due.
fn send_due(
    fake: &FakeTelegram,
    next_send: &mut HashMap<i64, Instant>,
    sent: &mut HashMap<i64, usize>,
    questions: &mut Vec<Question>,
    every: (Duration, Duration),
) {
    let now = Instant::now();
    for (chat, due) in next_send.iter_mut() {
        if *due > now {
            continue;
        }
        let n = sent.entry(*chat).or_default();
        *n += 1;
        let text = format!("c{chat}-q{n}");
        let id = fake.push_text(*chat, *chat, "Ada", &text);
        questions.push(Question {
            chat: *chat,
            id,
            text,
        });
        *due = now + random_between(every.0, every.1);
    }
}

/// The complete answer's text after the model's name (`You said: … .` and the sentences).
fn answer_tail(question: &str) -> String {
    let full = reply_text("m", question, SENTENCES);
    full.split_once("] ")
        .map(|(_, t)| t.to_owned())
        .unwrap_or(full)
}

/// Which question a text answers (its echo line), if it shows that far.
fn echoed(text: &str) -> Option<&str> {
    let rest = text.split_once("You said: ")?.1;
    let end = rest
        .find(". ")
        .or_else(|| rest.strip_suffix('.').map(str::len))?;
    Some(&rest[..end])
}

fn is_complete(text: &str, question: &str) -> bool {
    text.starts_with('[') && text.ends_with(&answer_tail(question))
}

fn is_note(text: &str) -> bool {
    text == NOTE_ANSWERING_AGAIN || text == NOTE_CUT_SHORT
}

/// Waits until every question shows its complete answer somewhere in its chat.
async fn wait_drained(fake: &FakeTelegram, questions: &[Question]) -> bool {
    let deadline = Instant::now() + DRAIN_LIMIT;
    loop {
        let mut finals: HashMap<i64, Vec<String>> = HashMap::new();
        let all = questions.iter().all(|q| {
            let texts = finals
                .entry(q.chat)
                .or_insert_with(|| fake.bot_texts(q.chat));
            texts.iter().any(|t| is_complete(t, &q.text))
        });
        if all {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What users saw: each question answered completely once, every partial reply noted and followed by
/// the complete answer.
fn check_chats(fake: &FakeTelegram, questions: &[Question], outcome: &mut Outcome) {
    let mut by_chat: HashMap<i64, Vec<&Question>> = HashMap::new();
    for q in questions {
        by_chat.entry(q.chat).or_default().push(q);
    }
    for (chat, asked) in by_chat {
        let shown = fake.shown_texts(chat);
        // Questions noted directly (a message of their reply may exist whose id recovery never knew).
        let noted_questions: Vec<&str> = shown
            .iter()
            .filter(|(_, texts)| texts.last().is_some_and(|t| t == NOTE_UNNAMED))
            .filter_map(|(id, _)| fake.replied_to(chat, *id))
            .filter_map(|to| asked.iter().find(|q| q.id == to).map(|q| q.text.as_str()))
            .collect();
        // Per question: the ids of its complete answers and of its noted partials.
        let mut complete: HashMap<&str, Vec<i64>> = HashMap::new();
        let mut noted: HashMap<String, Vec<i64>> = HashMap::new();
        for (id, texts) in &shown {
            let last = texts.last().map(String::as_str).unwrap_or_default();
            let question = texts
                .iter()
                .rev()
                .find_map(|t| echoed(t))
                .map(str::to_owned);
            if let Some(q) = asked.iter().find(|q| is_complete(last, &q.text)) {
                complete.entry(q.text.as_str()).or_default().push(*id);
            } else if last == NOTE_UNNAMED {
                // Counted with the partial it covers, below.
            } else if is_note(last) {
                outcome.noted += 1;
                if let Some(q) = question {
                    noted.entry(q).or_default().push(*id);
                }
            } else if question
                .as_deref()
                .is_some_and(|q| noted_questions.contains(&q))
            {
                // A partial recovery could not edit, with the note on its question.
                outcome.noted += 1;
                if let Some(q) = question {
                    noted.entry(q).or_default().push(*id);
                }
            } else if texts.iter().any(|t| t.starts_with('[')) {
                outcome.partial_without_note += 1;
                outcome
                    .unexpected_texts
                    .push(format!("partial, not noted: {last}"));
            } else {
                outcome.unexpected_texts.push(last.to_owned());
            }
        }
        for q in &asked {
            let answers = complete.get(q.text.as_str()).map_or(0, Vec::len);
            match answers {
                0 => outcome.lost += 1,
                1 => outcome.answered_once += 1,
                _ => outcome.duplicates += 1,
            }
            let first_answer = complete.get(q.text.as_str()).and_then(|ids| ids.first());
            for note in noted.get(&q.text).into_iter().flatten() {
                if first_answer.is_none_or(|answer| answer < note) {
                    outcome.note_without_answer += 1;
                }
            }
        }
    }
}

/// What the store holds: each chat's user turns are exactly its questions in order, each followed by
/// one complete answer, and every complete answer is a text the user received in full.
fn check_history(state: &Path, fake: &FakeTelegram, questions: &[Question], outcome: &mut Outcome) {
    let store = SledStore::open(state, 16, 1_700_000_000_000).unwrap().store;
    let mut by_chat: HashMap<i64, Vec<&str>> = HashMap::new();
    for q in questions {
        by_chat.entry(q.chat).or_default().push(&q.text);
    }
    for (chat, asked) in by_chat {
        let key = ConversationKey(format!("telegram:{chat}"));
        let epoch = store.conversation(&key).unwrap().map_or(0, |m| m.epoch);
        let turns = store.recent_turns(&key, epoch, 100_000).unwrap();
        let received = fake.bot_texts(chat);
        let users: Vec<&str> = turns
            .iter()
            .filter(|t| t.role == Role::User)
            .map(|t| t.text.as_str())
            .collect();
        if users != asked {
            outcome.history_holes += asked.len().abs_diff(users.len()).max(1);
            outcome.unexpected_texts.push(format!(
                "chat {chat}: history has user turns {users:?}, the user sent {asked:?}"
            ));
        }
        for (i, turn) in turns.iter().enumerate() {
            if turn.role == Role::Assistant
                && turn.status == TurnStatus::Complete
                && !received.contains(&turn.text)
            {
                outcome.stored_not_received += 1;
            }
            if turn.role == Role::User {
                let answers = turns[i + 1..]
                    .iter()
                    .take_while(|t| t.role == Role::Assistant)
                    .filter(|t| t.status == TurnStatus::Complete)
                    .count();
                if answers != 1 {
                    outcome.history_unanswered += 1;
                }
            }
        }
    }
}

/// Starts daemons on one state directory.
struct Daemon {
    dir: PathBuf,
    telegram_url: String,
    sim_url: String,
    binary: String,
}

impl Daemon {
    /// Daemons with the default `core.recovery` ("reanswer"; not written, so `SB_BENCH_BIN` can run a
    /// build from before the setting existed).
    fn new(dir: &Path, telegram_url: &str, sim_url: &str) -> Self {
        let config = "[router]\npaid_enabled = false\n\n\
             [openrouter]\nrequests_per_minute = 0\nfree_requests_per_day = 1000000000\n\n\
             [access]\nuser_messages_per_minute = 0\n\n\
             [telegram]\nedit_interval_private_ms = 200\npoll_timeout_secs = 1\n";
        std::fs::write(dir.join("switchboard.toml"), config).unwrap();
        Self {
            dir: dir.to_path_buf(),
            telegram_url: telegram_url.to_owned(),
            sim_url: sim_url.to_owned(),
            binary: std::env::var("SB_BENCH_BIN")
                .unwrap_or_else(|_| env!("CARGO_BIN_EXE_switchboard").into()),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.dir.join(format!("daemon-{run}.log"))
    }

    /// Waits (at most 30 s) until run `run`'s log has the daemon's `ready` line.
    async fn wait_ready(&self, run: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let log = std::fs::read_to_string(self.log_path(run)).unwrap_or_default();
            if log.lines().any(|l| l.contains(" ready")) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of the newest log.
    fn log_tail(&self) -> String {
        let mut newest = None;
        for run in 0.. {
            if !self.log_path(run).exists() {
                break;
            }
            newest = Some(run);
        }
        let Some(run) = newest else {
            return String::new();
        };
        let text = std::fs::read_to_string(self.log_path(run)).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        format!("run {run}, newest first:\n{}", tail.join("\n"))
    }

    fn spawn(&self, run: usize) -> tokio::process::Child {
        let log = std::fs::File::create(self.log_path(run)).unwrap();
        tokio::process::Command::new(&self.binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("STATE_DIRECTORY", self.state_dir())
            .env("TELEGRAM_BOT_TOKEN", TOKEN)
            .env("OPENROUTER_API_KEY_1", SIM_KEY)
            .env("SWITCHBOARD__TELEGRAM__API_URL", &self.telegram_url)
            .env("SWITCHBOARD__OPENROUTER__BASE_URL", &self.sim_url)
            .arg("--config")
            .arg(self.dir.join("switchboard.toml"))
            .arg("run")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn switchboard run")
    }
}
