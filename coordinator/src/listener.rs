//! The gRPC listener's own accept loop: connection caps, TLS with a handshake timeout, and an
//! HTTP/2 preface timeout, in front of tonic.
//!
//! tonic's `TcpIncoming` with `tls_config` accepts every connection and holds a half-sent handshake
//! or a silent TLS session for as long as the peer likes, so thousands of idle connections used to
//! take every file descriptor. Here each accepted connection first takes a slot ([`slots`]); it
//! must finish TLS within `limits.tls_handshake_timeout` and send the 24-byte HTTP/2 client preface
//! within `limits.first_request_timeout`, or it is closed. Only then does tonic see it, with the
//! preface replayed ([`Conn`]), and the client must open its first request (a HEADERS frame) within the same
//! timeout again, or tonic's reads fail and the connection is closed ([`FrameWatch`]). Refusals and timeouts are logged at WARN, rate limited ([`warn`]).
//!
//! TLS is done here with tokio-rustls and the same settings tonic used (server certificate from
//! `pki`, client certificates optional and verified against the CA trust bundle, ALPN `h2`), and
//! tonic's server gets no `tls_config`. [`Conn`] over `tokio_rustls::server::TlsStream<TcpStream>`
//! reports tonic's `TlsConnectInfo<TcpConnectInfo>`, so `request.peer_certs()` and
//! `request.remote_addr()` read exactly what they read before.
//!
//! Operators keep access through a reserved share of slots, given by certificate after the
//! handshake (see [`slots`]). A separate operator listener would be stronger still, but fleetctl
//! and every `client.toml` know one address, and the reserve needs no change to them. A bearer-token
//! operator has no certificate and uses the general slots; so does everyone on a plaintext
//! (`--insecure`) coordinator, which has no way to tell operators apart.
//!
//! What is not here: an idle timeout for an HTTP/2 connection that made its requests and then stays open
//! answering PINGs. hyper's HTTP/2 server has none (tonic's `max_connection_age` would also end the agents'
//! long Heartbeat streams); such a connection is bounded by the caps and the per-address share, and
//! keep-alive PINGs close the dead ones.

pub mod config;
pub mod slots;
#[cfg(test)]
mod tests;
pub mod warn;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

pub use config::Config;
use slots::{Caps, Refusal, Slot, Slots};
use warn::{Limit, RateLog};

/// What every HTTP/2 client sends first (RFC 9113, section 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Connections past TLS and the preface waiting for tonic to take them. tonic takes each at once
/// and spawns it, so a few are enough; when full, the connection tasks wait (holding their slots).
const READY_QUEUE: usize = 64;

/// The kernel's queue of connections waiting for `accept`. std and tokio bind with 128; a burst
/// larger than that (agents reconnecting after a restart, or a flood) overflows it, and the kernel
/// then drops the clients' handshakes silently, so a client sees a connection nobody accepts for
/// seconds. Linux caps it at `net.core.somaxconn` (4096 by default).
const ACCEPT_BACKLOG: i32 = 4096;

/// How long the accept loop pauses when `accept` fails for want of file descriptors; accepting
/// again at once would spin a core (the failure stays until a connection closes).
const FD_EXHAUSTED_PAUSE: Duration = Duration::from_millis(100);

/// Why the TLS settings cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the server certificate or key in the state directory does not load: {0}")]
    Identity(String),
    #[error("the CA trust bundle does not load: {0}")]
    TrustBundle(String),
}

