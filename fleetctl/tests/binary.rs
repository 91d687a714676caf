//! The `fleetctl` binary without a coordinator: exit codes and messages when there is none to reach, or the
//! command line is wrong. (Its tests against a running coordinator are the coordinator's `tests/binaries.rs`,
//! since fleetctl does not depend on the coordinator.)

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(30);

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn run(args: &[&str]) -> Output {
    let command = Command::new(env!("CARGO_BIN_EXE_fleetctl")).args(args).kill_on_drop(true).output();
    let output = timeout(DEADLINE, command).await.expect("the command finishes").expect("the command starts");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn fleetctl_exits_69_naming_the_address_and_64_on_bad_usage() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let address = format!("http://127.0.0.1:{port}");
    let down = run(&["--insecure", "--coordinator", &address, "status"]).await;
    assert_eq!(down.code, 69, "{}", down.stderr);
    assert!(down.stderr.contains(&address), "{}", down.stderr);
    assert!(down.stdout.is_empty());

    let no_ca = run(&["--coordinator", &format!("https://127.0.0.1:{port}"), "status"]).await;
    assert_eq!(no_ca.code, 64, "{}", no_ca.stderr);
    let bad = run(&["status", "--output", "yaml"]).await;
    assert_eq!(bad.code, 64);
    let missing_config = run(&["--config", "/nonexistent/client.toml", "status"]).await;
    assert_eq!(missing_config.code, 64, "{}", missing_config.stderr);
}
