//! Spec verification's records and pure rules: each machine's expected profile (lab plan) against its
//! commissioned baseline (MAAS) and its live inventory (agent), field by field, with a verdict
//! pass | fail | drift | unknown.
//!
//! - [`check`]: the rules and tolerances.
//! - [`reports`]: the rows of `fleetctl verify`, built from what the stores hold ([`Inputs`]).
//!
//! The coordinator's `verify` module loads the inputs, runs the loop and records verdicts.

pub mod check;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

pub use check::{FieldVerdict, Observed, Specs, Tolerances, Unit, Verdict, check, overall};

use crate::domain::maas::MaasMachine;
use crate::domain::{self, Inventory, Machine};
use crate::spec::SpecProfile;

/// A size in the config: bytes, or a number with a unit (`"512MiB"`).
pub fn bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
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
        let short = crate::domain::short_name(hostname);
        inputs.profiles.iter().find(|p| crate::domain::short_name(&p.hostname) == short)
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
        let short = crate::domain::short_name(&profile.hostname);
        if !rows.iter().any(|r| crate::domain::short_name(&r.hostname) == short) {
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

/// One machine's lost-node verdict as last evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeVerdict {
    pub machine_id: String,
    pub hostname: String,
    pub system_id: Option<String>,
    pub verdict: String,
    pub reason: String,
    pub health: domain::Health,
    pub maas_status: String,
    pub power_state: String,
    pub reachability: String,
    pub evaluated_at: DateTime<Utc>,
}

/// What a rematch did.
#[derive(Debug, Clone, PartialEq)]
pub struct Rematched {
    pub machine_id: String,
    pub hostname: String,
    pub system_id: Option<String>,
    pub outcome: String,
}
