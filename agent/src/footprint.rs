//! The agent watching its own footprint: resident memory from `/proc/self/status`, and the re-exec
//! that brings it back under budget.

use std::os::unix::process::CommandExt;

/// VmRSS of this process, in bytes; `None` when /proc cannot be read.
pub fn rss_bytes() -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// The `VmRSS:` line of a `/proc/PID/status` text, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut parts = line.split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => value.checked_mul(1024),
        Some(_) => None,
    }
}

/// Replaces this process with a fresh copy of itself (same executable, same arguments).
///
/// Returns only if the exec failed; the caller then exits and lets the supervisor restart it.
pub fn reexec() -> std::io::Error {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => return error,
    };
    std::process::Command::new(exe).args(std::env::args_os().skip(1)).exec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tagent\nVmPeak:\t  20000 kB\nVmRSS:\t    8192 kB\nThreads:\t2\n";
        assert_eq!(parse_vm_rss(status), Some(8192 * 1024));
        assert_eq!(parse_vm_rss("Name:\tkthreadd\n"), None);
        assert!(rss_bytes().unwrap() > 0);
    }

    proptest::proptest! {
        #[test]
        fn any_status_text_is_parsed_without_panicking(text in "(VmRSS:)?[ \t0-9a-zA-Z:\n]{0,60}") {
            let _ = parse_vm_rss(&text);
        }
    }
}
