//! What MAAS calls return (tolerant `Deserialize` structs and enums) and the parameters they take.
//!
//! Every response field has a default: MAAS leaves fields out when an attribute is missing, older MAAS versions lack
//! newer fields, and many fields are `null` at times. [`lenient`] turns `null` into the default.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

// === lenient helpers ===

/// `null` (or a value of the wrong JSON type, for the `*_any` helpers) reads as the type's default.
pub mod lenient {
    use serde::{Deserialize, Deserializer};

    /// `null` becomes `T::default()`.
    pub fn null_default<'de, D, T>(de: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default,
    {
        Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
    }

    /// A map whose values may be strings, numbers, booleans or null; each becomes a string (null becomes "").
    pub fn string_map<'de, D>(de: D) -> Result<std::collections::BTreeMap<String, String>, D::Error>
    where
        D: Deserializer<'de>,
    {
        let raw = Option::<std::collections::BTreeMap<String, serde_json::Value>>::deserialize(de)?.unwrap_or_default();
        Ok(raw.into_iter().map(|(k, v)| (k, value_to_string(v))).collect())
    }

    /// A number that MAAS sometimes sends as a string (or null): anything unreadable becomes `None`.
    pub fn opt_f64_any<'de, D>(de: D) -> Result<Option<f64>, D::Error>
    where
        D: Deserializer<'de>,
    {
        Ok(match serde_json::Value::deserialize(de)? {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
    }

    /// A string that MAAS sometimes sends as a number.
    pub fn string_any<'de, D>(de: D) -> Result<String, D::Error>
    where
        D: Deserializer<'de>,
    {
        Ok(value_to_string(serde_json::Value::deserialize(de)?))
    }

    pub(crate) fn value_to_string(v: serde_json::Value) -> String {
        match v {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }
    }
}

// === node status ===

macro_rules! node_statuses {
    ($($variant:ident = $int:literal, $key:literal, $label:literal;)*) => {
        /// MAAS's node status (maas-api.md section 3.1): 23 known values, and `Unknown` for any other integer.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum NodeStatus {
            #[default]
            $($variant,)*
            Unknown(i64),
        }

        impl NodeStatus {
            /// Every known status, in integer order.
            pub const ALL: [NodeStatus; 23] = [$(NodeStatus::$variant,)*];

            /// The integer MAAS sends in `status`.
            pub fn as_int(self) -> i64 {
                match self {
                    $(NodeStatus::$variant => $int,)*
                    NodeStatus::Unknown(n) => n,
                }
            }

            pub fn from_int(n: i64) -> NodeStatus {
                match n {
                    $($int => NodeStatus::$variant,)*
                    other => NodeStatus::Unknown(other),
                }
            }

            /// The lower-case key used in list filters (`status=deployed`); `None` for an unknown status.
            pub fn key(self) -> Option<&'static str> {
                match self {
                    $(NodeStatus::$variant => Some($key),)*
                    NodeStatus::Unknown(_) => None,
                }
            }

            /// The label MAAS shows in `status_name` and in its messages, e.g. `Failed deployment`.
            pub fn label(self) -> &'static str {
                match self {
                    $(NodeStatus::$variant => $label,)*
                    NodeStatus::Unknown(_) => "Unknown",
                }
            }
        }

        impl FromStr for NodeStatus {
            type Err = String;

            /// Parses the lower-case key (`failed_deployment`).
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($key => Ok(NodeStatus::$variant),)*
                    other => Err(format!("unknown MAAS node status `{other}`")),
                }
            }
        }
    };
}

node_statuses! {
    New = 0, "new", "New";
    Commissioning = 1, "commissioning", "Commissioning";
    FailedCommissioning = 2, "failed_commissioning", "Failed commissioning";
    Missing = 3, "missing", "Missing";
    Ready = 4, "ready", "Ready";
    Reserved = 5, "reserved", "Reserved";
    Deployed = 6, "deployed", "Deployed";
    Retired = 7, "retired", "Retired";
    Broken = 8, "broken", "Broken";
    Deploying = 9, "deploying", "Deploying";
    Allocated = 10, "allocated", "Allocated";
    FailedDeployment = 11, "failed_deployment", "Failed deployment";
    Releasing = 12, "releasing", "Releasing";
    FailedReleasing = 13, "failed_releasing", "Releasing failed";
    DiskErasing = 14, "disk_erasing", "Disk erasing";
    FailedDiskErasing = 15, "failed_disk_erasing", "Failed disk erasing";
    RescueMode = 16, "rescue_mode", "Rescue mode";
    EnteringRescueMode = 17, "entering_rescue_mode", "Entering rescue mode";
    FailedEnteringRescueMode = 18, "failed_entering_rescue_mode", "Failed to enter rescue mode";
    ExitingRescueMode = 19, "exiting_rescue_mode", "Exiting rescue mode";
    FailedExitingRescueMode = 20, "failed_exiting_rescue_mode", "Failed to exit rescue mode";
    Testing = 21, "testing", "Testing";
    FailedTesting = 22, "failed_testing", "Failed testing";
}

