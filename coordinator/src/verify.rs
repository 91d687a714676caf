//! Spec verification: each machine's expected profile (lab plan) against its commissioned baseline (MAAS) and
//! its live inventory (agent), field by field, with a verdict pass | fail | drift | unknown.
//!
//! - [`check`]: the rules and tolerances, pure.
//! - [`VerifyStore`]: expected profiles, baselines and the last verdicts, in their own store tables.
//! - [`reports`]: the rows of `fleetctl verify`, built from what the stores hold, pure.
//! - [`task`]: the coordinator's own loop: matching agents to MAAS machines, recording first baselines,
//!   re-verifying when inventories or the MAAS view change (events `spec_failed`, `spec_drift`, `spec_ok`),
//!   and the lost-node verdicts.
//!
//! The baseline of a MAAS machine is the first commissioned spec seen for its system_id; later polls and live
//! data never overwrite it. Only an operator's Accept records a new one, from the live inventory or MAAS's
//! current data, and says which.

pub mod check;
pub mod task;

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use metalfleet_common::config::bounds::{Problems, limits};
use serde::{Deserialize, Deserializer};

pub use check::{FieldVerdict, Observed, Specs, Tolerances, Unit, Verdict, check, overall};

use crate::domain::maas::MaasMachine;
use crate::domain::{Inventory, Machine};
use crate::spec::SpecProfile;
use crate::store::{MaasStore, Store, StoreError};

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

/// A size in the config: bytes, or a number with a unit (`"512MiB"`).
pub(crate) fn bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Bytes(bytes) => Ok(bytes),
        Raw::Text(text) => crate::spec::parse_size(&text).map_err(serde::de::Error::custom),
    }
}

/// The lab plan's profile for one machine, by its MAAS hostname.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedProfile {
    pub hostname: String,
    pub profile_name: String,
    pub profile: SpecProfile,
}

/// Where a baseline came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineSource {
    /// MAAS's commissioning data.
    Commissioned,
    /// The agent's inventory, accepted by an operator.
    Live,
}

impl BaselineSource {
    pub fn as_str(self) -> &'static str {
        match self {
            BaselineSource::Commissioned => "commissioned",
            BaselineSource::Live => "live",
        }
    }

    pub fn parse(text: &str) -> Option<BaselineSource> {
        match text {
            "commissioned" => Some(BaselineSource::Commissioned),
            "live" => Some(BaselineSource::Live),
            _ => None,
        }
    }
}

/// The reference a machine's live inventory is compared with.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub system_id: String,
    pub hostname: String,
    pub specs: Specs,
    pub source: BaselineSource,
    pub recorded_at: DateTime<Utc>,
    /// `poller` for the first commissioned spec, else the operator who accepted it.
    pub recorded_by: String,
}

/// Verification's own tables (a migration of its own in the SQLite store).
#[async_trait]
pub trait VerifyStore: Send + Sync {
    /// Sets (or replaces) the profile of each named machine; machines not named keep theirs.
    async fn set_expected_profiles(&self, profiles: Vec<ExpectedProfile>) -> Result<(), StoreError>;
    async fn expected_profiles(&self) -> Result<Vec<ExpectedProfile>, StoreError>;
    /// Records `baseline` unless its system_id has one; returns whether it did.
    async fn record_first_baseline(&self, baseline: Baseline) -> Result<bool, StoreError>;
    /// Records `baseline` whether or not one exists (an operator's Accept).
    async fn replace_baseline(&self, baseline: Baseline) -> Result<(), StoreError>;
    async fn baselines(&self) -> Result<Vec<Baseline>, StoreError>;
    /// Sets `machines.system_id` (the agent-to-MAAS match); `None` clears it.
    async fn set_system_id(&self, machine_id: &str, system_id: Option<String>) -> Result<(), StoreError>;
    /// Renames a matched machine to its MAAS hostname (MAAS is authoritative once matched); false when
    /// another machine holds that name (hostnames stay unique), and nothing changes.
    async fn rename_machine(&self, machine_id: &str, hostname: &str) -> Result<bool, StoreError>;
    /// The last overall verdict per row key (see [`MachineReport::key`]).
    async fn last_verdicts(&self) -> Result<HashMap<String, Verdict>, StoreError>;
    async fn set_last_verdict(&self, key: &str, verdict: Verdict, at: DateTime<Utc>) -> Result<(), StoreError>;
}

