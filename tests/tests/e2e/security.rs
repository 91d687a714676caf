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

// === The coordinator -> router-shim link (mTLS), and secrets out of logs, JSON and traces ===

/// The MAAS API key of the run: `consumer:token:secret`; the token secret is the part that signs.
const MAAS_SECRET: &str = "Mk7qT3zSecretOfTheMaasToken9w";
const ROUTER_PASSWORD: &str = "Rt5vX8pRouterPasswordZq2";

fn maas_key() -> String {
    format!("e2econsumer:e2etokenkey:{MAAS_SECRET}")
}

fn private_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// A tiny OpenWrt: ubus JSON-RPC over HTTP/1.1 on 127.0.0.1, with the uci calls the shim's openwrt
/// backend makes, a session that needs the right password, and a count of logins.
struct Ubus {
    addr: std::net::SocketAddr,
    state: std::sync::Arc<std::sync::Mutex<UbusState>>,
}

#[derive(Default)]
struct UbusState {
    dhcp: serde_json::Map<String, Value>,
    /// Firewall sections: name -> values (with `.type`).
    firewall: serde_json::Map<String, Value>,
    logins: usize,
    refused_logins: usize,
}

impl Ubus {
    fn start(password: &str) -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = std::sync::Arc::new(std::sync::Mutex::new(UbusState::default()));
        state.lock().expect("ubus state").dhcp =
            serde_json::from_str(r#"{"start":"100","limit":"150"}"#).expect("static JSON");
        let shared = state.clone();
        let password = password.to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let (state, password) = (shared.clone(), password.clone());
                std::thread::spawn(move || {
                    let _ = serve_ubus(stream, &state, &password);
                });
            }
        });
        Ok(Ubus { addr, state })
    }

    fn dhcp_ignored(&self) -> bool {
        self.state.lock().expect("ubus state").dhcp.get("ignore").is_some_and(|v| v == "1")
    }
}

fn serve_ubus(stream: std::net::TcpStream, state: &std::sync::Mutex<UbusState>, password: &str) -> Result<()> {
    use std::io::{BufRead, Read, Write};
    let mut reader = std::io::BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        let request: Value = serde_json::from_slice(&body)?;
        let result = ubus_call(&mut state.lock().expect("ubus state"), &request["params"], password);
        let reply = serde_json::json!({"jsonrpc": "2.0", "id": request["id"], "result": result}).to_string();
        write!(
            writer,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        )?;
    }
}