impl NodeStatus {
    /// True for the statuses MAAS moves out of by itself (a poller keeps watching these).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            NodeStatus::Commissioning
                | NodeStatus::Deploying
                | NodeStatus::Releasing
                | NodeStatus::DiskErasing
                | NodeStatus::EnteringRescueMode
                | NodeStatus::ExitingRescueMode
                | NodeStatus::Testing
        )
    }

    /// True for the failure statuses (and Broken).
    pub fn is_failed(self) -> bool {
        matches!(
            self,
            NodeStatus::FailedCommissioning
                | NodeStatus::Broken
                | NodeStatus::FailedDeployment
                | NodeStatus::FailedReleasing
                | NodeStatus::FailedDiskErasing
                | NodeStatus::FailedEnteringRescueMode
                | NodeStatus::FailedExitingRescueMode
                | NodeStatus::FailedTesting
        )
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeStatus::Unknown(n) => write!(f, "Unknown ({n})"),
            known => f.write_str(known.label()),
        }
    }
}

impl<'de> Deserialize<'de> for NodeStatus {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Ok(match serde_json::Value::deserialize(de)? {
            serde_json::Value::Number(n) => NodeStatus::from_int(n.as_i64().unwrap_or(-1)),
            serde_json::Value::String(s) => s.parse().unwrap_or(NodeStatus::Unknown(-1)),
            _ => NodeStatus::Unknown(-1),
        })
    }
}

// === small string enums with a fallback ===

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)*
            /// A value this client does not know (kept verbatim); also the default when MAAS sent none.
            Other(String),
        }

        impl Default for $name {
            fn default() -> Self {
                $name::Other(String::new())
            }
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)*
                    $name::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => $name::$variant,)*
                    other => $name::Other(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
                let text = lenient::value_to_string(serde_json::Value::deserialize(de)?);
                Ok($name::from(text.as_str()))
            }
        }
    };
}

string_enum! {
    /// A machine's `power_state`.
    PowerState { On = "on", Off = "off", Unknown = "unknown", Error = "error", }
}

string_enum! {
    /// The state of a rack or region service (`service_set[].status`).
    ServiceStatus { Running = "running", Dead = "dead", Degraded = "degraded", Off = "off", Unknown = "unknown", }
}

string_enum! {
    /// The `type` of an IP range.
    IpRangeType { Dynamic = "dynamic", Reserved = "reserved", }
}

string_enum! {
    /// The `dnssec_validation` setting.
    DnssecValidation { Auto = "auto", Yes = "yes", No = "no", }
}

string_enum! {
    /// The level of an event.
    EventLevel { Audit = "AUDIT", Debug = "DEBUG", Info = "INFO", Warning = "WARNING", Error = "ERROR", Critical = "CRITICAL", }
}

/// A script status (`commissioning_status`, `testing_status`, a script result's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(from = "Option<i64>")]
pub struct ScriptStatus(pub i64);

impl Default for ScriptStatus {
    fn default() -> Self {
        ScriptStatus(-1)
    }
}

impl From<Option<i64>> for ScriptStatus {
    fn from(v: Option<i64>) -> Self {
        ScriptStatus(v.unwrap_or(-1))
    }
}

impl ScriptStatus {
    pub const PASSED: ScriptStatus = ScriptStatus(2);
    pub const FAILED: ScriptStatus = ScriptStatus(3);

    pub fn label(self) -> &'static str {
        match self.0 {
            0 => "Pending",
            1 => "Running",
            2 => "Passed",
            3 => "Failed",
            4 => "Timed out",
            5 => "Aborted",
            6 => "Degraded",
            7 => "Installing",
            8 => "Failed installing",
            9 => "Skipped",
            10 => "Applying custom network configuration",
            11 => "Failed to apply custom network configuration",
            _ => "Unknown",
        }
    }
}

// === machines ===

/// A zone, pool or domain reference embedded in a machine.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct NamedRef {
    pub id: Option<i64>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub name: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub description: String,
}

