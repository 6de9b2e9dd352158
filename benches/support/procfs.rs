//! Reading a process's memory and thread figures from `/proc`, for the benchmarks that measure the
//! daemon in its own process.

use std::path::Path;

/// A numeric field (`VmHWM:`, `VmRSS:` in KiB, `Threads:`) of `/proc/<pid>/status`, 0 if unreadable.
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