fn ubus_call(state: &mut UbusState, params: &Value, password: &str) -> Value {
    const SESSION: &str = "0123456789abcdef0123456789abcdef";
    let (sid, object, method, args) = (&params[0], &params[1], &params[2], &params[3]);
    if object == "session" && method == "login" {
        if args["password"] == password {
            state.logins += 1;
            return serde_json::json!([0, {"ubus_rpc_session": SESSION}]);
        }
        state.refused_logins += 1;
        return serde_json::json!([6]);
    }
    if sid != SESSION || object != "uci" {
        return serde_json::json!([6]);
    }
    let config = args["config"].as_str().unwrap_or_default();
    let section = args["section"].as_str();
    match (method.as_str().unwrap_or_default(), config) {
        ("get", "dhcp") => serde_json::json!([0, {"values": state.dhcp}]),
        ("get", "firewall") => {
            let kind = args["type"].as_str();
            let values: serde_json::Map<String, Value> = state
                .firewall
                .iter()
                .filter(|(_, v)| kind.is_none_or(|k| v[".type"] == k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            serde_json::json!([0, {"values": values}])
        }
        ("set", "dhcp") => {
            if let Some(values) = args["values"].as_object() {
                state.dhcp.extend(values.clone());
            }
            serde_json::json!([0])
        }
        ("delete", "dhcp") => {
            if let Some(option) = args["option"].as_str() {
                state.dhcp.remove(option);
            }
            serde_json::json!([0])
        }
        ("delete", "firewall") => {
            state.firewall.remove(section.unwrap_or_default());
            serde_json::json!([0])
        }
        ("add", "firewall") => {
            let mut values = args["values"].clone();
            values[".type"] = args["type"].clone();
            state.firewall.insert(args["name"].as_str().unwrap_or_default().to_string(), values);
            serde_json::json!([0])
        }
        ("commit" | "apply" | "confirm", _) | ("get", _) => serde_json::json!([0]),
        _ => serde_json::json!([2]),
    }
}

/// An OTLP/gRPC collector that keeps every byte it receives (OTLP protobuf carries strings verbatim)
/// and answers each export with an empty `ExportTraceServiceResponse`, speaking just enough HTTP/2.
struct Collector {
    addr: std::net::SocketAddr,
    bytes: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Collector {
    fn start() -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let bytes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let shared = bytes.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let sink = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve_h2(stream, &sink);
                });
            }
        });
        Ok(Collector { addr, bytes })
    }

    fn received(&self) -> Vec<u8> {
        self.bytes.lock().expect("collector bytes").clone()
    }
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("small frame").to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn serve_h2(stream: std::net::TcpStream, sink: &std::sync::Mutex<Vec<u8>>) -> Result<()> {
    use std::io::{Read, Write};
    const PREFACE: usize = 24;
    let mut reader = stream.try_clone()?;
    let mut writer = stream;
    writer.write_all(&h2_frame(0x4, 0, 0, &[]))?; // our SETTINGS: all defaults
    let mut buffer = Vec::new();
    let mut parsed = PREFACE;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        sink.lock().expect("collector bytes").extend_from_slice(&chunk[..n]);
        buffer.extend_from_slice(&chunk[..n]);
        while buffer.len() >= parsed + 9 {
            let header = &buffer[parsed..parsed + 9];
            let length = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            if buffer.len() < parsed + 9 + length {
                break;
            }
            let (kind, flags) = (header[3], header[4]);
            let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            let payload = buffer[parsed + 9..parsed + 9 + length].to_vec();
            parsed += 9 + length;
            match kind {
                0x4 if flags & 0x1 == 0 => writer.write_all(&h2_frame(0x4, 0x1, 0, &[]))?,
                0x6 if flags & 0x1 == 0 => writer.write_all(&h2_frame(0x6, 0x1, 0, &payload))?,
                0x0 => {
                    if length > 0 {
                        let increment = u32::try_from(length)?.to_be_bytes();
                        writer.write_all(&h2_frame(0x8, 0, 0, &increment))?;
                        writer.write_all(&h2_frame(0x8, 0, id, &increment))?;
                    }
                    if flags & 0x1 != 0 {
                        // :status 200 (static index 8), content-type: application/grpc (name index 31).
                        let mut headers = vec![0x88, 0x0f, 0x10, 16];
                        headers.extend_from_slice(b"application/grpc");
                        let mut trailers = vec![0x00, 11];
                        trailers.extend_from_slice(b"grpc-status");
                        trailers.extend_from_slice(&[1, b'0']);
                        writer.write_all(&h2_frame(0x1, 0x4, id, &headers))?;
                        writer.write_all(&h2_frame(0x0, 0, id, &[0, 0, 0, 0, 0]))?;
                        writer.write_all(&h2_frame(0x1, 0x5, id, &trailers))?;
                    }
                }
                _ => {}
            }
        }
    }
}

/// maas-sim with a known key, a TLS coordinator with `[maas]` (key file 0600), the shim's and the
/// coordinator's certificates from `coordinator router-cert issue`, and a `router-shim serve` with the
/// openwrt backend (password in a 0600 file) against [`Ubus`], requiring client certificates.
struct RouterLab {
    dir: tempfile::TempDir,
    _sim: Proc,
    coordinator: Coordinator,
    shim: Proc,
    shim_addr: std::net::SocketAddr,
    ubus: Ubus,
    collector: Collector,
    /// Every log file a process of the run wrote.
    logs: Vec<PathBuf>,
}

impl RouterLab {
    fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let collector = Collector::start()?;
        let otel = |command: &mut Command| {
            command
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", collector.addr))
                .env("OTEL_BSP_SCHEDULE_DELAY", "200")
                .env("RUST_LOG", "debug");
        };
        let sim_log = dir.path().join("maas-sim.log");
        let mut command = Command::new(bin("maas-sim"));
        command
            .args(["--listen", "127.0.0.1:0", "--time-scale", "0.01", "--api-key", &maas_key(), "--state-dir"])
            .arg(dir.path().join("sim"));
        std::fs::create_dir_all(dir.path().join("sim"))?;
        command.stderr(std::fs::File::create(&sim_log)?);
        let mut sim = Proc::spawn("maas-sim", command)?;
        let sim_addr = sim.wait_listening(START)?;

