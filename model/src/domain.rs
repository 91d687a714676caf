//! The coordinator's own types: machines, samples, inventories, events, health.
//!
//! The wire types of `proto::v1` are converted into these in `grpc/convert.rs` and nowhere
//! else. Samples and inventories derive serde because the store keeps them as JSON; that JSON
//! is the store's format, not an API.

pub mod maas;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The health of one machine, as the evaluator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Degraded,
    Unreachable,
    /// Enrolled but never reported a sample.
    Unknown,
    /// Its agent certificate was revoked (`fleetctl agents revoke`); it stays so until it enrolls again.
    Revoked,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unreachable => "unreachable",
            Health::Unknown => "unknown",
            Health::Revoked => "revoked",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A health string that is not one of healthy, degraded, unreachable, unknown.
#[derive(Debug, thiserror::Error)]
#[error("unknown health {0:?}; expected healthy, degraded, unreachable, unknown or revoked")]
pub struct UnknownHealth(pub String);

impl FromStr for Health {
    type Err = UnknownHealth;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "healthy" => Ok(Health::Healthy),
            "degraded" => Ok(Health::Degraded),
            "unreachable" => Ok(Health::Unreachable),
            "unknown" => Ok(Health::Unknown),
            "revoked" => Ok(Health::Revoked),
            other => Err(UnknownHealth(other.to_string())),
        }
    }
}

/// What an agent says about itself when it enrolls.
#[derive(Debug, Clone, PartialEq)]
pub struct Enrollment {
    pub agent_id: String,
    pub hostname: String,
    pub mac_addresses: Vec<String>,
    pub agent_version: String,
}

/// One enrolled machine, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub id: String,
    pub agent_id: String,
    pub hostname: String,
    pub system_id: Option<String>,
    pub mac_addresses: Vec<String>,
    pub agent_version: String,
    pub enrolled_at: DateTime<Utc>,
    /// When the coordinator last received a heartbeat, on its own clock.
    pub last_seen: Option<DateTime<Utc>>,
    /// The interval the agent currently samples at.
    pub heartbeat_interval_ms: u32,
    pub health: Health,
    pub health_reasons: Vec<String>,
}

/// A machine with what the operator API adds to it.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineView {
    pub machine: Machine,
    pub latest_sample: Option<Sample>,
    pub inventory: Option<Inventory>,
    /// Stored samples, oldest first.
    pub history: Vec<Sample>,
}

/// One health sample taken by an agent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Sample {
    /// The agent's sequence number (acknowledgements name it; the store skips one it already holds);
    /// 0 from agents that predate it.
    #[serde(default)]
    pub seq: u64,
    pub taken_at: Option<DateTime<Utc>>,
    pub cpu_percent: f64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub memory_available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub filesystems: Vec<FilesystemUsage>,
    pub temperatures: Vec<Temperature>,
    pub networks: Vec<NetworkRate>,
    pub uptime_seconds: u64,
    pub logical_cpus: u32,
}

