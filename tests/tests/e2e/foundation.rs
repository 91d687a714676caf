//! Issue 2's end-to-end checks: a coordinator and agents on loopback, seen through fleetctl.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use metalfleet_tests::{Proc, bin, run, stderr, stdout, wait_until};
use serde_json::Value;

/// Agents in these tests sample every second, so three missed intervals take three seconds.
const INTERVAL_SECS: u64 = 1;
const START: Duration = Duration::from_secs(30);

/// A coordinator with its state directory, started on loopback.
struct Coordinator {
    proc: Proc,
    addr: std::net::SocketAddr,
    state: PathBuf,
}

impl Coordinator {
    /// Starts `coordinator serve` on `listen` with thresholds loose enough that a busy CI machine
    /// (load per core above 2 while tests compile) does not count as degraded.
    fn start(state: &Path, listen: &str) -> Result<Self> {
        let config = state.parent().expect("state has a parent").join("coordinator.toml");
        std::fs::write(
            &config,
            format!(
                "heartbeat_interval = \"{INTERVAL_SECS}s\"\n\n[health]\nload_per_cpu = 1000.0\ndisk_used_percent = 99.9\nmemory_available_percent = 0.1\n"
            ),
        )?;
        let mut command = Command::new(bin("coordinator"));
        command.arg("serve").arg("--config").arg(&config).arg("--state-dir").arg(state).arg("--listen").arg(listen);
        let mut proc = Proc::spawn("coordinator", command)?;
        let addr = proc.wait_listening(START)?;
        Ok(Coordinator { proc, addr, state: state.to_path_buf() })
    }

    fn client_config(&self) -> PathBuf {
        self.state.join("client.toml")
    }

    /// Runs fleetctl against this coordinator and parses its JSON output.
    fn fleetctl_json(&self, args: &[&str]) -> Result<Value> {
        let output = self.fleetctl(args)?;
        if !output.status.success() {
            bail!("fleetctl {args:?} failed ({}): {}", output.status, stderr(&output));
        }
        serde_json::from_str(&stdout(&output)).with_context(|| format!("fleetctl {args:?} printed no JSON"))
    }

    fn fleetctl(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut command = Command::new(bin("fleetctl"));
        command.arg("--config").arg(self.client_config()).args(args);
        run(command, Duration::from_secs(20))
    }

    /// The machines of `fleetctl status --output json`.
    fn machines(&self) -> Result<Vec<Value>> {
        let status = self.fleetctl_json(&["status", "--output", "json"])?;
        Ok(status["machines"].as_array().context("status has a machines array")?.clone())
    }

    /// Every stored event, from `fleetctl events --output json` (one JSON object per line).
    fn events(&self) -> Result<Vec<Value>> {
        let output = self.fleetctl(&["events", "--output", "json"])?;
        if !output.status.success() {
            bail!("fleetctl events failed: {}", stderr(&output));
        }
        stdout(&output).lines().map(|line| serde_json::from_str(line).context("event line is JSON")).collect()
    }
}

/// Mints a single-use enrollment token with fleetctl and writes it to a 0600 file for the agent.
fn token_file(coordinator: &Coordinator, dir: &Path, hostname: &str) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let created = coordinator.fleetctl_json(&["tokens", "create", "--uses", "1", "--output", "json"])?;
    let token = created["token"].as_str().context("tokens create --output json has a token")?;
    let path = dir.join(format!("{hostname}.token"));
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(file, "{token}")?;
    Ok(path)
}

fn start_agent(coordinator: &Coordinator, dir: &Path, hostname: &str) -> Result<Proc> {
    let token = token_file(coordinator, dir, hostname)?;
    let mut command = Command::new(bin("agent"));
    command
        .arg("run")
        .arg("--token-file")
        .arg(token)
        .arg("--coordinator")
        .arg(format!("https://{}", coordinator.addr))
        .arg("--ca-file")
        .arg(coordinator.state.join("ca.pem"))
        .arg("--state-dir")
        .arg(dir.join(hostname))
        .arg("--hostname")
        .arg(hostname)
        .arg("--interval")
        .arg(format!("{INTERVAL_SECS}s"));
    let mut agent = Proc::spawn(hostname, command)?;
    agent.wait_for_line("enrolled machine_id=", START)?;
    Ok(agent)
}

fn health_of<'a>(machines: &'a [Value], hostname: &str) -> Option<&'a str> {
    machines.iter().find(|m| m["hostname"] == hostname).and_then(|m| m["health"].as_str())
}

fn time(value: &Value) -> Result<DateTime<Utc>> {
    let text = value.as_str().with_context(|| format!("{value} is not a time"))?;
    Ok(DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc))
}

fn all_healthy(coordinator: &Coordinator, hostnames: &[&str]) -> Option<Vec<Value>> {
    let machines = coordinator.machines().ok()?;
    hostnames.iter().all(|h| health_of(&machines, h) == Some("healthy")).then_some(machines)
}

