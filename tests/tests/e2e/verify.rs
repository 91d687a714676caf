//! Issue 7's verification and lost-node checks, end to end: maas-sim with machines generated from THIS host's
//! real inventory (every agent really runs here, so the live inventory matches what MAAS "commissioned"), the
//! coordinator with `[maas]` pointed at it, and one agent per machine on loopback.
//!
//! Matching: agents on one host share the host's MACs, which belong to no sim machine (the generated machines
//! get MACs of their own), so each agent is matched by its hostname (`--hostname serverN`), the documented
//! fallback of `coordinator::matching`.
//!
//! Reachability never leaves loopback: `[verify.reachability.targets]` points every machine at a TCP listener
//! the test holds (host up) or at a port nobody listens on (host down).

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use metalfleet_tests::{Proc, bin, run, stderr, stdout, wait_until};
use serde_json::Value;

const START: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(60);
const KEY: &str = "verifycons:verifytoken:verifysecret";

/// This host's inventory, as `agent inventory --output json` prints it (the redeploy checks use it too).
pub(super) fn host_inventory() -> Result<Value> {
    let mut command = Command::new(bin("agent"));
    command.args(["inventory", "--output", "json"]);
    let output = run(command, Duration::from_secs(30))?;
    if !output.status.success() {
        bail!("agent inventory failed: {}", stderr(&output));
    }
    serde_json::from_str(&stdout(&output)).context("agent inventory printed no JSON")
}

/// maas-sim's `--machines` file: `hostnames`, each with this host's CPUs, memory, disks and physical NICs, and
/// MACs of its own (52:54:00:00:NN:MM).
fn machines_toml(inventory: &Value, hostnames: &[&str]) -> Result<String> {
    let cpus = inventory["logical_cpus"].as_u64().context("logical_cpus")?;
    let memory_mib = inventory["memory_total_bytes"].as_u64().context("memory_total_bytes")? >> 20;
    let mut text = String::new();
    for (n, hostname) in hostnames.iter().enumerate() {
        let nics: Vec<&Value> =
            inventory["interfaces"].as_array().into_iter().flatten().filter(|i| i["virtual"] == false).collect();
        let macs: Vec<String> =
            (0..nics.len().max(1)).map(|m| format!("52:54:00:00:{:02x}:{:02x}", n + 1, m + 1)).collect();
        text.push_str(&format!(
            "[[machine]]\nhostname = \"{hostname}\"\nmac_addresses = {macs:?}\ncpu_count = {cpus}\n\
             memory_mib = {memory_mib}\npower_type = \"ipmi\"\n\n[machine.power_parameters]\n\
             power_address = \"127.0.0.1\"\n\n"
        ));
        for disk in inventory["disks"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                "[[machine.block_devices]]\nname = {}\nsize_bytes = {}\nmodel = {}\nserial = {}\n\n",
                disk["name"], disk["size_bytes"], disk["model"], disk["serial"]
            ));
        }
        for (nic, mac) in nics.iter().zip(&macs) {
            text.push_str(&format!(
                "[[machine.interfaces]]\nname = {}\nmac = \"{mac}\"\nlink_speed_mbps = {}\n\n",
                nic["name"], nic["speed_mbps"]
            ));
        }
    }
    Ok(text)
}

/// A sim, a coordinator configured with `extra` TOML, in `dir`.
struct Lab {
    sim: Proc,
    sim_addr: SocketAddr,
    coordinator: Proc,
    addr: SocketAddr,
}

