//! maas-sim: an emulator of the MAAS 3.5 region API subset metalfleet drives, for tests and the demo.
//!
//! It is a test fixture, never a replacement for MAAS: faithful on paths, `op=` dispatch, field names and units,
//! status codes, error bodies, OAuth 1.0 PLAINTEXT and the node state machine (`../shared/maas-api.md`).
//!
//! # Library API
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let sim = maas_sim::start(maas_sim::Config::for_tests()).await?;
//! let url = sim.base_url(); // "http://127.0.0.1:PORT/MAAS"
//! let key = sim.api_key(); // admin "consumer:token:secret"
//! sim.inject(maas_sim::Fault::Status { status: 503, path_prefix: None, count: 2 });
//! sim.set_machine_failure("server3", maas_sim::Failure::Deployment);
//! let log = sim.request_log(); // method, path, op, params (secrets redacted), status
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//! - [`start`] binds, spawns the server and returns once it accepts.
//! - [`Handle`]: `addr`, `base_url`, `api_key`, `request_log`, `clear_request_log`, `inject`, `clear_faults`,
//!   `set_machine_failure`, `set_external_dhcp`, `create_api_key(username, admin)`, `force_status` (a test
//!   shortcut), `shutdown`.
//! - Admin HTTP endpoints outside `/MAAS/`: `POST /_sim/faults` (a [`Fault`] as JSON), `DELETE /_sim/faults`,
//!   `GET /_sim/requests`, `DELETE /_sim/requests`, `POST /_sim/external-dhcp` (`{"vlan_id":5001,"ip":"172.16.0.1"}`,
//!   `"ip":null` clears it).
//!
//! # Layout
//! - [`status`]: node statuses and the allowed transitions.
//! - [`routes`]: the resource table (handler names, paths, exports) behind dispatch and `/describe/`.
//! - [`wire`]: form bodies, the OAuth header, responses.
//! - `world`: the MAAS database (machines, networks, images, users, events) and the timed lifecycle steps.
//! - `api`: one function per handler action.
//! - `server`: the hyper accept loop, authentication, faults, the request log, timers and the deploy hook.
#![forbid(unsafe_code)]
#![recursion_limit = "512"]

mod api;
pub mod routes;
mod server;
pub mod status;
pub mod wire;
mod world;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use server::{Handle, start};

/// How the emulator runs; `main.rs` builds it from flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The physical servers on the wire; empty means the reference lab's server1..server4.
    pub machines: Vec<MachineSpec>,
    /// The admin API key `consumer:token:secret`; None generates one.
    pub api_key: Option<String>,
    /// 1.0 gives MAAS-like durations; tests use 0.01 (100x faster).
    pub time_scale: f64,
    /// Where the generated API key (mode 0600) and deploy user data go; None uses a temporary directory.
    pub state_dir: Option<PathBuf>,
    /// A command run through `sh -c` when a machine is deployed, released or powered off.
    pub hook: Option<PathBuf>,
    /// Pre-create every machine as READY (commissioned) instead of waiting for `POST machines/`.
    pub enlisted: bool,
}

impl Config {
    /// 127.0.0.1:0, the reference lab's machines (not enlisted), time scale 0.01.
    pub fn for_tests() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            machines: Vec::new(),
            api_key: None,
            time_scale: 0.01,
            state_dir: None,
            hook: None,
            enlisted: false,
        }
    }
}

/// A physical server: what commissioning "discovers" once MAAS knows one of its MACs.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSpec {
    pub hostname: String,
    pub mac_addresses: Vec<String>,
    #[serde(default = "default_architecture")]
    pub architecture: String,
    #[serde(default = "default_power_type")]
    pub power_type: String,
    #[serde(default)]
    pub power_parameters: BTreeMap<String, String>,
    pub cpu_count: u32,
    #[serde(default = "default_cpu_speed")]
    pub cpu_speed_mhz: u32,
    pub memory_mib: u64,
    #[serde(default)]
    pub block_devices: Vec<BlockDeviceSpec>,
    #[serde(default)]
    pub interfaces: Vec<InterfaceSpec>,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl MachineSpec {
    /// Machine number `i` of a large generated fleet (`node00042`, a unique MAC, 8 CPUs, 32 GiB, one SSD), for
    /// benchmarks and load runs that need many machines rather than the reference lab's four.
    pub fn generated(i: usize) -> Self {
        let mac = format!("52:54:01:{:02x}:{:02x}:{:02x}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
        MachineSpec {
            hostname: format!("node{i:05}"),
            mac_addresses: vec![mac.clone()],
            architecture: "amd64/generic".into(),
            power_type: "manual".into(),
            power_parameters: BTreeMap::new(),
            cpu_count: 8,
            cpu_speed_mhz: 2400,
            memory_mib: 32 * 1024,
            block_devices: vec![BlockDeviceSpec {
                name: "sda".into(),
                size_bytes: 480_103_981_056,
                model: "SAMSUNG MZ7LH480".into(),
                serial: format!("S45NNE0M{i:06}"),
            }],
            interfaces: vec![InterfaceSpec { name: "eno1".into(), mac, link_speed_mbps: 10_000 }],
            tags: Vec::new(),
        }
    }
}

fn default_architecture() -> String {
    "amd64/generic".to_owned()
}
fn default_power_type() -> String {
    "manual".to_owned()
}
fn default_cpu_speed() -> u32 {
    2400
}

/// A disk of a [`MachineSpec`].
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockDeviceSpec {
    pub name: String,
    pub size_bytes: u64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub serial: String,
}

/// A NIC of a [`MachineSpec`].
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSpec {
    pub name: String,
    pub mac: String,
    #[serde(default = "default_link_speed")]
    pub link_speed_mbps: u32,
}

fn default_link_speed() -> u32 {
    1000
}

/// The `--machines FILE` format: `[[machine]]` tables.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachinesFile {
    #[serde(default)]
    pub machine: Vec<MachineSpec>,
}

