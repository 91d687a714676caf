//! `[limits]`: the connection limits and timeouts of the gRPC listener, with their bounds.
//!
//! Each key has one [`Bound`]: the deserializer checks it, so a value out of range is reported as
//! `FILE:LINE:COLUMN: key `limits.KEY`: …` through the common config error (exit 64), and
//! [`Config::validate`] checks the same bounds again for configs built in code, plus the rules that
//! span keys.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The `[limits]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Connections held at once by agents, unauthenticated clients and handshakes in progress.
    /// Each one is a file descriptor, so it stays well under `RLIMIT_NOFILE` (clamped at start).
    #[serde(default = "default_max_connections", deserialize_with = "de_max_connections")]
    pub max_connections: usize,
    /// Connections one source address may hold. Agents behind one NAT share an address: set this
    /// above the number of agents behind the largest NAT, with room for reconnects.
    #[serde(default = "default_max_connections_per_ip", deserialize_with = "de_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Extra connections only operators (a client certificate from `coordinator operators add`)
    /// may hold, so they keep access while agents or an attacker hold every general slot.
    #[serde(default = "default_operator_reserved", deserialize_with = "de_operator_reserved")]
    pub operator_reserved: usize,
    /// How long a client may take to finish the TLS handshake.
    #[serde(default = "default_tls_handshake_timeout", deserialize_with = "de_tls_handshake_timeout")]
    pub tls_handshake_timeout: Duration,
    /// How long a client may take, once connected (and past TLS), to send the HTTP/2 preface, and then
    /// again to open its first request (a HEADERS frame).
    #[serde(default = "default_first_request_timeout", deserialize_with = "de_first_request_timeout")]
    pub first_request_timeout: Duration,
    /// Concurrent HTTP/2 streams (calls) per connection.
    #[serde(default = "default_max_concurrent_streams", deserialize_with = "de_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// How often an HTTP/2 PING checks a quiet connection.
    #[serde(default = "default_keepalive_interval", deserialize_with = "de_keepalive_interval")]
    pub keepalive_interval: Duration,
    /// How long the PING's answer may take before the connection is closed.
    #[serde(default = "default_keepalive_timeout", deserialize_with = "de_keepalive_timeout")]
    pub keepalive_timeout: Duration,
    /// At most one WARN line per limit kind per interval; it says how many connections hit it.
    #[serde(default = "default_log_interval", deserialize_with = "de_log_interval")]
    pub log_interval: Duration,
}

/// The accepted range of one key.
#[derive(Debug, Clone, Copy)]
pub struct Bound<T> {
    pub key: &'static str,
    pub min: T,
    pub max: T,
}

pub const MAX_CONNECTIONS: Bound<usize> = Bound { key: "max_connections", min: 16, max: 1_000_000 };
pub const MAX_CONNECTIONS_PER_IP: Bound<usize> = Bound { key: "max_connections_per_ip", min: 1, max: 1_000_000 };
pub const OPERATOR_RESERVED: Bound<usize> = Bound { key: "operator_reserved", min: 0, max: 1024 };
pub const TLS_HANDSHAKE_TIMEOUT: Bound<Duration> =
    Bound { key: "tls_handshake_timeout", min: Duration::from_millis(100), max: Duration::from_secs(300) };
pub const FIRST_REQUEST_TIMEOUT: Bound<Duration> =
    Bound { key: "first_request_timeout", min: Duration::from_millis(100), max: Duration::from_secs(300) };
pub const MAX_CONCURRENT_STREAMS: Bound<u32> = Bound { key: "max_concurrent_streams", min: 1, max: 10_000 };
pub const KEEPALIVE_INTERVAL: Bound<Duration> =
    Bound { key: "keepalive_interval", min: Duration::from_secs(1), max: Duration::from_secs(3600) };
pub const KEEPALIVE_TIMEOUT: Bound<Duration> =
    Bound { key: "keepalive_timeout", min: Duration::from_secs(1), max: Duration::from_secs(300) };
pub const LOG_INTERVAL: Bound<Duration> =
    Bound { key: "log_interval", min: Duration::from_millis(100), max: Duration::from_secs(3600) };

/// File descriptors left for everything but gRPC connections: the store, logs, MAAS and router
/// clients, the artifacts listener and its downloads.
pub const FD_HEADROOM: u64 = 256;

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            operator_reserved: default_operator_reserved(),
            tls_handshake_timeout: default_tls_handshake_timeout(),
            first_request_timeout: default_first_request_timeout(),
            max_concurrent_streams: default_max_concurrent_streams(),
            keepalive_interval: default_keepalive_interval(),
            keepalive_timeout: default_keepalive_timeout(),
            log_interval: default_log_interval(),
        }
    }
}

