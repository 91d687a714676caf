//! Property tests for the checks of what agents send: any wire value is checked without a panic, what passes is
//! storable, and a store filled by hostile agents reads back and restarts. (The round trips of the conversions
//! shared with fleetctl are `model::wire`'s own property tests.)

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proto::v1 as pb;

use super::*;
use crate::domain::{Inventory, Sample};

// === agent messages: the edge checks ===

/// Any float an agent could send: ordinary, huge, tiny, negative, NaN and both infinities.
fn hostile_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -10.0f64..200.0,
        1 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(1e308),
        1 => Just(-0.0),
    ]
}

/// Any byte count: small, near the machine's totals, or absurd.
fn hostile_u64() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0u64..(1 << 40), 1 => any::<u64>(), 1 => Just(u64::MAX)]
}

/// Any text: printable, control characters, escapes, or long.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-z0-9/._-]{0,12}", 1 => "\\PC{0,12}", 1 => ".{0,12}", 1 => "[\\x00-\\x1f\\x7f\\u{9b}]{1,4}"]
}

/// Any timestamp: around the test's "now", far away, or malformed.
fn hostile_time(now: i64) -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    let near = (now - 40 * 86_400..now + 3_600, 0i32..1_000_000_000)
        .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos });
    let any_time = (any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos });
    proptest::option::of(prop_oneof![4 => near, 1 => any_time])
}

const NOW: i64 = 1_800_000_000;

fn hostile_sample() -> impl Strategy<Value = pb::HealthSample> {
    let filesystem = (hostile_text(), hostile_text(), hostile_text(), hostile_u64(), hostile_u64()).prop_map(
        |(mount_point, device, fs_type, total_bytes, available_bytes)| pb::FilesystemUsage {
            mount_point,
            device,
            fs_type,
            total_bytes,
            available_bytes,
        },
    );
    let temperature = (hostile_text(), hostile_f64()).prop_map(|(label, celsius)| pb::Temperature { label, celsius });
    let network = (hostile_text(), hostile_f64(), hostile_f64()).prop_map(|(interface, rx, tx)| pb::NetworkRate {
        interface,
        rx_bytes_per_second: rx,
        tx_bytes_per_second: tx,
    });
    (
        (hostile_time(NOW), hostile_f64(), hostile_f64(), hostile_f64(), hostile_f64()),
        proptest::array::uniform5(hostile_u64()),
        proptest::collection::vec(filesystem, 0..3),
        proptest::collection::vec(temperature, 0..3),
        proptest::collection::vec(network, 0..3),
        (hostile_u64(), any::<u32>(), any::<u64>()),
    )
        .prop_map(|((taken_at, cpu, l1, l5, l15), m, filesystems, temperatures, networks, (uptime, cpus, seq))| {
            pb::HealthSample {
                taken_at,
                cpu_percent: cpu,
                load1: l1,
                load5: l5,
                load15: l15,
                memory_total_bytes: m[0],
                memory_used_bytes: m[1],
                memory_available_bytes: m[2],
                swap_total_bytes: m[3],
                swap_used_bytes: m[4],
                filesystems,
                temperatures,
                networks,
                uptime_seconds: uptime,
                logical_cpus: cpus,
                seq,
            }
        })
}

/// A sample a sane agent sends: every value in range (so the store test stores many).
fn plausible_sample() -> impl Strategy<Value = pb::HealthSample> {
    let filesystem =
        ("[a-z/]{1,12}", 1u64..(1 << 45), 0.0f64..=1.0).prop_map(|(mount_point, total, free)| pb::FilesystemUsage {
            mount_point,
            device: "/dev/vda1".into(),
            fs_type: "ext4".into(),
            total_bytes: total,
            available_bytes: (total as f64 * free) as u64,
        });
    (
        (NOW - 86_400..NOW + 60, 0.0f64..=100.0, 0.0f64..64.0, 1u64..(1 << 40), 0.0f64..=1.0),
        proptest::collection::vec(filesystem, 0..3),
        proptest::collection::vec(("[a-z0-9 ]{0,10}", -20.0f64..120.0), 0..3),
        (0u64..1_000_000, 1u32..512, 1u64..1_000_000),
    )
        .prop_map(|((at, cpu, load, memory, used), filesystems, temps, (uptime, cpus, seq))| pb::HealthSample {
            taken_at: Some(prost_types::Timestamp { seconds: at, nanos: 0 }),
            cpu_percent: cpu,
            load1: load,
            load5: load,
            load15: load,
            memory_total_bytes: memory,
            memory_used_bytes: (memory as f64 * used) as u64,
            memory_available_bytes: memory - (memory as f64 * used) as u64,
            filesystems,
            temperatures: temps.into_iter().map(|(label, celsius)| pb::Temperature { label, celsius }).collect(),
            uptime_seconds: uptime,
            logical_cpus: cpus,
            seq,
            ..Default::default()
        })
}

/// Every number finite, every string free of control characters: what the store may hold.
fn assert_storable(sample: &Sample) {
    let floats = [sample.cpu_percent, sample.load1, sample.load5, sample.load15];
    let more = sample.temperatures.iter().map(|t| t.celsius);
    let rates = sample.networks.iter().flat_map(|n| [n.rx_bytes_per_second, n.tx_bytes_per_second]);
    assert!(floats.into_iter().chain(more).chain(rates).all(f64::is_finite), "{sample:?}");
    let texts = sample.filesystems.iter().flat_map(|f| [&f.mount_point, &f.device, &f.fs_type]);
    let texts = texts.chain(sample.temperatures.iter().map(|t| &t.label));
    let texts = texts.chain(sample.networks.iter().map(|n| &n.interface));
    assert!(texts.flat_map(|t| t.chars()).all(|c| !c.is_control()), "{sample:?}");
    assert!(sample.memory_used_bytes <= sample.memory_total_bytes);
    assert!(sample.filesystems.iter().all(|f| f.available_bytes <= f.total_bytes));
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).expect("in range")
}

