//! Issue 7's redeploy checks: maas-sim with a deploy hook that plays cloud-init (downloads the agent from the
//! coordinator's artifacts listener, checks its SHA-256, starts it with the token from the user data), and the
//! coordinator driving redeploys through fleetctl.

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
const HOOK: &str = r#"#!/bin/sh
set -eu
D="$LAB/$MAAS_SIM_HOSTNAME"
mkdir -p "$D"
stop_agent() { if [ -f "$D/pid" ]; then kill "$(cat "$D/pid")" 2>/dev/null || true; rm -f "$D/pid"; fi; }
case "$MAAS_SIM_EVENT" in
deployed)
  stop_agent
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
  curl --fail --silent --show-error --cacert "$ETC/ca.pem" -o "$D/agent" "$URL"
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
    sim: Proc,
    sim_addr: std::net::SocketAddr,
    coordinator: Option<Proc>,
    /// The gRPC address, kept across restarts: deployed agents dial the address their user data names.
    addr: Option<std::net::SocketAddr>,
    config: PathBuf,
}

impl Lab {
    fn start() -> Result<Lab> {
        let dir = tempfile::tempdir()?;
        let lab = dir.path().join("lab");
        std::fs::create_dir_all(&lab)?;
        let hook = dir.path().join("hook.sh");
        std::fs::write(&hook, HOOK)?;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
        let sim_state = dir.path().join("sim");
        std::fs::create_dir_all(&sim_state)?;
        let mut command = Command::new(bin("maas-sim"));
        command.args(["--listen", "127.0.0.1:0", "--enlisted", "--time-scale", "0.01", "--api-key", KEY]);
        command.arg("--state-dir").arg(&sim_state).arg("--hook").arg(&hook).env("LAB", &lab);
        command.stderr(std::fs::File::create(dir.path().join("sim.log"))?);
        let mut sim = Proc::spawn("maas-sim", command)?;
        let sim_addr = sim.wait_listening(START)?;
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
                 [health]\ndisk_used_percent = 100.0\nmemory_available_percent = 0.0\nload_per_cpu = 1000.0\n",
                key_file.display(),
                bin("agent").display(),
                free_port()?
            ),
        )?;
        let mut lab = Lab { dir, sim, sim_addr, coordinator: None, addr: None, config };
        lab.start_coordinator()?;
        Ok(lab)
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
        let _ = self.sim.kill();
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
