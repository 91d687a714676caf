//! fleetctl's logic: where the coordinator is, and how machines and events are shown.
//!
//! Kept in the library so it is tested without running the binary. Only [`resolve_target`]
//! decides the coordinator's address: client config file, then `METALFLEET_COORDINATOR`, then flags.

pub mod lab;
pub mod maas;
pub mod operations;
pub mod output;
pub mod security;
pub mod verify;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use metalfleet_common::config::Env;
use metalfleet_common::exit;
use serde_json::{Value, json};

use self::output::{NAME_WIDTH, Table, Text, clip};
use crate::client_config::{self, ClientConfig};
use crate::config::DEFAULT_STATE_DIR;
use crate::domain::{Event, Health, MachineView, Sample};
use crate::grpc::client::{ClientError, ClientSettings};

/// The options every fleetctl command takes.
#[derive(Debug, Clone, Default)]
pub struct GlobalArgs {
    pub config: Option<PathBuf>,
    pub coordinator: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
    /// A file holding an operator bearer token (overrides client.toml's token_file).
    pub token_file: Option<PathBuf>,
}

/// A fleetctl failure and the exit code it means.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Failed(String),
    /// Stdout was closed by its reader (`fleetctl status | head -0`): the command ends quietly with exit 0.
    #[error("the output was closed by its reader")]
    OutputClosed,
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Unreachable(_) => exit::UNAVAILABLE,
            CliError::Failed(_) => exit::CHECK_FAILED,
            CliError::OutputClosed => exit::OK,
        }
    }
}

impl From<output::Error> for CliError {
    fn from(error: output::Error) -> Self {
        match error {
            output::Error::Closed => CliError::OutputClosed,
            output::Error::Write(_) => CliError::Failed(error.to_string()),
        }
    }
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        match &error {
            ClientError::Unreachable { .. } => CliError::Unreachable(error.to_string()),
            ClientError::Usage(_) => CliError::Usage(error.to_string()),
            ClientError::Status(status) if status.code() == tonic::Code::NotFound => CliError::Usage(error.to_string()),
            ClientError::Status(_) => CliError::Failed(error.to_string()),
            // MAAS or the router, not the coordinator: 69 when it may answer later, 1 when it refused.
            ClientError::Upstream { code: tonic::Code::Unavailable, .. } => CliError::Unreachable(error.to_string()),
            ClientError::Upstream { .. } => CliError::Failed(error.to_string()),
        }
    }
}

/// Where the coordinator is and how to trust it, after every source was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub url: String,
    pub ca_file: Option<PathBuf>,
    /// The client config file that was read, if any.
    pub from_file: Option<PathBuf>,
    /// The operator credential: a certificate and key, and/or a bearer token file.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

/// The client config files looked at when `--config` is not given, in order.
pub fn default_config_paths(env: &dyn Env) -> Vec<PathBuf> {
    if let Some(path) = env.var("METALFLEET_CLIENT_CONFIG") {
        return vec![PathBuf::from(path)];
    }
    let mut paths = Vec::new();
    if let Some(home) = env.var("HOME") {
        paths.push(Path::new(&home).join(".config/metalfleet").join(client_config::FILE_NAME));
    }
    paths.push(Path::new(DEFAULT_STATE_DIR).join(client_config::FILE_NAME));
    paths
}

