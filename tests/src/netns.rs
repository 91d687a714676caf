//! Network namespaces for tests: a set of namespaces named with a per-process prefix, veth links, a bridge
//! namespace as the switch, and dnsmasq instances stopped by their pid file.
//!
//! The one namespace harness of the workspace: the end-to-end tests here use it, and so do router-shim's netns
//! tests (through a dev-dependency on this crate, which in turn never depends on router-shim).
//! Everything a [`Namespaces`] creates is removed when it is dropped (every process inside is killed, then the
//! namespace is deleted), and namespaces left behind by killed test runs are swept when a new set starts.
//! Processes run inside a namespace through `ip netns exec`, because entering one from the test process would
//! need unsafe code.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};
use metalfleet_skip::Missing;

/// The start of every namespace name these helpers create (`mfl<pid>-<tag>-<kind>`).
const PREFIX: &str = "mfl";

/// The prefix router-shim's own harness used before it moved here; swept too, so that namespaces a killed run of
/// the old harness left behind still go.
const FORMER_PREFIX: &str = "mfr";

/// What a namespace test needs: root, and `ip`, `nft`, `dnsmasq` and `curl` installed (`None`: all present).
/// A test says `metalfleet_skip::require!(netns::prerequisites())`.
pub fn prerequisites() -> Option<Missing> {
    router_prerequisites().or_else(|| metalfleet_skip::tools(&["curl"]))
}

/// What a router in a namespace needs, without the end-to-end tests' `curl`: root, and `ip`, `nft` and `dnsmasq`.
pub fn router_prerequisites() -> Option<Missing> {
    metalfleet_skip::root().or_else(|| metalfleet_skip::tools(&["ip", "nft", "dnsmasq"]))
}

/// Runs a command to completion (no deadline: only short system tools go through here).
pub fn sh(program: &str, args: &[&str]) -> Result<Output> {
    Command::new(program).args(args).output().with_context(|| format!("cannot run {program} {args:?}"))
}

