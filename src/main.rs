//! The `switchboard` binary: parse the command line and hand over to the library.

/// jemalloc instead of glibc's malloc: under load the daemon's many short-lived buffers (HTTP bodies,
/// JSON, stream chunks) spent about a fifth of its CPU in glibc's allocator; with jemalloc the Telegram
/// benchmark ran about three times faster in less memory (docs/bench-telegram.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at start-up (`_RJEM_MALLOC_CONF` in the environment still overrides them),
/// chosen for a daemon on a small server, where memory matters as much as speed. Measured on the Telegram
/// benchmark's 1,000-chat burst (docs/bench-telegram.md): one arena (two runtime workers barely contend
/// for it) and a quarter of the default per-thread cache slots keep the peak down. Freed pages go back to
/// the system after 200 ms, from jemalloc's own background thread: returning them at once (decay 0) cost an
/// `madvise` and a TLB shootdown per freed run, five per message, and a third of the burst's throughput
/// (about 1,500 against 2,100 messages/s) for about 6 MB less at the peak; the background thread keeps
/// that work off the request path and returns an idle daemon's pages without waiting for new traffic.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] =
    b"narenas:1,background_thread:true,dirty_decay_ms:200,muzzy_decay_ms:0,lg_tcache_nslots_mul:-2\0";

fn main() -> std::process::ExitCode {
    switchboard::cli::main()
}
