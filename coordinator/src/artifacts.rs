//! The artifacts listener: serves the coordinator's own agent binary and its SHA-256 over HTTPS, so servers
//! being deployed install the agent from MAIN and need no internet.
//!
//! `GET /agent` answers the binary, `GET /agent.sha256` its hex checksum followed by `  agent`. Nothing else
//! is served. The TLS certificate is the coordinator's own server certificate, signed by the CA that the
//! cloud-init user data carries. The file is hashed once at start-up and read for each download.
//!
//! The listener has the gRPC port's kind of limits ([`crate::listener::slots`]): at most
//! [`MAX_CONNECTIONS`] connections at once and [`MAX_PER_ADDRESS`] from one address (a refused one is closed at
//! once, a pending one may give way to a newcomer), the TLS handshake and the request head each within 10 s,
//! one request per connection, and a WARN line per kind of limit at most every 10 s.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::listener::slots::{Caps, Refusal, Slot, Slots};
use crate::listener::warn::{Limit, RateLog};

/// Connections held at once: deploying servers download one file each, so a few hundred is plenty.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections from one address at once (a NAT of servers being deployed shares one).
pub const MAX_PER_ADDRESS: usize = 32;
/// How long a TLS handshake, and then the request head, may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a limit is logged at most.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The `[artifacts]` table of the coordinator's config.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to listen; default: the gRPC listener's address with a free port (`[operations] artifacts_url`
    /// or the user data then carry the real port).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The agent binary to serve; default: `agent` next to the coordinator executable.
    #[serde(default)]
    pub agent_binary: Option<PathBuf>,
}

impl Config {
    /// `[artifacts]`: a named agent binary is a path (any port may be listened on, 0 picks a free one).
    pub fn validate(&self, problems: &mut metalfleet_common::config::bounds::Problems) {
        if let Some(path) = &self.agent_binary {
            problems.not_blank("agent_binary", &path.to_string_lossy());
        }
    }

    /// The agent binary this config names, or `agent` next to the running executable.
    pub fn agent_path(&self) -> Option<PathBuf> {
        self.agent_binary.clone().or_else(|| std::env::current_exe().ok().map(|exe| exe.with_file_name("agent")))
    }
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the agent binary {}: {source}; set [artifacts] agent_binary", path.display())]
    Agent {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} for artifacts: {source}; pick another [artifacts] listen")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("bad TLS certificate or key for the artifacts listener: {0}")]
    Tls(String),
}

/// A running artifacts listener.
#[derive(Debug)]
pub struct Artifacts {
    pub addr: SocketAddr,
    pub agent_sha256: String,
    pub task: tokio::task::JoinHandle<()>,
}

/// Hex SHA-256 of a file, read off the async threads.
///
/// # Errors
/// The file cannot be read.
pub async fn sha256_file(path: &Path) -> std::io::Result<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher)?;
        Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Binds `addr`, hashes the agent and serves until `stop`.
///
/// # Errors
/// The binary cannot be read, the address cannot be bound, or the certificate does not load.
pub async fn start(
    addr: SocketAddr,
    agent: &Path,
    cert_pem: &str,
    key_pem: &str,
    stop: CancellationToken,
) -> Result<Artifacts, Error> {
    let caps = Caps {
        max_connections: MAX_CONNECTIONS,
        per_ip: MAX_PER_ADDRESS,
        operator_reserved: 0,
        evict_after: HANDSHAKE_TIMEOUT / 4,
    };
    start_with(addr, agent, cert_pem, key_pem, caps, stop).await
}

/// [`start`] with other caps (tests).
async fn start_with(
    addr: SocketAddr,
    agent: &Path,
    cert_pem: &str,
    key_pem: &str,
    caps: Caps,
    stop: CancellationToken,
) -> Result<Artifacts, Error> {
    let agent_sha256 = sha256_file(agent).await.map_err(|source| Error::Agent { path: agent.to_owned(), source })?;
    let certs: Vec<_> = rustls_pemfile_certs(cert_pem)?;
    use rustls::pki_types::pem::PemObject as _;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| Error::Tls(format!("private key: {e}")))?;
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
    let served = Arc::new(Served { agent: agent.to_owned(), sha256: agent_sha256.clone() });
    tracing::info!(%addr, agent = %agent.display(), sha256 = %agent_sha256, "artifacts listening");
    let slots = Slots::new(caps);
    let log = Arc::new(std::sync::Mutex::new(RateLog::new(LOG_INTERVAL)));
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(%error, "artifacts accept failed");
                        continue;
                    }
                },
            };
            let hit = |limit: Limit| {
                let line = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).hit(
                    limit,
                    Some(peer),
                    Instant::now(),
                );
                if let Some(line) = line {
                    line.emit(LOG_INTERVAL);
                }
            };
            let slot = match slots.admit(peer.ip(), false, Instant::now()) {
                Ok(admission) => {
                    if admission.evicted {
                        hit(Limit::Evicted);
                    }
                    admission.slot
                }
                Err(refusal) => {
                    hit(if refusal == Refusal::PerIp { Limit::PerIp } else { Limit::MaxConnections });
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let served = served.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut slot = slot;
                let evicted = slot.evicted().clone();
                let work = async {
                    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await??;
                    served.answer(tls, &mut slot).await
                };
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = evicted.cancelled() => tracing::debug!(%peer, "artifacts connection gave way to a newer one"),
                    result = tokio::time::timeout(Duration::from_secs(600), work) => match result {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => tracing::debug!(%error, %peer, "artifacts request failed"),
                        Err(_) => tracing::warn!(%peer, "artifacts download took over 10 minutes; closed"),
                    },
                }
            });
        }
    });
    Ok(Artifacts { addr, agent_sha256, task })
}

