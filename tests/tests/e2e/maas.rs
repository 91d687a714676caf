//! Issue 3's end-to-end check: maas-sim and `coordinator serve` with `[maas]`, seen through fleetctl; MAAS
//! stops (the view goes stale with a growing age) and comes back on the same port (fresh again).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use metalfleet_tests::{Proc, bin, run, stderr, stdout, wait_until};
use serde_json::Value;

const START: Duration = Duration::from_secs(30);
/// The poller runs every 200 ms here; the view is stale after two missed intervals.
const POLL: &str = "200ms";

/// Starts maas-sim on `listen` with the reference lab enlisted (Ready) and the given admin key.
fn start_sim(listen: &str, key: &str, state: &Path) -> Result<(Proc, std::net::SocketAddr)> {
    let mut command = Command::new(bin("maas-sim"));
    command
        .args(["--listen", listen, "--enlisted", "--time-scale", "0.01", "--api-key", key])
        .arg("--state-dir")
        .arg(state);
    let mut proc = Proc::spawn("maas-sim", command)?;
    let addr = proc.wait_listening(START)?;
    Ok((proc, addr))
}

fn machines_json(coordinator: std::net::SocketAddr) -> Result<Value> {
    let mut command = Command::new(bin("fleetctl"));
    command.args(["--coordinator", &format!("http://{coordinator}"), "--insecure", "--output", "json"]);
    command.args(["machines", "list"]);
    let output = run(command, Duration::from_secs(20))?;
    if !output.status.success() {
        bail!("fleetctl machines list failed ({}): {}", output.status, stderr(&output));
    }
    serde_json::from_str(&stdout(&output)).context("fleetctl machines list printed no JSON")
}

/// The list when it holds server1..server4 in `status_name`, else `None`.
fn lab_in_status(doc: &Value, status_name: &str) -> bool {
    let Some(machines) = doc["machines"].as_array() else { return false };
    let mut seen: Vec<(&str, &str)> =
        machines.iter().filter_map(|m| Some((m["hostname"].as_str()?, m["status_name"].as_str()?))).collect();
    seen.sort();
    seen == [("server1", status_name), ("server2", status_name), ("server3", status_name), ("server4", status_name)]
}

#[test]
fn fleetctl_shows_the_maas_view_stale_while_maas_is_down_and_fresh_after() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sim_state = dir.path().join("sim");
    std::fs::create_dir_all(&sim_state)?;
    // A fixed key, so the restarted sim accepts the same key file.
    let key = "e2econs:e2etoken:e2esecret";
    let (mut sim, sim_addr) = start_sim("127.0.0.1:0", key, &sim_state)?;

    let key_file = dir.path().join("maas.key");
    std::fs::write(&key_file, format!("{key}\n"))?;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
    let config = dir.path().join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "[maas]\nurl = \"http://{sim_addr}/MAAS\"\napi_key_file = \"{}\"\npoll_interval = \"{POLL}\"\n\
             request_timeout = \"1s\"\nconnect_timeout = \"1s\"\nretries = 0\n",
            key_file.display()
        ),
    )?;
    let mut command = Command::new(bin("coordinator"));
    command.arg("serve").arg("--insecure").arg("--config").arg(&config);
    command.arg("--state-dir").arg(dir.path().join("state")).args(["--listen", "127.0.0.1:0"]);
    let mut coordinator = Proc::spawn("coordinator", command)?;
    let addr = coordinator.wait_listening(START)?;

    // MAAS up: server1..4 Ready, fresh.
    let fresh = wait_until("the MAAS view with server1..4 Ready", Duration::from_secs(20), || {
        machines_json(addr).ok().filter(|doc| lab_in_status(doc, "Ready") && doc["maas"]["stale"] == false)
    })?;
    let first = &fresh["machines"][0];
    assert!(first["system_id"].as_str().is_some_and(|s| !s.is_empty()), "{fresh}");
    assert_eq!(first["cpu_count"], 4, "{fresh}");
    assert!(first["memory_bytes"].as_u64().is_some_and(|b| b >= 12 * 1024 * 1024 * 1024), "{fresh}");
    assert!(fresh["maas"]["last_success_at"].is_string(), "{fresh}");

    // MAAS down: the last known state stays, marked stale, and its age grows.
    sim.terminate(Duration::from_secs(10))?;
    let stale = wait_until("the MAAS view to turn stale", Duration::from_secs(20), || {
        machines_json(addr).ok().filter(|doc| doc["maas"]["stale"] == true)
    })?;
    assert!(lab_in_status(&stale, "Ready"), "the last known state stays visible: {stale}");
    assert!(stale["maas"]["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{stale}");
    let age = stale["maas"]["age_seconds"].as_f64().context("a stale view has an age")?;
    wait_until("the age to grow", Duration::from_secs(20), || {
        machines_json(addr).ok().and_then(|doc| doc["maas"]["age_seconds"].as_f64()).filter(|later| *later > age + 0.5)
    })?;
    // The human table says how old the state is and why.
    let mut command = Command::new(bin("fleetctl"));
    command.args(["--coordinator", &format!("http://{addr}"), "--insecure", "machines", "list"]);
    let table = stdout(&run(command, Duration::from_secs(20))?);
    assert!(table.contains("MAAS state from ") && table.contains("(stale: MAAS unreachable: "), "{table}");

    // MAAS back on the same port: fresh again, by itself.
    let (mut sim, _) = start_sim(&sim_addr.to_string(), key, &sim_state)?;
    wait_until("the MAAS view to be fresh again", Duration::from_secs(20), || {
        machines_json(addr).ok().filter(|doc| doc["maas"]["stale"] == false && lab_in_status(doc, "Ready"))
    })?;

    let mut command = Command::new(bin("fleetctl"));
    command.args(["--coordinator", &format!("http://{addr}"), "--insecure", "--output", "json", "events"]);
    let events = stdout(&run(command, Duration::from_secs(20))?);
    let kinds: Vec<String> = events
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .collect();
    for kind in ["maas_machine_added", "maas_unreachable", "maas_reachable"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} event in {kinds:?}");
    }
    assert_eq!(kinds.iter().filter(|k| *k == "maas_unreachable").count(), 1, "{kinds:?}");

    let status = coordinator.terminate(Duration::from_secs(15))?;
    assert!(status.success(), "coordinator exited with {status}");
    sim.terminate(Duration::from_secs(10))?;
    Ok(())
}
