//! The only place that turns `proto::v1` wire types into domain types and back.
//!
//! Messages are destructured field by field, so a new proto field breaks the build here until
//! someone decides what it means.

pub mod agent;
pub mod lab;
pub mod maas;
pub mod operations;
#[cfg(test)]
mod proptests;
pub mod verify;

use chrono::{DateTime, Utc};
use proto::v1 as pb;

use crate::domain::{
    BlockDevice, Dmi, Event, FilesystemUsage, Health, Inventory, Machine, MachineView, NetworkInterface, NetworkRate,
    OsInfo, Sample, Temperature,
};

// === time ===

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: at.timestamp_subsec_nanos() as i32 }
}

pub fn time(ts: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts?;
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

// === health ===

pub fn health_to_wire(health: Health) -> i32 {
    let wire = match health {
        Health::Healthy => pb::Health::Healthy,
        Health::Degraded => pb::Health::Degraded,
        Health::Unreachable => pb::Health::Unreachable,
        Health::Unknown => pb::Health::Unknown,
        Health::Revoked => pb::Health::Revoked,
    };
    wire as i32
}

fn optional_health_to_wire(health: Option<Health>) -> i32 {
    health.map(health_to_wire).unwrap_or(pb::Health::Unspecified as i32)
}

pub fn health_from_wire(value: i32) -> Option<Health> {
    match pb::Health::try_from(value).ok()? {
        pb::Health::Healthy => Some(Health::Healthy),
        pb::Health::Degraded => Some(Health::Degraded),
        pb::Health::Unreachable => Some(Health::Unreachable),
        pb::Health::Unknown => Some(Health::Unknown),
        pb::Health::Revoked => Some(Health::Revoked),
        pb::Health::Unspecified => None,
    }
}

// === agent messages ===

pub fn enroll_response(machine: &Machine) -> pb::EnrollResponse {
    pb::EnrollResponse {
        machine_id: machine.id.clone(),
        heartbeat_interval_ms: machine.heartbeat_interval_ms,
        certificate_pem: String::new(),
        ca_pem: String::new(),
        system_id: machine.system_id.clone().unwrap_or_default(),
    }
}

pub fn set_interval(interval_ms: u32, reason: &str) -> pb::Directive {
    pb::Directive {
        kind: Some(pb::directive::Kind::SetInterval(pb::SetInterval { interval_ms, reason: reason.to_string() })),
        issued_at: Some(timestamp(Utc::now())),
    }
}

pub fn sample_to_wire(sample: &Sample) -> pb::HealthSample {
    pb::HealthSample {
        taken_at: sample.taken_at.map(timestamp),
        cpu_percent: sample.cpu_percent,
        load1: sample.load1,
        load5: sample.load5,
        load15: sample.load15,
        memory_total_bytes: sample.memory_total_bytes,
        memory_used_bytes: sample.memory_used_bytes,
        memory_available_bytes: sample.memory_available_bytes,
        swap_total_bytes: sample.swap_total_bytes,
        swap_used_bytes: sample.swap_used_bytes,
        filesystems: sample
            .filesystems
            .iter()
            .map(|f| pb::FilesystemUsage {
                mount_point: f.mount_point.clone(),
                device: f.device.clone(),
                fs_type: f.fs_type.clone(),
                total_bytes: f.total_bytes,
                available_bytes: f.available_bytes,
            })
            .collect(),
        temperatures: sample
            .temperatures
            .iter()
            .map(|t| pb::Temperature { label: t.label.clone(), celsius: t.celsius })
            .collect(),
        networks: sample
            .networks
            .iter()
            .map(|n| pb::NetworkRate {
                interface: n.interface.clone(),
                rx_bytes_per_second: n.rx_bytes_per_second,
                tx_bytes_per_second: n.tx_bytes_per_second,
            })
            .collect(),
        uptime_seconds: sample.uptime_seconds,
        logical_cpus: sample.logical_cpus,
        seq: sample.seq,
    }
}

pub(crate) fn link_state_name(value: i32) -> String {
    match pb::LinkState::try_from(value) {
        Ok(pb::LinkState::Up) => "up",
        Ok(pb::LinkState::Down) => "down",
        _ => "unknown",
    }
    .to_string()
}

fn link_state_to_wire(name: &str) -> i32 {
    let state = match name {
        "up" => pb::LinkState::Up,
        "down" => pb::LinkState::Down,
        _ => pb::LinkState::Unknown,
    };
    state as i32
}

pub fn inventory_to_wire(inventory: &Inventory) -> pb::Inventory {
    pb::Inventory {
        cpu_model: inventory.cpu_model.clone(),
        physical_cores: inventory.physical_cores,
        logical_cpus: inventory.logical_cpus,
        memory_total_bytes: inventory.memory_total_bytes,
        disks: inventory
            .disks
            .iter()
            .map(|d| pb::BlockDevice {
                name: d.name.clone(),
                size_bytes: d.size_bytes,
                model: d.model.clone(),
                serial: d.serial.clone(),
                rotational: d.rotational,
            })
            .collect(),
        interfaces: inventory
            .interfaces
            .iter()
            .map(|i| pb::NetworkInterface {
                name: i.name.clone(),
                mac: i.mac.clone(),
                speed_mbps: i.speed_mbps,
                link_state: link_state_to_wire(&i.link_state),
                addresses: i.addresses.clone(),
                r#virtual: i.is_virtual,
            })
            .collect(),
        dmi: Some(pb::Dmi {
            vendor: inventory.dmi.vendor.clone(),
            product: inventory.dmi.product.clone(),
            serial: inventory.dmi.serial.clone(),
            bios_version: inventory.dmi.bios_version.clone(),
        }),
        os: Some(pb::OsInfo {
            name: inventory.os.name.clone(),
            version: inventory.os.version.clone(),
            kernel: inventory.os.kernel.clone(),
            boot_time: inventory.os.boot_time.map(timestamp),
        }),
        collected_at: inventory.collected_at.map(timestamp),
    }
}

// === fleet messages ===

pub fn machine_to_wire(view: &MachineView) -> pb::Machine {
    let m = &view.machine;
    pb::Machine {
        machine_id: m.id.clone(),
        hostname: m.hostname.clone(),
        health: health_to_wire(m.health),
        health_reasons: m.health_reasons.clone(),
        last_seen: m.last_seen.map(timestamp),
        agent_id: m.agent_id.clone(),
        heartbeat_interval_ms: m.heartbeat_interval_ms,
        latest_sample: view.latest_sample.as_ref().map(sample_to_wire),
        inventory: view.inventory.as_ref().map(inventory_to_wire),
        enrolled_at: Some(timestamp(m.enrolled_at)),
        system_id: m.system_id.clone().unwrap_or_default(),
        mac_addresses: m.mac_addresses.clone(),
        agent_version: m.agent_version.clone(),
        history: view.history.iter().map(sample_to_wire).collect(),
    }
}

pub fn machine(wire: pb::Machine) -> MachineView {
    let pb::Machine {
        machine_id,
        hostname,
        health,
        health_reasons,
        last_seen,
        agent_id,
        heartbeat_interval_ms,
        latest_sample,
        inventory: wire_inventory,
        enrolled_at,
        system_id,
        mac_addresses,
        agent_version,
        history,
    } = wire;
    MachineView {
        machine: Machine {
            id: machine_id,
            agent_id,
            hostname,
            system_id: (!system_id.is_empty()).then_some(system_id),
            mac_addresses,
            agent_version,
            enrolled_at: time(enrolled_at).unwrap_or_default(),
            last_seen: time(last_seen),
            heartbeat_interval_ms,
            health: health_from_wire(health).unwrap_or(Health::Unknown),
            health_reasons,
        },
        latest_sample: latest_sample.map(sample_from_coordinator),
        inventory: wire_inventory.map(inventory_from_coordinator),
        history: history.into_iter().map(sample_from_coordinator).collect(),
    }
}

/// A sample as the coordinator sends it to operators: it was checked when the agent sent it, so this
/// side only copies (an agent's message goes through [`agent::sample`] instead).
pub(crate) fn sample_from_coordinator(wire: pb::HealthSample) -> Sample {
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
    } = wire;
    let filesystems = filesystems
        .into_iter()
        .map(|f| FilesystemUsage {
            mount_point: f.mount_point,
            device: f.device,
            fs_type: f.fs_type,
            total_bytes: f.total_bytes,
            available_bytes: f.available_bytes,
        })
        .collect();
    let temperatures = temperatures.into_iter().map(|t| Temperature { label: t.label, celsius: t.celsius }).collect();
    let networks = networks
        .into_iter()
        .map(|n| NetworkRate {
            interface: n.interface,
            rx_bytes_per_second: n.rx_bytes_per_second,
            tx_bytes_per_second: n.tx_bytes_per_second,
        })
        .collect();
    Sample {
        seq,
        taken_at: time(taken_at),
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
    }
}

