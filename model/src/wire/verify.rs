//! VerifyService's wire types to domain types and back.

use proto::v1 as pb;

use super::{WireError, time, timestamp};
use crate::domain::Health;
use crate::verify::{
    BaselineInfo, BaselineSource, FieldVerdict, MachineReport, NodeVerdict, Observed, Rematched, Unit, Verdict,
};

pub fn report_to_wire(r: &MachineReport) -> pb::SpecReport {
    let MachineReport { hostname, system_id, machine_id, profile, baseline, verdict, reason, fields } = r;
    pb::SpecReport {
        hostname: hostname.clone(),
        system_id: system_id.clone().unwrap_or_default(),
        machine_id: machine_id.clone().unwrap_or_default(),
        profile: profile.clone().unwrap_or_default(),
        verdict: verdict.as_str().to_string(),
        reason: reason.clone(),
        baseline_source: baseline.as_ref().map(|b| b.source.as_str().to_string()).unwrap_or_default(),
        baseline_recorded_at: baseline.as_ref().map(|b| timestamp(b.recorded_at)),
        baseline_recorded_by: baseline.as_ref().map(|b| b.recorded_by.clone()).unwrap_or_default(),
        fields: fields.iter().map(field_to_wire).collect(),
    }
}

fn field_to_wire(f: &FieldVerdict) -> pb::SpecField {
    let FieldVerdict { field, unit, expected, expected_min, commissioned, live, verdict, reason } = f;
    let value = |o: &Observed| pb::SpecValue { numbers: o.numbers.clone(), text: o.text.clone() };
    pb::SpecField {
        field: field.clone(),
        unit: unit.as_str().to_string(),
        expected: expected.clone().unwrap_or_default(),
        expected_min: *expected_min,
        commissioned: commissioned.as_ref().map(value),
        live: live.as_ref().map(value),
        verdict: verdict.as_str().to_string(),
        reason: reason.clone(),
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn verdict(text: &str) -> Result<Verdict, WireError> {
    Verdict::parse(text).ok_or_else(|| WireError::new("verdict", format!("{text:?} is unknown; upgrade fleetctl")))
}

/// # Errors
/// An unknown verdict, unit or baseline source.
pub fn report_from_wire(r: pb::SpecReport) -> Result<MachineReport, WireError> {
    let pb::SpecReport {
        hostname,
        system_id,
        machine_id,
        profile,
        verdict: overall,
        reason,
        baseline_source,
        baseline_recorded_at,
        baseline_recorded_by,
        fields,
    } = r;
    let baseline = match non_empty(baseline_source) {
        Some(source) => Some(BaselineInfo {
            source: source_from_wire(&source)?,
            recorded_at: time(baseline_recorded_at).unwrap_or_default(),
            recorded_by: baseline_recorded_by,
        }),
        None => None,
    };
    Ok(MachineReport {
        hostname,
        system_id: non_empty(system_id),
        machine_id: non_empty(machine_id),
        profile: non_empty(profile),
        baseline,
        verdict: verdict(&overall)?,
        reason,
        fields: fields.into_iter().map(field_from_wire).collect::<Result<_, _>>()?,
    })
}

fn field_from_wire(f: pb::SpecField) -> Result<FieldVerdict, WireError> {
    let pb::SpecField { field, unit, expected, expected_min, commissioned, live, verdict: v, reason } = f;
    let unit = match unit.as_str() {
        "count" => Unit::Count,
        "bytes" => Unit::Bytes,
        "mbps" => Unit::Mbps,
        "text" => Unit::Text,
        other => return Err(WireError::new("unit", format!("{other:?} is unknown; upgrade fleetctl"))),
    };
    let value = |v: pb::SpecValue| Observed { numbers: v.numbers, text: v.text };
    Ok(FieldVerdict {
        field,
        unit,
        expected: non_empty(expected),
        expected_min,
        commissioned: commissioned.map(value),
        live: live.map(value),
        verdict: verdict(&v)?,
        reason,
    })
}

/// `""` is the default (the server decides).
///
/// # Errors
/// Anything but live or commissioned.
pub fn source_from_wire(text: &str) -> Result<BaselineSource, WireError> {
    BaselineSource::parse(text)
        .ok_or_else(|| WireError::new("source", format!("{text:?} is unknown; use live or commissioned")))
}

pub fn node_to_wire(n: &NodeVerdict) -> pb::NodeVerdict {
    pb::NodeVerdict {
        machine_id: n.machine_id.clone(),
        hostname: n.hostname.clone(),
        system_id: n.system_id.clone().unwrap_or_default(),
        verdict: n.verdict.clone(),
        reason: n.reason.clone(),
        health: n.health.as_str().to_string(),
        maas_status: n.maas_status.clone(),
        power_state: n.power_state.clone(),
        reachability: n.reachability.clone(),
        evaluated_at: Some(timestamp(n.evaluated_at)),
    }
}

pub fn node_from_wire(n: pb::NodeVerdict) -> NodeVerdict {
    NodeVerdict {
        machine_id: n.machine_id,
        hostname: n.hostname,
        system_id: non_empty(n.system_id),
        verdict: n.verdict,
        reason: n.reason,
        health: n.health.parse().unwrap_or(Health::Unknown),
        maas_status: n.maas_status,
        power_state: n.power_state,
        reachability: n.reachability,
        evaluated_at: time(n.evaluated_at).unwrap_or_default(),
    }
}

pub fn rematched_to_wire(r: &Rematched) -> pb::RematchResponse {
    pb::RematchResponse {
        machine_id: r.machine_id.clone(),
        hostname: r.hostname.clone(),
        system_id: r.system_id.clone().unwrap_or_default(),
        outcome: r.outcome.clone(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::spec::SpecProfile;
    use crate::verify::{Specs, Tolerances, check, overall};

    #[test]
    fn reports_round_trip() {
        let specs = Specs { logical_cpus: 4, memory_bytes: 1 << 34, cpu_model: "x".into(), ..Default::default() };
        let profile = SpecProfile { min_logical_cpus: Some(8), cpu_model: Some("y".into()), ..Default::default() };
        let fields = check(Some(&profile), Some(&specs), None, &Tolerances::default());
        let report = MachineReport {
            hostname: "server1".into(),
            system_id: Some("aaa".into()),
            machine_id: None,
            profile: Some("big".into()),
            baseline: Some(BaselineInfo {
                source: BaselineSource::Live,
                recorded_at: chrono::Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
                recorded_by: "admin".into(),
            }),
            verdict: overall(&fields),
            reason: "r".into(),
            fields,
        };
        assert_eq!(report_from_wire(report_to_wire(&report)).unwrap(), report);
        let mut wire = report_to_wire(&report);
        wire.verdict = "great".into();
        assert_eq!(report_from_wire(wire).map(|_| ()).unwrap_err().field, "verdict");
    }
}
