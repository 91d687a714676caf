//! Lost-node verdicts: one answer per machine from its agent's heartbeat, MAAS's status and power state, and
//! whether MAIN can reach the host (a TCP connect to a configured port, SSH's 22 by default).
//!
//! [`lost_node`] is the pure rule; [`probe`] is the TCP connect. No ICMP: raw sockets need privileges (and
//! `unsafe` to open without them), and a TCP connect to sshd says more about a server anyway. Probes go only to
//! configured `targets` unless `probe_maas_ips` is on (see [`Config`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use metalfleet_common::config::bounds::{Problems, limits};
use serde::Deserialize;

use crate::domain::Health;

/// `[verify.reachability]`: where and how long to knock.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The TCP port tried on the machine's MAAS IP.
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// Per-hostname address to try instead of MAAS IP and `port` (a lab behind NAT, or a test on loopback).
    #[serde(default)]
    pub targets: HashMap<String, SocketAddr>,
    /// Knock on the MAAS IPs of machines without a `targets` entry. Off by default, so a coordinator started
    /// against maas-sim (whose machines get made-up lab addresses) never sends traffic off this host; turn it on
    /// in a real lab, where MAIN routes to the machines.
    #[serde(default)]
    pub probe_maas_ips: bool,
}

/// A TCP connect that takes longer than a minute is a host that is down.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

fn default_port() -> u16 {
    22
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

impl Default for Config {
    fn default() -> Self {
        Config { port: default_port(), timeout: default_timeout(), targets: HashMap::new(), probe_maas_ips: false }
    }
}

impl Config {
    /// `[verify.reachability]`: a real port, a timeout between 10 ms and a minute, targets with real ports.
    pub fn validate(&self, problems: &mut Problems) {
        problems.number("port", self.port, 1..=u16::MAX);
        problems.duration("timeout", self.timeout, limits::MIN_TIMEOUT..=MAX_TIMEOUT);
        if self.targets.len() > limits::MAX_LIST {
            problems.push(
                "targets",
                format!("has {} entries; at most {} are allowed", self.targets.len(), limits::MAX_LIST),
            );
        }
        let mut hostnames: Vec<&String> = self.targets.keys().collect();
        hostnames.sort();
        for hostname in hostnames {
            let addr = self.targets[hostname];
            if addr.port() == 0 || addr.ip().is_unspecified() {
                problems.section("targets", |p| {
                    p.push_named(hostname, format!("{addr} cannot be connected to; give the host's address and port"))
                });
            }
        }
    }

    /// Where to knock for `hostname` with MAAS IPs `ips`: the override, else (with `probe_maas_ips`) the first
    /// IPv4 (then any) address; otherwise why there is nothing to try.
    pub fn target(&self, hostname: &str, ips: &[String]) -> Result<SocketAddr, String> {
        if let Some(addr) = self.targets.get(hostname) {
            return Ok(*addr);
        }
        if !self.probe_maas_ips {
            return Err(
                "reachability probing is off; set [verify.reachability] probe_maas_ips = true or a target".to_string()
            );
        }
        let parsed: Vec<IpAddr> = ips.iter().filter_map(|ip| ip.split('/').next()?.parse().ok()).collect();
        let ip = parsed.iter().find(|ip| ip.is_ipv4()).or(parsed.first()).ok_or("MAAS reports no IP address")?;
        Ok(SocketAddr::new(*ip, self.port))
    }
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    Up,
    /// Refused, timed out or unroutable, with the detail.
    Down(String),
    /// Nothing to try (no IP), with why.
    Unknown(String),
    /// Not needed: the agent answers.
    NotChecked,
}

impl Reach {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reach::Up => "up",
            Reach::Down(_) => "down",
            Reach::Unknown(_) => "unknown",
            Reach::NotChecked => "not checked",
        }
    }
}

/// A TCP connect to `target` within `timeout`. A refusal means the host answered but nothing listens: for a
/// server that runs sshd that is as good as down, so it counts as down with the detail.
pub async fn probe(target: Result<SocketAddr, String>, timeout: Duration) -> Reach {
    let target = match target {
        Ok(target) => target,
        Err(why) => return Reach::Unknown(why),
    };
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target)).await {
        Ok(Ok(_stream)) => Reach::Up,
        Ok(Err(error)) => Reach::Down(format!("tcp {target}: {error}")),
        Err(_) => Reach::Down(format!("tcp {target}: no answer within {timeout:?}")),
    }
}

/// What MAAS says about the machine, when it is matched.
#[derive(Debug, Clone, PartialEq)]
pub struct MaasState {
    pub status_name: String,
    pub power_state: String,
}

/// The verdict and a detail line.
#[derive(Debug, Clone, PartialEq)]
pub struct LostNode {
    pub verdict: String,
    pub reason: String,
}

/// Whether the rule needs a probe for this machine: only when the agent is not answering and MAAS (if it knows
/// the machine) has it deployed and not powered off; otherwise the verdict does not depend on the probe.
pub fn needs_probe(health: Health, maas: Option<&MaasState>) -> bool {
    let deployed_and_on = maas.is_none_or(|m| m.status_name == "Deployed" && m.power_state != "off");
    deployed_and_on && matches!(health, Health::Unreachable | Health::Unknown)
}

