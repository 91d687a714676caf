//! The accept loop on loopback: timeouts close silent connections, caps refuse at once, the
//! reserve lets operators in, and tonic's connect info still carries the peer certificates.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_stream::StreamExt as _;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

use super::*;

/// Outer deadline for anything a test waits on.
const DEADLINE: Duration = Duration::from_secs(10);

struct Pem {
    _dir: tempfile::TempDir,
    ca: String,
    server: (String, String),
    operator: (String, String),
    agent: (String, String),
}

fn pem() -> Pem {
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::pki::ensure(dir.path(), &[]).unwrap();
    let (ca, ca_key) = crate::enroll::load_ca(dir.path()).unwrap();
    let issue = |uri: String| {
        let (issued, key) =
            crate::enroll::issue_client_cert(&ca, &ca_key, "test", &[uri], Duration::from_secs(3600)).unwrap();
        (issued.certificate_pem, key.expose().to_string())
    };
    let operator = issue(format!("{}alice", crate::enroll::OPERATOR_URI));
    let agent = issue(format!("{}m-1", crate::enroll::MACHINE_URI));
    Pem { _dir: dir, ca: pki.ca_pem, server: (pki.cert_pem, pki.key_pem), operator, agent }
}

fn limits(adjust: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config {
        tls_handshake_timeout: Duration::from_millis(300),
        first_request_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    adjust(&mut config);
    config
}

async fn start(config: Config, mode: Mode) -> (SocketAddr, Started, CancellationToken) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let stop = CancellationToken::new();
    (addr, Listener::new(tcp, config, mode).start(stop.clone()), stop)
}

async fn connect_from(source: u8, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, source)), 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

async fn tls_client(
    pem: &Pem,
    identity: Option<&(String, String)>,
    tcp: TcpStream,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(pem.ca.as_bytes()).unwrap()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

/// How long until the server closes `stream` (EOF or reset); fails after [`DEADLINE`].
async fn closed_after<S: AsyncRead + Unpin>(mut stream: S, since: Instant) -> Duration {
    let mut buf = [0u8; 256];
    timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closes the connection before the deadline")
}

async fn next<S>(incoming: &mut Incoming<S>) -> Conn<S> {
    timeout(DEADLINE, incoming.next()).await.expect("a connection reaches tonic").expect("open").unwrap()
}

#[tokio::test]
async fn plaintext_silent_connections_close_after_the_first_request_timeout_and_a_preface_passes() {
    let (addr, started, _stop) = start(limits(|_| {}), Mode::Plain).await;
    let Started::Plain(mut incoming) = started else { panic!("plain") };
    let since = Instant::now();
    let silent = connect_from(1, addr).await;
    let mut client = connect_from(1, addr).await;
    client.write_all(PREFACE).await.unwrap();
    client.write_all(b"frames").await.unwrap();

    let mut conn = next(&mut incoming).await;
    let info: TcpConnectInfo = conn.connect_info();
    assert_eq!(info.remote_addr(), Some(client.local_addr().unwrap()));
    let mut replayed = [0u8; 30];
    conn.read_exact(&mut replayed).await.unwrap();
    assert_eq!(&replayed[..24], PREFACE, "tonic reads the preface first");
    assert_eq!(&replayed[24..], b"frames");

    let closed = closed_after(silent, since).await;
    assert!(closed >= Duration::from_millis(300), "not before the timeout: {closed:?}");
    assert_eq!(incoming.usage().general_established, 1, "{:?}", incoming.usage());
    assert_eq!(incoming.usage().general_pending, 0, "the silent one gave its slot back: {:?}", incoming.usage());
}

#[tokio::test]
async fn tls_half_sent_handshakes_and_silent_sessions_are_closed_after_their_timeouts() {
    let pem = pem();
    let mode = Mode::tls(&pem.server.0, &pem.server.1, &pem.ca).unwrap();
    let config = limits(|c| c.first_request_timeout = Duration::from_millis(600));
    let (addr, _started, _stop) = start(config, mode).await;
    let since = Instant::now();
    let mut half = connect_from(1, addr).await;
    // The first bytes of a ClientHello record, and no more.
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]).await.unwrap();
    let session = tls_client(&pem, None, connect_from(1, addr).await).await.unwrap();
    let session_since = Instant::now();

    let closed = closed_after(half, since).await;
    assert!(closed >= Duration::from_millis(300), "{closed:?}");
    let closed = closed_after(session, session_since).await;
    assert!(closed >= Duration::from_millis(500), "the preface timeout, not the handshake's: {closed:?}");
}

