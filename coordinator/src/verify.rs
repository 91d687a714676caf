//! Spec verification: each machine's expected profile (lab plan) against its commissioned baseline (MAAS) and
//! its live inventory (agent), field by field, with a verdict pass | fail | drift | unknown.
//!
//! - [`check`]: the rules and tolerances, pure.
//! - [`VerifyStore`]: expected profiles, baselines and the last verdicts, in their own store tables (the
//!   `metalfleet-store` crate).
//! - [`reports`]: the rows of `fleetctl verify`, built from what the stores hold, pure.
//! - [`task`]: the coordinator's own loop: matching agents to MAAS machines, recording first baselines,
//!   re-verifying when inventories or the MAAS view change (events `spec_failed`, `spec_drift`, `spec_ok`),
//!   and the lost-node verdicts.
//!
//! The baseline of a MAAS machine is the first commissioned spec seen for its system_id; later polls and live
//! data never overwrite it. Only an operator's Accept records a new one, from the live inventory or MAAS's
//! current data, and says which.

pub mod task;

use std::collections::HashMap;

use metalfleet_common::config::bounds::{Problems, limits};
use serde::Deserialize;

pub use ::store::{VerifySources, VerifyStore};
pub use model::verify::{
    Baseline, BaselineInfo, BaselineSource, ExpectedProfile, FieldVerdict, Inputs, MachineReport, Observed, Specs,
    Tolerances, Unit, Verdict, check, is_commissioned, overall, reports, specs_from_inventory, specs_from_maas,
};

use crate::spec::SpecProfile;
use crate::store::StoreError;

/// Event kinds of verification and matching.
pub mod kinds {
    pub const SPEC_FAILED: &str = "spec_failed";
    pub const SPEC_DRIFT: &str = "spec_drift";
    pub const SPEC_OK: &str = "spec_ok";
    pub const BASELINE_ACCEPTED: &str = "spec_baseline_accepted";
    pub const MATCHED: &str = "maas_matched";
    pub const MATCH_CONFLICT: &str = "maas_match_conflict";
    /// A matched machine took its MAAS hostname.
    pub const RENAMED: &str = "renamed_from_maas";
    pub const NODE_VERDICT: &str = "node_verdict_changed";
}

/// `[verify]` in the coordinator's config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// How often the coordinator re-verifies and re-evaluates lost-node verdicts by itself (it also does so at
    /// once when an agent enrolls, an inventory changes or the MAAS view changes).
    #[serde(with = "humantime_serde", default = "default_interval")]
    pub interval: std::time::Duration,
    #[serde(default)]
    pub tolerance: Tolerances,
    #[serde(default)]
    pub reachability: crate::reachability::Config,
}

fn default_interval() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

impl VerifyConfig {
    /// `[verify]`: the re-verify interval, the memory tolerance and `[verify.reachability]`.
    pub fn validate(&self, problems: &mut Problems) {
        problems.duration("interval", self.interval, limits::MIN_POLL..=limits::DAY);
        problems.section("tolerance", |p| self.tolerance.validate(p));
        problems.section("reachability", |p| self.reachability.validate(p));
    }
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            interval: default_interval(),
            tolerance: Tolerances::default(),
            reachability: crate::reachability::Config::default(),
        }
    }
}

/// Loads everything verification reads, once per pass.
///
/// # Errors
/// The store failed.
pub async fn load_inputs(store: &(impl VerifySources + ?Sized)) -> Result<Inputs, StoreError> {
    let agents = store.machines().await?;
    let mut inventories = HashMap::new();
    for agent in &agents {
        if let Some(inventory) = store.inventory(&agent.id).await? {
            inventories.insert(agent.id.clone(), inventory);
        }
    }
    Ok(Inputs {
        agents,
        inventories,
        maas: store.maas_machines().await?,
        baselines: store.baselines().await?,
        profiles: store.expected_profiles().await?,
    })
}

/// Records the lab plan's profiles (called by the plan when it applies machines with profiles).
///
/// # Errors
/// The store failed.
pub async fn set_expected_profiles(
    store: &(impl VerifyStore + ?Sized),
    profiles: Vec<(String, String, SpecProfile)>,
) -> Result<(), StoreError> {
    let profiles = profiles
        .into_iter()
        .map(|(hostname, profile_name, profile)| ExpectedProfile { hostname, profile_name, profile })
        .collect();
    store.set_expected_profiles(profiles).await
}

/// Like [`set_expected_profiles`], for a caller that has the state directory rather than the store (the lab
/// plan's service): opens the store in `state_dir` (SQLite in WAL mode, so beside the running server is fine).
///
/// # Errors
/// The store cannot be opened, or the write failed.
pub async fn set_expected_profiles_at(
    state_dir: &std::path::Path,
    profiles: Vec<(String, String, SpecProfile)>,
) -> Result<(), StoreError> {
    let store = crate::store::SqliteStore::open(state_dir, 1)?;
    set_expected_profiles(&store, profiles).await
}

