//! The `switchboard` binary: parse the command line and hand over to the library.

/// jemalloc instead of glibc's malloc: under load the daemon's many short-lived buffers (HTTP bodies,
/// JSON, stream chunks) spent about a fifth of its CPU in glibc's allocator; with jemalloc the Telegram
/// benchmark ran three times faster (docs/bench-telegram.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at start-up (`_RJEM_MALLOC_CONF` in the environment still overrides them).
/// Two arenas suit the two runtime workers a small server has (jemalloc's default of four per CPU kept
/// about 10 MB more resident after a burst), and freed pages go back to the system within a second
/// instead of ten, so a burst does not leave the daemon's footprint raised.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    switchboard::cli::main()
}
