//! The `manual` backend through the real CLI with a scripted confirmation on stdin: a step counts
//! as done only when its wire check passes. Also the CLI's usage errors (exit 64).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_router-shim");

fn manual_config(dir: &Path) -> PathBuf {
    let path = dir.join("shim.toml");
    std::fs::write(
        &path,
        format!(
            "backend = \"manual\"\nlan_prefix = \"127.0.0.0/8\"\nstate_dir = \"{}/state\"\n\n[manual]\nwan_address = \"127.0.0.1\"\nprobe_interface = \"lo\"\nprobe_window = \"1s\"\nconnect_timeout = \"2s\"\n",
            dir.display()
        ),
    )
    .unwrap();
    path
}

fn cli(config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    eprintln!(
        "{args:?} -> {:?}\n{}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn forwards(config: &Path) -> Vec<serde_json::Value> {
    let output = cli(config, &["forward", "list", "--output", "json"], "");
    serde_json::from_slice(&output.stdout).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn manual_forward_counts_only_when_the_wire_check_passes() {
    let dir = tempfile::tempdir().unwrap();
    let config = manual_config(dir.path());

    // The person says yes, but nothing answers on the WAN port: not done, nothing recorded.
    let closed = free_port().to_string();
    let add =
        ["forward", "add", "--name", "web", "--proto", "tcp", "--external-port", &closed, "--to", "127.0.0.2:8080"];
    let output = cli(&config, &add, "yes\n");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Transmission > NAT > Virtual Servers"), "{stderr}");
    assert!(stderr.contains(&format!("External Port: {closed}")), "{stderr}");
    assert!(stderr.contains("Internal Server IP: 127.0.0.2"), "{stderr}");
    assert!(stderr.contains("no TCP connection to 127.0.0.1"), "{stderr}");
    assert!(forwards(&config).is_empty());

    // A listener stands for the forwarded service: the wire check passes, the step is done.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().port().to_string();
    let add = ["forward", "add", "--name", "web", "--proto", "tcp", "--external-port", &open, "--to", "127.0.0.2:8080"];
    let output = cli(&config, &add, "no\n");
    assert_eq!(output.status.code(), Some(1), "not confirmed by the person");
    assert!(forwards(&config).is_empty());
    let output = cli(&config, &add, "yes\n");
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("changed"));
    let listed = forwards(&config);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["external_port"].as_u64().unwrap().to_string(), open);

    // Same forward again: nothing to do, no question asked.
    let output = cli(&config, &add, "");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("unchanged"));

    // Removal is done only when the port stops answering.
    let output = cli(&config, &["forward", "remove", "--name", "web"], "yes\n");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("still accepts TCP connections"));
    drop(listener);
    let output = cli(&config, &["forward", "remove", "--name", "web"], "yes\n");
    assert_eq!(output.status.code(), Some(0));
    assert!(forwards(&config).is_empty());
}

#[test]
fn manual_dhcp_off_is_proven_by_the_probe() {
    // The DHCP probe binds port 68.
    metalfleet_skip::require!(metalfleet_skip::root());
    let dir = tempfile::tempdir().unwrap();
    let config = manual_config(dir.path());
    // Nobody serves DHCP on loopback, so the probe proves "off" once the person confirms.
    let output = cli(&config, &["dhcp", "disable"], "yes\n");
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stderr).contains("Network > LAN > DHCP Server"));
    let output = cli(&config, &["state", "--output", "json"], "");
    let state: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(state["dhcp_enabled"], false);
    // Switching it on cannot be proven here (nobody answers): not done.
    let output = cli(&config, &["dhcp", "enable"], "yes\n");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not confirm DHCP on"));
}

#[test]
fn usage_errors_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "backend = \"cisco\"\nlan_prefix = \"10.0.0.0/8\"\nstate_dir = \"/tmp/x\"\n").unwrap();
    let output = cli(&config, &["state"], "");
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown backend \"cisco\""));

    std::fs::write(&config, "backend = \"manual\"\nlan_prefix = \"10.0.0.0/8\"\nstate_dir = \"/tmp/x\"\nlisten = 1\n")
        .unwrap();
    let output = cli(&config, &["state"], "");
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad.toml:4:1: key `listen`"));

    let output = cli(&dir.path().join("missing.toml"), &["state"], "");
    assert_eq!(output.status.code(), Some(64));

    let config = manual_config(dir.path());
    let add = ["forward", "add", "--name", "x", "--proto", "sctp", "--external-port", "1", "--to", "127.0.0.2:1"];
    let output = cli(&config, &add, "");
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("use tcp or udp"));
    let output = cli(&config, &["probe-dhcp", "--interface", "lo", "--window", "1s", "--expect", "bogus"], "");
    assert_eq!(output.status.code(), Some(64), "checked before any packet is sent");
}
