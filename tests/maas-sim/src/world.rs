//! The emulated MAAS database: users and tokens, machines, networks, images, config, events; JSON rendering
//! with MAAS's field names and units; the timed lifecycle steps that move machines along.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::{Value, json};

use crate::status::{Status, script_status_name};
use crate::{Config, Failure, Fault, LoggedRequest, MachineSpec};

/// Nominal durations in seconds at time scale 1.0; multiplied by `Config::time_scale`.
pub mod durations {
    pub const COMMISSIONING: f64 = 40.0;
    pub const TESTING: f64 = 20.0;
    pub const DEPLOY_INSTALL: f64 = 60.0;
    pub const DEPLOY_REBOOT: f64 = 60.0;
    pub const RELEASING: f64 = 10.0;
    pub const DISK_ERASING: f64 = 30.0;
    pub const POWER: f64 = 3.0;
    pub const IMPORT: f64 = 60.0;
    pub const ABORT: f64 = 0.5;
}

pub struct User {
    pub username: String,
    pub email: String,
    pub is_superuser: bool,
}

pub struct Token {
    pub consumer_key: String,
    pub token_key: String,
    pub token_secret: String,
    pub username: String,
    pub name: String,
}

pub struct Iface {
    pub id: u64,
    pub name: String,
    pub mac: String,
    pub link_speed: u32,
    pub vlan_id: u64,
}

pub struct Disk {
    pub id: u64,
    pub name: String,
    pub size: u64,
    pub model: String,
    pub serial: String,
}

pub struct ScriptResult {
    pub id: u64,
    pub name: &'static str,
    pub hardware_type: &'static str,
    pub status: i32,
    pub exit_status: Option<i32>,
    pub output: String,
}

pub struct ScriptSet {
    pub id: u64,
    /// 0 commissioning, 1 installation, 2 testing, 3 release.
    pub kind: u8,
    pub started: DateTime<Utc>,
    pub ended: Option<DateTime<Utc>>,
    pub results: Vec<ScriptResult>,
}

impl ScriptSet {
    pub fn status(&self) -> i32 {
        let s: Vec<i32> = self.results.iter().map(|r| r.status).collect();
        if s.contains(&3) {
            3
        } else if s.contains(&5) {
            5
        } else if s.contains(&1) {
            1
        } else if s.contains(&0) {
            0
        } else if s.is_empty() {
            -1
        } else {
            2
        }
    }
}

pub struct Machine {
    pub id: u64,
    pub system_id: String,
    pub hostname: String,
    pub description: String,
    pub architecture: String,
    pub power_type: String,
    pub power_parameters: BTreeMap<String, String>,
    pub power_state: &'static str,
    pub status: Status,
    /// The status to go back to when testing is aborted, and whether mark_fixed returns to DEPLOYED.
    pub previous_status: Status,
    pub owner: Option<String>,
    pub locked: bool,
    pub osystem: String,
    pub distro_series: String,
    pub hwe_kernel: Option<String>,
    pub min_hwe_kernel: String,
    pub user_data: Option<Vec<u8>>,
    pub error_description: String,
    pub zone: String,
    pub pool: String,
    pub tags: Vec<String>,
    pub annotations: BTreeMap<String, String>,
    pub cpu_count: u32,
    pub cpu_speed: u32,
    pub memory: u64,
    pub interfaces: Vec<Iface>,
    pub disks: Vec<Disk>,
    pub ip_addresses: Vec<String>,
    pub script_sets: Vec<ScriptSet>,
    pub commissioning_status: i32,
    pub testing_status: i32,
    /// Bumped on every state change; a timer step only applies if the generation it was scheduled with still holds.
    pub generation: u64,
    /// Whether commissioning must run testing afterwards.
    pub run_tests: bool,
}

pub struct Vlan {
    pub id: u64,
    pub vid: u16,
    pub name: String,
    pub fabric_id: u64,
    pub mtu: u32,
    pub dhcp_on: bool,
    pub external_dhcp: Option<String>,
    pub primary_rack: Option<String>,
    pub secondary_rack: Option<String>,
    pub relay_vlan: Option<u64>,
    pub description: String,
}

pub struct Fabric {
    pub id: u64,
    pub name: String,
    pub class_type: Option<String>,
}

pub struct Subnet {
    pub id: u64,
    pub name: String,
    pub cidr: ipnet::Ipv4Net,
    pub vlan_id: u64,
    pub gateway_ip: Option<Ipv4Addr>,
    pub dns_servers: Vec<String>,
    pub description: String,
    pub managed: bool,
}

pub struct IpRange {
    pub id: u64,
    pub kind: String,
    pub start_ip: Ipv4Addr,
    pub end_ip: Ipv4Addr,
    pub subnet_id: u64,
    pub comment: String,
    pub user: String,
}

pub struct Event {
    pub id: u64,
    pub node: Option<String>,
    pub hostname: String,
    pub username: String,
    pub level: &'static str,
    pub created: DateTime<Utc>,
    pub kind: String,
    pub description: String,
}

pub struct SshKey {
    pub id: u64,
    pub key: String,
    pub username: String,
}

pub struct Selection {
    pub id: u64,
    pub boot_source_id: u64,
    pub os: String,
    pub release: String,
    pub arches: Vec<String>,
    pub subarches: Vec<String>,
    pub labels: Vec<String>,
}

pub struct BootSource {
    pub id: u64,
    pub url: String,
    pub keyring_filename: String,
    pub keyring_data: String,
    pub created: DateTime<Utc>,
}

pub struct BootResource {
    pub id: u64,
    pub kind: &'static str,
    pub name: String,
    pub architecture: String,
    pub title: String,
    pub version: String,
    pub complete: bool,
}

pub struct Device {
    pub id: u64,
    pub system_id: String,
    pub hostname: String,
    pub macs: Vec<String>,
    pub owner: String,
}

pub struct Notification {
    pub id: u64,
    pub ident: Option<String>,
    pub message: String,
    pub category: String,
    pub dismissed: bool,
}

pub struct NamedThing {
    pub id: u64,
    pub name: String,
    pub description: String,
}