impl Sample {
    /// The fullest filesystem's used share in percent, if any filesystem has a size.
    pub fn worst_disk_percent(&self) -> Option<f64> {
        self.filesystems.iter().filter_map(FilesystemUsage::used_percent).reduce(f64::max)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FilesystemUsage {
    pub mount_point: String,
    pub device: String,
    pub fs_type: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
}

impl FilesystemUsage {
    pub fn used_percent(&self) -> Option<f64> {
        (self.total_bytes > 0).then(|| {
            let used = self.total_bytes.saturating_sub(self.available_bytes);
            used as f64 * 100.0 / self.total_bytes as f64
        })
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Temperature {
    pub label: String,
    pub celsius: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NetworkRate {
    pub interface: String,
    pub rx_bytes_per_second: f64,
    pub tx_bytes_per_second: f64,
}

/// A host's hardware and OS as its agent reported it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Inventory {
    pub cpu_model: String,
    pub physical_cores: u32,
    pub logical_cpus: u32,
    pub memory_total_bytes: u64,
    pub disks: Vec<BlockDevice>,
    pub interfaces: Vec<NetworkInterface>,
    pub dmi: Dmi,
    pub os: OsInfo,
    pub collected_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BlockDevice {
    pub name: String,
    pub size_bytes: u64,
    pub model: String,
    pub serial: String,
    pub rotational: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NetworkInterface {
    pub name: String,
    pub mac: String,
    pub speed_mbps: u32,
    /// `up`, `down` or `unknown`.
    pub link_state: String,
    pub addresses: Vec<String>,
    #[serde(rename = "virtual")]
    pub is_virtual: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Dmi {
    pub vendor: String,
    pub product: String,
    pub serial: String,
    pub bios_version: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OsInfo {
    pub name: String,
    pub version: String,
    pub kernel: String,
    pub boot_time: Option<DateTime<Utc>>,
}

/// An event before the store gives it an id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub at: DateTime<Utc>,
    pub machine_id: String,
    pub hostname: String,
    pub kind: String,
    pub message: String,
    pub from_health: Option<Health>,
    pub to_health: Option<Health>,
}

/// A stored event; ids grow with time.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: u64,
    pub at: DateTime<Utc>,
    pub machine_id: String,
    pub hostname: String,
    pub kind: String,
    pub message: String,
    pub from_health: Option<Health>,
    pub to_health: Option<Health>,
}

impl Event {
    pub fn from_new(id: u64, new: NewEvent) -> Self {
        let NewEvent { at, machine_id, hostname, kind, message, from_health, to_health } = new;
        Event { id, at, machine_id, hostname, kind, message, from_health, to_health }
    }
}

/// Event kinds the core emits.
pub mod kinds {
    pub const ENROLLED: &str = "enrolled";
    pub const HEALTH_CHANGED: &str = "health_changed";
    pub const INVENTORY_CHANGED: &str = "inventory_changed";
    /// A MAAS machine changed status, e.g. "server2: Ready -> Deployed".
    pub const MAAS_STATUS_CHANGED: &str = "maas_status_changed";
    pub const MAAS_MACHINE_ADDED: &str = "maas_machine_added";
    pub const MAAS_MACHINE_REMOVED: &str = "maas_machine_removed";
    /// Polls started failing (once per outage), with the error.
    pub const MAAS_UNREACHABLE: &str = "maas_unreachable";
    /// A poll succeeded after failures.
    pub const MAAS_REACHABLE: &str = "maas_reachable";
    /// An agent sent samples with values out of range (at the first refusal, then at most every 10 minutes).
    pub const SAMPLES_REFUSED: &str = "samples_refused";
    /// An agent's clock runs ahead of the coordinator's beyond the tolerance.
    pub const CLOCK_SKEW: &str = "clock_skew";
    /// The store cannot write: the coordinator is degraded and acknowledges no samples.
    pub const STORE_DEGRADED: &str = "store_degraded";
    /// The store writes again.
    pub const STORE_RECOVERED: &str = "store_recovered";
}

/// The coordinator's own condition, as operators see it (`fleetctl status`, the gRPC health service).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoordinatorStatus {
    /// Since when the store cannot write, with why; `None` when it writes.
    pub degraded: Option<(DateTime<Utc>, String)>,
}

/// The short hostname, lower case (`server1.maas` and `SERVER1` are `server1`).
pub fn short_name(hostname: &str) -> String {
    hostname.split('.').next().unwrap_or_default().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_strings_round_trip() {
        for health in [Health::Healthy, Health::Degraded, Health::Unreachable, Health::Unknown] {
            assert_eq!(health.as_str().parse::<Health>().unwrap(), health);
        }
        assert!("sick".parse::<Health>().is_err());
    }

    #[test]
    fn worst_disk_ignores_empty_filesystems() {
        let fs =
            |total, available| FilesystemUsage { total_bytes: total, available_bytes: available, ..Default::default() };
        let sample = Sample { filesystems: vec![fs(0, 0), fs(100, 50), fs(200, 20)], ..Default::default() };
        assert_eq!(sample.worst_disk_percent(), Some(90.0));
        assert_eq!(Sample::default().worst_disk_percent(), None);
    }
}
