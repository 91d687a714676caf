//! Agent messages in: every value an enrolled agent sends is checked here, once, against a bounded and
//! documented range before it becomes a domain value.
//!
//! An agent is trusted with its own identity, not with the coordinator's health: a NaN, a negative
//! byte count or a timestamp a thousand years away must never reach the store or the evaluator. A
//! sample is refused as a whole ([`Refusal`] names the field and why); the heartbeat stream goes on,
//! and the agent drops that sample when it reads the refusal.
//!
//! The ranges (see [`bounds`]) are physical limits with room to spare, not expectations: a machine
//! may be very large, but not larger than any machine can be.

use chrono::{DateTime, Duration as TimeDelta, Utc};
use proto::v1 as pb;

use crate::domain::{
    BlockDevice, Dmi, Enrollment, FilesystemUsage, Inventory, NetworkInterface, NetworkRate, OsInfo, Sample,
    Temperature,
};
use crate::fleet::Heartbeat;

/// The documented limits of every value an agent may send.
pub mod bounds {
    use chrono::Duration as TimeDelta;

    /// How far in the future a timestamp may be (clocks drift a little even with NTP); beyond it the
    /// sample is refused and the skew reported.
    pub const FUTURE_TOLERANCE: TimeDelta = TimeDelta::minutes(5);
    /// How old a sample may be: far longer than an agent buffers (its default buffer holds an hour),
    /// so a replayed backlog is always valid.
    pub const MAX_SAMPLE_AGE: TimeDelta = TimeDelta::days(30);
    /// Earliest plausible boot time or inventory time: 2000-01-01.
    pub const EARLIEST: i64 = 946_684_800;
    /// Memory of one machine: 1 PiB.
    pub const MAX_MEMORY_BYTES: u64 = 1 << 50;
    /// One filesystem, disk or swap area: 1 EiB.
    pub const MAX_STORAGE_BYTES: u64 = 1 << 60;
    /// Load averages count runnable tasks; a million is beyond any real machine.
    pub const MAX_LOAD: f64 = 1.0e6;
    /// Temperatures: absolute zero to beyond any sensor in a server (thermocouples top out near 1,000 °C).
    pub const MIN_CELSIUS: f64 = -273.15;
    pub const MAX_CELSIUS: f64 = 1000.0;
    /// Network throughput per interface: 10 TB/s (80 Tbit/s).
    pub const MAX_BYTES_PER_SECOND: f64 = 1.0e13;
    /// Link speed: 10 Tbit/s in Mbit/s.
    pub const MAX_SPEED_MBPS: u32 = 10_000_000;
    /// Uptime: a century.
    pub const MAX_UPTIME_SECONDS: u64 = 100 * 365 * 24 * 3600;
    /// Logical CPUs or cores of one machine.
    pub const MAX_CPUS: u32 = 1 << 16;
    /// List lengths per message.
    pub const MAX_FILESYSTEMS: usize = 1024;
    pub const MAX_TEMPERATURES: usize = 1024;
    pub const MAX_NETWORKS: usize = 8192;
    pub const MAX_DISKS: usize = 4096;
    pub const MAX_INTERFACES: usize = 8192;
    pub const MAX_ADDRESSES: usize = 256;
    pub const MAX_MACS: usize = 8192;
    /// Samples in one heartbeat message (the agent sends at most 64).
    pub const MAX_SAMPLES_PER_MESSAGE: usize = 1024;
    /// String lengths in bytes: paths, free-text labels, short names.
    pub const MAX_PATH: usize = 4096;
    pub const MAX_LABEL: usize = 256;
    pub const MAX_NAME: usize = 128;
    /// A hostname (RFC 1123): 253 characters, labels of 1 to 63.
    pub const MAX_HOSTNAME: usize = 253;
    pub const MAX_HOSTNAME_LABEL: usize = 63;
}

/// One value refused: which field, and why (the wire boundary's one error type).
pub use model::wire::WireError as Refusal;

/// A heartbeat message after the checks: the accepted samples, and each refused one by its `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedHeartbeat {
    pub heartbeat: Heartbeat,
    pub refused: Vec<(u64, Refusal)>,
    /// How far ahead of the coordinator's clock the agent's clock is, when a sample showed it beyond
    /// [`bounds::FUTURE_TOLERANCE`].
    pub clock_ahead: Option<TimeDelta>,
}