impl Config {
    /// [`Config::validate`] in the common config layer's terms, so a problem names file, line and key.
    pub fn validate_into(&self, problems: &mut metalfleet_common::config::bounds::Problems) {
        let count = |p: &mut metalfleet_common::config::bounds::Problems, b: Bound<usize>, v: usize| {
            p.number(b.key, v, b.min..=b.max)
        };
        count(problems, MAX_CONNECTIONS, self.max_connections);
        count(problems, MAX_CONNECTIONS_PER_IP, self.max_connections_per_ip);
        count(problems, OPERATOR_RESERVED, self.operator_reserved);
        let b = MAX_CONCURRENT_STREAMS;
        problems.number(b.key, self.max_concurrent_streams, b.min..=b.max);
        for (b, v) in [
            (TLS_HANDSHAKE_TIMEOUT, self.tls_handshake_timeout),
            (FIRST_REQUEST_TIMEOUT, self.first_request_timeout),
            (KEEPALIVE_INTERVAL, self.keepalive_interval),
            (KEEPALIVE_TIMEOUT, self.keepalive_timeout),
            (LOG_INTERVAL, self.log_interval),
        ] {
            problems.duration(b.key, v, b.min..=b.max);
        }
        if self.max_connections_per_ip > self.max_connections {
            problems
                .push("max_connections_per_ip", format!("must not exceed max_connections ({})", self.max_connections));
        }
        if self.keepalive_timeout >= self.keepalive_interval {
            problems.push("keepalive_timeout", "must be shorter than keepalive_interval");
        }
    }

    /// Every problem with this section, each naming its key (`limits.KEY`); empty when it is usable.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |problem: Option<String>| problems.extend(problem);
        check(MAX_CONNECTIONS.check(self.max_connections).err());
        check(MAX_CONNECTIONS_PER_IP.check(self.max_connections_per_ip).err());
        check(OPERATOR_RESERVED.check(self.operator_reserved).err());
        check(TLS_HANDSHAKE_TIMEOUT.check(self.tls_handshake_timeout).err());
        check(FIRST_REQUEST_TIMEOUT.check(self.first_request_timeout).err());
        check(MAX_CONCURRENT_STREAMS.check(self.max_concurrent_streams).err());
        check(KEEPALIVE_INTERVAL.check(self.keepalive_interval).err());
        check(KEEPALIVE_TIMEOUT.check(self.keepalive_timeout).err());
        check(LOG_INTERVAL.check(self.log_interval).err());
        let mut problems: Vec<String> = problems.into_iter().map(|p| format!("limits.{p}")).collect();
        if self.max_connections_per_ip > self.max_connections {
            problems.push(format!(
                "limits.max_connections_per_ip ({}) must not exceed limits.max_connections ({})",
                self.max_connections_per_ip, self.max_connections
            ));
        }
        if self.keepalive_timeout >= self.keepalive_interval {
            problems.push(format!(
                "limits.keepalive_timeout ({:?}) must be shorter than limits.keepalive_interval ({:?})",
                self.keepalive_timeout, self.keepalive_interval
            ));
        }
        problems
    }

    /// This config with `max_connections` lowered so that every slot (general and reserved) plus
    /// [`FD_HEADROOM`] fits in `fd_limit`, the process's soft `RLIMIT_NOFILE`; `None` when it
    /// already fits (or the limit is unknown).
    pub fn fit_to_fd_limit(&self, fd_limit: Option<u64>) -> Option<Config> {
        let limit = fd_limit?;
        let needed = (self.max_connections + self.operator_reserved) as u64 + FD_HEADROOM;
        if needed <= limit {
            return None;
        }
        let room = limit.saturating_sub(FD_HEADROOM + self.operator_reserved as u64) as usize;
        let max_connections = room.max(MAX_CONNECTIONS.min);
        Some(Config {
            max_connections,
            max_connections_per_ip: self.max_connections_per_ip.min(max_connections),
            ..self.clone()
        })
    }
}

impl<T: PartialOrd + Copy + BoundDisplay> Bound<T> {
    /// `Err` names the key (without the `limits.` prefix) and the range.
    pub fn check(&self, value: T) -> Result<T, String> {
        if value < self.min || value > self.max {
            Err(format!(
                "{} must be between {} and {} (got {})",
                self.key,
                self.min.show(),
                self.max.show(),
                value.show()
            ))
        } else {
            Ok(value)
        }
    }
}

/// How a bound's value reads in a message: durations the way they are written in the file.
pub trait BoundDisplay {
    fn show(&self) -> String;
}

impl BoundDisplay for usize {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl BoundDisplay for u32 {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl BoundDisplay for Duration {
    fn show(&self) -> String {
        humantime::format_duration(*self).to_string()
    }
}

/// The process's soft `RLIMIT_NOFILE`, read from `/proc/self/limits` (no `unsafe` needed);
/// `None` when unlimited or unreadable.
pub fn fd_limit() -> Option<u64> {
    parse_fd_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

fn parse_fd_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

fn bounded<'de, D, T>(deserializer: D, bound: Bound<T>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + PartialOrd + Copy + BoundDisplay,
{
    let value = T::deserialize(deserializer)?;
    bound.check(value).map_err(serde::de::Error::custom)
}

fn bounded_duration<'de, D: Deserializer<'de>>(deserializer: D, bound: Bound<Duration>) -> Result<Duration, D::Error> {
    let value = humantime_serde::deserialize(deserializer)?;
    bound.check(value).map_err(serde::de::Error::custom)
}

fn de_max_connections<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    bounded(d, MAX_CONNECTIONS)
}
fn de_max_connections_per_ip<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    bounded(d, MAX_CONNECTIONS_PER_IP)
}
fn de_operator_reserved<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    bounded(d, OPERATOR_RESERVED)
}
fn de_max_concurrent_streams<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded(d, MAX_CONCURRENT_STREAMS)
}

