//! Conversions between the agent's domain types and the wire types of `proto::v1`.
//!
//! Structs are built field by field without `..Default::default()`, so a field added to a
//! message breaks the build here instead of being silently left empty.

use std::time::SystemTime;

use proto::v1 as pb;

use crate::health::{FilesystemUsage, HealthSample, NetworkRate, Temperature};
use crate::inventory::{Disk, Dmi, Interface, Inventory, LinkState, OsInfo};

/// Why a wire message could not become a domain value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("health sample without taken_at")]
    MissingTakenAt,
    #[error("timestamp out of range")]
    BadTimestamp,
}

fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

impl From<&Inventory> for pb::Inventory {
    fn from(inventory: &Inventory) -> Self {
        let Inventory {
            cpu_model,
            physical_cores,
            logical_cpus,
            memory_total_bytes,
            disks,
            interfaces,
            dmi,
            os,
            collected_at,
        } = inventory;
        pb::Inventory {
            cpu_model: cpu_model.clone(),
            physical_cores: *physical_cores,
            logical_cpus: *logical_cpus,
            memory_total_bytes: *memory_total_bytes,
            disks: disks.iter().map(pb::BlockDevice::from).collect(),
            interfaces: interfaces.iter().map(pb::NetworkInterface::from).collect(),
            dmi: Some(pb::Dmi::from(dmi)),
            os: Some(pb::OsInfo::from(os)),
            collected_at: Some(timestamp(*collected_at)),
        }
    }
}

impl From<&Disk> for pb::BlockDevice {
    fn from(disk: &Disk) -> Self {
        let Disk { name, size_bytes, model, serial, rotational } = disk;
        pb::BlockDevice {
            name: name.clone(),
            size_bytes: *size_bytes,
            model: model.clone(),
            serial: serial.clone(),
            rotational: *rotational,
        }
    }
}

impl From<&Interface> for pb::NetworkInterface {
    fn from(interface: &Interface) -> Self {
        let Interface { name, mac, speed_mbps, link_state, addresses, is_virtual } = interface;
        pb::NetworkInterface {
            name: name.clone(),
            mac: mac.clone(),
            speed_mbps: *speed_mbps,
            link_state: pb::LinkState::from(*link_state) as i32,
            addresses: addresses.clone(),
            r#virtual: *is_virtual,
        }
    }
}

impl From<LinkState> for pb::LinkState {
    fn from(state: LinkState) -> Self {
        match state {
            LinkState::Up => pb::LinkState::Up,
            LinkState::Down => pb::LinkState::Down,
            LinkState::Unknown => pb::LinkState::Unknown,
        }
    }
}

impl From<&Dmi> for pb::Dmi {
    fn from(dmi: &Dmi) -> Self {
        let Dmi { vendor, product, serial, bios_version } = dmi;
        pb::Dmi {
            vendor: vendor.clone(),
            product: product.clone(),
            serial: serial.clone(),
            bios_version: bios_version.clone(),
        }
    }
}

impl From<&OsInfo> for pb::OsInfo {
    fn from(os: &OsInfo) -> Self {
        let OsInfo { name, version, kernel, boot_time } = os;
        pb::OsInfo {
            name: name.clone(),
            version: version.clone(),
            kernel: kernel.clone(),
            boot_time: Some(timestamp(*boot_time)),
        }
    }
}

impl From<&HealthSample> for pb::HealthSample {
    fn from(sample: &HealthSample) -> Self {
        let HealthSample {
            taken_at,
            cpu_percent,
            load1,
            load5,
            load15,
            memory_total_bytes,
            memory_used_bytes,
            memory_available_bytes,
            swap_total_bytes,
            swap_used_bytes,
            filesystems,
            temperatures,
            networks,
            uptime_seconds,
            logical_cpus,
            seq,
        } = sample;
        pb::HealthSample {
            seq: *seq,
            taken_at: Some(timestamp(*taken_at)),
            cpu_percent: *cpu_percent,
            load1: *load1,
            load5: *load5,
            load15: *load15,
            memory_total_bytes: *memory_total_bytes,
            memory_used_bytes: *memory_used_bytes,
            memory_available_bytes: *memory_available_bytes,
            swap_total_bytes: *swap_total_bytes,
            swap_used_bytes: *swap_used_bytes,
            filesystems: filesystems
                .iter()
                .map(|fs| pb::FilesystemUsage {
                    mount_point: fs.mount_point.clone(),
                    device: fs.device.clone(),
                    fs_type: fs.fs_type.clone(),
                    total_bytes: fs.total_bytes,
                    available_bytes: fs.available_bytes,
                })
                .collect(),
            temperatures: temperatures
                .iter()
                .map(|t| pb::Temperature { label: t.label.clone(), celsius: t.celsius })
                .collect(),
            networks: networks
                .iter()
                .map(|n| pb::NetworkRate {
                    interface: n.interface.clone(),
                    rx_bytes_per_second: n.rx_bytes_per_second,
                    tx_bytes_per_second: n.tx_bytes_per_second,
                })
                .collect(),
            uptime_seconds: *uptime_seconds,
            logical_cpus: *logical_cpus,
        }
    }
}