// === enrollment ===

/// # Errors
/// A [`Refusal`] naming the field: empty or malformed agent id, a hostname that is not an RFC 1123 host
/// name, malformed MACs, too many of them, or a version string with control characters.
pub fn enrollment(request: pb::EnrollRequest) -> Result<Enrollment, Refusal> {
    let pb::EnrollRequest { agent_id, hostname, mac_addresses, agent_version, token: _, csr_pem: _ } = request;
    if agent_id.trim().is_empty() {
        return Err(Refusal::new("agent_id", "is empty; the agent must send its stable id"));
    }
    if agent_id.len() > bounds::MAX_NAME || !agent_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Refusal::new("agent_id", format!("must be 1 to {} letters, digits, '-' or '_'", bounds::MAX_NAME)));
    }
    let hostname = check_hostname(&hostname).map_err(|reason| Refusal::new("hostname", reason))?;
    if mac_addresses.len() > bounds::MAX_MACS {
        return Err(Refusal::new("mac_addresses", format!("more than {} addresses", bounds::MAX_MACS)));
    }
    let mut macs = Vec::with_capacity(mac_addresses.len());
    for (i, mac) in mac_addresses.into_iter().enumerate() {
        macs.push(check_mac(&mac).map_err(|reason| Refusal::new(format!("mac_addresses[{i}]"), reason))?);
    }
    check_text(&agent_version, bounds::MAX_NAME).map_err(|reason| Refusal::new("agent_version", reason))?;
    Ok(Enrollment { agent_id, hostname, mac_addresses: macs, agent_version })
}

/// A hostname per RFC 1123 (letters, digits and hyphens in dot-separated labels of 1 to 63, not
/// starting or ending with a hyphen, 253 at most), lower-cased: DNS names are case-insensitive.
///
/// # Errors
/// Why the name is not one, with the name quoted safely (escaped and shortened).
pub fn check_hostname(name: &str) -> Result<String, String> {
    let shown = quoted(name);
    if name.is_empty() {
        return Err("is empty; the agent must send its hostname".into());
    }
    if name.len() > bounds::MAX_HOSTNAME {
        return Err(format!(
            "{shown} is {} characters long; a host name has at most {}",
            name.len(),
            bounds::MAX_HOSTNAME
        ));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > bounds::MAX_HOSTNAME_LABEL {
            return Err(format!(
                "{shown} is not an RFC 1123 host name: each dot-separated label has 1 to {} characters",
                bounds::MAX_HOSTNAME_LABEL
            ));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!(
                "{shown} is not an RFC 1123 host name: only letters, digits, '-' and '.' are allowed; \
                 set the host's name or pass --hostname"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("{shown} is not an RFC 1123 host name: a label cannot start or end with '-'"));
        }
    }
    Ok(name.to_ascii_lowercase())
}

/// A MAC address as six colon-separated hex pairs, lower-cased (an empty one is kept empty: some
/// interfaces have none).
fn check_mac(mac: &str) -> Result<String, String> {
    if mac.is_empty() {
        return Ok(String::new());
    }
    let ok = mac.len() == 17
        && mac.split(':').count() == 6
        && mac.split(':').all(|pair| pair.len() == 2 && pair.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(mac.to_ascii_lowercase())
    } else {
        Err(format!("{} is not a MAC address like 52:54:00:12:34:56", quoted(mac)))
    }
}

/// Free text from an agent: bounded, and no control characters (they could rewrite an operator's terminal).
fn check_text(text: &str, max: usize) -> Result<(), String> {
    if text.len() > max {
        return Err(format!("is {} bytes long; at most {max} are accepted", text.len()));
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(format!("contains the control character U+{:04X}", u32::from(c)));
    }
    Ok(())
}

/// A name for messages: escaped and cut to 64 characters, so a refusal never carries the hostile bytes.
fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(64).collect();
    let more = if cut.len() < text.len() { "…" } else { "" };
    format!("{:?}{more}", cut)
}

// === heartbeats ===

