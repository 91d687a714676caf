//! A Linux router: port-forwards and remote management in an nftables table the shim owns, DHCP
//! through dnsmasq (pid file + config file) or a systemd unit.
//!
//! The shim owns exactly one table (`table ip <name>`). Every change rewrites that whole table in
//! one `nft -f -` transaction (create, delete, recreate), so a change is atomic and applying the
//! same state twice yields the same table. Tables the shim does not own are only read: a foreign
//! `forward` chain with policy drop is reported with the fix, never edited.

#[doc(hidden)]
pub mod fuzzing;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::{Backend, BackendError};
use crate::config::{DnsmasqConfig, LinuxConfig};
use crate::model::{PortForward, Protocol, RemoteManagement, RouterState};

/// Prefix of a `dhcp-range` line that the shim switched off.
const OFF_MARK: &str = "#metalfleet-dhcp-off# ";
const FWD_COMMENT: &str = "metalfleet:fwd:";
const MGMT_COMMENT: &str = "metalfleet:mgmt:";
const MGMT_OFF_COMMENT: &str = "metalfleet:mgmt-drop";

/// What the router was like before the shim's first change, so `reset` can put it back.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Found {
    dnsmasq_config: Option<String>,
    ip_forward: Option<String>,
    systemd_active: Option<bool>,
}

/// The content of the shim's table, as read back or as desired.
#[derive(Debug, Clone, Default, PartialEq)]
struct TableState {
    exists: bool,
    forwards: Vec<PortForward>,
    /// `None` while the shim has never set remote management (no rules at all).
    management: Option<RemoteManagement>,
}

pub struct LinuxBackend {
    config: LinuxConfig,
    found_file: PathBuf,
}

impl LinuxBackend {
    pub fn new(config: LinuxConfig, found_file: PathBuf) -> Self {
        LinuxBackend { config, found_file }
    }

    async fn nft(&self, args: &[&str], stdin: Option<&str>) -> Result<String, BackendError> {
        let mut command = tokio::process::Command::new(&self.config.nft);
        command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let tool = |message: String| BackendError::Tool { tool: format!("nft {}", args.join(" ")), message };
        let mut child = command.spawn().map_err(|e| tool(format!("{e}; install nftables or set linux.nft")))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).await.map_err(|e| tool(e.to_string()))?;
        }
        let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .map_err(|_| tool("timed out after 20s".to_string()))?
            .map_err(|e| tool(e.to_string()))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(tool(String::from_utf8_lossy(&output.stderr).trim().to_string()))
        }
    }

    async fn read_table(&self) -> Result<TableState, BackendError> {
        let text = match self.nft(&["-j", "list", "table", "ip", &self.config.table], None).await {
            Ok(text) => text,
            Err(BackendError::Tool { message, .. }) if message.contains("No such file or directory") => {
                return Ok(TableState::default());
            }
            Err(error) => return Err(error),
        };
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| BackendError::Tool { tool: "nft -j".to_string(), message: format!("unreadable JSON: {e}") })?;
        parse_table(&json)
    }

    async fn write_table(&self, desired: &TableState) -> Result<(), BackendError> {
        let script = render_table(&self.config, desired);
        tracing::debug!(%script, "nft transaction");
        self.nft(&["-f", "-"], Some(&script)).await?;
        let read = self.read_table().await?;
        let mut expected = desired.clone();
        expected.exists = true;
        if read != expected {
            return Err(BackendError::Tool {
                tool: "nft".to_string(),
                message: format!("read-back differs from what was applied: wanted {expected:?}, found {read:?}"),
            });
        }
        Ok(())
    }

    /// Warns when a foreign base chain on the forward hook drops by default and has no dnat accept.
    async fn warn_foreign_forward_drop(&self) {
        let Ok(text) = self.nft(&["-j", "list", "ruleset"], None).await else { return };
        let Ok(json) = serde_json::from_str::<Value>(&text) else { return };
        for problem in foreign_forward_drops(&json, &self.config.table) {
            tracing::warn!(
                "{problem} would drop the forwarded traffic; the shim does not edit tables it does not own: add `nft add rule {problem} ct status dnat accept` (or the equivalent in your firewall config)"
            );
        }
    }

    fn load_found(&self) -> Found {
        std::fs::read_to_string(&self.found_file)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    fn save_found(&self, found: &Found) -> Result<(), BackendError> {
        if let Some(dir) = self.found_file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| BackendError::file(dir, e))?;
        }
        let text = serde_json::to_string_pretty(found).unwrap_or_default();
        std::fs::write(&self.found_file, text).map_err(|e| BackendError::file(&self.found_file, e))
    }

    async fn enable_ip_forward(&self) -> Result<(), BackendError> {
        let path = &self.config.ip_forward_sysctl;
        let current = std::fs::read_to_string(path).map_err(|e| BackendError::file(path, e))?;
        if current.trim() == "1" {
            return Ok(());
        }
        let mut found = self.load_found();
        if found.ip_forward.is_none() {
            found.ip_forward = Some(current.trim().to_string());
            self.save_found(&found)?;
        }
        std::fs::write(path, "1\n").map_err(|e| BackendError::file(path, e))?;
        tracing::info!(path = %path.display(), before = current.trim(), after = "1", "enabled IPv4 forwarding");
        Ok(())
    }

    async fn dhcp_state(&self) -> Result<(bool, String), BackendError> {
        if let Some(dnsmasq) = &self.config.dnsmasq {
            let text = read_file(&dnsmasq.config_file)?;
            let (active, pool) = dnsmasq_ranges(&text);
            let running = read_pid(&dnsmasq.pid_file).is_some_and(pid_alive);
            Ok((running && active, pool))
        } else if let Some(unit) = &self.config.systemd_unit {
            Ok((systemd_active(unit).await?, String::new()))
        } else {
            Err(BackendError::Config("[linux] names no DHCP server".to_string()))
        }
    }
}