/// Verifies one machine (hostname, agent machine id or system_id) as it stands in the store, for a caller
/// that needs a verdict now (a redeploy's verify step). `None` when no machine has that name.
///
/// # Errors
/// The store failed.
pub async fn verify_machine(
    store: &(impl VerifySources + ?Sized),
    name: &str,
    tolerances: &Tolerances,
) -> Result<Option<MachineReport>, StoreError> {
    let inputs = load_inputs(store).await?;
    Ok(reports(&inputs, tolerances).into_iter().find(|r| r.is_named(name)))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::domain::maas::MaasMachine;
    use crate::domain::{BlockDevice, Health};
    use crate::domain::{Inventory, Machine};

    fn maas_machine(sid: &str, hostname: &str, cpus: u32) -> MaasMachine {
        MaasMachine { cpu_count: cpus, ..MaasMachine::deployed_for_tests(sid, hostname) }
    }

    fn agent(id: &str, hostname: &str, sid: Option<&str>) -> Machine {
        Machine {
            id: id.into(),
            agent_id: id.into(),
            hostname: hostname.into(),
            system_id: sid.map(str::to_string),
            mac_addresses: vec![],
            agent_version: "t".into(),
            enrolled_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            last_seen: None,
            heartbeat_interval_ms: 1000,
            health: Health::Healthy,
            health_reasons: vec![],
        }
    }

    fn inventory(cpus: u32, disks: usize) -> Inventory {
        Inventory {
            logical_cpus: cpus,
            memory_total_bytes: 16 * 1024 * 1024 * 1024 - 300 * 1024 * 1024,
            disks: (0..disks)
                .map(|i| BlockDevice { name: format!("sd{i}"), size_bytes: 500_000_000_000, ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn live_nics_are_the_physical_ones_or_every_veth_when_none_is_physical() {
        let nic = |name: &str, is_virtual: bool| crate::domain::NetworkInterface {
            name: name.into(),
            mac: format!("52:54:00:00:00:{}", name.len()),
            is_virtual,
            ..Default::default()
        };
        let names = |inventory: &Inventory| -> Vec<String> {
            specs_from_inventory(inventory).nics.into_iter().map(|n| n.name).collect()
        };
        let mut host = inventory(4, 1);
        host.interfaces = vec![nic("eno1", false), nic("docker0", true)];
        assert_eq!(names(&host), ["eno1"]);
        let mut namespaced = inventory(4, 1);
        namespaced.interfaces = vec![nic("eth0", true)];
        assert_eq!(names(&namespaced), ["eth0"]);
    }

    fn check_rows(inputs: &Inputs, expected: &[(&str, Verdict)]) -> Vec<MachineReport> {
        let rows = reports(inputs, &Tolerances::default());
        let got: Vec<(&str, Verdict)> = rows.iter().map(|r| (r.hostname.as_str(), r.verdict)).collect();
        assert_eq!(got, expected, "{rows:#?}");
        rows
    }

    #[test]
    fn rows_cover_maas_machines_agents_and_profiles() {
        let profile = SpecProfile { min_logical_cpus: Some(8), ..Default::default() };
        let inputs = Inputs {
            agents: vec![
                agent("m1", "server1", Some("aaa")),
                agent("m2", "server2", Some("bbb")),
                agent("m9", "stray", None),
            ],
            inventories: [("m1".to_string(), inventory(4, 1)), ("m2".to_string(), inventory(4, 0))].into(),
            maas: vec![
                maas_machine("aaa", "server1", 4),
                maas_machine("bbb", "server2", 4),
                maas_machine("ccc", "server3", 4),
            ],
            baselines: vec![],
            profiles: vec![
                ExpectedProfile { hostname: "server3".into(), profile_name: "big".into(), profile: profile.clone() },
                ExpectedProfile { hostname: "server5".into(), profile_name: "big".into(), profile },
            ],
        };
        let rows = check_rows(
            &inputs,
            &[
                ("server1", Verdict::Pass),
                ("server2", Verdict::Drift),
                ("server3", Verdict::Fail),
                ("server5", Verdict::Unknown),
                ("stray", Verdict::Unknown),
            ],
        );
        assert_eq!(rows[1].reason, "disk_count: live has 0 disks, commissioned 1");
        assert_eq!(rows[2].profile.as_deref(), Some("big"));
        assert!(rows[4].reason.contains("not matched"), "{}", rows[4].reason);
    }

    #[test]
    fn the_baseline_wins_over_current_maas_data() {
        let baseline = Baseline {
            system_id: "aaa".into(),
            hostname: "server1".into(),
            specs: specs_from_inventory(&inventory(4, 0)),
            source: BaselineSource::Live,
            recorded_at: Utc.timestamp_opt(1_700_000_100, 0).unwrap(),
            recorded_by: "admin".into(),
        };
        let inputs = Inputs {
            agents: vec![agent("m1", "server1", Some("aaa"))],
            inventories: [("m1".to_string(), inventory(4, 0))].into(),
            maas: vec![maas_machine("aaa", "server1", 4)],
            baselines: vec![baseline],
            profiles: vec![],
        };
        let rows = check_rows(&inputs, &[("server1", Verdict::Pass)]);
        assert_eq!(rows[0].baseline.as_ref().map(|b| b.source), Some(BaselineSource::Live));
    }

    #[test]
    fn verify_config_parses_units_and_defaults() {
        let config: VerifyConfig = toml::from_str(
            "interval = \"1s\"\n[tolerance]\nmemory_bytes = \"1GiB\"\n[reachability]\nport = 2222\n[reachability.targets]\nserver1 = \"127.0.0.1:9\"\n",
        )
        .unwrap();
        assert_eq!(config.interval, std::time::Duration::from_secs(1));
        assert_eq!(config.tolerance.memory_bytes, 1 << 30);
        assert_eq!(config.tolerance.memory_percent, 5.0);
        assert_eq!(config.reachability.port, 2222);
        assert!(toml::from_str::<VerifyConfig>("intervl = \"1s\"\n").is_err());
    }
}