/// A MAAS machine (`machines/{system_id}/`), with the fields metalfleet uses.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Machine {
    #[serde(deserialize_with = "lenient::null_default")]
    pub system_id: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub hostname: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub fqdn: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub description: String,
    pub hardware_uuid: Option<String>,
    pub status: NodeStatus,
    #[serde(deserialize_with = "lenient::null_default")]
    pub status_name: String,
    pub status_message: Option<String>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub error_description: String,
    pub power_state: PowerState,
    #[serde(deserialize_with = "lenient::null_default")]
    pub power_type: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub architecture: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub cpu_count: u32,
    /// MHz.
    #[serde(deserialize_with = "lenient::null_default")]
    pub cpu_speed: u64,
    /// MiB.
    #[serde(deserialize_with = "lenient::null_default")]
    pub memory: u64,
    /// MB (10^6 bytes), the sum of the physical block devices.
    #[serde(deserialize_with = "lenient::null_default")]
    pub storage: f64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub osystem: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub distro_series: String,
    pub owner: Option<String>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub locked: bool,
    #[serde(deserialize_with = "lenient::null_default")]
    pub node_type: i64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub tag_names: Vec<String>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub ip_addresses: Vec<String>,
    pub zone: Option<NamedRef>,
    pub pool: Option<NamedRef>,
    pub domain: Option<NamedRef>,
    #[serde(deserialize_with = "lenient::string_map")]
    pub hardware_info: BTreeMap<String, String>,
    #[serde(deserialize_with = "lenient::string_map")]
    pub workload_annotations: BTreeMap<String, String>,
    pub boot_interface: Option<Interface>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub interface_set: Vec<Interface>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub blockdevice_set: Vec<BlockDevice>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub physicalblockdevice_set: Vec<BlockDevice>,
    pub commissioning_status: ScriptStatus,
    pub testing_status: ScriptStatus,
    pub current_commissioning_result_id: Option<i64>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub netboot: bool,
    #[serde(deserialize_with = "lenient::null_default")]
    pub resource_uri: String,
}

impl Machine {
    /// Lower-case MACs of every interface, in MAAS's order.
    pub fn mac_addresses(&self) -> Vec<String> {
        self.interface_set.iter().map(|i| i.mac_address.to_ascii_lowercase()).collect()
    }

    /// The commissioned hardware, as MAAS recorded it.
    pub fn hardware(&self) -> HardwareDetails {
        let disks = if self.physicalblockdevice_set.is_empty() {
            self.blockdevice_set.iter().filter(|d| d.device_type != "virtual").cloned().collect()
        } else {
            self.physicalblockdevice_set.clone()
        };
        HardwareDetails {
            system_id: self.system_id.clone(),
            architecture: self.architecture.clone(),
            cpu_count: self.cpu_count,
            cpu_speed_mhz: self.cpu_speed,
            // Saturating: a hostile or broken answer (memory near u64::MAX MiB) must not panic the coordinator.
            memory_bytes: self.memory.saturating_mul(1024 * 1024),
            storage_bytes: (self.storage * 1_000_000.0).round() as u64,
            hardware_info: self.hardware_info.clone(),
            disks,
            interfaces: self.interface_set.clone(),
            commissioning_status: self.commissioning_status,
            testing_status: self.testing_status,
        }
    }
}

/// The commissioned specs of a machine in plain units (bytes), derived from the machine object.
#[derive(Debug, Clone, PartialEq)]
pub struct HardwareDetails {
    pub system_id: String,
    pub architecture: String,
    pub cpu_count: u32,
    pub cpu_speed_mhz: u64,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    pub hardware_info: BTreeMap<String, String>,
    pub disks: Vec<BlockDevice>,
    pub interfaces: Vec<Interface>,
    pub commissioning_status: ScriptStatus,
    pub testing_status: ScriptStatus,
}

/// A network interface of a machine, device or controller.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Interface {
    #[serde(deserialize_with = "lenient::null_default")]
    pub id: i64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub name: String,
    #[serde(rename = "type", deserialize_with = "lenient::null_default")]
    pub interface_type: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub mac_address: String,
    pub vlan: Option<Vlan>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub enabled: bool,
    #[serde(deserialize_with = "lenient::null_default")]
    pub links: Vec<Link>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub link_connected: bool,
    /// Mbit/s.
    #[serde(deserialize_with = "lenient::null_default")]
    pub link_speed: u64,
    /// Mbit/s.
    #[serde(deserialize_with = "lenient::null_default")]
    pub interface_speed: u64,
}

