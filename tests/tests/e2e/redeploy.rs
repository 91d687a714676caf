//! Issue 7's redeploy checks: maas-sim with a deploy hook that plays cloud-init (downloads the agent from the
//! coordinator's artifacts listener, checks its SHA-256, starts it with the token from the user data), and the
//! coordinator driving redeploys through fleetctl.
//!
//! maas-sim runs in this process (its library), so a test can make a second MAAS user's API key. Its machines
//! are generated from THIS host's inventory (every agent really runs here), so a redeployed machine's verify
//! step gives a real `pass`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use metalfleet_tests::{Proc, bin, run, stderr, stdout, wait_until};
use serde_json::Value;

const START: Duration = Duration::from_secs(30);
const KEY: &str = "e2econs:e2etoken:e2esecret";

/// The hook: on `deployed` it does what the user data's cloud-init would (write_files, download and check the
/// agent, start it); on `released`/`powered-off` it stops that machine's agent.
/// `LAB` (where each machine's files go) is set by the line [`Lab::start`] puts in front.
const HOOK: &str = r#"
set -eu
D="$LAB/$MAAS_SIM_HOSTNAME"
mkdir -p "$D"
stop_agent() { if [ -f "$D/pid" ]; then kill "$(cat "$D/pid")" 2>/dev/null || true; rm -f "$D/pid"; fi; }
case "$MAAS_SIM_EVENT" in
deployed)
  stop_agent
  # A deploy without user data (straight through the MAAS API) installs no agent.
  [ -s "${MAAS_SIM_USER_DATA:-}" ] || exit 0
  rm -rf "$D/root" "$D/state"
  awk -v root="$D/root" '
    /^  - path: / { path = root $3; inblock = 0; next }
    /^    content: \|/ { inblock = 1; dir = path; sub(/\/[^\/]*$/, "", dir); system("mkdir -p \"" dir "\""); printf "" > path; next }
    inblock && /^      / { line = $0; sub(/^      /, "", line); print line >> path; next }
    inblock && /^ *$/ { print "" >> path; next }
    { inblock = 0 }
  ' "$MAAS_SIM_USER_DATA"
  ETC="$D/root/etc/metalfleet"
  chmod 600 "$ETC/token"
  COORD=$(sed -n 's/^coordinator = "\(.*\)"$/\1/p' "$ETC/agent.toml")
  URL=$(sed -n 's/.*"\(https:[^"]*\/agent\)".*/\1/p' "$MAAS_SIM_USER_DATA" | head -n 1)
  SUM=$(sed -n 's/.*echo "\([0-9a-f]\{64\}\)  .*/\1/p' "$MAAS_SIM_USER_DATA" | head -n 1)
  # Like the real user data: retry while the coordinator is restarting (a deploy can finish during its restart).
  curl --fail --silent --show-error --retry 30 --retry-connrefused --retry-delay 1 --cacert "$ETC/ca.pem" -o "$D/agent" "$URL"
  echo "$SUM  $D/agent" | sha256sum -c - >/dev/null
  chmod 755 "$D/agent"
  echo "$MAAS_SIM_DISTRO_SERIES" > "$D/distro"
  nohup "$D/agent" run --coordinator "$COORD" --ca-file "$ETC/ca.pem" --token-file "$ETC/token" \
    --state-dir "$D/state" --hostname "$MAAS_SIM_HOSTNAME" --interval 1s >"$D/agent.log" 2>&1 &
  echo $! > "$D/pid"
  ;;
released|powered-off)
  stop_agent
  ;;
esac
"#;

struct Lab {
    dir: tempfile::TempDir,
    /// Runs the in-process maas-sim (and the MAAS clients the tests use directly).
    runtime: tokio::runtime::Runtime,
    sim: Option<maas_sim::Handle>,
    sim_addr: std::net::SocketAddr,
    coordinator: Option<Proc>,
    /// The gRPC address, kept across restarts: deployed agents dial the address their user data names.
    addr: Option<std::net::SocketAddr>,
    config: PathBuf,
}