#[async_trait]
impl Backend for LinuxBackend {
    fn name(&self) -> &'static str {
        "linux"
    }

    async fn state(&self) -> Result<RouterState, BackendError> {
        let table = self.read_table().await?;
        let (dhcp_enabled, dhcp_pool) = self.dhcp_state().await?;
        Ok(RouterState {
            backend: "linux".to_string(),
            dhcp_enabled,
            dhcp_pool,
            forwards: table.forwards,
            remote_management: table.management.unwrap_or_default(),
        })
    }

    async fn set_dhcp(&self, enabled: bool) -> Result<(), BackendError> {
        if let Some(dnsmasq) = &self.config.dnsmasq {
            let text = read_file(&dnsmasq.config_file)?;
            let mut found = self.load_found();
            if found.dnsmasq_config.is_none() {
                found.dnsmasq_config = Some(text.clone());
                self.save_found(&found)?;
            }
            let rewritten = if enabled { dhcp_on(&text) } else { dhcp_off(&text) };
            if enabled && !dnsmasq_ranges(&rewritten).0 {
                return Err(BackendError::Config(format!(
                    "{} has no dhcp-range line to switch on; add one (the shim only restores ranges it switched off)",
                    dnsmasq.config_file.display()
                )));
            }
            if rewritten != text {
                std::fs::write(&dnsmasq.config_file, &rewritten)
                    .map_err(|e| BackendError::file(&dnsmasq.config_file, e))?;
            }
            restart_dnsmasq(dnsmasq).await
        } else if let Some(unit) = &self.config.systemd_unit {
            let mut found = self.load_found();
            if found.systemd_active.is_none() {
                found.systemd_active = Some(systemd_active(unit).await?);
                self.save_found(&found)?;
            }
            systemctl(if enabled { "start" } else { "stop" }, unit).await
        } else {
            Err(BackendError::Config("[linux] names no DHCP server".to_string()))
        }
    }

    async fn add_forward(&self, forward: &PortForward) -> Result<(), BackendError> {
        let mut desired = self.read_table().await?;
        desired.forwards.retain(|f| f.name != forward.name);
        desired.forwards.push(PortForward { protected: false, ..forward.clone() });
        self.enable_ip_forward().await?;
        self.warn_foreign_forward_drop().await;
        self.write_table(&desired).await
    }

    async fn remove_forward(&self, name: &str) -> Result<(), BackendError> {
        let mut desired = self.read_table().await?;
        if !desired.exists {
            return Ok(());
        }
        desired.forwards.retain(|f| f.name != name);
        self.write_table(&desired).await
    }

    async fn set_remote_management(&self, management: &RemoteManagement) -> Result<(), BackendError> {
        let mut desired = self.read_table().await?;
        desired.management = Some(management.clone());
        self.write_table(&desired).await
    }

    async fn reset(&self, _dhcp_as_found: Option<bool>) -> Result<(), BackendError> {
        let table = self.read_table().await?;
        if table.exists {
            self.nft(&["delete", "table", "ip", &self.config.table], None).await?;
            tracing::info!(table = %self.config.table, "deleted the shim's nftables table");
        }
        let found = self.load_found();
        if let (Some(dnsmasq), Some(original)) = (&self.config.dnsmasq, &found.dnsmasq_config) {
            let current = read_file(&dnsmasq.config_file)?;
            if &current != original {
                std::fs::write(&dnsmasq.config_file, original)
                    .map_err(|e| BackendError::file(&dnsmasq.config_file, e))?;
                restart_dnsmasq(dnsmasq).await?;
            }
        }
        if let (Some(unit), Some(active)) = (&self.config.systemd_unit, found.systemd_active) {
            systemctl(if active { "start" } else { "stop" }, unit).await?;
        }
        if let Some(value) = &found.ip_forward {
            let path = &self.config.ip_forward_sysctl;
            std::fs::write(path, format!("{value}\n")).map_err(|e| BackendError::file(path, e))?;
        }
        match std::fs::remove_file(&self.found_file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::file(&self.found_file, e)),
        }
    }
}

