//! The router shim's configuration: one TOML file, then `METALFLEET_*` variables, then flags.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;
use metalfleet_common::config::{self as common_config, Env};
use serde::Deserialize;

/// Where the config is read from when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/metalfleet/router-shim.toml";
/// The variable that names the config file.
pub const PATH_VAR: &str = "METALFLEET_ROUTER_SHIM_CONFIG";

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `linux`, `openwrt`, `routeros` or `manual`.
    pub backend: String,
    /// The LAN prefix; every forward target must be inside it.
    pub lan_prefix: Ipv4Net,
    /// Directory for the shim's own state (what it created, DHCP as found).
    pub state_dir: PathBuf,
    /// Forwards whose removal or change needs a confirmation (the SSH forward to MAIN).
    #[serde(default)]
    pub protected_forwards: Vec<String>,
    /// How long a protected change waits for `Confirm` before it is rolled back.
    #[serde(with = "humantime_serde", default = "default_confirm_timeout")]
    pub confirm_timeout: Duration,
    #[serde(default)]
    pub serve: ServeConfig,
    pub linux: Option<LinuxConfig>,
    pub openwrt: Option<OpenWrtConfig>,
    pub routeros: Option<RouterOsConfig>,
    pub manual: Option<ManualConfig>,
}

/// The gRPC server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Plaintext gRPC; only for tests and a shim next to the coordinator on loopback.
    #[serde(default)]
    pub insecure: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// CA of client certificates; when set, clients must present one (mTLS).
    pub tls_ca: Option<PathBuf>,
    #[serde(with = "humantime_serde", default = "default_rpc_timeout")]
    pub rpc_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: default_listen(),
            insecure: false,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            rpc_timeout: default_rpc_timeout(),
        }
    }
}

/// A Linux router: nftables and dnsmasq (or a systemd unit).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinuxConfig {
    pub lan_interface: String,
    pub wan_interface: String,
    /// The nftables table (family ip) the shim owns.
    #[serde(default = "default_table")]
    pub table: String,
    /// Masquerade traffic leaving through the WAN interface.
    #[serde(default)]
    pub masquerade: bool,
    /// Ports that remote management opens from the allowed CIDRs.
    #[serde(default = "default_management_ports")]
    pub management_ports: Vec<u16>,
    #[serde(default = "default_nft")]
    pub nft: PathBuf,
    #[serde(default = "default_ip_forward")]
    pub ip_forward_sysctl: PathBuf,
    pub dnsmasq: Option<DnsmasqConfig>,
    /// The DHCP server as a systemd unit (instead of `dnsmasq`).
    pub systemd_unit: Option<String>,
}

/// A dnsmasq that the shim restarts itself (no systemd needed).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsmasqConfig {
    pub pid_file: PathBuf,
    pub config_file: PathBuf,
    /// The command line that starts it again, e.g. `["dnsmasq", "--conf-file=...", "--pid-file=..."]`.
    pub command: Vec<String>,
}

/// OpenWrt through ubus JSON-RPC.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenWrtConfig {
    /// For example `http://192.168.1.1/ubus`.
    pub url: url::Url,
    /// A file of mode 0600 with `username:password` on one line.
    pub credentials_file: PathBuf,
    #[serde(default = "default_uci_dhcp_section")]
    pub dhcp_section: String,
    #[serde(default = "default_management_ports")]
    pub management_ports: Vec<u16>,
    /// How long `uci apply` waits for the shim's confirm before the router reverts by itself.
    #[serde(with = "humantime_serde", default = "default_apply_rollback")]
    pub apply_rollback: Duration,
    #[serde(with = "humantime_serde", default = "default_http_timeout")]
    pub timeout: Duration,
}

/// MikroTik RouterOS v7 REST.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterOsConfig {
    /// For example `https://192.168.88.1/rest`.
    pub url: url::Url,
    pub credentials_file: PathBuf,
    /// PEM CA that signed the router's certificate; the system roots are not used.
    pub ca_file: Option<PathBuf>,
    /// The `/ip/dhcp-server` entry to switch (by name).
    #[serde(default = "default_routeros_dhcp")]
    pub dhcp_server: String,
    #[serde(default = "default_routeros_wan")]
    pub wan_interface: String,
    #[serde(default = "default_management_ports")]
    pub management_ports: Vec<u16>,
    #[serde(with = "humantime_serde", default = "default_http_timeout")]
    pub timeout: Duration,
}

/// A router without an API: print the steps, wait for the person, verify on the wire.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualConfig {
    /// The router's model, shown in the steps.
    #[serde(default = "default_model")]
    pub model: String,
    /// The router's WAN address, for the TCP check of a forward.
    pub wan_address: Ipv4Addr,
    /// The interface on the LAN segment where the DHCP probe runs.
    pub probe_interface: String,
    #[serde(with = "humantime_serde", default = "default_probe_window")]
    pub probe_window: Duration,
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
}

