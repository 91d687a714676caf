//! The Linux backend against real nftables and dnsmasq, in network namespaces this test creates.
//!
//! Topology (names start with `mfl<pid>-<tag>-`, see `metalfleet_tests::netns`, the workspace's one namespace
//! harness): `router` (rlan 172.16.0.1/20, rwan 192.0.2.1/24), `sw` (a bridge: the switch), `lan` (a host at
//! 172.16.0.50 where the probe runs), `main` (172.16.0.3, a TCP listener standing for MAIN:22) and
//! `wan` (192.0.2.2, the outside). Every step runs the real `router-shim` binary under
//! `ip netns exec`, because entering a namespace from the test process would need unsafe code.
//! The harness removes namespaces and processes on drop and sweeps stale ones from killed runs at start.
//! Without root or the tools, each test records its skip (`metalfleet_skip`) and returns.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use metalfleet_skip::require;
use metalfleet_tests::netns::{self, Dnsmasq, Namespaces};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_router-shim");
const NS_KINDS: [&str; 5] = ["router", "sw", "lan", "main", "wan"];

// What every test here needs: root for namespaces, and the router's own tools.
use netns::router_prerequisites as prerequisites;

/// [`netns::must`], failing the test when the program fails.
fn must(program: &str, args: &[&str]) -> String {
    netns::must(program, args).unwrap()
}

