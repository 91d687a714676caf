//! How machines, the fleet's status and events are shown: a table for people, JSON for scripts.

use chrono::{DateTime, SecondsFormat, Utc};
use metalfleet_common::exit;
use model::domain::{Event, Health, MachineView, Sample};
use serde_json::{Value, json};

use crate::client::Degraded;
use crate::output::{NAME_WIDTH, Table, Text, clip};

pub(crate) fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn optional_time(at: Option<DateTime<Utc>>) -> Value {
    at.map(|t| Value::String(rfc3339(t))).unwrap_or(Value::Null)
}

fn memory_percent(sample: &Sample) -> Option<f64> {
    (sample.memory_total_bytes > 0).then(|| sample.memory_used_bytes as f64 * 100.0 / sample.memory_total_bytes as f64)
}

/// One machine in `fleetctl status --output json`.
pub fn status_json(view: &MachineView) -> Value {
    let m = &view.machine;
    let s = view.latest_sample.as_ref();
    json!({
        "hostname": m.hostname,
        "machine_id": m.id,
        "health": m.health.as_str(),
        "health_reasons": m.health_reasons,
        "last_seen": optional_time(m.last_seen),
        "cpu_percent": s.map(|s| s.cpu_percent),
        "memory_used_bytes": s.map(|s| s.memory_used_bytes),
        "memory_total_bytes": s.map(|s| s.memory_total_bytes),
        "disk_used_percent": s.and_then(Sample::worst_disk_percent),
        "load1": s.map(|s| s.load1),
        "heartbeat_interval_seconds": f64::from(m.heartbeat_interval_ms) / 1000.0,
        "system_id": m.system_id,
        "agent_version": m.agent_version,
    })
}

/// `fleetctl status --output json`: exactly `{"machines": [...]}`.
pub fn status_document(machines: &[MachineView]) -> Value {
    json!({ "machines": machines.iter().map(status_json).collect::<Vec<_>>() })
}

/// 1 when any machine is not healthy (for `--check`), else 0.
pub fn status_exit_code(machines: &[MachineView]) -> i32 {
    if machines.iter().all(|m| m.machine.health == Health::Healthy) { exit::OK } else { exit::CHECK_FAILED }
}

/// How long ago, in words a glance can read: `4s ago`, `3m ago`, `never`.
pub fn age(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(at) = at else { return "never".to_string() };
    let seconds = (now - at).num_seconds().max(0);
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86400 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86400),
    }
}

fn percent(value: Option<f64>) -> String {
    value.map(|v| format!("{v:.0}%")).unwrap_or_else(|| "-".to_string())
}

/// The columns of `fleetctl status`, before the verdict (see [`crate::verify::status_table`]).
pub const STATUS_HEADER: [&str; 7] = ["HOSTNAME", "HEALTH", "LAST SEEN", "CPU", "MEMORY", "DISK", "LOAD"];

/// One machine's cells under [`STATUS_HEADER`].
pub fn status_row(view: &MachineView, now: DateTime<Utc>) -> Vec<String> {
    let m = &view.machine;
    let s = view.latest_sample.as_ref();
    let health = match m.health_reasons.as_slice() {
        [] => m.health.to_string(),
        reasons => format!("{} ({})", m.health, reasons.join("; ")),
    };
    vec![
        m.hostname.clone(),
        health,
        age(m.last_seen, now),
        percent(s.map(|s| s.cpu_percent)),
        percent(s.and_then(memory_percent)),
        percent(s.and_then(Sample::worst_disk_percent)),
        s.map(|s| format!("{:.2}", s.load1)).unwrap_or_else(|| "-".to_string()),
    ]
}

/// `fleetctl status` as a table: what is wrong should show at a glance.
pub fn status_table(machines: &[MachineView], now: DateTime<Utc>) -> Text {
    if machines.is_empty() {
        return Text::of("no machines enrolled yet");
    }
    let mut table = Table::new(&STATUS_HEADER).wide(&["HEALTH"]);
    for view in machines {
        table.row(status_row(view, now));
    }
    let mut text = Text::new();
    text.table(table);
    text
}

