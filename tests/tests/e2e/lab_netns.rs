//! Issue 6 with the router: the lab as code against maas-sim and the router shim's Linux backend (nftables and
//! dnsmasq), in network namespaces this test creates.
//!
//! Topology (names start with `mfl<pid>-<tag>-`, see [`metalfleet_tests::netns`]):
//! - `router`: `rlan` 172.16.0.1/20 on the switch, `rwan` 192.0.2.1/24 to `wan`; dnsmasq serves DHCP on the LAN;
//!   `router-shim serve` (Linux backend) listens on 172.16.0.1.
//! - `sw`: a bridge, the switch.
//! - `main`: `main0` 172.16.0.3/20 (MAIN); maas-sim, the coordinator and fleetctl run here on its loopback; the
//!   coordinator's DHCP probe runs on `main0`; a TCP listener on 172.16.0.3:22 stands for MAIN's sshd.
//! - `wan`: `wan0` 192.0.2.2/24, the outside.
//! - `rogue`: `rogue0` 172.16.0.60/20 on the switch, where a DHCP server the shim does not know can be started.
//!
//! These addresses exist only inside the namespaces; nothing is sent anywhere else. Without root or the tools,
//! each test records its skip (`metalfleet_skip`) and returns.

use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use metalfleet_skip::require;
use metalfleet_tests::netns::{self, Dnsmasq, Namespaces};
use metalfleet_tests::{Proc, bin, run, stderr, stdout, wait_until};
use serde_json::Value;

const START: Duration = Duration::from_secs(30);
const KEY: (&str, &str, &str) = ("nslabcons", "nslabtoken", "nslabsecret");
const KINDS: [&str; 5] = ["router", "sw", "main", "wan", "rogue"];

/// The reference lab with its router; `{shim}` and `{router_mac}` are filled in at start.
const LAB: &str = r#"
[maas]
upstream_dns = ["172.20.129.131"]
kernel_opts = "net.ifnames=0"

[[images]]
release = "jammy"

[[images]]
release = "focal"

[[ssh_keys]]
key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e cloud@main"

[subnet]
cidr = "172.16.0.0/20"
dns_servers = ["172.20.129.131"]
dhcp = true

[[subnet.ranges]]
type = "dynamic"
start = "172.16.11.1"
end = "172.16.14.255"
comment = "reserved range (MAAS dynamic)"

[router]
shim = "{shim}"
insecure = true
dhcp = false
probe_interface = "main0"
probe_window = "2s"

[[router.forwards]]
name = "ssh-main"
proto = "tcp"
external_port = 22
to = "172.16.0.3:22"
protected = true
reconcile = "reapply"

[router.remote_management]
enabled = true
from = ["192.0.2.0/24"]

[[devices]]
hostname = "roteador"
mac = "{router_mac}"

[[machines]]
hostname = "server1"
macs = ["52:54:00:00:00:01"]
power_type = "amt"
profile = "small"
power_parameters = { power_address = "172.16.15.1", power_pass = "amt-password" }

[[machines]]
hostname = "server2"
macs = ["52:54:00:00:00:02"]
power_type = "amt"
power_parameters = { power_address = "172.16.15.2", power_pass = "amt-password" }

[profiles.small]
min_logical_cpus = 1
"#;

/// One lab. Field order is drop order: processes first, then dnsmasq, the namespaces, the files.
struct NetLab {
    coordinator: Proc,
    shim: Proc,
    _sim: Proc,
    _sshd: Proc,
    rogue: Option<Dnsmasq>,
    router_dns: Dnsmasq,
    ns: Namespaces,
    dir: tempfile::TempDir,
    sim_addr: std::net::SocketAddr,
    coordinator_addr: std::net::SocketAddr,
    router_mac: String,
}