/// An inventory as the coordinator sends it to operators (checked when the agent sent it).
pub(crate) fn inventory_from_coordinator(wire: pb::Inventory) -> Inventory {
    let pb::Inventory {
        cpu_model,
        physical_cores,
        logical_cpus,
        memory_total_bytes,
        disks,
        interfaces,
        dmi,
        os,
        collected_at,
    } = wire;
    Inventory {
        cpu_model,
        physical_cores,
        logical_cpus,
        memory_total_bytes,
        disks: disks
            .into_iter()
            .map(|d| BlockDevice {
                name: d.name,
                size_bytes: d.size_bytes,
                model: d.model,
                serial: d.serial,
                rotational: d.rotational,
            })
            .collect(),
        interfaces: interfaces
            .into_iter()
            .map(|i| NetworkInterface {
                name: i.name,
                mac: i.mac,
                speed_mbps: i.speed_mbps,
                link_state: link_state_name(i.link_state),
                addresses: i.addresses,
                is_virtual: i.r#virtual,
            })
            .collect(),
        dmi: dmi
            .map(|d| Dmi { vendor: d.vendor, product: d.product, serial: d.serial, bios_version: d.bios_version })
            .unwrap_or_default(),
        os: os
            .map(|o| OsInfo { name: o.name, version: o.version, kernel: o.kernel, boot_time: time(o.boot_time) })
            .unwrap_or_default(),
        collected_at: time(collected_at),
    }
}