/// One machine in `fleetctl machines list --output json`.
pub fn machine_json(view: &MachineView) -> Value {
    let m = &view.machine;
    json!({
        "hostname": m.hostname,
        "machine_id": m.id,
        "agent_id": m.agent_id,
        "health": m.health.as_str(),
        "health_reasons": m.health_reasons,
        "system_id": m.system_id,
        "mac_addresses": m.mac_addresses,
        "agent_version": m.agent_version,
        "enrolled_at": rfc3339(m.enrolled_at),
        "last_seen": optional_time(m.last_seen),
        "heartbeat_interval_seconds": f64::from(m.heartbeat_interval_ms) / 1000.0,
    })
}

pub fn machines_table(machines: &[MachineView], now: DateTime<Utc>) -> Text {
    if machines.is_empty() {
        return Text::of("no machines enrolled yet");
    }
    let mut table = Table::new(&["HOSTNAME", "MACHINE ID", "HEALTH", "SYSTEM ID", "AGENT", "ENROLLED", "LAST SEEN"]);
    for view in machines {
        let m = &view.machine;
        table.row([
            m.hostname.clone(),
            m.id.clone(),
            m.health.to_string(),
            m.system_id.clone().unwrap_or_else(|| "-".to_string()),
            m.agent_version.clone(),
            rfc3339(m.enrolled_at),
            age(m.last_seen, now),
        ]);
    }
    let mut text = Text::new();
    text.table(table);
    text
}

/// `fleetctl machines show NAME --output json`: the machine, its inventory, latest sample and history.
pub fn machine_detail_json(view: &MachineView) -> Value {
    let mut value = machine_json(view);
    let sample_json = |s: &Sample| serde_json::to_value(s).unwrap_or(Value::Null);
    value["inventory"] = view.inventory.as_ref().and_then(|i| serde_json::to_value(i).ok()).unwrap_or(Value::Null);
    value["latest_sample"] = view.latest_sample.as_ref().map(sample_json).unwrap_or(Value::Null);
    value["history"] = Value::Array(view.history.iter().map(sample_json).collect());
    value
}

/// `fleetctl machines show NAME`: one line per fact, every value escaped by [`Text`].
pub fn machine_detail_text(view: &MachineView, now: DateTime<Utc>) -> Text {
    let m = &view.machine;
    let mut out = Text::new();
    out.line(format!("hostname:      {}", m.hostname));
    out.line(format!("machine id:    {}", m.id));
    out.line(format!("agent id:      {} (version {})", m.agent_id, m.agent_version));
    out.line(format!("system id:     {}", m.system_id.as_deref().unwrap_or("-")));
    out.line(format!("health:        {}", m.health));
    for reason in &m.health_reasons {
        out.line(format!("               {reason}"));
    }
    out.line(format!(
        "last seen:     {} ({})",
        optional_time(m.last_seen).as_str().unwrap_or("never"),
        age(m.last_seen, now)
    ));
    out.line(format!("interval:      {:.1}s", f64::from(m.heartbeat_interval_ms) / 1000.0));
    out.line(format!("MACs:          {}", m.mac_addresses.join(", ")));
    match &view.inventory {
        Some(inv) => {
            out.line(format!(
                "CPU:           {} ({} cores, {} logical)",
                inv.cpu_model, inv.physical_cores, inv.logical_cpus
            ));
            out.line(format!("memory:        {} bytes", inv.memory_total_bytes));
            for disk in &inv.disks {
                out.line(format!(
                    "disk:          {} {} bytes {} {}",
                    disk.name, disk.size_bytes, disk.model, disk.serial
                ));
            }
            for nic in &inv.interfaces {
                out.line(format!(
                    "interface:     {} {} {}{}",
                    nic.name,
                    nic.mac,
                    nic.link_state,
                    if nic.is_virtual { " (virtual)" } else { "" }
                ));
            }
            out.line(format!("os:            {} {} (kernel {})", inv.os.name, inv.os.version, inv.os.kernel));
        }
        None => {
            out.line("inventory:     not reported yet");
        }
    }
    if !view.history.is_empty() {
        let mut history = Table::new(&["TAKEN AT", "CPU", "MEMORY", "DISK", "LOAD"]);
        for s in &view.history {
            history.row([
                s.taken_at.map(rfc3339).unwrap_or_else(|| "-".to_string()),
                percent(Some(s.cpu_percent)),
                percent(memory_percent(s)),
                percent(s.worst_disk_percent()),
                format!("{:.2}", s.load1),
            ]);
        }
        out.line("").line("recent samples:").table(history);
    }
    out
}