/// An address link of an interface.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Link {
    #[serde(deserialize_with = "lenient::null_default")]
    pub id: i64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub mode: String,
    pub subnet: Option<Subnet>,
    pub ip_address: Option<String>,
}

/// A block device (a disk, for physical ones).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct BlockDevice {
    #[serde(deserialize_with = "lenient::null_default")]
    pub id: i64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub name: String,
    #[serde(rename = "type", deserialize_with = "lenient::null_default")]
    pub device_type: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub model: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub serial: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub path: String,
    /// Bytes.
    #[serde(deserialize_with = "lenient::null_default")]
    pub size: u64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub block_size: u64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub tags: Vec<String>,
}

/// The reply to `query_power_state`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PowerStateReply {
    pub state: PowerState,
}

/// A commissioning/testing/installation script set (`nodes/{system_id}/results/`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ScriptSet {
    #[serde(deserialize_with = "lenient::null_default")]
    pub id: i64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub system_id: String,
    /// 0 commissioning, 1 installation, 2 testing, 3 release.
    #[serde(rename = "type", deserialize_with = "lenient::null_default")]
    pub set_type: i64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub type_name: String,
    pub status: ScriptStatus,
    #[serde(deserialize_with = "lenient::null_default")]
    pub status_name: String,
    pub started: Option<String>,
    pub ended: Option<String>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub runtime: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub results: Vec<ScriptResult>,
}

/// One script's result inside a [`ScriptSet`]. The outputs are base64 and only present with `include_output`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ScriptResult {
    #[serde(deserialize_with = "lenient::null_default")]
    pub id: i64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub name: String,
    pub status: ScriptStatus,
    #[serde(deserialize_with = "lenient::null_default")]
    pub status_name: String,
    pub exit_status: Option<i64>,
    pub started: Option<String>,
    pub ended: Option<String>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub runtime: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub suppressed: bool,
    pub output: Option<String>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

// === network ===

/// A VLAN. `fabric` is the fabric's name, `primary_rack` a rack system_id.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Vlan {
    #[serde(deserialize_with = "lenient::null_default")]
    pub id: i64,
    /// The 802.1Q tag; 0 for the untagged VLAN.
    #[serde(deserialize_with = "lenient::null_default")]
    pub vid: u16,
    #[serde(deserialize_with = "lenient::string_any")]
    pub name: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub fabric: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub fabric_id: i64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub mtu: u32,
    #[serde(deserialize_with = "lenient::null_default")]
    pub dhcp_on: bool,
    /// The address of a DHCP server MAAS saw on this VLAN that is not its own.
    pub external_dhcp: Option<String>,
    pub primary_rack: Option<String>,
    pub secondary_rack: Option<String>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub space: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub resource_uri: String,
}

/// A fabric with its VLANs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Fabric {
    #[serde(deserialize_with = "lenient::null_default")]
    pub id: i64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub name: String,
    pub class_type: Option<String>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub vlans: Vec<Vlan>,
}

/// A subnet. `dns_servers` is a list here even though MAAS takes it as a separated string on write.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Subnet {
    #[serde(deserialize_with = "lenient::null_default")]
    pub id: i64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub name: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub description: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub cidr: String,
    pub vlan: Option<Vlan>,
    pub gateway_ip: Option<String>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub dns_servers: Vec<String>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub space: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub managed: bool,
    #[serde(deserialize_with = "lenient::null_default")]
    pub allow_dns: bool,
    #[serde(deserialize_with = "lenient::null_default")]
    pub allow_proxy: bool,
    #[serde(deserialize_with = "lenient::null_default")]
    pub active_discovery: bool,
    #[serde(deserialize_with = "lenient::null_default")]
    pub rdns_mode: i64,
}

/// A used range of a subnet (`reserved_ip_ranges`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ReservedRange {
    #[serde(deserialize_with = "lenient::null_default")]
    pub start: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub end: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub num_addresses: u64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub purpose: Vec<String>,
}

/// A free range of a subnet (`unreserved_ip_ranges`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct UnreservedRange {
    #[serde(deserialize_with = "lenient::null_default")]
    pub start: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub end: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub num_addresses: u64,
}

/// A subnet's usage (`statistics`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SubnetStatistics {
    #[serde(deserialize_with = "lenient::null_default")]
    pub num_available: u64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub largest_available: u64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub num_unavailable: u64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub total_addresses: u64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub usage: f64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub usage_string: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub available_string: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub first_address: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub last_address: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub ip_version: u8,
}

