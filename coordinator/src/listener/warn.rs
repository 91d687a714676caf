//! The WARN lines for limits that were hit: at most one per limit kind per interval, each saying
//! how many connections hit it since the previous line and the last peer, never one per connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

/// A limit a connection ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Refused: every slot holds an established connection.
    MaxConnections,
    /// Refused: the source address holds its share.
    PerIp,
    /// Closed after the handshake: a reserved slot, and no operator certificate.
    OperatorReserved,
    /// Closed while pending, to make room for a newer connection.
    Evicted,
    /// Closed: no finished TLS handshake in time.
    TlsHandshakeTimeout,
    /// Closed: no HTTP/2 preface in time.
    FirstRequestTimeout,
    /// `accept` failed because the process ran out of file descriptors.
    FdExhausted,
}

impl Limit {
    const ALL: [Limit; 7] = [
        Limit::MaxConnections,
        Limit::PerIp,
        Limit::OperatorReserved,
        Limit::Evicted,
        Limit::TlsHandshakeTimeout,
        Limit::FirstRequestTimeout,
        Limit::FdExhausted,
    ];

    /// The name in the log line's `limit` field: the config key to look at.
    pub fn key(self) -> &'static str {
        match self {
            Limit::MaxConnections | Limit::Evicted => "limits.max_connections",
            Limit::PerIp => "limits.max_connections_per_ip",
            Limit::OperatorReserved => "limits.operator_reserved",
            Limit::TlsHandshakeTimeout => "limits.tls_handshake_timeout",
            Limit::FirstRequestTimeout => "limits.first_request_timeout",
            Limit::FdExhausted => "RLIMIT_NOFILE",
        }
    }

    /// The name in the log line's `kind` field, one per kind (two kinds may share a `limit` key).
    pub fn name(self) -> &'static str {
        match self {
            Limit::MaxConnections => "refused_full",
            Limit::PerIp => "refused_per_ip",
            Limit::OperatorReserved => "closed_not_operator",
            Limit::Evicted => "evicted",
            Limit::TlsHandshakeTimeout => "tls_handshake_timeout",
            Limit::FirstRequestTimeout => "first_request_timeout",
            Limit::FdExhausted => "fd_exhausted",
        }
    }

    fn index(self) -> usize {
        Limit::ALL.iter().position(|limit| *limit == self).expect("ALL lists every limit")
    }
}

/// One line to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub limit: Limit,
    /// The last peer that hit the limit.
    pub peer: Option<SocketAddr>,
    /// Connections that hit it since the previous line of this kind (this one included).
    pub count: u64,
}

/// Counts hits per kind and says when a line is due.
#[derive(Debug)]
pub struct RateLog {
    interval: Duration,
    kinds: [Kind; Limit::ALL.len()],
}

#[derive(Debug, Default, Clone, Copy)]
struct Kind {
    last_line: Option<Instant>,
    count: u64,
    peer: Option<SocketAddr>,
}

impl RateLog {
    pub fn new(interval: Duration) -> Self {
        RateLog { interval, kinds: [Kind::default(); Limit::ALL.len()] }
    }

    /// Counts one hit; returns the line to write when none was written for this kind in the last interval.
    pub fn hit(&mut self, limit: Limit, peer: Option<SocketAddr>, now: Instant) -> Option<Line> {
        let kind = &mut self.kinds[limit.index()];
        kind.count += 1;
        kind.peer = peer.or(kind.peer);
        Self::due(kind, limit, self.interval, now)
    }

    /// The lines for hits counted since the last line of their kind, once the interval has passed.
    pub fn flush(&mut self, now: Instant) -> Vec<Line> {
        let interval = self.interval;
        Limit::ALL
            .iter()
            .zip(self.kinds.iter_mut())
            .filter_map(|(limit, kind)| Self::due(kind, *limit, interval, now))
            .collect()
    }

    fn due(kind: &mut Kind, limit: Limit, interval: Duration, now: Instant) -> Option<Line> {
        if kind.count == 0 || kind.last_line.is_some_and(|last| now.duration_since(last) < interval) {
            return None;
        }
        kind.last_line = Some(now);
        let line = Line { limit, peer: kind.peer.take(), count: std::mem::take(&mut kind.count) };
        Some(line)
    }
}

