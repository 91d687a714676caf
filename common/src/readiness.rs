//! The readiness line: a server started with port 0 tells its callers where it listens.

use std::io::Write;
use std::net::SocketAddr;

/// Prints `listening addr=HOST:PORT` on stdout and flushes, once the listener accepts.
///
/// Tests and scripts read this line instead of sleeping, so it must be printed only after
/// the socket is bound.
pub fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    // A closed stdout only means nobody waits for the line; the server still runs.
    let _ = writeln!(out, "listening addr={addr}");
    let _ = out.flush();
}

/// Parses a readiness line back into its address (the other half, for tests and tools).
pub fn parse(line: &str) -> Option<SocketAddr> {
    line.trim().strip_prefix("listening addr=")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_its_own_line() {
        assert_eq!(parse("listening addr=127.0.0.1:4242\n"), Some("127.0.0.1:4242".parse().unwrap()));
        assert_eq!(parse("listening addr=[::1]:80"), Some("[::1]:80".parse().unwrap()));
        assert_eq!(parse("started"), None);
    }
}
