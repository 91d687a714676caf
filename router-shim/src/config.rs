//! The router shim's configuration: one TOML file, then `METALFLEET_*` variables, then flags.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;
use metalfleet_common::config::bounds::{Origins, Problems, SourceFile, limits};
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

impl ServeConfig {
    /// `[serve]`: certificate and key as a pair, a call timeout between 10 ms and an hour.
    fn validate(&self, problems: &mut Problems) {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            let missing = if self.tls_cert.is_some() { "tls_key" } else { "tls_cert" };
            let given = if self.tls_cert.is_some() { "tls_cert" } else { "tls_key" };
            problems.push(given, format!("`tls_cert` and `tls_key` come as a pair; add `{missing}`"));
        }
        problems.duration("rpc_timeout", self.rpc_timeout, limits::MIN_TIMEOUT..=HOUR);
    }
}

impl LinuxConfig {
    /// `[linux]`: real interface names, a table, management ports, and one way to restart the DHCP server.
    fn validate(&self, problems: &mut Problems) {
        interface(problems, "lan_interface", &self.lan_interface);
        interface(problems, "wan_interface", &self.wan_interface);
        problems.not_blank("table", &self.table);
        problems.not_blank("nft", &self.nft.to_string_lossy());
        problems.not_blank("ip_forward_sysctl", &self.ip_forward_sysctl.to_string_lossy());
        ports(problems, &self.management_ports);
        match (&self.dnsmasq, &self.systemd_unit) {
            (Some(_), Some(_)) => problems.push("systemd_unit", "give either `dnsmasq` or `systemd_unit`, not both"),
            (None, None) => problems.push("", "name the DHCP server with a [linux.dnsmasq] table or `systemd_unit`"),
            (Some(dnsmasq), None) => problems.section("dnsmasq", |p| {
                p.not_blank("pid_file", &dnsmasq.pid_file.to_string_lossy());
                p.not_blank("config_file", &dnsmasq.config_file.to_string_lossy());
                if dnsmasq.command.first().is_none_or(|program| program.trim().is_empty()) {
                    p.push("command", "must not be empty; start with the program, e.g. [\"dnsmasq\", ...]");
                }
            }),
            (None, Some(unit)) => problems.not_blank("systemd_unit", unit),
        }
    }
}

impl OpenWrtConfig {
    /// `[openwrt]`: an http(s) URL, a section name, ports, and timeouts that end.
    fn validate(&self, problems: &mut Problems) {
        http_url(problems, &self.url);
        problems.not_blank("credentials_file", &self.credentials_file.to_string_lossy());
        problems.not_blank("dhcp_section", &self.dhcp_section);
        ports(problems, &self.management_ports);
        problems.duration("apply_rollback", self.apply_rollback, MIN_CONFIRM..=HOUR);
        problems.duration("timeout", self.timeout, limits::MIN_TIMEOUT..=HOUR);
    }
}

impl RouterOsConfig {
    /// `[routeros]`: an http(s) URL, the DHCP server and WAN names, ports, and a timeout that ends.
    fn validate(&self, problems: &mut Problems) {
        http_url(problems, &self.url);
        problems.not_blank("credentials_file", &self.credentials_file.to_string_lossy());
        problems.not_blank("dhcp_server", &self.dhcp_server);
        problems.not_blank("wan_interface", &self.wan_interface);
        ports(problems, &self.management_ports);
        problems.duration("timeout", self.timeout, limits::MIN_TIMEOUT..=HOUR);
    }
}

impl ManualConfig {
    /// `[manual]`: a real WAN address and probe interface, a probe window and a connect timeout that end.
    fn validate(&self, problems: &mut Problems) {
        if self.wan_address.is_unspecified() || self.wan_address.is_broadcast() {
            problems.push("wan_address", format!("{} is not a router's address", self.wan_address));
        }
        interface(problems, "probe_interface", &self.probe_interface);
        problems.duration("probe_window", self.probe_window, MIN_PROBE_WINDOW..=MAX_PROBE_WINDOW);
        problems.duration("connect_timeout", self.connect_timeout, limits::MIN_TIMEOUT..=HOUR);
    }
}