impl Line {
    /// Writes the line at WARN.
    pub fn emit(&self, interval: Duration) {
        let peer = self.peer.map(|peer| peer.to_string()).unwrap_or_else(|| "-".to_string());
        let (kind, limit, count) = (self.limit.name(), self.limit.key(), self.count);
        let interval = humantime::format_duration(interval).to_string();
        match self.limit {
            Limit::MaxConnections => tracing::warn!(
                kind, limit, %peer, count, interval,
                "connections refused: every slot holds an established connection; raise limits.max_connections if \
                 these are agents"
            ),
            Limit::PerIp => tracing::warn!(
                kind, limit, %peer, count, interval,
                "connections refused: the address holds limits.max_connections_per_ip connections; raise it if \
                 agents share a NAT"
            ),
            Limit::OperatorReserved => tracing::warn!(
                kind, limit, %peer, count, interval,
                "connections closed: the general slots are full and the reserved ones are for operator certificates"
            ),
            Limit::Evicted => tracing::warn!(
                kind, limit, %peer, count, interval,
                "pending connections closed to make room: limits.max_connections reached by connections that did \
                 not finish TLS or send the HTTP/2 preface"
            ),
            Limit::TlsHandshakeTimeout => tracing::warn!(
                kind, limit, %peer, count, interval,
                "connections closed: no TLS handshake within limits.tls_handshake_timeout"
            ),
            Limit::FirstRequestTimeout => tracing::warn!(
                kind, limit, %peer, count, interval,
                "connections closed: no HTTP/2 preface within limits.first_request_timeout"
            ),
            Limit::FdExhausted => tracing::warn!(
                kind, limit, %peer, count, interval,
                "accept failed: the process is out of file descriptors; raise LimitNOFILE or lower \
                 limits.max_connections"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(10);

    fn peer(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 40000))
    }

    #[tokio::test(start_paused = true)]
    async fn one_line_per_kind_per_interval_with_the_count_since_the_last_line() {
        let mut log = RateLog::new(INTERVAL);
        let first = log.hit(Limit::PerIp, Some(peer(2)), Instant::now());
        assert_eq!(first, Some(Line { limit: Limit::PerIp, peer: Some(peer(2)), count: 1 }));
        // A thousand more within the interval: no line, not even for a flush.
        for i in 0..1000u32 {
            assert_eq!(log.hit(Limit::PerIp, Some(peer((i % 200) as u8 + 3)), Instant::now()), None);
        }
        tokio::time::advance(INTERVAL - Duration::from_millis(1)).await;
        assert_eq!(log.flush(Instant::now()), vec![]);
        // Another kind has its own interval.
        assert!(log.hit(Limit::TlsHandshakeTimeout, Some(peer(9)), Instant::now()).is_some());
        tokio::time::advance(Duration::from_millis(1)).await;
        let lines = log.flush(Instant::now());
        assert_eq!(lines, vec![Line { limit: Limit::PerIp, peer: Some(peer(202)), count: 1000 }]);
        // Nothing new: no line at the next interval either.
        tokio::time::advance(INTERVAL).await;
        assert_eq!(log.flush(Instant::now()), vec![]);
        // After a quiet interval, the next hit is written at once.
        assert_eq!(
            log.hit(Limit::PerIp, None, Instant::now()),
            Some(Line { limit: Limit::PerIp, peer: None, count: 1 })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_flood_gives_one_line_per_interval() {
        let mut log = RateLog::new(INTERVAL);
        let mut lines = 0;
        let mut counted = 0;
        // 60 s of ten hits a second.
        for _ in 0..600 {
            if let Some(line) = log.hit(Limit::MaxConnections, Some(peer(2)), Instant::now()) {
                lines += 1;
                counted += line.count;
            }
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert_eq!(lines, 6, "one per 10 s");
        let rest: u64 = log.flush(Instant::now()).iter().map(|line| line.count).sum();
        assert_eq!(counted + rest, 600, "every hit is counted in some line");
    }
}