/// A user (also embedded in IP ranges).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct User {
    #[serde(deserialize_with = "lenient::null_default")]
    pub username: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub email: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub is_superuser: bool,
    #[serde(deserialize_with = "lenient::null_default")]
    pub is_local: bool,
}

/// A dynamic or reserved IP range.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct IpRange {
    #[serde(deserialize_with = "lenient::null_default")]
    pub id: i64,
    #[serde(rename = "type")]
    pub range_type: IpRangeType,
    #[serde(deserialize_with = "lenient::null_default")]
    pub start_ip: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub end_ip: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub comment: String,
    pub subnet: Option<Subnet>,
    pub user: Option<User>,
}

// === controllers ===

/// A service on a rack or region controller.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Service {
    #[serde(deserialize_with = "lenient::null_default")]
    pub name: String,
    pub status: ServiceStatus,
    #[serde(deserialize_with = "lenient::null_default")]
    pub status_info: String,
}

/// A rack (or region+rack) controller.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RackController {
    #[serde(deserialize_with = "lenient::null_default")]
    pub system_id: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub hostname: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub fqdn: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub node_type: i64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub node_type_name: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub version: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub architecture: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub ip_addresses: Vec<String>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub interface_set: Vec<Interface>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub service_set: Vec<Service>,
}

impl RackController {
    /// The services that are neither running nor deliberately off (MAAS shows "unknown" for services the region
    /// manages on a region+rack, so those do not count as unhealthy).
    pub fn unhealthy_services(&self) -> Vec<&Service> {
        self.service_set.iter().filter(|s| matches!(s.status, ServiceStatus::Dead | ServiceStatus::Degraded)).collect()
    }

    /// True when this rack has an interface on the given VLAN id (the rule for `primary_rack`).
    pub fn is_on_vlan(&self, vlan_id: i64) -> bool {
        self.interface_set.iter().any(|i| i.vlan.as_ref().is_some_and(|v| v.id == vlan_id))
    }
}

/// The images a rack holds (`list_boot_images`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RackBootImages {
    #[serde(deserialize_with = "lenient::null_default")]
    pub images: Vec<RackBootImage>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub connected: bool,
    /// `synced`, `syncing` or `out-of-sync`.
    #[serde(deserialize_with = "lenient::null_default")]
    pub status: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RackBootImage {
    #[serde(deserialize_with = "lenient::null_default")]
    pub name: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub architecture: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub subarches: Vec<String>,
}

// === boot images ===

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct BootSource {
    #[serde(deserialize_with = "lenient::null_default")]
    pub id: i64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub url: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub keyring_filename: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub keyring_data: String,
    pub created: Option<String>,
    pub updated: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct BootSourceSelection {
    #[serde(deserialize_with = "lenient::null_default")]
    pub id: i64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub boot_source_id: i64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub os: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub release: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub arches: Vec<String>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub subarches: Vec<String>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub labels: Vec<String>,
}

/// A boot resource; `sets` is only filled by a read of one resource.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct BootResource {
    #[serde(deserialize_with = "lenient::null_default")]
    pub id: i64,
    /// `Synced` or `Uploaded`.
    #[serde(rename = "type", deserialize_with = "lenient::null_default")]
    pub resource_type: String,
    /// E.g. `ubuntu/jammy`.
    #[serde(deserialize_with = "lenient::null_default")]
    pub name: String,
    /// E.g. `amd64/ga-22.04`.
    #[serde(deserialize_with = "lenient::null_default")]
    pub architecture: String,
    #[serde(deserialize_with = "lenient::string_any")]
    pub subarches: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub title: String,
    pub last_deployed: Option<String>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub sets: BTreeMap<String, BootResourceSet>,
}

impl BootResource {
    /// True when at least one set is complete (the image can be used).
    pub fn is_synced(&self) -> bool {
        self.sets.values().any(|s| s.complete)
    }