fn start_lab(dir: &Path, machines: &str, extra: &str) -> Result<Lab> {
    let machines_file = dir.join("machines.toml");
    std::fs::write(&machines_file, machines)?;
    let mut command = Command::new(bin("maas-sim"));
    command
        .args(["--listen", "127.0.0.1:0", "--enlisted", "--time-scale", "0.01", "--api-key", KEY])
        .arg("--machines")
        .arg(&machines_file);
    let mut sim = Proc::spawn("maas-sim", command)?;
    let sim_addr = sim.wait_listening(START)?;

    let key_file = dir.join("maas.key");
    std::fs::write(&key_file, format!("{KEY}\n"))?;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
    let config = dir.join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "evaluate_every = \"200ms\"\nheartbeat_interval = \"500ms\"\n\n[health]\nload_per_cpu = 1000.0\ndisk_used_percent = 100.0\n\
             memory_available_percent = 0.0\n\n[maas]\nurl = \"http://{sim_addr}/MAAS\"\napi_key_file = \"{}\"\n\
             poll_interval = \"200ms\"\nrequest_timeout = \"2s\"\nconnect_timeout = \"1s\"\n\n{extra}",
            key_file.display()
        ),
    )?;
    let mut command = Command::new(bin("coordinator"));
    command.arg("serve").arg("--insecure").arg("--config").arg(&config);
    command.arg("--state-dir").arg(dir.join("state")).args(["--listen", "127.0.0.1:0"]);
    let mut coordinator = Proc::spawn("coordinator", command)?;
    let addr = coordinator.wait_listening(START)?;
    Ok(Lab { sim, sim_addr, coordinator, addr })
}

fn start_agent(dir: &Path, coordinator: SocketAddr, hostname: &str, hide_disks: Option<&str>) -> Result<Proc> {
    let mut command = Command::new(bin("agent"));
    command.args(["run", "--insecure", "--coordinator", &coordinator.to_string(), "--hostname", hostname]);
    command.args(["--interval", "300ms"]).arg("--state-dir").arg(dir.join(format!("agent-{hostname}")));
    if let Some(disks) = hide_disks {
        command.env("METALFLEET_HIDE_DISKS", disks);
    }
    Proc::spawn(&format!("agent {hostname}"), command)
}

fn fleetctl(addr: SocketAddr, args: &[&str]) -> Result<std::process::Output> {
    let mut command = Command::new(bin("fleetctl"));
    command.args(["--coordinator", &format!("http://{addr}"), "--insecure"]).args(args);
    run(command, Duration::from_secs(20))
}

fn fleetctl_json(addr: SocketAddr, args: &[&str]) -> Option<(Value, Option<i32>)> {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let output = fleetctl(addr, &all).ok()?;
    Some((serde_json::from_str(&stdout(&output)).ok()?, output.status.code()))
}

/// `hostname -> verdict` from `fleetctl verify --output json`.
fn verdicts(doc: &Value) -> Vec<(String, String)> {
    let mut list: Vec<(String, String)> = doc["machines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| Some((m["hostname"].as_str()?.to_string(), m["verdict"].as_str()?.to_string())))
        .collect();
    list.sort();
    list
}

fn event_kinds(addr: SocketAddr) -> Result<Vec<(String, String)>> {
    let output = fleetctl(addr, &["--output", "json", "events"])?;
    Ok(stdout(&output)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|e| Some((e["hostname"].as_str()?.to_string(), e["kind"].as_str()?.to_string())))
        .collect())
}

/// Writes the lab plan's profiles into the coordinator's store before it starts, through the same call the
/// lab plan makes (`coordinator::verify::set_expected_profiles`).
fn seed_profiles(state_dir: &Path, profiles: Vec<(String, String, coordinator::spec::SpecProfile)>) -> Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = coordinator::store::SqliteStore::open(state_dir, 100)?;
        coordinator::verify::set_expected_profiles(&store, profiles).await?;
        anyhow::Ok(())
    })
}