/// How connections are secured.
#[derive(Clone)]
pub enum Mode {
    /// Plaintext gRPC (`--insecure`): no TLS, and no operator reserve.
    Plain,
    /// TLS with optional client certificates; `operator` says whether a verified chain is an operator's.
    Tls { acceptor: TlsAcceptor, operator: fn(&[rustls::pki_types::CertificateDer<'_>]) -> bool },
}

/// The listener, its limits and mode, not yet accepting.
pub struct Listener {
    tcp: TcpListener,
    config: Config,
    mode: Mode,
}

/// The connections for tonic's `serve_with_incoming_shutdown`, past TLS and the preface.
pub struct Incoming<S> {
    ready: mpsc::Receiver<Conn<S>>,
    shared: Arc<Shared>,
}

/// A connection handed to tonic: the stream, the preface read from it (replayed first), and the
/// slot it holds until tonic drops it.
pub struct Conn<S> {
    io: S,
    replayed: usize,
    /// Until the client's first request (an HTTP/2 HEADERS frame) arrives: the frames read so far and the
    /// deadline for it, so a client that sends the preface and then nothing is closed, not held.
    first_request: Option<FirstRequest>,
    _slot: Slot,
}

/// Watches the client's frames for its first HEADERS frame, until a deadline.
struct FirstRequest {
    frames: FrameWatch,
    deadline: Pin<Box<tokio::time::Sleep>>,
    peer: SocketAddr,
    shared: Arc<Shared>,
}

/// Reads HTTP/2 frame headers (9 bytes: a 24-bit length, the type, flags, the stream id) out of the bytes a
/// client sends after its preface, skipping each payload, to see when a HEADERS frame (type 1) arrives.
#[derive(Debug, Default)]
struct FrameWatch {
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
}

/// The HTTP/2 frame type that opens a request.
const HEADERS: u8 = 0x1;

impl FrameWatch {
    /// Feeds bytes read from the client; true once a HEADERS frame has begun.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (self.header.len() - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == self.header.len() {
                if self.header[3] == HEADERS {
                    return true;
                }
                self.skip =
                    usize::from(self.header[0]) << 16 | usize::from(self.header[1]) << 8 | usize::from(self.header[2]);
                self.have = 0;
            }
        }
        false
    }
}

/// What the accept loop and the connection tasks share.
struct Shared {
    slots: Arc<Slots>,
    log: Mutex<RateLog>,
    config: Config,
}

