//! Support for the end-to-end tests: start the real metalfleet binaries, read their readiness
//! lines, wait on conditions with deadlines, and stop everything when a test ends.
//!
//! Every process a test starts is owned by a [`Proc`]; dropping it kills the process, so a failing
//! assertion never leaves a coordinator or an agent running behind the test.
#![forbid(unsafe_code)]

pub mod netns;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The folder holding the workspace's built binaries (`target/debug`), found from the test
/// executable's own path so that `CARGO_TARGET_DIR` is honoured.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/debug/deps/e2e-HASH -> target/debug
    let dir = exe.parent().expect("deps dir").to_path_buf();
    if dir.ends_with("deps") { dir.parent().expect("profile dir").to_path_buf() } else { dir }
}

/// The path of a workspace binary, building the workspace's binaries once per test process when
/// they are missing (`scripts/test` builds them beforehand, so this is only a convenience for a
/// bare `cargo test`).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let path = bin_dir().join(name);
    if !path.exists() {
        BUILT.get_or_init(|| {
            let status = Command::new(env!("CARGO"))
                .args(["build", "--workspace", "--bins"])
                .current_dir(workspace_root())
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the workspace binaries failed");
        });
    }
    assert!(path.exists(), "binary {} is missing; run `cargo build --workspace --bins`", path.display());
    path
}

/// The workspace root (the folder of the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_path_buf()
}

/// Polls `condition` until it returns `Some`, or fails after `timeout` with `what` in the message.
///
/// This is the only way the end-to-end tests wait: on a condition with a deadline, never a bare sleep.
pub fn wait_until<T>(what: &str, timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        poll_pause();
    }
}

/// The pause between two polls of a condition in [`wait_until`].
fn poll_pause() {
    // A short park keeps the poll loop from spinning a core; it is not a synchronisation point.
    std::thread::park_timeout(Duration::from_millis(100));
}

/// A running child process whose stdout lines are collected, killed when dropped.
pub struct Proc {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    new_line: Mutex<mpsc::Receiver<()>>,
}

impl Proc {
    /// Starts `command` with stdout captured (stderr inherited, so its logs show in test output).
    pub fn spawn(name: &str, mut command: Command) -> Result<Self> {
        command.stdout(Stdio::piped()).stdin(Stdio::null());
        let mut child = command.spawn().with_context(|| format!("starting {name}: {command:?}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&lines);
        let label = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{label} stdout] {line}");
                sink.lock().expect("line buffer").push(line);
                let _ = tx.send(());
            }
        });
        Ok(Proc { name: name.to_string(), child, lines, new_line: Mutex::new(rx) })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stdout line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("line buffer").clone()
    }

    /// Waits for a stdout line starting with `prefix` and returns it.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| l.starts_with(prefix)) {
                return Ok(line);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}) before printing `{prefix}`", self.name);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("{} did not print `{prefix}` within {timeout:?}", self.name);
            }
            // Wake on the next line, or re-check the exit status every 200 ms.
            let _ = self.new_line.lock().expect("receiver").recv_timeout(left.min(Duration::from_millis(200)));
        }
    }

    /// Waits for the readiness line `listening addr=HOST:PORT` and returns the address.
    pub fn wait_listening(&mut self, timeout: Duration) -> Result<SocketAddr> {
        let line = self.wait_for_line("listening addr=", timeout)?;
        metalfleet_common::readiness::parse(&line).with_context(|| format!("bad readiness line {line:?}"))
    }

    /// Sends SIGTERM and waits for the exit, failing if it takes longer than `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        self.signal("TERM")?;
        self.wait_exit(grace)
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) -> Result<()> {
        self.signal("KILL")?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends a signal by name (TERM, KILL, STOP, CONT, ...).
    pub fn signal(&self, signal: &str) -> Result<()> {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status()?;
        if !status.success() {
            bail!("kill -{signal} {} ({}) failed", self.pid(), self.name);
        }
        Ok(())
    }

    /// Waits for the process to exit within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let name = self.name.clone();
        let child = &mut self.child;
        wait_until(&format!("{name} to exit"), timeout, || child.try_wait().ok().flatten())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a command to completion with a deadline, capturing stdout and stderr.
pub fn run(mut command: Command, timeout: Duration) -> Result<Output> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
    let description = format!("{command:?}");
    let child = command.spawn().with_context(|| format!("starting {description}"))?;
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => Ok(output?),
        Err(_) => {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            bail!("{description} did not finish within {timeout:?}")
        }
    }
}

/// Stdout of a finished command as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stderr of a finished command as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
