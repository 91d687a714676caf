//! The plan's rules, checked against hand-built live states.

use std::path::Path;

use router_shim_api::model::{RemoteManagement, RouterState};

use super::*;
use crate::plan::file::LabFile;

const LAB: &str = r#"
[maas]
upstream_dns = ["172.20.129.131"]
kernel_opts = "net.ifnames=0"
[[images]]
release = "jammy"
[[ssh_keys]]
key = "ssh-ed25519 AAAAC3Nza me@main"
[subnet]
cidr = "172.16.0.0/20"
dhcp = true
[[subnet.ranges]]
type = "dynamic"
start = "172.16.11.1"
end = "172.16.14.255"
comment = "reserved range (MAAS dynamic)"
[router]
shim = "http://127.0.0.1:1"
probe_interface = "lan0"
[[router.forwards]]
name = "ssh-main"
external_port = 22
to = "172.16.0.3:22"
protected = true
[[machines]]
hostname = "server1"
macs = ["52:54:00:00:00:01"]
power_type = "amt"
"#;

fn vlan(dhcp_on: bool) -> maas::Vlan {
    serde_json::from_value(serde_json::json!({"id": 5001, "vid": 0, "name": "untagged", "fabric": "fabric-0",
        "fabric_id": 0, "dhcp_on": dhcp_on}))
    .unwrap()
}

fn fresh_maas() -> Live {
    let subnet: maas::Subnet = serde_json::from_value(serde_json::json!({"id": 1, "cidr": "172.16.0.0/20"})).unwrap();
    let rack: maas::RackController = serde_json::from_value(serde_json::json!({"system_id": "rack01",
        "hostname": "main", "ip_addresses": ["172.16.0.3"]}))
    .unwrap();
    Live {
        subnets: vec![maas::Subnet { vlan: Some(vlan(false)), ..subnet }],
        racks: vec![rack],
        boot_source_id: Some(1),
        router: Some(RouterState {
            backend: "linux".into(),
            dhcp_enabled: true,
            dhcp_pool: String::new(),
            forwards: Vec::new(),
            remote_management: RemoteManagement::default(),
        }),
        ..Live::default()
    }
}

fn lab() -> LabFile {
    LabFile::parse(Path::new("lab.toml"), LAB).unwrap()
}

fn kinds(plan: &Plan) -> Vec<(&str, Action)> {
    plan.steps.iter().map(|s| (s.kind.as_str(), s.action)).collect()
}

#[test]
fn from_zero_the_order_is_the_safe_one() {
    let plan = plan(&lab(), &fresh_maas(), false).unwrap();
    let order: Vec<&str> =
        plan.steps.iter().filter(|s| s.action != Action::Unchanged).map(|s| s.kind.as_str()).collect();
    assert_eq!(
        order,
        [
            "router_dhcp",
            "dhcp_probe",
            "ip_range",
            "maas_dhcp",
            "dhcp_probe",
            "upstream_dns",
            "image_selection",
            "image_import",
            "ssh_key",
            "kernel_opts",
            "machine",
            "machine_ready",
            "forward"
        ]
    );
    let text: Vec<String> = plan.steps.iter().map(ToString::to_string).collect();
    assert!(
        text.contains(
            &"+ create ip range 172.16.11.1-172.16.14.255 (dynamic) \"reserved range (MAAS dynamic)\"".to_string()
        ),
        "{text:#?}"
    );
    assert!(text.contains(&"~ set upstream_dns: \"\" -> \"172.20.129.131\"".to_string()), "{text:#?}");
    // The probe that must see nobody comes after the router's DHCP is off and before MAAS DHCP is on.
    let probe = plan.steps.iter().position(|s| s.op == Some(Op::ProveNoDhcp { interface: "lan0".into() })).unwrap();
    let dhcp = plan.steps.iter().position(|s| s.kind == "maas_dhcp").unwrap();
    assert!(probe < dhcp);
    assert!(
        matches!(&plan.steps[dhcp + 1].op, Some(Op::ProveOnlyMaas { maas_ip: Some(ip), .. }) if ip == "172.16.0.3")
    );
}

#[test]
fn a_lab_as_planned_has_no_changes() {
    let mut live = fresh_maas();
    live.upstream_dns = vec!["172.20.129.131".into()];
    live.kernel_opts = "net.ifnames=0".into();
    live.subnets[0].vlan = Some(vlan(true));
    live.ip_ranges = vec![
        serde_json::from_value(serde_json::json!({"id": 7, "type": "dynamic",
        "start_ip": "172.16.11.1", "end_ip": "172.16.14.255", "subnet": {"id": 1, "cidr": "172.16.0.0/20"}}))
        .unwrap(),
    ];
    live.selections = vec![
        serde_json::from_value(serde_json::json!({"id": 1, "os": "ubuntu", "release": "jammy",
        "arches": ["amd64"]}))
        .unwrap(),
    ];
    live.resources = vec![
        serde_json::from_value(serde_json::json!({"id": 3, "name": "ubuntu/jammy",
        "architecture": "amd64/ga-22.04", "sets": {"20240101": {"complete": true}}}))
        .unwrap(),
    ];
    live.ssh_keys =
        vec![serde_json::from_value(serde_json::json!({"id": 1, "key": "ssh-ed25519 AAAAC3Nza other"})).unwrap()];
    live.machines = vec![
        serde_json::from_value(serde_json::json!({"system_id": "abc", "hostname": "server1",
        "status": 4}))
        .unwrap(),
    ];
    let router = live.router.as_mut().unwrap();
    router.dhcp_enabled = false;
    router.forwards = vec![forward_of(&lab().router.unwrap().forwards[0])];
    let plan = plan(&lab(), &live, true).unwrap();
    assert_eq!(plan.changes(), 0, "{:#?}", kinds(&plan));
    assert!(plan.steps.iter().all(|s| s.action == Action::Unchanged), "{:#?}", kinds(&plan));
}

#[test]
fn prune_lists_what_the_plan_does_not_mention() {
    let mut live = fresh_maas();
    live.ip_ranges = vec![
        serde_json::from_value(serde_json::json!({"id": 9, "type": "reserved",
        "start_ip": "172.16.0.10", "end_ip": "172.16.0.20", "subnet": {"id": 1}}))
        .unwrap(),
    ];
    live.ssh_keys = vec![serde_json::from_value(serde_json::json!({"id": 4, "key": "ssh-rsa BBBB old"})).unwrap()];
    let without = plan(&lab(), &live, false).unwrap();
    assert!(without.steps.iter().all(|s| s.action != Action::Delete));
    let with = plan(&lab(), &live, true).unwrap();
    let deletes: Vec<&str> =
        with.steps.iter().filter(|s| s.action == Action::Delete).map(|s| s.kind.as_str()).collect();
    assert_eq!(deletes, ["ip_range", "ssh_key"]);
}

#[test]
fn an_unknown_subnet_is_an_error() {
    let mut live = fresh_maas();
    live.subnets.clear();
    assert!(matches!(plan(&lab(), &live, false), Err(PlanError::NoSubnet { .. })));
}

#[test]
fn the_safe_order_is_one_table_with_a_reason_for_each_phase() {
    let names: Vec<&str> = super::SAFE_ORDER.iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        ["router_dhcp", "subnet", "dns", "images", "ssh_keys", "kernel_opts", "machines", "devices", "router_access"]
    );
    assert!(super::SAFE_ORDER.iter().all(|p| p.why.len() > 20), "every phase says why it is where it is");
}