// === nftables text and JSON ===

fn render_table(config: &LinuxConfig, desired: &TableState) -> String {
    let table = &config.table;
    let wan = &config.wan_interface;
    let mut out = format!("table ip {table} {{}}\ndelete table ip {table}\ntable ip {table} {{\n");
    out.push_str("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n");
    for f in &desired.forwards {
        out.push_str(&format!(
            "    iifname \"{wan}\" {} dport {} dnat to {}:{} comment \"{FWD_COMMENT}{}\"\n",
            f.protocol,
            f.external_port,
            f.target.ip(),
            f.target.port(),
            f.name
        ));
    }
    out.push_str("  }\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n");
    if config.masquerade {
        out.push_str(&format!("    oifname \"{wan}\" masquerade comment \"metalfleet:masquerade\"\n"));
    }
    out.push_str("  }\n  chain input {\n    type filter hook input priority filter; policy accept;\n");
    let ports = config.management_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    // Once the shim manages remote management, the management ports on the WAN side are open
    // only to the allowed CIDRs (accept rules) and closed to everyone else (the final drop).
    if let Some(m) = &desired.management {
        if m.enabled {
            for cidr in &m.allowed_from {
                out.push_str(&format!(
                    "    iifname \"{wan}\" ip saddr {cidr} tcp dport {{ {ports} }} accept comment \"{MGMT_COMMENT}{cidr}\"\n"
                ));
            }
        }
        out.push_str(&format!("    iifname \"{wan}\" tcp dport {{ {ports} }} drop comment \"{MGMT_OFF_COMMENT}\"\n"));
    }
    out.push_str("  }\n}\n");
    out
}