/// One event as a JSON line for `fleetctl events --output json`.
pub fn event_json(event: &Event) -> Value {
    json!({
        "id": event.id,
        "at": rfc3339(event.at),
        "machine_id": event.machine_id,
        "hostname": event.hostname,
        "kind": event.kind,
        "message": event.message,
        "from_health": event.from_health.map(Health::as_str),
        "to_health": event.to_health.map(Health::as_str),
    })
}

/// One event as a line of `fleetctl events`: hostname and kind cut to [`NAME_WIDTH`], the message whole (the line
/// is escaped when printed).
pub fn event_line(event: &Event) -> String {
    format!(
        "{}  {:<16} {:<15} {}",
        rfc3339(event.at),
        clip(&event.hostname, NAME_WIDTH),
        clip(&event.kind, NAME_WIDTH),
        event.message
    )
}

/// The coordinator's own condition in `fleetctl status --output json`: `{"health": "healthy"}` or
/// `{"health": "degraded", "since": ..., "reasons": [...]}`.
pub fn coordinator_json(degraded: Option<&Degraded>) -> Value {
    match degraded {
        None => serde_json::json!({ "health": "healthy" }),
        Some(d) => serde_json::json!({
            "health": "degraded",
            "since": d.since.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            "reasons": d.reasons,
        }),
    }
}

