//! `switchboard chat` at a real terminal: the binary runs on a pseudo-terminal (so it is interactive, as
//! for a person) whose input stays open, and Ctrl-C (SIGINT) at the prompt must end it at once — not
//! after the next Enter, as when a blocking read of stdin held the exit. A liveness bound, not a speed
//! assertion.

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

use std::ffi::CStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::FromRawFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
/// How long the chat gets to show its prompt, and then to exit after Ctrl-C (real time, generous for a
/// loaded machine; without the fix it never exits while the terminal stays open).
const WAIT: Duration = Duration::from_secs(60);

/// Opens a pseudo-terminal: (the controller side, the path of the terminal side).
fn open_pty() -> (File, String) {
    // SAFETY: plain libc calls on a descriptor we own; `ptsname_r` writes a NUL-terminated name
    // into the buffer we pass with its length.
    unsafe {
        let controller = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(controller >= 0, "posix_openpt failed");
        assert_eq!(libc::grantpt(controller), 0);
        assert_eq!(libc::unlockpt(controller), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            libc::ptsname_r(controller, name.as_mut_ptr(), name.len()),
            0
        );
        let path = CStr::from_ptr(name.as_ptr()).to_str().unwrap().to_owned();
        (File::from_raw_fd(controller), path)
    }
}

/// Kills the chat if the test fails before it exited, so no process is left behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_at_the_chat_prompt_exits_while_the_terminal_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut controller, path) = open_pty();
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut child = KillOnDrop(
        Command::new(BIN)
            .arg("chat")
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("STATE_DIRECTORY", dir.path().join("state"))
            .stdin(Stdio::from(terminal.try_clone().unwrap()))
            .stdout(Stdio::from(terminal))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Read what the chat shows (a terminal that nobody reads would eventually block its writes).
    let screen = Arc::new(Mutex::new(Vec::new()));
    std::thread::spawn({
        let screen = screen.clone();
        move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = controller.read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }
    });
    let shown = || String::from_utf8_lossy(&screen.lock().unwrap()).into_owned();
    wait_until("the prompt", || shown().contains("> "));
    assert!(
        shown().contains("No model keys are configured"),
        "the chat says why nothing will answer: {}",
        shown()
    );

    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGINT) }, 0);
    let mut status = None;
    wait_until("the chat to exit after Ctrl-C", || {
        status = child.0.try_wait().unwrap();
        status.is_some()
    });
    let status = status.unwrap();
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
}