fn parse_table(json: &Value) -> Result<TableState, BackendError> {
    let mut state = TableState { exists: true, ..TableState::default() };
    let items = json.get("nftables").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut management: Option<RemoteManagement> = None;
    for item in &items {
        let Some(rule) = item.get("rule") else { continue };
        let comment = rule.get("comment").and_then(Value::as_str).unwrap_or_default();
        if let Some(name) = comment.strip_prefix(FWD_COMMENT) {
            state.forwards.push(parse_forward(name, rule).ok_or_else(|| BackendError::Tool {
                tool: "nft".to_string(),
                message: format!("cannot read forward rule {name} back: {rule}"),
            })?);
        } else if let Some(cidr) = comment.strip_prefix(MGMT_COMMENT) {
            let net: Ipv4Net = cidr.parse().map_err(|_| BackendError::Tool {
                tool: "nft".to_string(),
                message: format!("bad management comment {comment}"),
            })?;
            let m = management.get_or_insert_with(|| RemoteManagement { enabled: true, allowed_from: Vec::new() });
            m.enabled = true;
            m.allowed_from.push(net);
        } else if comment == MGMT_OFF_COMMENT {
            management.get_or_insert_with(RemoteManagement::default);
        }
    }
    state.management = management;
    Ok(state)
}

fn parse_forward(name: &str, rule: &Value) -> Option<PortForward> {
    let mut protocol = None;
    let mut port = None;
    let mut target = None;
    for expr in rule.get("expr")?.as_array()? {
        if let Some(m) = expr.get("match")
            && let Some(payload) = m.get("left").and_then(|l| l.get("payload"))
            && payload.get("field").and_then(Value::as_str) == Some("dport")
        {
            protocol = payload.get("protocol").and_then(Value::as_str).and_then(|p| p.parse::<Protocol>().ok());
            port = m.get("right").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok());
        }
        if let Some(dnat) = expr.get("dnat") {
            let addr: Ipv4Addr = dnat.get("addr")?.as_str()?.parse().ok()?;
            let to_port = u16::try_from(dnat.get("port")?.as_u64()?).ok()?;
            target = Some(SocketAddrV4::new(addr, to_port));
        }
    }
    Some(PortForward {
        name: name.to_string(),
        protocol: protocol?,
        external_port: port?,
        target: target?,
        protected: false,
    })
}

/// `family table chain` of every foreign forward-hook chain with policy drop and no dnat accept rule.
fn foreign_forward_drops(ruleset: &Value, own_table: &str) -> Vec<String> {
    let items = ruleset.get("nftables").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut problems = Vec::new();
    for item in &items {
        let Some(chain) = item.get("chain") else { continue };
        let field = |k: &str| chain.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let (family, table, name) = (field("family"), field("table"), field("name"));
        if field("hook") != "forward" || field("policy") != "drop" || (family == "ip" && table == own_table) {
            continue;
        }
        if !matches!(family.as_str(), "ip" | "inet") {
            continue;
        }
        let accepts_dnat = items.iter().filter_map(|i| i.get("rule")).any(|rule| {
            let same = |k: &str, v: &str| rule.get(k).and_then(Value::as_str) == Some(v);
            let text = rule.to_string();
            same("family", &family)
                && same("table", &table)
                && same("chain", &name)
                && text.contains("\"dnat\"")
                && text.contains("\"accept\"")
        });
        if !accepts_dnat {
            problems.push(format!("{family} {table} {name}"));
        }
    }
    problems
}

// === dnsmasq ===

fn read_file(path: &Path) -> Result<String, BackendError> {
    std::fs::read_to_string(path).map_err(|e| BackendError::file(path, e))
}

