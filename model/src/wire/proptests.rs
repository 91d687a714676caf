//! Property tests for the wire conversions: any domain value survives domain -> wire -> domain, and any wire
//! value converts without a panic.

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use proto::v1 as pb;

use super::*;
use crate::domain::{
    BlockDevice, Dmi, FilesystemUsage, Health, Inventory, Machine, MachineView, NetworkInterface, NetworkRate, OsInfo,
    Sample, Temperature,
};

fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
    (-62_000_000_000i64..250_000_000_000, 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).expect("inside chrono's range"))
}

fn arb_f64() -> impl Strategy<Value = f64> {
    prop_oneof![-1.0e12f64..1.0e12, Just(0.0), Just(f64::MAX), Just(f64::INFINITY)]
}

fn arb_health() -> impl Strategy<Value = Health> {
    prop_oneof![
        Just(Health::Healthy),
        Just(Health::Degraded),
        Just(Health::Unreachable),
        Just(Health::Unknown),
        Just(Health::Revoked),
    ]
}

fn arb_sample() -> impl Strategy<Value = Sample> {
    let filesystem = ("\\PC{0,12}", "\\PC{0,12}", "[a-z0-9]{0,6}", any::<u64>(), any::<u64>()).prop_map(
        |(mount_point, device, fs_type, total_bytes, available_bytes)| FilesystemUsage {
            mount_point,
            device,
            fs_type,
            total_bytes,
            available_bytes,
        },
    );
    let temperature = ("\\PC{0,12}", arb_f64()).prop_map(|(label, celsius)| Temperature { label, celsius });
    let network = ("\\PC{0,12}", arb_f64(), arb_f64()).prop_map(|(interface, rx, tx)| NetworkRate {
        interface,
        rx_bytes_per_second: rx,
        tx_bytes_per_second: tx,
    });
    (
        (proptest::option::of(arb_time()), arb_f64(), arb_f64(), arb_f64(), arb_f64()),
        proptest::array::uniform5(any::<u64>()),
        proptest::collection::vec(filesystem, 0..3),
        proptest::collection::vec(temperature, 0..3),
        proptest::collection::vec(network, 0..3),
        (any::<u64>(), any::<u32>()),
    )
        .prop_map(|((taken_at, cpu, l1, l5, l15), memory, filesystems, temperatures, networks, (uptime, cpus))| {
            Sample {
                seq: 0,
                taken_at,
                cpu_percent: cpu,
                load1: l1,
                load5: l5,
                load15: l15,
                memory_total_bytes: memory[0],
                memory_used_bytes: memory[1],
                memory_available_bytes: memory[2],
                swap_total_bytes: memory[3],
                swap_used_bytes: memory[4],
                filesystems,
                temperatures,
                networks,
                uptime_seconds: uptime,
                logical_cpus: cpus,
            }
        })
}

fn arb_inventory() -> impl Strategy<Value = Inventory> {
    let disk = ("[a-z0-9]{1,8}", any::<u64>(), "\\PC{0,12}", "\\PC{0,12}", any::<bool>()).prop_map(
        |(name, size_bytes, model, serial, rotational)| BlockDevice { name, size_bytes, model, serial, rotational },
    );
    let interface = (
        "[a-z0-9.]{1,10}",
        "([0-9a-f]{2}:){5}[0-9a-f]{2}",
        any::<u32>(),
        prop_oneof![Just("up"), Just("down"), Just("unknown")],
        proptest::collection::vec("[0-9a-f.:/]{1,20}", 0..3),
        any::<bool>(),
    )
        .prop_map(|(name, mac, speed_mbps, link, addresses, is_virtual)| NetworkInterface {
            name,
            mac,
            speed_mbps,
            link_state: link.to_string(),
            addresses,
            is_virtual,
        });
    let dmi = proptest::array::uniform4("\\PC{0,10}").prop_map(|[vendor, product, serial, bios_version]| Dmi {
        vendor,
        product,
        serial,
        bios_version,
    });
    let os = ("\\PC{0,10}", "\\PC{0,10}", "\\PC{0,10}", proptest::option::of(arb_time()))
        .prop_map(|(name, version, kernel, boot_time)| OsInfo { name, version, kernel, boot_time });
    (
        ("\\PC{0,20}", any::<u32>(), any::<u32>(), any::<u64>()),
        proptest::collection::vec(disk, 0..3),
        proptest::collection::vec(interface, 0..3),
        dmi,
        os,
        proptest::option::of(arb_time()),
    )
        .prop_map(
            |((cpu_model, physical_cores, logical_cpus, memory), disks, interfaces, dmi, os, collected_at)| Inventory {
                cpu_model,
                physical_cores,
                logical_cpus,
                memory_total_bytes: memory,
                disks,
                interfaces,
                dmi,
                os,
                collected_at,
            },
        )
}