/// Combines the client config file, `METALFLEET_COORDINATOR` and the flags.
///
/// # Errors
/// [`CliError::Usage`] when a named config file cannot be read, or no address is known.
pub fn resolve_target(args: &GlobalArgs, env: &dyn Env) -> Result<Target, CliError> {
    metalfleet_common::config::reject_empty(env).map_err(|e| CliError::Usage(e.to_string()))?;
    let explicit = args.config.clone().or_else(|| env.var("METALFLEET_CLIENT_CONFIG").map(PathBuf::from));
    let file_path = match explicit {
        Some(path) => Some(path),
        None => default_config_paths(env).into_iter().find(|p| p.exists()),
    };
    let file = match &file_path {
        Some(path) => Some(ClientConfig::load(path).map_err(|e| CliError::Usage(e.to_string()))?),
        None => None,
    };
    let url = args
        .coordinator
        .clone()
        .or_else(|| env.var("METALFLEET_COORDINATOR"))
        .or_else(|| file.as_ref().map(|f| f.coordinator.clone()))
        .ok_or_else(|| {
            CliError::Usage(format!(
                "no coordinator address: pass --coordinator URL, set METALFLEET_COORDINATOR, or create a client.toml \
                 (looked at {})",
                default_config_paths(env).iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ))
        })?;
    let insecure = args.insecure || file.as_ref().is_some_and(|f| f.insecure);
    let url = normalize_url(&url, insecure);
    let token_file = args
        .token_file
        .clone()
        .or_else(|| env.var("METALFLEET_TOKEN_FILE").map(PathBuf::from))
        .or_else(|| file.as_ref().and_then(|f| f.token_file.clone()));
    let cert_file = file.as_ref().and_then(|f| f.cert_file.clone());
    let key_file = file.as_ref().and_then(|f| f.key_file.clone());
    let ca_file = args.ca_file.clone().or_else(|| file.and_then(|f| f.ca_file));
    Ok(Target { url, ca_file, from_file: file_path, cert_file, key_file, token_file })
}

/// Adds a scheme when missing; `insecure` means plaintext, so it turns https into http.
fn normalize_url(url: &str, insecure: bool) -> String {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match (rest, insecure) {
        (Some(rest), true) => format!("http://{rest}"),
        (Some(_), false) => url.to_string(),
        (None, true) => format!("http://{url}"),
        (None, false) => format!("https://{url}"),
    }
}

/// The client settings for `target`, reading the CA file when TLS is used.
///
/// # Errors
/// [`CliError::Usage`] when the CA file cannot be read.
pub fn client_settings(target: &Target) -> Result<ClientSettings, CliError> {
    let ca_pem = match (&target.ca_file, target.url.starts_with("https://")) {
        (Some(path), true) => Some(std::fs::read_to_string(path).map_err(|e| {
            CliError::Usage(format!(
                "cannot read the CA file {}: {e}; check --ca-file or ca_file in client.toml",
                path.display()
            ))
        })?),
        _ => None,
    };
    let identity = match (&target.cert_file, &target.key_file, target.url.starts_with("https://")) {
        (Some(cert), Some(key), true) => {
            let cert_pem = std::fs::read_to_string(cert).map_err(|e| {
                CliError::Usage(format!(
                    "cannot read the certificate {}: {e}; check cert_file in client.toml",
                    cert.display()
                ))
            })?;
            let key_pem = crate::secret::read_private(key).map_err(|e| CliError::Usage(e.to_string()))?;
            Some((cert_pem, key_pem))
        }
        _ => None,
    };
    let bearer = match &target.token_file {
        Some(path) => Some(crate::secret::read_private(path).map_err(|e| CliError::Usage(e.to_string()))?),
        None => None,
    };
    Ok(ClientSettings {
        url: target.url.clone(),
        ca_pem,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(15),
        identity,
        bearer,
    })
}

// === output ===

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn optional_time(at: Option<DateTime<Utc>>) -> Value {
    at.map(|t| Value::String(rfc3339(t))).unwrap_or(Value::Null)
}

fn memory_percent(sample: &Sample) -> Option<f64> {
    (sample.memory_total_bytes > 0).then(|| sample.memory_used_bytes as f64 * 100.0 / sample.memory_total_bytes as f64)
}

/// One machine in `fleetctl status --output json`.
pub fn status_json(view: &MachineView) -> Value {
    let m = &view.machine;
    let s = view.latest_sample.as_ref();
    json!({
        "hostname": m.hostname,
        "machine_id": m.id,
        "health": m.health.as_str(),
        "health_reasons": m.health_reasons,
        "last_seen": optional_time(m.last_seen),
        "cpu_percent": s.map(|s| s.cpu_percent),
        "memory_used_bytes": s.map(|s| s.memory_used_bytes),
        "memory_total_bytes": s.map(|s| s.memory_total_bytes),
        "disk_used_percent": s.and_then(Sample::worst_disk_percent),
        "load1": s.map(|s| s.load1),
        "heartbeat_interval_seconds": f64::from(m.heartbeat_interval_ms) / 1000.0,
        "system_id": m.system_id,
        "agent_version": m.agent_version,
    })
}

