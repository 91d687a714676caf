//! Issue 7's first command: `scripts/demo`, run as a user would run it, ends with every machine deployed, healthy
//! and verified.
//!
//! As root the demo builds its lab in network namespaces (router with the Linux backend, MAIN, one namespace per
//! server whose veth carries the MAAS machine's MAC); without root it runs on loopback. Either way it writes
//! `fleetctl status --output json` and `fleetctl verify --output json` into its directory before it tears down,
//! and this test reads them. Its namespaces get a per-process prefix, removed again even if the script is killed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use metalfleet_tests::{bin, bin_dir, netns, run, stderr, stdout, workspace_root};
use serde_json::Value;

/// The demo takes well under a minute here; the margin is for a busy 2-core machine, and it ends before nextest's
/// own limit for this group (5 x 60 s) so that [`Leftovers`] still runs.
const DEMO_DEADLINE: Duration = Duration::from_secs(240);

/// The start of the demo's namespace names in this test (`mfd<pid>-`).
const PREFIX: &str = "mfd";

/// Removes what a killed demo run leaves behind: its processes (pid files) and namespaces.
struct Leftovers {
    dir: std::path::PathBuf,
    prefix: String,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let machines = self.dir.join("machines");
        let pid_files = [self.dir.clone()]
            .into_iter()
            .chain(std::fs::read_dir(&machines).into_iter().flatten().flatten().map(|e| e.path()))
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "pid") || p.file_name().is_some_and(|n| n == "pid"));
        for pid_file in pid_files {
            if let Ok(pid) = std::fs::read_to_string(&pid_file) {
                let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
            }
        }
        for ns in netns::list(&self.prefix) {
            netns::delete_namespace(&ns);
        }
    }
}

/// Command lines of running processes that mention `dir` (the demo's binaries, agents and their arguments do).
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(&needle))
        .collect()
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("the demo wrote no {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON: {text}", path.display()))
}

#[test]
fn demo_netns_full_lab_ends_with_every_machine_deployed_healthy_and_verified() -> Result<()> {
    metalfleet_skip::require!(metalfleet_skip::tools(&["curl", "jq", "ssh-keygen"]));
    // Without root the demo runs on loopback: the namespace half is recorded as skipped.
    let as_root = metalfleet_skip::part!(netns::prerequisites());
    // Built before the script runs, so it needs no cargo of its own (this test runs inside `cargo test`).
    for name in ["coordinator", "fleetctl", "agent", "maas-sim", "router-shim"] {
        assert!(bin(name).exists(), "{name} was built");
    }
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("demo");
    // Namespaces of earlier runs killed before [`Leftovers`] could run.
    netns::sweep_stale_prefixed(PREFIX);
    let prefix = format!("{PREFIX}{}-", std::process::id());
    let _leftovers = Leftovers { dir: dir.clone(), prefix: prefix.clone() };

    let mut command = Command::new(workspace_root().join("scripts/demo"));
    command
        .env("METALFLEET_DEMO_DIR", &dir)
        .env("METALFLEET_DEMO_NS_PREFIX", &prefix)
        .env("METALFLEET_DEMO_NO_BUILD", "1")
        .env("METALFLEET_DEMO_BIN_DIR", bin_dir());
    let output = run(command, DEMO_DEADLINE)?;
    let (out, err) = (stdout(&output), stderr(&output));
    assert!(output.status.success(), "scripts/demo failed ({}):\n{out}\n{err}", output.status);
    assert!(out.contains("== all four servers deployed, healthy and verified"), "{out}");
    assert!(out.contains(&format!("report: {}", dir.join("report.md").display())), "{out}");

    // Deployed with a healthy agent, matched to its MAAS machine.
    let status = read_json(&dir.join("status.json"))?;
    let mut rows: Vec<(String, String, String)> = status["machines"]
        .as_array()
        .context("status has machines")?
        .iter()
        .filter(|m| m["system_id"].as_str().is_some_and(|s| !s.is_empty()))
        .map(|m| {
            let field = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            (field("hostname"), field("health"), field("verdict"))
        })
        .collect();
    rows.sort();
    let expected: Vec<(String, String, String)> =
        (1..=4).map(|n| (format!("server{n}"), "healthy".to_string(), "deployed, agent healthy".to_string())).collect();
    assert_eq!(rows, expected, "{status:#}");

    // Verified: every machine passes against its profile and commissioned spec.
    let verify = read_json(&dir.join("verify.json"))?;
    assert_eq!(verify["verdict"], "pass", "{verify:#}");
    let mut verdicts: Vec<(String, String)> = verify["machines"]
        .as_array()
        .context("verify has machines")?
        .iter()
        .map(|m| (m["hostname"].as_str().unwrap_or_default().into(), m["verdict"].as_str().unwrap_or_default().into()))
        .collect();
    verdicts.sort();
    let all_pass: Vec<(String, String)> = (1..=4).map(|n| (format!("server{n}"), "pass".to_string())).collect();
    assert_eq!(verdicts, all_pass, "{verify:#}");

    let report = std::fs::read_to_string(dir.join("report.md"))?;
    assert!(report.starts_with("# Lab report"), "{report}");
    assert!(report.contains("172.16.11.1") && report.contains("172.16.14.255"), "the dynamic range: {report}");
    if as_root {
        assert!(out.contains(&format!("network namespaces {prefix}*")), "{out}");
        assert!(report.contains("Router DHCP: off"), "the plan switched the router's DHCP off: {report}");
        assert!(report.contains("ssh-main"), "the SSH forward from the WAN: {report}");
        // Each agent ran in its machine's namespace, so it enrolled with the MAAS machine's MAC.
        let log = std::fs::read_to_string(dir.join("coordinator.log"))?;
        for n in 1..=4 {
            assert!(log.contains(&format!("server{n} matched to MAAS machine")), "server{n} matched");
        }
        assert!(log.matches("by MAC address").count() >= 4, "matched by MAC, not hostname");
    } else {
        assert!(out.contains("not root"), "{out}");
    }

    // The demo tore everything down on its way out.
    assert!(netns::list(&prefix).is_empty(), "namespaces left: {:?}", netns::list(&prefix));
    let left = std::fs::read_dir(&dir)?.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "pid")).count();
    assert_eq!(left, 0, "pid files (running processes) left in {}", dir.display());
    let survivors = processes_using(&dir);
    assert!(survivors.is_empty(), "processes of the demo still running: {survivors:?}");
    Ok(())
}
