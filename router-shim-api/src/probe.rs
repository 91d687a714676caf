//! The DHCP probe: who answers a DHCPDISCOVER on this segment?
//!
//! Both the router shim's CLI and the coordinator on MAIN use it: the proof that the router's DHCP is
//! off must come from the segment itself, not from the router's own word. The probe sends several
//! DISCOVERs with one xid from `0.0.0.0:68` bound to the interface, with the broadcast flag set and a
//! fixed locally administered chaddr (so no real client's lease is touched and no pool is
//! exhausted), and collects every OFFER that carries our xid and a server identifier (option 54).
//! It never sends a REQUEST.
//!
//! The source MAC of an offer is read from the Ethernet header through an `AF_PACKET` socket when
//! the process has CAP_NET_RAW; otherwise it is looked up in the neighbour table, and left empty when
//! neither knows it.

use std::collections::HashMap;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

/// The chaddr of every probe: locally administered (bit 1 of the first octet), spells "mfprb".
pub const PROBE_CHADDR: [u8; 6] = [0x02, 0x6d, 0x66, 0x70, 0x72, 0x62];
/// The default listening window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3);
/// At least this many DISCOVERs go out in every window.
pub const DISCOVERS: u32 = 3;

/// What to probe.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    pub interface: String,
    pub window: Duration,
    /// Return at the first offer: enough to know that someone answers.
    pub stop_at_first: bool,
}

impl ProbeRequest {
    pub fn new(interface: impl Into<String>) -> Self {
        ProbeRequest { interface: interface.into(), window: DEFAULT_WINDOW, stop_at_first: false }
    }
}

/// One server that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DhcpOffer {
    pub server_identifier: Ipv4Addr,
    pub source_ip: Ipv4Addr,
    /// Lower-case `aa:bb:cc:dd:ee:ff`; empty when it could not be learnt.
    pub source_mac: String,
    pub offered_ip: Ipv4Addr,
    /// siaddr, or option 66 when siaddr is empty.
    pub next_server: String,
    /// The file field, or option 67 when the field is empty.
    pub boot_file: String,
    pub xid: u32,
}

/// The probe's evidence in one line, as errors and reports quote it.
pub fn describe_offers(offers: &[DhcpOffer]) -> String {
    offers
        .iter()
        .map(|o| {
            format!(
                "server {} (from {} mac {}) offered {} xid {:#010x}",
                o.server_identifier,
                o.source_ip,
                if o.source_mac.is_empty() { "unknown" } else { &o.source_mac },
                o.offered_ip,
                o.xid
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Everything one probe saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeReport {
    pub interface: String,
    pub window_ms: u64,
    pub discovers_sent: u32,
    pub xid: u32,
    /// One entry per server identifier, in the order they first answered.
    pub offers: Vec<DhcpOffer>,
}

/// Why a probe could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "cannot open the DHCP client port 0.0.0.0:68 on {interface}: {source}; run as root (or with CAP_NET_BIND_SERVICE and CAP_NET_RAW) and check that the interface exists"
    )]
    Socket {
        interface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot send a DHCPDISCOVER on {interface}: {source}; check that the interface is up")]
    Send {
        interface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the DHCPDISCOVER: {0}")]
    Encode(String),
    #[error("window {0:?} is too short; give at least 300ms")]
    Window(Duration),
}

/// Builds the DISCOVER that every probe sends.
pub fn discover(xid: u32) -> Result<Vec<u8>, ProbeError> {
    let mut msg = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &PROBE_CHADDR,
    );
    msg.set_opcode(Opcode::BootRequest).set_htype(HType::Eth).set_flags(Flags::default().set_broadcast());
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(MessageType::Discover));
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(&PROBE_CHADDR);
    opts.insert(DhcpOption::ClientIdentifier(client_id));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::TFTPServerName,
        OptionCode::BootfileName,
    ]));
    msg.to_vec().map_err(|e| ProbeError::Encode(e.to_string()))
}

/// Reads an OFFER for `xid`; `None` for anything else (other xids, other message types, no option 54).
pub fn parse_offer(bytes: &[u8], xid: u32, source_ip: Ipv4Addr) -> Option<DhcpOffer> {
    // dhcproto has `debug_assert!`s and unchecked length arithmetic on some options, so a malformed
    // packet from the wire can panic in a debug build; such a packet is simply not an offer. (Release
    // builds have no debug assertions and abort on panic, so this guard only matters in debug.)
    let msg = std::panic::catch_unwind(|| Message::from_bytes(bytes)).ok()?.ok()?;
    if msg.opcode() != Opcode::BootReply || msg.xid() != xid || msg.opts().msg_type() != Some(MessageType::Offer) {
        return None;
    }
    let Some(DhcpOption::ServerIdentifier(server)) = msg.opts().get(OptionCode::ServerIdentifier) else {
        return None;
    };
    let option_text = |code| match msg.opts().get(code) {
        Some(DhcpOption::TFTPServerName(bytes)) | Some(DhcpOption::BootfileName(bytes)) => {
            String::from_utf8_lossy(bytes).trim_end_matches('\0').to_string()
        }
        _ => String::new(),
    };
    let next_server =
        if msg.siaddr().is_unspecified() { option_text(OptionCode::TFTPServerName) } else { msg.siaddr().to_string() };
    let file = msg.fname().map(|f| String::from_utf8_lossy(f).trim_end_matches('\0').to_string()).unwrap_or_default();
    let boot_file = if file.is_empty() { option_text(OptionCode::BootfileName) } else { file };
    Some(DhcpOffer {
        server_identifier: *server,
        source_ip,
        source_mac: String::new(),
        offered_ip: msg.yiaddr(),
        next_server,
        boot_file,
        xid,
    })
}