/// Work for the server to do once the world lock is released.
pub enum Effect {
    /// Run `step` on the machine after `secs` (scaled), if its generation still matches.
    Later { secs: f64, system_id: String, generation: u64, step: Step },
    /// Finish the boot-image import after `secs` (scaled), if no other import has started since.
    ImportDone { secs: f64, generation: u64 },
    /// Run the deploy hook.
    Hook(HookRun),
}

pub struct HookRun {
    pub event: &'static str,
    pub hostname: String,
    pub system_id: String,
    pub macs: Vec<String>,
    pub user_data: Option<Vec<u8>>,
    pub distro_series: String,
}

#[derive(Clone, Copy, Debug)]
pub enum Step {
    CommissioningDone,
    TestingDone,
    Installing,
    Deployed,
    Released,
    Erased,
    PoweredOff,
    PoweredOn,
    Aborted(Status),
}

/// Bounded so a long demo does not grow without limit.
const MAX_LOG: usize = 100_000;

pub struct World {
    next_id: u64,
    pub users: Vec<User>,
    pub tokens: Vec<Token>,
    /// Used nonces with their timestamps; entries older than the 300 s window are pruned, since an expired
    /// timestamp is refused before the nonce is even looked at.
    pub nonces: HashMap<(String, String, String), i64>,
    pub specs: Vec<MachineSpec>,
    pub machines: Vec<Machine>,
    pub rack_system_id: String,
    pub rack_iface_id: u64,
    pub fabrics: Vec<Fabric>,
    pub vlans: Vec<Vlan>,
    pub subnets: Vec<Subnet>,
    pub ipranges: Vec<IpRange>,
    pub config: BTreeMap<String, Value>,
    pub boot_sources: Vec<BootSource>,
    pub selections: Vec<Selection>,
    pub boot_resources: Vec<BootResource>,
    pub importing: bool,
    pub import_generation: u64,
    pub sshkeys: Vec<SshKey>,
    pub devices: Vec<Device>,
    pub zones: Vec<NamedThing>,
    pub pools: Vec<NamedThing>,
    pub tags: Vec<NamedThing>,
    pub notifications: Vec<Notification>,
    pub events: Vec<Event>,
    pub faults: Vec<Fault>,
    pub failures: HashMap<String, Failure>,
    pub log: Vec<LoggedRequest>,
    pub effects: Vec<Effect>,
}

pub fn random_token(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..len).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
}

fn random_system_id() -> String {
    const CHARS: &[u8] = b"abcdefghjkmnpqrstwxy3456789";
    let mut rng = rand::rng();
    (0..6).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
}

/// Known (os, release) pairs of the emulated image stream, with their version numbers.
pub const KNOWN_RELEASES: &[(&str, &str, &str)] = &[
    ("ubuntu", "xenial", "16.04"),
    ("ubuntu", "bionic", "18.04"),
    ("ubuntu", "focal", "20.04"),
    ("ubuntu", "jammy", "22.04"),
    ("ubuntu", "noble", "24.04"),
];
pub const KNOWN_ARCHES: &[&str] = &["amd64", "arm64", "armhf", "i386", "ppc64el", "s390x"];

pub fn release_version(release: &str) -> Option<&'static str> {
    KNOWN_RELEASES.iter().find(|(_, r, _)| *r == release).map(|(_, _, v)| *v)
}

pub fn datetime(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
}

pub fn event_time(t: &DateTime<Utc>) -> String {
    t.format("%a, %d %b. %Y %H:%M:%S").to_string()
}

fn script_time(t: &DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S %z").to_string()
}

impl World {
    /// The world of a fresh `maas init`: admin, the rack `main`, fabric-0, the lab subnet, the default boot source.
    pub fn new(config: &Config, admin_key: (&str, &str, &str)) -> World {
        let mut w = World {
            next_id: 100,
            users: vec![User { username: "admin".into(), email: "admin@example.com".into(), is_superuser: true }],
            tokens: Vec::new(),
            nonces: HashMap::new(),
            specs: if config.machines.is_empty() { crate::reference_lab() } else { config.machines.clone() },
            machines: Vec::new(),
            rack_system_id: random_system_id(),
            rack_iface_id: 1,
            fabrics: vec![Fabric { id: 0, name: "fabric-0".into(), class_type: None }],
            vlans: vec![Vlan {
                id: 5001,
                vid: 0,
                name: "untagged".into(),
                fabric_id: 0,
                mtu: 1500,
                dhcp_on: false,
                external_dhcp: None,
                primary_rack: None,
                secondary_rack: None,
                relay_vlan: None,
                description: String::new(),
            }],
            subnets: vec![Subnet {
                id: 1,
                name: "172.16.0.0/20".into(),
                cidr: "172.16.0.0/20".parse().expect("valid cidr"),
                vlan_id: 5001,
                gateway_ip: Some(Ipv4Addr::new(172, 16, 0, 1)),
                dns_servers: Vec::new(),
                description: String::new(),
                managed: true,
            }],
            ipranges: Vec::new(),
            config: default_config(),
            boot_sources: vec![BootSource {
                id: 1,
                url: "http://images.maas.io/ephemeral-v3/stable/".into(),
                keyring_filename: "/snap/maas/current/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg".into(),
                keyring_data: String::new(),
                created: Utc::now(),
            }],
            selections: vec![Selection {
                id: 1,
                boot_source_id: 1,
                os: "ubuntu".into(),
                release: "jammy".into(),
                arches: vec!["amd64".into()],
                subarches: vec!["*".into()],
                labels: vec!["*".into()],
            }],
            boot_resources: Vec::new(),
            importing: false,
            import_generation: 0,
            sshkeys: Vec::new(),
            devices: Vec::new(),
            zones: vec![NamedThing { id: 1, name: "default".into(), description: String::new() }],
            pools: vec![NamedThing { id: 0, name: "default".into(), description: "Default pool".into() }],
            tags: Vec::new(),
            notifications: Vec::new(),
            events: Vec::new(),
            faults: Vec::new(),
            failures: HashMap::new(),
            log: Vec::new(),
            effects: Vec::new(),
        };
        w.add_token("admin", admin_key, "MAAS consumer");
        if config.enlisted {
            for spec in w.specs.clone() {
                let sid = w.create_machine(&spec.mac_addresses, &spec.architecture, Some(spec.hostname.clone()));
                let m = w.machine_mut(&sid).expect("just created");
                m.power_type = spec.power_type.clone();
                m.power_parameters = spec.power_parameters.clone();
                m.status = Status::Ready;
                m.commissioning_status = 2;
                m.testing_status = 2;
                w.discover(&sid);
                w.add_script_sets(&sid, 2);
                w.event(Some(&sid), "INFO", "Ready", "");
            }
        }
        w
    }

    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn add_token(&mut self, username: &str, key: (&str, &str, &str), name: &str) {
        self.tokens.push(Token {
            consumer_key: key.0.into(),
            token_key: key.1.into(),
            token_secret: key.2.into(),
            username: username.into(),
            name: name.into(),
        });
    }

