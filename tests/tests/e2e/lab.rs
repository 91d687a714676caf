//! Issue 6's end-to-end checks: the lab as code against maas-sim, through fleetctl and the coordinator.
//!
//! These run on loopback without a router section (no namespaces, no root); the router and DHCP-probe scenarios
//! run in network namespaces in `lab_netns.rs`.

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use metalfleet_tests::{Proc, bin, run, stderr, stdout};
use serde_json::Value;

const START: Duration = Duration::from_secs(30);

/// The reference lab, minus the router (which needs namespaces): addresses here are config only.
const LAB: &str = r#"
[maas]
upstream_dns = ["172.20.129.131"]
kernel_opts = "net.ifnames=0"

[[images]]
release = "jammy"

[[images]]
release = "focal"

[[ssh_keys]]
key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e cloud@main"

[subnet]
cidr = "172.16.0.0/20"
dns_servers = ["172.20.129.131"]
dhcp = true

[[subnet.ranges]]
type = "dynamic"
start = "172.16.11.1"
end = "172.16.14.255"
comment = "reserved range (MAAS dynamic)"

[[machines]]
hostname = "server1"
macs = ["52:54:00:00:00:01"]
power_type = "amt"
power_parameters = { power_address = "172.16.15.1", power_pass = "amt-password" }

[[machines]]
hostname = "server2"
macs = ["52:54:00:00:00:02"]
power_type = "amt"
power_parameters = { power_address = "172.16.15.2", power_pass = "amt-password" }
"#;

struct Lab {
    dir: tempfile::TempDir,
    sim: Proc,
    coordinator: Proc,
    addr: std::net::SocketAddr,
}

fn start() -> Result<Lab> {
    let dir = tempfile::tempdir()?;
    let key = "labcons:labtoken:labsecret";
    let sim_state = dir.path().join("sim");
    std::fs::create_dir_all(&sim_state)?;
    let mut command = Command::new(bin("maas-sim"));
    command
        .args(["--listen", "127.0.0.1:0", "--time-scale", "0.01", "--api-key", key])
        .arg("--state-dir")
        .arg(&sim_state);
    let mut sim = Proc::spawn("maas-sim", command)?;
    let sim_addr = sim.wait_listening(START)?;
    let key_file = dir.path().join("maas.key");
    std::fs::write(&key_file, format!("{key}\n"))?;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
    let config = dir.path().join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "[maas]\nurl = \"http://{sim_addr}/MAAS\"\napi_key_file = \"{}\"\npoll_interval = \"300ms\"\n\
             request_timeout = \"2s\"\nconnect_timeout = \"1s\"\nretries = 0\n[lab]\nwait_poll = \"100ms\"\nwait_timeout = \"120s\"\n",
            key_file.display()
        ),
    )?;
    let mut command = Command::new(bin("coordinator"));
    command.arg("serve").arg("--insecure").arg("--config").arg(&config);
    command.arg("--state-dir").arg(dir.path().join("state")).args(["--listen", "127.0.0.1:0"]);
    let mut coordinator = Proc::spawn("coordinator", command)?;
    let addr = coordinator.wait_listening(START)?;
    std::fs::write(dir.path().join("lab.toml"), LAB)?;
    Ok(Lab { dir, sim, coordinator, addr })
}

impl Lab {
    fn fleetctl(&self, args: &[&str]) -> Result<Output> {
        let mut command = Command::new(bin("fleetctl"));
        command.args(["--coordinator", &format!("http://{}", self.addr), "--insecure"]).args(args);
        command.current_dir(self.dir.path());
        run(command, Duration::from_secs(180))
    }

    fn ok(&self, args: &[&str]) -> Result<String> {
        let output = self.fleetctl(args)?;
        if !output.status.success() {
            bail!("fleetctl {args:?} failed ({}): {}\n{}", output.status, stdout(&output), stderr(&output));
        }
        Ok(stdout(&output))
    }

    fn plan_json(&self, file: &str) -> Result<Value> {
        serde_json::from_str(&self.ok(&["--output", "json", "plan", file])?).context("plan printed no JSON")
    }

    /// The poller's MAAS view (its own `GET machines/`, not the lab plan's reads).
    fn maas_machines(&self) -> Result<Value> {
        serde_json::from_str(&self.ok(&["--output", "json", "machines", "list"])?)
            .context("machines list printed no JSON")
    }
}

fn changes(plan: &Value) -> u64 {
    plan["changes"].as_u64().unwrap_or(u64::MAX)
}