    /// The best progress of the sets, 0-100, when MAAS reports one.
    pub fn progress(&self) -> Option<f64> {
        self.sets.values().filter_map(|s| if s.complete { Some(100.0) } else { s.progress }).reduce(f64::max)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct BootResourceSet {
    #[serde(deserialize_with = "lenient::string_any")]
    pub version: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub label: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub size: u64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub complete: bool,
    #[serde(deserialize_with = "lenient::opt_f64_any")]
    pub progress: Option<f64>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub files: BTreeMap<String, BootResourceFile>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct BootResourceFile {
    #[serde(deserialize_with = "lenient::null_default")]
    pub filename: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub filetype: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub sha256: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub size: u64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub complete: bool,
    #[serde(deserialize_with = "lenient::opt_f64_any")]
    pub progress: Option<f64>,
}

// === accounts, events, devices, version ===

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SshKey {
    #[serde(deserialize_with = "lenient::null_default")]
    pub id: i64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub key: String,
    /// "" or e.g. `lp:user`; older MAAS sends null.
    #[serde(deserialize_with = "lenient::null_default")]
    pub keysource: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Event {
    #[serde(deserialize_with = "lenient::null_default")]
    pub id: i64,
    /// The system_id of the node.
    pub node: Option<String>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub hostname: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub username: String,
    pub level: EventLevel,
    /// As MAAS writes it: `Fri, 07 Dec. 2018 20:11:08`.
    #[serde(deserialize_with = "lenient::null_default")]
    pub created: String,
    #[serde(rename = "type", deserialize_with = "lenient::null_default")]
    pub event_type: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub description: String,
}

/// One page of `events/?op=query`, newest first.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct EventPage {
    #[serde(deserialize_with = "lenient::null_default")]
    pub count: u64,
    #[serde(deserialize_with = "lenient::null_default")]
    pub events: Vec<Event>,
    pub next_uri: Option<String>,
    pub prev_uri: Option<String>,
}

/// A device (e.g. the lab's router registered in MAAS).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Device {
    #[serde(deserialize_with = "lenient::null_default")]
    pub system_id: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub hostname: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub fqdn: String,
    pub owner: Option<String>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub ip_addresses: Vec<String>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub interface_set: Vec<Interface>,
    #[serde(deserialize_with = "lenient::null_default")]
    pub tag_names: Vec<String>,
}

impl Device {
    pub fn mac_addresses(&self) -> Vec<String> {
        self.interface_set.iter().map(|i| i.mac_address.to_ascii_lowercase()).collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Version {
    #[serde(deserialize_with = "lenient::null_default")]
    pub version: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub subversion: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub capabilities: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Tag {
    #[serde(deserialize_with = "lenient::null_default")]
    pub name: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub comment: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub definition: String,
    #[serde(deserialize_with = "lenient::null_default")]
    pub kernel_opts: String,
}

// === request parameters ===

/// Filters for `machines/` (all optional; a list repeats the key; all given filters must match).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MachineFilter {
    pub ids: Vec<String>,
    pub not_ids: Vec<String>,
    pub hostnames: Vec<String>,
    pub not_hostnames: Vec<String>,
    pub mac_addresses: Vec<String>,
    pub statuses: Vec<NodeStatus>,
    pub not_statuses: Vec<NodeStatus>,
    pub tags: Vec<String>,
    pub not_tags: Vec<String>,
    pub zone: Option<String>,
    pub pool: Option<String>,
    pub arch: Option<String>,
    pub owner: Option<String>,
    pub domain: Option<String>,
    pub power_state: Option<PowerState>,
    /// At least this many CPUs.
    pub min_cpu_count: Option<u32>,
    /// At least this much memory, MiB.
    pub min_memory_mib: Option<u64>,
}

impl MachineFilter {
    /// The query parameters MAAS expects (`status` as lower-case keys, lists as repeated keys).
    pub fn to_query(&self) -> Vec<(String, String)> {
        let mut q = Vec::new();
        let mut many = |key: &str, values: &[String]| {
            for v in values {
                q.push((key.to_owned(), v.clone()));
            }
        };
        many("id", &self.ids);
        many("not_id", &self.not_ids);
        many("hostname", &self.hostnames);
        many("not_hostname", &self.not_hostnames);
        many("mac_address", &self.mac_addresses);
        many("tags", &self.tags);
        many("not_tags", &self.not_tags);
        for s in &self.statuses {
            q.push(("status".into(), status_key(*s)));
        }
        for s in &self.not_statuses {
            q.push(("not_status".into(), status_key(*s)));
        }
        let one = [
            ("zone", self.zone.clone()),
            ("pool", self.pool.clone()),
            ("arch", self.arch.clone()),
            ("owner", self.owner.clone()),
            ("domain", self.domain.clone()),
            ("power_state", self.power_state.as_ref().map(|p| p.as_str().to_owned())),
            ("cpu_count", self.min_cpu_count.map(|n| n.to_string())),
            ("mem", self.min_memory_mib.map(|n| n.to_string())),
        ];
        for (key, value) in one {
            if let Some(v) = value {
                q.push((key.into(), v));
            }
        }
        q
    }
}

fn status_key(s: NodeStatus) -> String {
    // An unknown status has no key; MAAS will answer 400 for the integer, which is the honest outcome.
    s.key().map(str::to_owned).unwrap_or_else(|| s.as_int().to_string())
}

/// A machine to create (`POST machines/`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewMachine {
    /// E.g. `amd64/generic`.
    pub architecture: String,
    pub mac_addresses: Vec<String>,
    pub hostname: Option<String>,
    pub description: Option<String>,
    pub domain: Option<String>,
    /// E.g. `ipmi`, `manual`, `virsh`.
    pub power_type: Option<String>,
    /// Sent as `power_parameters_<key>=<value>`, e.g. `power_address`.
    pub power_parameters: BTreeMap<String, String>,
    /// Whether an admin's create starts commissioning (MAAS's default: yes).
    pub commission: Option<bool>,
}

/// Options of `commission`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommissionOptions {
    pub enable_ssh: Option<bool>,
    pub skip_bmc_config: Option<bool>,
    pub skip_networking: Option<bool>,
    pub skip_storage: Option<bool>,
    /// Script names or tags, sent comma-separated.
    pub commissioning_scripts: Vec<String>,
    /// Script names or tags, sent comma-separated; `none` disables testing.
    pub testing_scripts: Vec<String>,
}

/// What `allocate` should pick. All constraints are optional; MAAS rejects any other parameter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AllocateRequest {
    /// Hostname or FQDN.
    pub name: Option<String>,
    pub system_id: Option<String>,
    pub arch: Option<String>,
    pub min_cpu_count: Option<u32>,
    /// MiB.
    pub min_memory_mib: Option<u64>,
    pub tags: Vec<String>,
    pub not_tags: Vec<String>,
    pub zone: Option<String>,
    pub pool: Option<String>,
    pub agent_name: Option<String>,
    pub comment: Option<String>,
    pub dry_run: bool,
}

/// Options of `deploy`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeployOptions {
    /// `jammy` or `ubuntu/jammy`; MAAS's default series when absent.
    pub distro_series: Option<String>,
    /// Raw cloud-init user data; the client base64-encodes it.
    pub user_data: Option<Vec<u8>>,
    pub hwe_kernel: Option<String>,
    pub comment: Option<String>,
    pub agent_name: Option<String>,
    pub ephemeral_deploy: Option<bool>,
    pub enable_hw_sync: Option<bool>,
}