/// maas-sim's machines `server1..server4`, each with this host's CPUs, memory, disks and NICs (physical ones,
/// or every one when none is physical, as verification counts them) and MACs of its own.
fn host_machines() -> Result<Vec<maas_sim::MachineSpec>> {
    let inventory = super::verify::host_inventory()?;
    let cpu_count = u32::try_from(inventory["logical_cpus"].as_u64().context("logical_cpus")?)?;
    let memory_mib = inventory["memory_total_bytes"].as_u64().context("memory_total_bytes")? >> 20;
    let all: Vec<&Value> = inventory["interfaces"].as_array().into_iter().flatten().collect();
    let physical: Vec<&Value> = all.iter().copied().filter(|i| i["virtual"] == false).collect();
    let nics = if physical.is_empty() { all } else { physical };
    let block_devices: Vec<maas_sim::BlockDeviceSpec> = inventory["disks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| maas_sim::BlockDeviceSpec {
            name: d["name"].as_str().unwrap_or_default().to_string(),
            size_bytes: d["size_bytes"].as_u64().unwrap_or_default(),
            model: d["model"].as_str().unwrap_or_default().to_string(),
            serial: d["serial"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    Ok((1..=4)
        .map(|n| {
            let macs: Vec<String> =
                (0..nics.len().max(1)).map(|m| format!("52:54:00:00:{n:02x}:{:02x}", m + 1)).collect();
            maas_sim::MachineSpec {
                hostname: format!("server{n}"),
                mac_addresses: macs.clone(),
                architecture: "amd64/generic".into(),
                power_type: "ipmi".into(),
                power_parameters: [("power_address".to_string(), "127.0.0.1".to_string())].into(),
                cpu_count,
                cpu_speed_mhz: 2400,
                memory_mib,
                block_devices: block_devices.clone(),
                interfaces: nics
                    .iter()
                    .zip(&macs)
                    .map(|(nic, mac)| maas_sim::InterfaceSpec {
                        name: nic["name"].as_str().unwrap_or_default().to_string(),
                        mac: mac.clone(),
                        link_speed_mbps: u32::try_from(nic["speed_mbps"].as_u64().unwrap_or_default()).unwrap_or(0),
                    })
                    .collect(),
                tags: Vec::new(),
            }
        })
        .collect())
}

impl Lab {
    fn start() -> Result<Lab> {
        Lab::start_with("")
    }

    /// [`Lab::start`] with `extra` appended to the coordinator's config.
    fn start_with(extra: &str) -> Result<Lab> {
        let dir = tempfile::tempdir()?;
        let lab = dir.path().join("lab");
        std::fs::create_dir_all(&lab)?;
        let hook = dir.path().join("hook.sh");
        std::fs::write(&hook, format!("#!/bin/sh\nLAB='{}'{HOOK}", lab.display()))?;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
        let sim_state = dir.path().join("sim");
        std::fs::create_dir_all(&sim_state)?;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let mut sim_config = maas_sim::Config::for_tests();
        sim_config.machines = host_machines()?;
        sim_config.enlisted = true;
        sim_config.api_key = Some(KEY.into());
        sim_config.state_dir = Some(sim_state);
        sim_config.hook = Some(hook);
        let sim = runtime.block_on(maas_sim::start(sim_config))?;
        let sim_addr = sim.addr();
        let key_file = dir.path().join("maas.key");
        std::fs::write(&key_file, format!("{KEY}\n"))?;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
        let config = dir.path().join("coordinator.toml");
        std::fs::write(
            &config,
            format!(
                "[maas]\nurl = \"http://{sim_addr}/MAAS\"\napi_key_file = \"{}\"\npoll_interval = \"200ms\"\n\
                 retries = 6\nretry_backoff = \"10ms\"\nmax_backoff = \"50ms\"\n\n\
                 [operations]\npoll_interval = \"100ms\"\nenroll_timeout = \"60s\"\nhealthy_timeout = \"60s\"\n\n\
                 [artifacts]\nagent_binary = \"{}\"\nlisten = \"127.0.0.1:{}\"\n\n\
                 [verify]\ninterval = \"300ms\"\n\n\
                 [health]\ndisk_used_percent = 100.0\nmemory_available_percent = 0.0\nload_per_cpu = 1000.0\n{extra}",
                key_file.display(),
                bin("agent").display(),
                free_port()?
            ),
        )?;
        let mut lab = Lab { dir, runtime, sim: Some(sim), sim_addr, coordinator: None, addr: None, config };
        lab.start_coordinator()?;
        Ok(lab)
    }

    fn sim(&self) -> &maas_sim::Handle {
        self.sim.as_ref().expect("the sim runs until the lab is dropped")
    }

    /// A MAAS client of the user whose API key is `key` (the admin's: [`KEY`]).
    fn maas_client(&self, key: &str) -> Result<coordinator::maas::Client> {
        let key_file = self.dir.path().join(format!("maas-{}.key", key.split(':').next().unwrap_or("user")));
        std::fs::write(&key_file, format!("{key}\n"))?;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
        let mut config = coordinator::maas::Config::new(format!("http://{}/MAAS", self.sim_addr).parse()?, key_file);
        config.retries = 0;
        Ok(coordinator::maas::Client::new(&config)?)
    }

    /// MAAS's view of `hostname`, read directly.
    fn maas_machine(&self, hostname: &str) -> Result<coordinator::maas::Machine> {
        let client = self.maas_client(KEY)?;
        self.runtime.block_on(async {
            let all = client.machines(&Default::default()).await?;
            all.into_iter().find(|m| m.hostname == hostname).with_context(|| format!("MAAS has no {hostname}"))
        })
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn start_coordinator(&mut self) -> Result<()> {
        let mut command = Command::new(bin("coordinator"));
        let listen = self.addr.map(|a| a.to_string()).unwrap_or_else(|| "127.0.0.1:0".into());
        command.args(["serve", "--listen", &listen, "--config"]).arg(&self.config);
        command.arg("--state-dir").arg(self.state());
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("coordinator.log"))?;
        command.stderr(log);
        let mut proc = Proc::spawn("coordinator", command)?;
        self.addr = Some(proc.wait_listening(START)?);
        self.coordinator = Some(proc);
        Ok(())
    }

    fn fleetctl(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut command = Command::new(bin("fleetctl"));
        command.arg("--config").arg(self.state().join("client.toml")).args(args);
        run(command, Duration::from_secs(120))
    }

    fn json(&self, args: &[&str]) -> Result<Value> {
        let output = self.fleetctl(args)?;
        if !output.status.success() {
            bail!("fleetctl {args:?} failed ({}): {}", output.status, stderr(&output));
        }
        let text = stdout(&output);
        // One document, or (watch) one per line: the last one counts.
        serde_json::from_str(&text)
            .or_else(|_| serde_json::from_str(text.lines().last().unwrap_or_default()))
            .with_context(|| format!("fleetctl {args:?} printed no JSON: {text}"))
    }

    fn operation(&self, id: &str) -> Result<Value> {
        self.json(&["--output", "json", "operations", "show", id])
    }

    fn wait_finished(&self, id: &str, timeout: Duration) -> Result<Value> {
        wait_until(&format!("operation {id} to end"), timeout, || {
            self.operation(id).ok().filter(|op| !matches!(op["state"].as_str(), Some("running" | "pending")))
        })
    }

    fn sim_requests(&self) -> Result<Vec<Value>> {
        let output = run(
            {
                let mut c = Command::new("curl");
                c.args(["-fsS", &format!("http://{}/_sim/requests", self.sim_addr)]);
                c
            },
            Duration::from_secs(20),
        )?;
        Ok(serde_json::from_str::<Value>(&stdout(&output))?.as_array().cloned().unwrap_or_default())
    }

    fn sim_fault(&self, fault: &str) -> Result<()> {
        let mut c = Command::new("curl");
        c.args(["-fsS", "-X", "POST", "-d", fault, &format!("http://{}/_sim/faults", self.sim_addr)]);
        let output = run(c, Duration::from_secs(20))?;
        if !output.status.success() {
            bail!("cannot inject {fault}: {}", stderr(&output));
        }
        Ok(())
    }

    /// Accepted `op=deploy` calls per machine path, from maas-sim's request log.
    fn deploys(&self) -> Result<BTreeMap<String, usize>> {
        let mut counts = BTreeMap::new();
        for r in self.sim_requests()? {
            if r["op"] == "deploy" && r["status"] == 200 {
                *counts.entry(r["path"].as_str().unwrap_or_default().to_string()).or_default() += 1;
            }
        }
        Ok(counts)
    }

    fn lab_dir(&self) -> PathBuf {
        self.dir.path().join("lab")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(self.lab_dir()).into_iter().flatten().flatten() {
            if let Ok(pid) = std::fs::read_to_string(entry.path().join("pid")) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
        if let Some(mut coordinator) = self.coordinator.take() {
            let _ = coordinator.kill();
        }
        if let Some(sim) = self.sim.take() {
            self.runtime.block_on(sim.shutdown());
        }
    }
}

/// A port that was free a moment ago (the artifacts listener must keep its port across a restart).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn step_time(m: &Value, step: &str, field: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let s = m["steps"].as_array()?.iter().find(|s| s["name"] == step)?;
    chrono::DateTime::parse_from_rfc3339(s[field].as_str()?).ok().map(|t| t.with_timezone(&chrono::Utc))
}

fn check_agent_enrolled_with_token(lab: &Lab, machine: &Value, path: &Path) -> Result<()> {
    assert_eq!(machine["state"], "succeeded", "{machine:#}");
    let token_id = machine["token_id"].as_str().context("a token id")?;
    assert!(machine["machine_id"].as_str().is_some_and(|m| !m.is_empty()), "{machine:#}");
    let enrolled = machine["steps"].as_array().unwrap().iter().find(|s| s["name"] == "wait_enrolled").unwrap();
    assert!(enrolled["message"].as_str().unwrap().contains(token_id), "{enrolled}");
    let tokens = lab.json(&["--output", "json", "tokens", "list"])?;
    let token = tokens["tokens"].as_array().unwrap().iter().find(|t| t["id"] == token_id).cloned();
    assert!(token.is_some_and(|t| t["uses_left"] == 0), "the deploy's token was used: {tokens}");
    assert!(path.join("pid").exists(), "the hook started the agent");
    Ok(())
}

/// The machine's verify step passed with the verification's own verdict (not just "inventory received").
fn check_verified(machine: &Value) {
    let verify = machine["steps"].as_array().and_then(|s| s.iter().find(|s| s["name"] == "verify")).cloned();
    let verify = verify.unwrap_or_default();
    assert_eq!(verify["state"], "succeeded", "{machine:#}");
    assert!(verify["message"].as_str().is_some_and(|m| m.starts_with("spec pass")), "{verify:#}");
}

#[test]
fn redeploy_of_one_machine_enrolls_the_new_agent_with_the_minted_token() -> Result<()> {
    let lab = Lab::start()?;
    let output = lab.fleetctl(&["--output", "json", "redeploy", "server1", "--distro", "focal", "--wait"])?;
    assert!(output.status.success(), "redeploy failed ({}): {}{}", output.status, stdout(&output), stderr(&output));
    let last: Value = serde_json::from_str(stdout(&output).lines().last().context("output")?)?;
    assert_eq!(last["state"], "succeeded", "{last:#}");
    let machine = &last["machines"][0];
    check_agent_enrolled_with_token(&lab, machine, &lab.lab_dir().join("server1"))?;
    assert_eq!(std::fs::read_to_string(lab.lab_dir().join("server1/distro"))?.trim(), "focal");
    let steps: Vec<&str> = machine["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        steps,
        ["release", "wait_ready", "allocate", "deploy", "wait_deployed", "wait_enrolled", "verify", "wait_healthy"]
    );
    // The verify step gave the machine's real verdict: this host's inventory against the commissioned spec.
    check_verified(machine);
    let verify = lab.json(&["--output", "json", "verify", "server1"])?;
    assert_eq!(verify["machines"][0]["verdict"], "pass", "{verify:#}");
    assert_eq!(
        verify["machines"][0]["machine_id"], machine["machine_id"],
        "the new agent is the one verified: {verify:#}"
    );
    assert_eq!(lab.deploys()?.values().sum::<usize>(), 1);
    // A second redeploy of a machine busy in an operation is refused; a finished one may go again.
    let status = lab.json(&["--output", "json", "status"])?;
    assert!(status.to_string().contains("server1"), "{status}");
    Ok(())
}

#[test]
fn rolling_redeploy_survives_a_coordinator_kill_and_deploys_each_machine_once() -> Result<()> {
    let mut lab = Lab::start()?;
    // 503 bursts on the way: the client retries them.
    lab.sim_fault(r#"{"kind":"status","status":503,"count":3}"#)?;
    let started = lab.json(&["--output", "json", "redeploy", "--all", "--yes", "--max-unavailable", "1"])?;
    let id = started["id"].as_str().context("an operation id")?.to_string();
    // Kill the coordinator while the second machine is on its way.
    wait_until("the second machine to start", Duration::from_secs(120), || {
        lab.operation(&id).ok().filter(|op| op["machines"][1]["steps"].as_array().is_some_and(|s| !s.is_empty()))
    })?;
    lab.coordinator.as_mut().context("running")?.kill()?;
    lab.start_coordinator()?;
    let op = lab.wait_finished(&id, Duration::from_secs(240))?;
    assert_eq!(op["state"], "succeeded", "{op:#}");
    let machines = op["machines"].as_array().unwrap();
    assert_eq!(machines.len(), 4);
    for m in machines {
        check_agent_enrolled_with_token(&lab, m, &lab.lab_dir().join(m["hostname"].as_str().unwrap()))?;
        check_verified(m);
    }
    // Order and health gate: each machine's window (release start .. healthy) ends before the next one's starts.
    for pair in machines.windows(2) {
        let end = step_time(&pair[0], "wait_healthy", "finished_at").context("first ended")?;
        let start = step_time(&pair[1], "release", "started_at").context("second started")?;
        assert!(end <= start, "deploy windows overlap: {} then {}", pair[0]["hostname"], pair[1]["hostname"]);
    }
    let deploys = lab.deploys()?;
    assert_eq!(deploys.len(), 4, "{deploys:?}");
    assert!(deploys.values().all(|n| *n == 1), "a machine was deployed twice: {deploys:?}");
    Ok(())
}

#[test]
fn failed_deployment_ends_that_machine_with_maas_message_and_stops_the_rollout() -> Result<()> {
    let lab = Lab::start()?;
    lab.sim_fault(r#"{"kind":"fail_deployment","hostname":"server1"}"#)?;
    let output = lab.fleetctl(&["--output", "json", "redeploy", "--all", "--yes", "--max-failures", "0", "--wait"])?;
    assert_eq!(output.status.code(), Some(1), "{}{}", stdout(&output), stderr(&output));
    let op: Value = serde_json::from_str(stdout(&output).lines().last().context("output")?)?;
    assert_eq!(op["state"], "failed", "{op:#}");
    let machines = op["machines"].as_array().unwrap();
    assert_eq!(machines[0]["state"], "failed");
    let message = machines[0]["message"].as_str().unwrap();
    assert!(message.contains("Failed deployment") && message.contains("Installation failed"), "{message}");
    for m in &machines[1..] {
        assert_eq!(m["state"], "cancelled", "the rollout stopped past its failure limit: {m}");
        assert!(m["steps"].as_array().unwrap().is_empty(), "{m}");
    }
    Ok(())
}

/// Whether process `pid` runs (a zombie does not count).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().to_string()))
        .is_some_and(|rest| !rest.starts_with('Z'))
}

/// `fleetctl power off|on|cycle` go through MAAS (maas-sim's power state follows, and powering off stops the
/// agent through the hook's powered-off event, as switching a server off would); `machines forget --release`
/// revokes the machine's certificate, keeps its history and releases it in MAAS.
#[test]
fn power_and_forget_go_through_maas_and_keep_the_history() -> Result<()> {
    use coordinator::maas::{NodeStatus, PowerState};
    let lab = Lab::start()?;
    let op = lab.json(&["--output", "json", "redeploy", "server1", "--wait"])?;
    assert_eq!(op["state"], "succeeded", "{op:#}");
    let machine_id = op["machines"][0]["machine_id"].as_str().context("the new agent's machine id")?.to_string();
    let pid_file = lab.lab_dir().join("server1/pid");
    let pid = std::fs::read_to_string(&pid_file)?.trim().to_string();
    assert!(alive(&pid), "the hook started server1's agent");
    let power = |state: PowerState| {
        wait_until(&format!("MAAS to show server1 {state:?}"), Duration::from_secs(30), || {
            lab.maas_machine("server1").ok().filter(|m| m.power_state == state)
        })
    };

    let off = lab.json(&["--output", "json", "power", "off", "server1"])?;
    assert_eq!(off["hostname"], "server1", "{off}");
    power(PowerState::Off)?;
    wait_until("server1's agent to stop with its power", Duration::from_secs(30), || {
        (!pid_file.exists() && !alive(&pid)).then_some(())
    })?;
    lab.json(&["--output", "json", "power", "on", "server1"])?;
    power(PowerState::On)?;

    // A cycle is off, then on once MAAS reports off.
    lab.sim().clear_request_log();
    let cycled = lab.fleetctl(&["power", "cycle", "server1"])?;
    assert!(cycled.status.success(), "{}", stderr(&cycled));
    assert!(stdout(&cycled).contains("server1"), "{}", stdout(&cycled));
    power(PowerState::On)?;
    let power_ops: Vec<String> = lab
        .sim()
        .request_log()
        .into_iter()
        .filter(|r| r.status == 200)
        .filter_map(|r| r.op)
        .filter(|op| op == "power_on" || op == "power_off")
        .collect();
    assert_eq!(power_ops, ["power_off", "power_on"]);

    let forgot = lab.json(&["--output", "json", "machines", "forget", "server1", "--release"])?;
    assert_eq!(forgot["released"], true, "{forgot}");
    assert!(forgot["revoked_certificates"].as_u64().is_some_and(|n| n >= 1), "{forgot}");
    wait_until("MAAS to release server1", Duration::from_secs(30), || {
        lab.maas_machine("server1").ok().filter(|m| m.status == NodeStatus::Ready && m.owner.is_none())
    })?;
    let agents = lab.json(&["--output", "json", "agents", "list"])?;
    let certs: Vec<&Value> =
        agents["agents"].as_array().into_iter().flatten().filter(|a| a["machine_id"] == machine_id).collect();
    assert!(!certs.is_empty() && certs.iter().all(|c| c["revoked"] == true), "every certificate revoked: {agents:#}");
    // Its history is kept: the machine and its events are still there.
    let shown = lab.fleetctl(&["--output", "json", "machines", "show", &machine_id])?;
    assert!(shown.status.success() && stdout(&shown).contains("server1"), "{}{}", stdout(&shown), stderr(&shown));
    let events = stdout(&lab.fleetctl(&["--output", "json", "events"])?);
    assert!(events.lines().any(|l| l.contains(&machine_id) && l.contains("\"enrolled\"")), "{events}");
    Ok(())
}

/// A machine locked in MAAS and a machine another MAAS user owns are refused with the reason, by name and in
/// the rolling form's plan, and nothing is sent to MAAS for them.
#[test]
fn locked_machines_and_machines_of_another_maas_user_are_refused_with_the_reason() -> Result<()> {
    let lab = Lab::start()?;
    let admin = lab.maas_client(KEY)?;
    let alice = lab.maas_client(&lab.sim().create_api_key("alice", false))?;
    let server1 = lab.maas_machine("server1")?.system_id;
    let server2 = lab.maas_machine("server2")?.system_id;
    lab.runtime.block_on(async {
        admin.deploy(&server1, &Default::default()).await?;
        admin.lock(&server1, Some("e2e: keep it")).await?;
        let request = coordinator::maas::AllocateRequest { system_id: Some(server2.clone()), ..Default::default() };
        alice.allocate(&request).await?;
        anyhow::Ok(())
    })?;
    lab.sim().clear_request_log();

    let locked = lab.fleetctl(&["redeploy", "server1"])?;
    assert_eq!(locked.status.code(), Some(1), "{}", stderr(&locked));
    assert!(stderr(&locked).contains("server1 is locked in MAAS; unlock it there first"), "{}", stderr(&locked));
    let owned = lab.fleetctl(&["redeploy", "server2", "--wait"])?;
    assert_eq!(owned.status.code(), Some(1), "{}", stderr(&owned));
    assert!(stderr(&owned).contains("server2 is owned by MAAS user alice, not admin"), "{}", stderr(&owned));

    let plan = lab.json(&["--output", "json", "redeploy", "--all", "--dry-run"])?;
    let refused: Vec<(String, String)> = plan["plan"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| (p["hostname"].as_str().unwrap_or_default().into(), p["refused"].as_str().unwrap_or("-").into()))
        .collect();
    assert_eq!(refused.len(), 4, "{plan:#}");
    assert!(refused[0].1.contains("locked"), "{refused:?}");
    assert!(refused[1].1.contains("owned by MAAS user alice"), "{refused:?}");
    assert_eq!((refused[2].1.as_str(), refused[3].1.as_str()), ("-", "-"), "the others are planned: {refused:?}");

    let changes: Vec<_> = lab
        .sim()
        .request_log()
        .into_iter()
        .filter(|r| r.method == "POST" && (r.path.contains(&server1) || r.path.contains(&server2)))
        .collect();
    assert!(changes.is_empty(), "nothing was sent for refused machines: {changes:?}");
    Ok(())
}

/// SIGTERM in the middle of a redeploy: the coordinator waits for the running step and exits cleanly within its
/// grace period, the record still shows the machine mid-way (a stop is not an end), and the next run finishes
/// it without deploying it twice.
#[test]
fn sigterm_mid_redeploy_exits_cleanly_and_the_next_run_finishes_it() -> Result<()> {
    let mut lab = Lab::start()?;
    let started = lab.json(&["--output", "json", "redeploy", "server1"])?;
    let id = started["id"].as_str().context("an operation id")?.to_string();
    wait_until("server1's deploy to be sent", Duration::from_secs(60), || {
        lab.operation(&id).ok().filter(|op| {
            op["machines"][0]["steps"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["name"] == "deploy" && s["state"] == "succeeded"))
        })
    })?;
    let status = lab.coordinator.as_mut().context("running")?.terminate(Duration::from_secs(15))?;
    assert!(status.success(), "coordinator exited with {status} on SIGTERM");

    let store = coordinator::operations::OperationsStore::open(&lab.state())?;
    let stored = lab.runtime.block_on(store.get(&id))?.context("the operation is stored")?;
    assert_eq!(stored.state, coordinator::operations::OpState::Running, "{stored:#?}");
    let machine = &stored.machines[0];
    assert!(!machine.state.is_final(), "a shutdown ends no machine: {machine:#?}");
    assert!(
        machine.steps.iter().all(|s| !matches!(s.state, coordinator::operations::OpState::Failed)),
        "no step was failed by the shutdown: {machine:#?}"
    );
    drop(store);

    lab.start_coordinator()?;
    let op = lab.wait_finished(&id, Duration::from_secs(120))?;
    assert_eq!(op["state"], "succeeded", "{op:#}");
    check_agent_enrolled_with_token(&lab, &op["machines"][0], &lab.lab_dir().join("server1"))?;
    check_verified(&op["machines"][0]);
    assert_eq!(lab.deploys()?.values().sum::<usize>(), 1, "deployed once across the restart");
    Ok(())
}

/// The plan the backup test applies: the reference lab's MAAS settings and subnet (no router, no machines: the
/// sim's machines are enlisted already).
const BACKUP_LAB: &str = r#"
[maas]
upstream_dns = ["172.20.129.131"]
kernel_opts = "net.ifnames=0"

[[images]]
release = "jammy"

[subnet]
cidr = "172.16.0.0/20"
dns_servers = ["172.20.129.131"]
dhcp = true

[[subnet.ranges]]
type = "dynamic"
start = "172.16.11.1"
end = "172.16.14.255"
comment = "MAAS dynamic"
"#;

/// Every file under `root`, by path relative to it.
fn files_under(root: &Path) -> Result<BTreeMap<PathBuf, PathBuf>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.insert(path.strip_prefix(root)?.to_path_buf(), path);
            }
        }
    }
    Ok(out)
}

