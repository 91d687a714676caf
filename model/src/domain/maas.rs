//! The coordinator's view of MAAS: each machine as the last successful poll saw it, and the poll's own state.
//!
//! The poller (`crate::poller`) fills these from `maas::Machine`; the store keeps them, the operator API shows
//! them. Disks and interfaces derive serde because the store keeps them as JSON (the store's format, not an API).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One MAAS machine, as stored. Everything but `updated_at` comes from MAAS.
#[derive(Debug, Clone, PartialEq)]
pub struct MaasMachine {
    pub system_id: String,
    pub hostname: String,
    /// MAAS's status integer (`NodeStatus::as_int`).
    pub status: i64,
    /// MAAS's label for it, e.g. `Ready`, `Failed deployment`.
    pub status_name: String,
    /// `on`, `off`, `unknown`, `error`, or what MAAS said.
    pub power_state: String,
    pub owner: Option<String>,
    pub ip_addresses: Vec<String>,
    pub tags: Vec<String>,
    pub zone: String,
    pub pool: String,
    pub cpu_count: u32,
    pub cpu_speed_mhz: u64,
    pub memory_mib: u64,
    pub storage_bytes: u64,
    pub disks: Vec<MaasDisk>,
    pub interfaces: Vec<MaasInterface>,
    /// When the stored copy last changed (a status, power or spec change, or the first sighting).
    pub updated_at: DateTime<Utc>,
}

#[cfg(any(test, feature = "test-support"))]
impl MaasMachine {
    /// A deployed, powered machine (4 CPUs, 16 GiB, one 500 GB disk, no NICs) that tests adjust with `..`.
    pub fn deployed_for_tests(system_id: &str, hostname: &str) -> Self {
        use chrono::TimeZone;
        MaasMachine {
            system_id: system_id.into(),
            hostname: hostname.into(),
            status: 6,
            status_name: "Deployed".into(),
            power_state: "on".into(),
            owner: None,
            ip_addresses: vec![],
            tags: vec![],
            zone: "default".into(),
            pool: "default".into(),
            cpu_count: 4,
            cpu_speed_mhz: 2000,
            memory_mib: 16 * 1024,
            storage_bytes: 500_000_000_000,
            disks: vec![MaasDisk { name: "sda".into(), size_bytes: 500_000_000_000, ..Default::default() }],
            interfaces: vec![],
            updated_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
        }
    }
}

impl MaasMachine {
    /// True when MAAS reports something different; `updated_at` is ours and does not count.
    pub fn same_as(&self, other: &MaasMachine) -> bool {
        MaasMachine { updated_at: other.updated_at, ..self.clone() } == *other
    }

    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib.saturating_mul(1024 * 1024)
    }
}

/// A physical block device MAAS found at commissioning.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MaasDisk {
    pub name: String,
    pub size_bytes: u64,
    pub model: String,
    pub serial: String,
}

/// A network interface MAAS knows.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MaasInterface {
    pub name: String,
    /// Lower case.
    pub mac_address: String,
    pub link_speed_mbps: u64,
}

/// The stored record of the polls: when one last ran, when one last succeeded, and why the last one failed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MaasSync {
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// The error of the last attempt; `None` once a poll succeeds again.
    pub last_error: Option<String>,
}

/// What an operator sees about the freshness of the MAAS view.
#[derive(Debug, Clone, PartialEq)]
pub struct MaasSyncStatus {
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// `now - last_success_at`; `None` before the first success.
    pub age_seconds: Option<f64>,
    /// No success within the last two poll intervals, or the last attempt failed, or never synced.
    pub stale: bool,
    pub last_error: Option<String>,
}

impl MaasSync {
    /// The operator's view of this record at `now`, for a poller running every `poll_interval`.
    pub fn status(&self, now: DateTime<Utc>, poll_interval: Duration) -> MaasSyncStatus {
        let age = self.last_success_at.map(|at| (now - at).to_std().unwrap_or_default());
        let too_old = age.is_none_or(|age| age > poll_interval.saturating_mul(2));
        MaasSyncStatus {
            last_attempt_at: self.last_attempt_at,
            last_success_at: self.last_success_at,
            age_seconds: age.map(|a| a.as_secs_f64()),
            stale: too_old || self.last_error.is_some(),
            last_error: self.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
    }

    fn check(sync: MaasSync, now: i64, expected_stale: bool, expected_age: Option<f64>) {
        let status = sync.status(at(now), Duration::from_secs(30));
        assert_eq!(status.stale, expected_stale, "{sync:?} at {now}");
        assert_eq!(status.age_seconds, expected_age, "{sync:?} at {now}");
    }

    #[test]
    fn staleness_follows_the_last_success_and_error() {
        let ok = MaasSync { last_attempt_at: Some(at(0)), last_success_at: Some(at(0)), last_error: None };
        check(ok.clone(), 10, false, Some(10.0));
        check(ok.clone(), 60, false, Some(60.0));
        check(ok.clone(), 61, true, Some(61.0));
        let failed = MaasSync { last_attempt_at: Some(at(5)), last_error: Some("down".into()), ..ok };
        check(failed, 6, true, Some(6.0));
        check(MaasSync::default(), 0, true, None);
    }

    #[test]
    fn updated_at_does_not_make_a_difference() {
        let a = MaasMachine {
            system_id: "abc".into(),
            hostname: "server1".into(),
            status: 4,
            status_name: "Ready".into(),
            power_state: "off".into(),
            owner: None,
            ip_addresses: vec![],
            tags: vec![],
            zone: "default".into(),
            pool: "default".into(),
            cpu_count: 4,
            cpu_speed_mhz: 3000,
            memory_mib: 1024,
            storage_bytes: 1,
            disks: vec![],
            interfaces: vec![],
            updated_at: at(0),
        };
        let b = MaasMachine { updated_at: at(100), ..a.clone() };
        assert!(a.same_as(&b));
        let c = MaasMachine { status: 6, ..a.clone() };
        assert!(!a.same_as(&c));
        assert_eq!(a.memory_bytes(), 1024 * 1024 * 1024);
    }
}
