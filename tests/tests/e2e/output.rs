//! Issue 10's output checks: every fleetctl command that prints data, with its stdout closed by the reader, ends
//! without a panic; `export --output json` is JSON; a MAAS outage during `report`, `export` or `plan` names MAAS
//! and its URL, not the coordinator.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use metalfleet_tests::{Proc, bin, run, stderr, stdout, wait_until};
use serde_json::Value;

const START: Duration = Duration::from_secs(30);
const KEY: &str = "outcons:outtoken:outsecret";

/// A plan with a range comment that tries to forge a Markdown row and clear the screen.
const LAB: &str = r#"
[subnet]
cidr = "172.16.0.0/20"
dhcp = false

[[subnet.ranges]]
type = "reserved"
start = "172.16.15.200"
end = "172.16.15.210"
comment = "lab\n| forged | row |\u001b[2J"
"#;

struct Lab {
    sim: Proc,
    sim_addr: std::net::SocketAddr,
    coordinator: Proc,
    addr: std::net::SocketAddr,
    _agent: Proc,
}

fn start(dir: &Path) -> Result<Lab> {
    let mut command = Command::new(bin("maas-sim"));
    command.args(["--listen", "127.0.0.1:0", "--enlisted", "--time-scale", "0.01", "--api-key", KEY]);
    command.arg("--state-dir").arg(dir.join("sim"));
    std::fs::create_dir_all(dir.join("sim"))?;
    let mut sim = Proc::spawn("maas-sim", command)?;
    let sim_addr = sim.wait_listening(START)?;
    let key_file = dir.join("maas.key");
    std::fs::write(&key_file, format!("{KEY}\n"))?;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
    let config = dir.join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval = \"500ms\"\n\n[health]\nload_per_cpu = 1000.0\ndisk_used_percent = 100.0\n\
             memory_available_percent = 0.0\n\n[maas]\nurl = \"http://{sim_addr}/MAAS\"\napi_key_file = \"{}\"\n\
             poll_interval = \"200ms\"\nrequest_timeout = \"2s\"\nconnect_timeout = \"1s\"\nretries = 0\n",
            key_file.display()
        ),
    )?;
    let mut command = Command::new(bin("coordinator"));
    command.arg("serve").arg("--insecure").arg("--config").arg(&config);
    command.arg("--state-dir").arg(dir.join("state")).args(["--listen", "127.0.0.1:0"]);
    let mut coordinator = Proc::spawn("coordinator", command)?;
    let addr = coordinator.wait_listening(START)?;
    let mut command = Command::new(bin("agent"));
    command.args(["run", "--insecure", "--coordinator", &addr.to_string(), "--hostname", "server1"]);
    command.args(["--interval", "300ms"]).arg("--state-dir").arg(dir.join("agent"));
    let agent = Proc::spawn("agent server1", command)?;
    std::fs::write(dir.join("lab.toml"), LAB)?;
    Ok(Lab { sim, sim_addr, coordinator, addr, _agent: agent })
}

impl Lab {
    fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(bin("fleetctl"));
        command.args(["--coordinator", &format!("http://{}", self.addr), "--insecure"]).args(args);
        command.current_dir(dir);
        command
    }

    fn fleetctl(&self, dir: &Path, args: &[&str]) -> Result<Output> {
        run(self.command(dir, args), Duration::from_secs(60))
    }

    fn ok(&self, dir: &Path, args: &[&str]) -> Result<String> {
        let output = self.fleetctl(dir, args)?;
        if !output.status.success() {
            bail!("fleetctl {args:?} failed ({}): {}\n{}", output.status, stdout(&output), stderr(&output));
        }
        Ok(stdout(&output))
    }
}

/// Runs `command` with stdout the write end of a pipe whose read end is already closed (as `| head -0` does, but
/// without the race of when `head` exits): its first write fails with EPIPE. Returns its exit code and stderr.
fn into_closed_pipe(mut command: Command, timeout: Duration) -> Result<(Option<i32>, String)> {
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    command.stdout(writer).stderr(Stdio::piped()).stdin(Stdio::null());
    let description = format!("{command:?}");
    let child = command.spawn().with_context(|| format!("starting {description}"))?;
    // The parent's copy of the write end went into `command`; drop it so only the child holds one.
    drop(command);
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => {
            let output = output?;
            Ok((output.status.code(), stderr(&output)))
        }
        Err(_) => {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            bail!("{description} did not finish within {timeout:?}")
        }
    }
}

