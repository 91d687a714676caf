//! The MAAS view's wire types (`ListMaasMachines`) to domain types and back.

use proto::v1 as pb;

use super::{time, timestamp};
use crate::domain::maas::{MaasDisk, MaasInterface, MaasMachine, MaasSyncStatus};

pub fn machine_to_wire(m: &MaasMachine) -> pb::MaasMachine {
    pb::MaasMachine {
        system_id: m.system_id.clone(),
        hostname: m.hostname.clone(),
        status: m.status,
        status_name: m.status_name.clone(),
        power_state: m.power_state.clone(),
        owner: m.owner.clone().unwrap_or_default(),
        ip_addresses: m.ip_addresses.clone(),
        tags: m.tags.clone(),
        zone: m.zone.clone(),
        pool: m.pool.clone(),
        cpu_count: m.cpu_count,
        cpu_speed_mhz: m.cpu_speed_mhz,
        memory_bytes: m.memory_bytes(),
        storage_bytes: m.storage_bytes,
        block_devices: m
            .disks
            .iter()
            .map(|d| pb::MaasBlockDevice {
                name: d.name.clone(),
                size_bytes: d.size_bytes,
                model: d.model.clone(),
                serial: d.serial.clone(),
            })
            .collect(),
        interfaces: m
            .interfaces
            .iter()
            .map(|i| pb::MaasInterface {
                name: i.name.clone(),
                mac_address: i.mac_address.clone(),
                link_speed_mbps: i.link_speed_mbps,
            })
            .collect(),
        updated_at: Some(timestamp(m.updated_at)),
    }
}

pub fn machine(wire: pb::MaasMachine) -> MaasMachine {
    let pb::MaasMachine {
        system_id,
        hostname,
        status,
        status_name,
        power_state,
        owner,
        ip_addresses,
        tags,
        zone,
        pool,
        cpu_count,
        cpu_speed_mhz,
        memory_bytes,
        storage_bytes,
        block_devices,
        interfaces,
        updated_at,
    } = wire;
    MaasMachine {
        system_id,
        hostname,
        status,
        status_name,
        power_state,
        owner: (!owner.is_empty()).then_some(owner),
        ip_addresses,
        tags,
        zone,
        pool,
        cpu_count,
        cpu_speed_mhz,
        memory_mib: memory_bytes / (1024 * 1024),
        storage_bytes,
        disks: block_devices
            .into_iter()
            .map(|pb::MaasBlockDevice { name, size_bytes, model, serial }| MaasDisk { name, size_bytes, model, serial })
            .collect(),
        interfaces: interfaces
            .into_iter()
            .map(|pb::MaasInterface { name, mac_address, link_speed_mbps }| MaasInterface {
                name,
                mac_address,
                link_speed_mbps,
            })
            .collect(),
        updated_at: time(updated_at).unwrap_or_default(),
    }
}

pub fn sync_to_wire(sync: &MaasSyncStatus) -> pb::MaasSync {
    pb::MaasSync {
        last_success_at: sync.last_success_at.map(timestamp),
        last_attempt_at: sync.last_attempt_at.map(timestamp),
        age_seconds: sync.age_seconds,
        stale: sync.stale,
        last_error: sync.last_error.clone().unwrap_or_default(),
    }
}

pub fn sync(wire: pb::MaasSync) -> MaasSyncStatus {
    let pb::MaasSync { last_success_at, last_attempt_at, age_seconds, stale, last_error } = wire;
    MaasSyncStatus {
        last_attempt_at: time(last_attempt_at),
        last_success_at: time(last_success_at),
        age_seconds,
        stale,
        last_error: (!last_error.is_empty()).then_some(last_error),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    #[test]
    fn machine_and_sync_round_trip() {
        let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let m = MaasMachine {
            system_id: "abc123".into(),
            hostname: "server2".into(),
            status: 6,
            status_name: "Deployed".into(),
            power_state: "on".into(),
            owner: Some("admin".into()),
            ip_addresses: vec!["172.16.11.7".into()],
            tags: vec!["db".into()],
            zone: "default".into(),
            pool: "default".into(),
            cpu_count: 4,
            cpu_speed_mhz: 3000,
            memory_mib: 16384,
            storage_bytes: 480_114_819_072,
            disks: vec![MaasDisk {
                name: "sda".into(),
                size_bytes: 240_057_409_536,
                model: "K".into(),
                serial: "S".into(),
            }],
            interfaces: vec![MaasInterface {
                name: "eno1".into(),
                mac_address: "52:54:00:00:00:02".into(),
                link_speed_mbps: 1000,
            }],
            updated_at: at,
        };
        assert_eq!(machine(machine_to_wire(&m)), m);
        let without_owner = MaasMachine { owner: None, ..m };
        assert_eq!(machine(machine_to_wire(&without_owner)), without_owner);

        let s = MaasSyncStatus {
            last_attempt_at: Some(at),
            last_success_at: None,
            age_seconds: None,
            stale: true,
            last_error: Some("connection refused".into()),
        };
        assert_eq!(sync(sync_to_wire(&s)), s);
        let fresh =
            MaasSyncStatus { last_success_at: Some(at), age_seconds: Some(0.0), stale: false, last_error: None, ..s };
        assert_eq!(sync(sync_to_wire(&fresh)), fresh);
    }
}
