//! The coordinator's edge between `proto::v1` wire types and domain types: the checks of everything an
//! agent sends ([`agent`]) and the lab's progress stream ([`lab`]); the conversions shared with fleetctl
//! live in `model::wire` and are re-exported here.

pub mod agent;
pub mod lab;
#[cfg(test)]
mod proptests;

pub use model::wire::*;
pub use model::wire::{maas, operations, verify};

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    use proto::v1 as pb;

    use super::*;
    use crate::domain::{
        BlockDevice, Dmi, Event, FilesystemUsage, Health, Inventory, NetworkInterface, NetworkRate, OsInfo, Sample,
        Temperature,
    };

    fn full_sample() -> Sample {
        Sample {
            seq: 42,
            taken_at: Some(Utc.timestamp_opt(1_700_000_000, 123_000_000).unwrap()),
            cpu_percent: 12.5,
            load1: 1.0,
            load5: 0.5,
            load15: 0.25,
            memory_total_bytes: 100,
            memory_used_bytes: 40,
            memory_available_bytes: 60,
            swap_total_bytes: 10,
            swap_used_bytes: 1,
            filesystems: vec![FilesystemUsage {
                mount_point: "/".into(),
                device: "/dev/sda1".into(),
                fs_type: "ext4".into(),
                total_bytes: 1000,
                available_bytes: 10,
            }],
            temperatures: vec![Temperature { label: "cpu".into(), celsius: 41.0 }],
            networks: vec![NetworkRate {
                interface: "eth0".into(),
                rx_bytes_per_second: 1.0,
                tx_bytes_per_second: 2.0,
            }],
            uptime_seconds: 99,
            logical_cpus: 8,
        }
    }

    #[test]
    fn sample_round_trips() {
        let domain = full_sample();
        assert_eq!(sample_from_coordinator(sample_to_wire(&domain)), domain);
        let now = domain.taken_at.unwrap();
        assert_eq!(agent::sample(sample_to_wire(&domain), now), Ok(domain), "a valid sample passes the checks whole");
    }

    #[test]
    fn inventory_round_trips() {
        let domain = Inventory {
            cpu_model: "EPYC".into(),
            physical_cores: 4,
            logical_cpus: 8,
            memory_total_bytes: 1 << 34,
            disks: vec![BlockDevice {
                name: "sda".into(),
                size_bytes: 1 << 40,
                model: "m".into(),
                serial: "s".into(),
                rotational: true,
            }],
            interfaces: vec![NetworkInterface {
                name: "eth0".into(),
                mac: "52:54:00:aa:bb:cc".into(),
                speed_mbps: 1000,
                link_state: "up".into(),
                addresses: vec!["10.0.0.1/24".into()],
                is_virtual: false,
            }],
            dmi: Dmi { vendor: "v".into(), product: "p".into(), serial: "s".into(), bios_version: "b".into() },
            os: OsInfo { name: "Ubuntu".into(), version: "22.04".into(), kernel: "6.8".into(), boot_time: None },
            collected_at: Some(Utc.timestamp_opt(1_700_000_000, 0).unwrap()),
        };
        assert_eq!(inventory_from_coordinator(inventory_to_wire(&domain)), domain);
        let now = domain.collected_at.unwrap();
        assert_eq!(agent::inventory(inventory_to_wire(&domain), now), Ok(domain));
    }

    #[test]
    fn enrollment_needs_an_agent_id() {
        let request = pb::EnrollRequest { hostname: "h".into(), ..Default::default() };
        let status = crate::grpc::invalid(agent::enrollment(request).unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let request = pb::EnrollRequest {
            agent_id: "a".into(),
            hostname: "h".into(),
            mac_addresses: vec!["52:54:00:AA:BB:CC".into()],
            ..Default::default()
        };
        assert_eq!(agent::enrollment(request).unwrap().mac_addresses, vec!["52:54:00:aa:bb:cc".to_string()]);
    }

    proptest! {
        #[test]
        fn event_round_trips(id in 1u64.., secs in 0i64..4_000_000_000, kind in "[a-z_]{1,20}", message in ".*", from in 0usize..5, to in 0usize..5) {
            let healths = [None, Some(Health::Healthy), Some(Health::Degraded), Some(Health::Unreachable), Some(Health::Unknown)];
            let domain = Event {
                id,
                at: Utc.timestamp_opt(secs, 0).unwrap(),
                machine_id: "m".into(),
                hostname: "h".into(),
                kind,
                message,
                from_health: healths[from],
                to_health: healths[to],
            };
            prop_assert_eq!(event(event_to_wire(&domain)), domain);
        }

        #[test]
        fn any_health_value_converts_without_panic(value in any::<i32>()) {
            let _ = health_from_wire(value);
        }
    }
}
