//! Every MAAS response document the client models parses into its types: the project's own fixtures (always)
//! and the captured real responses in ../shared/fixtures/maas/ (when that folder exists).

use std::path::{Path, PathBuf};

use maas_client::*;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn parse<T: DeserializeOwned>(what: &str, value: &Value) -> T {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Parses `value` as the client type named by `kind` and checks the fields that identify it. Returns false when
/// the client does not model this document.
fn check(kind: &str, what: &str, value: &Value) -> bool {
    match kind {
        "machine" => check_machine(&parse::<Machine>(what, value), what),
        "machines" => parse::<Vec<Machine>>(what, value).iter().for_each(|m| check_machine(m, what)),
        "subnet" => assert!(!parse::<Subnet>(what, value).cidr.is_empty(), "{what}: subnet without cidr"),
        "subnets" => assert!(parse::<Vec<Subnet>>(what, value).iter().all(|s| !s.cidr.is_empty()), "{what}"),
        "vlan" => assert!(parse::<Vlan>(what, value).id > 0, "{what}: vlan without id"),
        "vlans" => assert!(parse::<Vec<Vlan>>(what, value).iter().all(|v| v.id > 0), "{what}"),
        "fabric" => assert!(!parse::<Fabric>(what, value).name.is_empty(), "{what}"),
        "fabrics" => assert!(parse::<Vec<Fabric>>(what, value).iter().all(|f| !f.name.is_empty()), "{what}"),
        "rack_controller" => assert!(!parse::<RackController>(what, value).system_id.is_empty(), "{what}"),
        "rack_controllers" => {
            let racks = parse::<Vec<RackController>>(what, value);
            assert!(racks.iter().all(|r| !r.system_id.is_empty()), "{what}");
            for s in racks.iter().flat_map(|r| &r.service_set) {
                assert!(!matches!(s.status, ServiceStatus::Other(_)), "{what}: service status {:?}", s.status);
            }
        }
        "rack_boot_images" => assert!(!parse::<RackBootImages>(what, value).images.is_empty(), "{what}"),
        "ip_range" => check_range(&parse::<IpRange>(what, value), what),
        "ip_ranges" => parse::<Vec<IpRange>>(what, value).iter().for_each(|r| check_range(r, what)),
        "reserved_ranges" => assert!(parse::<Vec<ReservedRange>>(what, value).iter().all(|r| !r.start.is_empty())),
        "unreserved_ranges" => {
            assert!(parse::<Vec<UnreservedRange>>(what, value).iter().all(|r| r.num_addresses > 0), "{what}")
        }
        "subnet_statistics" => assert!(parse::<SubnetStatistics>(what, value).total_addresses > 0, "{what}"),
        "boot_source" => assert!(!parse::<BootSource>(what, value).url.is_empty(), "{what}"),
        "boot_sources" => assert!(parse::<Vec<BootSource>>(what, value).iter().all(|s| !s.url.is_empty())),
        "selection" => assert!(!parse::<BootSourceSelection>(what, value).release.is_empty(), "{what}"),
        "selections" => {
            assert!(parse::<Vec<BootSourceSelection>>(what, value).iter().all(|s| !s.release.is_empty()), "{what}")
        }
        "boot_resource" => assert!(!parse::<BootResource>(what, value).name.is_empty(), "{what}"),
        "boot_resources" => assert!(parse::<Vec<BootResource>>(what, value).iter().all(|r| !r.name.is_empty())),
        "ssh_key" => assert!(parse::<SshKey>(what, value).key.starts_with("ssh-"), "{what}"),
        "ssh_keys" => assert!(parse::<Vec<SshKey>>(what, value).iter().all(|k| k.key.starts_with("ssh-"))),
        "event_page" => {
            let page = parse::<EventPage>(what, value);
            assert!(!page.events.is_empty() && page.events.iter().all(|e| e.id > 0), "{what}");
            assert!(page.events.iter().all(|e| !matches!(e.level, EventLevel::Other(_))), "{what}");
        }
        "script_sets" => {
            let sets = parse::<Vec<ScriptSet>>(what, value);
            assert!(sets.iter().all(|s| !s.system_id.is_empty() && !s.results.is_empty()), "{what}");
        }
        "devices" => assert!(parse::<Vec<Device>>(what, value).iter().all(|d| !d.system_id.is_empty()), "{what}"),
        "user" => assert!(!parse::<User>(what, value).username.is_empty(), "{what}"),
        "users" => assert!(parse::<Vec<User>>(what, value).iter().all(|u| !u.username.is_empty()), "{what}"),
        "version" => assert!(!parse::<Version>(what, value).version.is_empty(), "{what}"),
        _ => return false,
    }
    true
}

fn check_machine(m: &Machine, what: &str) {
    assert!(!m.system_id.is_empty(), "{what}: machine without system_id");
    assert!(!matches!(m.status, NodeStatus::Unknown(_)), "{what}: status {:?}", m.status);
    assert!(!matches!(m.power_state, PowerState::Other(_)), "{what}: power_state {:?}", m.power_state);
    if !m.status_name.is_empty() {
        assert_eq!(m.status.label(), m.status_name, "{what}: label of {:?}", m.status);
    }
}

fn check_range(r: &IpRange, what: &str) {
    assert!(!r.start_ip.is_empty(), "{what}");
    assert!(!matches!(r.range_type, IpRangeType::Other(_)), "{what}: type {:?}", r.range_type);
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The project's own fixtures: file name -> client type.
const OWN: &[(&str, &str)] = &[
    ("machine.json", "machine"),
    ("machines-minimal.json", "machines"),
    ("subnets.json", "subnets"),
    ("fabrics.json", "fabrics"),
    ("rackcontrollers.json", "rack_controllers"),
    ("ipranges.json", "ip_ranges"),
    ("boot-resource.json", "boot_resource"),
    ("boot-sources.json", "boot_sources"),
    ("boot-source-selections.json", "selections"),
    ("events.json", "event_page"),
    ("sshkeys.json", "ssh_keys"),
    ("devices.json", "devices"),
    ("whoami.json", "user"),
    ("version.json", "version"),
    ("node-results.json", "script_sets"),
    ("subnet-statistics.json", "subnet_statistics"),
    ("subnet-reserved-ranges.json", "reserved_ranges"),
    ("subnet-unreserved-ranges.json", "unreserved_ranges"),
];

fn own_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/maas")
}

#[test]
fn own_fixtures_all_parse() {
    let dir = own_dir();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = OWN.iter().map(|(f, _)| (*f).to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "every fixture file is checked, and every checked file exists");
    for (file, kind) in OWN {
        assert!(check(kind, file, &load(&dir.join(file))), "{file}: kind {kind} not modelled");
    }
}

#[test]
fn own_fixtures_carry_the_details_the_coordinator_needs() {
    let m: Machine = serde_json::from_value(load(&own_dir().join("machine.json"))).unwrap();
    assert_eq!((m.status, m.power_state.clone()), (NodeStatus::Deploying, PowerState::On));
    assert_eq!(m.mac_addresses(), vec!["52:54:00:00:00:02".to_owned()]);
    let hw = m.hardware();
    assert_eq!(hw.memory_bytes, 16 * 1024 * 1024 * 1024);
    assert_eq!(hw.storage_bytes, 480_114_819_072);
    assert_eq!(hw.disks.iter().map(|d| d.size).sum::<u64>(), 480_114_819_072);
    assert_eq!(m.interface_set[0].vlan.as_ref().unwrap().primary_rack.as_deref(), Some("pd4hn6"));

    let racks: Vec<RackController> = serde_json::from_value(load(&own_dir().join("rackcontrollers.json"))).unwrap();
    let unhealthy: Vec<&str> = racks[0].unhealthy_services().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(unhealthy, vec!["tftp"]);
    assert!(racks[0].is_on_vlan(5001));

    let fabrics: Vec<Fabric> = serde_json::from_value(load(&own_dir().join("fabrics.json"))).unwrap();
    assert_eq!(fabrics[0].vlans[0].external_dhcp.as_deref(), Some("172.16.0.1"));

    let res: BootResource = serde_json::from_value(load(&own_dir().join("boot-resource.json"))).unwrap();
    assert!(res.is_synced());
    assert_eq!(res.progress(), Some(100.0));

    let keys: Vec<SshKey> = serde_json::from_value(load(&own_dir().join("sshkeys.json"))).unwrap();
    assert_eq!(keys[1].keysource, "", "a null keysource (older MAAS) reads as empty");

    let machines: Vec<Machine> = serde_json::from_value(load(&own_dir().join("machines-minimal.json"))).unwrap();
    assert_eq!(machines[1].status, NodeStatus::FailedReleasing);
    assert_eq!(machines[1].power_state, PowerState::Error);
}

/// What each captured file (or each example inside an apidoc examples file) is.
fn shared_kind(file: &str, key: Option<&str>) -> Option<&'static str> {
    Some(match (file, key) {
        ("gomaasclient-boot_resource.json", None) => "boot_resource",
        ("gomaasclient-boot_resources.json", None) => "boot_resources",
        ("gomaasclient-machine.json", None) => "machine",
        ("gomaasclient-node_results.json", None) => "script_sets",
        ("gomaasclient-rack_controllers.json", None) => "rack_controllers",
        ("gomaasclient-subnet-op-reserved_ip_ranges.json", None) => "reserved_ranges",
        ("gomaasclient-subnet-op-statistics.json", None) => "subnet_statistics",
        ("gomaasclient-subnet-op-unreserved_ip_ranges.json", None) => "unreserved_ranges",
        ("gomaasclient-subnet.json", None) => "subnet",
        ("gomaasclient-subnets.json", None) => "subnets",
        ("gomaasclient-vlan.json", None) => "vlan",
        ("gomaasclient-vlans.json", None) => "vlans",
        ("maas-apidoc-examples-account.json", Some("ssh-keys-list" | "ssh-keys-import")) => "ssh_keys",
        ("maas-apidoc-examples-account.json", Some("ssh-keys-create" | "ssh-keys-get")) => "ssh_key",
        ("maas-apidoc-examples-boot-resources.json", Some("boot-res-read")) => "boot_resources",
        ("maas-apidoc-examples-boot-resources.json", Some(_)) => "boot_resource",
        ("maas-apidoc-examples-boot-sources.json", Some("boot-sources-read")) => "boot_sources",
        ("maas-apidoc-examples-boot-sources.json", Some(k)) if k.starts_with("boot-sources-") => "boot_source",
        ("maas-apidoc-examples-boot-sources.json", Some(_)) => "selection",
        ("maas-apidoc-examples-events.json", Some(_)) => "event_page",
        ("maas-apidoc-examples-fabrics.json", Some("vlan-list")) => "vlans",
        ("maas-apidoc-examples-fabrics.json", Some(k)) if k.starts_with("vlan-") => "vlan",
        ("maas-apidoc-examples-fabrics.json", Some("fabrics-read")) => "fabrics",
        ("maas-apidoc-examples-fabrics.json", Some(_)) => "fabric",
        ("maas-apidoc-examples-ipranges.json", Some("ipranges-read")) => "ip_ranges",
        ("maas-apidoc-examples-ipranges.json", Some(_)) => "ip_range",
        ("maas-apidoc-examples-machines.json", Some("machines-placeholder")) => return None,
        ("maas-apidoc-examples-machines.json", Some(_)) => "machine",
        ("maas-apidoc-examples-rackcontrollers.json", Some("read-all")) => "rack_controllers",
        ("maas-apidoc-examples-rackcontrollers.json", Some("list-boot-images")) => "rack_boot_images",
        ("maas-apidoc-examples-rackcontrollers.json", Some("update")) => "rack_controller",
        ("maas-apidoc-examples-subnets.json", Some("subnets-read")) => "subnets",
        ("maas-apidoc-examples-subnets.json", Some("subnets-create" | "subnets-read-by-id" | "subnets-update")) => {
            "subnet"
        }
        ("maas-apidoc-examples-subnets.json", Some("subnets-reserved-ips")) => "reserved_ranges",
        ("maas-apidoc-examples-subnets.json", Some("subnets-unreserved-ips")) => "unreserved_ranges",
        ("maas-apidoc-examples-subnets.json", Some("subnets-statistics")) => "subnet_statistics",
        ("maas-apidoc-examples-users.json", Some("list")) => "users",
        ("maas-apidoc-examples-users.json", Some(_)) => "user",
        ("maas-apidoc-examples-version.json", Some(_)) => "version",
        _ => return None,
    })
}

#[test]
fn shared_captured_fixtures_parse_when_present() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/maas");
    // The captured fixtures live beside the repository, not in it: CI has them, a clone elsewhere may not.
    metalfleet_skip::require!(metalfleet_skip::dir(&dir, "the captured MAAS fixtures"));
    let mut checked = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let value = load(path);
        if file.starts_with("maas-apidoc-examples-") {
            let Value::Object(examples) = &value else { panic!("{file}: expected an object of examples") };
            for (key, example) in examples {
                if let Some(kind) = shared_kind(&file, Some(key)) {
                    assert!(check(kind, &format!("{file}#{key}"), example));
                    checked += 1;
                }
            }
        } else if let Some(kind) = shared_kind(&file, None) {
            assert!(check(kind, &file, &value));
            checked += 1;
        }
    }
    assert!(checked >= 60, "only {checked} captured documents were checked");
}