/// Every store verification reads from. The SQLite store is one.
pub trait VerifySources: Store + MaasStore + VerifyStore {}
impl<T: Store + MaasStore + VerifyStore> VerifySources for T {}

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
    let inputs = Inputs::load(store).await?;
    Ok(reports(&inputs, tolerances).into_iter().find(|r| r.is_named(name)))
}

/// The verification of one machine: a row of `fleetctl verify`.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineReport {
    pub hostname: String,
    pub system_id: Option<String>,
    /// The matched agent's machine id.
    pub machine_id: Option<String>,
    pub profile: Option<String>,
    pub baseline: Option<BaselineInfo>,
    pub verdict: Verdict,
    /// Why the whole machine is unknown, or a summary of what failed.
    pub reason: String,
    pub fields: Vec<FieldVerdict>,
}

/// Where the commissioned column came from.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineInfo {
    pub source: BaselineSource,
    pub recorded_at: DateTime<Utc>,
    pub recorded_by: String,
}

impl MachineReport {
    /// A stable key for remembering the last verdict: the system_id, else the agent's machine id, else the name.
    pub fn key(&self) -> String {
        self.system_id.clone().or_else(|| self.machine_id.clone()).unwrap_or_else(|| format!("host:{}", self.hostname))
    }

    pub fn is_named(&self, name: &str) -> bool {
        self.hostname == name || self.system_id.as_deref() == Some(name) || self.machine_id.as_deref() == Some(name)
    }
}

/// Everything verification reads, loaded once per pass.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub agents: Vec<Machine>,
    pub inventories: HashMap<String, Inventory>,
    pub maas: Vec<MaasMachine>,
    pub baselines: Vec<Baseline>,
    pub profiles: Vec<ExpectedProfile>,
}

