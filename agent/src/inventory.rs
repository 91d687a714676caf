//! The host's inventory: CPU, memory, disks, network interfaces, DMI and OS.
//!
//! CPU and memory figures and interface addresses come from sysinfo; disks, interfaces, DMI and the OS
//! release are read from files under a [`Root`] ("/" in production), so unit tests can build a fake
//! `/sys` tree in a temporary directory. An unreadable file gives an empty field, never an error: an
//! inventory of a half-readable host is still worth sending.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::timefmt::serde_rfc3339;

/// The filesystem root that `/sys`, `/proc` and `/etc` are read under.
#[derive(Debug, Clone)]
pub struct Root(PathBuf);

impl Root {
    /// The real root, `/`.
    pub fn host() -> Self {
        Root(PathBuf::from("/"))
    }

    /// A fake root, for tests.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Root(path.into())
    }

    /// `relative` (written like `sys/block`) under this root.
    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.0.join(relative)
    }

    /// The trimmed content of a text file, or `None` when it cannot be read.
    fn read(&self, relative: impl AsRef<Path>) -> Option<String> {
        std::fs::read_to_string(self.join(relative)).ok().map(|text| text.trim().to_string())
    }
}

/// Everything `agent inventory` reports. Serialized as the command's JSON output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inventory {
    pub cpu_model: String,
    pub physical_cores: u32,
    pub logical_cpus: u32,
    pub memory_total_bytes: u64,
    pub disks: Vec<Disk>,
    pub interfaces: Vec<Interface>,
    pub dmi: Dmi,
    pub os: OsInfo,
    #[serde(with = "serde_rfc3339")]
    pub collected_at: SystemTime,
}

/// A real disk from `/sys/block`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    pub name: String,
    pub size_bytes: u64,
    pub model: String,
    pub serial: String,
    pub rotational: bool,
}

/// A network interface that has a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub name: String,
    /// Lower-case, colon separated.
    pub mac: String,
    /// Mbit/s; 0 when the kernel does not know.
    pub speed_mbps: u32,
    pub link_state: LinkState,
    /// `ADDRESS/PREFIX`, IPv4 and IPv6.
    pub addresses: Vec<String>,
    /// True when `/sys/class/net/NAME/device` does not exist (veth, bridge, bond, tun...).
    #[serde(rename = "virtual")]
    pub is_virtual: bool,
}

/// The kernel's `operstate`, reduced to what the coordinator cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Up,
    Down,
    Unknown,
}

/// DMI strings from `/sys/class/dmi/id`; empty when unreadable (e.g. `product_serial` needs root).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dmi {
    pub vendor: String,
    pub product: String,
    pub serial: String,
    pub bios_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OsInfo {
    pub name: String,
    pub version: String,
    pub kernel: String,
    #[serde(with = "serde_rfc3339")]
    pub boot_time: SystemTime,
}

/// Reads the whole inventory of this host, leaving out the disks named in `hide_disks`.
///
/// Blocking (it reads many small files): call it from `spawn_blocking` inside async code.
pub fn collect(root: &Root, hide_disks: &[String]) -> Inventory {
    let facts = HostFacts::read();
    let mut disks = read_disks(root);
    hide(&mut disks, hide_disks);
    let (name, version) = read_os_release(root);
    Inventory {
        cpu_model: facts.cpu_model,
        physical_cores: facts.physical_cores,
        logical_cpus: facts.logical_cpus,
        memory_total_bytes: facts.memory_total_bytes,
        disks,
        interfaces: read_interfaces(root, &facts.addresses),
        dmi: read_dmi(root),
        os: OsInfo {
            name,
            version,
            kernel: root.read("proc/sys/kernel/osrelease").unwrap_or_default(),
            boot_time: read_boot_time(root),
        },
        collected_at: SystemTime::now(),
    }
}

/// Removes the disks named in `names` (the `hide_disks` test hook that simulates a lost disk).
pub fn hide(disks: &mut Vec<Disk>, names: &[String]) {
    disks.retain(|disk| !names.contains(&disk.name));
}

/// The part of the inventory that sysinfo answers.
struct HostFacts {
    cpu_model: String,
    physical_cores: u32,
    logical_cpus: u32,
    memory_total_bytes: u64,
    addresses: HashMap<String, Vec<String>>,
}