/// Options of `release`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReleaseOptions {
    pub erase: bool,
    pub secure_erase: bool,
    pub quick_erase: bool,
    pub force: bool,
    pub comment: Option<String>,
}

/// How `power_off` stops the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopMode {
    #[default]
    Hard,
    Soft,
}

/// Which script results to read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultsQuery {
    /// `commissioning`, `testing`, `installation`, `release`.
    pub result_type: Option<String>,
    /// `cpu`, `memory`, `storage`, `network`, `node`, `gpu`.
    pub hardware_type: Option<String>,
    pub include_output: bool,
    /// Script names.
    pub filters: Vec<String>,
}

/// A subnet named by id or by CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubnetRef {
    Id(i64),
    Cidr(String),
}

impl fmt::Display for SubnetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubnetRef::Id(id) => write!(f, "{id}"),
            SubnetRef::Cidr(cidr) => f.write_str(cidr),
        }
    }
}

/// Changes to a VLAN (`PUT fabrics/{fabric_id}/vlans/{vid}/`); fields left `None` keep their value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VlanUpdate {
    pub dhcp_on: Option<bool>,
    /// A rack system_id (or hostname).
    pub primary_rack: Option<String>,
    pub secondary_rack: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub mtu: Option<u32>,
    pub space: Option<String>,
}

/// A new IP range.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIpRange {
    pub range_type: IpRangeType,
    pub start_ip: String,
    pub end_ip: String,
    /// The subnet id; MAAS picks it from `start_ip` when absent.
    pub subnet: Option<i64>,
    pub comment: Option<String>,
}

/// A new boot source selection, e.g. ubuntu/jammy for amd64.
#[derive(Debug, Clone, PartialEq)]
pub struct NewBootSourceSelection {
    pub os: String,
    pub release: String,
    pub arches: Vec<String>,
    /// `*` when empty.
    pub subarches: Vec<String>,
    /// `*` when empty.
    pub labels: Vec<String>,
}