proptest! {
    #[test]
    fn any_wire_sample_is_checked_without_panic_and_what_passes_is_storable(wire in hostile_sample()) {
        match agent::sample(wire.clone(), now()) {
            Ok(sample) => {
                assert_storable(&sample);
                prop_assert_eq!(sample.seq, wire.seq);
                let text = serde_json::to_string(&sample).expect("a checked sample serialises");
                let back: Sample = serde_json::from_str(&text).expect("and reads back");
                prop_assert_eq!(back.filesystems, sample.filesystems);
                prop_assert!((back.cpu_percent - sample.cpu_percent).abs() <= 1e-9 * sample.cpu_percent.abs().max(1.0));
            }
            Err(refusal) => {
                prop_assert!(!refusal.field.is_empty() && !refusal.reason.is_empty());
                prop_assert!(!refusal.reason.chars().any(char::is_control), "{:?}", refusal.reason);
            }
        }
    }

    #[test]
    fn any_wire_inventory_and_enrollment_are_checked_without_panic(
        model in hostile_text(),
        size in hostile_u64(),
        mac in prop_oneof!["([0-9a-f]{2}:){5}[0-9a-f]{2}", hostile_text()],
        hostname in prop_oneof!["[a-z][a-z0-9-]{0,20}", hostile_text(), "[a-z.]{250,260}"],
        at in hostile_time(NOW),
    ) {
        let wire = pb::Inventory {
            cpu_model: model.clone(),
            memory_total_bytes: size,
            disks: vec![pb::BlockDevice { name: model.clone(), size_bytes: size, ..Default::default() }],
            interfaces: vec![pb::NetworkInterface { name: "eth0".into(), mac: mac.clone(), ..Default::default() }],
            collected_at: at,
            ..Default::default()
        };
        if let Ok(inventory) = agent::inventory(wire, now()) {
            prop_assert!(!inventory.cpu_model.chars().any(char::is_control));
            let text = serde_json::to_string(&inventory).expect("serialises");
            prop_assert_eq!(serde_json::from_str::<Inventory>(&text).expect("reads back"), inventory);
        }
        let request = pb::EnrollRequest {
            agent_id: "a-1".into(),
            hostname: hostname.clone(),
            mac_addresses: vec![mac],
            agent_version: model,
            ..Default::default()
        };
        if let Ok(enrollment) = agent::enrollment(request) {
            prop_assert!(enrollment.hostname.len() <= 253);
            prop_assert!(enrollment.hostname.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
        }
    }
}

proptest! {
    // Each case opens a store and restarts a fleet over it: fewer cases, each a whole run.
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A store filled with whatever passed the checks reads back, and a coordinator restarted over it starts.
    #[test]
    fn a_store_filled_by_hostile_agents_reads_back_and_restarts(
        batch in proptest::collection::vec(prop_oneof![2 => plausible_sample(), 1 => hostile_sample()], 1..12)
    ) {
        use std::sync::Arc;

        use crate::domain::Enrollment;
        use crate::fleet::{Fleet, FleetSettings, Heartbeat};
        use crate::store::{SqliteStore, Store, Takeover};

        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(async {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let settings = FleetSettings {
                thresholds: crate::health::HealthThresholds::default(),
                heartbeat_interval: std::time::Duration::from_secs(1),
                write_queue: 16,
                evaluate_every: std::time::Duration::from_secs(3600),
                history_samples: 1000,
            };
            let accepted: Vec<Sample> = batch.into_iter().filter_map(|wire| agent::sample(wire, now()).ok()).collect();
            let stop = tokio_util::sync::CancellationToken::new();
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 1000).expect("a store"));
            let (fleet, tasks) = Fleet::start(store, settings.clone(), stop.clone()).await.expect("starts");
            let enrollment = Enrollment { agent_id: "a".into(), hostname: "h".into(), mac_addresses: vec![], agent_version: "t".into() };
            let id = fleet.enroll(enrollment, Takeover::default()).await.expect("enrolls").id;
            let heartbeat = Heartbeat { machine_id: id.clone(), samples: accepted.clone(), interval_ms: 1000, dropped_samples: 0 };
            fleet.heartbeat(heartbeat, None).await.expect("accepted");
            stop.cancel();
            tasks.join().await;

            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 1000).expect("reopens"));
            let stop = tokio_util::sync::CancellationToken::new();
            let (fleet, tasks) = Fleet::start(store.clone(), settings, stop.clone()).await.expect("a restart starts");
            let view = fleet.machine(&id, 1000).await.expect("the machine reads back");
            // Samples with a seq the store already holds are skipped; the rest are all there.
            let mut expected = 0;
            let mut last = 0u64;
            for sample in &accepted {
                if sample.seq == 0 || sample.seq > last {
                    expected += 1;
                    last = last.max(sample.seq);
                }
            }
            assert_eq!(view.history.len(), expected);
            view.history.iter().for_each(assert_storable);
            stop.cancel();
            tasks.join().await;
        });
    }
}
