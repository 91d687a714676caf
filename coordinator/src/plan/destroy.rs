//! The lab's teardown, in the reverse safe order: release the plan's machines, remove its forwards, switch MAAS
//! DHCP off BEFORE the router gets its DHCP back (never two servers at once), remove the plan's ranges, then reset
//! the router through its shim. Objects the plan does not name are left alone.

use super::diff::Op;
use super::file::LabFile;
use super::live::Live;
use super::{Action, Plan, PlanStep};
use crate::maas::NodeStatus;

fn step(action: Action, kind: &str, summary: String, op: Op) -> PlanStep {
    PlanStep { action, kind: kind.to_string(), summary, op: Some(op) }
}

/// The destroy steps for what of `lab` exists in `live`.
pub fn plan(lab: &LabFile, live: &Live) -> Plan {
    let mut steps = Vec::new();
    for machine in &lab.machines {
        if let Some(m) = live.machines.iter().find(|m| m.hostname == machine.hostname)
            && matches!(
                m.status,
                NodeStatus::Deployed | NodeStatus::Deploying | NodeStatus::Allocated | NodeStatus::FailedDeployment
            )
        {
            steps.push(step(
                Action::Delete,
                "machine",
                format!("release machine {} ({})", m.hostname, m.status.label()),
                Op::Release { system_id: m.system_id.clone() },
            ));
        }
    }
    if let (Some(router), Some(state)) = (&lab.router, &live.router) {
        for forward in router.forwards.iter().filter(|f| state.forward(&f.name).is_some()) {
            steps.push(step(
                Action::Delete,
                "forward",
                format!("remove forward {}", forward.name),
                Op::RemoveForward { name: forward.name.clone() },
            ));
        }
    }
    if let Some(subnet) = lab.subnet.as_ref().and_then(|s| live.subnet(&s.cidr))
        && let Some(vlan) = &subnet.vlan
        && vlan.dhcp_on
        && lab.subnet.as_ref().is_some_and(|s| s.dhcp)
    {
        steps.push(step(
            Action::Update,
            "maas_dhcp",
            format!("switch MAAS DHCP off for VLAN {}/{}", vlan.fabric, vlan.name),
            Op::MaasDhcpOff { fabric_id: vlan.fabric_id, vid: vlan.vid },
        ));
    }
    if let Some(plan) = &lab.subnet {
        for range in &plan.ranges {
            let (start, end) = (range.start.to_string(), range.end.to_string());
            if let Some(r) = live.ip_ranges.iter().find(|r| r.start_ip == start && r.end_ip == end) {
                steps.push(step(
                    Action::Delete,
                    "ip_range",
                    format!("delete ip range {start}-{end} ({})", range.range_type.as_str()),
                    Op::DeleteRange { id: r.id },
                ));
            }
        }
    }
    if let (Some(router), Some(state)) = (&lab.router, &live.router)
        && (!state.forwards.is_empty() || !state.dhcp_enabled || router.remote_management.is_some())
    {
        steps.push(step(
            Action::Update,
            "router_reset",
            format!("give the router its DHCP back and remove what the shim created (reset via {})", router.shim),
            Op::RouterReset,
        ));
    }
    Plan { steps }
}
