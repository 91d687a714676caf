//! fleetctl's MAAS view: `machines list` and `machines show` when the coordinator polls MAAS.
//!
//! Each MAAS machine is joined with the enrolled agent on the same machine (same system_id, else same
//! hostname), so one line shows what MAAS says and how the agent feels. Enrolled agents MAAS does not know
//! are listed after them, with empty MAAS columns.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use model::domain::MachineView;
use model::domain::maas::{MaasMachine, MaasSyncStatus};

use crate::output::{Table, Text};
use crate::view::{optional_time, rfc3339};

/// The enrolled agent running on `m`, if any: same system_id first, then same hostname.
pub fn agent_for<'a>(m: &MaasMachine, agents: &'a [MachineView]) -> Option<&'a MachineView> {
    agents
        .iter()
        .find(|a| a.machine.system_id.as_deref() == Some(m.system_id.as_str()))
        .or_else(|| agents.iter().find(|a| a.machine.hostname == m.hostname))
}

/// The MAAS machine an operator named (hostname or system_id), or the one the agent `view` runs on.
pub fn find<'a>(machines: &'a [MaasMachine], name: &str, view: Option<&MachineView>) -> Option<&'a MaasMachine> {
    machines.iter().find(|m| m.hostname == name || m.system_id == name).or_else(|| {
        let view = view?;
        machines.iter().find(|m| {
            view.machine.system_id.as_deref() == Some(m.system_id.as_str()) || view.machine.hostname == m.hostname
        })
    })
}

/// `{"last_success_at", "last_attempt_at", "age_seconds", "stale", "last_error"}`.
pub fn sync_json(sync: &MaasSyncStatus) -> Value {
    json!({
        "last_success_at": optional_time(sync.last_success_at),
        "last_attempt_at": optional_time(sync.last_attempt_at),
        "age_seconds": sync.age_seconds,
        "stale": sync.stale,
        "last_error": sync.last_error,
    })
}

/// One MAAS machine's fields, sizes in bytes.
pub fn machine_json(m: &MaasMachine) -> Value {
    json!({
        "hostname": m.hostname,
        "system_id": m.system_id,
        "status": m.status,
        "status_name": m.status_name,
        "power_state": m.power_state,
        "owner": m.owner,
        "ip_addresses": m.ip_addresses,
        "tags": m.tags,
        "zone": m.zone,
        "pool": m.pool,
        "cpu_count": m.cpu_count,
        "cpu_speed_mhz": m.cpu_speed_mhz,
        "memory_bytes": m.memory_bytes(),
        "storage_bytes": m.storage_bytes,
        "block_devices": m.disks.iter().map(|d| json!({
            "name": d.name, "size_bytes": d.size_bytes, "model": d.model, "serial": d.serial,
        })).collect::<Vec<_>>(),
        "interfaces": m.interfaces.iter().map(|i| json!({
            "name": i.name, "mac_address": i.mac_address, "link_speed_mbps": i.link_speed_mbps,
        })).collect::<Vec<_>>(),
        "updated_at": rfc3339(m.updated_at),
    })
}

fn agent_json(view: Option<&MachineView>) -> Value {
    match view {
        Some(v) => json!({
            "machine_id": v.machine.id,
            "health": v.machine.health.as_str(),
            "health_reasons": v.machine.health_reasons,
            "last_seen": optional_time(v.machine.last_seen),
        }),
        None => Value::Null,
    }
}

/// The agents that match no MAAS machine.
fn unmatched<'a>(machines: &[MaasMachine], agents: &'a [MachineView]) -> Vec<&'a MachineView> {
    agents
        .iter()
        .filter(|a| {
            !machines.iter().any(|m| agent_for(m, agents).is_some_and(|found| found.machine.id == a.machine.id))
        })
        .collect()
}

/// `fleetctl machines list --output json` with MAAS: `{"maas": {...}, "machines": [...]}`.
pub fn list_document(machines: &[MaasMachine], sync: &MaasSyncStatus, agents: &[MachineView]) -> Value {
    let mut list: Vec<Value> = machines
        .iter()
        .map(|m| {
            let mut value = machine_json(m);
            value["agent"] = agent_json(agent_for(m, agents));
            value
        })
        .collect();
    for agent in unmatched(machines, agents) {
        list.push(json!({
            "hostname": agent.machine.hostname,
            "system_id": agent.machine.system_id,
            "status": Value::Null,
            "status_name": Value::Null,
            "agent": agent_json(Some(agent)),
        }));
    }
    json!({ "maas": sync_json(sync), "machines": list })
}