/// Checks every sample of a heartbeat message against `now` (the coordinator's clock).
///
/// # Errors
/// A [`Refusal`] for the message itself (no machine id, too many samples); bad samples are refused one
/// by one in [`CheckedHeartbeat::refused`].
pub fn heartbeat(request: pb::HeartbeatRequest, now: DateTime<Utc>) -> Result<CheckedHeartbeat, Refusal> {
    let pb::HeartbeatRequest { machine_id, samples, interval_ms, dropped_samples } = request;
    if machine_id.is_empty() {
        return Err(Refusal::new("machine_id", "is empty; every heartbeat message must name the machine"));
    }
    if samples.len() > bounds::MAX_SAMPLES_PER_MESSAGE {
        return Err(Refusal::new(
            "samples",
            format!("{} in one message; send at most {}", samples.len(), bounds::MAX_SAMPLES_PER_MESSAGE),
        ));
    }
    let mut accepted = Vec::with_capacity(samples.len());
    let mut refused = Vec::new();
    let mut clock_ahead: Option<TimeDelta> = None;
    for wire in samples {
        let seq = wire.seq;
        if let Some(ahead) = ahead_of(wire.taken_at.as_ref(), now) {
            clock_ahead = Some(clock_ahead.map_or(ahead, |a| a.max(ahead)));
        }
        match sample(wire, now) {
            Ok(sample) => accepted.push(sample),
            Err(refusal) => refused.push((seq, refusal)),
        }
    }
    Ok(CheckedHeartbeat {
        heartbeat: Heartbeat { machine_id, samples: accepted, interval_ms, dropped_samples },
        refused,
        clock_ahead,
    })
}

/// How far beyond the tolerance a timestamp lies in the future.
fn ahead_of(at: Option<&prost_types::Timestamp>, now: DateTime<Utc>) -> Option<TimeDelta> {
    let at = DateTime::from_timestamp(at?.seconds, 0)?;
    let ahead = at.signed_duration_since(now);
    (ahead > bounds::FUTURE_TOLERANCE).then_some(ahead)
}

/// One health sample, checked.
///
/// # Errors
/// The first value outside its range, as a [`Refusal`].
pub fn sample(wire: pb::HealthSample, now: DateTime<Utc>) -> Result<Sample, Refusal> {
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
    let taken_at = sample_time(taken_at, now)?;
    finite_in("cpu_percent", cpu_percent, 0.0, 100.0)?;
    for (field, load) in [("load1", load1), ("load5", load5), ("load15", load15)] {
        finite_in(field, load, 0.0, bounds::MAX_LOAD)?;
    }
    at_most("memory_total_bytes", memory_total_bytes, bounds::MAX_MEMORY_BYTES)?;
    at_most("memory_used_bytes", memory_used_bytes, memory_total_bytes)?;
    at_most("memory_available_bytes", memory_available_bytes, memory_total_bytes)?;
    at_most("swap_total_bytes", swap_total_bytes, bounds::MAX_STORAGE_BYTES)?;
    at_most("swap_used_bytes", swap_used_bytes, swap_total_bytes)?;
    at_most("uptime_seconds", uptime_seconds, bounds::MAX_UPTIME_SECONDS)?;
    at_most("logical_cpus", u64::from(logical_cpus), u64::from(bounds::MAX_CPUS))?;
    list_len("filesystems", filesystems.len(), bounds::MAX_FILESYSTEMS)?;
    list_len("temperatures", temperatures.len(), bounds::MAX_TEMPERATURES)?;
    list_len("networks", networks.len(), bounds::MAX_NETWORKS)?;
    let filesystems = filesystems
        .into_iter()
        .enumerate()
        .map(|(i, f)| filesystem(f).map_err(|r| r.at(&format!("filesystems[{i}]"))))
        .collect::<Result<_, _>>()?;
    let temperatures = temperatures
        .into_iter()
        .enumerate()
        .map(|(i, t)| temperature(t).map_err(|r| r.at(&format!("temperatures[{i}]"))))
        .collect::<Result<_, _>>()?;
    let networks = networks
        .into_iter()
        .enumerate()
        .map(|(i, n)| network(n).map_err(|r| r.at(&format!("networks[{i}]"))))
        .collect::<Result<_, _>>()?;
    Ok(Sample {
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
        filesystems,
        temperatures,
        networks,
        uptime_seconds,
        logical_cpus,
    })
}