/// One lab over the shared harness: its namespaces, the router's dnsmasq, the MAIN listener and the shim's config.
/// Dropping it kills the children, then the fields go in order: dnsmasq (by its pid file), the namespaces, the
/// folder.
struct Lab {
    children: Vec<Child>,
    dnsmasq: Dnsmasq,
    namespaces: Namespaces,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Lab {
    fn ns(&self, kind: &str) -> String {
        self.namespaces.name(kind)
    }
    fn dnsmasq_conf(&self) -> PathBuf {
        self.dnsmasq.conf.clone()
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("router-shim.toml")
    }

    /// `tag` keeps the labs of tests that run in one process (plain `cargo test`) apart.
    fn start(tag: &str) -> Lab {
        let namespaces = Namespaces::create(tag, &NS_KINDS).unwrap();
        namespaces.bridge("sw").unwrap();
        for (host, ifname, port) in [("router", "rlan", "sw1"), ("lan", "lan0", "sw2"), ("main", "main0", "sw3")] {
            namespaces.plug("sw", port, host, ifname).unwrap();
        }
        namespaces.veth(("router", "rwan"), ("wan", "wan0")).unwrap();
        for (kind, cidr, ifname) in [
            ("router", "172.16.0.1/20", "rlan"),
            ("router", "192.0.2.1/24", "rwan"),
            ("lan", "172.16.0.50/20", "lan0"),
            ("main", "172.16.0.3/20", "main0"),
            ("wan", "192.0.2.2/24", "wan0"),
        ] {
            namespaces.ip(kind, &["addr", "add", cidr, "dev", ifname]).unwrap();
        }
        namespaces.ip("main", &["route", "add", "default", "via", "172.16.0.1"]).unwrap();
        namespaces.must("router", "sh", &["-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"]).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().display().to_string();
        // The router's dnsmasq: DNS and DHCP on the LAN; no-ping keeps the first offer inside a 2 s probe window.
        let config = format!(
            "interface=rlan\nbind-interfaces\nno-resolv\nuser=root\nport=53\nno-ping\n\
             dhcp-range=172.16.0.100,172.16.0.200,12h\ndhcp-leasefile={path}/leases\n"
        );
        let dnsmasq = Dnsmasq::start(&namespaces, "router", dir.path(), "dnsmasq", &config).unwrap();
        let (conf_arg, pid_arg) = (dnsmasq.conf_arg(), dnsmasq.pid_arg());
        let mut lab = Lab { children: Vec::new(), dnsmasq, namespaces, dir };
        std::fs::write(
            lab.config(),
            format!(
                r#"backend = "linux"
lan_prefix = "172.16.0.0/20"
state_dir = "{path}/state"
protected_forwards = ["main-ssh"]
confirm_timeout = "60s"

[linux]
lan_interface = "rlan"
wan_interface = "rwan"
table = "metalfleet"
masquerade = true

[linux.dnsmasq]
pid_file = "{pid_file}"
config_file = "{config_file}"
command = ["dnsmasq", "{conf_arg}", "{pid_arg}"]
"#,
                pid_file = lab.dnsmasq.pid_file.display(),
                config_file = lab.dnsmasq.conf.display(),
            ),
        )
        .unwrap();

        // MAIN:22: a listener in `main` that greets with a banner; its readiness line says when it accepts.
        let listener = lab.spawn("main", &["tcp-serve", "--listen", "172.16.0.3:22", "--banner", "hello-from-main"]);
        assert!(listener.starts_with("listening addr=172.16.0.3:22"), "{listener}");
        lab
    }

    /// Starts `router-shim ARGS` inside `kind`, keeps it as a child of the lab and returns its first stdout line
    /// (its readiness line).
    fn spawn(&mut self, kind: &str, args: &[&str]) -> String {
        let mut child =
            self.namespaces.command(kind, BIN).args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        self.children.push(child);
        line
    }

    /// `router-shim --config ... ARGS` inside the router namespace.
    fn shim_command(&self, args: &[&str]) -> Command {
        let mut command = self.namespaces.command("router", BIN);
        command.arg("--config").arg(self.config()).args(args);
        command
    }

    /// Runs `router-shim --config ... ARGS` inside the router namespace.
    fn shim(&self, args: &[&str]) -> Output {
        let output = self.shim_command(args).stdin(Stdio::null()).output().unwrap();
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
        let mut child = self
            .shim_command(args)
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

    /// `router-shim probe-dhcp` from the `lan` host, for 2 s, with `args` added.
    fn probe_command(&self, args: &[&str]) -> Command {
        let mut command = self.namespaces.command("lan", BIN);
        command.args(["probe-dhcp", "--interface", "lan0", "--window", "2s"]).args(args);
        command
    }

    fn probe(&self) -> Value {
        let output = self.probe_command(&["--output", "json"]).output().unwrap();
        assert!(output.status.success(), "probe failed: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    }

    fn probe_expect(&self, expect: &str) -> i32 {
        let output = self.probe_command(&["--expect", expect]).output().unwrap();
        output.status.code().unwrap_or(-1)
    }

    /// A TCP connection from `wan` to the router's WAN address; Some(banner) when it got through.
    fn wan_connect(&self, port: u16) -> Option<String> {
        let target = format!("192.0.2.1:{port}");
        let output =
            self.namespaces.command("wan", BIN).args(["tcp-check", &target, "--timeout", "2s"]).output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
        output.status.success().then_some(text)
    }

    fn table(&self) -> String {
        let output = self.namespaces.command("router", "nft").args(["list", "table", "ip", "metalfleet"]).output();
        let output = output.unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn dnsmasq_alive(&self) -> bool {
        self.dnsmasq.pid().is_some()
    }
}

#[test]
fn netns_linux_dhcp_forward_idempotency_and_reset() {
    require!(prerequisites());
    let lab = Lab::start("a");
    let original_conf = std::fs::read_to_string(lab.dnsmasq_conf()).unwrap();

    // With dnsmasq serving, the probe from the LAN sees its offer, with the router's LAN MAC.
    let router_mac = lab.namespaces.mac("router", "rlan").unwrap();
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
    let mut child = lab
        .shim_command(&["forward", "remove", "--name", "main-ssh", "--confirm-timeout", "1s"])
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
    let line = lab.spawn("router", &["--config", &config, "serve", "--insecure", "--listen", "172.16.0.1:0"]);
    let addr = line.trim().strip_prefix("listening addr=").expect("readiness line").to_string();
    let shim_url = format!("http://{addr}");
    let ensure = |lab: &Lab| {
        let args = ["ensure-dhcp-off", "--shim", &shim_url, "--interface", "main0", "--window", "2s"];
        lab.namespaces.command("main", BIN).args(args).output().unwrap()
    };

    // From MAIN: the shim switches DHCP off, and MAIN's own probe proves nobody answers.
    assert_eq!(lab.state()["dhcp_enabled"], true);
    let output = ensure(&lab);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("0 server(s) answered"));
    assert_eq!(lab.state()["dhcp_enabled"], false);

    // A rogue DHCP server on the segment (the `lan` host): the proof fails with it as evidence.
    let rogue = format!(
        "interface=lan0\nbind-interfaces\nport=0\nno-ping\nuser=root\ndhcp-range=172.16.0.210,172.16.0.220,1h\n\
         dhcp-leasefile={}/rogue.leases\n",
        lab.dir.path().display()
    );
    let _rogue = Dnsmasq::start(&lab.namespaces, "lan", lab.dir.path(), "rogue", &rogue).unwrap();
    let lan_mac = lab.namespaces.mac("lan", "lan0").unwrap();
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
    lab.spawn("router", &["tcp-serve", "--listen", "0.0.0.0:22", "--banner", "router-ssh"]);
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
