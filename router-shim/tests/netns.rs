//! The Linux backend against real nftables and dnsmasq, in network namespaces this test creates.
//!
//! Topology (every name starts with a per-process prefix `mfr<pid>-`):
//! `router` (rlan 172.16.0.1/20, rwan 192.0.2.1/24), `sw` (a bridge: the switch), `lan` (a host at
//! 172.16.0.50 where the probe runs), `main` (172.16.0.3, a TCP listener standing for MAIN:22) and
//! `wan` (192.0.2.2, the outside). Every step runs the real `router-shim` binary under
//! `ip netns exec`, because entering a namespace from the test process would need unsafe code.
//! Namespaces and processes are removed by a Drop guard, and stale ones from killed runs are swept
//! at start. Without root or the tools, each test records its skip (`metalfleet_skip`) and returns.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use metalfleet_skip::{Missing, require, root, tools};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_router-shim");
const NS_KINDS: [&str; 5] = ["router", "sw", "lan", "main", "wan"];

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program} {args:?}: {e}"))
}

fn must(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Kills every process inside `ns` and deletes it.
fn delete_namespace(ns: &str) {
    let pids = run("ip", &["netns", "pids", ns]);
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        let _ = run("kill", &["-KILL", pid]);
    }
    let _ = run("ip", &["netns", "del", ns]);
}

/// Removes namespaces left behind by earlier runs whose process is gone.
fn sweep_stale() {
    let list = String::from_utf8_lossy(&run("ip", &["netns", "list"]).stdout).into_owned();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix("mfr") else { continue };
        let Some((pid, _)) = rest.split_once('-') else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            delete_namespace(name);
        }
    }
}

/// One lab: namespaces, dnsmasq, the MAIN listener and the shim's config; all removed on drop.
struct Lab {
    prefix: String,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(pid) = std::fs::read_to_string(self.pid_file()) {
            let _ = run("kill", &["-TERM", pid.trim()]);
        }
        for kind in NS_KINDS {
            delete_namespace(&self.ns(kind));
        }
    }
}