#[tokio::test]
async fn tonic_still_sees_the_peer_certificates_and_the_address() {
    let pem = pem();
    let mode = Mode::tls(&pem.server.0, &pem.server.1, &pem.ca).unwrap();
    let (addr, started, _stop) = start(limits(|_| {}), mode).await;
    let Started::Tls(mut incoming) = started else { panic!("tls") };
    let tcp = connect_from(1, addr).await;
    let local = tcp.local_addr().unwrap();
    let mut client = tls_client(&pem, Some(&pem.agent), tcp).await.unwrap();
    client.write_all(PREFACE).await.unwrap();
    client.flush().await.unwrap();

    let conn = next(&mut incoming).await;
    // The type tonic's `Request::peer_certs()` and `remote_addr()` look up in the extensions.
    let info: TlsConnectInfo<TcpConnectInfo> = conn.connect_info();
    let certs = info.peer_certs().expect("the client certificate");
    let peer = crate::auth::PeerCert::parse(&certs[0]).unwrap();
    assert_eq!(peer.machine_id(), Some("m-1"));
    assert_eq!(info.get_ref().remote_addr(), Some(local));
}

#[tokio::test]
async fn operators_get_in_through_the_reserve_when_agents_hold_every_general_slot() {
    let pem = pem();
    let mode = Mode::tls(&pem.server.0, &pem.server.1, &pem.ca).unwrap();
    let config = limits(|c| {
        c.max_connections = 2;
        c.operator_reserved = 1;
        c.tls_handshake_timeout = Duration::from_secs(5);
        c.first_request_timeout = Duration::from_secs(5);
    });
    let (addr, started, _stop) = start(config, mode).await;
    let Started::Tls(mut incoming) = started else { panic!("tls") };
    let mut agents = Vec::new();
    for _ in 0..2 {
        let mut agent = tls_client(&pem, Some(&pem.agent), connect_from(1, addr).await).await.unwrap();
        agent.write_all(PREFACE).await.unwrap();
        agent.flush().await.unwrap();
        agents.push((agent, next(&mut incoming).await));
    }
    assert_eq!(incoming.usage().general_established, 2);

    // Without an operator certificate: the handshake happens in a reserved slot, then the connection closes.
    let since = Instant::now();
    let stranger = tls_client(&pem, None, connect_from(2, addr).await).await;
    if let Ok(stranger) = stranger {
        let closed = closed_after(stranger, since).await;
        assert!(closed < Duration::from_secs(5), "closed at once, not after a timeout: {closed:?}");
    }

    let mut operator = tls_client(&pem, Some(&pem.operator), connect_from(3, addr).await).await.unwrap();
    operator.write_all(PREFACE).await.unwrap();
    operator.flush().await.unwrap();
    let conn = next(&mut incoming).await;
    let info: TlsConnectInfo<TcpConnectInfo> = conn.connect_info();
    assert!(crate::auth::PeerCert::parse(&info.peer_certs().unwrap()[0]).unwrap().operator().is_some());
    assert_eq!(incoming.usage().reserve_established, 1, "{:?}", incoming.usage());

    // Everything is held by established connections now: the next one is refused at once.
    let since = Instant::now();
    let refused = connect_from(4, addr).await;
    assert!(closed_after(refused, since).await < Duration::from_secs(5));
}