/// `fleetctl status --output json`: exactly `{"machines": [...]}`.
pub fn status_document(machines: &[MachineView]) -> Value {
    json!({ "machines": machines.iter().map(status_json).collect::<Vec<_>>() })
}

/// 1 when any machine is not healthy (for `--check`), else 0.
pub fn status_exit_code(machines: &[MachineView]) -> i32 {
    if machines.iter().all(|m| m.machine.health == Health::Healthy) { exit::OK } else { exit::CHECK_FAILED }
}

/// How long ago, in words a glance can read: `4s ago`, `3m ago`, `never`.
pub fn age(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(at) = at else { return "never".to_string() };
    let seconds = (now - at).num_seconds().max(0);
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86400 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86400),
    }
}

fn percent(value: Option<f64>) -> String {
    value.map(|v| format!("{v:.0}%")).unwrap_or_else(|| "-".to_string())
}

/// The columns of `fleetctl status`, before the verdict (see [`verify::status_table`]).
pub const STATUS_HEADER: [&str; 7] = ["HOSTNAME", "HEALTH", "LAST SEEN", "CPU", "MEMORY", "DISK", "LOAD"];

/// One machine's cells under [`STATUS_HEADER`].
pub fn status_row(view: &MachineView, now: DateTime<Utc>) -> Vec<String> {
    let m = &view.machine;
    let s = view.latest_sample.as_ref();
    let health = match m.health_reasons.as_slice() {
        [] => m.health.to_string(),
        reasons => format!("{} ({})", m.health, reasons.join("; ")),
    };
    vec![
        m.hostname.clone(),
        health,
        age(m.last_seen, now),
        percent(s.map(|s| s.cpu_percent)),
        percent(s.and_then(memory_percent)),
        percent(s.and_then(Sample::worst_disk_percent)),
        s.map(|s| format!("{:.2}", s.load1)).unwrap_or_else(|| "-".to_string()),
    ]
}

/// `fleetctl status` as a table: what is wrong should show at a glance.
pub fn status_table(machines: &[MachineView], now: DateTime<Utc>) -> Text {
    if machines.is_empty() {
        return Text::of("no machines enrolled yet");
    }
    let mut table = Table::new(&STATUS_HEADER).wide(&["HEALTH"]);
    for view in machines {
        table.row(status_row(view, now));
    }
    let mut text = Text::new();
    text.table(table);
    text
}

/// One machine in `fleetctl machines list --output json`.
pub fn machine_json(view: &MachineView) -> Value {
    let m = &view.machine;
    json!({
        "hostname": m.hostname,
        "machine_id": m.id,
        "agent_id": m.agent_id,
        "health": m.health.as_str(),
        "health_reasons": m.health_reasons,
        "system_id": m.system_id,
        "mac_addresses": m.mac_addresses,
        "agent_version": m.agent_version,
        "enrolled_at": rfc3339(m.enrolled_at),
        "last_seen": optional_time(m.last_seen),
        "heartbeat_interval_seconds": f64::from(m.heartbeat_interval_ms) / 1000.0,
    })
}

pub fn machines_table(machines: &[MachineView], now: DateTime<Utc>) -> Text {
    if machines.is_empty() {
        return Text::of("no machines enrolled yet");
    }
    let mut table = Table::new(&["HOSTNAME", "MACHINE ID", "HEALTH", "SYSTEM ID", "AGENT", "ENROLLED", "LAST SEEN"]);
    for view in machines {
        let m = &view.machine;
        table.row([
            m.hostname.clone(),
            m.id.clone(),
            m.health.to_string(),
            m.system_id.clone().unwrap_or_else(|| "-".to_string()),
            m.agent_version.clone(),
            rfc3339(m.enrolled_at),
            age(m.last_seen, now),
        ]);
    }
    let mut text = Text::new();
    text.table(table);
    text
}

/// `fleetctl machines show NAME --output json`: the machine, its inventory, latest sample and history.
pub fn machine_detail_json(view: &MachineView) -> Value {
    let mut value = machine_json(view);
    let sample_json = |s: &Sample| serde_json::to_value(s).unwrap_or(Value::Null);
    value["inventory"] = view.inventory.as_ref().and_then(|i| serde_json::to_value(i).ok()).unwrap_or(Value::Null);
    value["latest_sample"] = view.latest_sample.as_ref().map(sample_json).unwrap_or(Value::Null);
    value["history"] = Value::Array(view.history.iter().map(sample_json).collect());
    value
}

