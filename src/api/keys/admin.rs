//! The running daemon's admin socket, `<state dir>/admin.sock`: how `switchboard keys` changes keys
//! while the daemon holds the store's lock. The daemon's key table is changed by the same call that
//! answers the command, so a created key works and a revoked key is refused from the next request on
//! (well within the one second), with no file polling and no restart. The socket is mode 0600
//! and answers only peers with the daemon's own user id; one JSON line in, one JSON line out. With no
//! daemon there (no socket, or a stale one refusing connections) the command opens the store itself.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::ledger::DayUsage;
use super::{KeyRecord, KeyView, Keys, NewKey};

/// The socket's file name in the state directory.
pub const SOCKET_NAME: &str = "admin.sock";
/// A request line longer than this is refused: a key's options fit in a few hundred bytes.
const MAX_LINE: usize = 64 * 1024;
/// A client that connects and says nothing is dropped after this, so it cannot hold a task forever.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The socket path for `state_dir`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// One command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminRequest {
    /// Make a key.
    Create(NewKey),
    /// Every key.
    List,
    /// One key.
    Show {
        /// Its id.
        id: String,
    },
    /// Revoke a key.
    Revoke {
        /// Its id.
        id: String,
    },
    /// The ledger.
    Usage {
        /// One key, or all.
        id: Option<String>,
        /// Days back.
        days: u32,
    },
}

/// One answer.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AdminResponse {
    /// A key was made: its record and the full key, to print once.
    Created {
        /// The record.
        key: KeyRecord,
        /// `sb-<id>-<secret>`.
        secret: String,
    },
    /// Keys.
    Keys {
        /// The keys.
        keys: Vec<KeyView>,
    },
    /// A key was revoked.
    Revoked {
        /// Its record.
        key: KeyRecord,
    },
    /// The ledger.
    Usage {
        /// Per key, its days newest first.
        usage: Vec<(KeyRecord, Vec<DayUsage>)>,
    },
    /// The command failed.
    Error {
        /// Why.
        message: String,
    },
}

impl std::fmt::Debug for AdminResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `Created` holds a secret: never print it.
        f.write_str(match self {
            Self::Created { .. } => "AdminResponse::Created",
            Self::Keys { .. } => "AdminResponse::Keys",
            Self::Revoked { .. } => "AdminResponse::Revoked",
            Self::Usage { .. } => "AdminResponse::Usage",
            Self::Error { .. } => "AdminResponse::Error",
        })
    }
}

/// Runs one command against `keys` (the daemon's, or the command's own over the opened store).
pub fn execute(keys: &Keys, request: AdminRequest) -> AdminResponse {
    let result = match request {
        AdminRequest::Create(new) => keys
            .create(new)
            .map(|(key, secret)| AdminResponse::Created {
                key,
                secret: secret.expose_secret().to_owned(),
            }),
        AdminRequest::List => keys.list().map(|keys| AdminResponse::Keys { keys }),
        AdminRequest::Show { id } => keys
            .show(&id)
            .map(|k| AdminResponse::Keys { keys: vec![k] }),
        AdminRequest::Revoke { id } => keys.revoke(&id).map(|key| AdminResponse::Revoked { key }),
        AdminRequest::Usage { id, days } => keys
            .usage(id.as_deref(), days)
            .map(|usage| AdminResponse::Usage { usage }),
    };
    result.unwrap_or_else(|e| AdminResponse::Error {
        message: e.to_string(),
    })
}

/// Binds the socket at `path` with mode 0600: bound under a temporary name, restricted, then renamed
/// into place, so the final path is never reachable with looser permissions. A stale socket from a
/// crashed daemon is replaced (the store's lock already proves no other daemon runs here).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let tmp = path.with_extension(format!("sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    Ok(listener)
}

/// Answers commands on `listener` until `stop`; removes the socket file at the end.
pub async fn serve(
    keys: Arc<Keys>,
    listener: UnixListener,
    path: PathBuf,
    stop: CancellationToken,
) {
    let owner = std::fs::metadata(&path).map(|m| m.uid()).ok();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let peer = stream.peer_cred().ok().map(|c| c.uid());
        if owner.is_none() || peer != owner {
            tracing::warn!("refused an admin socket connection from another user");
            continue;
        }
        let keys = keys.clone();
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(IO_TIMEOUT, answer(&keys, stream)).await {
                tracing::debug!(error = %e, "an admin socket client timed out");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn answer(keys: &Arc<Keys>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_LINE as u64);
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let response = match serde_json::from_str::<AdminRequest>(&line) {
        Ok(request) => {
            let keys = keys.clone();
            // Store writes are blocking file I/O: off the async workers.
            tokio::task::spawn_blocking(move || execute(&keys, request))
                .await
                .unwrap_or_else(|e| AdminResponse::Error {
                    message: format!("the command failed: {e}"),
                })
        }
        Err(e) => AdminResponse::Error {
            message: format!("unreadable command: {e}"),
        },
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    let _ = write.write_all(&out).await;
    let _ = write.shutdown().await;
}

/// Sends `request` to the daemon at `path`. `Ok(None)` when no daemon answers there (no socket, or a
/// stale one): the caller opens the store itself.
pub async fn send(path: &Path, request: &AdminRequest) -> std::io::Result<Option<AdminResponse>> {
    let stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut answer = String::new();
    tokio::time::timeout(IO_TIMEOUT, BufReader::new(read).read_line(&mut answer))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "the daemon did not answer")
        })??;
    serde_json::from_str(&answer)
        .map(Some)
        .map_err(std::io::Error::other)
}