/// The reference lab (lab-and-router.md A.1/A.2): server1..server4 with Intel AMT at 172.16.15.N.
pub fn reference_lab() -> Vec<MachineSpec> {
    let ram_gib = [12u64, 16, 32, 32];
    let disks = [1usize, 2, 2, 2];
    (1..=4)
        .map(|n| {
            let mac = format!("52:54:00:00:00:0{n}");
            let block_devices = (0..disks[n - 1])
                .map(|d| BlockDeviceSpec {
                    name: format!("sd{}", (b'a' + d as u8) as char),
                    size_bytes: 240_057_409_536,
                    model: "KINGSTON SA400S37240G".to_owned(),
                    serial: format!("50026B77840{n}{d}A1"),
                })
                .collect();
            MachineSpec {
                hostname: format!("server{n}"),
                mac_addresses: vec![mac.clone()],
                architecture: default_architecture(),
                power_type: "amt".to_owned(),
                power_parameters: BTreeMap::from([
                    ("power_address".to_owned(), format!("172.16.15.{n}")),
                    ("power_pass".to_owned(), "amt-password".to_owned()),
                ]),
                cpu_count: 4,
                cpu_speed_mhz: 3000,
                memory_mib: ram_gib[n - 1] * 1024,
                block_devices,
                interfaces: vec![InterfaceSpec { name: "eno1".to_owned(), mac, link_speed_mbps: 1000 }],
                tags: Vec::new(),
            }
        })
        .collect()
}

/// A fault to inject; also the JSON body of `POST /_sim/faults` (`{"kind": "status", ...}`).
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer `count` matching requests with `status` (text body; 503 adds `Retry-After: 10`).
    Status {
        status: u16,
        #[serde(default)]
        path_prefix: Option<String>,
        #[serde(default = "one")]
        count: u32,
    },
    /// Delay `count` matching requests by `ms`.
    Latency {
        ms: u64,
        #[serde(default)]
        path_prefix: Option<String>,
        #[serde(default = "one")]
        count: u32,
    },
    /// Close the connection without an answer for `count` matching requests.
    Drop {
        #[serde(default)]
        path_prefix: Option<String>,
        #[serde(default = "one")]
        count: u32,
    },
    FailCommissioning {
        hostname: String,
    },
    FailDeployment {
        hostname: String,
    },
}

fn one() -> u32 {
    1
}

/// A lifecycle step a machine will fail (until cleared by [`Failure::None`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    None,
    Commissioning,
    Testing,
    Deployment,
    DiskErasing,
}

/// One request as the emulator saw it; secrets are replaced by `<redacted>`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub op: Option<String>,
    pub params: Vec<(String, String)>,
    /// The HTTP status sent; 0 when the connection was dropped by a fault.
    pub status: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_file_parses_and_rejects_unknown_keys() {
        let text = r#"
[[machine]]
hostname = "a"
mac_addresses = ["52:54:00:aa:00:01"]
cpu_count = 2
memory_mib = 2048
block_devices = [{ name = "sda", size_bytes = 1000000000 }]
"#;
        let f: MachinesFile = toml::from_str(text).unwrap();
        assert_eq!(f.machine[0].power_type, "manual");
        assert_eq!(f.machine[0].block_devices[0].size_bytes, 1_000_000_000);
        assert!(toml::from_str::<MachinesFile>("[[machine]]\nhostnme = \"x\"").is_err());
    }

    #[test]
    fn example_machines_file_parses() {
        let text = include_str!("../machines.example.toml");
        let f: MachinesFile = toml::from_str(text).unwrap();
        assert_eq!(f.machine.len(), 2);
        assert_eq!(f.machine[1].interfaces[1].link_speed_mbps, 25000);
        assert_eq!(f.machine[1].tags, vec!["gpu".to_owned()]);
    }

    #[test]
    fn fault_json_uses_kind_tags() {
        let f: Fault =
            serde_json::from_str(r#"{"kind":"status","status":503,"path_prefix":"/MAAS/","count":3}"#).unwrap();
        assert_eq!(f, Fault::Status { status: 503, path_prefix: Some("/MAAS/".into()), count: 3 });
        let f: Fault = serde_json::from_str(r#"{"kind":"fail_deployment","hostname":"server3"}"#).unwrap();
        assert_eq!(f, Fault::FailDeployment { hostname: "server3".into() });
    }

    #[test]
    fn reference_lab_has_four_amt_servers() {
        let lab = reference_lab();
        assert_eq!(lab.len(), 4);
        assert_eq!(lab[2].power_parameters["power_address"], "172.16.15.3");
        assert_eq!(lab[1].memory_mib, 16 * 1024);
    }
}