/// Sends the DISCOVERs and collects offers for `request.window`.
///
/// # Errors
/// When the client port cannot be opened on the interface (not root, no such interface) or a
/// DISCOVER cannot be sent.
///
/// # Cancel safety
/// Dropping the future stops the probe; the raw capture thread ends at its next read timeout.
pub async fn probe(request: &ProbeRequest) -> Result<ProbeReport, ProbeError> {
    if request.window < Duration::from_millis(300) {
        return Err(ProbeError::Window(request.window));
    }
    let interface = request.interface.clone();
    let socket = open_client_socket(&interface)?;
    let xid: u32 = rand::random();
    let packet = discover(xid)?;

    let stop = Arc::new(AtomicBool::new(false));
    let capture = start_capture(&interface, xid, request.window, stop.clone());

    let started = tokio::time::Instant::now();
    let deadline = started + request.window;
    let interval = request.window / (DISCOVERS + 1);
    let mut next_send = started;
    let mut sent = 0u32;
    let mut offers: Vec<DhcpOffer> = Vec::new();
    let mut buf = vec![0u8; 1500];
    let broadcast = SocketAddr::from(([255, 255, 255, 255], 67));
    loop {
        if sent < DISCOVERS && tokio::time::Instant::now() >= next_send {
            socket
                .send_to(&packet, broadcast)
                .await
                .map_err(|source| ProbeError::Send { interface: interface.clone(), source })?;
            sent += 1;
            next_send += interval;
            tracing::debug!(interface = %interface, xid, sent, "sent DHCPDISCOVER");
        }
        let wake = if sent < DISCOVERS { next_send.min(deadline) } else { deadline };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() >= deadline && sent >= DISCOVERS {
                    break;
                }
            }
            received = socket.recv_from(&mut buf) => {
                let Ok((len, SocketAddr::V4(from))) = received else { continue };
                if let Some(offer) = parse_offer(&buf[..len], xid, *from.ip())
                    && !offers.iter().any(|o| o.server_identifier == offer.server_identifier)
                {
                    tracing::debug!(server = %offer.server_identifier, offered = %offer.offered_ip, "DHCPOFFER");
                    offers.push(offer);
                    if request.stop_at_first {
                        break;
                    }
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let macs = match capture {
        Some(handle) => handle.await.unwrap_or_default(),
        None => HashMap::new(),
    };
    for offer in &mut offers {
        offer.source_mac = match macs.get(&offer.source_ip) {
            Some(mac) => mac.clone(),
            None => neighbour_mac(&interface, offer.source_ip).await.unwrap_or_default(),
        };
    }
    Ok(ProbeReport {
        interface,
        window_ms: u64::try_from(request.window.as_millis()).unwrap_or(u64::MAX),
        discovers_sent: sent,
        xid,
        offers,
    })
}

fn open_client_socket(interface: &str) -> Result<tokio::net::UdpSocket, ProbeError> {
    let error = |source| ProbeError::Socket { interface: interface.to_string(), source };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(error)?;
    socket.set_reuse_address(true).map_err(error)?;
    socket.set_broadcast(true).map_err(error)?;
    socket.bind_device(Some(interface.as_bytes())).map_err(error)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)).into()).map_err(error)?;
    socket.set_nonblocking(true).map_err(error)?;
    tokio::net::UdpSocket::from_std(socket.into()).map_err(error)
}

/// Captures Ethernet frames carrying our offers, to learn each server's source MAC.
///
/// Needs CAP_NET_RAW; without it the probe still works and falls back to the neighbour table.
fn start_capture(
    interface: &str,
    xid: u32,
    window: Duration,
    stop: Arc<AtomicBool>,
) -> Option<tokio::task::JoinHandle<HashMap<Ipv4Addr, String>>> {
    let eth_p_ip = i32::from(0x0800u16.to_be());
    let socket = match Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(eth_p_ip))) {
        Ok(socket) => socket,
        Err(error) => {
            tracing::debug!(%error, "no packet socket; source MACs come from the neighbour table");
            return None;
        }
    };
    if let Err(error) = socket.bind_device(Some(interface.as_bytes())) {
        tracing::debug!(%error, "cannot bind the packet socket to the interface");
        return None;
    }
    let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
    let end = Instant::now() + window + Duration::from_millis(200);
    Some(tokio::task::spawn_blocking(move || {
        let mut macs = HashMap::new();
        let mut frame = vec![0u8; 2048];
        let mut reader = &socket;
        while Instant::now() < end && !stop.load(Ordering::Relaxed) {
            let Ok(len) = reader.read(&mut frame) else { continue };
            if let Some((ip, mac)) = offer_source(&frame[..len], xid) {
                macs.entry(ip).or_insert(mac);
            }
        }
        // Frames already queued when the UDP side stopped are read too.
        while let Ok(len) = reader.read(&mut frame) {
            if len == 0 {
                break;
            }
            if let Some((ip, mac)) = offer_source(&frame[..len], xid) {
                macs.entry(ip).or_insert(mac);
            }
            if Instant::now() > end {
                break;
            }
        }
        macs
    }))
}

