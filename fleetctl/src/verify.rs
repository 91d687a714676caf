//! fleetctl's verification views: `verify` (table and JSON, exit codes), `verify --accept`, the `verdict` column
//! of `status`, and `machines rematch`.

use chrono::{DateTime, SecondsFormat, Utc};
use metalfleet_common::exit;
use serde_json::{Value, json};

use model::domain::MachineView;
use model::verify::{FieldVerdict, MachineReport, NodeVerdict, Observed, Rematched, Unit, Verdict};

use crate::output::{Table, Text};

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// 0 when every machine passes, 1 when any fails or drifted, 2 when nothing is wrong but something is unknown
/// (and for an empty fleet, which verified nothing).
pub fn exit_code(reports: &[MachineReport]) -> i32 {
    match reports.iter().map(|r| r.verdict).max() {
        Some(Verdict::Pass) => exit::OK,
        Some(Verdict::Fail | Verdict::Drift) => exit::CHECK_FAILED,
        Some(Verdict::Unknown) | None => 2,
    }
}

fn observed_json(unit: Unit, observed: &Option<Observed>) -> Value {
    match observed {
        None => Value::Null,
        Some(o) if unit == Unit::Text => json!(o.text),
        Some(o) => o.numbers.first().map(|n| json!(n)).unwrap_or(Value::Null),
    }
}

fn field_json(f: &FieldVerdict) -> Value {
    // Lists stay lists (one size per disk, one speed per NIC); single figures are numbers.
    let list = matches!(f.field.as_str(), "disk_sizes" | "nic_speeds");
    let value = |o: &Option<Observed>| match o {
        Some(o) if list => json!(o.numbers),
        other => observed_json(f.unit, other),
    };
    json!({
        "field": f.field,
        "unit": f.unit.as_str(),
        "expected": f.expected,
        "expected_min": f.expected_min,
        "commissioned": value(&f.commissioned),
        "live": value(&f.live),
        "verdict": f.verdict.as_str(),
        "reason": f.reason,
    })
}

/// One machine in `fleetctl verify --output json`, with every field.
pub fn report_json(r: &MachineReport) -> Value {
    json!({
        "hostname": r.hostname,
        "system_id": r.system_id,
        "machine_id": r.machine_id,
        "profile": r.profile,
        "verdict": r.verdict.as_str(),
        "reason": r.reason,
        "baseline": r.baseline.as_ref().map(|b| json!({
            "source": b.source.as_str(),
            "recorded_at": rfc3339(b.recorded_at),
            "recorded_by": b.recorded_by,
        })),
        "fields": r.fields.iter().map(field_json).collect::<Vec<_>>(),
    })
}

/// `fleetctl verify --output json`: `{"machines": [...], "verdict": worst}`.
pub fn document(reports: &[MachineReport]) -> Value {
    let worst = reports.iter().map(|r| r.verdict).max().unwrap_or(Verdict::Unknown);
    json!({ "verdict": worst.as_str(), "machines": reports.iter().map(report_json).collect::<Vec<_>>() })
}

fn human(unit: Unit, observed: &Option<Observed>) -> String {
    let Some(o) = observed else { return "-".to_string() };
    if unit == Unit::Text {
        return o.text.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| "-".to_string());
    }
    if o.numbers.is_empty() {
        return "none".to_string();
    }
    let one = |n: u64| match unit {
        Unit::Bytes => format_bytes(n),
        Unit::Mbps => format!("{n} Mb/s"),
        _ => n.to_string(),
    };
    o.numbers.iter().map(|n| one(*n)).collect::<Vec<_>>().join(", ")
}

pub use model::spec::format_size as format_bytes;

/// `fleetctl verify` as a table: one line per field, the verdict and the reason last.
pub fn table(reports: &[MachineReport]) -> Text {
    if reports.is_empty() {
        return Text::of("no machines to verify yet");
    }
    let mut table = Table::new(&["MACHINE", "FIELD", "EXPECTED", "COMMISSIONED", "LIVE", "VERDICT", "REASON"]).wide(&[
        "EXPECTED",
        "COMMISSIONED",
        "LIVE",
        "REASON",
    ]);
    for r in reports {
        table.row([
            r.hostname.clone(),
            "(machine)".to_string(),
            r.profile.clone().map(|p| format!("profile {p}")).unwrap_or_else(|| "-".to_string()),
            r.baseline
                .as_ref()
                .map(|b| format!("baseline: {} by {}", b.source.as_str(), b.recorded_by))
                .unwrap_or_else(|| "-".to_string()),
            String::new(),
            r.verdict.to_string(),
            r.reason.clone(),
        ]);
        for f in &r.fields {
            let reason = if f.verdict == Verdict::Pass { String::new() } else { f.reason.clone() };
            table.row([
                String::new(),
                f.field.clone(),
                f.expected.clone().unwrap_or_else(|| "-".to_string()),
                human(f.unit, &f.commissioned),
                human(f.unit, &f.live),
                f.verdict.to_string(),
                reason,
            ]);
        }
    }
    let mut text = Text::new();
    text.table(table);
    text
}