impl NetLab {
    fn start(tag: &str, reconcile_interval: &str) -> Result<NetLab> {
        let ns = Namespaces::create(tag, &KINDS)?;
        let dir = tempfile::tempdir()?;
        ns.bridge("sw")?;
        ns.plug("sw", "sw1", "router", "rlan")?;
        ns.plug("sw", "sw2", "main", "main0")?;
        ns.plug("sw", "sw3", "rogue", "rogue0")?;
        ns.veth(("router", "rwan"), ("wan", "wan0"))?;
        ns.ip("router", &["addr", "add", "172.16.0.1/20", "dev", "rlan"])?;
        ns.ip("router", &["addr", "add", "192.0.2.1/24", "dev", "rwan"])?;
        ns.ip("main", &["addr", "add", "172.16.0.3/20", "dev", "main0"])?;
        ns.ip("main", &["route", "add", "default", "via", "172.16.0.1"])?;
        ns.ip("rogue", &["addr", "add", "172.16.0.60/20", "dev", "rogue0"])?;
        ns.ip("wan", &["addr", "add", "192.0.2.2/24", "dev", "wan0"])?;
        ns.must("router", "sh", &["-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"])?;
        let router_mac = ns.mac("router", "rlan")?;
        let d = dir.path().display().to_string();

        // The router as found: dnsmasq serving DNS and DHCP on the LAN.
        let router_dns = Dnsmasq::start(
            &ns,
            "router",
            dir.path(),
            "dnsmasq",
            &format!(
                "interface=rlan\nbind-interfaces\nno-resolv\nuser=root\nport=53\nno-ping\n\
                 dhcp-range=172.16.0.100,172.16.0.200,12h\ndhcp-leasefile={d}/leases\n"
            ),
        )?;
        let shim_config = dir.path().join("router-shim.toml");
        std::fs::write(
            &shim_config,
            format!(
                "backend = \"linux\"\nlan_prefix = \"172.16.0.0/20\"\nstate_dir = \"{d}/shim-state\"\n\
                 protected_forwards = [\"ssh-main\"]\nconfirm_timeout = \"60s\"\n\n[linux]\nlan_interface = \"rlan\"\n\
                 wan_interface = \"rwan\"\ntable = \"metalfleet\"\nmasquerade = true\n\n[linux.dnsmasq]\n\
                 pid_file = \"{}\"\nconfig_file = \"{}\"\ncommand = [\"dnsmasq\", \"{}\", \"{}\"]\n",
                router_dns.pid_file.display(),
                router_dns.conf.display(),
                router_dns.conf_arg(),
                router_dns.pid_arg()
            ),
        )?;
        let mut command = ns.command("router", bin("router-shim"));
        command.arg("--config").arg(&shim_config).args(["serve", "--insecure", "--listen", "172.16.0.1:0"]);
        let mut shim = Proc::spawn("router-shim", command)?;
        let shim_addr = shim.wait_listening(START)?;

        // MAIN's sshd stand-in.
        let mut command = ns.command("main", bin("router-shim"));
        command.args(["tcp-serve", "--listen", "172.16.0.3:22", "--banner", "hello-from-main"]);
        let mut sshd = Proc::spawn("main-sshd", command)?;
        sshd.wait_listening(START)?;

        // MAAS (maas-sim) and the coordinator, on MAIN's loopback.
        let sim_state = dir.path().join("sim");
        std::fs::create_dir_all(&sim_state)?;
        let key = format!("{}:{}:{}", KEY.0, KEY.1, KEY.2);
        let mut command = ns.command("main", bin("maas-sim"));
        command.args(["--listen", "127.0.0.1:0", "--time-scale", "0.01", "--api-key", &key]);
        command.arg("--state-dir").arg(&sim_state);
        let mut sim = Proc::spawn("maas-sim", command)?;
        let sim_addr = sim.wait_listening(START)?;
        let key_file = dir.path().join("maas.key");
        std::fs::write(&key_file, format!("{key}\n"))?;
        std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let config = dir.path().join("coordinator.toml");
        std::fs::write(
            &config,
            format!(
                "[maas]\nurl = \"http://{sim_addr}/MAAS\"\napi_key_file = \"{}\"\npoll_interval = \"300ms\"\n\
                 request_timeout = \"2s\"\nconnect_timeout = \"1s\"\nretries = 0\n[lab]\nwait_poll = \"100ms\"\n\
                 wait_timeout = \"120s\"\nreconcile_interval = \"{reconcile_interval}\"\n",
                key_file.display()
            ),
        )?;
        let mut command = ns.command("main", bin("coordinator"));
        command.arg("serve").arg("--insecure").arg("--config").arg(&config);
        command.arg("--state-dir").arg(dir.path().join("state")).args(["--listen", "127.0.0.1:0"]);
        let mut coordinator = Proc::spawn("coordinator", command)?;
        let coordinator_addr = coordinator.wait_listening(START)?;

        let lab = LAB.replace("{shim}", &format!("http://{shim_addr}")).replace("{router_mac}", &router_mac);
        std::fs::write(dir.path().join("lab.toml"), lab)?;
        Ok(NetLab {
            coordinator,
            shim,
            _sim: sim,
            _sshd: sshd,
            rogue: None,
            router_dns,
            ns,
            dir,
            sim_addr,
            coordinator_addr,
            router_mac,
        })
    }