#[test]
fn verify_passes_fails_drifts_and_accept_clears_the_drift() -> Result<()> {
    let inventory = host_inventory()?;
    let cpus = u32::try_from(inventory["logical_cpus"].as_u64().context("cpus")?)?;
    let first_disk = inventory["disks"][0]["name"].as_str().map(str::to_string);
    let dir = tempfile::tempdir()?;
    let fits = coordinator::spec::SpecProfile { min_logical_cpus: Some(cpus), ..Default::default() };
    let too_big = coordinator::spec::SpecProfile { min_logical_cpus: Some(cpus + 8), ..Default::default() };
    seed_profiles(
        &dir.path().join("state"),
        vec![
            ("server1".into(), "fits".into(), fits.clone()),
            ("server2".into(), "fits".into(), fits),
            ("server3".into(), "big".into(), too_big),
        ],
    )?;
    let machines = machines_toml(&inventory, &["server1", "server2", "server3"])?;
    let mut lab = start_lab(dir.path(), &machines, "[verify]\ninterval = \"300ms\"\n")?;

    // Before any agent reports, nothing is wrong yet but everything is unknown: exit 2.
    let (early, code) = fleetctl_json(lab.addr, &["verify", "server1"]).context("fleetctl verify")?;
    assert_eq!((early["machines"][0]["verdict"].as_str(), code), (Some("unknown"), Some(2)), "{early}");

    let _a1 = start_agent(dir.path(), lab.addr, "server1", None)?;
    let _a2 = start_agent(dir.path(), lab.addr, "server2", first_disk.as_deref())?;
    let _a3 = start_agent(dir.path(), lab.addr, "server3", None)?;
    let server2 = if first_disk.is_some() { "drift" } else { "pass" };
    let expected = vec![
        ("server1".to_string(), "pass".to_string()),
        ("server2".to_string(), server2.to_string()),
        ("server3".to_string(), "fail".to_string()),
    ];
    let (doc, code) = wait_until("server1 pass, server2 drift, server3 fail", SETTLE, || {
        fleetctl_json(lab.addr, &["verify"]).filter(|(doc, _)| verdicts(doc) == expected)
    })?;
    assert_eq!(code, Some(1), "fail and drift exit 1: {doc}");
    let (one, code) = fleetctl_json(lab.addr, &["verify", "server1"]).context("verify server1")?;
    assert_eq!(code, Some(0), "{one}");
    // JSON has every field with typed values: the live memory as bytes, and the profile's rule.
    let fields = one["machines"][0]["fields"].as_array().context("fields")?;
    let memory = fields.iter().find(|f| f["field"] == "memory").context("memory field")?;
    assert_eq!(memory["live"], inventory["memory_total_bytes"], "{one}");
    assert!(memory["commissioned"].as_u64().is_some(), "{one}");
    let cpus_field = fields.iter().find(|f| f["field"] == "logical_cpus").context("cpu field")?;
    assert_eq!(cpus_field["expected"], format!(">= {cpus}"), "{one}");
    let fail = doc["machines"].as_array().and_then(|m| m.iter().find(|m| m["hostname"] == "server3")).context("s3")?;
    assert!(fail["reason"].as_str().is_some_and(|r| r.contains("the profile needs at least")), "{fail}");

    // The table says the same for people.
    let table = stdout(&fleetctl(lab.addr, &["verify"])?);
    assert!(table.contains("MACHINE") && table.contains("server3") && table.contains("fail"), "{table}");

    let kinds = event_kinds(lab.addr)?;
    assert!(kinds.contains(&("server3".into(), "spec_failed".into())), "{kinds:?}");
    assert!(kinds.iter().any(|(h, k)| h == "server1" && k == "maas_matched"), "{kinds:?}");
    if first_disk.is_some() {
        assert!(kinds.contains(&("server2".into(), "spec_drift".into())), "{kinds:?}");
        // An operator accepts the machine as it is now: the drift clears, with an event, and it is audited.
        let accepted = fleetctl(lab.addr, &["verify", "--accept", "server2"])?;
        assert!(accepted.status.success(), "{}", stderr(&accepted));
        assert!(stdout(&accepted).contains("new baseline recorded from live data"), "{}", stdout(&accepted));
        let (after, code) = fleetctl_json(lab.addr, &["verify", "server2"]).context("verify server2")?;
        assert_eq!((after["machines"][0]["verdict"].as_str(), code), (Some("pass"), Some(0)), "{after}");
        assert_eq!(after["machines"][0]["baseline"]["source"], "live", "{after}");
        wait_until("a spec_ok event for server2", SETTLE, || {
            event_kinds(lab.addr).ok().filter(|k| k.contains(&("server2".into(), "spec_ok".into())))
        })?;
    }

    let status = lab.coordinator.terminate(Duration::from_secs(15))?;
    assert!(status.success(), "coordinator exited with {status}");
    lab.sim.terminate(Duration::from_secs(10))?;
    Ok(())
}