    pub fn is_admin(&self, username: &str) -> bool {
        self.users.iter().any(|u| u.username == username && u.is_superuser)
    }

    pub fn log(&mut self, entry: LoggedRequest) {
        if self.log.len() >= MAX_LOG {
            self.log.drain(..MAX_LOG / 10);
        }
        self.log.push(entry);
    }

    // === machines ===

    pub fn machine(&self, sid: &str) -> Option<&Machine> {
        self.machines.iter().find(|m| m.system_id == sid)
    }

    pub fn machine_mut(&mut self, sid: &str) -> Option<&mut Machine> {
        self.machines.iter_mut().find(|m| m.system_id == sid)
    }

    pub fn spec_for(&self, macs: &[String]) -> Option<&MachineSpec> {
        self.specs.iter().find(|s| s.mac_addresses.iter().any(|a| macs.iter().any(|b| a.eq_ignore_ascii_case(b))))
    }

    /// Creates a machine in NEW with one unconfigured interface per MAC; returns its system_id.
    pub fn create_machine(&mut self, macs: &[String], architecture: &str, hostname: Option<String>) -> String {
        let mut sid = random_system_id();
        while self.machine(&sid).is_some() || sid == self.rack_system_id {
            sid = random_system_id();
        }
        let id = self.id();
        let hostname = hostname.unwrap_or_else(|| {
            self.spec_for(macs).map(|s| s.hostname.clone()).unwrap_or_else(|| format!("node-{}", &sid))
        });
        let interfaces = macs
            .iter()
            .enumerate()
            .map(|(i, mac)| Iface {
                id: self.id(),
                name: format!("eth{i}"),
                mac: mac.to_ascii_lowercase(),
                link_speed: 0,
                vlan_id: 5001,
            })
            .collect();
        self.machines.push(Machine {
            id,
            system_id: sid.clone(),
            hostname,
            description: String::new(),
            architecture: architecture.into(),
            power_type: String::new(),
            power_parameters: BTreeMap::new(),
            power_state: "unknown",
            status: Status::New,
            previous_status: Status::New,
            owner: None,
            locked: false,
            osystem: String::new(),
            distro_series: String::new(),
            hwe_kernel: None,
            min_hwe_kernel: String::new(),
            user_data: None,
            error_description: String::new(),
            zone: "default".into(),
            pool: "default".into(),
            tags: Vec::new(),
            annotations: BTreeMap::new(),
            cpu_count: 0,
            cpu_speed: 0,
            memory: 0,
            interfaces,
            disks: Vec::new(),
            ip_addresses: Vec::new(),
            script_sets: Vec::new(),
            commissioning_status: -1,
            testing_status: -1,
            generation: 0,
            run_tests: true,
        });
        sid
    }

    /// Commissioning "discovers" the hardware of the physical server that owns one of the machine's MACs.
    fn discover(&mut self, sid: &str) {
        let macs: Vec<String> =
            self.machine(sid).map(|m| m.interfaces.iter().map(|i| i.mac.clone()).collect()).unwrap_or_default();
        let Some(spec) = self.spec_for(&macs).cloned() else { return };
        let disk_ids: Vec<u64> = spec.block_devices.iter().map(|_| self.id()).collect();
        let extra_ifaces: Vec<u64> = spec.interfaces.iter().map(|_| self.id()).collect();
        let m = self.machine_mut(sid).expect("caller checked");
        m.cpu_count = spec.cpu_count;
        m.cpu_speed = spec.cpu_speed_mhz;
        m.memory = spec.memory_mib;
        m.disks = spec
            .block_devices
            .iter()
            .zip(disk_ids)
            .map(|(d, id)| Disk {
                id,
                name: d.name.clone(),
                size: d.size_bytes,
                model: d.model.clone(),
                serial: d.serial.clone(),
            })
            .collect();
        for (ispec, new_id) in spec.interfaces.iter().zip(extra_ifaces) {
            match m.interfaces.iter_mut().find(|i| i.mac.eq_ignore_ascii_case(&ispec.mac)) {
                Some(i) => {
                    i.name = ispec.name.clone();
                    i.link_speed = ispec.link_speed_mbps;
                }
                None => m.interfaces.push(Iface {
                    id: new_id,
                    name: ispec.name.clone(),
                    mac: ispec.mac.to_ascii_lowercase(),
                    link_speed: ispec.link_speed_mbps,
                    vlan_id: 5001,
                }),
            }
        }
        for t in &spec.tags {
            if !m.tags.contains(t) {
                m.tags.push(t.clone());
            }
        }
        for t in spec.tags {
            if !self.tags.iter().any(|x| x.name == t) {
                let id = self.id();
                self.tags.push(NamedThing { id, name: t, description: String::new() });
            }
        }
    }

    /// Records finished script sets: commissioning, then testing when `testing_status` is set.
    fn add_script_sets(&mut self, sid: &str, status: i32) {
        let ids: Vec<u64> = (0..8).map(|_| self.id()).collect();
        let now = Utc::now();
        let m = self.machine_mut(sid).expect("caller checked");
        let names: [(&str, &str); 5] = [
            ("00-maas-00-support-info", "node"),
            ("00-maas-01-cpuinfo", "cpu"),
            ("00-maas-07-block-devices", "storage"),
            ("maas-lshw", "node"),
            ("50-maas-01-commissioning", "node"),
        ];
        let results = names
            .iter()
            .zip(&ids)
            .map(|((name, hw), id)| ScriptResult {
                id: *id,
                name,
                hardware_type: hw,
                status,
                exit_status: (status >= 2).then_some(if status == 2 { 0 } else { 1 }),
                output: format!("{name} ran on {}\n", m.hostname),
            })
            .collect();
        m.script_sets.push(ScriptSet {
            id: ids[5],
            kind: 0,
            started: now,
            ended: (status >= 2).then_some(now),
            results,
        });
        if m.run_tests {
            m.script_sets.push(ScriptSet {
                id: ids[6],
                kind: 2,
                started: now,
                ended: (status >= 2).then_some(now),
                results: vec![ScriptResult {
                    id: ids[7],
                    name: "smartctl-validate",
                    hardware_type: "storage",
                    status,
                    exit_status: (status >= 2).then_some(0),
                    output: "SMART support is: Available\n".into(),
                }],
            });
        }
    }