    fn fleetctl(&self, args: &[&str]) -> Result<Output> {
        let mut command = self.ns.command("main", bin("fleetctl"));
        command.args(["--coordinator", &format!("http://{}", self.coordinator_addr), "--insecure"]).args(args);
        command.current_dir(self.dir.path());
        let output = run(command, Duration::from_secs(240))?;
        eprintln!("fleetctl {args:?} -> {:?}\n{}{}", output.status.code(), stdout(&output), stderr(&output));
        Ok(output)
    }

    fn ok(&self, args: &[&str]) -> Result<String> {
        let output = self.fleetctl(args)?;
        if !output.status.success() {
            bail!("fleetctl {args:?} failed ({}): {}\n{}", output.status, stdout(&output), stderr(&output));
        }
        Ok(stdout(&output))
    }

    fn plan_json(&self, file: &str) -> Result<Value> {
        serde_json::from_str(&self.ok(&["--output", "json", "plan", file])?).context("plan printed no JSON")
    }

    /// Events as `fleetctl events --output json` prints them (one JSON object a line).
    fn events(&self) -> Result<Vec<Value>> {
        let text = self.ok(&["--output", "json", "events"])?;
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| Ok(serde_json::from_str(l)?)).collect()
    }

    /// `GET /MAAS/api/2.0/PATH` on maas-sim with the admin key (OAuth 1.0 PLAINTEXT), from inside `main`.
    ///
    /// Both parts matter: maas-sim (like MAAS) answers 401 to a request without the OAuth header, and 404
    /// ("Unknown API endpoint") to a collection path without its trailing slash (`ipranges` vs `ipranges/`).
    fn maas_get(&self, path: &str) -> Result<Value> {
        static NONCE: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
        let nonce = format!("{}-{}", now.as_nanos(), NONCE.fetch_add(1, Ordering::Relaxed));
        let header = format!(
            "Authorization: OAuth oauth_version=\"1.0\", oauth_signature_method=\"PLAINTEXT\", \
             oauth_consumer_key=\"{}\", oauth_token=\"{}\", oauth_signature=\"&{}\", oauth_nonce=\"{nonce}\", \
             oauth_timestamp=\"{}\"",
            KEY.0,
            KEY.1,
            KEY.2,
            now.as_secs()
        );
        let url = format!("http://{}/MAAS/api/2.0/{path}", self.sim_addr);
        let body =
            self.ns.must("main", "curl", &["-sS", "--fail-with-body", "--max-time", "5", "-H", &header, &url])?;
        serde_json::from_str(&body).with_context(|| format!("GET {path} answered no JSON: {body}"))
    }

    /// maas-sim's admin endpoints (`/_sim/...`), outside the MAAS API.
    fn sim_admin(&self, method: &str, path: &str, body: Option<&str>) -> Result<()> {
        let url = format!("http://{}/_sim/{path}", self.sim_addr);
        let mut args = vec!["-sS", "--fail-with-body", "--max-time", "5", "-X", method, url.as_str()];
        if let Some(body) = body {
            args.extend(["-H", "Content-Type: application/json", "-d", body]);
        }
        self.ns.must("main", "curl", &args)?;
        Ok(())
    }

    /// The lab subnet's VLAN as maas-sim reports it.
    fn maas_vlan(&self) -> Result<Value> {
        let subnets = self.maas_get("subnets/")?;
        let subnet = subnets
            .as_array()
            .and_then(|a| a.iter().find(|s| s["cidr"] == "172.16.0.0/20"))
            .context("maas-sim has no subnet 172.16.0.0/20")?;
        Ok(subnet["vlan"].clone())
    }

    /// The router shim's own view (`router-shim state`), read in the router namespace.
    fn shim_state(&self) -> Result<Value> {
        let config = self.dir.path().join("router-shim.toml").display().to_string();
        let text = self.ns.must(
            "router",
            &bin("router-shim").display().to_string(),
            &["--config", &config, "state", "--output", "json"],
        )?;
        Ok(serde_json::from_str(&text)?)
    }

    /// The router's nftables ruleset as JSON, read with `nft -j list ruleset` in its namespace.
    fn ruleset(&self) -> Result<Value> {
        Ok(serde_json::from_str(&self.ns.must("router", "nft", &["-j", "list", "ruleset"])?)?)
    }

    /// The comments of every rule in the router's nftables ruleset.
    fn rule_comments(&self) -> Result<Vec<String>> {
        let ruleset = self.ruleset()?;
        Ok(ruleset["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item["rule"]["comment"].as_str().map(str::to_string))
            .collect())
    }

    fn nft_tables(&self) -> Result<String> {
        self.ns.must("router", "nft", &["list", "tables"])
    }

    /// A DHCP probe from MAIN's LAN interface, as the coordinator's own probe sees the wire.
    fn probe(&self) -> Result<Value> {
        let text = self.ns.must(
            "main",
            &bin("router-shim").display().to_string(),
            &["probe-dhcp", "--interface", "main0", "--window", "2s", "--output", "json"],
        )?;
        Ok(serde_json::from_str(&text)?)
    }

    /// A TCP connection from `wan` to the router's WAN address; Some(banner) when it got through.
    fn wan_connect(&self, port: u16) -> Result<Option<String>> {
        let target = format!("192.0.2.1:{port}");
        let mut command = self.ns.command("wan", bin("router-shim"));
        command.args(["tcp-check", &target, "--timeout", "2s"]);
        let output = run(command, Duration::from_secs(10))?;
        Ok(output.status.success().then(|| stdout(&output).trim().to_string()))
    }

    /// Deletes the nft rules of forward `name` behind the shim's back (a router reset, or a person).
    fn delete_forward_rules(&self, name: &str) -> Result<()> {
        let listed = self.ns.must("router", "nft", &["-j", "-a", "list", "table", "ip", "metalfleet"])?;
        let table: Value = serde_json::from_str(&listed)?;
        let comment = format!("metalfleet:fwd:{name}");
        let mut deleted = 0;
        for rule in table["nftables"].as_array().into_iter().flatten().map(|i| &i["rule"]) {
            if rule["comment"] == comment.as_str() {
                let (chain, handle) = (rule["chain"].as_str().unwrap_or_default(), rule["handle"].to_string());
                self.ns.must("router", "nft", &["delete", "rule", "ip", "metalfleet", chain, "handle", &handle])?;
                deleted += 1;
            }
        }
        if deleted == 0 {
            bail!("no rules of forward {name} found: {listed}");
        }
        Ok(())
    }

    /// Starts a DHCP server the shim does not know, on the `rogue` host.
    fn start_rogue(&mut self) -> Result<String> {
        let d = self.dir.path().display().to_string();
        let rogue = Dnsmasq::start(
            &self.ns,
            "rogue",
            self.dir.path(),
            "rogue",
            &format!(
                "interface=rogue0\nbind-interfaces\nport=0\nno-ping\nuser=root\n\
                 dhcp-range=172.16.0.210,172.16.0.220,1h\ndhcp-leasefile={d}/rogue.leases\n"
            ),
        )?;
        self.rogue = Some(rogue);
        self.ns.mac("rogue", "rogue0")
    }
}