/// `fleetctl verify --accept NAME`, as a line for people.
pub fn accepted_text(report: &MachineReport, source: &str) -> Text {
    Text::of(format!(
        "{}: new baseline recorded from {source} data; verdict now {}{}",
        report.hostname,
        report.verdict,
        if report.reason.is_empty() { String::new() } else { format!(" ({})", report.reason) }
    ))
}

pub fn accepted_json(report: &MachineReport, source: &str) -> Value {
    json!({ "accepted": report.hostname, "source": source, "machine": report_json(report) })
}

pub fn rematched_text(r: &Rematched) -> Text {
    Text::of(format!("{}: {}", r.hostname, r.outcome))
}

pub fn rematched_json(r: &Rematched) -> Value {
    json!({ "hostname": r.hostname, "machine_id": r.machine_id, "system_id": r.system_id, "outcome": r.outcome })
}

fn verdict_of<'a>(view: &MachineView, verdicts: &'a [NodeVerdict]) -> Option<&'a NodeVerdict> {
    verdicts.iter().find(|v| v.machine_id == view.machine.id)
}

/// `fleetctl status --output json` with each machine's lost-node `verdict` (null when not evaluated yet).
pub fn status_document(machines: &[MachineView], verdicts: &[NodeVerdict]) -> Value {
    let list: Vec<Value> = machines
        .iter()
        .map(|view| {
            let mut value = crate::view::status_json(view);
            let node = verdict_of(view, verdicts);
            value["verdict"] = json!(node.map(|n| n.verdict.clone()));
            value["verdict_reason"] = json!(node.map(|n| n.reason.clone()));
            value["reachability"] = json!(node.map(|n| n.reachability.clone()));
            value
        })
        .collect();
    json!({ "machines": list })
}

/// `fleetctl status` with a VERDICT column appended.
pub fn status_table(machines: &[MachineView], verdicts: &[NodeVerdict], now: DateTime<Utc>) -> Text {
    if machines.is_empty() {
        return crate::view::status_table(machines, now);
    }
    let mut header = crate::view::STATUS_HEADER.to_vec();
    header.push("VERDICT");
    let mut table = Table::new(&header).wide(&["HEALTH"]);
    for view in machines {
        let mut row = crate::view::status_row(view, now);
        row.push(verdict_of(view, verdicts).map(|n| n.verdict.clone()).unwrap_or_else(|| "-".to_string()));
        table.row(row);
    }
    let mut text = Text::new();
    text.table(table);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::verify::{Specs, Tolerances, check, overall};

    fn report(verdict_specs: Option<&Specs>) -> MachineReport {
        let specs = Specs { logical_cpus: 4, memory_bytes: 1 << 34, ..Default::default() };
        let fields = check(None, Some(&specs), verdict_specs, &Tolerances::default());
        MachineReport {
            hostname: "server1".into(),
            system_id: Some("aaa".into()),
            machine_id: None,
            profile: None,
            baseline: None,
            verdict: overall(&fields),
            reason: String::new(),
            fields,
        }
    }

    #[test]
    fn exit_codes_follow_the_worst_verdict() {
        let specs = Specs { logical_cpus: 4, memory_bytes: 1 << 34, ..Default::default() };
        let pass = report(Some(&specs));
        let unknown = report(None);
        let drift = report(Some(&Specs { logical_cpus: 2, ..specs }));
        assert_eq!(exit_code(std::slice::from_ref(&pass)), 0);
        assert_eq!(exit_code(&[pass.clone(), unknown.clone()]), 2);
        assert_eq!(exit_code(&[pass, unknown, drift]), 1);
        assert_eq!(exit_code(&[]), 2);
    }

    #[test]
    fn json_has_every_field_with_typed_values() {
        let specs = Specs { logical_cpus: 4, memory_bytes: 1 << 34, ..Default::default() };
        let doc = document(&[report(Some(&specs))]);
        assert_eq!(doc["verdict"], "pass");
        let fields = doc["machines"][0]["fields"].as_array().unwrap();
        assert_eq!(fields[0]["field"], "logical_cpus");
        assert_eq!(fields[0]["live"], 4);
        assert_eq!(fields[1]["commissioned"], 1u64 << 34);
        assert_eq!(fields[1]["unit"], "bytes");
        assert_eq!(fields[3]["field"], "disk_sizes");
        assert_eq!(fields[3]["live"], json!([]));
        assert!(table(&[report(None)]).render().contains("the agent has not reported an inventory yet"));
        assert_eq!(format_bytes(16 << 30), "16.0 GiB");
    }
}