    fn set_script_status(&mut self, sid: &str, kind: u8, status: i32) {
        if let Some(m) = self.machine_mut(sid) {
            if let Some(set) = m.script_sets.iter_mut().rev().find(|s| s.kind == kind) {
                for r in &mut set.results {
                    r.status = status;
                    r.exit_status = (status >= 2).then_some(if status == 2 { 0 } else { 1 });
                }
                if status >= 2 {
                    set.ended = Some(Utc::now());
                }
            }
            match kind {
                0 => m.commissioning_status = status,
                _ => m.testing_status = status,
            }
        }
    }

    /// Records an event; `status_message` reads the latest INFO-or-above one.
    pub fn event(&mut self, sid: Option<&str>, level: &'static str, kind: &str, description: &str) {
        let id = self.id();
        let (hostname, username) = match sid.and_then(|s| self.machine(s)) {
            Some(m) => (m.hostname.clone(), m.owner.clone().unwrap_or_else(|| "unknown".into())),
            None => ("main".into(), "unknown".into()),
        };
        self.events.push(Event {
            id,
            node: sid.map(str::to_owned).or_else(|| Some(self.rack_system_id.clone())),
            hostname,
            username,
            level,
            created: Utc::now(),
            kind: kind.into(),
            description: description.into(),
        });
    }

    fn failure(&self, sid: &str) -> Failure {
        let host = self.machine(sid).map(|m| m.hostname.clone()).unwrap_or_default();
        self.failures.get(&host).copied().unwrap_or(Failure::None)
    }

    /// Moves a machine to `to` if the model allows it, bumping its generation (which cancels pending steps).
    pub fn transition(&mut self, sid: &str, to: Status) -> Result<(), String> {
        let m = self.machine_mut(sid).ok_or_else(|| "No Machine matches the given query.".to_owned())?;
        if m.status != to && !m.status.can_move_to(to) {
            return Err(format!("Invalid transition: {} -> {}.", m.status.label(), to.label()));
        }
        if m.status != to {
            m.previous_status = m.status;
        }
        m.status = to;
        m.generation += 1;
        Ok(())
    }

    pub fn later(&mut self, sid: &str, secs: f64, step: Step) {
        let generation = self.machine(sid).map(|m| m.generation).unwrap_or_default();
        self.effects.push(Effect::Later { secs, system_id: sid.to_owned(), generation, step });
    }

    fn hook(&mut self, sid: &str, event: &'static str) {
        if let Some(m) = self.machine(sid) {
            self.effects.push(Effect::Hook(HookRun {
                event,
                hostname: m.hostname.clone(),
                system_id: m.system_id.clone(),
                macs: m.interfaces.iter().map(|i| i.mac.clone()).collect(),
                user_data: m.user_data.clone(),
                distro_series: m.distro_series.clone(),
            }));
        }
    }

    /// Starts commissioning (the op has already checked the state).
    pub fn start_commissioning(&mut self, sid: &str, run_tests: bool) -> Result<(), String> {
        self.transition(sid, Status::Commissioning)?;
        let m = self.machine_mut(sid).expect("transition checked");
        m.run_tests = run_tests;
        m.power_state = "on";
        m.commissioning_status = 1;
        m.testing_status = if run_tests { 0 } else { -1 };
        self.add_script_sets(sid, 1);
        self.set_script_status(sid, 0, 1);
        if run_tests {
            self.set_script_status(sid, 2, 0);
        }
        self.event(Some(sid), "INFO", "Powering on", "");
        self.event(Some(sid), "INFO", "Commissioning", "");
        self.later(sid, durations::COMMISSIONING, Step::CommissioningDone);
        Ok(())
    }

    /// Starts deployment of an ALLOCATED machine.
    pub fn start_deploying(&mut self, sid: &str) -> Result<(), String> {
        self.transition(sid, Status::Deploying)?;
        let m = self.machine_mut(sid).expect("transition checked");
        m.power_state = "on";
        self.event(Some(sid), "INFO", "Powering on", "");
        self.event(Some(sid), "INFO", "Deploying", "");
        self.later(sid, durations::DEPLOY_INSTALL, Step::Installing);
        Ok(())
    }

    /// Releases a machine: erasing, releasing, or straight to READY when it is powered off.
    pub fn start_release(&mut self, sid: &str, erase: bool) -> Result<(), String> {
        let off = self.machine(sid).is_some_and(|m| m.power_state == "off" || m.power_type == "manual");
        if erase {
            self.transition(sid, Status::DiskErasing)?;
            let m = self.machine_mut(sid).expect("transition checked");
            m.power_state = "on";
            self.event(Some(sid), "INFO", "Erasing disk", "");
            self.later(sid, durations::DISK_ERASING, Step::Erased);
        } else if off {
            self.transition(sid, Status::Ready)?;
            self.finish_release(sid);
        } else {
            self.transition(sid, Status::Releasing)?;
            self.event(Some(sid), "INFO", "Releasing", "");
            self.later(sid, durations::RELEASING, Step::Released);
        }
        Ok(())
    }

    fn finish_release(&mut self, sid: &str) {
        let m = self.machine_mut(sid).expect("caller checked");
        m.owner = None;
        m.osystem.clear();
        m.distro_series.clear();
        m.hwe_kernel = None;
        m.annotations.clear();
        m.ip_addresses.clear();
        m.locked = false;
        m.power_state = "off";
        self.event(Some(sid), "INFO", "Released", "");
        self.event(Some(sid), "INFO", "Ready", "");
        self.hook(sid, "released");
    }