/// `fleetctl machines show NAME`: one line per fact, every value escaped by [`Text`].
pub fn machine_detail_text(view: &MachineView, now: DateTime<Utc>) -> Text {
    let m = &view.machine;
    let mut out = Text::new();
    out.line(format!("hostname:      {}", m.hostname));
    out.line(format!("machine id:    {}", m.id));
    out.line(format!("agent id:      {} (version {})", m.agent_id, m.agent_version));
    out.line(format!("system id:     {}", m.system_id.as_deref().unwrap_or("-")));
    out.line(format!("health:        {}", m.health));
    for reason in &m.health_reasons {
        out.line(format!("               {reason}"));
    }
    out.line(format!(
        "last seen:     {} ({})",
        optional_time(m.last_seen).as_str().unwrap_or("never"),
        age(m.last_seen, now)
    ));
    out.line(format!("interval:      {:.1}s", f64::from(m.heartbeat_interval_ms) / 1000.0));
    out.line(format!("MACs:          {}", m.mac_addresses.join(", ")));
    match &view.inventory {
        Some(inv) => {
            out.line(format!(
                "CPU:           {} ({} cores, {} logical)",
                inv.cpu_model, inv.physical_cores, inv.logical_cpus
            ));
            out.line(format!("memory:        {} bytes", inv.memory_total_bytes));
            for disk in &inv.disks {
                out.line(format!(
                    "disk:          {} {} bytes {} {}",
                    disk.name, disk.size_bytes, disk.model, disk.serial
                ));
            }
            for nic in &inv.interfaces {
                out.line(format!(
                    "interface:     {} {} {}{}",
                    nic.name,
                    nic.mac,
                    nic.link_state,
                    if nic.is_virtual { " (virtual)" } else { "" }
                ));
            }
            out.line(format!("os:            {} {} (kernel {})", inv.os.name, inv.os.version, inv.os.kernel));
        }
        None => {
            out.line("inventory:     not reported yet");
        }
    }
    if !view.history.is_empty() {
        let mut history = Table::new(&["TAKEN AT", "CPU", "MEMORY", "DISK", "LOAD"]);
        for s in &view.history {
            history.row([
                s.taken_at.map(rfc3339).unwrap_or_else(|| "-".to_string()),
                percent(Some(s.cpu_percent)),
                percent(memory_percent(s)),
                percent(s.worst_disk_percent()),
                format!("{:.2}", s.load1),
            ]);
        }
        out.line("").line("recent samples:").table(history);
    }
    out
}

/// One event as a JSON line for `fleetctl events --output json`.
pub fn event_json(event: &Event) -> Value {
    json!({
        "id": event.id,
        "at": rfc3339(event.at),
        "machine_id": event.machine_id,
        "hostname": event.hostname,
        "kind": event.kind,
        "message": event.message,
        "from_health": event.from_health.map(Health::as_str),
        "to_health": event.to_health.map(Health::as_str),
    })
}

/// One event as a line of `fleetctl events`: hostname and kind cut to [`NAME_WIDTH`], the message whole (the line
/// is escaped when printed).
pub fn event_line(event: &Event) -> String {
    format!(
        "{}  {:<16} {:<15} {}",
        rfc3339(event.at),
        clip(&event.hostname, NAME_WIDTH),
        clip(&event.kind, NAME_WIDTH),
        event.message
    )
}

/// The coordinator's own condition in `fleetctl status --output json`: `{"health": "healthy"}` or
/// `{"health": "degraded", "since": ..., "reasons": [...]}`.
pub fn coordinator_json(degraded: Option<&crate::grpc::client::Degraded>) -> Value {
    match degraded {
        None => serde_json::json!({ "health": "healthy" }),
        Some(d) => serde_json::json!({
            "health": "degraded",
            "since": d.since.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            "reasons": d.reasons,
        }),
    }
}

