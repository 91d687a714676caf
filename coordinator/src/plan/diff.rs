//! Desired (the plan file) against live (MAAS and the router): the ordered steps of a plan.
//!
//! The order IS the safety rule, so it lives here and nowhere else: router DHCP off, then a probe that must see no
//! DHCP server, then ranges, subnet DNS, MAAS DHCP on, a probe that must see only MAAS, DNS forwarder, images,
//! SSH keys, kernel options, machines (created, then waited for until Ready), devices, router forwards last.

use std::collections::BTreeSet;

use router_shim_api::model::{PortForward, Protocol};

use super::file::{LabFile, RangeType};
use super::live::Live;
use super::{Action, Plan, PlanError, PlanStep};
use crate::maas::{self, IpRangeType, NewBootSourceSelection, NewIpRange, NewMachine, NodeStatus};

/// What `apply` does for one step. Every op is idempotent: running it again after a partial apply is safe.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    RouterDhcpOff,
    /// Probe on MAIN's interface; any offer stops the apply.
    ProveNoDhcp {
        interface: String,
    },
    CreateRange(NewIpRange),
    DeleteRange {
        id: i64,
    },
    SubnetDns {
        subnet: i64,
        servers: Vec<String>,
    },
    MaasDhcpOn {
        fabric_id: i64,
        vid: u16,
        rack: String,
    },
    /// Probe after MAAS DHCP is on; an offer from any server other than `maas_ip` stops the apply.
    ProveOnlyMaas {
        interface: String,
        maas_ip: Option<String>,
    },
    UpstreamDns(Vec<String>),
    Dnssec(String),
    CreateSelection {
        source: i64,
        selection: NewBootSourceSelection,
    },
    SelectionArches {
        source: i64,
        selection: i64,
        arches: Vec<String>,
    },
    /// Start the import and wait until each `os/release` + arch is synced.
    ImportImages {
        images: Vec<(String, String)>,
    },
    CreateSshKey(String),
    DeleteSshKey {
        id: i64,
    },
    KernelOpts(String),
    CreateMachine(NewMachine),
    Commission {
        system_id: String,
    },
    /// Wait until every named machine is Ready (or further along).
    WaitReady {
        hostnames: Vec<String>,
    },
    CreateDevice {
        hostname: String,
        mac: String,
    },
    Forward(PortForward),
    RemoveForward {
        name: String,
    },
    RemoteManagement {
        enabled: bool,
        from: Vec<String>,
    },
    // Destroy only.
    Release {
        system_id: String,
    },
    MaasDhcpOff {
        fabric_id: i64,
        vid: u16,
    },
    /// The shim removes what it created and gives the router its DHCP back.
    RouterReset,
}

fn step(action: Action, kind: &str, summary: String, op: Option<Op>) -> PlanStep {
    PlanStep { action, kind: kind.to_string(), summary, op }
}

fn unchanged(kind: &str, summary: String) -> PlanStep {
    step(Action::Unchanged, kind, summary, None)
}