fn de_tls_handshake_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    bounded_duration(d, TLS_HANDSHAKE_TIMEOUT)
}
fn de_first_request_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    bounded_duration(d, FIRST_REQUEST_TIMEOUT)
}
fn de_keepalive_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    bounded_duration(d, KEEPALIVE_INTERVAL)
}
fn de_keepalive_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    bounded_duration(d, KEEPALIVE_TIMEOUT)
}
fn de_log_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    bounded_duration(d, LOG_INTERVAL)
}

fn default_max_connections() -> usize {
    4096
}
fn default_max_connections_per_ip() -> usize {
    256
}
fn default_operator_reserved() -> usize {
    32
}
fn default_tls_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_first_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_concurrent_streams() -> u32 {
    128
}
fn default_keepalive_interval() -> Duration {
    Duration::from_secs(20)
}
fn default_keepalive_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_log_interval() -> Duration {
    Duration::from_secs(10)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<crate::config::Config, String> {
        metalfleet_common::config::parse::<crate::config::Config>(Path::new("c.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let config = Config::default();
        assert_eq!(config.validate(), Vec::<String>::new());
        assert_eq!(parse("").unwrap().limits, config);
        assert_eq!((config.max_connections, config.max_connections_per_ip, config.operator_reserved), (4096, 256, 32));
    }

    #[test]
    fn out_of_range_values_name_file_line_and_key() {
        for (text, expected) in [
            (
                "[limits]\nmax_connections = 0\n",
                "c.toml:2:19: key `limits.max_connections`: max_connections must be between 16 and 1000000 (got 0)",
            ),
            ("[limits]\n\nmax_connections_per_ip = 9999999\n", "c.toml:3:26: key `limits.max_connections_per_ip`"),
            ("[limits]\noperator_reserved = 5000\n", "c.toml:2:21: key `limits.operator_reserved`"),
            (
                "[limits]\ntls_handshake_timeout = \"1ms\"\n",
                "c.toml:2:25: key `limits.tls_handshake_timeout`: tls_handshake_timeout must be between 100ms and 5m (got 1ms)",
            ),
            ("[limits]\nfirst_request_timeout = \"0s\"\n", "key `limits.first_request_timeout`"),
            ("[limits]\nmax_concurrent_streams = 0\n", "key `limits.max_concurrent_streams`"),
            ("[limits]\nkeepalive_interval = \"2h\"\n", "key `limits.keepalive_interval`"),
            ("[limits]\nkeepalive_timeout = \"500ms\"\n", "key `limits.keepalive_timeout`"),
            ("[limits]\nlog_interval = \"1us\"\n", "key `limits.log_interval`"),
            ("[limits]\nmax_connection = 5\n", "c.toml:2:1: key `limits.max_connection`: unknown field"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn validate_checks_the_bounds_and_the_rules_across_keys() {
        let config = Config {
            max_connections: 10,
            max_connections_per_ip: 20,
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(5),
            ..Config::default()
        };
        let problems = config.validate().join("; ");
        assert!(problems.contains("limits.max_connections must be between 16"), "{problems}");
        assert!(problems.contains("limits.max_connections_per_ip (20) must not exceed"), "{problems}");
        assert!(problems.contains("limits.keepalive_timeout (5s) must be shorter"), "{problems}");
        // The rules across keys run at load, through the config's own validate(), naming file, line and key.
        let text = "[limits]\nmax_connections = 100\nmax_connections_per_ip = 200\n";
        let error = crate::config::Config::parse(std::path::Path::new("c.toml"), text).unwrap_err().to_string();
        assert!(error.contains("c.toml:3") && error.contains("limits.max_connections_per_ip"), "{error}");
        assert!(error.contains("must not exceed max_connections (100)"), "{error}");
    }

    #[test]
    fn the_slots_are_fitted_to_the_file_descriptor_limit() {
        let config = Config::default();
        assert_eq!(config.fit_to_fd_limit(None), None, "unknown limit: unchanged");
        assert_eq!(config.fit_to_fd_limit(Some(4096 + 32 + FD_HEADROOM)), None, "fits exactly");
        let fitted = config.fit_to_fd_limit(Some(1024)).unwrap();
        assert_eq!(fitted.max_connections, 1024 - 256 - 32);
        assert_eq!(fitted.max_connections_per_ip, 256);
        let tiny = config.fit_to_fd_limit(Some(100)).unwrap();
        assert_eq!((tiny.max_connections, tiny.max_connections_per_ip), (16, 16));
    }

    #[test]
    fn the_soft_fd_limit_is_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63704                63704                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_fd_limit(limits), Some(1024));
        assert_eq!(parse_fd_limit("Max open files            unlimited            unlimited            files\n"), None);
        assert!(fd_limit().is_some(), "this Linux host has /proc/self/limits");
    }
}