/// `2m13s`, `45s`, `3h07m`, `2d4h`: an age that reads at a glance.
pub fn compact_duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// `MAAS state from 2m13s ago (stale: MAAS unreachable: <error>)`, or without the parenthesis when fresh.
pub fn freshness_line(sync: &MaasSyncStatus) -> String {
    let from = match sync.age_seconds {
        Some(age) => format!("MAAS state from {} ago", compact_duration(age)),
        None => "MAAS state: no successful poll yet".to_string(),
    };
    if !sync.stale {
        return from;
    }
    let why = match (&sync.last_error, sync.age_seconds) {
        (Some(error), _) => format!("MAAS unreachable: {error}"),
        (None, None) => "waiting for the first poll".to_string(),
        (None, Some(_)) => "no poll succeeded in the last two intervals".to_string(),
    };
    format!("{from} (stale: {why})")
}

fn gib(bytes: u64) -> String {
    format!("{:.0} GiB", bytes as f64 / (1024.0 * 1024.0 * 1024.0))
}

fn gb(bytes: u64) -> String {
    format!("{:.0} GB", bytes as f64 / 1e9)
}

/// `fleetctl machines list` with MAAS: the MAAS columns, the agent's health, then the freshness line.
pub fn list_table(machines: &[MaasMachine], sync: &MaasSyncStatus, agents: &[MachineView]) -> Text {
    let mut table = Table::new(&[
        "HOSTNAME",
        "SYSTEM ID",
        "MAAS STATUS",
        "POWER",
        "OWNER",
        "IPS",
        "CPUS",
        "MEMORY",
        "STORAGE",
        "AGENT",
    ])
    .wide(&["IPS"]);
    let dash = || "-".to_string();
    for m in machines {
        table.row([
            m.hostname.clone(),
            m.system_id.clone(),
            m.status_name.clone(),
            m.power_state.clone(),
            m.owner.clone().unwrap_or_else(dash),
            if m.ip_addresses.is_empty() { dash() } else { m.ip_addresses.join(",") },
            m.cpu_count.to_string(),
            gib(m.memory_bytes()),
            gb(m.storage_bytes),
            agent_for(m, agents).map(|a| a.machine.health.to_string()).unwrap_or_else(|| "not enrolled".to_string()),
        ]);
    }
    for agent in unmatched(machines, agents) {
        let mut row = vec![agent.machine.hostname.clone(), agent.machine.system_id.clone().unwrap_or_else(dash)];
        row.extend(std::iter::repeat_n(dash(), 7));
        row.push(agent.machine.health.to_string());
        table.row(row);
    }
    let mut text = Text::new();
    if machines.is_empty() && agents.is_empty() {
        text.line("no machines in MAAS and none enrolled");
    } else {
        text.table(table);
    }
    text.line(freshness_line(sync));
    text
}

