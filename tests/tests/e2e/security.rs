//! Issue 5's end-to-end checks: enrollment tokens, agent certificates, revocation, operator roles,
//! the audit log and secret files, through the real binaries on loopback.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use metalfleet_tests::{Proc, bin, run, stderr, stdout, wait_until};
use serde_json::Value;

const START: Duration = Duration::from_secs(30);

struct Coordinator {
    proc: Proc,
    addr: std::net::SocketAddr,
    state: PathBuf,
    log: PathBuf,
}

impl Coordinator {
    fn start(dir: &Path) -> Result<Self> {
        Self::start_on(dir, &dir.join("state"), "127.0.0.1:0")
    }

    /// Starts on `listen` with `state`, appending to the log (a restart keeps the earlier lines).
    fn start_on(dir: &Path, state: &Path, listen: &str) -> Result<Self> {
        let state = state.to_path_buf();
        let log = dir.join("coordinator.log");
        let mut command = Command::new(bin("coordinator"));
        command.args(["serve", "--listen", listen, "--state-dir"]).arg(&state);
        command.stderr(std::fs::OpenOptions::new().create(true).append(true).open(&log)?);
        let mut proc = Proc::spawn("coordinator", command)?;
        let addr = proc.wait_listening(START)?;
        Ok(Coordinator { proc, addr, state, log })
    }

    fn fleetctl_as(&self, client_toml: &Path, args: &[&str]) -> Result<std::process::Output> {
        let mut command = Command::new(bin("fleetctl"));
        command.arg("--config").arg(client_toml).args(args);
        run(command, Duration::from_secs(20))
    }

    fn admin_json(&self, args: &[&str]) -> Result<Value> {
        let output = self.fleetctl_as(&self.state.join("client.toml"), args)?;
        if !output.status.success() {
            bail!("fleetctl {args:?} failed ({}): {}", output.status, stderr(&output));
        }
        serde_json::from_str(&stdout(&output)).with_context(|| format!("fleetctl {args:?} printed no JSON"))
    }

    /// A single-use token in a 0600 file.
    fn token_file(&self, dir: &Path, name: &str) -> Result<(PathBuf, String)> {
        let created = self.admin_json(&["tokens", "create", "--uses", "1", "--output", "json"])?;
        let token = created["token"].as_str().context("a token")?.to_string();
        let path = dir.join(format!("{name}.token"));
        std::fs::write(&path, format!("{token}\n"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok((path, token))
    }

    fn agent(&self, dir: &Path, name: &str, token: Option<&Path>) -> Result<(Proc, PathBuf)> {
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new(bin("agent"));
        command
            .args(["run", "--interval", "1s", "--hostname", name, "--coordinator"])
            .arg(format!("https://{}", self.addr))
            .arg("--ca-file")
            .arg(self.state.join("ca.pem"))
            .arg("--state-dir")
            .arg(dir.join(name));
        if let Some(token) = token {
            command.arg("--token-file").arg(token);
        }
        command.stderr(std::fs::File::create(&log)?);
        Ok((Proc::spawn(name, command)?, log))
    }

    fn machines(&self) -> Result<Vec<Value>> {
        let status = self.admin_json(&["status", "--output", "json"])?;
        Ok(status["machines"].as_array().context("machines")?.clone())
    }
}

#[test]
fn an_agent_without_a_token_is_refused_and_leaves_nothing_behind() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path())?;
    let (_agent, log) = coordinator.agent(dir.path(), "tokenless", None)?;
    wait_until("the refusal in the agent's log", START, || {
        std::fs::read_to_string(&log).ok().filter(|text| text.contains("token is required"))
    })?;
    assert!(coordinator.machines()?.is_empty(), "no machine stored for a refused agent");
    let agents = coordinator.admin_json(&["agents", "list", "--output", "json"])?;
    assert_eq!(agents["agents"].as_array().map(Vec::len), Some(0), "no certificate issued: {agents}");
    Ok(())
}