impl TryFrom<pb::HealthSample> for HealthSample {
    type Error = ConvertError;

    fn try_from(sample: pb::HealthSample) -> Result<Self, ConvertError> {
        let pb::HealthSample {
            taken_at,
            cpu_percent,
            load1,
            load5,
            load15,
            memory_total_bytes,
            memory_used_bytes,
            memory_available_bytes,
            swap_total_bytes,
            swap_used_bytes,
            filesystems,
            temperatures,
            networks,
            uptime_seconds,
            logical_cpus,
            seq,
        } = sample;
        let taken_at = SystemTime::try_from(taken_at.ok_or(ConvertError::MissingTakenAt)?)
            .map_err(|_| ConvertError::BadTimestamp)?;
        Ok(HealthSample {
            seq,
            taken_at,
            cpu_percent,
            load1,
            load5,
            load15,
            memory_total_bytes,
            memory_used_bytes,
            memory_available_bytes,
            swap_total_bytes,
            swap_used_bytes,
            filesystems: filesystems
                .into_iter()
                .map(|fs| FilesystemUsage {
                    mount_point: fs.mount_point,
                    device: fs.device,
                    fs_type: fs.fs_type,
                    total_bytes: fs.total_bytes,
                    available_bytes: fs.available_bytes,
                })
                .collect(),
            temperatures: temperatures
                .into_iter()
                .map(|t| Temperature { label: t.label, celsius: t.celsius })
                .collect(),
            networks: networks
                .into_iter()
                .map(|n| NetworkRate {
                    interface: n.interface,
                    rx_bytes_per_second: n.rx_bytes_per_second,
                    tx_bytes_per_second: n.tx_bytes_per_second,
                })
                .collect(),
            uptime_seconds,
            logical_cpus,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::tests::sample;

    #[test]
    fn health_sample_round_trips_through_the_wire_type() {
        let mut original = sample(1_700_000_000);
        original.filesystems.push(FilesystemUsage {
            mount_point: "/".into(),
            device: "/dev/vda1".into(),
            fs_type: "ext4".into(),
            total_bytes: 100,
            available_bytes: 40,
        });
        original.temperatures.push(Temperature { label: "coretemp Package id 0".into(), celsius: 41.5 });
        original.networks.push(NetworkRate {
            interface: "eth0".into(),
            rx_bytes_per_second: 10.0,
            tx_bytes_per_second: 2.5,
        });
        let wire = pb::HealthSample::from(&original);
        assert_eq!(HealthSample::try_from(wire).unwrap(), original);
        let missing = pb::HealthSample { taken_at: None, ..pb::HealthSample::from(&original) };
        assert_eq!(HealthSample::try_from(missing), Err(ConvertError::MissingTakenAt));
    }

    #[test]
    fn link_states_and_virtual_flag_reach_the_wire() {
        let interface = Interface {
            name: "veth0".into(),
            mac: "02:00:00:00:00:01".into(),
            speed_mbps: 0,
            link_state: LinkState::Down,
            addresses: vec!["127.0.0.2/8".into()],
            is_virtual: true,
        };
        let wire = pb::NetworkInterface::from(&interface);
        assert_eq!(wire.link_state, pb::LinkState::Down as i32);
        assert!(wire.r#virtual);
    }

    proptest::proptest! {
        #[test]
        fn any_sample_round_trips(
            seconds in 0u64..4_000_000_000,
            nanos in 0u32..1_000_000_000,
            cpu in 0.0f64..100.0,
            loads in proptest::array::uniform3(0.0f64..1000.0),
            memory in proptest::array::uniform5(0u64..u64::MAX),
            uptime in 0u64..u64::MAX,
            label in ".{0,16}",
            celsius in -50.0f64..150.0,
        ) {
            let mut original = sample(0);
            original.taken_at = SystemTime::UNIX_EPOCH + std::time::Duration::new(seconds, nanos);
            original.cpu_percent = cpu;
            (original.load1, original.load5, original.load15) = (loads[0], loads[1], loads[2]);
            original.memory_total_bytes = memory[0];
            original.memory_used_bytes = memory[1];
            original.memory_available_bytes = memory[2];
            original.swap_total_bytes = memory[3];
            original.swap_used_bytes = memory[4];
            original.uptime_seconds = uptime;
            original.temperatures.push(Temperature { label, celsius });
            let wire = pb::HealthSample::from(&original);
            proptest::prop_assert_eq!(HealthSample::try_from(wire).unwrap(), original);
        }
    }
}
