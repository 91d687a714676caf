//! Health samples: CPU, load, memory, swap, filesystems, temperatures, network rates, uptime.
//!
//! One [`Sampler`] lives for the whole run: CPU use and network rates are differences between two
//! readings, so the sysinfo `System`, `Networks`, `Disks` and `Components` are kept between ticks.
//! Only what a sample needs is refreshed; the process table never is.

use std::collections::HashSet;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sysinfo::{Components, CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, Networks, RefreshKind, System};

use crate::timefmt::serde_rfc3339;

/// One health sample. Serialized for `agent sample --output json` and for the persisted buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthSample {
    /// The buffer's sequence number (see [`crate::buffer`]); the coordinator acknowledges samples by it.
    /// 0 until the sample enters the buffer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
    #[serde(with = "serde_rfc3339")]
    pub taken_at: SystemTime,
    pub cpu_percent: f64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub memory_available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub filesystems: Vec<FilesystemUsage>,
    pub temperatures: Vec<Temperature>,
    pub networks: Vec<NetworkRate>,
    pub uptime_seconds: u64,
    pub logical_cpus: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesystemUsage {
    pub mount_point: String,
    pub device: String,
    pub fs_type: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Temperature {
    pub label: String,
    pub celsius: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRate {
    pub interface: String,
    pub rx_bytes_per_second: f64,
    pub tx_bytes_per_second: f64,
}

/// Why sampling could not start.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("cannot read system information ({0}); is /proc mounted?")]
    Sysinfo(#[from] sysinfo::Error),
}

/// Keeps the sysinfo state between ticks. Each `sample` call is blocking (it reads /proc and calls
/// statvfs): run it in `spawn_blocking`.
pub struct Sampler {
    system: System,
    networks: Networks,
    disks: Disks,
    components: Components,
    /// When `networks` was last refreshed: the rates are bytes since then divided by this span.
    networks_read_at: Instant,
}

impl Sampler {
    /// Takes the first readings, so the first sample already has CPU use and network rates.
    pub fn new() -> Result<Self, SampleError> {
        let kind = RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing().with_usage())
            .with_memory(MemoryRefreshKind::everything());
        let system = System::new_with_specifics(kind)?;
        let networks = Networks::new_with_refreshed_list()?;
        let disks = Disks::new_with_refreshed_list_specifics(DiskRefreshKind::nothing().with_storage())?;
        let components = Components::new_with_refreshed_list()?;
        Ok(Sampler { system, networks, disks, components, networks_read_at: Instant::now() })
    }

    /// Reads one sample.
    pub fn sample(&mut self) -> HealthSample {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.networks.refresh(true);
        let elapsed = self.networks_read_at.elapsed().as_secs_f64().max(0.001);
        self.networks_read_at = Instant::now();
        // Mounts come and go: re-list them, but only ask for sizes.
        self.disks.refresh_specifics(true, DiskRefreshKind::nothing().with_storage());
        self.components.refresh(false);
        let load = System::load_average().unwrap_or(sysinfo::LoadAvg { one: 0.0, five: 0.0, fifteen: 0.0 });

        let mut networks: Vec<NetworkRate> = self
            .networks
            .iter()
            .map(|(name, data)| NetworkRate {
                interface: name.to_string_lossy().into_owned(),
                rx_bytes_per_second: data.received() as f64 / elapsed,
                tx_bytes_per_second: data.transmitted() as f64 / elapsed,
            })
            .collect();
        networks.sort_by(|a, b| a.interface.cmp(&b.interface));

        let mounts = self.disks.iter().map(|disk| FilesystemUsage {
            mount_point: disk.mount_point().to_string_lossy().into_owned(),
            device: disk.name().to_string_lossy().into_owned(),
            fs_type: disk.file_system().to_string_lossy().into_owned(),
            total_bytes: disk.total_space(),
            available_bytes: disk.available_space(),
        });
        let temperatures = self
            .components
            .iter()
            .filter_map(|c| {
                let celsius = f64::from(c.temperature()?);
                celsius.is_finite().then(|| Temperature { label: c.label().to_string(), celsius })
            })
            .collect();

        HealthSample {
            seq: 0,
            taken_at: SystemTime::now(),
            cpu_percent: f64::from(self.system.global_cpu_usage()),
            load1: load.one,
            load5: load.five,
            load15: load.fifteen,
            memory_total_bytes: self.system.total_memory(),
            memory_used_bytes: self.system.used_memory(),
            memory_available_bytes: self.system.available_memory(),
            swap_total_bytes: self.system.total_swap(),
            swap_used_bytes: self.system.used_swap(),
            filesystems: real_filesystems(mounts),
            temperatures,
            networks,
            uptime_seconds: System::uptime().unwrap_or(0),
            logical_cpus: u32::try_from(self.system.cpus().len()).unwrap_or(u32::MAX),
        }
    }
}

/// Filesystem types that hold no user data: kernel interfaces, memory-backed and layered filesystems.
const PSEUDO_FILESYSTEMS: &[&str] = &[
    "tmpfs",
    "devtmpfs",
    "ramfs",
    "overlay",
    "squashfs",
    "proc",
    "sysfs",
    "nsfs",
    "devpts",
    "mqueue",
    "hugetlbfs",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "autofs",
    "binfmt_misc",
    "efivarfs",
    "rpc_pipefs",
    "nfsd",
    "selinuxfs",
    "iso9660",
];

/// True for a filesystem worth watching (ext4, xfs, btrfs, vfat, nfs, ...).
pub fn is_real_filesystem(fs_type: &str) -> bool {
    !(PSEUDO_FILESYSTEMS.contains(&fs_type) || fs_type.starts_with("cgroup") || fs_type.starts_with("fuse."))
}

/// Keeps real filesystems with a size, one per device (the shortest mount point wins, so `/` beats
/// a bind mount of the same device), sorted by mount point.
pub fn real_filesystems(mounts: impl Iterator<Item = FilesystemUsage>) -> Vec<FilesystemUsage> {
    let mut candidates: Vec<FilesystemUsage> =
        mounts.filter(|fs| is_real_filesystem(&fs.fs_type) && fs.total_bytes > 0).collect();
    candidates.sort_by(|a, b| a.mount_point.len().cmp(&b.mount_point.len()).then(a.mount_point.cmp(&b.mount_point)));
    let mut seen = HashSet::new();
    candidates.retain(|fs| seen.insert(fs.device.clone()));
    candidates.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    candidates
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(mount_point: &str, device: &str, fs_type: &str, total_bytes: u64) -> FilesystemUsage {
        FilesystemUsage {
            mount_point: mount_point.into(),
            device: device.into(),
            fs_type: fs_type.into(),
            total_bytes,
            available_bytes: total_bytes / 2,
        }
    }

    fn check(input: Vec<FilesystemUsage>, expected_mounts: &[&str]) {
        let kept = real_filesystems(input.into_iter());
        let mounts: Vec<&str> = kept.iter().map(|f| f.mount_point.as_str()).collect();
        assert_eq!(mounts, expected_mounts);
    }

    #[test]
    fn keeps_real_filesystems_and_drops_pseudo_ones() {
        check(
            vec![
                fs("/", "/dev/vda1", "ext4", 100),
                fs("/boot/efi", "/dev/vda15", "vfat", 10),
                fs("/data", "/dev/sdb1", "xfs", 1000),
                fs("/run", "tmpfs", "tmpfs", 10),
                fs("/dev", "udev", "devtmpfs", 10),
                fs("/snap/core/1", "/dev/loop0", "squashfs", 10),
                fs("/var/lib/docker/overlay2/x/merged", "overlay", "overlay", 100),
                fs("/sys/fs/cgroup", "cgroup2", "cgroup2", 10),
                fs("/proc", "proc", "proc", 10),
                fs("/run/user/1000/doc", "portal", "fuse.portal", 10),
                fs("/empty", "/dev/sdc1", "ext4", 0),
            ],
            &["/", "/boot/efi", "/data"],
        );
    }

    #[test]
    fn dedupes_by_device_keeping_the_shortest_mount_point() {
        check(vec![fs("/var/lib/kubelet/pods/x", "/dev/vda1", "ext4", 100), fs("/", "/dev/vda1", "ext4", 100)], &["/"]);
    }

    #[test]
    fn a_real_sample_has_plausible_figures() {
        let mut sampler = Sampler::new().unwrap();
        let sample = sampler.sample();
        assert!(sample.memory_total_bytes > 0);
        assert!(sample.memory_available_bytes <= sample.memory_total_bytes);
        assert!(sample.logical_cpus >= 1);
        assert!(sample.uptime_seconds > 0);
        assert!((0.0..=100.0).contains(&sample.cpu_percent), "{}", sample.cpu_percent);
        assert!(sample.filesystems.iter().all(|f| is_real_filesystem(&f.fs_type)));
        let json = serde_json::to_string(&sample).unwrap();
        let back: HealthSample = serde_json::from_str(&json).unwrap();
        assert_eq!(back.memory_total_bytes, sample.memory_total_bytes);
    }
}