/// The line `fleetctl status` prints above its table while the coordinator is degraded.
pub fn degraded_banner(degraded: Option<&crate::grpc::client::Degraded>) -> Option<String> {
    let d = degraded?;
    let since =
        d.since.map(|t| format!(" since {}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))).unwrap_or_default();
    Some(format!(
        "COORDINATOR DEGRADED{since}: {}\nAgents keep their samples until the store writes again; what follows may be behind.\n",
        d.reasons.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono::TimeZone;

    use super::*;
    use crate::domain::{FilesystemUsage, Machine};

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn check(args: GlobalArgs, vars: &[(&str, &str)], expected: Result<(&str, Option<&str>), i32>) {
        let got = resolve_target(&args, &env(vars));
        match (got, expected) {
            (Ok(target), Ok((url, ca))) => {
                assert_eq!(target.url, url);
                assert_eq!(target.ca_file, ca.map(PathBuf::from));
            }
            (Err(error), Err(code)) => assert_eq!(error.exit_code(), code, "{error}"),
            (got, expected) => panic!("got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn client_config_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(&path, "coordinator = \"https://127.0.0.1:7443\"\nca_file = \"/s/ca.pem\"\ninsecure = false\n")
            .unwrap();
        let file = path.to_str().unwrap();
        let no_home = ("HOME", "/nonexistent-home");
        check(
            GlobalArgs::default(),
            &[("METALFLEET_CLIENT_CONFIG", file), no_home],
            Ok(("https://127.0.0.1:7443", Some("/s/ca.pem"))),
        );
        check(
            GlobalArgs::default(),
            &[("METALFLEET_CLIENT_CONFIG", file), ("METALFLEET_COORDINATOR", "https://10.0.0.1:1"), no_home],
            Ok(("https://10.0.0.1:1", Some("/s/ca.pem"))),
        );
        let flags = GlobalArgs {
            config: Some(path.clone()),
            coordinator: Some("127.0.0.2:9".into()),
            ca_file: Some("/other.pem".into()),
            insecure: true,
            token_file: None,
        };
        check(
            flags,
            &[("METALFLEET_COORDINATOR", "https://10.0.0.1:1")],
            Ok(("http://127.0.0.2:9", Some("/other.pem"))),
        );
    }

    #[test]
    fn a_missing_named_config_is_a_usage_error() {
        let args = GlobalArgs { config: Some("/nonexistent/client.toml".into()), ..Default::default() };
        check(args, &[], Err(exit::USAGE));
    }

    #[test]
    fn a_bad_key_in_the_client_config_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(&path, "coordinator = \"https://x:1\"\ncafile = \"/a\"\n").unwrap();
        let args = GlobalArgs { config: Some(path.clone()), ..Default::default() };
        let error = resolve_target(&args, &env(&[])).unwrap_err();
        assert!(error.to_string().contains(":2:1: key `cafile`"), "{error}");
    }

    #[test]
    fn default_paths_follow_the_documented_order() {
        let paths = default_config_paths(&env(&[("HOME", "/home/op")]));
        assert_eq!(
            paths,
            vec![
                PathBuf::from("/home/op/.config/metalfleet/client.toml"),
                PathBuf::from("/var/lib/metalfleet/client.toml")
            ]
        );
        let named = default_config_paths(&env(&[("METALFLEET_CLIENT_CONFIG", "/x.toml"), ("HOME", "/home/op")]));
        assert_eq!(named, vec![PathBuf::from("/x.toml")]);
    }

    fn view(hostname: &str, health: Health, sample: Option<Sample>) -> MachineView {
        MachineView {
            machine: Machine {
                id: format!("id-{hostname}"),
                agent_id: "a".into(),
                hostname: hostname.into(),
                system_id: None,
                mac_addresses: vec![],
                agent_version: "0.1.0".into(),
                enrolled_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
                last_seen: sample.as_ref().map(|_| Utc.timestamp_opt(1_700_000_100, 500_000_000).unwrap()),
                heartbeat_interval_ms: 5000,
                health,
                health_reasons: if health == Health::Degraded {
                    vec!["filesystem / is 95.0% used".into()]
                } else {
                    vec![]
                },
            },
            latest_sample: sample,
            inventory: None,
            history: vec![],
        }
    }

    fn busy_sample() -> Sample {
        Sample {
            cpu_percent: 12.5,
            load1: 0.75,
            memory_total_bytes: 1000,
            memory_used_bytes: 250,
            filesystems: vec![FilesystemUsage { total_bytes: 100, available_bytes: 5, ..Default::default() }],
            ..Default::default()
        }
    }

    #[test]
    fn status_json_has_the_documented_shape() {
        let machines =
            vec![view("server1", Health::Degraded, Some(busy_sample())), view("server2", Health::Unknown, None)];
        let doc = status_document(&machines);
        let first = &doc["machines"][0];
        assert_eq!(first["hostname"], "server1");
        assert_eq!(first["health"], "degraded");
        assert_eq!(first["health_reasons"][0], "filesystem / is 95.0% used");
        assert_eq!(first["last_seen"], "2023-11-14T22:15:00.500Z");
        assert_eq!(first["cpu_percent"], 12.5);
        assert_eq!(first["memory_used_bytes"], 250);
        assert_eq!(first["memory_total_bytes"], 1000);
        assert_eq!(first["disk_used_percent"], 95.0);
        assert_eq!(first["load1"], 0.75);
        assert_eq!(first["heartbeat_interval_seconds"], 5.0);
        let second = &doc["machines"][1];
        assert_eq!(second["last_seen"], Value::Null);
        assert_eq!(second["cpu_percent"], Value::Null);
        assert_eq!(doc.as_object().unwrap().len(), 1);
        assert_eq!(status_exit_code(&machines), exit::CHECK_FAILED);
        assert_eq!(status_exit_code(&[view("ok", Health::Healthy, None)]), exit::OK);
    }

    #[test]
    fn status_table_shows_reason_and_age() {
        let now = Utc.timestamp_opt(1_700_000_104, 0).unwrap();
        let text = status_table(&[view("server1", Health::Degraded, Some(busy_sample()))], now).render();
        assert!(text.contains("server1"), "{text}");
        assert!(text.contains("degraded (filesystem / is 95.0% used)"), "{text}");
        assert!(text.contains("3s ago"), "{text}");
        assert!(text.contains("95%"), "{text}");
        assert_eq!(status_table(&[], now).render(), "no machines enrolled yet\n");
    }

    #[test]
    fn status_with_a_huge_or_forged_hostname_neither_panics_nor_forges_a_row() {
        let now = Utc.timestamp_opt(1_700_000_104, 0).unwrap();
        // The reported panic: `{:<width$}` with a width past u16::MAX ("Formatting argument out of range").
        let huge = view(&"h".repeat(70_000), Health::Healthy, Some(busy_sample()));
        let forged = view("evil\nserver2   healthy   1s ago\x1b[2K", Health::Degraded, Some(busy_sample()));
        let text = verify::status_table(&[huge, forged], &[], now).render();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.lines().all(|l| l.chars().count() < 1000), "{text}");
        assert!(text.contains("evil\\nserver2") && text.contains("\\x1b[2K"), "{text}");
        assert!(!text.contains('\x1b'));
        assert!(text.lines().next().unwrap().trim_end().ends_with("VERDICT"), "{text}");
    }

    #[test]
    fn events_print_as_json_lines() {
        let event = Event {
            id: 7,
            at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            machine_id: "m".into(),
            hostname: "server1".into(),
            kind: "health_changed".into(),
            message: "server1 is unreachable (was healthy)".into(),
            from_health: Some(Health::Healthy),
            to_health: Some(Health::Unreachable),
        };
        let line = serde_json::to_string(&event_json(&event)).unwrap();
        assert!(!line.contains('\n'));
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["id"], 7);
        assert_eq!(value["at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(value["from_health"], "healthy");
        assert_eq!(value["to_health"], "unreachable");
    }

    #[test]
    fn ages_read_at_a_glance() {
        let now = Utc.timestamp_opt(1_700_010_000, 0).unwrap();
        assert_eq!(age(None, now), "never");
        assert_eq!(age(Some(now - chrono::Duration::seconds(59)), now), "59s ago");
        assert_eq!(age(Some(now - chrono::Duration::seconds(125)), now), "2m ago");
        assert_eq!(age(Some(now + chrono::Duration::seconds(5)), now), "0s ago");
    }
}