fn arb_machine_view() -> impl Strategy<Value = MachineView> {
    let machine = (
        ("\\PC{0,16}", "\\PC{0,16}", "\\PC{0,16}", proptest::option::of("[a-z0-9]{1,8}")),
        proptest::collection::vec("([0-9a-f]{2}:){5}[0-9a-f]{2}", 0..3),
        "\\PC{0,8}",
        (arb_time(), proptest::option::of(arb_time()), any::<u32>(), arb_health()),
        proptest::collection::vec("\\PC{0,20}", 0..3),
    )
        .prop_map(
            |(
                (id, agent_id, hostname, system_id),
                mac_addresses,
                agent_version,
                (enrolled, seen, ms, health),
                reasons,
            )| {
                Machine {
                    id,
                    agent_id,
                    hostname,
                    system_id,
                    mac_addresses,
                    agent_version,
                    enrolled_at: enrolled,
                    last_seen: seen,
                    heartbeat_interval_ms: ms,
                    health,
                    health_reasons: reasons,
                }
            },
        );
    (
        machine,
        proptest::option::of(arb_sample()),
        proptest::option::of(arb_inventory()),
        proptest::collection::vec(arb_sample(), 0..3),
    )
        .prop_map(|(machine, latest_sample, inventory, history)| MachineView {
            machine,
            latest_sample,
            inventory,
            history,
        })
}

proptest! {
    #[test]
    fn any_sample_round_trips(domain in arb_sample()) {
        prop_assert_eq!(sample_from_coordinator(sample_to_wire(&domain)), domain);
    }

    #[test]
    fn any_inventory_round_trips(domain in arb_inventory()) {
        prop_assert_eq!(inventory_from_coordinator(inventory_to_wire(&domain)), domain);
    }

    #[test]
    fn any_machine_view_round_trips(domain in arb_machine_view()) {
        prop_assert_eq!(machine(machine_to_wire(&domain)), domain);
    }

    #[test]
    fn any_time_round_trips(at in arb_time()) {
        prop_assert_eq!(time(Some(timestamp(at))), Some(at));
    }

    #[test]
    fn any_wire_timestamp_converts_without_panic(seconds in any::<i64>(), nanos in any::<i32>()) {
        let _ = time(Some(prost_types::Timestamp { seconds, nanos }));
    }

    #[test]
    fn any_wire_machine_converts_without_panic(
        seconds in any::<i64>(),
        nanos in any::<i32>(),
        health in any::<i32>(),
        link_state in any::<i32>(),
        mac in "\\PC{0,20}",
    ) {
        let ts = Some(prost_types::Timestamp { seconds, nanos });
        let wire = pb::Machine {
            health,
            last_seen: ts,
            enrolled_at: ts,
            latest_sample: Some(pb::HealthSample { taken_at: ts, ..Default::default() }),
            inventory: Some(pb::Inventory {
                interfaces: vec![pb::NetworkInterface { mac, link_state, ..Default::default() }],
                os: Some(pb::OsInfo { boot_time: ts, ..Default::default() }),
                collected_at: ts,
                ..Default::default()
            }),
            ..Default::default()
        };
        let _ = machine(wire);
        let _ = event(pb::Event { at: ts, from_health: health, to_health: health, ..Default::default() });
    }
}