#[tokio::test]
async fn an_address_over_its_share_is_refused_at_once_and_a_flood_of_silent_ones_gives_way() {
    let config = limits(|c| {
        c.max_connections = 3;
        c.max_connections_per_ip = 1;
        c.first_request_timeout = Duration::from_secs(4);
        c.tls_handshake_timeout = Duration::from_secs(4);
    });
    // A plaintext listener has no operator reserve (the default of 32 stays unused).
    let (addr, started, _stop) = start(config, Mode::Plain).await;
    let Started::Plain(mut incoming) = started else { panic!("plain") };
    let flood_since = Instant::now();
    // One connection per address, so fair share evicts nothing and only age does.
    let flood = [connect_from(2, addr).await, connect_from(3, addr).await, connect_from(4, addr).await];
    let since = Instant::now();
    let over = connect_from(2, addr).await;
    let refused = closed_after(over, since).await;
    assert!(refused < Duration::from_secs(4), "refused at once, not after the timeout: {refused:?}");

    // Every slot holds a silent connection. A client that sends its preface gets in by evicting the
    // oldest once it waited a quarter of the timeout (1 s), long before the flood's timeout (4 s).
    let got_in = timeout(DEADLINE, async {
        loop {
            let mut client = connect_from(1, addr).await;
            client.write_all(PREFACE).await.unwrap();
            let since = Instant::now();
            tokio::select! {
                conn = incoming.next() => return (conn, client),
                _ = closed_after(&mut client, since) => {}
            }
        }
    })
    .await
    .expect("the client gets in");
    assert!(got_in.0.is_some());
    let [oldest, ..] = flood;
    let evicted = closed_after(oldest, flood_since).await;
    assert!(evicted < Duration::from_secs(4), "the oldest silent connection was evicted: {evicted:?}");
}

/// An HTTP/2 frame header: a 24-bit payload length, the type, flags, stream id.
fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, 0, 0, 0, 0, 1];
    out.extend_from_slice(payload);
    out
}

#[test]
fn the_frame_watch_sees_the_first_headers_frame_across_reads() {
    let settings = frame(0x4, &[0; 12]);
    let headers = frame(0x1, b"hpack");
    let mut watch = FrameWatch::default();
    assert!(!watch.feed(&settings), "SETTINGS is not a request");
    assert!(!watch.feed(&frame(0x8, &[0, 0, 1, 0])), "nor is WINDOW_UPDATE");
    assert!(!watch.feed(&headers[..4]), "half a frame header");
    assert!(watch.feed(&headers[4..]), "the rest of a HEADERS frame header");
    // A payload that happens to hold a HEADERS-looking byte at offset 3 is skipped, not mistaken.
    let mut watch = FrameWatch::default();
    let tricky = frame(0x0, &[0, 0, 0, 0x1, 0, 0, 0, 0, 0]);
    assert!(!watch.feed(&tricky));
    assert!(watch.feed(&headers));
}

#[tokio::test]
async fn a_connection_that_sends_the_preface_but_no_request_is_closed_and_a_request_keeps_it() {
    let (addr, started, _stop) = start(limits(|_| {}), Mode::Plain).await;
    let Started::Plain(mut incoming) = started else { panic!("plain") };

    // The preface and SETTINGS, then nothing: tonic's reads fail once the first-request timeout passes.
    let mut idle = connect_from(1, addr).await;
    idle.write_all(PREFACE).await.unwrap();
    idle.write_all(&frame(0x4, &[])).await.unwrap();
    let since = Instant::now();
    let mut conn = next(&mut incoming).await;
    let mut buf = [0u8; 64];
    let error = timeout(DEADLINE, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) => panic!("the client did not close"),
                Ok(_) => {}
                Err(error) => return error,
            }
        }
    })
    .await
    .expect("the idle connection is given up before the deadline");
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    assert!(since.elapsed() >= Duration::from_millis(250), "not before the timeout: {:?}", since.elapsed());

    // A client that makes its request in time is not touched by the timeout.
    let mut busy = connect_from(2, addr).await;
    busy.write_all(PREFACE).await.unwrap();
    busy.write_all(&frame(0x4, &[])).await.unwrap();
    busy.write_all(&frame(0x1, b"hpack")).await.unwrap();
    let mut conn = next(&mut incoming).await;
    let mut read = Vec::new();
    let quiet = timeout(Duration::from_millis(900), async {
        loop {
            let n = conn.read(&mut buf).await?;
            read.extend_from_slice(&buf[..n]);
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    })
    .await;
    assert!(quiet.is_err(), "still open and quiet past the timeout: {quiet:?}");
    assert!(read.len() >= 24 + 9 + 9 + 5, "tonic read the preface and both frames: {}", read.len());
}