impl Mode {
    /// TLS as tonic configured it: `cert_pem`/`key_pem` as the server identity, client certificates
    /// optional and, when presented, verified against `trust_bundle_pem`; ALPN `h2`.
    ///
    /// # Errors
    /// A certificate, key or bundle that does not parse.
    pub fn tls(cert_pem: &str, key_pem: &str, trust_bundle_pem: &str) -> Result<Mode, Error> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Identity(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| Error::Identity(e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(trust_bundle_pem.as_bytes()) {
            roots
                .add(ca.map_err(|e| Error::TrustBundle(e.to_string()))?)
                .map_err(|e| Error::TrustBundle(e.to_string()))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| Error::TrustBundle(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Identity(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| Error::Identity(e.to_string()))?;
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Mode::Tls { acceptor: TlsAcceptor::from(Arc::new(tls)), operator: is_operator })
    }
}

impl Listener {
    /// Fits `config` to the process's file-descriptor limit (with a WARN when it had to lower it),
    /// and lengthens the listening socket's accept queue to [`ACCEPT_BACKLOG`].
    pub fn new(tcp: TcpListener, config: Config, mode: Mode) -> Self {
        // listen(2) on a listening socket only changes its backlog.
        if let Err(error) = socket2::SockRef::from(&tcp).listen(ACCEPT_BACKLOG) {
            tracing::warn!(%error, "cannot lengthen the accept queue; bursts of connections may be dropped by the kernel");
        }
        let config = match config.fit_to_fd_limit(config::fd_limit()) {
            Some(fitted) => {
                tracing::warn!(
                    configured = config.max_connections,
                    used = fitted.max_connections,
                    fd_limit = config::fd_limit(),
                    "limits.max_connections does not fit the file-descriptor limit (RLIMIT_NOFILE); lowered it; \
                     raise LimitNOFILE or lower limits.max_connections"
                );
                fitted
            }
            None => config,
        };
        Listener { tcp, config, mode }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The limits in force (after fitting to the fd limit).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Starts the accept loop; it stops when `stop` is cancelled (tonic stops taking connections
    /// with the same token).
    pub fn start(self, stop: CancellationToken) -> Started {
        let caps = Caps {
            max_connections: self.config.max_connections,
            per_ip: self.config.max_connections_per_ip,
            operator_reserved: self.config.operator_reserved,
            // A legitimate client is past TLS and the preface in milliseconds; one that has waited a
            // quarter of the shorter timeout is most likely one of a flood's, and may give way.
            evict_after: self.config.tls_handshake_timeout.min(self.config.first_request_timeout) / 4,
        };
        let shared = Arc::new(Shared {
            slots: Slots::new(caps),
            log: Mutex::new(RateLog::new(self.config.log_interval)),
            config: self.config,
        });
        match self.mode {
            Mode::Plain => {
                let (tx, rx) = mpsc::channel(READY_QUEUE);
                // No certificates, no way to tell operators apart: no reserve.
                tokio::spawn(accept_loop(self.tcp, shared.clone(), false, stop, move |tcp, peer, slot, shared| {
                    tokio::spawn(plain_connection(tcp, peer, slot, shared, tx.clone()));
                }));
                Started::Plain(Incoming { ready: rx, shared })
            }
            Mode::Tls { acceptor, operator } => {
                let (tx, rx) = mpsc::channel(READY_QUEUE);
                let reserve = shared.config.operator_reserved > 0;
                tokio::spawn(accept_loop(self.tcp, shared.clone(), reserve, stop, move |tcp, peer, slot, shared| {
                    tokio::spawn(tls_connection(tcp, peer, slot, shared, acceptor.clone(), operator, tx.clone()));
                }));
                Started::Tls(Incoming { ready: rx, shared })
            }
        }
    }
}

/// The running listener, by mode (tonic needs the concrete stream type).
pub enum Started {
    Plain(Incoming<TcpStream>),
    Tls(Incoming<TlsStream<TcpStream>>),
}

impl<S> Incoming<S> {
    /// Slots held now.
    pub fn usage(&self) -> slots::Usage {
        self.shared.slots.usage()
    }
}

impl<S> tokio_stream::Stream for Incoming<S> {
    type Item = io::Result<Conn<S>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.ready.poll_recv(cx).map(|conn| conn.map(Ok))
    }
}

impl<S: Connected> Connected for Conn<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.replayed < PREFACE.len() {
            // The preface was checked byte for byte, so replaying the constant replays what was read.
            let rest = &PREFACE[self.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.replayed += n;
            return Poll::Ready(Ok(()));
        }
        if let Some(watch) = self.first_request.as_mut()
            && watch.deadline.as_mut().poll(cx).is_ready()
        {
            watch.shared.hit(Limit::FirstRequestTimeout, watch.peer);
            self.first_request = None;
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no request within the timeout")));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(watch)) = (&read, self.first_request.as_mut())
            && watch.frames.feed(&buf.filled()[before..])
        {
            self.first_request = None;
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl Shared {
    /// Counts a hit and writes the line when one is due.
    fn hit(&self, limit: Limit, peer: SocketAddr) {
        let line = self.log.lock().unwrap_or_else(PoisonError::into_inner).hit(limit, Some(peer), Instant::now());
        if let Some(line) = line {
            line.emit(self.config.log_interval);
        }
    }

    fn flush(&self) {
        let lines = self.log.lock().unwrap_or_else(PoisonError::into_inner).flush(Instant::now());
        for line in lines {
            line.emit(self.config.log_interval);
        }
    }
}

/// True when the verified chain's leaf is an operator certificate (`coordinator operators add`).
/// rustls has checked it against our CA; whether the operator still exists is the gate's business.
fn is_operator(chain: &[rustls::pki_types::CertificateDer<'_>]) -> bool {
    chain.first().and_then(|leaf| crate::auth::PeerCert::parse(leaf)).is_some_and(|cert| cert.operator().is_some())
}

/// Accepts until `stop`, admits each connection into a slot (or closes it at once) and hands it to
/// `spawn`; `reserve` says whether the operators' reserve may be used (only when `spawn` classifies).
async fn accept_loop(
    tcp: TcpListener,
    shared: Arc<Shared>,
    reserve: bool,
    stop: CancellationToken,
    spawn: impl Fn(TcpStream, SocketAddr, Slot, Arc<Shared>),
) {
    let mut flush = tokio::time::interval(shared.config.log_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            _ = flush.tick() => {
                shared.flush();
                continue;
            }
            accepted = tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) if is_fd_exhausted(&error) => {
                let line = shared.log.lock().unwrap_or_else(PoisonError::into_inner).hit(
                    Limit::FdExhausted,
                    None,
                    Instant::now(),
                );
                if let Some(line) = line {
                    line.emit(shared.config.log_interval);
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(FD_EXHAUSTED_PAUSE) => continue,
                }
            }
            Err(error) => {
                tracing::debug!(%error, "accept failed");
                continue;
            }
        };
        match shared.slots.admit(peer.ip(), reserve, Instant::now()) {
            Ok(admission) => {
                if admission.evicted {
                    shared.hit(Limit::Evicted, peer);
                }
                let _ = stream.set_nodelay(true);
                spawn(stream, peer, admission.slot, shared.clone());
            }
            Err(refusal) => {
                drop(stream);
                shared.hit(if refusal == Refusal::PerIp { Limit::PerIp } else { Limit::MaxConnections }, peer);
            }
        }
    }
    tracing::debug!("the gRPC accept loop stopped");
}

fn is_fd_exhausted(error: &io::Error) -> bool {
    // EMFILE (24): this process's limit; ENFILE (23): the system's.
    matches!(error.raw_os_error(), Some(23 | 24))
}

/// A plaintext connection: the preface within the timeout, then tonic.
async fn plain_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    shared: Arc<Shared>,
    ready: mpsc::Sender<Conn<TcpStream>>,
) {
    let evicted = slot.evicted().clone();
    tokio::select! {
        _ = evicted.cancelled() => {}
        conn = preface(tcp, peer, slot, &shared) => if let Some(conn) = conn {
            let _ = ready.send(conn).await;
        },
    }
}

/// A TLS connection: the handshake and the preface, each within its timeout, then tonic.
async fn tls_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    mut slot: Slot,
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    operator: fn(&[rustls::pki_types::CertificateDer<'_>]) -> bool,
    ready: mpsc::Sender<Conn<TlsStream<TcpStream>>>,
) {
    let evicted = slot.evicted().clone();
    let work = async {
        let tls = match tokio::time::timeout(shared.config.tls_handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                tracing::debug!(%error, %peer, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                shared.hit(Limit::TlsHandshakeTimeout, peer);
                return None;
            }
        };
        let is_operator = tls.get_ref().1.peer_certificates().is_some_and(operator);
        match slot.classify(is_operator) {
            Ok(()) => {}
            Err(Refusal::ReservedForOperators) => {
                shared.hit(Limit::OperatorReserved, peer);
                return None;
            }
            Err(_) => return None,
        }
        preface(tls, peer, slot, &shared).await
    };
    tokio::select! {
        _ = evicted.cancelled() => {}
        conn = work => if let Some(conn) = conn {
            let _ = ready.send(conn).await;
        },
    }
}

/// Reads the HTTP/2 client preface within `first_request_timeout` and marks the slot established.
async fn preface<S: AsyncRead + Unpin>(
    mut io: S,
    peer: SocketAddr,
    mut slot: Slot,
    shared: &Arc<Shared>,
) -> Option<Conn<S>> {
    let mut buf = [0u8; PREFACE.len()];
    match tokio::time::timeout(shared.config.first_request_timeout, io.read_exact(&mut buf)).await {
        Ok(Ok(_)) if &buf == PREFACE => {}
        Ok(Ok(_)) => {
            tracing::debug!(%peer, "not an HTTP/2 client (no preface); closed");
            return None;
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, %peer, "connection closed before the HTTP/2 preface");
            return None;
        }
        Err(_) => {
            shared.hit(Limit::FirstRequestTimeout, peer);
            return None;
        }
    }
    slot.establish().ok()?;
    let first_request = Some(FirstRequest {
        frames: FrameWatch::default(),
        deadline: Box::pin(tokio::time::sleep(shared.config.first_request_timeout)),
        peer,
        shared: shared.clone(),
    });
    Some(Conn { io, replayed: 0, first_request, _slot: slot })
}
