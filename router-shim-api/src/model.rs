//! Domain types of the router shim: what a router's state is, independent of any wire format.
//!
//! Validation lives here so that every entry point (CLI, gRPC, client) rejects bad input the same
//! way and before any backend is touched.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::Serialize;

/// A transport protocol of a port-forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(InvalidInput::Protocol(other.to_string())),
        }
    }
}

/// One port-forward (DNAT) from the router's WAN side to a host on the LAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortForward {
    pub name: String,
    pub protocol: Protocol,
    pub external_port: u16,
    pub target: SocketAddrV4,
    /// Set from the config's `protected_forwards`: changing or removing it needs a confirmation.
    pub protected: bool,
}

impl PortForward {
    /// Same forward ignoring the `protected` marker, which is config and not router state.
    pub fn same_rule(&self, other: &PortForward) -> bool {
        self.name == other.name
            && self.protocol == other.protocol
            && self.external_port == other.external_port
            && self.target == other.target
    }
}

/// Whether the router may be managed from outside (the WAN side), and from where.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RemoteManagement {
    pub enabled: bool,
    pub allowed_from: Vec<Ipv4Net>,
}

/// What a backend read back from the router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouterState {
    pub backend: String,
    pub dhcp_enabled: bool,
    /// For example `172.16.0.100-172.16.0.200`; empty when unknown.
    pub dhcp_pool: String,
    pub forwards: Vec<PortForward>,
    pub remote_management: RemoteManagement,
}

impl RouterState {
    pub fn forward(&self, name: &str) -> Option<&PortForward> {
        self.forwards.iter().find(|f| f.name == name)
    }
}

/// Input that was refused before anything was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error("port {0} is out of range; use a port from 1 to 65535")]
    Port(u32),
    #[error("target {target} is outside the LAN {lan}; give an address inside the configured lan_prefix")]
    TargetOutsideLan { target: Ipv4Addr, lan: Ipv4Net },
    #[error("forward name {0:?} is invalid; use 1-64 characters from A-Z a-z 0-9 . _ - (no spaces)")]
    Name(String),
    #[error("protocol {0:?} is unknown; use tcp or udp")]
    Protocol(String),
    #[error("target {0:?} is not IP:PORT; write it like 172.16.0.3:22")]
    Target(String),
    #[error("CIDR {0:?} is invalid; write it like 0.0.0.0/0 or 10.0.0.0/8")]
    Cidr(String),
    #[error(
        "forward {name} already exists with another rule ({existing}); pass --replace (or replace=true) to change it"
    )]
    Conflict { name: String, existing: String },
}

/// Checks a forward name: what backends use as a rule comment or section name.
pub fn validate_name(name: &str) -> Result<(), InvalidInput> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok { Ok(()) } else { Err(InvalidInput::Name(name.to_string())) }
}

/// Checks a port number that arrived as a wider integer (flags, proto).
pub fn validate_port(port: u32) -> Result<u16, InvalidInput> {
    match u16::try_from(port) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(InvalidInput::Port(port)),
    }
}

/// Parses `IP:PORT` and checks the port.
pub fn parse_target(text: &str) -> Result<SocketAddrV4, InvalidInput> {
    let (ip, port) = text.rsplit_once(':').ok_or_else(|| InvalidInput::Target(text.to_string()))?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| InvalidInput::Target(text.to_string()))?;
    let port: u32 = port.parse().map_err(|_| InvalidInput::Target(text.to_string()))?;
    Ok(SocketAddrV4::new(ip, validate_port(port)?))
}

/// Parses a CIDR; a bare address means a /32.
pub fn parse_cidr(text: &str) -> Result<Ipv4Net, InvalidInput> {
    let text = text.trim();
    if let Ok(net) = text.parse::<Ipv4Net>() {
        return Ok(net.trunc());
    }
    text.parse::<Ipv4Addr>().map(Ipv4Net::from).map_err(|_| InvalidInput::Cidr(text.to_string()))
}

/// Checks a whole forward against the LAN prefix.
pub fn validate_forward(forward: &PortForward, lan: Ipv4Net) -> Result<(), InvalidInput> {
    validate_name(&forward.name)?;
    validate_port(u32::from(forward.external_port))?;
    validate_port(u32::from(forward.target.port()))?;
    if !lan.contains(forward.target.ip()) {
        return Err(InvalidInput::TargetOutsideLan { target: *forward.target.ip(), lan });
    }
    Ok(())
}

/// One line: `dhcp on (pool ...), forwards [...], remote management on from ...`, for logs and prompts.
impl fmt::Display for RouterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let forwards: Vec<String> = self.forwards.iter().map(ToString::to_string).collect();
        let m = &self.remote_management;
        let from: Vec<String> = m.allowed_from.iter().map(ToString::to_string).collect();
        write!(
            f,
            "dhcp {}, forwards [{}], remote management {}",
            if self.dhcp_enabled { "on" } else { "off" },
            forwards.join("; "),
            if m.enabled { format!("on from {}", from.join(",")) } else { "off".to_string() }
        )
    }
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{} -> {}", self.name, self.protocol, self.external_port, self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lan() -> Ipv4Net {
        "172.16.0.0/20".parse().unwrap()
    }

    fn forward(name: &str, port: u16, target: &str) -> PortForward {
        PortForward {
            name: name.to_string(),
            protocol: Protocol::Tcp,
            external_port: port,
            target: target.parse().unwrap(),
            protected: false,
        }
    }

    #[test]
    fn names_without_spaces_only() {
        assert!(validate_name("main-ssh.v1_a").is_ok());
        for bad in ["", "main ssh", "a/b", "x;y", &"a".repeat(65)] {
            assert_eq!(validate_name(bad), Err(InvalidInput::Name(bad.to_string())));
        }
    }

    #[test]
    fn ports_in_range() {
        assert_eq!(validate_port(22), Ok(22));
        assert_eq!(validate_port(0), Err(InvalidInput::Port(0)));
        assert_eq!(validate_port(65536), Err(InvalidInput::Port(65536)));
        assert_eq!(parse_target("172.16.0.3:70000"), Err(InvalidInput::Port(70000)));
    }

    #[test]
    fn target_must_be_inside_lan() {
        assert!(validate_forward(&forward("ssh", 22, "172.16.0.3:22"), lan()).is_ok());
        let error = validate_forward(&forward("ssh", 22, "10.0.0.3:22"), lan()).unwrap_err();
        assert!(error.to_string().contains("outside the LAN 172.16.0.0/20"), "{error}");
    }

    #[test]
    fn cidrs_and_protocols() {
        assert_eq!(parse_cidr("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(parse_cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert!(parse_cidr("nope").is_err());
        assert_eq!("TCP".parse::<Protocol>(), Ok(Protocol::Tcp));
        assert!("icmp".parse::<Protocol>().is_err());
    }
}