impl HostFacts {
    fn read() -> Self {
        use sysinfo::{CpuRefreshKind, MemoryRefreshKind, Networks, RefreshKind, System};
        let kind = RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram());
        let system = System::new_with_specifics(kind).ok();
        let cpus = system.as_ref().map(|s| s.cpus()).unwrap_or_default();
        let logical_cpus = u32::try_from(cpus.len()).unwrap_or(u32::MAX);
        let cpu_model = cpus.first().map(|cpu| cpu.brand().trim().to_string()).unwrap_or_default();
        let physical_cores =
            System::physical_core_count().ok().and_then(|n| u32::try_from(n).ok()).unwrap_or(logical_cpus);
        let memory_total_bytes = system.as_ref().map(|s| s.total_memory()).unwrap_or(0);
        let mut addresses = HashMap::new();
        if let Ok(networks) = Networks::new_with_refreshed_list() {
            for (name, data) in networks.iter() {
                let mut list: Vec<String> =
                    data.ip_networks().iter().map(|ip| format!("{}/{}", ip.addr, ip.prefix)).collect();
                // IPv4 first, then IPv6, each in address order: stable output for diffs and tests.
                list.sort_by_key(|a| (a.contains(':'), a.clone()));
                addresses.insert(name.to_string_lossy().into_owned(), list);
            }
        }
        HostFacts { cpu_model, physical_cores, logical_cpus, memory_total_bytes, addresses }
    }
}

/// Block device names that are never real disks: loop, RAM and compressed-RAM devices, device-mapper
/// and md layers (their members are reported instead), network block devices, optical and floppy drives.
const VIRTUAL_DISK_PREFIXES: &[&str] = &["loop", "ram", "zram", "dm-", "md", "nbd", "sr", "fd"];

/// Every real disk under `ROOT/sys/block`, sorted by name.
pub fn read_disks(root: &Root) -> Vec<Disk> {
    let Ok(entries) = std::fs::read_dir(root.join("sys/block")) else {
        return Vec::new();
    };
    let mut disks: Vec<Disk> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !VIRTUAL_DISK_PREFIXES.iter().any(|prefix| name.starts_with(prefix)))
        .filter_map(|name| read_disk(root, name))
        .collect();
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    disks
}

fn read_disk(root: &Root, name: String) -> Option<Disk> {
    let dir = PathBuf::from("sys/block").join(&name);
    if root.read(dir.join("removable")).as_deref() == Some("1") {
        return None;
    }
    let sectors: u64 = root.read(dir.join("size"))?.parse().ok()?;
    let device = dir.join("device");
    let model = root.read(device.join("model")).or_else(|| root.read(device.join("name"))).unwrap_or_default();
    let serial = [device.join("serial"), dir.join("serial")]
        .iter()
        .filter_map(|path| root.read(path))
        .find(|s| !s.is_empty())
        .or_else(|| read_vpd_serial(&root.join(device.join("vpd_pg80"))))
        .or_else(|| root.read(device.join("wwid")).filter(|s| !s.is_empty()))
        .unwrap_or_default();
    Some(Disk {
        name,
        size_bytes: sectors.saturating_mul(512),
        model,
        serial,
        rotational: root.read(dir.join("queue/rotational")).as_deref() == Some("1"),
    })
}

/// The unit serial number from a SCSI VPD page 0x80 (4 header bytes, then ASCII).
fn read_vpd_serial(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let length = usize::from(*bytes.get(3)?);
    let text = bytes.get(4..4 + length.min(bytes.len().saturating_sub(4)))?;
    let serial: String = text.iter().map(|&b| char::from(b)).filter(|c| c.is_ascii_graphic()).collect();
    (!serial.is_empty()).then_some(serial)
}

/// Every interface under `ROOT/sys/class/net` with a non-zero 6-byte MAC, sorted by name.
///
/// `addresses` maps interface names to `ADDRESS/PREFIX` strings (from sysinfo in production).
pub fn read_interfaces(root: &Root, addresses: &HashMap<String, Vec<String>>) -> Vec<Interface> {
    let Ok(entries) = std::fs::read_dir(root.join("sys/class/net")) else {
        return Vec::new();
    };
    let mut interfaces: Vec<Interface> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter_map(|name| {
            let dir = PathBuf::from("sys/class/net").join(&name);
            let mac = normalize_mac(&root.read(dir.join("address"))?)?;
            Some(Interface {
                mac,
                speed_mbps: root
                    .read(dir.join("speed"))
                    .and_then(|s| s.parse::<i64>().ok())
                    .and_then(|s| u32::try_from(s).ok())
                    .unwrap_or(0),
                link_state: parse_operstate(&root.read(dir.join("operstate")).unwrap_or_default()),
                addresses: addresses.get(&name).cloned().unwrap_or_default(),
                is_virtual: !root.join(dir.join("device")).exists(),
                name,
            })
        })
        .collect();
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    interfaces
}

/// A lower-case MAC when `raw` is a 6-byte, non-zero hardware address; `None` otherwise.
pub fn normalize_mac(raw: &str) -> Option<String> {
    let mac = raw.trim().to_ascii_lowercase();
    let octets: Vec<&str> = mac.split(':').collect();
    let valid = octets.len() == 6 && octets.iter().all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()));
    (valid && mac != "00:00:00:00:00:00").then_some(mac)
}