/// A network interface name: 1 to 15 bytes, no whitespace or `/`.
fn interface(problems: &mut Problems, key: &str, name: &str) {
    if name.is_empty() || name.len() > MAX_INTERFACE_LEN || name.contains(|c: char| c.is_whitespace() || c == '/') {
        problems.push(key, format!("{name:?} is not an interface name (1 to 15 characters, no spaces or `/`)"));
    }
}

/// `management_ports`: at least one, none of them 0.
fn ports(problems: &mut Problems, ports: &[u16]) {
    problems.list_len("management_ports", ports.len(), limits::MAX_LIST);
    for (index, port) in ports.iter().enumerate() {
        if *port == 0 {
            problems.push_entry("management_ports", index, "0 is not a port; use 1 to 65535");
        }
    }
}

fn http_url(problems: &mut Problems, url: &url::Url) {
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        problems.push("url", format!("{url} is not an http:// or https:// URL with a host"));
    }
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

/// Why the config cannot be used: it could not be read or parsed, or a value is out of its bounds (naming
/// file, line and key). A usage error (exit 64).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ConfigError(#[from] common_config::Error);

/// Which file to read: the flag, then `METALFLEET_ROUTER_SHIM_CONFIG`, then the default.
///
/// # Errors
/// A `METALFLEET_*` variable is set but empty.
pub fn resolve_path(flag: Option<&Path>, env: &dyn Env) -> Result<PathBuf, ConfigError> {
    common_config::reject_empty(env)?;
    Ok(flag
        .map(Path::to_path_buf)
        .or_else(|| env.var(PATH_VAR).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH)))
}