#[test]
fn tokens_enroll_once_revocation_shows_and_secrets_stay_out_of_logs_and_json() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path())?;
    let (token_path, token) = coordinator.token_file(dir.path(), "one")?;
    let (mut agent, agent_log) = coordinator.agent(dir.path(), "one", Some(&token_path))?;
    agent.wait_for_line("enrolled machine_id=", START)?;
    let key = dir.path().join("one/agent.key");
    assert_eq!(std::fs::metadata(&key)?.permissions().mode() & 0o777, 0o600, "the agent key is 0600");
    assert!(dir.path().join("one/agent.pem").exists(), "the agent stored its certificate");

    // The same (single-use) token does not enroll a second agent.
    let (_second, second_log) = coordinator.agent(dir.path(), "two", Some(&token_path))?;
    wait_until("the second agent's refusal", START, || {
        std::fs::read_to_string(&second_log).ok().filter(|text| text.contains("already used"))
    })?;
    assert_eq!(coordinator.machines()?.len(), 1);

    // Revoked: listed as revoked, and the agent is refused from its next call on.
    coordinator.admin_json(&["agents", "revoke", "one", "--output", "json"])?;
    let agents = coordinator.admin_json(&["agents", "list", "--output", "json"])?;
    assert_eq!(agents["agents"][0]["revoked"], true, "{agents}");
    wait_until("the agent told it is revoked", START, || {
        std::fs::read_to_string(&agent_log).ok().filter(|text| text.contains("certificate revoked"))
    })?;
    let machines = coordinator.machines()?;
    assert_eq!(machines[0]["health"], "revoked", "status shows the machine as revoked: {machines:?}");

    // Neither the token nor the agent key shows up in logs or JSON.
    let key_text = std::fs::read_to_string(&key)?;
    let key_body = key_text.lines().nth(1).context("key body")?.to_string();
    let tokens =
        coordinator.fleetctl_as(&coordinator.state.join("client.toml"), &["tokens", "list", "--output", "json"])?;
    let audit = coordinator.fleetctl_as(&coordinator.state.join("client.toml"), &["audit", "--output", "json"])?;
    for (what, text) in [
        ("coordinator log", std::fs::read_to_string(&coordinator.log)?),
        ("agent log", std::fs::read_to_string(&agent_log)?),
        ("tokens list", stdout(&tokens)),
        ("audit", stdout(&audit)),
    ] {
        assert!(!text.contains(&token), "{what} holds the token");
        assert!(!text.contains(&key_body), "{what} holds the agent key");
    }
    Ok(())
}

#[test]
fn read_only_operators_are_refused_changes_admins_are_not_and_both_are_audited() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path())?;
    let mut add = Command::new(bin("coordinator"));
    add.args(["operators", "add", "viewer", "--role", "read-only", "--state-dir"]).arg(&coordinator.state);
    let added = run(add, Duration::from_secs(20))?;
    assert!(added.status.success(), "{}", stderr(&added));
    let viewer = coordinator.state.join("operators/viewer/client.toml");
    assert_eq!(
        std::fs::metadata(coordinator.state.join("operators/viewer/viewer.key"))?.permissions().mode() & 0o777,
        0o600
    );

    let read = coordinator.fleetctl_as(&viewer, &["status", "--output", "json"])?;
    assert!(read.status.success(), "read-only may read: {}", stderr(&read));
    let refused = coordinator.fleetctl_as(&viewer, &["tokens", "create"])?;
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("needs role admin"), "{}", stderr(&refused));
    assert!(stdout(&refused).is_empty(), "no token printed");

    coordinator.admin_json(&["tokens", "create", "--machine", "server1", "--output", "json"])?;
    let audit = coordinator.admin_json(&["audit", "--output", "json"])?;
    let entries = audit["entries"].as_array().context("entries")?;
    let has = |operator: &str, result: &str| {
        entries.iter().any(|e| e["operator"] == operator && e["action"] == "CreateToken" && e["result"] == result)
    };
    assert!(has("viewer", "permission_denied"), "{audit:#}");
    assert!(has("admin", "ok"), "{audit:#}");
    Ok(())
}

#[test]
fn a_maas_api_key_file_readable_by_others_is_refused_at_start_with_the_fix() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("maas.key");
    std::fs::write(&key, "consumer:token:secret\n")?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644))?;
    let mut command = Command::new(bin("coordinator"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--maas-url", "http://127.0.0.1:9/MAAS", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--maas-api-key-file")
        .arg(&key);
    let output = run(command, Duration::from_secs(20))?;
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("(mode 0644)"), "{message}");
    assert!(message.contains(&format!("chmod 600 {}", key.display())), "{message}");
    assert!(!message.contains("secret"), "the key itself is not printed: {message}");
    Ok(())
}

fn admin_command(args: &[&str], state: &Path) -> Result<std::process::Output> {
    let mut command = Command::new(bin("coordinator"));
    command.args(args).arg("--state-dir").arg(state);
    let output = run(command, Duration::from_secs(30))?;
    if !output.status.success() {
        bail!("coordinator {args:?} failed ({}): {}", output.status, stderr(&output));
    }
    Ok(output)
}