/// `hostname -> verdict` from `fleetctl status --output json`.
fn node_verdicts(addr: SocketAddr) -> Option<Vec<(String, String)>> {
    let (doc, _) = fleetctl_json(addr, &["status"])?;
    let mut list: Vec<(String, String)> = doc["machines"]
        .as_array()?
        .iter()
        .filter_map(|m| Some((m["hostname"].as_str()?.to_string(), m["verdict"].as_str()?.to_string())))
        .collect();
    list.sort();
    Some(list)
}

#[test]
fn lost_node_verdicts_tell_agent_down_from_host_down_from_powered_off() -> Result<()> {
    let inventory = host_inventory()?;
    let dir = tempfile::tempdir()?;
    // server1's "sshd" is a listener this test holds; server2's port has nobody listening; server3 is powered off.
    let sshd = TcpListener::bind("127.0.0.1:0")?;
    let up = sshd.local_addr()?;
    let down = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let extra = format!(
        "[verify]\ninterval = \"300ms\"\n\n[verify.reachability]\ntimeout = \"1s\"\n\n\
         [verify.reachability.targets]\nserver1 = \"{up}\"\nserver2 = \"{down}\"\nserver3 = \"{up}\"\n"
    );
    let machines = machines_toml(&inventory, &["server1", "server2", "server3"])?;
    let mut lab = start_lab(dir.path(), &machines, &extra)?;

    // Deploy the three through the MAAS API, as the coordinator's own client does.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut config =
        coordinator::maas::Config::new(format!("http://{}/MAAS", lab.sim_addr).parse()?, dir.path().join("maas.key"));
    config.retries = 0;
    let client = coordinator::maas::Client::new(&config)?;
    let ids: Vec<(String, String)> = runtime.block_on(async {
        let listed = client.machines(&Default::default()).await?;
        let mut ids = Vec::new();
        for m in listed {
            client.deploy(&m.system_id, &Default::default()).await?;
            ids.push((m.hostname.clone(), m.system_id.clone()));
        }
        anyhow::Ok(ids)
    })?;
    wait_until("server1..3 Deployed", SETTLE, || {
        let (doc, _) = fleetctl_json(lab.addr, &["machines", "list"])?;
        let deployed = doc["machines"].as_array()?.iter().filter(|m| m["status_name"] == "Deployed").count();
        (deployed == 3).then_some(())
    })?;

    let mut a1 = start_agent(dir.path(), lab.addr, "server1", None)?;
    let mut a2 = start_agent(dir.path(), lab.addr, "server2", None)?;
    let mut a3 = start_agent(dir.path(), lab.addr, "server3", None)?;
    let healthy = |name: &str| (name.to_string(), "deployed, agent healthy".to_string());
    wait_until("every machine deployed with a healthy agent", SETTLE, || {
        node_verdicts(lab.addr).filter(|v| *v == vec![healthy("server1"), healthy("server2"), healthy("server3")])
    })?;

    // Agents killed on server1 (host still answers) and server2 (host gone); server3 powered off in MAAS.
    a1.kill()?;
    a2.kill()?;
    let server3 = ids.iter().find(|(h, _)| h == "server3").map(|(_, id)| id.clone()).context("server3")?;
    runtime.block_on(client.power_off(&server3, coordinator::maas::StopMode::Hard, None))?;
    a3.kill()?;
    let expected = vec![
        ("server1".to_string(), "agent down, host up".to_string()),
        ("server2".to_string(), "host down".to_string()),
        ("server3".to_string(), "powered off in MAAS".to_string()),
    ];
    wait_until("three different lost-node answers", SETTLE, || node_verdicts(lab.addr).filter(|v| *v == expected))?;
    let table = stdout(&fleetctl(lab.addr, &["status"])?);
    assert!(table.contains("VERDICT") && table.contains("agent down, host up"), "{table}");
    drop(sshd);

    let status = lab.coordinator.terminate(Duration::from_secs(15))?;
    assert!(status.success(), "coordinator exited with {status}");
    lab.sim.terminate(Duration::from_secs(10))?;
    Ok(())
}