fn parse_operstate(state: &str) -> LinkState {
    match state {
        "up" => LinkState::Up,
        "down" | "lowerlayerdown" | "notpresent" | "dormant" => LinkState::Down,
        _ => LinkState::Unknown,
    }
}

/// DMI strings; a file that cannot be read (absent, or root-only) gives "".
pub fn read_dmi(root: &Root) -> Dmi {
    let field = |name: &str| root.read(Path::new("sys/class/dmi/id").join(name)).unwrap_or_default();
    Dmi {
        vendor: field("sys_vendor"),
        product: field("product_name"),
        serial: field("product_serial"),
        bios_version: field("bios_version"),
    }
}

/// `(NAME, VERSION_ID)` from `/etc/os-release` (or `/usr/lib/os-release`); `PRETTY_NAME` when NAME is absent.
pub fn read_os_release(root: &Root) -> (String, String) {
    let text = root.read("etc/os-release").or_else(|| root.read("usr/lib/os-release")).unwrap_or_default();
    let fields: HashMap<&str, String> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim(), value.trim().trim_matches(|c| c == '"' || c == '\'').to_string()))
        .collect();
    let name = fields.get("NAME").or_else(|| fields.get("PRETTY_NAME")).cloned().unwrap_or_default();
    let version = fields.get("VERSION_ID").cloned().unwrap_or_default();
    (name, version)
}

/// The boot time from `btime` in `/proc/stat`; the epoch when unreadable.
fn read_boot_time(root: &Root) -> SystemTime {
    let seconds = root
        .read("proc/stat")
        .and_then(|text| text.lines().find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<u64>().ok())))
        .unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