#[test]
fn lab_from_zero_apply_again_export_report_destroy() -> Result<()> {
    let mut lab = start()?;

    // From zero: the plan lists the reference lab's steps, in the safe order; nothing changes yet.
    let plan = lab.plan_json("lab.toml")?;
    let summaries: Vec<&str> =
        plan["steps"].as_array().context("steps")?.iter().filter_map(|s| s["summary"].as_str()).collect();
    assert!(
        summaries.iter().any(|s| s.starts_with("create ip range 172.16.11.1-172.16.14.255 (dynamic)")),
        "{summaries:#?}"
    );
    assert!(summaries.iter().any(|s| s.starts_with("set upstream_dns: \"\" -> \"172.20.129.131\"")), "{summaries:#?}");
    let position = |prefix: &str| summaries.iter().position(|s| s.starts_with(prefix));
    assert!(position("create ip range") < position("switch MAAS DHCP on"), "ranges before DHCP: {summaries:#?}");
    assert!(position("switch MAAS DHCP on") < position("import boot images"), "{summaries:#?}");
    assert!(position("import boot images") < position("create machine server1"), "{summaries:#?}");
    assert!(changes(&plan) > 0);

    // Apply.
    let applied = lab.ok(&["apply", "lab.toml", "--yes"])?;
    assert!(applied.contains("Apply complete"), "{applied}");
    let machines =
        metalfleet_tests::wait_until("the poller to see server1 and server2 Ready", Duration::from_secs(20), || {
            let doc = lab.maas_machines().ok()?;
            let ready = doc["machines"].as_array()?.iter().filter(|m| m["status_name"] == "Ready").count();
            (ready == 2).then_some(doc)
        })?;

    // Again: no changes.
    assert_eq!(changes(&lab.plan_json("lab.toml")?), 0);
    let again = lab.ok(&["apply", "lab.toml", "--yes"])?;
    assert!(again.contains("No changes"), "{again}");

    // Export, then plan the export: no changes.
    let exported = lab.ok(&["export"])?;
    std::fs::write(lab.dir.path().join("exported.toml"), &exported)?;
    assert_eq!(changes(&lab.plan_json("exported.toml")?), 0, "{exported}");

    // The report: every section, claims matching maas-sim read directly.
    let report = lab.ok(&["report"])?;
    for section in [
        "## MAAS configuration",
        "### Images",
        "### SSH keys",
        "## Subnet",
        "## Router",
        "## Machines",
        "## Fleet health",
        "## Last operations and events",
        "architecture-beta",
    ] {
        assert!(report.contains(section), "no {section} in\n{report}");
    }
    let json: Value = serde_json::from_str(&lab.ok(&["--output", "json", "report"])?)?;
    assert_eq!(json["maas"]["upstream_dns"][0], "172.20.129.131");
    assert_eq!(json["subnet"]["dhcp_on"], true);
    assert_eq!(json["subnet"]["ranges"][0]["start"], "172.16.11.1");
    assert_eq!(json["subnet"]["ranges"][0]["end"], "172.16.14.255");
    assert_eq!(json["machines"].as_array().map(Vec::len), machines["machines"].as_array().map(Vec::len));

    // Destroy: MAAS DHCP off, ranges gone.
    let destroyed = lab.ok(&["destroy", "lab.toml", "--yes"])?;
    assert!(destroyed.contains("Destroy complete"), "{destroyed}");
    let after: Value = serde_json::from_str(&lab.ok(&["--output", "json", "report"])?)?;
    assert_eq!(after["subnet"], Value::Null, "no subnet has DHCP on after destroy: {after}");

    // A bad plan file: exit 64 with the line and key.
    std::fs::write(lab.dir.path().join("bad.toml"), "[subnet]\ncidr = \"172.16.0.0/20\"\nbogus = 1\n")?;
    let bad = lab.fleetctl(&["plan", "bad.toml"])?;
    assert_eq!(bad.status.code(), Some(64), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("bad.toml:3") && stderr(&bad).contains("bogus"), "{}", stderr(&bad));

    // MAAS down: plan shows the stale state with its age (exit 69), apply refuses with the reason.
    lab.sim.terminate(Duration::from_secs(10))?;
    let stale = lab.fleetctl(&["plan", "lab.toml"])?;
    assert_eq!(stale.status.code(), Some(69), "{}{}", stdout(&stale), stderr(&stale));
    assert!(stdout(&stale).contains("MAAS unreachable") && stdout(&stale).contains("stale"), "{}", stdout(&stale));
    let refused = lab.fleetctl(&["apply", "lab.toml", "--yes"])?;
    assert_eq!(refused.status.code(), Some(69), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("apply refused"), "{}", stderr(&refused));

    let status = lab.coordinator.terminate(Duration::from_secs(15))?;
    assert!(status.success(), "coordinator exited with {status}");
    Ok(())
}