        let key_file = dir.path().join("maas.key");
        private_file(&key_file, &format!("{}\n", maas_key()))?;
        let config = dir.path().join("coordinator.toml");
        std::fs::write(
            &config,
            format!(
                "[maas]\nurl = \"http://{sim_addr}/MAAS\"\napi_key_file = \"{}\"\npoll_interval = \"300ms\"\n\
                 request_timeout = \"2s\"\nconnect_timeout = \"1s\"\nretries = 0\n\
                 [lab]\nwait_poll = \"100ms\"\nwait_timeout = \"120s\"\n",
                key_file.display()
            ),
        )?;
        let state = dir.path().join("state");
        let log = dir.path().join("coordinator.log");
        let mut command = Command::new(bin("coordinator"));
        command.args(["serve", "--listen", "127.0.0.1:0", "--config"]).arg(&config).arg("--state-dir").arg(&state);
        command.stderr(std::fs::File::create(&log)?);
        otel(&mut command);
        let mut proc = Proc::spawn("coordinator", command)?;
        let addr = proc.wait_listening(START)?;
        let coordinator = Coordinator { proc, addr, state: state.clone(), log: log.clone() };

        // One command: the shim's server certificate and the coordinator's client certificate.
        let mut command = Command::new(bin("coordinator"));
        command.args(["router-cert", "issue", "--san", "127.0.0.1", "--san", "localhost", "--out"]);
        command.arg(dir.path().join("shim-tls")).arg("--state-dir").arg(&state);
        let issued = run(command, Duration::from_secs(30))?;
        assert!(issued.status.success(), "router-cert issue: {}", stderr(&issued));
        let printed = stdout(&issued);
        assert!(printed.contains("tls_ca = "), "router-cert issue prints the shim's TLS lines: {printed}");

        let ubus = Ubus::start(ROUTER_PASSWORD)?;
        let credentials = dir.path().join("router.credentials");
        private_file(&credentials, &format!("root:{ROUTER_PASSWORD}\n"))?;
        let shim_config = dir.path().join("router-shim.toml");
        std::fs::write(
            &shim_config,
            format!(
                "backend = \"openwrt\"\nlan_prefix = \"172.16.0.0/20\"\nstate_dir = \"{}\"\n\
                 protected_forwards = [\"main-ssh\"]\nconfirm_timeout = \"20s\"\n\
                 [openwrt]\nurl = \"http://{}/ubus\"\ncredentials_file = \"{}\"\ntimeout = \"5s\"\n{printed}",
                dir.path().join("shim-state").display(),
                ubus.addr,
                credentials.display()
            ),
        )?;
        let shim_log = dir.path().join("router-shim.log");
        let mut command = Command::new(bin("router-shim"));
        command.arg("--config").arg(&shim_config).args(["serve", "--listen", "127.0.0.1:0"]);
        command.stderr(std::fs::File::create(&shim_log)?);
        otel(&mut command);
        let mut shim = Proc::spawn("router-shim", command)?;
        let shim_addr = shim.wait_listening(START)?;
        std::fs::write(dir.path().join("lab.toml"), router_lab(shim_addr))?;
        Ok(RouterLab {
            dir,
            _sim: sim,
            coordinator,
            shim,
            shim_addr,
            ubus,
            collector,
            logs: vec![sim_log, log, shim_log],
        })
    }

    fn fleetctl(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut command = Command::new(bin("fleetctl"));
        command.arg("--config").arg(self.coordinator.state.join("client.toml")).args(args);
        command.current_dir(self.dir.path());
        run(command, Duration::from_secs(180))
    }
}

fn router_lab(shim: std::net::SocketAddr) -> String {
    format!(
        r#"
[maas]
upstream_dns = ["172.20.129.131"]

[subnet]
cidr = "172.16.0.0/20"
dhcp = true

[[subnet.ranges]]
type = "dynamic"
start = "172.16.11.1"
end = "172.16.14.255"

[router]
shim = "https://127.0.0.1:{}"
dhcp = false

[[router.forwards]]
name = "main-ssh"
external_port = 2222
to = "172.16.0.3:22"
protected = true
"#,
        shim.port()
    )
}