/// Issue 11: `coordinator backup` of a coordinator that applied a lab plan and ran a redeploy, restored elsewhere,
/// holds every file of its state directory byte for byte (mode kept) and every table row for row; only what
/// `store::StateDir` says is not backed up (the WAL, files being written) is left out.
#[test]
fn backup_after_a_lab_apply_and_a_redeploy_restores_every_file_and_table() -> Result<()> {
    use store::state_dir::Backup;

    let mut lab =
        Lab::start_with("\n[lab]\nreconcile_interval = \"1s\"\nwait_poll = \"100ms\"\nwait_timeout = \"120s\"\n")?;
    let plan = lab.dir.path().join("lab.toml");
    std::fs::write(&plan, BACKUP_LAB)?;
    let applied = lab.fleetctl(&["apply", plan.to_str().context("utf-8 path")?, "--yes"])?;
    assert!(applied.status.success(), "apply failed: {}{}", stdout(&applied), stderr(&applied));
    assert!(stdout(&applied).contains("Apply complete"), "{}", stdout(&applied));
    let output = lab.fleetctl(&["--output", "json", "redeploy", "server1", "--wait"])?;
    assert!(output.status.success(), "redeploy failed: {}{}", stdout(&output), stderr(&output));
    let last: Value = serde_json::from_str(stdout(&output).lines().last().context("output")?)?;
    assert_eq!(last["state"], "succeeded", "{last:#}");

    // The admin commands that write into the state directory, while the server runs.
    let state = store::StateDir::new(lab.state());
    let admin = |args: &[&str]| -> Result<()> {
        let mut command = Command::new(bin("coordinator"));
        command.args(args).arg("--state-dir").arg(state.root());
        let output = run(command, Duration::from_secs(60))?;
        if !output.status.success() {
            bail!("coordinator {args:?} failed: {}{}", stdout(&output), stderr(&output));
        }
        Ok(())
    };
    admin(&["operators", "add", "ops", "--bearer"])?;
    let shim = lab.dir.path().join("shim");
    admin(&["router-cert", "issue", "--san", "127.0.0.1", "--out", shim.to_str().context("utf-8 path")?])?;
    admin(&["ca", "rotate"])?;
    wait_until("the reconciler to store its memory", Duration::from_secs(30), || {
        state.lab_reconcile().exists().then_some(())
    })?;

    // Stopped, so the source stays as it is while it is compared (the backup itself works beside a running server).
    lab.coordinator.take().context("the coordinator runs")?.terminate(Duration::from_secs(20))?;
    assert_eq!(state.unknown()?, Vec::<PathBuf>::new(), "files a backup would not know");
    let backup = lab.dir.path().join("backup");
    admin(&["backup", backup.to_str().context("utf-8 path")?])?;
    let restored = store::StateDir::new(lab.dir.path().join("restored"));
    let mut command = Command::new(bin("coordinator"));
    command.arg("restore").arg(&backup).arg("--state-dir").arg(restored.root());
    let output = run(command, Duration::from_secs(60))?;
    assert!(output.status.success(), "restore failed: {}", stderr(&output));

    // Every file: the same bytes and mode, or (the database) the same rows in every table.
    let source = files_under(state.root())?;
    let copy = files_under(restored.root())?;
    let mut expected = Vec::new();
    for (relative, path) in &source {
        let top = relative.components().next().context("a name")?.as_os_str().to_str().context("utf-8 name")?;
        let entry =
            store::StateDir::entry(top).with_context(|| format!("{} is unknown to StateDir", path.display()))?;
        match entry.backup {
            Backup::WithDatabase | Backup::Skip => continue,
            Backup::Database => {}
            Backup::Copy { .. } | Backup::Tree => {
                let restored_file = restored.root().join(relative);
                assert_eq!(std::fs::read(path)?, std::fs::read(&restored_file)?, "{} differs", relative.display());
                let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
                assert_eq!(mode(path)?, mode(&restored_file)?, "{} has another mode", relative.display());
            }
        }
        expected.push(relative.clone());
    }
    assert_eq!(copy.keys().cloned().collect::<Vec<_>>(), expected, "the restored directory holds exactly these");
    for needed in [
        state.lab_applied(),
        state.lab_reconcile(),
        state.next_ca_key(),
        state.router_client_key(),
        state.operator("ops").join("ops.token"),
        state.operator("admin").join("admin.key"),
    ] {
        assert!(needed.exists(), "the scenario wrote {}", needed.display());
    }
    let tables = store::backup::tables(&restored.database())?;
    assert_eq!(tables, store::backup::tables(&state.database())?, "the restored tables differ");
    for table in ["operations", "enroll_tokens", "token_enrollments", "agent_certs", "operators", "audit", "machines"] {
        assert!(tables.get(table).is_some_and(|rows| !rows.is_empty()), "{table} is empty: {tables:#?}");
    }
    Ok(())
}