    /// Applies a timer step, if the machine has not moved on since it was scheduled.
    pub fn apply(&mut self, sid: &str, generation: u64, step: Step) {
        let Some(m) = self.machine(sid) else { return };
        if m.generation != generation {
            return;
        }
        let failure = self.failure(sid);
        match step {
            Step::CommissioningDone => {
                if failure == Failure::Commissioning {
                    self.set_script_status(sid, 0, 3);
                    let _ = self.transition(sid, Status::FailedCommissioning);
                    self.machine_mut(sid).expect("exists").power_state = "off";
                    self.event(
                        Some(sid),
                        "ERROR",
                        "Failed commissioning",
                        "Commissioning script 50-maas-01-commissioning failed",
                    );
                    return;
                }
                self.discover(sid);
                self.set_script_status(sid, 0, 2);
                if self.machine(sid).is_some_and(|m| m.run_tests) {
                    let _ = self.transition(sid, Status::Testing);
                    self.set_script_status(sid, 2, 1);
                    self.event(Some(sid), "INFO", "Testing", "");
                    self.later(sid, durations::TESTING, Step::TestingDone);
                } else {
                    let _ = self.transition(sid, Status::Ready);
                    self.machine_mut(sid).expect("exists").power_state = "off";
                    self.event(Some(sid), "INFO", "Ready", "");
                }
            }
            Step::TestingDone => {
                if failure == Failure::Testing {
                    self.set_script_status(sid, 2, 3);
                    let _ = self.transition(sid, Status::FailedTesting);
                    self.event(Some(sid), "ERROR", "Failed testing", "smartctl-validate failed");
                } else {
                    self.set_script_status(sid, 2, 2);
                    let _ = self.transition(sid, Status::Ready);
                    self.event(Some(sid), "INFO", "Ready", "");
                }
                self.machine_mut(sid).expect("exists").power_state = "off";
            }
            Step::Installing => {
                self.event(Some(sid), "INFO", "Installing OS", "");
                let ip = format!("172.16.15.{}", 100 + (self.machine(sid).map(|m| m.id).unwrap_or(0) % 150));
                let m = self.machine_mut(sid).expect("exists");
                m.ip_addresses = vec![ip];
                self.later(sid, durations::DEPLOY_REBOOT, Step::Deployed);
            }
            Step::Deployed => {
                if failure == Failure::Deployment {
                    let _ = self.transition(sid, Status::FailedDeployment);
                    self.event(
                        Some(sid),
                        "ERROR",
                        "Failed deployment",
                        "Installation failed (refer to the installation log for more information).",
                    );
                    return;
                }
                self.event(Some(sid), "INFO", "Rebooting", "");
                let _ = self.transition(sid, Status::Deployed);
                self.event(Some(sid), "INFO", "Deployed", "");
                self.hook(sid, "deployed");
            }
            Step::Released => {
                let _ = self.transition(sid, Status::Ready);
                self.finish_release(sid);
            }
            Step::Erased => {
                if failure == Failure::DiskErasing {
                    let _ = self.transition(sid, Status::FailedDiskErasing);
                    self.event(Some(sid), "ERROR", "Failed to erase disks", "");
                    return;
                }
                self.event(Some(sid), "INFO", "Disks erased", "");
                let _ = self.transition(sid, Status::Ready);
                self.finish_release(sid);
            }
            Step::PoweredOff => {
                let m = self.machine_mut(sid).expect("exists");
                if m.power_state != "off" {
                    m.power_state = "off";
                    self.event(Some(sid), "INFO", "Powered off", "");
                    self.hook(sid, "powered-off");
                }
            }
            Step::PoweredOn => {
                self.machine_mut(sid).expect("exists").power_state = "on";
            }
            Step::Aborted(to) => {
                let from = self.machine(sid).map(|m| m.status).unwrap_or(to);
                let _ = self.transition(sid, to);
                match from {
                    Status::Commissioning => self.set_script_status(sid, 0, 5),
                    Status::Testing => self.set_script_status(sid, 2, 5),
                    _ => {}
                }
                let m = self.machine_mut(sid).expect("exists");
                m.power_state = "off";
                let label = match from {
                    Status::Commissioning => "Aborted commissioning",
                    Status::Deploying => "Aborted deployment",
                    Status::DiskErasing => "Aborted disk erasing",
                    _ => "Aborted testing",
                };
                self.event(Some(sid), "INFO", label, "");
            }
        }
    }

    /// Puts a machine straight into `status` (bypassing the state machine), with the owner and power state that
    /// status implies; pending timer steps are cancelled. A test shortcut, not something MAAS can do.
    pub fn force_status(&mut self, hostname: &str, status: Status) -> bool {
        let Some(m) = self.machines.iter_mut().find(|m| m.hostname == hostname) else { return false };
        let unowned = matches!(
            status,
            Status::New
                | Status::Commissioning
                | Status::FailedCommissioning
                | Status::Ready
                | Status::Testing
                | Status::FailedTesting
                | Status::Missing
                | Status::Retired
                | Status::Broken
        );
        let powered = matches!(
            status,
            Status::Commissioning
                | Status::Testing
                | Status::Deploying
                | Status::Deployed
                | Status::Releasing
                | Status::DiskErasing
                | Status::RescueMode
                | Status::EnteringRescueMode
                | Status::ExitingRescueMode
        );
        m.previous_status = m.status;
        m.status = status;
        m.generation += 1;
        m.locked = false;
        m.owner = if unowned { None } else { Some("admin".into()) };
        m.power_state = if powered { "on" } else { "off" };
        true
    }

    // === images ===

    pub fn start_import(&mut self) {
        self.importing = true;
        self.import_generation += 1;
        self.event(None, "INFO", "Importing images", "");
        self.effects.push(Effect::ImportDone { secs: durations::IMPORT, generation: self.import_generation });
    }

