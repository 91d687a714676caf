//! `client.toml`: where the coordinator is and how to trust it. The coordinator writes it; fleetctl reads it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file name, in the coordinator's state directory and in `~/.config/metalfleet/`.
pub const FILE_NAME: &str = "client.toml";

/// The coordinator's default state directory; `client.toml` there is where fleetctl looks last. Here rather than
/// in the coordinator's config because both binaries need it and fleetctl does not depend on the coordinator.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/metalfleet";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// `https://HOST:PORT`, or `http://HOST:PORT` for a coordinator started with `--insecure`.
    pub coordinator: String,
    /// The CA that signed the coordinator's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure: bool,
    /// The operator's client certificate and key (from `coordinator operators add`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// A file (mode 0600) holding the operator's bearer token, sent as `authorization: Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl ClientConfig {
    /// The config that reaches a coordinator bound to `bound`: an unspecified address becomes loopback.
    pub fn for_listener(bound: SocketAddr, ca_file: Option<PathBuf>, insecure: bool) -> Self {
        let ip = match bound.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            other => other,
        };
        let scheme = if insecure { "http" } else { "https" };
        ClientConfig {
            coordinator: format!("{scheme}://{}", SocketAddr::new(ip, bound.port())),
            ca_file: if insecure { None } else { ca_file },
            insecure,
            cert_file: None,
            key_file: None,
            token_file: None,
        }
    }

    /// Writes the file (mode 0644: it holds no secret).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = toml::to_string(self).map_err(std::io::Error::other)?;
        let header = "# Written by `coordinator serve`: how fleetctl reaches this coordinator.\n";
        std::fs::write(path, format!("{header}{text}"))
    }

    /// Reads the file; errors name file, line and key.
    ///
    /// # Errors
    /// The file cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self, metalfleet_common::config::Error> {
        metalfleet_common::config::load(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listener_becomes_loopback() {
        let config = ClientConfig::for_listener("0.0.0.0:7443".parse().unwrap(), Some("/s/ca.pem".into()), false);
        assert_eq!(config.coordinator, "https://127.0.0.1:7443");
        assert_eq!(config.ca_file, Some(PathBuf::from("/s/ca.pem")));
        let plain = ClientConfig::for_listener("[::]:80".parse().unwrap(), Some("/s/ca.pem".into()), true);
        assert_eq!(plain.coordinator, "http://[::1]:80");
        assert_eq!(plain.ca_file, None);
    }

    #[test]
    fn written_file_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let config =
            ClientConfig::for_listener("127.0.0.1:4000".parse().unwrap(), Some(dir.path().join("ca.pem")), false);
        config.write(&path).unwrap();
        assert_eq!(ClientConfig::load(&path).unwrap(), config);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("coordinator = \"https://127.0.0.1:4000\""), "{text}");
        assert!(text.contains("insecure = false"), "{text}");
    }
}