#[test]
fn the_coordinator_reaches_the_router_shim_over_mutual_tls_and_clients_without_a_certificate_are_refused() -> Result<()>
{
    let lab = RouterLab::start()?;

    // The coordinator presents the client certificate `router-cert issue` left in its state directory.
    let plan = lab.fleetctl(&["--output", "json", "plan", "lab.toml"])?;
    assert!(plan.status.success(), "plan over mTLS: {}{}", stdout(&plan), stderr(&plan));
    let steps: Value = serde_json::from_str(&stdout(&plan))?;
    let summaries = steps["steps"].to_string();
    assert!(summaries.contains("main-ssh"), "the plan read the router through the shim: {summaries}");
    assert!(lab.ubus.state.lock().expect("ubus state").logins >= 1, "the shim logged in to the router");

    // Without its client certificate the coordinator is refused by the shim.
    let client_dir = lab.coordinator.state.join("router-client");
    let aside = lab.dir.path().join("router-client-aside");
    std::fs::rename(&client_dir, &aside)?;
    let refused = lab.fleetctl(&["plan", "lab.toml"])?;
    assert_eq!(refused.status.code(), Some(69), "{}{}", stdout(&refused), stderr(&refused));
    let message = format!("{}{}", stdout(&refused), stderr(&refused));
    assert!(message.contains(&lab.shim_addr.port().to_string()), "the address tried is named: {message}");
    std::fs::rename(&aside, &client_dir)?;

    // Another client that trusts the shim's CA but has no certificate changes nothing.
    let mut command = Command::new(bin("router-shim"));
    command
        .args(["ensure-dhcp-off", "--interface", "lo", "--window", "1s", "--shim"])
        .arg(format!("https://127.0.0.1:{}", lab.shim_addr.port()))
        .arg("--ca")
        .arg(lab.coordinator.state.join("ca.pem"));
    let anonymous = run(command, Duration::from_secs(30))?;
    assert!(!anonymous.status.success(), "a client without a certificate is refused: {}", stdout(&anonymous));
    assert!(!lab.ubus.dhcp_ignored(), "the refused client did not switch the router's DHCP");

    // With it again: apply goes through the shim and changes the router.
    let applied = lab.fleetctl(&["apply", "lab.toml", "--yes"])?;
    assert!(applied.status.success(), "apply over mTLS: {}{}", stdout(&applied), stderr(&applied));
    assert!(lab.ubus.dhcp_ignored(), "the router's DHCP was switched off through the shim");
    assert!(lab.ubus.state.lock().expect("ubus state").firewall.contains_key("mf_main_ssh"));
    Ok(())
}

#[test]
fn logs_json_output_and_traces_of_a_run_hold_neither_the_maas_key_nor_the_router_password() -> Result<()> {
    let mut lab = RouterLab::start()?;
    let mut outputs = Vec::new();
    for args in [
        &["--output", "json", "plan", "lab.toml"][..],
        &["--output", "json", "apply", "lab.toml", "--yes"],
        &["--output", "json", "plan", "lab.toml"],
        &["--output", "json", "report"],
        &["report"],
        &["export"],
        &["--output", "json", "status"],
        &["--output", "json", "audit"],
    ] {
        let output = lab.fleetctl(args)?;
        assert!(output.status.success(), "fleetctl {args:?}: {}{}", stdout(&output), stderr(&output));
        outputs.push((format!("fleetctl {args:?}"), format!("{}\n{}", stdout(&output), stderr(&output))));
    }
    assert!(lab.ubus.dhcp_ignored(), "the run really drove the router");
    // A wrong password is reported without being shown: the shim's error names the router, not the secret.
    assert_eq!(lab.ubus.state.lock().expect("ubus state").refused_logins, 0);

    // Stop the servers so their last spans are flushed to the collector and their logs are complete.
    assert!(lab.coordinator.proc.terminate(Duration::from_secs(20))?.success());
    assert!(lab.shim.terminate(Duration::from_secs(20))?.success());
    let traces = lab.collector.received();
    let traces_text = String::from_utf8_lossy(&traces).into_owned();
    assert!(traces_text.contains("coordinator"), "the coordinator exported spans ({} bytes)", traces.len());
    // Strings travel verbatim: the span of the plan's MAAS read of subnets is there by name.
    assert!(traces_text.contains("subnets"), "the MAAS spans reached the collector");
    let coordinator_log = std::fs::read_to_string(&lab.coordinator.log)?;
    assert!(coordinator_log.contains("coordinator listening"), "the log was captured: {coordinator_log}");
    // The shim gets the same OTLP variables; it opens no spans today, so only its logs hold its words.

    let mut texts = outputs;
    for log in &lab.logs {
        texts.push((log.display().to_string(), std::fs::read_to_string(log)?));
    }
    texts.push(("OTLP traces".to_string(), traces_text));
    let key = maas_key();
    for (what, text) in &texts {
        assert!(!text.is_empty() || what.contains("export"), "{what} is empty");
        assert!(!text.contains(MAAS_SECRET), "{what} holds the MAAS token secret");
        assert!(!text.contains(&key), "{what} holds the MAAS API key");
        assert!(!text.contains(ROUTER_PASSWORD), "{what} holds the router password");
    }
    Ok(())
}