/// MACs to enroll with: those of physical interfaces, or of every interface when none is physical
/// (agents in containers or network namespaces only have veths).
pub fn enrollment_macs(interfaces: &[Interface]) -> Vec<String> {
    let physical: Vec<String> = interfaces.iter().filter(|i| !i.is_virtual).map(|i| i.mac.clone()).collect();
    if physical.is_empty() { interfaces.iter().map(|i| i.mac.clone()).collect() } else { physical }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `files` (relative path, content) under a fresh temporary root.
    fn fake_root(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        let root = Root::at(dir.path());
        (dir, root)
    }

    #[test]
    fn reads_real_disks_and_skips_virtual_and_removable_ones() {
        let mut vpd = vec![0u8, 0x80, 0, 8];
        vpd.extend_from_slice(b"  ZA1B2C");
        let (_dir, root) = fake_root(&[
            ("sys/block/sda/size", b"1000\n"),
            ("sys/block/sda/removable", b"0\n"),
            ("sys/block/sda/queue/rotational", b"1\n"),
            ("sys/block/sda/device/model", b"ST1000DM003    \n"),
            ("sys/block/sda/device/vpd_pg80", &vpd),
            ("sys/block/nvme0n1/size", b"2048\n"),
            ("sys/block/nvme0n1/removable", b"0\n"),
            ("sys/block/nvme0n1/queue/rotational", b"0\n"),
            ("sys/block/nvme0n1/device/model", b"Samsung SSD 980\n"),
            ("sys/block/nvme0n1/device/serial", b"S64DNX0R\n"),
            ("sys/block/vda/size", b"8\n"),
            ("sys/block/vda/serial", b"virt-1\n"),
            ("sys/block/sdb/size", b"64\n"),
            ("sys/block/sdb/removable", b"1\n"),
            ("sys/block/loop0/size", b"100\n"),
            ("sys/block/zram0/size", b"100\n"),
            ("sys/block/dm-0/size", b"100\n"),
            ("sys/block/md0/size", b"100\n"),
            ("sys/block/sr0/size", b"100\n"),
            ("sys/block/ram0/size", b"100\n"),
            ("sys/block/nbd0/size", b"100\n"),
        ]);
        let disks = read_disks(&root);
        let expected = vec![
            Disk {
                name: "nvme0n1".into(),
                size_bytes: 2048 * 512,
                model: "Samsung SSD 980".into(),
                serial: "S64DNX0R".into(),
                rotational: false,
            },
            Disk {
                name: "sda".into(),
                size_bytes: 512_000,
                model: "ST1000DM003".into(),
                serial: "ZA1B2C".into(),
                rotational: true,
            },
            Disk {
                name: "vda".into(),
                size_bytes: 4096,
                model: String::new(),
                serial: "virt-1".into(),
                rotational: false,
            },
        ];
        assert_eq!(disks, expected);
    }

    #[test]
    fn reads_interfaces_with_a_mac_and_flags_virtual_ones() {
        let (_dir, root) = fake_root(&[
            ("sys/class/net/lo/address", b"00:00:00:00:00:00\n"),
            ("sys/class/net/eth0/address", b"52:54:00:AB:CD:EF\n"),
            ("sys/class/net/eth0/speed", b"1000\n"),
            ("sys/class/net/eth0/operstate", b"up\n"),
            ("sys/class/net/eth0/device/vendor", b"0x8086\n"),
            ("sys/class/net/veth1/address", b"02:00:00:00:00:01\n"),
            ("sys/class/net/veth1/speed", b"-1\n"),
            ("sys/class/net/veth1/operstate", b"down\n"),
            ("sys/class/net/tun0/address", b"\n"),
            ("sys/class/net/sit0/address", b"00:00:00:00\n"),
        ]);
        let addresses = HashMap::from([("eth0".to_string(), vec!["10.0.0.5/24".to_string()])]);
        let interfaces = read_interfaces(&root, &addresses);
        let expected = vec![
            Interface {
                name: "eth0".into(),
                mac: "52:54:00:ab:cd:ef".into(),
                speed_mbps: 1000,
                link_state: LinkState::Up,
                addresses: vec!["10.0.0.5/24".into()],
                is_virtual: false,
            },
            Interface {
                name: "veth1".into(),
                mac: "02:00:00:00:00:01".into(),
                speed_mbps: 0,
                link_state: LinkState::Down,
                addresses: vec![],
                is_virtual: true,
            },
        ];
        assert_eq!(interfaces, expected);
        assert_eq!(enrollment_macs(&interfaces), vec!["52:54:00:ab:cd:ef".to_string()]);
        assert_eq!(enrollment_macs(&interfaces[1..]), vec!["02:00:00:00:00:01".to_string()]);
    }

    #[test]
    fn dmi_fields_that_cannot_be_read_are_empty() {
        let (_dir, root) = fake_root(&[
            ("sys/class/dmi/id/sys_vendor", b"Dell Inc.\n"),
            ("sys/class/dmi/id/product_name", b"PowerEdge R640\n"),
            ("sys/class/dmi/id/bios_version", b"2.11.2\n"),
        ]);
        let dmi = read_dmi(&root);
        assert_eq!(
            dmi,
            Dmi {
                vendor: "Dell Inc.".into(),
                product: "PowerEdge R640".into(),
                serial: String::new(),
                bios_version: "2.11.2".into()
            }
        );
        assert_eq!(read_dmi(&Root::at("/nonexistent-root")), Dmi::default());
    }

    #[test]
    fn os_release_kernel_and_boot_time() {
        let (_dir, root) = fake_root(&[
            ("etc/os-release", b"PRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\n"),
            ("proc/stat", b"cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
        ]);
        assert_eq!(read_os_release(&root), ("Ubuntu".to_string(), "22.04".to_string()));
        assert_eq!(read_boot_time(&root), SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let (_dir2, pretty_only) = fake_root(&[("etc/os-release", b"PRETTY_NAME='Debian GNU/Linux 13'\n")]);
        assert_eq!(read_os_release(&pretty_only), ("Debian GNU/Linux 13".to_string(), String::new()));
    }

    #[test]
    fn macs_are_normalized_or_rejected() {
        assert_eq!(normalize_mac("AA:BB:CC:DD:EE:0F"), Some("aa:bb:cc:dd:ee:0f".into()));
        assert_eq!(normalize_mac("00:00:00:00:00:00"), None);
        assert_eq!(normalize_mac("80:00:00:48:fe:80:00:00:00:00:00:00:00:00:00:00:00:00:00:01"), None);
        assert_eq!(normalize_mac("zz:bb:cc:dd:ee:ff"), None);
    }

    #[test]
    fn hidden_disks_are_left_out() {
        let (_dir, root) = fake_root(&[("sys/block/sda/size", b"8\n"), ("sys/block/sdb/size", b"16\n")]);
        let mut disks = read_disks(&root);
        hide(&mut disks, &["sdb".to_string()]);
        let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sda"]);
    }

    proptest::proptest! {
        #[test]
        fn any_mac_text_is_normalized_or_rejected_without_panicking(text in ".{0,40}") {
            if let Some(mac) = normalize_mac(&text) {
                proptest::prop_assert_eq!(mac.len(), 17);
                proptest::prop_assert_eq!(mac.clone(), mac.to_lowercase());
            }
        }

        #[test]
        fn every_non_zero_mac_is_kept_in_lower_case(bytes in proptest::array::uniform6(0u8..)) {
            let upper = bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
            let expected = (bytes != [0; 6]).then(|| upper.to_lowercase());
            proptest::prop_assert_eq!(normalize_mac(&upper), expected);
        }
    }
}