#[test]
fn three_agents_healthy_then_a_killed_one_is_unreachable_within_three_intervals() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(&dir.path().join("state"), "127.0.0.1:0")?;
    let names = ["alpha", "bravo", "charlie"];
    let mut agents = names.iter().map(|n| start_agent(&coordinator, dir.path(), n)).collect::<Result<Vec<_>>>()?;

    let machines = wait_until("three healthy machines", Duration::from_secs(30), || all_healthy(&coordinator, &names))?;
    assert_eq!(machines.len(), 3, "exactly the three agents: {machines:#?}");
    let ids: std::collections::HashSet<_> = machines.iter().map(|m| m["machine_id"].to_string()).collect();
    assert_eq!(ids.len(), 3, "three distinct identities");

    agents[1].kill()?;
    let machines = wait_until("bravo unreachable", Duration::from_secs(30), || {
        let machines = coordinator.machines().ok()?;
        (health_of(&machines, "bravo") == Some("unreachable")).then_some(machines)
    })?;
    assert_eq!(health_of(&machines, "alpha"), Some("healthy"));
    assert_eq!(health_of(&machines, "charlie"), Some("healthy"));

    // Judge the timing on the coordinator's own clock: last heartbeat -> state change.
    let bravo = machines.iter().find(|m| m["hostname"] == "bravo").expect("bravo listed");
    let last_seen = time(&bravo["last_seen"])?;
    let events = coordinator.events()?;
    let change = events
        .iter()
        .rev()
        .find(|e| e["hostname"] == "bravo" && e["to_health"] == "unreachable")
        .context("an event records bravo becoming unreachable")?;
    let delay = (time(&change["at"])? - last_seen).to_std()?;
    let bound = Duration::from_secs(3 * INTERVAL_SECS + 1);
    assert!(delay <= bound, "unreachable after {delay:?}, more than 3 intervals + 1 s ({bound:?})");
    Ok(())
}

#[test]
fn restarted_coordinator_keeps_machines_and_receives_buffered_samples() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let mut coordinator = Coordinator::start(&state, "127.0.0.1:0")?;
    let addr = coordinator.addr;
    let names = ["delta", "echo"];
    let _agents = names.iter().map(|n| start_agent(&coordinator, dir.path(), n)).collect::<Result<Vec<_>>>()?;
    let before = wait_until("two healthy machines", Duration::from_secs(30), || all_healthy(&coordinator, &names))?;

    let status = coordinator.proc.terminate(Duration::from_secs(15))?;
    assert!(status.success(), "coordinator exits cleanly on SIGTERM: {status}");
    let down_at = Utc::now();
    // Keep it down for a few of the agents' intervals so they have samples to buffer.
    let _ = wait_until("agents to buffer while the coordinator is down", Duration::from_secs(10), || {
        (Utc::now() - down_at).to_std().ok().filter(|d| *d >= Duration::from_secs(3 * INTERVAL_SECS))
    })?;
    let up_at = Utc::now();

    let coordinator = Coordinator::start(&state, &addr.to_string())?;
    let after = wait_until("agents back and healthy", Duration::from_secs(60), || {
        let machines = all_healthy(&coordinator, &names)?;
        let fresh = machines.iter().all(|m| time(&m["last_seen"]).map(|t| t > up_at).unwrap_or(false));
        fresh.then_some(machines)
    })?;
    let ids = |ms: &[Value]| {
        let mut ids: Vec<String> = ms.iter().map(|m| m["machine_id"].to_string()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&before), ids(&after), "no machine lost or duplicated across the restart");

    // The samples taken while the coordinator was down arrive after the reconnect.
    for name in names {
        let buffered = wait_until("buffered samples stored", Duration::from_secs(30), || {
            let show = coordinator.fleetctl_json(&["machines", "show", name, "--output", "json"]).ok()?;
            let history = show["history"].as_array()?.clone();
            let during: Vec<_> = history
                .iter()
                .filter_map(|s| time(&s["taken_at"]).ok())
                .filter(|t| *t > down_at && *t < up_at)
                .collect();
            (!during.is_empty()).then_some(during.len())
        })?;
        assert!(buffered >= 1, "{name}: samples taken during the outage were delivered");
    }
    let events = coordinator.events()?;
    assert!(
        events.iter().any(|e| e["kind"] == "enrolled" && e["hostname"] == "delta"),
        "events from before the restart are kept"
    );
    Ok(())
}

#[test]
fn malformed_configs_name_file_line_and_key_and_exit_64() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "# a comment\n\n# the key below is misspelt\nlisten_adress = \"x\"\n")?;
    let state = dir.path().join("state");
    let cases: [(&str, Vec<&std::ffi::OsStr>); 3] = [
        ("coordinator", vec!["serve".as_ref(), "--state-dir".as_ref(), state.as_os_str(), "--config".as_ref()]),
        ("agent", vec!["run".as_ref(), "--state-dir".as_ref(), state.as_os_str(), "--config".as_ref()]),
        ("fleetctl", vec!["status".as_ref(), "--config".as_ref()]),
    ];
    for (binary, args) in cases {
        let mut command = Command::new(bin(binary));
        command.args(args).arg(&bad);
        let output = run(command, Duration::from_secs(20))?;
        assert_eq!(output.status.code(), Some(64), "{binary}: {}", stderr(&output));
        let message = stderr(&output);
        assert!(message.contains(&format!("{}:4:", bad.display())), "{binary} names file and line: {message}");
        assert!(message.contains("listen_adress"), "{binary} names the key: {message}");
    }
    Ok(())
}

#[test]
fn fleetctl_exits_69_naming_the_address_when_the_coordinator_is_down() -> Result<()> {
    // Bind and release a port so nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut command = Command::new(bin("fleetctl"));
    command.args(["--insecure", "--coordinator"]).arg(format!("http://127.0.0.1:{port}")).arg("status");
    let output = run(command, Duration::from_secs(30))?;
    assert_eq!(output.status.code(), Some(69), "{}", stderr(&output));
    assert!(stderr(&output).contains(&format!("127.0.0.1:{port}")), "names the address: {}", stderr(&output));
    Ok(())
}