fn rustls_pemfile_certs(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, Error> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("certificate: {e}")))
}

struct Served {
    agent: PathBuf,
    sha256: String,
}

impl Served {
    /// Reads one request head (at most 8 KiB) and answers it; one request per connection.
    async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        slot: &mut Slot,
    ) -> std::io::Result<()> {
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read(&mut buf)).await??;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
            if head.len() > 8192 {
                return respond(&mut stream, 431, "text/plain", b"request head too large\n").await;
            }
        }
        // A whole request head: the connection is no longer one a newcomer may push out.
        if slot.establish().is_err() {
            return Ok(());
        }
        let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string();
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        let path = path.split('?').next().unwrap_or_default();
        match (method, path) {
            ("GET" | "HEAD", "/agent.sha256") => {
                let body = format!("{}  agent\n", self.sha256);
                respond(&mut stream, 200, "text/plain", body.as_bytes()).await
            }
            ("GET" | "HEAD", "/agent") => {
                let mut file = tokio::fs::File::open(&self.agent).await?;
                let len = file.metadata().await?.len();
                let header = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {len}\r\nx-checksum-sha256: {}\r\nconnection: close\r\n\r\n",
                    self.sha256
                );
                stream.write_all(header.as_bytes()).await?;
                if method == "GET" {
                    tokio::io::copy(&mut file, &mut stream).await?;
                }
                stream.shutdown().await
            }
            ("GET" | "HEAD", _) => {
                respond(&mut stream, 404, "text/plain", b"not found; try /agent or /agent.sha256\n").await
            }
            _ => respond(&mut stream, 405, "text/plain", b"only GET\n").await,
        }
    }
}

async fn respond<S: tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let header = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_the_agent_and_its_checksum_over_https() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        std::fs::write(&agent, b"pretend agent binary").unwrap();
        let pki = crate::pki::ensure(dir.path(), &[]).unwrap();
        let stop = CancellationToken::new();
        let served =
            start("127.0.0.1:0".parse().unwrap(), &agent, &pki.cert_pem, &pki.key_pem, stop.clone()).await.unwrap();
        let want = sha256_file(&agent).await.unwrap();
        assert_eq!(served.agent_sha256, want);
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates({
                        let mut roots = rustls::RootCertStore::empty();
                        for cert in rustls_pemfile_certs(&pki.ca_pem).unwrap() {
                            roots.add(cert).unwrap();
                        }
                        roots
                    })
                    .with_no_client_auth(),
            )
            .build()
            .unwrap();
        let base = format!("https://localhost:{}", served.addr.port());
        let body = client.get(format!("{base}/agent")).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(&body[..], b"pretend agent binary");
        let sum = client.get(format!("{base}/agent.sha256")).send().await.unwrap().text().await.unwrap();
        assert_eq!(sum, format!("{want}  agent\n"));
        let missing = client.get(format!("{base}/etc/passwd")).send().await.unwrap();
        assert_eq!(missing.status().as_u16(), 404);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), served.task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn connections_over_an_address_share_are_refused_at_once_and_others_still_download() {
        use tokio::net::TcpSocket;
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        std::fs::write(&agent, b"pretend agent binary").unwrap();
        let pki = crate::pki::ensure(dir.path(), &[]).unwrap();
        let stop = CancellationToken::new();
        let caps = Caps { max_connections: 8, per_ip: 2, operator_reserved: 0, evict_after: HANDSHAKE_TIMEOUT };
        let served =
            start_with("127.0.0.1:0".parse().unwrap(), &agent, &pki.cert_pem, &pki.key_pem, caps, stop.clone())
                .await
                .unwrap();
        let from = |last: u8| {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from(([127, 0, 0, last], 0))).unwrap();
            socket.connect(served.addr)
        };
        // Two silent connections from 127.0.0.5 hold its share; a third is closed at once.
        let _one = from(5).await.unwrap();
        let _two = from(5).await.unwrap();
        let mut third = from(5).await.unwrap();
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "refused at once, not held: {closed:?}");
        // Another address still gets the file over TLS.
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile_certs(&pki.ca_pem).unwrap() {
            roots.add(cert).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = from(6).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
        tls.write_all(b"GET /agent.sha256 HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await.unwrap().ok();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200") && answer.contains(&served.agent_sha256), "{answer}");
        stop.cancel();
    }
}
