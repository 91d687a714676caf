//! `agent inventory --output json` (the built binary) against what this host's own tools say.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

fn inventory() -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["inventory", "--output", "json"])
        .env_remove("METALFLEET_HIDE_DISKS")
        .output()
        .expect("the agent binary runs");
    assert!(output.status.success(), "agent inventory failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("stdout is JSON alone")
}

/// Runs a host tool and returns its stdout, or `None` when the tool is not installed.
fn tool(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    assert!(output.status.success(), "{program} {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    Some(String::from_utf8(output.stdout).unwrap())
}

/// lsblk prints numbers and booleans as JSON values in new versions and as strings in old ones.
fn as_u64(value: &Value) -> u64 {
    value.as_u64().or_else(|| value.as_str().and_then(|s| s.parse().ok())).unwrap_or(0)
}

fn as_bool(value: &Value) -> bool {
    value.as_bool().unwrap_or_else(|| value.as_str() == Some("1"))
}

#[test]
fn logical_cpus_match_nproc() {
    let nproc: u64 = tool("nproc", &[]).expect("nproc is installed").trim().parse().unwrap();
    assert_eq!(inventory()["logical_cpus"].as_u64(), Some(nproc));
}

#[test]
fn memory_is_within_one_percent_of_memtotal() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemTotal in /proc/meminfo");
    let expected = kib as f64 * 1024.0;
    let reported = inventory()["memory_total_bytes"].as_u64().unwrap() as f64;
    assert!((reported - expected).abs() <= expected * 0.01, "reported {reported}, MemTotal {expected}");
}

#[test]
fn every_real_disk_of_lsblk_is_present_with_its_size() {
    let Some(text) = tool("lsblk", &["-b", "-d", "-J", "-o", "NAME,SIZE,TYPE,RM"]) else {
        panic!("lsblk is not installed (Debian package util-linux)");
    };
    let lsblk: Value = serde_json::from_str(&text).unwrap();
    let inventory = inventory();
    let disks = inventory["disks"].as_array().unwrap();
    let mut checked = 0;
    for device in lsblk["blockdevices"].as_array().unwrap() {
        let name = device["name"].as_str().unwrap();
        let virtual_device = ["loop", "zram", "ram", "nbd"].iter().any(|p| name.starts_with(p));
        if device["type"].as_str() != Some("disk") || as_bool(&device["rm"]) || virtual_device {
            continue;
        }
        let found =
            disks.iter().find(|d| d["name"] == name).unwrap_or_else(|| panic!("disk {name} missing: {disks:?}"));
        assert_eq!(found["size_bytes"].as_u64(), Some(as_u64(&device["size"])), "size of {name}");
        checked += 1;
    }
    // Nothing else may sneak in either: the inventory lists exactly lsblk's real disks.
    assert_eq!(disks.len(), checked, "inventory disks {disks:?}");
}

/// `ip -j link`'s interfaces with a 6-byte MAC other than all zeros, as the inventory lists them: name → MAC.
fn ip_link_macs() -> BTreeMap<String, String> {
    let Some(text) = tool("ip", &["-j", "link"]) else {
        panic!("ip is not installed (Debian package iproute2)");
    };
    let links: Value = serde_json::from_str(&text).unwrap();
    links
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|link| {
            let mac = link["address"].as_str()?.to_lowercase();
            let six_bytes = mac.split(':').count() == 6;
            (six_bytes && mac != "00:00:00:00:00:00").then(|| (link["ifname"].as_str().unwrap().to_owned(), mac))
        })
        .collect()
}

/// Exactly `ip -j link`'s interfaces with a MAC, on any host: with no NIC but `lo`, the inventory lists none.
#[test]
fn interfaces_are_exactly_those_of_ip_link_with_a_mac() {
    // Other tests add and move veths at the same time: compare only while `ip link` stays the same around
    // the inventory.
    for _ in 0..10 {
        let before = ip_link_macs();
        let inventory = inventory();
        if ip_link_macs() != before {
            continue;
        }
        let interfaces: BTreeMap<String, String> = inventory["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["name"].as_str().unwrap().to_owned(), i["mac"].as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(interfaces, before, "inventory interfaces vs ip -j link");
        return;
    }
    panic!("ip link kept changing around ten inventories");
}

#[test]
fn hidden_disks_are_left_out() {
    let all = inventory();
    let disks = all["disks"].as_array().unwrap();
    // On a host without disks, hide a name that does not exist: the (empty) list must not change then.
    let target = disks.first().and_then(|d| d["name"].as_str()).unwrap_or("no-such-disk");
    let output = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["inventory", "--output", "json"])
        .env("METALFLEET_HIDE_DISKS", target)
        .output()
        .unwrap();
    assert!(output.status.success());
    let hidden: Value = serde_json::from_slice(&output.stdout).unwrap();
    let remaining = hidden["disks"].as_array().unwrap();
    let expected: Vec<&Value> = disks.iter().filter(|d| d["name"] != target).collect();
    assert_eq!(remaining.iter().collect::<Vec<_>>(), expected, "every disk but {target}");
}

#[test]
fn table_output_is_the_default() {
    let output = Command::new(env!("CARGO_BIN_EXE_agent")).arg("inventory").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("CPU "), "{text}");
    assert!(text.contains("INTERFACE"));
}

#[test]
fn bad_config_exits_64_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "coordinator = \"127.0.0.1:1\"\ninsecure = true\nintervall = \"5s\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["run", "--config"])
        .arg(&path)
        .args(["--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("{}:3:1: key `intervall`", path.display())), "{stderr}");
    assert!(output.stdout.is_empty());
}
