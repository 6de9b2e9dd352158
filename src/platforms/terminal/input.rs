//! Reading the terminal's stdin without holding the process: a blocking read of stdin cannot be
//! cancelled, and tokio's own `stdin()` runs it on the runtime's blocking pool, which the runtime waits
//! for when it shuts down — so Ctrl-C at the prompt would only exit after the next Enter. Here a
//! dedicated thread, which nothing waits for, does the reading.

use std::io::Read;

use bytes::Bytes;
use tokio::io::AsyncBufRead;
use tokio_util::io::StreamReader;

/// How much one read of stdin takes at most; a typed line is far shorter, a piped script is read in
/// pieces of this size.
const READ_CHUNK: usize = 8 * 1024;
/// Chunks read ahead of the session: a little, so a piped script does not fill memory.
const READ_AHEAD: usize = 4;

/// The process's stdin as an async reader, fed by a detached thread that ends with stdin (or the process).
pub fn stdin_lines() -> impl AsyncBufRead + Unpin {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(READ_AHEAD);
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                let chunk = match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let failed = chunk.is_err();
                if tx.blocking_send(chunk).is_err() || failed {
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        // Without the thread the session sees this error as its first read.
        let (tx, again) = tokio::sync::mpsc::channel(1);
        let _ = tx.try_send(Err(e));
        rx = again;
    }
    StreamReader::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}