fn default_confirm_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7443))
}
fn default_rpc_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_table() -> String {
    "metalfleet".to_string()
}
fn default_management_ports() -> Vec<u16> {
    vec![22]
}
fn default_nft() -> PathBuf {
    PathBuf::from("nft")
}
fn default_ip_forward() -> PathBuf {
    PathBuf::from("/proc/sys/net/ipv4/ip_forward")
}
fn default_uci_dhcp_section() -> String {
    "lan".to_string()
}
fn default_apply_rollback() -> Duration {
    Duration::from_secs(30)
}
fn default_http_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_routeros_dhcp() -> String {
    "defconf".to_string()
}
fn default_routeros_wan() -> String {
    "ether1".to_string()
}
fn default_model() -> String {
    "TP-Link TL-R470T+".to_string()
}
fn default_probe_window() -> Duration {
    Duration::from_secs(3)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}

/// Why the config cannot be used. Every variant is a usage error (exit 64).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Load(#[from] common_config::Error),
    #[error("{path}: {}", problems.join("; "))]
    Invalid { path: PathBuf, problems: Vec<String> },
}

/// Which file to read: the flag, then `METALFLEET_ROUTER_SHIM_CONFIG`, then the default.
pub fn resolve_path(flag: Option<&Path>, env: &dyn Env) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| env.var(PATH_VAR).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config: Config = common_config::load(path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Parses `text` as if read from `path` (tests and the example config).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = common_config::parse(path, text)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks the rules that span fields, reporting every problem at once.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let section_present = match self.backend.as_str() {
            "linux" => self.linux.is_some(),
            "openwrt" => self.openwrt.is_some(),
            "routeros" => self.routeros.is_some(),
            "manual" => self.manual.is_some(),
            other => {
                problems.push(format!(
                    "key `backend`: unknown backend {other:?}; use one of linux, openwrt, routeros, manual"
                ));
                true
            }
        };
        if !section_present {
            problems.push(format!("backend {0:?} needs a [{0}] table", self.backend));
        }
        if self.confirm_timeout.is_zero() {
            problems.push("key `confirm_timeout`: must be above zero".to_string());
        }
        for name in &self.protected_forwards {
            if let Err(error) = crate::model::validate_name(name) {
                problems.push(format!("key `protected_forwards`: {error}"));
            }
        }
        if let Some(linux) = &self.linux {
            match (&linux.dnsmasq, &linux.systemd_unit) {
                (Some(_), Some(_)) => {
                    problems.push("[linux]: give either `dnsmasq` or `systemd_unit`, not both".to_string())
                }
                (None, None) => problems
                    .push("[linux]: name the DHCP server with a [linux.dnsmasq] table or `systemd_unit`".to_string()),
                (Some(d), None) if d.command.is_empty() => {
                    problems.push("key `linux.dnsmasq.command`: must not be empty".to_string())
                }
                _ => {}
            }
        }
        let serve = &self.serve;
        if serve.tls_cert.is_some() != serve.tls_key.is_some() {
            problems.push("[serve]: `tls_cert` and `tls_key` come as a pair".to_string());
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid { path: path.to_owned(), problems }) }
    }

    /// The directory for state files, created on first use.
    pub fn state_file(&self, name: &str) -> PathBuf {
        self.state_dir.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const LINUX: &str = r#"
backend = "linux"
lan_prefix = "172.16.0.0/20"
state_dir = "/tmp/x"
protected_forwards = ["main-ssh"]
confirm_timeout = "2s"

[linux]
lan_interface = "lan0"
wan_interface = "wan0"

[linux.dnsmasq]
pid_file = "/run/dnsmasq.pid"
config_file = "/etc/dnsmasq.conf"
command = ["dnsmasq"]
"#;

    fn check_error(text: &str, expected: &str) {
        let error = Config::parse(Path::new("s.toml"), text).unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
    }

    #[test]
    fn parses_linux() {
        let config = Config::parse(Path::new("s.toml"), LINUX).unwrap();
        assert_eq!(config.confirm_timeout, Duration::from_secs(2));
        assert_eq!(config.linux.unwrap().table, "metalfleet");
    }

    #[test]
    fn unknown_backend_is_a_config_error() {
        check_error(&LINUX.replace("\"linux\"", "\"cisco\""), "unknown backend \"cisco\"");
    }

    #[test]
    fn unknown_key_names_line() {
        check_error(&LINUX.replace("lan_interface", "lan_iface"), "s.toml:9:1: key `linux.lan_iface`");
    }

    #[test]
    fn missing_dhcp_server() {
        let text = LINUX.split("[linux.dnsmasq]").next().unwrap();
        check_error(text, "name the DHCP server");
    }

    #[test]
    fn path_from_flag_env_default() {
        let env: HashMap<String, String> = [(PATH_VAR.to_string(), "/e.toml".to_string())].into();
        assert_eq!(resolve_path(Some(Path::new("/f.toml")), &env), PathBuf::from("/f.toml"));
        assert_eq!(resolve_path(None, &env), PathBuf::from("/e.toml"));
        assert_eq!(resolve_path(None, &HashMap::new()), PathBuf::from(DEFAULT_PATH));
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/router-shim.example.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.backend, "linux");
        assert_eq!(config.protected_forwards, vec!["main-ssh".to_string()]);
        assert!(config.openwrt.is_some() && config.routeros.is_some() && config.manual.is_some());
    }
}