/// Runs a command that must succeed, returning its stdout.
pub fn must(program: &str, args: &[&str]) -> Result<String> {
    let output = sh(program, args)?;
    if !output.status.success() {
        bail!(
            "{program} {args:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Kills every process inside `ns` and deletes it; quiet when it does not exist.
pub fn delete_namespace(ns: &str) {
    if let Ok(pids) = sh("ip", &["netns", "pids", ns]) {
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = sh("kill", &["-KILL", pid]);
        }
    }
    let _ = sh("ip", &["netns", "del", ns]);
}

/// The namespaces whose name starts with `prefix`.
pub fn list(prefix: &str) -> Vec<String> {
    let Ok(list) = sh("ip", &["netns", "list"]) else { return Vec::new() };
    String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Removes namespaces of earlier runs whose test process is gone.
pub fn sweep_stale() {
    sweep_stale_prefixed(PREFIX);
    sweep_stale_prefixed(FORMER_PREFIX);
}

/// Removes the namespaces named `<prefix><pid>-…` whose process `pid` is gone (for a harness with its own prefix,
/// such as the demo's).
pub fn sweep_stale_prefixed(prefix: &str) {
    for name in list(prefix) {
        let Some((pid, _)) = name[prefix.len()..].split_once('-') else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            delete_namespace(&name);
        }
    }
}

/// A set of namespaces for one test; all deleted on drop.
pub struct Namespaces {
    prefix: String,
    created: Vec<String>,
}

impl Namespaces {
    /// Sweeps stale namespaces, then creates one namespace per kind (with `lo` up). `tag` keeps the sets of
    /// tests that run in one process apart.
    pub fn create(tag: &str, kinds: &[&str]) -> Result<Namespaces> {
        sweep_stale();
        let mut set = Namespaces { prefix: format!("{PREFIX}{}-{tag}-", std::process::id()), created: Vec::new() };
        for kind in kinds {
            let name = set.name(kind);
            delete_namespace(&name);
            must("ip", &["netns", "add", &name])?;
            set.created.push(name.clone());
            must("ip", &["-n", &name, "link", "set", "lo", "up"])?;
        }
        Ok(set)
    }

    /// The full namespace name of `kind`.
    pub fn name(&self, kind: &str) -> String {
        format!("{}{kind}", self.prefix)
    }

    /// A command that runs `program` inside the namespace `kind`.
    pub fn command(&self, kind: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name(kind)]).arg(program);
        command
    }

    /// Runs `program args` inside `kind`; it must succeed. Returns stdout.
    pub fn must(&self, kind: &str, program: &str, args: &[&str]) -> Result<String> {
        let name = self.name(kind);
        let mut full = vec!["netns", "exec", name.as_str(), program];
        full.extend_from_slice(args);
        must("ip", &full)
    }

    /// Runs `ip -n NS ARGS`; it must succeed.
    pub fn ip(&self, kind: &str, args: &[&str]) -> Result<String> {
        let name = self.name(kind);
        let mut full = vec!["-n", name.as_str()];
        full.extend_from_slice(args);
        must("ip", &full)
    }

    /// A bridge `br0` in `kind`, up: the switch.
    pub fn bridge(&self, kind: &str) -> Result<()> {
        self.ip(kind, &["link", "add", "br0", "type", "bridge"])?;
        self.ip(kind, &["link", "set", "br0", "up"])?;
        Ok(())
    }

    /// A veth pair created directly in its two namespaces, both ends up.
    pub fn veth(&self, a: (&str, &str), b: (&str, &str)) -> Result<()> {
        let (na, nb) = (self.name(a.0), self.name(b.0));
        must("ip", &["link", "add", a.1, "netns", &na, "type", "veth", "peer", b.1, "netns", &nb])?;
        self.ip(a.0, &["link", "set", a.1, "up"])?;
        self.ip(b.0, &["link", "set", b.1, "up"])?;
        Ok(())
    }

    /// Plugs `host`'s interface `ifname` into the bridge in `switch` through port `port`.
    pub fn plug(&self, switch: &str, port: &str, host: &str, ifname: &str) -> Result<()> {
        self.veth((host, ifname), (switch, port))?;
        self.ip(switch, &["link", "set", port, "master", "br0"])?;
        Ok(())
    }

    /// The MAC address of `ifname` in `kind`, lower case.
    pub fn mac(&self, kind: &str, ifname: &str) -> Result<String> {
        let doc: serde_json::Value = serde_json::from_str(&self.ip(kind, &["-j", "link", "show", ifname])?)?;
        doc[0]["address"].as_str().map(str::to_ascii_lowercase).context("ip -j link show printed no address")
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.created.iter().rev() {
            delete_namespace(name);
        }
    }
}

/// A dnsmasq started inside a namespace (it daemonises), stopped by its pid file on drop.
pub struct Dnsmasq {
    pub conf: PathBuf,
    pub pid_file: PathBuf,
}

impl Dnsmasq {
    /// Writes `config` to `dir/NAME.conf` and starts dnsmasq with it inside `kind`.
    pub fn start(ns: &Namespaces, kind: &str, dir: &Path, name: &str, config: &str) -> Result<Dnsmasq> {
        let conf = dir.join(format!("{name}.conf"));
        let pid_file = dir.join(format!("{name}.pid"));
        std::fs::write(&conf, config)?;
        let dnsmasq = Dnsmasq { conf, pid_file };
        ns.must(kind, "dnsmasq", &[&dnsmasq.conf_arg(), &dnsmasq.pid_arg()])?;
        if dnsmasq.pid().is_none() {
            bail!("dnsmasq {name} wrote no pid file");
        }
        Ok(dnsmasq)
    }

    pub fn conf_arg(&self) -> String {
        format!("--conf-file={}", self.conf.display())
    }

    pub fn pid_arg(&self) -> String {
        format!("--pid-file={}", self.pid_file.display())
    }

    /// The pid in the pid file, when that process is alive.
    pub fn pid(&self) -> Option<String> {
        let pid = std::fs::read_to_string(&self.pid_file).ok()?.trim().to_string();
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// Stops it (TERM by pid).
    pub fn stop(&self) {
        if let Some(pid) = self.pid() {
            let _ = sh("kill", &["-TERM", &pid]);
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}