/// Bounds of the shim's keys, documented in `deploy/router-shim.example.toml`.
const HOUR: Duration = Duration::from_secs(3600);
/// Less than this leaves a person no time to confirm a change that could cut them off.
const MIN_CONFIRM: Duration = Duration::from_secs(1);
/// The DHCP probe listens this long at least, or it misses a slow server.
const MIN_PROBE_WINDOW: Duration = Duration::from_millis(100);
const MAX_PROBE_WINDOW: Duration = Duration::from_secs(600);
/// Linux interface names are at most 15 bytes (IFNAMSIZ).
const MAX_INTERFACE_LEN: usize = 15;

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = SourceFile::read(path)?;
        Config::from_file(file)
    }

    /// Parses `text` as if read from `path` (tests and the example config).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::from_file(SourceFile { path: path.to_owned(), text: text.to_owned() })
    }

    fn from_file(file: SourceFile) -> Result<Config, ConfigError> {
        let config: Config = file.parse()?;
        let mut problems = Problems::new();
        config.validate(&mut problems);
        Origins::new(Some(file)).check(problems)?;
        Ok(config)
    }

    /// Checks every value against its bounds and the rules that span fields, reporting every problem by key.
    pub fn validate(&self, problems: &mut Problems) {
        let section_present = match self.backend.as_str() {
            "linux" => self.linux.is_some(),
            "openwrt" => self.openwrt.is_some(),
            "routeros" => self.routeros.is_some(),
            "manual" => self.manual.is_some(),
            other => {
                problems
                    .push("backend", format!("unknown backend {other:?}; use one of linux, openwrt, routeros, manual"));
                true
            }
        };
        if !section_present {
            problems.push("backend", format!("backend {0:?} needs a [{0}] table", self.backend));
        }
        problems.not_blank("state_dir", &self.state_dir.to_string_lossy());
        problems.duration("confirm_timeout", self.confirm_timeout, MIN_CONFIRM..=HOUR);
        if self.protected_forwards.len() > limits::MAX_LIST {
            problems.push("protected_forwards", format!("has more than {} entries", limits::MAX_LIST));
        }
        for (index, name) in self.protected_forwards.iter().enumerate() {
            if let Err(error) = crate::model::validate_name(name) {
                problems.push_entry("protected_forwards", index, error.to_string());
            }
        }
        problems.section("serve", |p| self.serve.validate(p));
        if let Some(linux) = &self.linux {
            problems.section("linux", |p| linux.validate(p));
        }
        if let Some(openwrt) = &self.openwrt {
            problems.section("openwrt", |p| openwrt.validate(p));
        }
        if let Some(routeros) = &self.routeros {
            problems.section("routeros", |p| routeros.validate(p));
        }
        if let Some(manual) = &self.manual {
            problems.section("manual", |p| manual.validate(p));
        }
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
        check_error(&LINUX.replace("\"linux\"", "\"cisco\""), "s.toml:2:11: key `backend`: unknown backend \"cisco\"");
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
        assert_eq!(resolve_path(Some(Path::new("/f.toml")), &env).unwrap(), PathBuf::from("/f.toml"));
        assert_eq!(resolve_path(None, &env).unwrap(), PathBuf::from("/e.toml"));
        assert_eq!(resolve_path(None, &HashMap::new()).unwrap(), PathBuf::from(DEFAULT_PATH));
    }

    #[test]
    fn an_empty_variable_is_named() {
        let env: HashMap<String, String> = [(PATH_VAR.to_string(), String::new())].into();
        let error = resolve_path(None, &env).unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable METALFLEET_ROUTER_SHIM_CONFIG: is set but empty; unset it or give it a value"
        );
    }

    /// Parses `text` as `s.toml` and compares the whole error with `expected`.
    fn check(text: &str, expected: &str) {
        let error = Config::parse(Path::new("s.toml"), text).unwrap_err().to_string();
        assert_eq!(error, expected, "for {text}");
    }

    #[test]
    fn zero_and_huge_durations_name_line_and_key() {
        check(
            &LINUX.replace("confirm_timeout = \"2s\"", "confirm_timeout = \"0s\""),
            "s.toml:6:19: key `confirm_timeout`: 0s is out of range; use 1s to 1h",
        );
        check(
            &format!("{LINUX}\n[serve]\nrpc_timeout = \"500us\"\n"),
            "s.toml:18:15: key `serve.rpc_timeout`: 500us is out of range; use 10ms to 1h",
        );
        check(
            &format!(
                "{LINUX}\n[manual]\nwan_address = \"192.0.2.1\"\nprobe_interface = \"eth0\"\nprobe_window = \"30days\"\n"
            ),
            "s.toml:20:16: key `manual.probe_window`: 30days is out of range; use 100ms to 10m",
        );
        check(
            &format!("{LINUX}\n[openwrt]\nurl = \"http://r/ubus\"\ncredentials_file = \"/c\"\ntimeout = \"0s\"\n"),
            "s.toml:20:11: key `openwrt.timeout`: 0s is out of range; use 10ms to 1h",
        );
    }

    #[test]
    fn ports_names_and_lists_name_their_entry() {
        check(
            &LINUX.replace("wan_interface = \"wan0\"", "wan_interface = \"wan0\"\nmanagement_ports = [22, 0]"),
            "s.toml:11:25: key `linux.management_ports[1]`: 0 is not a port; use 1 to 65535",
        );
        check(
            &LINUX.replace("wan_interface = \"wan0\"", "wan_interface = \"wan0\"\nmanagement_ports = []"),
            "s.toml:11:20: key `linux.management_ports`: must not be empty",
        );
        check(
            &LINUX.replace("lan_interface = \"lan0\"", "lan_interface = \"\""),
            "s.toml:9:17: key `linux.lan_interface`: \"\" is not an interface name (1 to 15 characters, no spaces or `/`)",
        );
        check(
            &LINUX.replace("[\"main-ssh\"]", "[\"main-ssh\", \"\"]"),
            "s.toml:5:35: key `protected_forwards[1]`: forward name \"\" is invalid; use 1-64 characters from A-Z a-z 0-9 . _ - (no spaces)",
        );
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
