//! The live lab as a plan file: applying the export to the same lab changes nothing.
//!
//! MAAS does not hand out what it keeps secret (power passwords), so machines are exported with their power type
//! only; they exist already, so apply leaves them alone. The router section comes from the last applied plan (the
//! shim's address is not something MAAS knows) with its forwards and DHCP as the router reports them now.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::file::{
    DevicePlan, ForwardPlan, Image, LabFile, MaasSettings, MachinePlan, RangePlan, RangeType, RemoteManagementPlan,
    SshKey, SubnetPlan,
};
use super::live::Live;
use crate::maas::IpRangeType;

/// The plan file describing `live`. `applied` (the last applied plan) supplies what live state cannot: which
/// subnet is the lab's, the router's shim, and the spec profiles.
pub fn export(live: &Live, applied: Option<&LabFile>) -> LabFile {
    let mut lab = LabFile {
        maas: MaasSettings {
            upstream_dns: Some(live.upstream_dns.clone()),
            dnssec_validation: Some(live.dnssec_validation.clone()).filter(|d| !d.is_empty()),
            kernel_opts: Some(live.kernel_opts.clone()),
        },
        ..LabFile::default()
    };
    for s in &live.selections {
        if !lab.images.iter().any(|i| i.os == s.os && i.release == s.release) {
            lab.images.push(Image { os: s.os.clone(), release: s.release.clone(), arches: s.arches.clone() });
        }
    }
    lab.ssh_keys = live.ssh_keys.iter().map(|k| SshKey { key: Some(k.key.clone()), file: None }).collect();
    // The lab's subnet: the applied plan's, else the one whose VLAN has DHCP on, else the rack's first.
    let cidr = applied
        .and_then(|a| a.subnet.as_ref().map(|s| s.cidr.clone()))
        .or_else(|| live.subnets.iter().find(|s| s.vlan.as_ref().is_some_and(|v| v.dhcp_on)).map(|s| s.cidr.clone()));
    if let Some(subnet) = cidr.as_deref().and_then(|c| live.subnet(c)) {
        let ranges = live
            .ip_ranges
            .iter()
            .filter(|r| r.subnet.as_ref().map(|s| s.id == subnet.id).unwrap_or(false))
            .filter_map(|r| {
                Some(RangePlan {
                    range_type: match r.range_type {
                        IpRangeType::Dynamic => RangeType::Dynamic,
                        IpRangeType::Reserved => RangeType::Reserved,
                        _ => return None,
                    },
                    start: r.start_ip.parse::<Ipv4Addr>().ok()?,
                    end: r.end_ip.parse::<Ipv4Addr>().ok()?,
                    comment: r.comment.clone(),
                })
            })
            .collect();
        lab.subnet = Some(SubnetPlan {
            cidr: subnet.cidr.clone(),
            dns_servers: Some(subnet.dns_servers.clone()),
            dhcp: subnet.vlan.as_ref().is_some_and(|v| v.dhcp_on),
            ranges,
        });
    }
    lab.devices = live
        .devices
        .iter()
        .filter_map(|d| {
            let mac = d.interface_set.first()?.mac_address.to_ascii_lowercase();
            Some(DevicePlan { hostname: d.hostname.clone(), mac })
        })
        .collect();
    let applied_machines: BTreeMap<&str, &MachinePlan> =
        applied.map(|a| a.machines.iter().map(|m| (m.hostname.as_str(), m)).collect()).unwrap_or_default();
    lab.machines = live
        .machines
        .iter()
        .map(|m| {
            let before = applied_machines.get(m.hostname.as_str());
            MachinePlan {
                hostname: m.hostname.clone(),
                macs: m
                    .interface_set
                    .iter()
                    .map(|i| i.mac_address.to_ascii_lowercase())
                    .filter(|x| !x.is_empty())
                    .collect(),
                architecture: m.architecture.clone(),
                power_type: m.power_type.clone(),
                power_parameters: BTreeMap::new(),
                profile: before.and_then(|b| b.profile.clone()),
                tags: m.tag_names.clone(),
            }
        })
        .filter(|m| !m.macs.is_empty())
        .collect();
    if let Some(applied) = applied {
        lab.profiles = applied.profiles.clone();
        if let (Some(router), Some(state)) = (&applied.router, &live.router) {
            let mut router = router.clone();
            router.dhcp = state.dhcp_enabled;
            router.forwards = state
                .forwards
                .iter()
                .map(|f| {
                    let before = applied.router.as_ref().and_then(|r| r.forwards.iter().find(|p| p.name == f.name));
                    ForwardPlan {
                        name: f.name.clone(),
                        proto: f.protocol.to_string(),
                        external_port: f.external_port,
                        to: f.target,
                        protected: f.protected || before.is_some_and(|b| b.protected),
                        reconcile: before.map(|b| b.reconcile).unwrap_or_default(),
                    }
                })
                .collect();
            router.remote_management = Some(RemoteManagementPlan {
                enabled: state.remote_management.enabled,
                from: state.remote_management.allowed_from.iter().map(|n| n.to_string()).collect(),
            });
            lab.router = Some(router);
        }
    }
    // Profiles must exist for every machine naming one.
    for m in &mut lab.machines {
        if m.profile.as_ref().is_some_and(|p| !lab.profiles.contains_key(p)) {
            m.profile = None;
        }
    }
    lab
}