/// Source IP and MAC of an Ethernet frame that carries an OFFER for `xid` from UDP port 67.
fn offer_source(frame: &[u8], xid: u32) -> Option<(Ipv4Addr, String)> {
    if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ip[9] != 17 || ip.len() < header_len + 8 {
        return None;
    }
    let udp = &ip[header_len..];
    if u16::from_be_bytes([udp[0], udp[1]]) != 67 {
        return None;
    }
    let source_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    parse_offer(&udp[8..], xid, source_ip)?;
    Some((source_ip, format_mac(&frame[6..12])))
}

fn format_mac(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The neighbour table's MAC for `ip` on `interface` (`ip -j neigh`), if it knows one.
async fn neighbour_mac(interface: &str, ip: Ipv4Addr) -> Option<String> {
    let output = tokio::process::Command::new("ip")
        .args(["-j", "neigh", "show", "dev", interface, "to", &ip.to_string()])
        .output()
        .await
        .ok()?;
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).ok()?;
    entries.iter().find_map(|e| e.get("lladdr")?.as_str().map(str::to_ascii_lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(xid: u32, server: Option<Ipv4Addr>, siaddr: Ipv4Addr, file: Option<&str>) -> Vec<u8> {
        let mut msg = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(172, 16, 0, 150),
            siaddr,
            Ipv4Addr::UNSPECIFIED,
            &PROBE_CHADDR,
        );
        msg.set_opcode(Opcode::BootReply);
        msg.opts_mut().insert(DhcpOption::MessageType(MessageType::Offer));
        if let Some(server) = server {
            msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        }
        if let Some(file) = file {
            msg.opts_mut().insert(DhcpOption::BootfileName(file.as_bytes().to_vec()));
        }
        msg.to_vec().unwrap()
    }

    #[test]
    fn discover_has_broadcast_flag_fixed_chaddr_and_xid() {
        let bytes = discover(0xdead_beef).unwrap();
        let msg = Message::from_bytes(&bytes).unwrap();
        assert_eq!(msg.xid(), 0xdead_beef);
        assert!(msg.flags().broadcast());
        assert_eq!(msg.chaddr(), &PROBE_CHADDR);
        assert_eq!(msg.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(msg.opcode(), Opcode::BootRequest);
    }

    #[test]
    fn offers_need_matching_xid_and_option_54() {
        let server = Ipv4Addr::new(172, 16, 0, 1);
        let src = Ipv4Addr::new(172, 16, 0, 1);
        let found = parse_offer(&offer(7, Some(server), Ipv4Addr::new(172, 16, 0, 3), Some("pxelinux.0")), 7, src);
        let found = found.unwrap();
        assert_eq!(found.server_identifier, server);
        assert_eq!(found.offered_ip, Ipv4Addr::new(172, 16, 0, 150));
        assert_eq!(found.next_server, "172.16.0.3");
        assert_eq!(found.boot_file, "pxelinux.0");
        assert_eq!(parse_offer(&offer(8, Some(server), Ipv4Addr::UNSPECIFIED, None), 7, src), None);
        assert_eq!(parse_offer(&offer(7, None, Ipv4Addr::UNSPECIFIED, None), 7, src), None);
        assert_eq!(parse_offer(b"garbage", 7, src), None);
        assert_eq!(parse_offer(&discover(7).unwrap(), 7, src), None);
    }

    #[test]
    fn frames_give_the_source_mac() {
        let payload = offer(9, Some(Ipv4Addr::new(10, 0, 0, 1)), Ipv4Addr::UNSPECIFIED, None);
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF, 0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 255, 255, 255, 255];
        ip.extend_from_slice(&[0, 67, 0, 68, 0, 0, 0, 0]);
        ip.extend_from_slice(&payload);
        frame.extend_from_slice(&ip);
        assert_eq!(offer_source(&frame, 9), Some((Ipv4Addr::new(10, 0, 0, 1), "52:54:00:ab:cd:ef".to_string())));
        assert_eq!(offer_source(&frame, 10), None);
        assert_eq!(offer_source(&frame[..20], 9), None);
    }

    #[tokio::test]
    async fn too_short_window_is_refused() {
        let mut request = ProbeRequest::new("lo");
        request.window = Duration::from_millis(10);
        assert!(matches!(probe(&request).await, Err(ProbeError::Window(_))));
    }
}