    pub fn finish_import(&mut self, generation: u64) {
        if !self.importing || generation != self.import_generation {
            return;
        }
        self.importing = false;
        let wanted: Vec<(String, String, Vec<String>)> =
            self.selections.iter().map(|s| (s.os.clone(), s.release.clone(), s.arches.clone())).collect();
        let version = Utc::now().format("%Y%m%d").to_string();
        for (os, release, arches) in wanted {
            let ver = release_version(&release).unwrap_or("");
            for arch in arches {
                let arch = if arch == "*" { "amd64".to_owned() } else { arch };
                for sub in ["ga", "hwe"] {
                    let architecture = format!("{arch}/{sub}-{ver}");
                    let name = format!("{os}/{release}");
                    if self.boot_resources.iter().any(|r| r.name == name && r.architecture == architecture) {
                        continue;
                    }
                    let id = self.id();
                    self.boot_resources.push(BootResource {
                        id,
                        kind: "Synced",
                        name,
                        architecture,
                        title: format!("Ubuntu {ver} LTS"),
                        version: version.clone(),
                        complete: true,
                    });
                }
            }
        }
        for (name, arch) in [("grub-efi-signed/uefi", "amd64/generic"), ("pxelinux/pxe", "i386/generic")] {
            if !self.boot_resources.iter().any(|r| r.name == name) {
                let id = self.id();
                self.boot_resources.push(BootResource {
                    id,
                    kind: "Synced",
                    name: name.into(),
                    architecture: arch.into(),
                    title: String::new(),
                    version: version.clone(),
                    complete: true,
                });
            }
        }
        self.event(None, "INFO", "Images imported", "Finished importing boot images");
    }

    // === rendering ===

    pub fn user_json(&self, username: &str) -> Value {
        let u = self.users.iter().find(|u| u.username == username);
        json!({
            "username": username,
            "email": u.map(|u| u.email.clone()).unwrap_or_default(),
            "is_local": true,
            "is_superuser": u.is_some_and(|u| u.is_superuser),
            "resource_uri": format!("/MAAS/api/2.0/users/{username}/"),
        })
    }

    pub fn fabric_name(&self, id: u64) -> String {
        self.fabrics.iter().find(|f| f.id == id).map(|f| f.name.clone()).unwrap_or_default()
    }

    pub fn vlan_json(&self, v: &Vlan) -> Value {
        json!({
            "id": v.id, "vid": v.vid, "name": v.name, "description": v.description,
            "fabric": self.fabric_name(v.fabric_id), "fabric_id": v.fabric_id, "mtu": v.mtu,
            "dhcp_on": v.dhcp_on, "external_dhcp": v.external_dhcp, "relay_vlan": v.relay_vlan.and_then(|r| self.vlans.iter().find(|x| x.id == r)).map(|r| json!({"id": r.id, "vid": r.vid, "resource_uri": format!("/MAAS/api/2.0/vlans/{}/", r.id)})),
            "primary_rack": v.primary_rack, "secondary_rack": v.secondary_rack, "space": "undefined",
            "resource_uri": format!("/MAAS/api/2.0/vlans/{}/", v.id),
        })
    }

    pub fn vlan_by_id(&self, id: u64) -> Option<&Vlan> {
        self.vlans.iter().find(|v| v.id == id)
    }

    pub fn subnet_json(&self, s: &Subnet) -> Value {
        json!({
            "id": s.id, "name": s.name, "description": s.description,
            "vlan": self.vlan_by_id(s.vlan_id).map(|v| self.vlan_json(v)),
            "cidr": s.cidr.to_string(), "gateway_ip": s.gateway_ip.map(|g| g.to_string()),
            "dns_servers": s.dns_servers, "rdns_mode": 2, "allow_dns": true, "allow_proxy": true,
            "active_discovery": false, "managed": s.managed, "disabled_boot_architectures": [],
            "space": "undefined", "resource_uri": format!("/MAAS/api/2.0/subnets/{}/", s.id),
        })
    }

    pub fn iprange_json(&self, r: &IpRange) -> Value {
        json!({
            "id": r.id, "type": r.kind, "start_ip": r.start_ip.to_string(), "end_ip": r.end_ip.to_string(),
            "comment": r.comment, "user": self.user_json(&r.user),
            "subnet": self.subnets.iter().find(|s| s.id == r.subnet_id).map(|s| self.subnet_json(s)),
            "resource_uri": format!("/MAAS/api/2.0/ipranges/{}/", r.id),
        })
    }

    fn iface_json(&self, sid: &str, i: &Iface, ip: Option<&str>) -> Value {
        let links: Vec<Value> = match (ip, self.subnets.iter().find(|s| s.vlan_id == i.vlan_id)) {
            (Some(ip), Some(s)) => {
                vec![json!({"id": i.id, "mode": "auto", "ip_address": ip, "subnet": self.subnet_json(s)})]
            }
            (None, Some(s)) => vec![json!({"id": i.id, "mode": "auto", "subnet": self.subnet_json(s)})],
            _ => Vec::new(),
        };
        json!({
            "system_id": sid, "id": i.id, "name": i.name, "type": "physical", "mac_address": i.mac,
            "vlan": self.vlan_by_id(i.vlan_id).map(|v| self.vlan_json(v)), "parents": [], "children": [],
            "tags": [], "enabled": true, "links": links, "params": "", "discovered": null, "effective_mtu": 1500,
            "vendor": null, "product": null, "firmware_version": null, "link_connected": true,
            "interface_speed": i.link_speed, "link_speed": i.link_speed, "numa_node": 0, "sriov_max_vf": 0,
            "resource_uri": format!("/MAAS/api/2.0/nodes/{sid}/interfaces/{}/", i.id),
        })
    }

    fn disk_json(sid: &str, d: &Disk) -> Value {
        json!({
            "system_id": sid, "id": d.id, "name": d.name, "uuid": null, "type": "physical",
            "path": format!("/dev/disk/by-dname/{}", d.name), "model": d.model, "serial": d.serial,
            "id_path": format!("/dev/disk/by-id/wwn-{}", d.serial), "size": d.size, "block_size": 512,
            "available_size": d.size, "used_size": 0, "used_for": "Unused", "tags": ["ssd"], "filesystem": null,
            "partition_table_type": null, "partitions": [], "firmware_version": "SBFK71F3", "storage_pool": null,
            "numa_node": 0, "resource_uri": format!("/MAAS/api/2.0/nodes/{sid}/blockdevices/{}/", d.id),
        })
    }

    pub fn status_message(&self, sid: &str) -> Option<String> {
        self.events
            .iter()
            .rev()
            .find(|e| e.node.as_deref() == Some(sid) && e.level != "DEBUG" && e.level != "AUDIT")
            .map(|e| if e.description.is_empty() { e.kind.clone() } else { format!("{} - {}", e.kind, e.description) })
    }