/// Whether any `dhcp-range` is active, and the first range's pool (active or switched off).
fn dnsmasq_ranges(text: &str) -> (bool, String) {
    let mut active = false;
    let mut pool = String::new();
    for line in text.lines() {
        let line = line.trim();
        let (is_active, rest) = if let Some(rest) = line.strip_prefix("dhcp-range=") {
            (true, rest)
        } else if let Some(rest) = line.strip_prefix(OFF_MARK).and_then(|l| l.strip_prefix("dhcp-range=")) {
            (false, rest)
        } else {
            continue;
        };
        active |= is_active;
        if pool.is_empty() {
            let ips: Vec<&str> = rest.split(',').filter(|f| f.trim().parse::<Ipv4Addr>().is_ok()).take(2).collect();
            pool = ips.join("-");
        }
    }
    (active, pool)
}

fn dhcp_off(text: &str) -> String {
    map_lines(text, |line| {
        if line.trim_start().starts_with("dhcp-range=") {
            format!("{OFF_MARK}{}", line.trim_start())
        } else {
            line.to_string()
        }
    })
}

fn dhcp_on(text: &str) -> String {
    map_lines(text, |line| line.strip_prefix(OFF_MARK).unwrap_or(line).to_string())
}

fn map_lines(text: &str, f: impl Fn(&str) -> String) -> String {
    let mut out: String = text.lines().map(|l| f(l) + "\n").collect();
    if !text.ends_with('\n') {
        out.pop();
    }
    out
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Alive and not a zombie (a zombie still has a /proc entry).
fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

async fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops the dnsmasq named by the pid file (if running) and starts it again with the configured command.
async fn restart_dnsmasq(config: &DnsmasqConfig) -> Result<(), BackendError> {
    let tool = |message: String| BackendError::Tool { tool: "dnsmasq".to_string(), message };
    if let Some(pid) = read_pid(&config.pid_file).filter(|p| pid_alive(*p)) {
        let status = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .map_err(|e| tool(format!("cannot run kill: {e}")))?;
        if !status.success() || !wait_until(Duration::from_secs(5), || !pid_alive(pid)).await {
            return Err(tool(format!("pid {pid} did not stop within 5s")));
        }
    }
    let _ = std::fs::remove_file(&config.pid_file);
    let mut child = tokio::process::Command::new(&config.command[0])
        .args(&config.command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| tool(format!("cannot start {:?}: {e}; check linux.dnsmasq.command", config.command)))?;
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if read_pid(&config.pid_file).is_some_and(pid_alive) {
            tracing::info!(pid_file = %config.pid_file.display(), "dnsmasq restarted");
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait()
            && !status.success()
        {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = pipe.read_to_string(&mut stderr).await;
            }
            return Err(tool(format!("{:?} exited with {status}: {}", config.command, stderr.trim())));
        }
        if tokio::time::Instant::now() >= end {
            return Err(tool(format!("no live pid in {} 10s after start", config.pid_file.display())));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn systemd_active(unit: &str) -> Result<bool, BackendError> {
    let output = tokio::process::Command::new("systemctl")
        .args(["is-active", unit])
        .output()
        .await
        .map_err(|e| BackendError::Tool { tool: "systemctl".to_string(), message: e.to_string() })?;
    Ok(String::from_utf8_lossy(&output.stdout).trim() == "active")
}

async fn systemctl(verb: &str, unit: &str) -> Result<(), BackendError> {
    let output = tokio::process::Command::new("systemctl")
        .args([verb, unit])
        .output()
        .await
        .map_err(|e| BackendError::Tool { tool: "systemctl".to_string(), message: e.to_string() })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(BackendError::Tool {
            tool: format!("systemctl {verb} {unit}"),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LinuxConfig {
        LinuxConfig {
            lan_interface: "lan0".into(),
            wan_interface: "wan0".into(),
            table: "metalfleet".into(),
            masquerade: true,
            management_ports: vec![22, 443],
            nft: "nft".into(),
            ip_forward_sysctl: "/proc/sys/net/ipv4/ip_forward".into(),
            dnsmasq: None,
            systemd_unit: Some("dnsmasq".into()),
        }
    }

    #[test]
    fn dhcp_ranges_switch_off_and_back() {
        let text = "port=53\ndhcp-range=172.16.0.100,172.16.0.200,12h\ninterface=lan0\n";
        assert_eq!(dnsmasq_ranges(text), (true, "172.16.0.100-172.16.0.200".to_string()));
        let off = dhcp_off(text);
        assert!(off.contains("#metalfleet-dhcp-off# dhcp-range="), "{off}");
        assert!(off.contains("port=53"));
        assert_eq!(dnsmasq_ranges(&off), (false, "172.16.0.100-172.16.0.200".to_string()));
        assert_eq!(dhcp_off(&off), off, "idempotent");
        assert_eq!(dhcp_on(&off), text);
    }

    #[test]
    fn table_text_names_every_rule() {
        let desired = TableState {
            exists: true,
            forwards: vec![PortForward {
                name: "main-ssh".into(),
                protocol: Protocol::Tcp,
                external_port: 2222,
                target: "172.16.0.3:22".parse().unwrap(),
                protected: false,
            }],
            management: Some(RemoteManagement { enabled: true, allowed_from: vec!["10.0.0.0/8".parse().unwrap()] }),
        };
        let text = render_table(&config(), &desired);
        assert!(text.starts_with("table ip metalfleet {}\ndelete table ip metalfleet\n"), "{text}");
        assert!(
            text.contains("iifname \"wan0\" tcp dport 2222 dnat to 172.16.0.3:22 comment \"metalfleet:fwd:main-ssh\"")
        );
        assert!(
            text.contains("ip saddr 10.0.0.0/8 tcp dport { 22, 443 } accept comment \"metalfleet:mgmt:10.0.0.0/8\"")
        );
        assert!(text.contains("oifname \"wan0\" masquerade"));
        assert!(text.contains("iifname \"wan0\" tcp dport { 22, 443 } drop comment \"metalfleet:mgmt-drop\""));
        let unmanaged = render_table(&config(), &TableState { management: None, ..desired });
        assert!(!unmanaged.contains("tcp dport { 22, 443 }"), "{unmanaged}");
    }

    #[test]
    fn reads_back_nft_json() {
        let json: Value = serde_json::from_str(
            r#"{"nftables":[{"metainfo":{}},{"table":{"family":"ip","name":"metalfleet"}},
            {"rule":{"family":"ip","table":"metalfleet","chain":"prerouting","comment":"metalfleet:fwd:ssh","expr":[
              {"match":{"op":"==","left":{"meta":{"key":"iifname"}},"right":"wan0"}},
              {"match":{"op":"==","left":{"payload":{"protocol":"udp","field":"dport"}},"right":53}},
              {"dnat":{"addr":"172.16.0.9","port":5353}}]}},
            {"rule":{"family":"ip","table":"metalfleet","chain":"input","comment":"metalfleet:mgmt-drop","expr":[]}}]}"#,
        )
        .unwrap();
        let state = parse_table(&json).unwrap();
        assert_eq!(state.forwards.len(), 1);
        assert_eq!(state.forwards[0].protocol, Protocol::Udp);
        assert_eq!(state.forwards[0].target, "172.16.0.9:5353".parse().unwrap());
        assert_eq!(state.management, Some(RemoteManagement::default()));
    }

    #[test]
    fn finds_foreign_forward_drop() {
        let json: Value = serde_json::from_str(
            r#"{"nftables":[
            {"chain":{"family":"inet","table":"filter","name":"forward","hook":"forward","policy":"drop"}},
            {"chain":{"family":"inet","table":"fw2","name":"forward","hook":"forward","policy":"drop"}},
            {"rule":{"family":"inet","table":"fw2","chain":"forward","expr":[{"match":{"left":{"ct":{"key":"status"}},"right":"dnat"}},{"accept":null}]}},
            {"chain":{"family":"ip","table":"metalfleet","name":"forward","hook":"forward","policy":"drop"}}]}"#,
        )
        .unwrap();
        assert_eq!(foreign_forward_drops(&json, "metalfleet"), vec!["inet filter forward".to_string()]);
    }
}