/// Filters for `events/?op=query`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    /// Only events newer than this event id.
    pub after: Option<i64>,
    pub before: Option<i64>,
    /// At most 1000.
    pub limit: Option<u32>,
    /// system_ids.
    pub ids: Vec<String>,
    pub hostnames: Vec<String>,
    pub level: Option<EventLevel>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_status_table_is_complete_and_round_trips() {
        assert_eq!(NodeStatus::ALL.len(), 23);
        for (i, s) in NodeStatus::ALL.iter().enumerate() {
            assert_eq!(s.as_int(), i as i64);
            assert_eq!(NodeStatus::from_int(i as i64), *s);
            assert_eq!(s.key().unwrap().parse::<NodeStatus>().unwrap(), *s);
        }
        assert_eq!(NodeStatus::FailedReleasing.label(), "Releasing failed");
        assert_eq!(NodeStatus::FailedEnteringRescueMode.label(), "Failed to enter rescue mode");
        assert_eq!(NodeStatus::from_int(99), NodeStatus::Unknown(99));
        assert_eq!(serde_json::from_str::<NodeStatus>("11").unwrap(), NodeStatus::FailedDeployment);
        assert_eq!(serde_json::from_str::<NodeStatus>("42").unwrap(), NodeStatus::Unknown(42));
    }

    #[test]
    fn power_state_has_a_fallback() {
        assert_eq!(serde_json::from_str::<PowerState>("\"on\"").unwrap(), PowerState::On);
        assert_eq!(serde_json::from_str::<PowerState>("\"weird\"").unwrap(), PowerState::Other("weird".into()));
        assert_eq!(serde_json::from_str::<PowerState>("null").unwrap(), PowerState::Other(String::new()));
    }

    #[test]
    fn machine_tolerates_missing_null_and_unknown_fields() {
        let m: Machine = serde_json::from_str(
            r#"{"system_id": "abc123", "status": 6, "power_state": "on", "owner": null, "tag_names": null,
                "memory": 2048, "storage": 500107.862016, "brand_new_field": {"x": 1}, "hardware_info": {"cpu_model": null}}"#,
        )
        .unwrap();
        assert_eq!(m.system_id, "abc123");
        assert_eq!(m.status, NodeStatus::Deployed);
        assert_eq!(m.power_state, PowerState::On);
        assert!(m.tag_names.is_empty());
        assert_eq!(m.hardware().memory_bytes, 2048 * 1024 * 1024);
        assert_eq!(m.hardware().storage_bytes, 500_107_862_016);
        assert_eq!(m.hardware_info["cpu_model"], "");
    }

    #[test]
    fn absurd_memory_saturates_instead_of_overflowing() {
        // Found by maas::client::proptests: `memory * 1024 * 1024` overflowed (a panic in debug builds).
        let m: Machine = serde_json::from_str(r#"{"system_id": "x", "memory": 18446744073709551615}"#).unwrap();
        assert_eq!(m.hardware().memory_bytes, u64::MAX);
        let m: Machine = serde_json::from_str(r#"{"system_id": "x", "memory": 17592186044416}"#).unwrap();
        assert_eq!(m.hardware().memory_bytes, u64::MAX);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics_the_decoders(text in ".{0,200}") {
            let _ = serde_json::from_str::<Machine>(&text);
            let _ = serde_json::from_str::<Vec<Subnet>>(&text);
            let _ = serde_json::from_str::<EventPage>(&text);
        }

        #[test]
        fn any_status_integer_round_trips(n in proptest::prelude::any::<i64>()) {
            proptest::prop_assert_eq!(NodeStatus::from_int(n).as_int(), n);
        }

        #[test]
        fn wrongly_typed_fields_are_tolerated_where_maas_varies(progress in ".{0,10}", size in 0u64..u64::MAX) {
            let doc = serde_json::json!({"version": 1, "complete": false, "progress": progress, "size": size});
            let set: BootResourceSet = serde_json::from_value(doc).unwrap();
            proptest::prop_assert_eq!(set.size, size);
        }
    }

    #[test]
    fn filter_uses_lower_case_keys_and_repeats() {
        let f = MachineFilter {
            hostnames: vec!["a".into(), "b".into()],
            statuses: vec![NodeStatus::Deployed, NodeStatus::FailedDeployment],
            min_memory_mib: Some(4096),
            ..Default::default()
        };
        let q = f.to_query();
        let pairs: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            vec![
                ("hostname", "a"),
                ("hostname", "b"),
                ("status", "deployed"),
                ("status", "failed_deployment"),
                ("mem", "4096")
            ]
        );
    }
}