#[test]
fn every_command_survives_a_closed_pipe_export_json_is_json_and_a_maas_outage_names_maas() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    let mut lab = start(dir)?;

    // Something to print everywhere: an enrolled agent, MAAS machines, an applied plan, events.
    wait_until("server1 to report", Duration::from_secs(30), || {
        let status: Value = serde_json::from_str(&lab.ok(dir, &["--output", "json", "status"]).ok()?).ok()?;
        status["machines"]
            .as_array()?
            .iter()
            .any(|m| m["hostname"] == "server1" && !m["last_seen"].is_null())
            .then_some(())
    })?;
    let applied = lab.ok(dir, &["apply", "lab.toml", "--yes"])?;
    assert!(applied.contains("Apply complete"), "{applied}");

    // The closed pipe: each command ends with exit 0 (or its usual check code), never a panic (exit 101).
    let commands: &[(&[&str], &[i32])] = &[
        (&["status"], &[0]),
        (&["status", "--check"], &[0, 1]),
        (&["machines", "list"], &[0]),
        (&["machines", "show", "server1"], &[0]),
        (&["events"], &[0]),
        (&["export"], &[0]),
        (&["report"], &[0]),
        (&["plan", "lab.toml", "--verbose"], &[0]),
        (&["verify"], &[0, 1, 2]),
        (&["tokens", "list"], &[0]),
        (&["agents", "list"], &[0]),
        (&["audit"], &[0]),
        (&["operations", "list"], &[0]),
    ];
    for (args, codes) in commands {
        for json in [false, true] {
            let mut all: Vec<&str> = if json { vec!["--output", "json"] } else { vec![] };
            all.extend_from_slice(args);
            // The same command with a reader prints something, so the closed pipe is really written to.
            let open = lab.fleetctl(dir, &all)?;
            assert!(!open.stdout.is_empty(), "fleetctl {all:?} printed nothing: {}", stderr(&open));
            let (code, err) = into_closed_pipe(lab.command(dir, &all), Duration::from_secs(60))?;
            assert!(!err.contains("panicked"), "fleetctl {all:?} panicked on a closed pipe: {err}");
            assert!(code.is_some_and(|c| codes.contains(&c)), "fleetctl {all:?} exited {code:?}: {err}");
        }
    }

    // export: TOML by default, the same plan as JSON with --output json.
    let toml_text = lab.ok(dir, &["export"])?;
    let json: Value = serde_json::from_str(&lab.ok(dir, &["--output", "json", "export"])?)
        .context("export --output json printed no JSON")?;
    let from_toml: toml::Table = toml::from_str(&toml_text).context("export printed no TOML")?;
    assert_eq!(json, serde_json::to_value(&from_toml)?, "the JSON export is the TOML export");
    assert_eq!(json["subnet"]["cidr"], "172.16.0.0/20", "{json}");

    // The hostile range comment reaches no terminal raw, neither in the report nor in the export.
    let report = lab.ok(dir, &["report"])?;
    assert!(!report.contains('\u{1b}') && !toml_text.contains('\u{1b}'), "{report}\n{toml_text}");
    assert!(!report.lines().any(|l| l.starts_with("| forged")), "{report}");

    // MAAS down: report, export and plan name MAAS and its URL, not the coordinator; exit 69.
    lab.sim.terminate(Duration::from_secs(10))?;
    let maas_url = format!("http://{}/MAAS", lab.sim_addr);
    for args in [&["report"][..], &["--output", "json", "report"], &["export"], &["plan", "lab.toml"]] {
        let output = lab.fleetctl(dir, args)?;
        let said = format!("{}{}", stdout(&output), stderr(&output));
        assert_eq!(output.status.code(), Some(69), "fleetctl {args:?}: {said}");
        assert!(said.contains("MAAS") && said.contains(&maas_url), "fleetctl {args:?} does not name MAAS: {said}");
        assert!(!said.contains("cannot reach the coordinator"), "fleetctl {args:?} blames the coordinator: {said}");
    }

    let status = lab.coordinator.terminate(Duration::from_secs(15))?;
    assert!(status.success(), "coordinator exited with {status}");
    Ok(())
}