/// A sample's time: within [`bounds::MAX_SAMPLE_AGE`] before `now` and [`bounds::FUTURE_TOLERANCE`] after.
fn sample_time(at: Option<prost_types::Timestamp>, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, Refusal> {
    let Some(at) = at else { return Ok(None) };
    let time = super::time(Some(at)).ok_or_else(|| Refusal::new("taken_at", "is not a valid timestamp"))?;
    let ahead = time.signed_duration_since(now);
    if ahead > bounds::FUTURE_TOLERANCE {
        return Err(Refusal::new(
            "taken_at",
            format!(
                "is {} ahead of the coordinator's clock; fix the agent host's time (NTP)",
                humantime::format_duration(ahead.to_std().unwrap_or_default())
            ),
        ));
    }
    if now.signed_duration_since(time) > bounds::MAX_SAMPLE_AGE {
        return Err(Refusal::new(
            "taken_at",
            format!("is older than {} days; no agent buffers that long", bounds::MAX_SAMPLE_AGE.num_days()),
        ));
    }
    Ok(Some(time))
}

fn filesystem(wire: pb::FilesystemUsage) -> Result<FilesystemUsage, Refusal> {
    let pb::FilesystemUsage { mount_point, device, fs_type, total_bytes, available_bytes } = wire;
    check_text(&mount_point, bounds::MAX_PATH).map_err(|r| Refusal::new("mount_point", r))?;
    check_text(&device, bounds::MAX_PATH).map_err(|r| Refusal::new("device", r))?;
    check_text(&fs_type, bounds::MAX_NAME).map_err(|r| Refusal::new("fs_type", r))?;
    at_most("total_bytes", total_bytes, bounds::MAX_STORAGE_BYTES)?;
    at_most("available_bytes", available_bytes, total_bytes)?;
    Ok(FilesystemUsage { mount_point, device, fs_type, total_bytes, available_bytes })
}

fn temperature(wire: pb::Temperature) -> Result<Temperature, Refusal> {
    let pb::Temperature { label, celsius } = wire;
    check_text(&label, bounds::MAX_LABEL).map_err(|r| Refusal::new("label", r))?;
    finite_in("celsius", celsius, bounds::MIN_CELSIUS, bounds::MAX_CELSIUS)?;
    Ok(Temperature { label, celsius })
}

fn network(wire: pb::NetworkRate) -> Result<NetworkRate, Refusal> {
    let pb::NetworkRate { interface, rx_bytes_per_second, tx_bytes_per_second } = wire;
    check_text(&interface, bounds::MAX_NAME).map_err(|r| Refusal::new("interface", r))?;
    finite_in("rx_bytes_per_second", rx_bytes_per_second, 0.0, bounds::MAX_BYTES_PER_SECOND)?;
    finite_in("tx_bytes_per_second", tx_bytes_per_second, 0.0, bounds::MAX_BYTES_PER_SECOND)?;
    Ok(NetworkRate { interface, rx_bytes_per_second, tx_bytes_per_second })
}

fn finite_in(field: &str, value: f64, min: f64, max: f64) -> Result<(), Refusal> {
    if !value.is_finite() {
        return Err(Refusal::new(field, format!("is {value}, not a finite number")));
    }
    if value < min || value > max {
        return Err(Refusal::new(field, format!("is {value}, outside {min} to {max}")));
    }
    Ok(())
}

fn at_most(field: &str, value: u64, max: u64) -> Result<(), Refusal> {
    if value > max {
        return Err(Refusal::new(field, format!("is {value}, more than {max}")));
    }
    Ok(())
}

fn list_len(field: &str, len: usize, max: usize) -> Result<(), Refusal> {
    if len > max {
        return Err(Refusal::new(field, format!("has {len} entries; at most {max} are accepted")));
    }
    Ok(())
}

// === inventory ===

/// A full inventory, checked; `now` bounds its times.
///
/// # Errors
/// The first value outside its range, as a [`Refusal`].
pub fn inventory(wire: pb::Inventory, now: DateTime<Utc>) -> Result<Inventory, Refusal> {
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
    check_text(&cpu_model, bounds::MAX_LABEL).map_err(|r| Refusal::new("cpu_model", r))?;
    at_most("physical_cores", u64::from(physical_cores), u64::from(bounds::MAX_CPUS))?;
    at_most("logical_cpus", u64::from(logical_cpus), u64::from(bounds::MAX_CPUS))?;
    at_most("memory_total_bytes", memory_total_bytes, bounds::MAX_MEMORY_BYTES)?;
    list_len("disks", disks.len(), bounds::MAX_DISKS)?;
    list_len("interfaces", interfaces.len(), bounds::MAX_INTERFACES)?;
    let disks = disks
        .into_iter()
        .enumerate()
        .map(|(i, d)| disk(d).map_err(|r| r.at(&format!("disks[{i}]"))))
        .collect::<Result<_, _>>()?;
    let interfaces = interfaces
        .into_iter()
        .enumerate()
        .map(|(i, n)| interface(n).map_err(|r| r.at(&format!("interfaces[{i}]"))))
        .collect::<Result<_, _>>()?;
    let dmi = match dmi {
        Some(pb::Dmi { vendor, product, serial, bios_version }) => {
            for (field, text) in
                [("vendor", &vendor), ("product", &product), ("serial", &serial), ("bios_version", &bios_version)]
            {
                check_text(text, bounds::MAX_LABEL).map_err(|r| Refusal::new(format!("dmi.{field}"), r))?;
            }
            Dmi { vendor, product, serial, bios_version }
        }
        None => Dmi::default(),
    };
    let os = match os {
        Some(pb::OsInfo { name, version, kernel, boot_time }) => {
            for (field, text) in [("name", &name), ("version", &version), ("kernel", &kernel)] {
                check_text(text, bounds::MAX_LABEL).map_err(|r| Refusal::new(format!("os.{field}"), r))?;
            }
            OsInfo { name, version, kernel, boot_time: past_time("os.boot_time", boot_time, now)? }
        }
        None => OsInfo::default(),
    };
    Ok(Inventory {
        cpu_model,
        physical_cores,
        logical_cpus,
        memory_total_bytes,
        disks,
        interfaces,
        dmi,
        os,
        collected_at: past_time("collected_at", collected_at, now)?,
    })
}

/// A time that must lie between 2000 and a little after `now`.
fn past_time(
    field: &str,
    at: Option<prost_types::Timestamp>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, Refusal> {
    let Some(at) = at else { return Ok(None) };
    let time = super::time(Some(at)).ok_or_else(|| Refusal::new(field, "is not a valid timestamp"))?;
    if time.timestamp() < bounds::EARLIEST || time.signed_duration_since(now) > bounds::FUTURE_TOLERANCE {
        return Err(Refusal::new(field, format!("is {time}, outside 2000 to now; check the host's clock")));
    }
    Ok(Some(time))
}

fn disk(wire: pb::BlockDevice) -> Result<BlockDevice, Refusal> {
    let pb::BlockDevice { name, size_bytes, model, serial, rotational } = wire;
    check_text(&name, bounds::MAX_NAME).map_err(|r| Refusal::new("name", r))?;
    check_text(&model, bounds::MAX_LABEL).map_err(|r| Refusal::new("model", r))?;
    check_text(&serial, bounds::MAX_LABEL).map_err(|r| Refusal::new("serial", r))?;
    at_most("size_bytes", size_bytes, bounds::MAX_STORAGE_BYTES)?;
    Ok(BlockDevice { name, size_bytes, model, serial, rotational })
}

fn interface(wire: pb::NetworkInterface) -> Result<NetworkInterface, Refusal> {
    let pb::NetworkInterface { name, mac, speed_mbps, link_state, addresses, r#virtual } = wire;
    check_text(&name, bounds::MAX_NAME).map_err(|r| Refusal::new("name", r))?;
    let mac = check_mac(&mac).map_err(|r| Refusal::new("mac", r))?;
    at_most("speed_mbps", u64::from(speed_mbps), u64::from(bounds::MAX_SPEED_MBPS))?;
    list_len("addresses", addresses.len(), bounds::MAX_ADDRESSES)?;
    for (i, address) in addresses.iter().enumerate() {
        check_text(address, bounds::MAX_NAME).map_err(|r| Refusal::new(format!("addresses[{i}]"), r))?;
    }
    Ok(NetworkInterface {
        name,
        mac,
        speed_mbps,
        link_state: super::link_state_name(link_state),
        addresses,
        is_virtual: r#virtual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn good() -> pb::HealthSample {
        pb::HealthSample {
            taken_at: Some(super::super::timestamp(now())),
            cpu_percent: 12.5,
            load1: 0.5,
            memory_total_bytes: 1 << 30,
            memory_used_bytes: 1 << 29,
            memory_available_bytes: 1 << 29,
            filesystems: vec![pb::FilesystemUsage {
                mount_point: "/".into(),
                device: "/dev/sda1".into(),
                fs_type: "ext4".into(),
                total_bytes: 100,
                available_bytes: 40,
            }],
            temperatures: vec![pb::Temperature { label: "cpu".into(), celsius: 45.0 }],
            networks: vec![pb::NetworkRate {
                interface: "eth0".into(),
                rx_bytes_per_second: 10.0,
                tx_bytes_per_second: 5.0,
            }],
            uptime_seconds: 100,
            logical_cpus: 8,
            seq: 7,
            ..Default::default()
        }
    }

    /// `change` applied to a good sample is refused on `field`.
    fn check(change: impl FnOnce(&mut pb::HealthSample), field: &str) {
        let mut wire = good();
        change(&mut wire);
        let refusal = sample(wire, now()).expect_err("refused");
        assert_eq!(refusal.field, field, "{refusal}");
    }

    #[test]
    fn a_good_sample_passes_with_its_seq() {
        assert_eq!(sample(good(), now()).unwrap().seq, 7);
    }

    #[test]
    fn non_finite_and_out_of_range_numbers_are_refused_with_their_field() {
        check(|s| s.cpu_percent = f64::NAN, "cpu_percent");
        check(|s| s.cpu_percent = f64::INFINITY, "cpu_percent");
        check(|s| s.cpu_percent = -1.0, "cpu_percent");
        check(|s| s.cpu_percent = 1e308, "cpu_percent");
        check(|s| s.load5 = f64::NEG_INFINITY, "load5");
        check(|s| s.memory_total_bytes = u64::MAX, "memory_total_bytes");
        check(|s| s.memory_used_bytes = (1 << 30) + 1, "memory_used_bytes");
        check(|s| s.swap_used_bytes = 1, "swap_used_bytes");
        check(|s| s.filesystems[0].available_bytes = 101, "filesystems[0].available_bytes");
        check(|s| s.filesystems[0].total_bytes = u64::MAX, "filesystems[0].total_bytes");
        check(|s| s.temperatures[0].celsius = -300.0, "temperatures[0].celsius");
        check(|s| s.temperatures[0].celsius = f64::NAN, "temperatures[0].celsius");
        check(|s| s.networks[0].rx_bytes_per_second = -1.0, "networks[0].rx_bytes_per_second");
        check(|s| s.uptime_seconds = u64::MAX, "uptime_seconds");
        check(|s| s.logical_cpus = u32::MAX, "logical_cpus");
    }

    #[test]
    fn strings_with_control_characters_or_too_long_are_refused() {
        check(|s| s.filesystems[0].mount_point = "/\n/fake".into(), "filesystems[0].mount_point");
        check(|s| s.temperatures[0].label = "\x1b]0;owned\x07".into(), "temperatures[0].label");
        check(|s| s.networks[0].interface = "e".repeat(200), "networks[0].interface");
        check(|s| s.filesystems = vec![pb::FilesystemUsage::default(); bounds::MAX_FILESYSTEMS + 1], "filesystems");
    }

    #[test]
    fn the_time_window_refuses_the_far_future_and_the_ancient_but_keeps_a_backlog() {
        let at = |delta: TimeDelta| Some(super::super::timestamp(now() + delta));
        check(|s| s.taken_at = at(TimeDelta::minutes(6)), "taken_at");
        check(|s| s.taken_at = at(TimeDelta::days(365 * 3000)), "taken_at");
        check(|s| s.taken_at = at(-TimeDelta::days(31)), "taken_at");
        check(|s| s.taken_at = Some(prost_types::Timestamp { seconds: i64::MAX, nanos: 0 }), "taken_at");
        for fine in [TimeDelta::minutes(4), -TimeDelta::days(12), TimeDelta::zero()] {
            let mut wire = good();
            wire.taken_at = at(fine);
            assert!(sample(wire, now()).is_ok(), "{fine}");
        }
    }

    #[test]
    fn a_heartbeat_refuses_samples_one_by_one_and_reports_a_clock_ahead() {
        let mut bad = good();
        bad.seq = 8;
        bad.cpu_percent = f64::NAN;
        let mut future = good();
        future.seq = 9;
        future.taken_at = Some(super::super::timestamp(now() + TimeDelta::hours(2)));
        let mut fine = good();
        fine.seq = 10;
        let request = pb::HeartbeatRequest {
            machine_id: "m".into(),
            samples: vec![good(), bad, future, fine],
            interval_ms: 1000,
            dropped_samples: 0,
        };
        let checked = heartbeat(request, now()).unwrap();
        let seqs: Vec<u64> = checked.heartbeat.samples.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, vec![7, 10]);
        let refused: Vec<(u64, &str)> = checked.refused.iter().map(|(seq, r)| (*seq, r.field.as_str())).collect();
        assert_eq!(refused, vec![(8, "cpu_percent"), (9, "taken_at")]);
        assert_eq!(checked.clock_ahead, Some(TimeDelta::hours(2)));
    }

    #[test]
    fn hostnames_follow_rfc_1123() {
        for fine in ["server1", "a", "Server-1.lab.example", &"a".repeat(63)] {
            assert!(check_hostname(fine).is_ok(), "{fine}");
        }
        assert_eq!(check_hostname("Server1").unwrap(), "server1");
        for bad in ["", "a\nb", "a b", "-a", "a-", "a..b", "a_b", "\x1b[31mred", &"a".repeat(64), &"a.".repeat(200)] {
            let error = check_hostname(bad).expect_err(bad);
            assert!(!error.chars().any(char::is_control), "the message stays printable: {error:?}");
        }
        let long = "x".repeat(100_000);
        assert!(check_hostname(&long).unwrap_err().len() < 300, "a huge name is not echoed whole");
    }

    #[test]
    fn enrollment_checks_ids_macs_and_version() {
        let request = |agent_id: &str, mac: &str, version: &str| pb::EnrollRequest {
            agent_id: agent_id.into(),
            hostname: "server1".into(),
            mac_addresses: vec![mac.into()],
            agent_version: version.into(),
            ..Default::default()
        };
        let ok = enrollment(request("a-1", "52:54:00:AB:CD:EF", "0.1.0")).unwrap();
        assert_eq!(ok.mac_addresses, vec!["52:54:00:ab:cd:ef"]);
        assert_eq!(enrollment(request("", "", "")).unwrap_err().field, "agent_id");
        assert_eq!(enrollment(request("a/../b", "", "")).unwrap_err().field, "agent_id");
        assert_eq!(enrollment(request("a", "not-a-mac", "")).unwrap_err().field, "mac_addresses[0]");
        assert_eq!(enrollment(request("a", "", "1\r\n")).unwrap_err().field, "agent_version");
    }

    #[test]
    fn inventory_checks_sizes_names_and_times() {
        let wire = pb::Inventory {
            cpu_model: "cpu".into(),
            logical_cpus: 4,
            memory_total_bytes: 1 << 30,
            disks: vec![pb::BlockDevice { name: "sda".into(), size_bytes: 1 << 40, ..Default::default() }],
            interfaces: vec![pb::NetworkInterface {
                name: "eth0".into(),
                mac: "52:54:00:00:00:01".into(),
                speed_mbps: 1000,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(inventory(wire.clone(), now()).is_ok());
        let mut bad = wire.clone();
        bad.disks[0].size_bytes = u64::MAX;
        assert_eq!(inventory(bad, now()).unwrap_err().field, "disks[0].size_bytes");
        let mut bad = wire.clone();
        bad.cpu_model = "x\u{9b}31m".into();
        assert_eq!(inventory(bad, now()).unwrap_err().field, "cpu_model");
        let mut bad = wire;
        bad.collected_at = Some(prost_types::Timestamp { seconds: 10, nanos: 0 });
        assert_eq!(inventory(bad, now()).unwrap_err().field, "collected_at");
    }
}
