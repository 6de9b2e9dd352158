//! `switchboard run` serving the local API, for the client suite (`tests/api_clients.rs`) and the API
//! benchmark (`benches/api.rs`): the real binary with a TOML config in a temporary directory, a clean
//! environment plus the variables given, and the bound address read from its `api listening on ADDR`
//! log line (the config says `listen = "127.0.0.1:0"`, so the port is only known from there).

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long the daemon may take to bind (real time; a loaded 2-core machine starts it in well under 1 s).
const START_WAIT: Duration = Duration::from_secs(60);

/// A running daemon; killed when dropped.
pub struct ApiDaemon {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// Its log lines (stderr): all of them, or only warnings and errors (see [`ApiDaemon::start`]).
    pub logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl ApiDaemon {
    /// Starts the daemon with `config` (TOML) and `env` (secrets, base URLs). `keep_all_logs: false`
    /// keeps only WARN and ERROR lines, for runs long enough that every line would add up.
    pub async fn start(config: &str, env: &[(&str, String)], keep_all_logs: bool) -> ApiDaemon {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("switchboard.toml");
        std::fs::write(&config_path, config).unwrap();
        // SB_BENCH_BIN runs another build of the daemon (an older commit, side by side).
        let bin = std::env::var("SB_BENCH_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_switchboard").into());
        let mut child = Command::new(bin)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("STATE_DIRECTORY", dir.path().join("state"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            // SB_BENCH_MALLOC_CONF tries other jemalloc settings (`_RJEM_MALLOC_CONF`) without a rebuild.
            .envs(std::env::var("SB_BENCH_MALLOC_CONF").map(|c| ("_RJEM_MALLOC_CONF", c)))
            .arg("--config")
            .arg(&config_path)
            .arg("run")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn switchboard run");
        let logs = Arc::new(Mutex::new(Vec::<String>::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let sink = logs.clone();
        let stderr = child.stderr.take().unwrap();
        tokio::spawn(async move {
            let mut addr_tx = Some(addr_tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = listening_addr(&line) {
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                if keep_all_logs || line.contains("WARN") || line.contains("ERROR") {
                    sink.lock().unwrap().push(line);
                }
            }
        });
        let Ok(Ok(addr)) = tokio::time::timeout(START_WAIT, addr_rx).await else {
            panic!(
                "the daemon never logged `api listening on …`; its log:\n{}",
                logs.lock().unwrap().join("\n")
            )
        };
        ApiDaemon {
            child,
            base_url: format!("http://{addr}"),
            logs,
            _dir: dir,
        }
    }

    /// The process id (the benchmark reads its RSS); None once it exited.
    // The client suite never asks for it.
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The log so far, one string.
    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

/// The address in an `api listening on ADDR` line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("api listening on ")?;
    rest.split(|c: char| c.is_whitespace() || c == '"')
        .next()?
        .parse()
        .ok()
}