/// The one lost-node answer. Powered off in MAAS wins (it explains everything else); an agent that answers
/// comes next; then a machine MAAS does not have deployed; then the probe tells "agent down, host up" from
/// "host down".
pub fn lost_node(health: Health, maas: Option<&MaasState>, reach: &Reach) -> LostNode {
    let verdict = |verdict: &str, reason: String| LostNode { verdict: verdict.to_string(), reason };
    if let Some(m) = maas
        && m.power_state == "off"
    {
        return verdict("powered off in MAAS", format!("MAAS status {}, power off", m.status_name));
    }
    let deployed = maas.is_none_or(|m| m.status_name == "Deployed");
    match health {
        Health::Healthy if deployed && maas.is_some() => return verdict("deployed, agent healthy", String::new()),
        Health::Healthy if deployed => return verdict("agent healthy", "not matched to MAAS".to_string()),
        Health::Degraded => return verdict("agent degraded", "the agent reports a failing check".to_string()),
        Health::Revoked => return verdict("agent revoked", "its certificate was revoked".to_string()),
        _ => {}
    }
    if let Some(m) = maas
        && !deployed
    {
        return verdict(&format!("not deployed ({})", m.status_name), format!("MAAS power {}", m.power_state));
    }
    let agent = if health == Health::Unknown { "agent never reported" } else { "agent down" };
    match reach {
        Reach::Up => verdict(&format!("{agent}, host up"), "the host answers on its port".to_string()),
        Reach::Down(detail) => verdict("host down", detail.clone()),
        Reach::Unknown(why) => verdict(&format!("{agent}, host unknown"), why.clone()),
        Reach::NotChecked => verdict(agent, "reachability not checked".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maas(status: &str, power: &str) -> Option<MaasState> {
        Some(MaasState { status_name: status.into(), power_state: power.into() })
    }

    fn check(health: Health, maas: Option<MaasState>, reach: Reach, expected: &str) {
        assert_eq!(lost_node(health, maas.as_ref(), &reach).verdict, expected, "{health:?} {maas:?} {reach:?}");
    }

    #[test]
    fn the_answers_are_distinct() {
        check(Health::Healthy, maas("Deployed", "on"), Reach::NotChecked, "deployed, agent healthy");
        check(Health::Unreachable, maas("Deployed", "on"), Reach::Up, "agent down, host up");
        check(Health::Unreachable, maas("Deployed", "on"), Reach::Down("refused".into()), "host down");
        check(Health::Unreachable, maas("Deployed", "off"), Reach::Down("refused".into()), "powered off in MAAS");
        check(Health::Healthy, maas("Deployed", "off"), Reach::NotChecked, "powered off in MAAS");
        check(Health::Unreachable, maas("Ready", "on"), Reach::Up, "not deployed (Ready)");
        check(Health::Degraded, maas("Deployed", "on"), Reach::NotChecked, "agent degraded");
        check(Health::Unknown, None, Reach::Unknown("no ip".into()), "agent never reported, host unknown");
        check(Health::Healthy, None, Reach::NotChecked, "agent healthy");
        check(Health::Revoked, maas("Deployed", "on"), Reach::NotChecked, "agent revoked");
    }

    #[test]
    fn probes_only_when_the_agent_is_silent() {
        assert!(needs_probe(Health::Unreachable, maas("Deployed", "on").as_ref()));
        assert!(!needs_probe(Health::Unreachable, maas("Deployed", "off").as_ref()));
        assert!(!needs_probe(Health::Healthy, None));
        assert!(!needs_probe(Health::Unreachable, maas("Ready", "on").as_ref()));
    }

    #[test]
    fn target_prefers_the_override_then_ipv4() {
        let mut config = Config::default();
        let ips = vec!["fd00::5".to_string(), "172.16.11.5".to_string()];
        assert!(config.target("server1", &ips).unwrap_err().contains("probing is off"));
        config.probe_maas_ips = true;
        assert_eq!(config.target("server1", &ips), Ok("172.16.11.5:22".parse().unwrap()));
        assert_eq!(config.target("server1", &[]), Err("MAAS reports no IP address".to_string()));
        config.targets.insert("server1".into(), "127.0.0.1:2222".parse().unwrap());
        assert_eq!(config.target("server1", &ips), Ok("127.0.0.1:2222".parse().unwrap()));
    }

    #[tokio::test]
    async fn probe_tells_a_listener_from_a_closed_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        let closed = {
            let spare = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            spare.local_addr().unwrap()
        };
        let timeout = Duration::from_secs(5);
        assert_eq!(probe(Ok(open), timeout).await, Reach::Up);
        assert!(matches!(probe(Ok(closed), timeout).await, Reach::Down(_)));
        assert!(matches!(probe(Err("off".into()), timeout).await, Reach::Unknown(_)));
    }
}
