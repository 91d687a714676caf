//! The conversions between the records of this crate and the `metalfleet.v1` wire types, in both
//! directions, for the coordinator's services and fleetctl's client alike (the `wire` feature).
//!
//! Messages are destructured field by field, so a new proto field breaks the build here until someone
//! decides what it means. What an agent sends is checked by the coordinator's own `grpc::convert::agent`.

pub mod culprit;
pub mod lab;
pub mod maas;
pub mod operations;
#[cfg(test)]
mod proptests;
pub mod verify;

/// One value on the wire that cannot become a record: which field, and why. The one error type of this
/// boundary; the coordinator answers it as `INVALID_ARGUMENT` naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct WireError {
    /// The field path, e.g. `filesystems[2].available_bytes`.
    pub field: String,
    pub reason: String,
}

impl WireError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        WireError { field: field.into(), reason: reason.into() }
    }

    /// The same error one level down: `prefix.field`.
    pub fn at(self, prefix: &str) -> Self {
        WireError { field: format!("{prefix}.{}", self.field), reason: self.reason }
    }
}

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

pub fn link_state_name(value: i32) -> String {
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
pub fn sample_from_coordinator(wire: pb::HealthSample) -> Sample {
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
pub fn inventory_from_coordinator(wire: pb::Inventory) -> Inventory {
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
pub fn coordinator_status_to_wire(status: &crate::domain::CoordinatorStatus) -> pb::CoordinatorStatus {
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