    pub fn named_json(kind: &str, t: &NamedThing) -> Value {
        let uri = match kind {
            "zones" => format!("/MAAS/api/2.0/zones/{}/", t.name),
            "pool" => format!("/MAAS/api/2.0/resourcepool/{}/", t.id),
            _ => format!("/MAAS/api/2.0/tags/{}/", t.name),
        };
        if kind == "tags" {
            return json!({"name": t.name, "definition": "", "comment": t.description, "kernel_opts": "", "resource_uri": uri});
        }
        json!({"id": t.id, "name": t.name, "description": t.description, "resource_uri": uri})
    }

    pub fn machine_json(&self, m: &Machine) -> Value {
        let sid = &m.system_id;
        let zone = self.zones.iter().find(|z| z.name == m.zone).map(|z| World::named_json("zones", z));
        let pool = self.pools.iter().find(|p| p.name == m.pool).map(|p| World::named_json("pool", p));
        let ip = m.ip_addresses.first().map(String::as_str);
        let ifaces: Vec<Value> = m
            .interfaces
            .iter()
            .enumerate()
            .map(|(n, i)| self.iface_json(sid, i, if n == 0 { ip } else { None }))
            .collect();
        let disks: Vec<Value> = m.disks.iter().map(|d| World::disk_json(sid, d)).collect();
        let storage: f64 = m.disks.iter().map(|d| d.size as f64).sum::<f64>() / 1_000_000.0;
        let set_id = |kind: u8| m.script_sets.iter().rev().find(|s| s.kind == kind).map(|s| s.id);
        let st = |code: i32| script_status_name(code);
        let storage_test = if m.testing_status >= 0 { m.testing_status } else { -1 };
        let hw_unknown = "Unknown";
        json!({
            "system_id": sid, "hostname": m.hostname, "fqdn": format!("{}.maas", m.hostname),
            "description": m.description, "hardware_uuid": null,
            "domain": {"id": 0, "name": "maas", "authoritative": true, "ttl": null, "is_default": true,
                       "resource_record_count": 0, "resource_uri": "/MAAS/api/2.0/domains/0/"},
            "zone": zone, "pool": pool, "owner": m.owner, "owner_data": m.annotations,
            "workload_annotations": m.annotations, "locked": m.locked, "node_type": 0, "node_type_name": "Machine",
            "parent": null, "pod": null, "virtualmachine_id": null,
            "resource_uri": format!("/MAAS/api/2.0/machines/{sid}/"),
            "status": m.status.code(), "status_name": m.status.label(), "status_message": self.status_message(sid),
            "status_action": "", "error_description": m.error_description,
            "netboot": !matches!(m.status, crate::status::Status::Deployed),
            "osystem": m.osystem, "distro_series": m.distro_series, "hwe_kernel": m.hwe_kernel,
            "min_hwe_kernel": m.min_hwe_kernel, "ephemeral_deploy": false, "enable_hw_sync": false,
            "last_sync": null, "sync_interval": null, "next_sync": null, "bios_boot_method": "uefi",
            "address_ttl": null, "disable_ipv4": false, "special_filesystems": [],
            "power_type": m.power_type, "power_state": m.power_state,
            "architecture": m.architecture, "cpu_count": m.cpu_count, "cpu_speed": m.cpu_speed,
            "memory": m.memory, "swap_size": null, "storage": storage,
            "numanode_set": [{"index": 0, "cores": (0..m.cpu_count).collect::<Vec<_>>(), "memory": m.memory, "hugepages_set": []}],
            "hardware_info": {"system_vendor": "Intel Corporation", "system_product": "NUC", "system_family": hw_unknown,
                "system_version": hw_unknown, "system_sku": hw_unknown, "system_serial": hw_unknown,
                "cpu_model": "Intel(R) Core(TM) i5 CPU", "mainboard_vendor": "Intel Corporation",
                "mainboard_product": hw_unknown, "mainboard_serial": hw_unknown, "mainboard_version": hw_unknown,
                "mainboard_firmware_vendor": hw_unknown, "mainboard_firmware_date": hw_unknown,
                "mainboard_firmware_version": hw_unknown, "chassis_vendor": hw_unknown, "chassis_type": hw_unknown,
                "chassis_serial": hw_unknown, "chassis_version": hw_unknown},
            "ip_addresses": m.ip_addresses, "boot_interface": ifaces.first().cloned(), "interface_set": ifaces,
            "default_gateways": {"ipv4": {"gateway_ip": null, "link_id": null}, "ipv6": {"gateway_ip": null, "link_id": null}},
            "boot_disk": disks.first().cloned(), "blockdevice_set": disks.clone(),
            "physicalblockdevice_set": disks, "virtualblockdevice_set": [], "iscsiblockdevice_set": [],
            "volume_groups": [], "raids": [], "bcaches": [], "cache_sets": [],
            "tag_names": m.tags,
            "commissioning_status": m.commissioning_status, "commissioning_status_name": st(m.commissioning_status),
            "testing_status": m.testing_status, "testing_status_name": st(m.testing_status),
            "cpu_test_status": -1, "cpu_test_status_name": st(-1),
            "memory_test_status": -1, "memory_test_status_name": st(-1),
            "network_test_status": -1, "network_test_status_name": st(-1),
            "storage_test_status": storage_test, "storage_test_status_name": st(storage_test),
            "other_test_status": -1, "other_test_status_name": st(-1),
            "interface_test_status": -1, "interface_test_status_name": st(-1),
            "current_commissioning_result_id": set_id(0), "current_testing_result_id": set_id(2),
            "current_installation_result_id": set_id(1),
        })
    }

