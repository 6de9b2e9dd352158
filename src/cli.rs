//! The command line: `switchboard run | chat | demo | check | keys`. Parses arguments, loads configuration and
//! dispatches; every fatal error becomes a clear message and its exit code ([`crate::exit`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::daemon::LogFormat;
use crate::exit::Fatal;

/// How long the runtime waits at exit for blocking tasks still running (see [`main`]).
const RUNTIME_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// switchboard: large language models in Discord, Telegram and your terminal, free tier first.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about, long_about = None)]
pub struct Cli {
    /// The config file (default: /etc/switchboard/switchboard.toml, else ./switchboard.toml).
    #[arg(long, global = true, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format: text (one event per line) or json.
    #[arg(long, global = true, value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,
    /// Threads running the async work (default: one per CPU). One suits a 2-core server that serves
    /// mostly the local API; see docs/operations.md, "Threads".
    #[arg(long, global = true, env = "SWITCHBOARD_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: Option<u16>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: every configured adapter (Telegram, Discord) over one core, router and store.
    Run,
    /// Talk to the bot from this terminal (reads one message per line when stdin is not a terminal).
    Chat,
    /// The offline demo: the terminal chat against simulated OpenRouter and Ollama servers on 127.0.0.1.
    Demo,
    /// Check the configuration and credentials against the providers and platforms.
    Check,
    /// Client API keys for the local API: create, list, show, revoke, usage (works while `run` runs).
    Keys(crate::api::keys::command::KeysArgs),
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("unknown log format `{other}` (use text or json)")),
    }
}

/// Parses the process arguments and runs the chosen command; returns the process exit code.
pub fn main() -> ExitCode {
    // Development convenience: a .env file next to the working directory fills unset variables.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = cli.worker_threads {
        builder.worker_threads(usize::from(workers));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard: cannot start the async runtime: {e}");
            return ExitCode::from(crate::exit::EXIT_UNEXPECTED);
        }
    };
    let outcome = runtime.block_on(dispatch(cli));
    // Everything that matters is done (replies drained, the store flushed). A blocking task may still be
    // stuck — a read of a terminal, a file on a dead file system — and dropping the runtime would wait
    // for it: give it a moment, then exit without it.
    runtime.shutdown_timeout(RUNTIME_STOP_WAIT);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            // Once, on stderr: under systemd that is the journal, so a log line too would say it twice.
            eprintln!("switchboard: {fatal}");
            fatal.to_exit_code()
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), Fatal> {
    match cli.command {
        Command::Run => crate::daemon::run(cli.config, cli.log_format).await,
        Command::Chat => crate::app::chat_command(cli.config, cli.log_format).await,
        Command::Demo => crate::app::demo::demo_command(cli.log_format).await,
        Command::Check => crate::doctor::check_command(cli.config).await,
        Command::Keys(args) => crate::api::keys::command::keys_command(cli.config, args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::Cli;

    #[test]
    fn worker_threads_are_bounded_and_optional() {
        let cli = Cli::try_parse_from(["switchboard", "--worker-threads", "3", "run"]).unwrap();
        assert_eq!(cli.worker_threads, Some(3));
        assert!(Cli::try_parse_from(["switchboard", "--worker-threads", "0", "run"]).is_err());
        assert!(Cli::try_parse_from(["switchboard", "--worker-threads", "257", "run"]).is_err());
    }
}