/// The line `fleetctl status` prints above its table while the coordinator is degraded.
pub fn degraded_banner(degraded: Option<&Degraded>) -> Option<String> {
    let d = degraded?;
    let since =
        d.since.map(|t| format!(" since {}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))).unwrap_or_default();
    Some(format!(
        "COORDINATOR DEGRADED{since}: {}\nAgents keep their samples until the store writes again; what follows may be behind.\n",
        d.reasons.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use model::domain::{FilesystemUsage, Machine};

    use super::*;
    use crate::verify;

    fn view(hostname: &str, health: Health, sample: Option<Sample>) -> MachineView {
        MachineView {
            machine: Machine {
                id: format!("id-{hostname}"),
                agent_id: "a".into(),
                hostname: hostname.into(),
                system_id: None,
                mac_addresses: vec![],
                agent_version: "0.1.0".into(),
                enrolled_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
                last_seen: sample.as_ref().map(|_| Utc.timestamp_opt(1_700_000_100, 500_000_000).unwrap()),
                heartbeat_interval_ms: 5000,
                health,
                health_reasons: if health == Health::Degraded {
                    vec!["filesystem / is 95.0% used".into()]
                } else {
                    vec![]
                },
            },
            latest_sample: sample,
            inventory: None,
            history: vec![],
        }
    }

    fn busy_sample() -> Sample {
        Sample {
            cpu_percent: 12.5,
            load1: 0.75,
            memory_total_bytes: 1000,
            memory_used_bytes: 250,
            filesystems: vec![FilesystemUsage { total_bytes: 100, available_bytes: 5, ..Default::default() }],
            ..Default::default()
        }
    }

    #[test]
    fn status_json_has_the_documented_shape() {
        let machines =
            vec![view("server1", Health::Degraded, Some(busy_sample())), view("server2", Health::Unknown, None)];
        let doc = status_document(&machines);
        let first = &doc["machines"][0];
        assert_eq!(first["hostname"], "server1");
        assert_eq!(first["health"], "degraded");
        assert_eq!(first["health_reasons"][0], "filesystem / is 95.0% used");
        assert_eq!(first["last_seen"], "2023-11-14T22:15:00.500Z");
        assert_eq!(first["cpu_percent"], 12.5);
        assert_eq!(first["memory_used_bytes"], 250);
        assert_eq!(first["memory_total_bytes"], 1000);
        assert_eq!(first["disk_used_percent"], 95.0);
        assert_eq!(first["load1"], 0.75);
        assert_eq!(first["heartbeat_interval_seconds"], 5.0);
        let second = &doc["machines"][1];
        assert_eq!(second["last_seen"], Value::Null);
        assert_eq!(second["cpu_percent"], Value::Null);
        assert_eq!(doc.as_object().unwrap().len(), 1);
        assert_eq!(status_exit_code(&machines), exit::CHECK_FAILED);
        assert_eq!(status_exit_code(&[view("ok", Health::Healthy, None)]), exit::OK);
    }

    #[test]
    fn status_table_shows_reason_and_age() {
        let now = Utc.timestamp_opt(1_700_000_104, 0).unwrap();
        let text = status_table(&[view("server1", Health::Degraded, Some(busy_sample()))], now).render();
        assert!(text.contains("server1"), "{text}");
        assert!(text.contains("degraded (filesystem / is 95.0% used)"), "{text}");
        assert!(text.contains("3s ago"), "{text}");
        assert!(text.contains("95%"), "{text}");
        assert_eq!(status_table(&[], now).render(), "no machines enrolled yet\n");
    }

    #[test]
    fn status_with_a_huge_or_forged_hostname_neither_panics_nor_forges_a_row() {
        let now = Utc.timestamp_opt(1_700_000_104, 0).unwrap();
        // The reported panic: `{:<width$}` with a width past u16::MAX ("Formatting argument out of range").
        let huge = view(&"h".repeat(70_000), Health::Healthy, Some(busy_sample()));
        let forged = view("evil\nserver2   healthy   1s ago\x1b[2K", Health::Degraded, Some(busy_sample()));
        let text = verify::status_table(&[huge, forged], &[], now).render();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.lines().all(|l| l.chars().count() < 1000), "{text}");
        assert!(text.contains("evil\\nserver2") && text.contains("\\x1b[2K"), "{text}");
        assert!(!text.contains('\x1b'));
        assert!(text.lines().next().unwrap().trim_end().ends_with("VERDICT"), "{text}");
    }

    #[test]
    fn events_print_as_json_lines() {
        let event = Event {
            id: 7,
            at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            machine_id: "m".into(),
            hostname: "server1".into(),
            kind: "health_changed".into(),
            message: "server1 is unreachable (was healthy)".into(),
            from_health: Some(Health::Healthy),
            to_health: Some(Health::Unreachable),
        };
        let line = serde_json::to_string(&event_json(&event)).unwrap();
        assert!(!line.contains('\n'));
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["id"], 7);
        assert_eq!(value["at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(value["from_health"], "healthy");
        assert_eq!(value["to_health"], "unreachable");
    }

    #[test]
    fn ages_read_at_a_glance() {
        let now = Utc.timestamp_opt(1_700_010_000, 0).unwrap();
        assert_eq!(age(None, now), "never");
        assert_eq!(age(Some(now - chrono::Duration::seconds(59)), now), "59s ago");
        assert_eq!(age(Some(now - chrono::Duration::seconds(125)), now), "2m ago");
        assert_eq!(age(Some(now + chrono::Duration::seconds(5)), now), "0s ago");
    }
}