    pub fn rack_json(&self) -> Value {
        let sid = &self.rack_system_id;
        let iface = Iface {
            id: self.rack_iface_id,
            name: "eth0".into(),
            mac: "52:54:00:00:00:f0".into(),
            link_speed: 1000,
            vlan_id: 5001,
        };
        let services: Vec<Value> = [
            "regiond",
            "rackd",
            "dhcpd",
            "dhcpd6",
            "bind9",
            "ntp_region",
            "ntp_rack",
            "proxy",
            "syslog_region",
            "http",
            "tftp",
            "agent",
            "temporal",
            "temporal-worker",
            "reverse_proxy",
        ]
        .iter()
        .map(|name| {
            let dhcp_on = self.vlans.iter().any(|v| v.dhcp_on && v.primary_rack.as_deref() == Some(sid.as_str()));
            let (status, info) = match *name {
                "dhcpd" if !dhcp_on => ("off", "Not serving DHCP"),
                "dhcpd6" => ("off", "Not serving DHCP"),
                _ => ("running", ""),
            };
            json!({"name": name, "status": status, "status_info": info})
        })
        .collect();
        json!({
            "system_id": sid, "hostname": "main", "fqdn": "main.maas", "node_type": 4,
            "node_type_name": "Region and rack controller", "version": "3.5.3-16334-g.1a4d1b8ba",
            "description": "", "architecture": "amd64/generic", "cpu_count": 4, "cpu_speed": 2400,
            "memory": 10240, "storage": 120034.123776, "power_type": "", "power_state": "unknown",
            "distro_series": "jammy", "osystem": "ubuntu", "tag_names": [], "locked": false,
            "zone": World::named_json("zones", &self.zones[0]),
            "domain": {"id": 0, "name": "maas", "authoritative": true, "ttl": null, "is_default": true,
                       "resource_record_count": 0, "resource_uri": "/MAAS/api/2.0/domains/0/"},
            "ip_addresses": ["172.16.0.3"], "interface_set": [self.iface_json(sid, &iface, Some("172.16.0.3"))],
            "service_set": services,
            "commissioning_status": 2, "commissioning_status_name": "Passed", "testing_status": -1,
            "testing_status_name": "Unknown", "current_commissioning_result_id": 1,
            "resource_uri": format!("/MAAS/api/2.0/rackcontrollers/{sid}/"),
        })
    }

    pub fn event_json(e: &Event) -> Value {
        json!({"id": e.id, "node": e.node, "hostname": e.hostname, "username": e.username, "level": e.level,
               "created": event_time(&e.created), "type": e.kind, "description": e.description})
    }

    pub fn script_set_json(m: &Machine, s: &ScriptSet, include_output: bool) -> Value {
        let type_name = match s.kind {
            0 => "Commissioning",
            1 => "Installation",
            2 => "Testing",
            _ => "Release",
        };
        let results: Vec<Value> = s
            .results
            .iter()
            .map(|r| {
                let mut v = json!({"id": r.id, "name": r.name, "status": r.status, "status_name": script_status_name(r.status),
                    "exit_status": r.exit_status, "started": script_time(&s.started), "ended": s.ended.as_ref().map(script_time),
                    "runtime": "0:00:01", "starttime": s.started.timestamp() as f64, "endtime": s.ended.map(|e| e.timestamp() as f64),
                    "estimated_runtime": "0:00:01", "parameters": {}, "script_id": r.id, "script_revision_id": r.id,
                    "suppressed": false, "hardware_type": r.hardware_type, "created": script_time(&s.started), "updated": script_time(&s.started)});
                if include_output {
                    use base64::Engine;
                    let b = base64::engine::general_purpose::STANDARD.encode(&r.output);
                    v["output"] = json!(b);
                    v["stdout"] = json!(b);
                    v["stderr"] = json!("");
                    v["result"] = json!("");
                }
                v
            })
            .collect();
        json!({"id": s.id, "system_id": m.system_id, "type": s.kind, "type_name": type_name, "status": s.status(),
               "status_name": script_status_name(s.status()), "last_ping": s.ended.as_ref().map(script_time),
               "started": script_time(&s.started), "ended": s.ended.as_ref().map(script_time), "runtime": "0:00:05",
               "results": results, "resource_uri": format!("/MAAS/api/2.0/nodes/{}/results/{}/", m.system_id, s.id)})
    }
}

fn default_config() -> BTreeMap<String, Value> {
    let mut c = BTreeMap::new();
    for (k, v) in [
        ("upstream_dns", Value::Null),
        ("dnssec_validation", json!("auto")),
        ("dns_trusted_acl", Value::Null),
        ("default_osystem", json!("ubuntu")),
        ("default_distro_series", json!("jammy")),
        ("commissioning_distro_series", json!("jammy")),
        ("default_min_hwe_kernel", json!("")),
        ("enable_disk_erasing_on_release", json!(false)),
        ("disk_erase_with_secure_erase", json!(false)),
        ("disk_erase_with_quick_erase", json!(false)),
        ("ntp_servers", json!("ntp.ubuntu.com")),
        ("ntp_external_only", json!(false)),
        ("maas_name", json!("main")),
        ("kernel_opts", Value::Null),
        ("http_proxy", Value::Null),
        ("enable_http_proxy", json!(true)),
        ("network_discovery", json!("enabled")),
        ("active_discovery_interval", json!(10800)),
        ("completed_intro", json!(true)),
        ("enable_analytics", json!(true)),
        ("default_storage_layout", json!("lvm")),
        ("default_dns_ttl", json!(30)),
        ("boot_images_auto_import", json!(true)),
        ("curtin_verbose", json!(true)),
        ("release_notifications", json!(true)),
        ("maas_auto_ipmi_user", json!("maas")),
    ] {
        c.insert(k.to_owned(), v);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_dates_have_a_dot_after_the_month() {
        let t = DateTime::parse_from_rfc3339("2018-12-07T20:11:08Z").unwrap().with_timezone(&Utc);
        assert_eq!(event_time(&t), "Fri, 07 Dec. 2018 20:11:08");
        assert_eq!(datetime(&t), "2018-12-07T20:11:08.000");
    }

    #[test]
    fn enlisted_world_has_ready_machines_with_specs() {
        let mut cfg = Config::for_tests();
        cfg.enlisted = true;
        let w = World::new(&cfg, ("c", "t", "s"));
        assert_eq!(w.machines.len(), 4);
        let m = w.machine_json(&w.machines[1]);
        assert_eq!(m["status"], 4);
        assert_eq!(m["memory"], 16384);
        assert_eq!(m["storage"].as_f64().unwrap(), 2.0 * 240_057.409536);
        assert_eq!(m["blockdevice_set"][0]["size"], 240_057_409_536u64);
        assert_eq!(m["status_message"], "Ready");
    }
}