/// The coordinator's own condition for operators.
pub fn coordinator_status_to_wire(status: &crate::fleet::CoordinatorStatus) -> pb::CoordinatorStatus {
    match &status.degraded {
        Some((since, why)) => {
            pb::CoordinatorStatus { degraded: true, reasons: vec![why.clone()], since: Some(timestamp(*since)) }
        }
        None => pb::CoordinatorStatus::default(),
    }
}

pub fn event_to_wire(event: &Event) -> pb::Event {
    pb::Event {
        id: event.id,
        at: Some(timestamp(event.at)),
        machine_id: event.machine_id.clone(),
        hostname: event.hostname.clone(),
        kind: event.kind.clone(),
        message: event.message.clone(),
        from_health: optional_health_to_wire(event.from_health),
        to_health: optional_health_to_wire(event.to_health),
    }
}

pub fn event(wire: pb::Event) -> Event {
    let pb::Event { id, at, machine_id, hostname, kind, message, from_health, to_health } = wire;
    Event {
        id,
        at: time(at).unwrap_or_default(),
        machine_id,
        hostname,
        kind,
        message,
        from_health: health_from_wire(from_health),
        to_health: health_from_wire(to_health),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

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
        let status = tonic::Status::from(agent::enrollment(request).unwrap_err());
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