impl Inputs {
    /// # Errors
    /// The store failed.
    pub async fn load(store: &(impl VerifySources + ?Sized)) -> Result<Inputs, StoreError> {
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
}

/// Whether MAAS has commissioned the machine (a New machine reports no CPUs and no memory).
pub fn is_commissioned(m: &MaasMachine) -> bool {
    m.cpu_count > 0 || m.memory_mib > 0
}

/// MAAS's commissioning data as [`Specs`]. MAAS reports memory in MiB, as installed, and no CPU model.
pub fn specs_from_maas(m: &MaasMachine) -> Specs {
    Specs {
        logical_cpus: m.cpu_count,
        memory_bytes: m.memory_bytes(),
        cpu_model: String::new(),
        disks: m
            .disks
            .iter()
            .map(|d| check::Disk {
                name: d.name.clone(),
                size_bytes: d.size_bytes,
                model: d.model.clone(),
                serial: d.serial.clone(),
                rotational: None,
            })
            .collect(),
        nics: m
            .interfaces
            .iter()
            .map(|i| check::Nic { name: i.name.clone(), mac: i.mac_address.clone(), speed_mbps: i.link_speed_mbps })
            .collect(),
    }
}

/// The agent's inventory as [`Specs`]: physical interfaces only, or every interface when none is physical (an
/// agent in a container or network namespace only has veths; the agent enrolls with their MACs for the same
/// reason), so such a machine is not reported as having lost all its NICs.
pub fn specs_from_inventory(inventory: &Inventory) -> Specs {
    let any_physical = inventory.interfaces.iter().any(|i| !i.is_virtual);
    Specs {
        logical_cpus: inventory.logical_cpus,
        memory_bytes: inventory.memory_total_bytes,
        cpu_model: inventory.cpu_model.clone(),
        disks: inventory
            .disks
            .iter()
            .map(|d| check::Disk {
                name: d.name.clone(),
                size_bytes: d.size_bytes,
                model: d.model.clone(),
                serial: d.serial.clone(),
                rotational: Some(d.rotational),
            })
            .collect(),
        nics: inventory
            .interfaces
            .iter()
            .filter(|i| !i.is_virtual || !any_physical)
            .map(|i| check::Nic { name: i.name.clone(), mac: i.mac.clone(), speed_mbps: u64::from(i.speed_mbps) })
            .collect(),
    }
}

/// One row per MAAS machine (with its matched agent), per unmatched agent, and per profiled hostname that is
/// neither; ordered by hostname.
pub fn reports(inputs: &Inputs, tolerances: &Tolerances) -> Vec<MachineReport> {
    let profile_for = |hostname: &str| {
        let short = crate::matching::short_name(hostname);
        inputs.profiles.iter().find(|p| crate::matching::short_name(&p.hostname) == short)
    };
    let mut rows = Vec::new();
    for m in &inputs.maas {
        let agent = inputs.agents.iter().find(|a| a.system_id.as_deref() == Some(m.system_id.as_str()));
        let baseline = inputs.baselines.iter().find(|b| b.system_id == m.system_id);
        let commissioned = match baseline {
            Some(b) => Some(b.specs.clone()),
            None if is_commissioned(m) => Some(specs_from_maas(m)),
            None => None,
        };
        let live = agent.and_then(|a| inputs.inventories.get(&a.id)).map(specs_from_inventory);
        let why_unknown = match (&commissioned, agent, &live) {
            (None, _, _) => format!("MAAS has not commissioned it yet (status {})", m.status_name),
            (_, None, _) => "no agent is matched to this machine yet".to_string(),
            (_, Some(_), None) => "the agent has not reported an inventory yet".to_string(),
            _ => String::new(),
        };
        rows.push(row(
            &m.hostname,
            Some(m.system_id.clone()),
            agent.map(|a| a.id.clone()),
            profile_for(&m.hostname),
            baseline.map(|b| BaselineInfo {
                source: b.source,
                recorded_at: b.recorded_at,
                recorded_by: b.recorded_by.clone(),
            }),
            commissioned.as_ref(),
            live.as_ref(),
            why_unknown,
            tolerances,
        ));
    }
    for agent in
        inputs.agents.iter().filter(|a| !inputs.maas.iter().any(|m| a.system_id.as_deref() == Some(&m.system_id)))
    {
        let live = inputs.inventories.get(&agent.id).map(specs_from_inventory);
        rows.push(row(
            &agent.hostname,
            None,
            Some(agent.id.clone()),
            profile_for(&agent.hostname),
            None,
            None,
            live.as_ref(),
            "not matched to a MAAS machine, so there is no commissioned baseline".to_string(),
            tolerances,
        ));
    }
    for profile in &inputs.profiles {
        let short = crate::matching::short_name(&profile.hostname);
        if !rows.iter().any(|r| crate::matching::short_name(&r.hostname) == short) {
            rows.push(MachineReport {
                hostname: profile.hostname.clone(),
                system_id: None,
                machine_id: None,
                profile: Some(profile.profile_name.clone()),
                baseline: None,
                verdict: Verdict::Unknown,
                reason: "neither MAAS nor an agent knows this machine yet".to_string(),
                fields: check(Some(&profile.profile), None, None, tolerances),
            });
        }
    }
    rows.sort_by(|a, b| (&a.hostname, a.key()).cmp(&(&b.hostname, b.key())));
    rows
}

#[allow(clippy::too_many_arguments)]
fn row(
    hostname: &str,
    system_id: Option<String>,
    machine_id: Option<String>,
    profile: Option<&ExpectedProfile>,
    baseline: Option<BaselineInfo>,
    commissioned: Option<&Specs>,
    live: Option<&Specs>,
    why_unknown: String,
    tolerances: &Tolerances,
) -> MachineReport {
    let fields = check(profile.map(|p| &p.profile), commissioned, live, tolerances);
    let verdict = overall(&fields);
    let reason = match verdict {
        Verdict::Pass => String::new(),
        Verdict::Unknown => why_unknown,
        bad => fields
            .iter()
            .filter(|f| f.verdict == bad)
            .map(|f| format!("{}: {}", f.field, f.reason))
            .collect::<Vec<_>>()
            .join("; "),
    };
    MachineReport {
        hostname: hostname.to_string(),
        system_id,
        machine_id,
        profile: profile.map(|p| p.profile_name.clone()),
        baseline,
        verdict,
        reason,
        fields,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::{BlockDevice, Health};

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
