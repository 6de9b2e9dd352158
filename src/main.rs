//! The `switchboard` binary: parse the command line and hand over to the library.

/// jemalloc instead of glibc's malloc: under load the daemon's many short-lived buffers (HTTP bodies,
/// JSON, stream chunks) spent about a fifth of its CPU in glibc's allocator; with jemalloc the Telegram
/// benchmark ran about three times faster in less memory (docs/bench-telegram.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at start-up (`_RJEM_MALLOC_CONF` in the environment still overrides them),
/// chosen for a daemon on a small server, where memory matters more than the last few percent of speed.
/// Measured on the Telegram benchmark's 1,000-chat burst (docs/bench-telegram.md): jemalloc's defaults
/// peaked at 69 MB resident; one arena (two runtime workers barely contend for it), freed pages returned at
/// once instead of after ten seconds, and a quarter of the default per-thread cache slots peak at 47-48 MB
/// while still answering over 3,000 messages a second.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] =
    b"narenas:1,dirty_decay_ms:0,muzzy_decay_ms:0,lg_tcache_nslots_mul:-2\0";

fn main() -> std::process::ExitCode {
    switchboard::cli::main()
}