impl Lab {
    fn ns(&self, kind: &str) -> String {
        format!("{}{kind}", self.prefix)
    }
    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("dnsmasq.pid")
    }
    fn dnsmasq_conf(&self) -> PathBuf {
        self.dir.path().join("dnsmasq.conf")
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("router-shim.toml")
    }

    /// `tag` keeps the labs of tests that run in one process (plain `cargo test`) apart.
    fn start(tag: &str) -> Lab {
        sweep_stale();
        let mut lab = Lab {
            prefix: format!("mfr{}-{tag}-", std::process::id()),
            dir: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        };
        for kind in NS_KINDS {
            delete_namespace(&lab.ns(kind));
            must("ip", &["netns", "add", &lab.ns(kind)]);
            must("ip", &["-n", &lab.ns(kind), "link", "set", "lo", "up"]);
        }
        let (router, sw, lan, main, wan) =
            (lab.ns("router"), lab.ns("sw"), lab.ns("lan"), lab.ns("main"), lab.ns("wan"));
        must("ip", &["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        must("ip", &["-n", &sw, "link", "set", "br0", "up"]);
        for (host, ifname, port) in [(&router, "rlan", "sw1"), (&lan, "lan0", "sw2"), (&main, "main0", "sw3")] {
            must("ip", &["link", "add", ifname, "netns", host, "type", "veth", "peer", port, "netns", &sw]);
            must("ip", &["-n", &sw, "link", "set", port, "master", "br0", "up"]);
            must("ip", &["-n", host, "link", "set", ifname, "up"]);
        }
        must("ip", &["link", "add", "rwan", "netns", &router, "type", "veth", "peer", "wan0", "netns", &wan]);
        must("ip", &["-n", &router, "link", "set", "rwan", "up"]);
        must("ip", &["-n", &wan, "link", "set", "wan0", "up"]);
        must("ip", &["-n", &router, "addr", "add", "172.16.0.1/20", "dev", "rlan"]);
        must("ip", &["-n", &router, "addr", "add", "192.0.2.1/24", "dev", "rwan"]);
        must("ip", &["-n", &lan, "addr", "add", "172.16.0.50/20", "dev", "lan0"]);
        must("ip", &["-n", &main, "addr", "add", "172.16.0.3/20", "dev", "main0"]);
        must("ip", &["-n", &main, "route", "add", "default", "via", "172.16.0.1"]);
        must("ip", &["-n", &wan, "addr", "add", "192.0.2.2/24", "dev", "wan0"]);
        must("ip", &["netns", "exec", &router, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"]);

        let dir = lab.dir.path().display().to_string();
        std::fs::write(
            lab.dnsmasq_conf(),
            format!(
                "# the router's dnsmasq: DNS and DHCP on the LAN; no-ping keeps the first offer inside a 2 s probe window\ninterface=rlan\nbind-interfaces\nno-resolv\nuser=root\nport=53\nno-ping\ndhcp-range=172.16.0.100,172.16.0.200,12h\ndhcp-leasefile={dir}/leases\n"
            ),
        )
        .unwrap();
        let conf_arg = format!("--conf-file={}", lab.dnsmasq_conf().display());
        let pid_arg = format!("--pid-file={}", lab.pid_file().display());
        must("ip", &["netns", "exec", &router, "dnsmasq", &conf_arg, &pid_arg]);
        assert!(std::fs::read_to_string(lab.pid_file()).is_ok(), "dnsmasq wrote no pid file");

        std::fs::write(
            lab.config(),
            format!(
                r#"backend = "linux"
lan_prefix = "172.16.0.0/20"
state_dir = "{dir}/state"
protected_forwards = ["main-ssh"]
confirm_timeout = "60s"

[linux]
lan_interface = "rlan"
wan_interface = "rwan"
table = "metalfleet"
masquerade = true

[linux.dnsmasq]
pid_file = "{dir}/dnsmasq.pid"
config_file = "{dir}/dnsmasq.conf"
command = ["dnsmasq", "{conf_arg}", "{pid_arg}"]
"#
            ),
        )
        .unwrap();

        // MAIN:22: a listener in `main` that greets with a banner; its readiness line says when it accepts.
        let mut listener = Command::new("ip")
            .args([
                "netns",
                "exec",
                &main,
                BIN,
                "tcp-serve",
                "--listen",
                "172.16.0.3:22",
                "--banner",
                "hello-from-main",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(listener.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("listening addr=172.16.0.3:22"), "{line}");
        lab.children.push(listener);
        lab
    }

    /// Runs `router-shim --config ... ARGS` inside the router namespace.
    fn shim(&self, args: &[&str]) -> Output {
        let config = self.config().display().to_string();
        let router = self.ns("router");
        let mut full = vec!["netns", "exec", &router, BIN, "--config", &config];
        full.extend_from_slice(args);
        let output = Command::new("ip").args(&full).stdin(Stdio::null()).output().unwrap();
        eprintln!(
            "router-shim {args:?} -> {:?}\n{}{}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn shim_ok(&self, args: &[&str]) -> String {
        let output = self.shim(args);
        assert!(output.status.success(), "router-shim {args:?} failed");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs a CLI change that needs a confirmation, with `answer` typed on stdin.
    fn shim_answering(&self, args: &[&str], answer: &str) -> Output {
        let config = self.config().display().to_string();
        let router = self.ns("router");
        let mut full = vec!["netns", "exec", &router, BIN, "--config", &config];
        full.extend_from_slice(args);
        let mut child = Command::new("ip")
            .args(&full)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.as_mut().unwrap().write_all(answer.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        eprintln!(
            "router-shim {args:?} answering {answer:?} -> {:?}\n{}{}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn state(&self) -> Value {
        serde_json::from_str(&self.shim_ok(&["state", "--output", "json"])).unwrap()
    }

    fn probe(&self) -> Value {
        let output = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns("lan"),
                BIN,
                "probe-dhcp",
                "--interface",
                "lan0",
                "--window",
                "2s",
                "--output",
                "json",
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "probe failed: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    }

    fn probe_expect(&self, expect: &str) -> i32 {
        let output = run(
            "ip",
            &[
                "netns",
                "exec",
                &self.ns("lan"),
                BIN,
                "probe-dhcp",
                "--interface",
                "lan0",
                "--window",
                "2s",
                "--expect",
                expect,
            ],
        );
        output.status.code().unwrap_or(-1)
    }

    /// A TCP connection from `wan` to the router's WAN address; Some(banner) when it got through.
    fn wan_connect(&self, port: u16) -> Option<String> {
        let target = format!("192.0.2.1:{port}");
        let output = run("ip", &["netns", "exec", &self.ns("wan"), BIN, "tcp-check", &target, "--timeout", "2s"]);
        let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
        output.status.success().then_some(text)
    }

    fn table(&self) -> String {
        let output = run("ip", &["netns", "exec", &self.ns("router"), "nft", "list", "table", "ip", "metalfleet"]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn dnsmasq_alive(&self) -> bool {
        std::fs::read_to_string(self.pid_file())
            .ok()
            .is_some_and(|pid| Path::new(&format!("/proc/{}", pid.trim())).exists())
    }
}

/// What every test here needs: root for namespaces, and the router's own tools.
fn prerequisites() -> Option<Missing> {
    root().or_else(|| tools(&["ip", "nft", "dnsmasq"]))
}

#[test]
fn netns_linux_dhcp_forward_idempotency_and_reset() {
    require!(prerequisites());
    let lab = Lab::start("a");
    let original_conf = std::fs::read_to_string(lab.dnsmasq_conf()).unwrap();

    // With dnsmasq serving, the probe from the LAN sees its offer, with the router's LAN MAC.
    let router_link: Value =
        serde_json::from_str(&must("ip", &["-n", &lab.ns("router"), "-j", "link", "show", "rlan"])).unwrap();
    let router_mac = router_link[0]["address"].as_str().unwrap().to_string();
    let report = lab.probe();
    assert!(report["discovers_sent"].as_u64().unwrap() >= 3, "{report}");
    let offers = report["offers"].as_array().unwrap();
    assert_eq!(offers.len(), 1, "{report}");
    assert_eq!(offers[0]["server_identifier"], "172.16.0.1");
    assert_eq!(offers[0]["source_mac"], router_mac.as_str());
    let offered: std::net::Ipv4Addr = offers[0]["offered_ip"].as_str().unwrap().parse().unwrap();
    let pool: [std::net::Ipv4Addr; 2] = ["172.16.0.100".parse().unwrap(), "172.16.0.200".parse().unwrap()];
    assert!(offered >= pool[0] && offered <= pool[1], "{offered}");
    assert_eq!(lab.probe_expect("172.16.0.1"), 0);
    assert_eq!(lab.probe_expect("none"), 1);
    let state = lab.state();
    assert_eq!(state["dhcp_enabled"], true);
    assert_eq!(state["dhcp_pool"], "172.16.0.100-172.16.0.200");

    // DHCP off: nobody answers, DNS (dnsmasq) still runs.
    assert!(lab.shim_ok(&["dhcp", "disable"]).starts_with("changed"));
    assert_eq!(lab.state()["dhcp_enabled"], false);
    assert!(lab.probe()["offers"].as_array().unwrap().is_empty());
    assert_eq!(lab.probe_expect("none"), 0);
    assert!(lab.dnsmasq_alive(), "dnsmasq keeps serving DNS");
    assert!(lab.shim_ok(&["dhcp", "disable"]).starts_with("unchanged"));

    // Forward: before it, nothing answers on the WAN port; after it, MAIN's listener does.
    assert_eq!(lab.wan_connect(2222), None);
    let add =
        ["forward", "add", "--name", "lab-ssh", "--proto", "tcp", "--external-port", "2222", "--to", "172.16.0.3:22"];
    assert!(lab.shim_ok(&add).starts_with("changed"));
    let reached = lab.wan_connect(2222).expect("the forward reaches MAIN");
    assert!(reached.contains("hello-from-main"), "{reached}");
    let table = lab.table();
    assert!(table.contains("comment \"metalfleet:fwd:lab-ssh\""), "{table}");
    assert_eq!(must("ip", &["netns", "exec", &lab.ns("router"), "cat", "/proc/sys/net/ipv4/ip_forward"]).trim(), "1");

    // The same state twice changes nothing, not even the table's handles.
    assert!(lab.shim_ok(&add).starts_with("unchanged"));
    assert_eq!(lab.table(), table);
    let moved =
        ["forward", "add", "--name", "lab-ssh", "--proto", "tcp", "--external-port", "2222", "--to", "172.16.0.4:22"];
    assert_eq!(lab.shim(&moved).status.code(), Some(64), "another target needs --replace");
    assert_eq!(lab.table(), table);

    // Bad input: each a clear error, exit 64, nothing applied.
    for (args, message) in [
        (vec!["--external-port", "70000", "--name", "x", "--to", "172.16.0.3:22"], "out of range"),
        (vec!["--external-port", "2223", "--name", "x", "--to", "10.0.0.3:22"], "outside the LAN"),
        (vec!["--external-port", "2223", "--name", "my ssh", "--to", "172.16.0.3:22"], "no spaces"),
    ] {
        let mut full = vec!["forward", "add", "--proto", "tcp"];
        full.extend(args);
        let output = lab.shim(&full);
        assert_eq!(output.status.code(), Some(64));
        assert!(String::from_utf8_lossy(&output.stderr).contains(message), "{message}");
        assert_eq!(lab.table(), table, "nothing applied");
    }

    // Remove: the WAN port is closed again.
    assert!(lab.shim_ok(&["forward", "remove", "--name", "lab-ssh"]).starts_with("changed"));
    assert_eq!(lab.wan_connect(2222), None);
    assert!(lab.shim_ok(&["forward", "remove", "--name", "lab-ssh"]).starts_with("unchanged"));

    // Reset: the shim's table is gone, DHCP is back as found, the dnsmasq config is the original.
    lab.shim_ok(&add);
    lab.shim_ok(&["reset"]);
    assert!(!must("ip", &["netns", "exec", &lab.ns("router"), "nft", "list", "tables"]).contains("metalfleet"));
    assert_eq!(std::fs::read_to_string(lab.dnsmasq_conf()).unwrap(), original_conf);
    assert_eq!(must("ip", &["netns", "exec", &lab.ns("router"), "cat", "/proc/sys/net/ipv4/ip_forward"]).trim(), "0");
    let state = lab.state();
    assert_eq!(state["dhcp_enabled"], true);
    assert!(state["forwards"].as_array().unwrap().is_empty());
    assert_eq!(lab.probe()["offers"].as_array().unwrap().len(), 1);
    assert_eq!(lab.wan_connect(2222), None);
}

#[test]
fn netns_cli_commit_confirm_of_protected_forward() {
    require!(prerequisites());
    let lab = Lab::start("b");
    let add =
        ["forward", "add", "--name", "main-ssh", "--proto", "tcp", "--external-port", "22", "--to", "172.16.0.3:22"];
    lab.shim_ok(&add);
    assert!(lab.wan_connect(22).is_some());
    let remove = ["forward", "remove", "--name", "main-ssh", "--confirm-timeout", "5s"];

    // Answered `no`: rolled back, exit 1, SSH to MAIN still works.
    let output = lab.shim_answering(&remove, "no\n");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("rolled back"));
    assert!(lab.wan_connect(22).is_some());

    // No answer within the timeout (stdin stays open): rolled back too.
    let config = lab.config().display().to_string();
    let router = lab.ns("router");
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &router,
            BIN,
            "--config",
            &config,
            "forward",
            "remove",
            "--name",
            "main-ssh",
            "--confirm-timeout",
            "1s",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let held_stdin = child.stdin.take();
    let status = child.wait().unwrap();
    drop(held_stdin);
    assert_eq!(status.code(), Some(1));
    assert!(lab.wan_connect(22).is_some());
    assert_eq!(lab.state()["forwards"][0]["protected"], true);

    // Answered `yes`: the removal stays.
    let output = lab.shim_answering(&remove, "yes\n");
    assert!(output.status.success());
    assert_eq!(lab.wan_connect(22), None);
    assert!(lab.state()["forwards"].as_array().unwrap().is_empty());
}

#[test]
fn netns_foreign_forward_drop_is_reported() {
    require!(prerequisites());
    let lab = Lab::start("c");
    let router = lab.ns("router");
    must("ip", &["netns", "exec", &router, "nft", "add table inet fw"]);
    let chain = "add chain inet fw forward { type filter hook forward priority 0 ; policy drop ; }";
    must("ip", &["netns", "exec", &router, "nft", chain]);
    let add =
        ["forward", "add", "--name", "lab-ssh", "--proto", "tcp", "--external-port", "2222", "--to", "172.16.0.3:22"];
    let output = lab.shim(&add);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("inet fw forward would drop the forwarded traffic"), "{stderr}");
    assert!(stderr.contains("nft add rule inet fw forward ct status dnat accept"), "{stderr}");
    // The shim did not touch the foreign table, so the traffic is indeed dropped.
    assert_eq!(lab.wan_connect(2222), None);
    must("ip", &["netns", "exec", &router, "nft", "add rule inet fw forward ct status dnat accept"]);
    must("ip", &["netns", "exec", &router, "nft", "add rule inet fw forward ct state established,related accept"]);
    assert!(lab.wan_connect(2222).is_some());
}

#[test]
fn netns_coordinator_proves_dhcp_off_from_main() {
    require!(prerequisites());
    let mut lab = Lab::start("d");
    let config = lab.config().display().to_string();
    let router = lab.ns("router");
    let mut serve = Command::new("ip")
        .args(["netns", "exec", &router, BIN, "--config", &config, "serve", "--insecure", "--listen", "172.16.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(serve.stdout.take().unwrap()).read_line(&mut line).unwrap();
    lab.children.push(serve);
    let addr = line.trim().strip_prefix("listening addr=").expect("readiness line").to_string();
    let shim_url = format!("http://{addr}");
    let ensure = |lab: &Lab| {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &lab.ns("main"),
                BIN,
                "ensure-dhcp-off",
                "--shim",
                &shim_url,
                "--interface",
                "main0",
                "--window",
                "2s",
            ],
        )
    };

    // From MAIN: the shim switches DHCP off, and MAIN's own probe proves nobody answers.
    assert_eq!(lab.state()["dhcp_enabled"], true);
    let output = ensure(&lab);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("0 server(s) answered"));
    assert_eq!(lab.state()["dhcp_enabled"], false);

    // A rogue DHCP server on the segment (the `lan` host): the proof fails with it as evidence.
    let lan = lab.ns("lan");
    let rogue_conf = lab.dir.path().join("rogue.conf");
    let rogue_pid = lab.dir.path().join("rogue.pid");
    std::fs::write(
        &rogue_conf,
        format!(
            "interface=lan0\nbind-interfaces\nport=0\nno-ping\nuser=root\ndhcp-range=172.16.0.210,172.16.0.220,1h\ndhcp-leasefile={}/rogue.leases\n",
            lab.dir.path().display()
        ),
    )
    .unwrap();
    must(
        "ip",
        &[
            "netns",
            "exec",
            &lan,
            "dnsmasq",
            &format!("--conf-file={}", rogue_conf.display()),
            &format!("--pid-file={}", rogue_pid.display()),
        ],
    );
    let lan_link: Value = serde_json::from_str(&must("ip", &["-n", &lan, "-j", "link", "show", "lan0"])).unwrap();
    let lan_mac = lan_link[0]["address"].as_str().unwrap().to_string();
    let output = ensure(&lab);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("DHCP is still answered on main0"), "{stderr}");
    assert!(stderr.contains("server 172.16.0.50"), "{stderr}");
    assert!(stderr.contains(&lan_mac), "{stderr}");
}

#[test]
fn netns_remote_management_opens_and_closes_the_router() {
    require!(prerequisites());
    let mut lab = Lab::start("e");
    // The router's own SSH: a listener on all its addresses.
    let mut sshd = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns("router"),
            BIN,
            "tcp-serve",
            "--listen",
            "0.0.0.0:22",
            "--banner",
            "router-ssh",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sshd.stdout.take().unwrap()).read_line(&mut line).unwrap();
    lab.children.push(sshd);
    assert!(lab.wan_connect(22).is_some_and(|b| b.contains("router-ssh")), "open before the shim touches it");

    // Allowed only from elsewhere: the WAN host is refused.
    assert!(lab.shim_ok(&["remote-management", "enable", "--from", "198.51.100.0/24"]).starts_with("changed"));
    assert_eq!(lab.wan_connect(22), None);
    // Allowed from the WAN host's network.
    lab.shim_ok(&["remote-management", "enable", "--from", "192.0.2.0/24"]);
    assert!(lab.wan_connect(22).is_some());
    let state = lab.state();
    assert_eq!(state["remote_management"]["enabled"], true);
    assert_eq!(state["remote_management"]["allowed_from"][0], "192.0.2.0/24");
    assert!(lab.shim_ok(&["remote-management", "enable", "--from", "192.0.2.0/24"]).starts_with("unchanged"));

    // Disabling can lock people out: it needs a `yes`; without one it is rolled back.
    let disable = ["remote-management", "disable", "--confirm-timeout", "5s"];
    assert_eq!(lab.shim_answering(&disable, "\n").status.code(), Some(1));
    assert!(lab.wan_connect(22).is_some());
    assert!(lab.shim_answering(&disable, "yes\n").status.success());
    assert_eq!(lab.wan_connect(22), None);
    assert_eq!(lab.state()["remote_management"]["enabled"], false);

    lab.shim_ok(&["reset"]);
    assert!(lab.wan_connect(22).is_some(), "reset removes the shim's rules");
}