/// The MAAS part of `fleetctl machines show`.
pub fn detail_text(m: &MaasMachine, sync: &MaasSyncStatus, now: DateTime<Utc>) -> Text {
    let mut out = Text::new();
    out.line("MAAS:");
    out.line(format!("  system id:   {}", m.system_id));
    out.line(format!("  hostname:    {}", m.hostname));
    out.line(format!("  status:      {} ({})", m.status_name, m.status));
    out.line(format!("  power:       {}", m.power_state));
    out.line(format!("  owner:       {}", m.owner.as_deref().unwrap_or("-")));
    out.line(format!("  zone/pool:   {}/{}", m.zone, m.pool));
    out.line(format!("  IPs:         {}", m.ip_addresses.join(", ")));
    out.line(format!("  tags:        {}", m.tags.join(", ")));
    out.line(format!("  CPUs:        {} at {} MHz", m.cpu_count, m.cpu_speed_mhz));
    out.line(format!("  memory:      {} bytes", m.memory_bytes()));
    out.line(format!("  storage:     {} bytes", m.storage_bytes));
    for d in &m.disks {
        out.line(format!("  disk:        {} {} bytes {} {}", d.name, d.size_bytes, d.model, d.serial));
    }
    for i in &m.interfaces {
        out.line(format!("  interface:   {} {} {} Mbit/s", i.name, i.mac_address, i.link_speed_mbps));
    }
    out.line(format!("  changed:     {} ({})", rfc3339(m.updated_at), crate::view::age(Some(m.updated_at), now)));
    out.line(format!("  {}", freshness_line(sync)));
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use model::domain::{Health, Machine};

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
    }

    fn maas_machine(system_id: &str, hostname: &str) -> MaasMachine {
        MaasMachine {
            system_id: system_id.into(),
            hostname: hostname.into(),
            status: 6,
            status_name: "Deployed".into(),
            power_state: "on".into(),
            owner: Some("admin".into()),
            ip_addresses: vec!["172.16.11.2".into()],
            tags: vec![],
            zone: "default".into(),
            pool: "default".into(),
            cpu_count: 4,
            cpu_speed_mhz: 3000,
            memory_mib: 16384,
            storage_bytes: 480_000_000_000,
            disks: vec![],
            interfaces: vec![],
            updated_at: at(0),
        }
    }

    fn agent(id: &str, hostname: &str, health: Health) -> MachineView {
        MachineView {
            machine: Machine {
                id: id.into(),
                agent_id: format!("agent-{id}"),
                hostname: hostname.into(),
                system_id: None,
                mac_addresses: vec![],
                agent_version: "0.1.0".into(),
                enrolled_at: at(0),
                last_seen: Some(at(5)),
                heartbeat_interval_ms: 1000,
                health,
                health_reasons: vec![],
            },
            latest_sample: None,
            inventory: None,
            history: vec![],
        }
    }

    fn sync(age: Option<f64>, stale: bool, error: Option<&str>) -> MaasSyncStatus {
        MaasSyncStatus {
            last_attempt_at: Some(at(10)),
            last_success_at: age.map(|_| at(0)),
            age_seconds: age,
            stale,
            last_error: error.map(str::to_string),
        }
    }

    fn check_line(s: MaasSyncStatus, expected: &str) {
        assert_eq!(freshness_line(&s), expected);
    }

    #[test]
    fn freshness_says_age_and_why_stale() {
        check_line(sync(Some(4.2), false, None), "MAAS state from 4s ago");
        check_line(
            sync(Some(133.0), true, Some("connection refused")),
            "MAAS state from 2m13s ago (stale: MAAS unreachable: connection refused)",
        );
        check_line(sync(None, true, None), "MAAS state: no successful poll yet (stale: waiting for the first poll)");
        assert_eq!(compact_duration(3.0 * 3600.0 + 7.0 * 60.0), "3h07m");
        assert_eq!(compact_duration(2.0 * 86400.0 + 4.0 * 3600.0), "2d4h");
    }

    #[test]
    fn list_joins_agents_by_hostname_and_keeps_strangers() {
        let machines = vec![maas_machine("aaa", "server1"), maas_machine("bbb", "server2")];
        let agents = vec![agent("m1", "server2", Health::Healthy), agent("m2", "laptop", Health::Degraded)];
        let doc = list_document(&machines, &sync(Some(1.0), false, None), &agents);
        assert_eq!(doc["maas"]["stale"], false);
        assert_eq!(doc["maas"]["age_seconds"], 1.0);
        let list = doc["machines"].as_array().unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0]["agent"], Value::Null);
        assert_eq!(list[1]["agent"]["health"], "healthy");
        assert_eq!(list[1]["status_name"], "Deployed");
        assert_eq!(list[1]["memory_bytes"], 16384u64 * 1024 * 1024);
        assert_eq!(list[2]["hostname"], "laptop");
        assert_eq!(list[2]["status"], Value::Null);

        let text = list_table(&machines, &sync(Some(133.0), true, Some("down")), &agents).render();
        assert!(text.contains("server2") && text.contains("healthy") && text.contains("not enrolled"), "{text}");
        assert!(text.contains("16 GiB") && text.contains("480 GB"), "{text}");
        assert!(text.ends_with("MAAS state from 2m13s ago (stale: MAAS unreachable: down)\n"), "{text}");
    }

    #[test]
    fn find_by_name_or_by_the_agents_machine() {
        let machines = vec![maas_machine("aaa", "server1"), maas_machine("bbb", "server2")];
        assert_eq!(find(&machines, "bbb", None).map(|m| m.hostname.as_str()), Some("server2"));
        assert_eq!(find(&machines, "server1", None).map(|m| m.system_id.as_str()), Some("aaa"));
        let view = agent("m1", "server2", Health::Healthy);
        assert_eq!(find(&machines, "m1", Some(&view)).map(|m| m.system_id.as_str()), Some("bbb"));
        assert!(find(&machines, "nope", None).is_none());
        let text = detail_text(&machines[0], &sync(Some(1.0), false, None), at(60)).render();
        assert!(text.contains("status:      Deployed (6)"), "{text}");
    }
}
