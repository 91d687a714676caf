//! The `coordinator` binary, and `fleetctl` against a coordinator: exit codes, readiness, JSON on stdout, clean
//! SIGTERM. (fleetctl alone is tested in its own crate, `fleetctl/tests/binary.rs`.)

use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use coordinator::config::{Config, Overrides};
use proto::v1 as pb;
use proto::v1::agent_service_client::AgentServiceClient;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn run(binary: &str, args: &[&str]) -> Output {
    let output = timeout(DEADLINE, Command::new(binary).args(args).kill_on_drop(true).output())
        .await
        .expect("the command finishes")
        .expect("the command starts");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The `fleetctl` binary. It belongs to its own crate, which does not depend on the coordinator, so Cargo cannot
/// hand its path to these tests: it is found beside the coordinator binary, in the same target folder. When it is
/// missing it is built once per test process; it is rebuilt by `scripts/test`, by `cargo build --workspace --bins`
/// and by any test run that includes `-p fleetctl` (after changing fleetctl, run one of those first, or this test
/// runs the binary built before the change).
fn fleetctl() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let profile_dir = Path::new(env!("CARGO_BIN_EXE_coordinator")).parent().expect("the binaries' folder");
        let path = profile_dir.join("fleetctl");
        if !path.exists() {
            let target_dir = profile_dir.parent().expect("the target folder");
            let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
                Some("debug") | None => "dev",
                Some(other) => other,
            };
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("coordinator/ is in the workspace");
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "-p", "fleetctl", "--bin", "fleetctl", "--profile", profile, "--target-dir"])
                .arg(target_dir)
                .current_dir(workspace)
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building fleetctl failed");
        }
        assert!(path.exists(), "{} is missing; run `cargo build -p fleetctl`", path.display());
        path.to_str().expect("a UTF-8 target path").to_string()
    })
}

/// A coordinator served in-process, plaintext (TLS and enrollment security have their own tests in
/// the library), and its client.toml.
async fn in_process(state: &Path) -> (CancellationToken, tokio::task::JoinHandle<()>, String) {
    let overrides = Overrides { listen: None, state_dir: Some(state.to_owned()), insecure: true };
    let config = Config::from_sources(None, &std::collections::HashMap::<String, String>::new(), &overrides).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = CancellationToken::new();
    let prepared = coordinator::server::prepare(listener, config, stop.clone()).await.unwrap();
    let url = format!("http://{}", prepared.addr());
    let server = tokio::spawn(async move { prepared.run().await.unwrap() });
    (stop, server, url)
}

#[tokio::test]
async fn fleetctl_status_prints_json_and_check_fails_on_an_unknown_machine() {
    let state = tempfile::tempdir().unwrap();
    let (stop, server, url) = in_process(state.path()).await;
    let client_toml = state.path().join("client.toml");
    let config = client_toml.to_str().unwrap();

    let empty = run(fleetctl(), &["--config", config, "status", "--output", "json", "--check"]).await;
    assert_eq!(empty.code, 0, "{}", empty.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&empty.stdout).unwrap(),
        serde_json::json!({ "machines": [], "coordinator": { "health": "healthy" } })
    );

    // Enroll one agent that never reports: it is `unknown`, so --check exits 1.
    let channel = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.unwrap();
    let request = pb::EnrollRequest { agent_id: "a1".into(), hostname: "server1".into(), ..Default::default() };
    AgentServiceClient::new(channel).enroll(request).await.unwrap();

    let status = run(fleetctl(), &["--config", config, "status", "--output", "json", "--check"]).await;
    assert_eq!(status.code, 1, "{}", status.stderr);
    let doc: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(doc["machines"][0]["hostname"], "server1");
    assert_eq!(doc["machines"][0]["health"], "unknown");
    assert_eq!(doc["machines"][0]["last_seen"], Value::Null);
    let plain = run(fleetctl(), &["--config", config, "status"]).await;
    assert_eq!(plain.code, 0);
    assert!(plain.stdout.contains("server1") && plain.stdout.contains("never"), "{}", plain.stdout);

    let events = run(fleetctl(), &["--config", config, "events", "--output", "json"]).await;
    assert_eq!(events.code, 0, "{}", events.stderr);
    let first: Value = serde_json::from_str(events.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "enrolled");
    assert_eq!(first["hostname"], "server1");

    let show = run(fleetctl(), &["--config", config, "machines", "show", "server1", "--output", "json"]).await;
    assert_eq!(show.code, 0, "{}", show.stderr);
    assert_eq!(serde_json::from_str::<Value>(&show.stdout).unwrap()["agent_id"], "a1");
    let missing = run(fleetctl(), &["--config", config, "machines", "show", "nope"]).await;
    assert_eq!(missing.code, 64, "{}", missing.stderr);

    stop.cancel();
    timeout(DEADLINE, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn coordinator_rejects_a_bad_key_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("coordinator.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\n[tls]\nextra_san = [\"x\"]\n").unwrap();
    let state = dir.path().join("state");
    let args = ["serve", "--config", config.to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
    let output = run(env!("CARGO_BIN_EXE_coordinator"), &args).await;
    assert_eq!(output.code, 64, "{}", output.stderr);
    let expected = format!("{}:3:1: key `tls.extra_san`: unknown field `extra_san`", config.display());
    assert!(output.stderr.contains(&expected), "{}", output.stderr);
    assert!(!state.exists(), "nothing is created before the config is valid");
}

#[tokio::test]
async fn coordinator_announces_readiness_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut child = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .args(["serve", "--insecure", "--listen", "127.0.0.1:0", "--state-dir", state.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = timeout(DEADLINE, lines.next_line()).await.unwrap().unwrap().expect("a readiness line");
    let addr = metalfleet_common::readiness::parse(&line).expect("listening addr=HOST:PORT");
    let client_toml = std::fs::read_to_string(state.join("client.toml")).unwrap();
    assert!(client_toml.contains(&format!("coordinator = \"http://{addr}\"")), "{client_toml}");
    assert!(client_toml.contains("insecure = true"), "{client_toml}");

    let status = run(fleetctl(), &["--config", state.join("client.toml").to_str().unwrap(), "status"]).await;
    assert_eq!(status.code, 0, "{}", status.stderr);

    let pid = child.id().unwrap().to_string();
    let kill = run("kill", &["-TERM", &pid]).await;
    assert_eq!(kill.code, 0);
    let exit = timeout(Duration::from_secs(15), child.wait()).await.expect("exits within the grace period").unwrap();
    assert!(exit.success(), "clean exit on SIGTERM: {exit}");
}

#[tokio::test]
async fn fleetctl_events_follow_prints_live_events_as_json_lines() {
    let state = tempfile::tempdir().unwrap();
    let (stop, server, url) = in_process(state.path()).await;
    let client_toml = state.path().join("client.toml");
    let mut follower = Command::new(fleetctl())
        .args(["--config", client_toml.to_str().unwrap(), "events", "--follow", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();

    let channel = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.unwrap();
    let request = pb::EnrollRequest { agent_id: "a1".into(), hostname: "live1".into(), ..Default::default() };
    AgentServiceClient::new(channel).enroll(request).await.unwrap();

    let line = timeout(DEADLINE, lines.next_line()).await.expect("an event line in time").unwrap().unwrap();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["kind"], "enrolled");
    assert_eq!(event["hostname"], "live1");
    for key in ["id", "at", "machine_id", "message", "from_health", "to_health"] {
        assert!(event.get(key).is_some(), "{key} missing in {line}");
    }
    follower.kill().await.unwrap();
    stop.cancel();
    timeout(DEADLINE, server).await.unwrap().unwrap();
}