/// Waits until every named machine reported after `after` (RFC 3339 `last_seen`).
fn reporting_after(coordinator: &Coordinator, names: &[&str], after: chrono::DateTime<chrono::Utc>) -> Option<()> {
    let machines = coordinator.machines().ok()?;
    let fresh = |name: &&str| {
        machines.iter().any(|m| {
            m["hostname"] == *name
                && m["last_seen"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t > after)
        })
    };
    names.iter().all(fresh).then_some(())
}

#[test]
fn ca_rotation_keeps_agents_reporting_and_they_renew_onto_the_new_ca() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let mut coordinator = Coordinator::start(dir.path())?;
    let listen = coordinator.addr.to_string();
    let names = ["rot1", "rot2"];
    let mut agents = Vec::new();
    for name in names {
        let (token, _) = coordinator.token_file(dir.path(), name)?;
        let (mut agent, _) = coordinator.agent(dir.path(), name, Some(&token))?;
        agent.wait_for_line("enrolled machine_id=", START)?;
        agents.push(agent);
    }
    let serials = |c: &Coordinator| -> Result<usize> {
        Ok(c.admin_json(&["agents", "list", "--output", "json"])?["agents"].as_array().map_or(0, Vec::len))
    };
    assert_eq!(serials(&coordinator)?, 2);

    // Step 1: a new CA, effective at the restart; agents are asked to renew onto it.
    admin_command(&["ca", "rotate"], &state)?;
    assert!(coordinator.proc.terminate(Duration::from_secs(15))?.success());
    let coordinator = Coordinator::start_on(dir.path(), &state, &listen)?;
    let restarted = chrono::Utc::now();
    wait_until("agents reporting after the rotation", START, || reporting_after(&coordinator, &names, restarted))?;
    wait_until("both agents renewed onto the new CA", START, || (serials(&coordinator).ok()? >= 4).then_some(()))?;

    // Step 2: the old CA goes; the server certificate now comes from the new CA.
    let mut coordinator = coordinator;
    admin_command(&["ca", "retire-old"], &state)?;
    assert!(coordinator.proc.terminate(Duration::from_secs(15))?.success());
    let coordinator = Coordinator::start_on(dir.path(), &state, &listen)?;
    let restarted = chrono::Utc::now();
    wait_until("agents reporting after the old CA retired", START, || {
        reporting_after(&coordinator, &names, restarted)
    })?;
    let machines = coordinator.machines()?;
    assert_eq!(machines.len(), 2, "no agent enrolled twice: {machines:?}");
    Ok(())
}

#[test]
fn backup_while_agents_report_then_restore_into_a_fresh_state_directory() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path())?;
    let (token, _) = coordinator.token_file(dir.path(), "keep")?;
    let (mut agent, _) = coordinator.agent(dir.path(), "keep", Some(&token))?;
    agent.wait_for_line("enrolled machine_id=", START)?;
    let shown = |c: &Coordinator| -> Option<usize> {
        let show = c.admin_json(&["machines", "show", "keep", "--output", "json"]).ok()?;
        show["history"].as_array().map(Vec::len).filter(|n| *n >= 2)
    };
    wait_until("a few samples stored", START, || shown(&coordinator))?;

    let backup = dir.path().join("backup");
    admin_command(&["backup", backup.to_str().context("utf-8 path")?], &coordinator.state)?;
    let history_at_backup = shown(&coordinator).context("history")?;
    let certs_at_backup = coordinator.admin_json(&["agents", "list", "--output", "json"])?;

    let restored = dir.path().join("restored");
    admin_command(&["restore", backup.to_str().context("utf-8 path")?], &restored)?;
    let second = dir.path().join("second");
    std::fs::create_dir_all(&second)?;
    let copy = Coordinator::start_on(&second, &restored, "127.0.0.1:0")?;
    let machines = copy.machines()?;
    assert_eq!(machines.len(), 1, "{machines:?}");
    assert_eq!(machines[0]["hostname"], "keep");
    let history = shown(&copy).context("history restored")?;
    assert!(history >= 2 && history <= history_at_backup + 2, "history {history} vs {history_at_backup}");
    let certs = copy.admin_json(&["agents", "list", "--output", "json"])?;
    assert_eq!(certs["agents"], certs_at_backup["agents"], "certificates intact");
    assert_eq!(std::fs::read(restored.join("ca.pem"))?, std::fs::read(coordinator.state.join("ca.pem"))?);
    Ok(())
}
