//! The built `agent run` binary against the fake coordinator: its stdout contract, SIGTERM, and the
//! re-exec past its memory budget.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::Server;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::timeout;

fn spawn_agent(config: &Path, state_dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(state_dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(state_dir.join("stderr.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("the agent binary starts")
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> Option<String> {
    timeout(Duration::from_secs(20), lines.next_line()).await.expect("a stdout line within 20 s").unwrap()
}

async fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().expect("still running").to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(status.success());
    timeout(Duration::from_secs(10), child.wait()).await.expect("the agent exits within 10 s of SIGTERM").unwrap()
}

fn write_config(dir: &Path, addr: std::net::SocketAddr, extra: &str) -> std::path::PathBuf {
    let path = dir.join("agent.toml");
    let text = format!("coordinator = \"{addr}\"\ninsecure = true\nhostname = \"bin-host\"\n{extra}");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn run_prints_only_the_enrolled_line_and_stops_cleanly_on_sigterm() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut server = Server::start(listener, 0);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), addr, "interval = \"200ms\"\n");
    let mut child = spawn_agent(&config, dir.path());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    assert_eq!(next_line(&mut lines).await.as_deref(), Some("enrolled machine_id=m-1"));
    loop {
        if let support::Event::Heartbeat(heartbeat) = server.next_event().await
            && !heartbeat.samples.is_empty()
        {
            assert_eq!(heartbeat.machine_id, "m-1");
            break;
        }
    }

    let status = terminate(&mut child).await;
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM");
    assert_eq!(next_line(&mut lines).await, None, "nothing else on stdout");
    let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(stderr.contains("machine_id=m-1"), "the machine id is logged: {stderr}");
    server.shut_down().await;
}

#[tokio::test]
async fn re_executes_itself_past_the_memory_budget_and_keeps_streaming() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut server = Server::start(listener, 0);
    let dir = tempfile::tempdir().unwrap();
    // Any agent is above 4 MiB, so it re-executes once it has taken 10 samples.
    let config = write_config(dir.path(), addr, "interval = \"200ms\"\nmemory_budget = \"4MiB\"\n");
    let mut child = spawn_agent(&config, dir.path());
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    assert_eq!(next_line(&mut lines).await.as_deref(), Some("enrolled machine_id=m-1"));
    // The new image enrolls again (same process id, same agent id) and streams on.
    assert_eq!(next_line(&mut lines).await.as_deref(), Some("enrolled machine_id=m-1"));
    assert_eq!(child.id(), pid, "exec keeps the process");
    let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(stderr.contains("memory budget exceeded; saving the buffer and re-executing"), "{stderr}");
    let mut enrolls = Vec::new();
    loop {
        match server.next_event().await {
            support::Event::Enroll(enroll) => enrolls.push(enroll.agent_id),
            support::Event::Heartbeat(heartbeat) if !heartbeat.samples.is_empty() && enrolls.len() >= 2 => break,
            _ => {}
        }
    }
    assert_eq!(enrolls[0], enrolls[1], "the agent id survives the re-exec");

    let status = terminate(&mut child).await;
    assert_eq!(status.code(), Some(0));
    server.shut_down().await;
}