fn changes(plan: &Value) -> u64 {
    plan["changes"].as_u64().unwrap_or(u64::MAX)
}

fn offers(probe: &Value) -> Vec<Value> {
    probe["offers"].as_array().cloned().unwrap_or_default()
}

#[test]
fn netns_reference_lab_from_zero_apply_again_export_report_destroy() -> Result<()> {
    require!(netns::prerequisites());
    let mut lab = NetLab::start("a", "300s")?;

    // The start: the router's dnsmasq answers DHCP on the LAN, nothing is forwarded, MAAS DHCP is off.
    let before = lab.probe()?;
    assert_eq!(offers(&before).len(), 1, "{before}");
    assert_eq!(offers(&before)[0]["server_identifier"], "172.16.0.1");
    assert_eq!(lab.wan_connect(22)?, None);
    assert_eq!(lab.maas_vlan()?["dhcp_on"], false);
    assert_eq!(lab.shim_state()?["dhcp_enabled"], true);

    // The plan: router DHCP off and proven off before ranges and MAAS DHCP; forwards last.
    let plan = lab.plan_json("lab.toml")?;
    let summaries: Vec<String> = plan["steps"]
        .as_array()
        .context("steps")?
        .iter()
        .filter_map(|s| s["summary"].as_str().map(str::to_string))
        .collect();
    let position = |prefix: &str| {
        summaries.iter().position(|s| s.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix}: {summaries:#?}"))
    };
    assert!(position("switch the router's DHCP off") < position("prove on main0 that no DHCP server answers"));
    assert!(position("prove on main0 that no DHCP server answers") < position("create ip range"));
    assert!(position("create ip range") < position("switch MAAS DHCP on"));
    assert!(position("switch MAAS DHCP on") < position("prove on main0 that only MAAS"));
    assert!(position("create machine server2") < position("create forward ssh-main"));
    assert!(summaries.iter().any(|s| s.contains("create device roteador")), "{summaries:#?}");

    // Apply from zero.
    let applied = lab.ok(&["apply", "lab.toml", "--yes"])?;
    assert!(applied.contains("Apply complete"), "{applied}");
    assert_eq!(lab.shim_state()?["dhcp_enabled"], false);
    let after = lab.probe()?;
    assert!(offers(&after).is_empty(), "the router's DHCP is off on the wire: {after}");
    let vlan = lab.maas_vlan()?;
    assert_eq!(vlan["dhcp_on"], true, "{vlan}");
    let reached = lab.wan_connect(22)?.context("SSH to MAIN is forwarded from the WAN")?;
    assert!(reached.contains("hello-from-main"), "{reached}");
    let comments = lab.rule_comments()?;
    assert!(comments.iter().any(|c| c == "metalfleet:fwd:ssh-main"), "{comments:?}");
    let forwards = lab.shim_state()?["forwards"].clone();
    assert_eq!(forwards[0]["name"], "ssh-main", "{forwards}");
    assert_eq!(forwards[0]["protected"], true, "{forwards}");
    let machines = wait_until("server1 and server2 Ready in maas-sim", Duration::from_secs(60), || {
        let machines = lab.maas_get("machines/").ok()?;
        let ready = machines.as_array()?.iter().filter(|m| m["status_name"] == "Ready").count();
        (ready == 2).then_some(machines)
    })?;
    let devices = lab.maas_get("devices/")?;
    assert!(devices.to_string().contains(&lab.router_mac), "the router is a MAAS device: {devices}");

    // The applied plan's profiles reach spec verification.
    let verify: Value = serde_json::from_str(&stdout(&lab.fleetctl(&["--output", "json", "verify", "server1"])?))?;
    let server1 = verify["machines"].as_array().and_then(|a| a.iter().find(|m| m["hostname"] == "server1")).cloned();
    assert_eq!(server1.map(|m| m["profile"].clone()), Some(Value::from("small")), "{verify}");

    // Again: no changes.
    assert_eq!(changes(&lab.plan_json("lab.toml")?), 0);
    let again = lab.ok(&["apply", "lab.toml", "--yes"])?;
    assert!(again.contains("No changes"), "{again}");

    // Export, then apply the export: no changes.
    let exported = lab.ok(&["export"])?;
    std::fs::write(lab.dir.path().join("exported.toml"), &exported)?;
    assert!(exported.contains("ssh-main") && exported.contains("172.16.11.1"), "{exported}");
    assert_eq!(changes(&lab.plan_json("exported.toml")?), 0, "{exported}");
    let again = lab.ok(&["apply", "exported.toml", "--yes"])?;
    assert!(again.contains("No changes"), "{again}");

    // The report: every section, every claim matching MAAS and the router read independently.
    check_report(&lab, &machines)?;

    // Destroy: MAAS and the router back to the start.
    let destroyed = lab.ok(&["destroy", "lab.toml", "--yes"])?;
    assert!(destroyed.contains("Destroy complete"), "{destroyed}");
    assert_eq!(lab.maas_vlan()?["dhcp_on"], false);
    let ranges = lab.maas_get("ipranges/")?;
    assert!(!ranges.to_string().contains("172.16.11.1"), "{ranges}");
    assert!(!lab.nft_tables()?.contains("metalfleet"), "the shim's nft table is gone");
    assert_eq!(lab.shim_state()?["dhcp_enabled"], true);
    let back = wait_until("the router's dnsmasq to answer DHCP again", Duration::from_secs(30), || {
        let probe = lab.probe().ok()?;
        (offers(&probe).len() == 1).then_some(probe)
    })?;
    assert_eq!(offers(&back)[0]["server_identifier"], "172.16.0.1", "{back}");
    assert_eq!(lab.wan_connect(22)?, None);

    let status = lab.coordinator.terminate(Duration::from_secs(15))?;
    assert!(status.success(), "coordinator exited with {status}");
    lab.shim.terminate(Duration::from_secs(15))?;
    Ok(())
}

/// The report's claims against maas-sim's API, `nft -j list ruleset` and the dnsmasq config in the router ns.
fn check_report(lab: &NetLab, machines: &Value) -> Result<()> {
    let markdown = lab.ok(&["report"])?;
    for section in [
        "## MAAS configuration",
        "### Images",
        "### SSH keys",
        "## Subnet",
        "## Router",
        "## Machines",
        "## Fleet health",
        "## Last operations and events",
        "architecture-beta",
    ] {
        assert!(markdown.contains(section), "no {section} in\n{markdown}");
    }
    let report: Value = serde_json::from_str(&lab.ok(&["--output", "json", "report"])?)?;

    // MAAS configuration.
    let upstream = lab.maas_get("maas/?op=get_config&name=upstream_dns")?;
    let upstream = upstream.as_str().unwrap_or_default().to_string();
    let reported: Vec<&str> =
        report["maas"]["upstream_dns"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    assert_eq!(reported.join(" "), upstream, "{report}");
    let keys = lab.maas_get("account/prefs/sshkeys/")?;
    assert_eq!(report["maas"]["ssh_keys"].as_array().map(Vec::len), keys.as_array().map(Vec::len));
    let resources = lab.maas_get("boot-resources/")?;
    for name in ["ubuntu/jammy", "ubuntu/focal"] {
        assert!(resources.to_string().contains(name), "{resources}");
        let image = report["maas"]["images"].as_array().into_iter().flatten().find(|i| i["name"] == name);
        assert_eq!(image.map(|i| i["synced"].clone()), Some(Value::Bool(true)), "{name} in {report}");
    }

    // Reading maas-sim directly: without the OAuth header it answers 401 (with or without the trailing slash);
    // a 404 "Unknown API endpoint" means the path missed the `/MAAS/api/2.0/` root.
    let code = |path: &str| {
        let url = format!("http://{}{path}", lab.sim_addr);
        lab.ns.must("main", "curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
    };
    assert_eq!(code("/MAAS/api/2.0/ipranges/")?, "401");
    assert_eq!(code("/MAAS/api/2.0/ipranges")?, "401");
    assert_eq!(code("/api/2.0/ipranges/")?, "404");

    // The subnet.
    let vlan = lab.maas_vlan()?;
    assert_eq!(report["subnet"]["dhcp_on"], vlan["dhcp_on"]);
    let ranges = lab.maas_get("ipranges/")?;
    let range = ranges
        .as_array()
        .and_then(|a| a.iter().find(|r| r["start_ip"] == "172.16.11.1"))
        .context("maas-sim has the dynamic range")?;
    assert_eq!(report["subnet"]["ranges"][0]["start"], range["start_ip"]);
    assert_eq!(report["subnet"]["ranges"][0]["end"], range["end_ip"]);
    assert_eq!(report["subnet"]["ranges"][0]["type"], range["type"]);

    // The router: its DHCP state against the dnsmasq config, its forwards against the nft ruleset, and the probe's
    // raw result.
    let router = &report["router"];
    assert_eq!(router["state"]["dhcp_enabled"], false, "{router}");
    let conf = lab.ns.must("router", "cat", &[&lab.router_dns.conf.display().to_string()])?;
    let serving = conf.lines().any(|l| l.trim_start().starts_with("dhcp-range"));
    assert!(!serving, "the router's dnsmasq config has no dhcp-range left:\n{conf}");
    let comments = lab.rule_comments()?;
    for forward in router["state"]["forwards"].as_array().context("forwards")? {
        let name = forward["name"].as_str().unwrap_or_default();
        assert!(comments.iter().any(|c| c == &format!("metalfleet:fwd:{name}")), "{name} not in nft: {comments:?}");
    }
    assert_eq!(router["state"]["forwards"][0]["to"], "172.16.0.3:22");
    let probe = &router["probe"];
    assert!(probe["discovers_sent"].as_u64().unwrap_or(0) >= 1, "the raw probe result: {probe}");
    assert!(offers(probe).is_empty(), "{probe}");

    // Machines.
    let reported = report["machines"].as_array().context("machines")?;
    assert_eq!(Some(reported.len()), machines.as_array().map(Vec::len));
    for machine in machines.as_array().into_iter().flatten() {
        let mine = reported.iter().find(|m| m["system_id"] == machine["system_id"]).context("every machine")?;
        assert_eq!(mine["status"], machine["status_name"]);
        assert_eq!(mine["cpu_count"], machine["cpu_count"]);
    }
    Ok(())
}

#[test]
fn netns_rogue_dhcp_stops_apply_before_maas_dhcp() -> Result<()> {
    require!(netns::prerequisites());
    let mut lab = NetLab::start("b", "300s")?;
    let rogue_mac = lab.start_rogue()?;

    // The shim switches the router's DHCP off, but the rogue keeps answering: MAAS DHCP must stay off.
    let output = lab.fleetctl(&["apply", "lab.toml", "--yes"])?;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let why = stderr(&output);
    assert!(why.contains("step failed: prove on main0 that no DHCP server answers"), "{why}");
    assert!(why.contains("DHCP is still answered on main0"), "{why}");
    assert!(why.contains("server 172.16.0.60"), "{why}");
    assert!(why.contains(&rogue_mac), "{why}");
    assert!(why.contains("switch MAAS DHCP on"), "the steps left are listed: {why}");
    assert_eq!(lab.shim_state()?["dhcp_enabled"], false, "the router's own DHCP was switched off");
    assert_eq!(lab.maas_vlan()?["dhcp_on"], false, "MAAS DHCP stays off");
    let ranges = lab.maas_get("ipranges/")?;
    assert!(!ranges.to_string().contains("172.16.11.1"), "nothing after the probe ran: {ranges}");

    // The rogue gone, the same command continues.
    if let Some(rogue) = lab.rogue.take() {
        rogue.stop();
    }
    let applied = lab.ok(&["apply", "lab.toml", "--yes"])?;
    assert!(applied.contains("Apply complete"), "{applied}");
    assert_eq!(lab.maas_vlan()?["dhcp_on"], true);
    Ok(())
}

#[test]
fn netns_reconcile_reapplies_forward_and_reports_rogue_dhcp() -> Result<()> {
    require!(netns::prerequisites());
    let mut lab = NetLab::start("c", "1s")?;
    let applied = lab.ok(&["apply", "lab.toml", "--yes"])?;
    assert!(applied.contains("Apply complete"), "{applied}");
    assert!(lab.wan_connect(22)?.is_some());

    // The forward deleted behind the shim's back (a router reset, or a person).
    lab.delete_forward_rules("ssh-main")?;
    assert!(!lab.rule_comments()?.iter().any(|c| c == "metalfleet:fwd:ssh-main"));
    wait_until("the forward to be re-applied", Duration::from_secs(30), || {
        lab.rule_comments().ok()?.iter().any(|c| c == "metalfleet:fwd:ssh-main").then_some(())
    })?;
    let event = wait_until("a forward_reapplied event", Duration::from_secs(30), || {
        lab.events().ok()?.into_iter().find(|e| e["kind"] == "forward_reapplied")
    })?;
    assert!(event["message"].as_str().unwrap_or_default().contains("ssh-main"), "{event}");
    let reached = lab.wan_connect(22)?.context("the re-applied forward reaches MAIN")?;
    assert!(reached.contains("hello-from-main"), "{reached}");

    // A rogue DHCP server on the LAN: an event naming it.
    let rogue_mac = lab.start_rogue()?;
    let event = wait_until("a dhcp_rogue event", Duration::from_secs(30), || {
        lab.events().ok()?.into_iter().find(|e| e["kind"] == "dhcp_rogue")
    })?;
    let message = event["message"].as_str().unwrap_or_default();
    assert!(message.contains("172.16.0.60") && message.contains(&rogue_mac), "{event}");

    // MAAS itself reporting a foreign DHCP server on the VLAN (`external_dhcp`): an event too.
    let vlan_id = lab.maas_vlan()?["id"].as_i64().context("the VLAN's id")?;
    lab.sim_admin("POST", "external-dhcp", Some(&format!(r#"{{"vlan_id":{vlan_id},"ip":"172.16.0.60"}}"#)))?;
    let event = wait_until("a dhcp_foreign event", Duration::from_secs(30), || {
        lab.events().ok()?.into_iter().find(|e| e["kind"] == "dhcp_foreign")
    })?;
    assert!(event["message"].as_str().unwrap_or_default().contains("172.16.0.60"), "{event}");

    // Several more passes while both causes last (each re-application below is a later pass than the one
    // before it): still exactly one event per cause, not one per pass.
    for round in 2..=3 {
        lab.delete_forward_rules("ssh-main")?;
        wait_until("the forward to be re-applied again", Duration::from_secs(30), || {
            let events = lab.events().ok()?;
            (count(&events, "forward_reapplied") >= round).then_some(())
        })?;
    }
    let events = lab.events()?;
    assert_eq!(count(&events, "dhcp_rogue"), 1, "one dhcp_rogue over several passes: {events:?}");
    assert_eq!(count(&events, "dhcp_foreign"), 1, "one dhcp_foreign over several passes: {events:?}");
    assert_eq!(count(&events, "forward_restored"), 0, "a re-applied forward is not also restored: {events:?}");

    // The causes gone: one event each saying so.
    lab.rogue = None;
    lab.sim_admin("POST", "external-dhcp", Some(&format!(r#"{{"vlan_id":{vlan_id},"ip":null}}"#)))?;
    let events = wait_until("dhcp_rogue_gone and dhcp_foreign_gone events", Duration::from_secs(30), || {
        let events = lab.events().ok()?;
        (count(&events, "dhcp_rogue_gone") == 1 && count(&events, "dhcp_foreign_gone") == 1).then_some(events)
    })?;
    assert_eq!(count(&events, "dhcp_rogue"), 1, "{events:?}");
    Ok(())
}

fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["kind"] == kind).count()
}

#[test]
fn netns_maas_down_plan_is_stale_apply_refused_then_succeeds() -> Result<()> {
    require!(netns::prerequisites());
    let lab = NetLab::start("d", "300s")?;
    // The poller has read MAAS once, so the stale state has an age.
    wait_until("the poller's first MAAS read", Duration::from_secs(30), || {
        let out = lab.ok(&["--output", "json", "plan", "lab.toml"]).ok()?;
        serde_json::from_str::<Value>(&out).ok().filter(|p| changes(p) > 0)
    })?;

    // MAAS answers 503 to everything.
    lab.sim_admin("POST", "faults", Some(r#"{"kind":"status","status":503,"count":1000000}"#))?;
    let stale = lab.fleetctl(&["plan", "lab.toml"])?;
    assert_eq!(stale.status.code(), Some(69), "{}", stderr(&stale));
    let text = stdout(&stale);
    assert!(text.contains("MAAS unreachable") && text.contains("stale") && text.contains("s ago"), "{text}");
    let json: Value = serde_json::from_str(&stdout(&lab.fleetctl(&["--output", "json", "plan", "lab.toml"])?))?;
    assert!(json["stale"]["age_seconds"].as_f64().is_some_and(|a| a >= 0.0), "{json}");
    let refused = lab.fleetctl(&["apply", "lab.toml", "--yes"])?;
    assert_eq!(refused.status.code(), Some(69), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("apply refused") && stderr(&refused).contains("503"), "{}", stderr(&refused));
    assert_eq!(lab.shim_state()?["dhcp_enabled"], true, "nothing was changed on the router");

    // MAAS back: the same apply succeeds.
    lab.sim_admin("DELETE", "faults", None)?;
    let applied = lab.ok(&["apply", "lab.toml", "--yes"])?;
    assert!(applied.contains("Apply complete"), "{applied}");
    assert_eq!(lab.maas_vlan()?["dhcp_on"], true);
    Ok(())
}