/// The key part of an SSH public key (type and base64), so comments do not matter.
pub fn key_identity(key: &str) -> String {
    key.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

fn ip_range_type(t: RangeType) -> IpRangeType {
    match t {
        RangeType::Dynamic => IpRangeType::Dynamic,
        RangeType::Reserved => IpRangeType::Reserved,
    }
}

/// True when `resource` is `os/release` for `arch` and has a complete set.
fn synced(live: &Live, os: &str, release: &str, arch: &str) -> bool {
    let name = format!("{os}/{release}");
    live.resources.iter().any(|r| r.name == name && r.architecture.split('/').next() == Some(arch) && r.is_synced())
}

/// One phase of the lab's safe order: what it plans, and why it comes where it does.
pub struct Phase {
    pub name: &'static str,
    pub why: &'static str,
    plan: fn(&Inputs<'_>) -> Result<Vec<PlanStep>, PlanError>,
}

/// The lab's safe order, the one place that states it: [`plan`] runs these phases in this order, and `apply`
/// runs the steps in the order the plan lists them.
pub const SAFE_ORDER: &[Phase] = &[
    Phase {
        name: "router_dhcp",
        why: "the router's DHCP goes off, and a probe from MAIN must see no DHCP server, before MAAS DHCP may come \
              on: two DHCP servers on one segment hand out conflicting leases and PXE boots fail",
        plan: router_dhcp,
    },
    Phase {
        name: "subnet",
        why: "ranges and subnet DNS before MAAS DHCP (MAAS serves DHCP only from a dynamic range), then a probe that \
              must see only MAAS answer",
        plan: subnet,
    },
    Phase {
        name: "dns",
        why: "the DNS forwarder before images: the region resolves the image mirror through it",
        plan: dns,
    },
    Phase {
        name: "images",
        why: "images synced before machines: commissioning boots the ephemeral image",
        plan: images,
    },
    Phase { name: "ssh_keys", why: "SSH keys before machines: commissioning and deploys inject them", plan: ssh_keys },
    Phase {
        name: "kernel_opts",
        why: "kernel options before machines: the first commissioning boot already uses them",
        plan: kernel_opts,
    },
    Phase {
        name: "machines",
        why: "machines when DHCP, images and keys are in place: created, commissioned, then waited for until Ready",
        plan: machines,
    },
    Phase { name: "devices", why: "devices (the router itself, say) once the subnet is served", plan: devices },
    Phase {
        name: "router_access",
        why: "forwards and remote management last: MAIN is exposed from the WAN only once the lab is set up",
        plan: router_access,
    },
];

/// What every phase reads: the plan file, the live state, and what is derived from them once.
struct Inputs<'a> {
    desired: &'a LabFile,
    live: &'a Live,
    prune: bool,
    router: Option<&'a super::file::RouterPlan>,
    probe_interface: Option<String>,
    subnet_plan: Option<&'a super::file::SubnetPlan>,
    subnet: Option<&'a maas::Subnet>,
    vlan: Option<maas::Vlan>,
    /// MAAS DHCP is wanted on the plan's subnet and is not on yet.
    maas_dhcp_needed: bool,
}

/// Computes the plan: each phase of [`SAFE_ORDER`] in turn. `prune` adds deletions of ranges (on the plan's
/// subnet), SSH keys and forwards the plan does not mention; everything else the plan does not mention is left alone.
///
/// # Errors
/// The plan names a subnet MAAS does not know, or asks for DHCP where no rack controller is.
pub fn plan(desired: &LabFile, live: &Live, prune: bool) -> Result<Plan, PlanError> {
    let router = desired.router.as_ref();
    let probe_interface = router.and_then(|r| r.probe_interface.clone());
    let subnet_plan = desired.subnet.as_ref();
    let subnet = match subnet_plan {
        Some(s) => Some(live.subnet(&s.cidr).ok_or_else(|| PlanError::NoSubnet { cidr: s.cidr.clone() })?),
        None => None,
    };
    let vlan = subnet.and_then(|s| s.vlan.clone());
    let maas_dhcp_needed = subnet_plan.is_some_and(|s| s.dhcp) && !vlan.as_ref().is_some_and(|v| v.dhcp_on);
    let input = Inputs { desired, live, prune, router, probe_interface, subnet_plan, subnet, vlan, maas_dhcp_needed };
    let mut steps = Vec::new();
    for phase in SAFE_ORDER {
        steps.extend((phase.plan)(&input)?);
    }
    Ok(Plan { steps })
}

fn router_dhcp(input: &Inputs<'_>) -> Result<Vec<PlanStep>, PlanError> {
    let &Inputs { live, router, ref probe_interface, maas_dhcp_needed, .. } = input;
    let mut steps = Vec::new();
    if let (Some(router), Some(state)) = (router, &live.router) {
        if !router.dhcp && state.dhcp_enabled {
            steps.push(step(
                Action::Update,
                "router_dhcp",
                format!("switch the router's DHCP off (shim {}, backend {})", router.shim, state.backend),
                Some(Op::RouterDhcpOff),
            ));
        } else {
            steps.push(unchanged(
                "router_dhcp",
                format!("router DHCP {}", if state.dhcp_enabled { "on" } else { "off" }),
            ));
        }
    }
    if maas_dhcp_needed && let Some(interface) = &probe_interface {
        steps.push(step(
            Action::Check,
            "dhcp_probe",
            format!("prove on {interface} that no DHCP server answers before MAAS DHCP is switched on"),
            Some(Op::ProveNoDhcp { interface: interface.clone() }),
        ));
    }
    Ok(steps)
}

fn subnet(input: &Inputs<'_>) -> Result<Vec<PlanStep>, PlanError> {
    let &Inputs { live, prune, ref probe_interface, subnet_plan, subnet, ref vlan, .. } = input;
    let mut steps = Vec::new();
    if let (Some(plan), Some(subnet)) = (subnet_plan, subnet) {
        let on_subnet: Vec<&maas::IpRange> = live
            .ip_ranges
            .iter()
            .filter(|r| {
                r.subnet
                    .as_ref()
                    .map(|s| s.id == subnet.id)
                    .unwrap_or_else(|| super::cidr_contains(&plan.cidr, &r.start_ip))
            })
            .collect();
        let mut wanted = BTreeSet::new();
        for range in &plan.ranges {
            let (start, end) = (range.start.to_string(), range.end.to_string());
            let found = on_subnet
                .iter()
                .find(|r| r.start_ip == start && r.end_ip == end && r.range_type.as_str() == range.range_type.as_str());
            match found {
                Some(r) => {
                    wanted.insert(r.id);
                    steps
                        .push(unchanged("ip_range", format!("ip range {start}-{end} ({})", range.range_type.as_str())));
                }
                None => steps.push(step(
                    Action::Create,
                    "ip_range",
                    format!("create ip range {start}-{end} ({}) \"{}\"", range.range_type.as_str(), range.comment),
                    Some(Op::CreateRange(NewIpRange {
                        range_type: ip_range_type(range.range_type),
                        start_ip: start,
                        end_ip: end,
                        subnet: Some(subnet.id),
                        comment: Some(range.comment.clone()).filter(|c| !c.is_empty()),
                    })),
                )),
            }
        }
        if prune {
            for r in on_subnet.iter().filter(|r| !wanted.contains(&r.id)) {
                steps.push(step(
                    Action::Delete,
                    "ip_range",
                    format!("delete ip range {}-{} ({}) not in the plan", r.start_ip, r.end_ip, r.range_type.as_str()),
                    Some(Op::DeleteRange { id: r.id }),
                ));
            }
        }
        if let Some(servers) = &plan.dns_servers {
            if &subnet.dns_servers != servers {
                steps.push(step(
                    Action::Update,
                    "subnet_dns",
                    format!(
                        "set subnet {} dns_servers: {:?} -> {:?}",
                        plan.cidr,
                        subnet.dns_servers.join(" "),
                        servers.join(" ")
                    ),
                    Some(Op::SubnetDns { subnet: subnet.id, servers: servers.clone() }),
                ));
            } else {
                steps.push(unchanged("subnet_dns", format!("subnet {} dns_servers {}", plan.cidr, servers.join(" "))));
            }
        }
        if plan.dhcp {
            let vlan = vlan.clone().ok_or_else(|| PlanError::NoRack { cidr: plan.cidr.clone() })?;
            let (rack, rack_ip) =
                live.rack_on(vlan.id, &plan.cidr).ok_or_else(|| PlanError::NoRack { cidr: plan.cidr.clone() })?;
            let where_ = format!("VLAN {}/{} (primary rack {})", vlan.fabric, vlan.name, rack.hostname);
            if vlan.dhcp_on {
                steps.push(unchanged("maas_dhcp", format!("MAAS DHCP on {where_}")));
            } else {
                steps.push(step(
                    Action::Update,
                    "maas_dhcp",
                    format!("switch MAAS DHCP on for {where_}"),
                    Some(Op::MaasDhcpOn { fabric_id: vlan.fabric_id, vid: vlan.vid, rack: rack.system_id.clone() }),
                ));
                if let Some(interface) = &probe_interface {
                    steps.push(step(
                        Action::Check,
                        "dhcp_probe",
                        format!(
                            "prove on {interface} that only MAAS ({}) answers DHCP",
                            rack_ip.clone().unwrap_or_else(|| "the rack".into())
                        ),
                        Some(Op::ProveOnlyMaas { interface: interface.clone(), maas_ip: rack_ip }),
                    ));
                }
            }
        }
    }
    Ok(steps)
}

fn dns(input: &Inputs<'_>) -> Result<Vec<PlanStep>, PlanError> {
    let &Inputs { desired, live, .. } = input;
    let mut steps = Vec::new();
    if let Some(servers) = &desired.maas.upstream_dns {
        if &live.upstream_dns != servers {
            steps.push(step(
                Action::Update,
                "upstream_dns",
                format!("set upstream_dns: {:?} -> {:?}", live.upstream_dns.join(" "), servers.join(" ")),
                Some(Op::UpstreamDns(servers.clone())),
            ));
        } else {
            steps.push(unchanged("upstream_dns", format!("upstream_dns {}", servers.join(" "))));
        }
    }
    if let Some(dnssec) = &desired.maas.dnssec_validation {
        if &live.dnssec_validation != dnssec {
            steps.push(step(
                Action::Update,
                "dnssec_validation",
                format!("set dnssec_validation: {:?} -> {dnssec:?}", live.dnssec_validation),
                Some(Op::Dnssec(dnssec.clone())),
            ));
        } else {
            steps.push(unchanged("dnssec_validation", format!("dnssec_validation {dnssec}")));
        }
    }
    Ok(steps)
}

fn images(input: &Inputs<'_>) -> Result<Vec<PlanStep>, PlanError> {
    let &Inputs { desired, live, .. } = input;
    let mut steps = Vec::new();
    if !desired.images.is_empty() {
        let source = live.boot_source_id;
        let mut to_sync = Vec::new();
        for image in &desired.images {
            let name = format!("{}/{}", image.os, image.release);
            let selection = live.selections.iter().find(|s| s.os == image.os && s.release == image.release);
            match (selection, source) {
                (None, Some(source)) => steps.push(step(
                    Action::Create,
                    "image_selection",
                    format!("select image {name} ({})", image.arches.join(", ")),
                    Some(Op::CreateSelection {
                        source,
                        selection: NewBootSourceSelection {
                            os: image.os.clone(),
                            release: image.release.clone(),
                            arches: image.arches.clone(),
                            subarches: Vec::new(),
                            labels: Vec::new(),
                        },
                    }),
                )),
                (Some(s), Some(source)) if !image.arches.iter().all(|a| s.arches.contains(a)) => {
                    let mut arches = s.arches.clone();
                    arches.extend(image.arches.iter().filter(|a| !s.arches.contains(a)).cloned());
                    steps.push(step(
                        Action::Update,
                        "image_selection",
                        format!("set image {name} arches: {:?} -> {:?}", s.arches.join(","), arches.join(",")),
                        Some(Op::SelectionArches { source, selection: s.id, arches }),
                    ));
                }
                (None, None) => {
                    return Err(PlanError::NoSubnet { cidr: "(no boot source in MAAS; add one first)".to_string() });
                }
                (Some(_), _) => steps.push(unchanged("image_selection", format!("image {name} selected"))),
            }
            for arch in &image.arches {
                if !synced(live, &image.os, &image.release, arch) {
                    to_sync.push((name.clone(), arch.clone()));
                }
            }
        }
        let all: Vec<String> = desired.images.iter().map(|i| format!("{}/{}", i.os, i.release)).collect();
        if to_sync.is_empty() {
            steps.push(unchanged("image_import", format!("images {} synced", all.join(", "))));
        } else {
            let names: Vec<String> = to_sync.iter().map(|(n, a)| format!("{n} {a}")).collect();
            steps.push(step(
                Action::Update,
                "image_import",
                format!("import boot images and wait until synced: {}", names.join(", ")),
                Some(Op::ImportImages { images: to_sync }),
            ));
        }
    }
    Ok(steps)
}

fn ssh_keys(input: &Inputs<'_>) -> Result<Vec<PlanStep>, PlanError> {
    let &Inputs { desired, live, prune, .. } = input;
    let mut steps = Vec::new();
    let live_keys: Vec<(i64, String)> = live.ssh_keys.iter().map(|k| (k.id, key_identity(&k.key))).collect();
    let mut wanted_keys = BTreeSet::new();
    for key in desired.ssh_keys.iter().filter_map(|k| k.key.as_deref()) {
        let identity = key_identity(key);
        let short = short_key(key);
        wanted_keys.insert(identity.clone());
        if live_keys.iter().any(|(_, k)| *k == identity) {
            steps.push(unchanged("ssh_key", format!("ssh key {short}")));
        } else {
            steps.push(step(
                Action::Create,
                "ssh_key",
                format!("create ssh key {short}"),
                Some(Op::CreateSshKey(key.to_string())),
            ));
        }
    }
    if prune {
        for (id, key) in live_keys.iter().filter(|(_, k)| !wanted_keys.contains(k)) {
            steps.push(step(
                Action::Delete,
                "ssh_key",
                format!("delete ssh key {} not in the plan", short_key(key)),
                Some(Op::DeleteSshKey { id: *id }),
            ));
        }
    }
    Ok(steps)
}

fn kernel_opts(input: &Inputs<'_>) -> Result<Vec<PlanStep>, PlanError> {
    let &Inputs { desired, live, .. } = input;
    let mut steps = Vec::new();
    if let Some(opts) = &desired.maas.kernel_opts {
        if &live.kernel_opts != opts {
            steps.push(step(
                Action::Update,
                "kernel_opts",
                format!("set kernel_opts: {:?} -> {opts:?}", live.kernel_opts),
                Some(Op::KernelOpts(opts.clone())),
            ));
        } else {
            steps.push(unchanged("kernel_opts", format!("kernel_opts {opts}")));
        }
    }
    Ok(steps)
}

fn machines(input: &Inputs<'_>) -> Result<Vec<PlanStep>, PlanError> {
    let &Inputs { desired, live, .. } = input;
    let mut steps = Vec::new();
    let mut wait = Vec::new();
    for machine in &desired.machines {
        let macs: Vec<String> = machine.macs.iter().map(|m| m.to_ascii_lowercase()).collect();
        let found = live.machines.iter().find(|m| {
            m.hostname == machine.hostname
                || m.interface_set.iter().any(|i| macs.contains(&i.mac_address.to_ascii_lowercase()))
                || m.boot_interface.as_ref().is_some_and(|i| macs.contains(&i.mac_address.to_ascii_lowercase()))
        });
        match found {
            None => {
                steps.push(step(
                    Action::Create,
                    "machine",
                    format!(
                        "create machine {} ({}, {}) and commission it",
                        machine.hostname,
                        machine.power_type,
                        macs.join(", ")
                    ),
                    Some(Op::CreateMachine(NewMachine {
                        architecture: machine.architecture.clone(),
                        mac_addresses: macs.clone(),
                        hostname: Some(machine.hostname.clone()),
                        description: None,
                        domain: None,
                        power_type: Some(machine.power_type.clone()),
                        power_parameters: machine.power_parameters.clone(),
                        commission: Some(true),
                    })),
                ));
                wait.push(machine.hostname.clone());
            }
            Some(m) if matches!(m.status, NodeStatus::New | NodeStatus::FailedCommissioning) => {
                steps.push(step(
                    Action::Update,
                    "machine",
                    format!("commission machine {} (now {})", machine.hostname, m.status.label()),
                    Some(Op::Commission { system_id: m.system_id.clone() }),
                ));
                wait.push(machine.hostname.clone());
            }
            Some(m) if m.status == NodeStatus::Commissioning => wait.push(machine.hostname.clone()),
            Some(m) => steps.push(unchanged("machine", format!("machine {} ({})", machine.hostname, m.status.label()))),
        }
    }
    if !wait.is_empty() {
        steps.push(step(
            Action::Check,
            "machine_ready",
            format!("wait until {} Ready", wait.join(", ")),
            Some(Op::WaitReady { hostnames: wait }),
        ));
    }
    Ok(steps)
}

fn devices(input: &Inputs<'_>) -> Result<Vec<PlanStep>, PlanError> {
    let &Inputs { desired, live, .. } = input;
    let mut steps = Vec::new();
    for device in &desired.devices {
        let mac = device.mac.to_ascii_lowercase();
        let found = live.devices.iter().any(|d| {
            d.hostname == device.hostname || d.interface_set.iter().any(|i| i.mac_address.eq_ignore_ascii_case(&mac))
        });
        if found {
            steps.push(unchanged("device", format!("device {} ({mac})", device.hostname)));
        } else {
            steps.push(step(
                Action::Create,
                "device",
                format!("create device {} ({mac})", device.hostname),
                Some(Op::CreateDevice { hostname: device.hostname.clone(), mac }),
            ));
        }
    }
    Ok(steps)
}

fn router_access(input: &Inputs<'_>) -> Result<Vec<PlanStep>, PlanError> {
    let &Inputs { live, prune, router, .. } = input;
    let mut steps = Vec::new();
    if let (Some(router), Some(state)) = (router, &live.router) {
        for forward in &router.forwards {
            let want = forward_of(forward);
            match state.forward(&forward.name) {
                Some(have) if have.same_rule(&want) => {
                    steps.push(unchanged("forward", describe_forward(&want)));
                }
                Some(have) => steps.push(step(
                    Action::Update,
                    "forward",
                    format!("change forward {} -> {}", describe_forward(have), describe_forward(&want)),
                    Some(Op::Forward(want)),
                )),
                None => steps.push(step(
                    Action::Create,
                    "forward",
                    format!("create forward {}", describe_forward(&want)),
                    Some(Op::Forward(want)),
                )),
            }
        }
        if prune {
            for have in state.forwards.iter().filter(|f| !router.forwards.iter().any(|p| p.name == f.name)) {
                steps.push(step(
                    Action::Delete,
                    "forward",
                    format!("delete forward {} not in the plan", describe_forward(have)),
                    Some(Op::RemoveForward { name: have.name.clone() }),
                ));
            }
        }
        if let Some(rm) = &router.remote_management {
            let live_from: Vec<String> = state.remote_management.allowed_from.iter().map(|n| n.to_string()).collect();
            if state.remote_management.enabled == rm.enabled && (!rm.enabled || live_from == rm.from) {
                steps.push(unchanged("remote_management", format!("remote management {}", onoff(rm.enabled))));
            } else {
                steps.push(step(
                    Action::Update,
                    "remote_management",
                    format!(
                        "set remote management: {} from {:?} -> {} from {:?}",
                        onoff(state.remote_management.enabled),
                        live_from.join(","),
                        onoff(rm.enabled),
                        rm.from.join(",")
                    ),
                    Some(Op::RemoteManagement { enabled: rm.enabled, from: rm.from.clone() }),
                ));
            }
        }
    }
    Ok(steps)
}

fn onoff(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

fn short_key(key: &str) -> String {
    let mut parts = key.split_whitespace();
    let kind = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("");
    let tail: String = body.chars().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect();
    let comment = parts.collect::<Vec<_>>().join(" ");
    format!("{kind} ...{tail} {comment}").trim_end().to_string()
}

/// The router model's forward for a plan entry.
pub fn forward_of(plan: &super::file::ForwardPlan) -> PortForward {
    PortForward {
        name: plan.name.clone(),
        protocol: if plan.proto == "udp" { Protocol::Udp } else { Protocol::Tcp },
        external_port: plan.external_port,
        target: plan.to,
        protected: plan.protected,
    }
}

fn describe_forward(f: &PortForward) -> String {
    format!(
        "{} {}/{} -> {}{}",
        f.name,
        f.protocol,
        f.external_port,
        f.target,
        if f.protected { " (protected)" } else { "" }
    )
}

#[cfg(test)]
mod tests;
