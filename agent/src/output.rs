//! Human-readable tables for `agent inventory` and `agent sample` (JSON goes through serde).

use std::fmt::Write;

use crate::health::HealthSample;
use crate::inventory::{Inventory, LinkState};
use crate::timefmt::rfc3339;

/// Bytes as a short human figure (GiB, MiB...), for tables only; JSON keeps integers.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Aligns `rows` under `header` in columns separated by two spaces.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<String>| {
        let text: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

pub fn inventory_table(inventory: &Inventory) -> String {
    let mut out = String::new();
    let os = &inventory.os;
    let dmi = &inventory.dmi;
    let _ = writeln!(
        out,
        "CPU       {} ({} cores, {} logical CPUs)",
        inventory.cpu_model, inventory.physical_cores, inventory.logical_cpus
    );
    let _ = writeln!(out, "Memory    {}", human_bytes(inventory.memory_total_bytes));
    let _ =
        writeln!(out, "System    {} {} (serial {:?}, BIOS {})", dmi.vendor, dmi.product, dmi.serial, dmi.bios_version);
    let _ =
        writeln!(out, "OS        {} {}, kernel {}, booted {}", os.name, os.version, os.kernel, rfc3339(os.boot_time));
    out.push('\n');
    let disks: Vec<Vec<String>> = inventory
        .disks
        .iter()
        .map(|d| {
            let kind = if d.rotational { "hdd" } else { "ssd" };
            vec![d.name.clone(), human_bytes(d.size_bytes), kind.into(), d.model.clone(), d.serial.clone()]
        })
        .collect();
    table(&mut out, &["DISK", "SIZE", "TYPE", "MODEL", "SERIAL"], &disks);
    out.push('\n');
    let interfaces: Vec<Vec<String>> = inventory
        .interfaces
        .iter()
        .map(|i| {
            let link = match i.link_state {
                LinkState::Up => "up",
                LinkState::Down => "down",
                LinkState::Unknown => "unknown",
            };
            let speed = if i.speed_mbps == 0 { "-".to_string() } else { format!("{} Mb/s", i.speed_mbps) };
            let kind = if i.is_virtual { "virtual" } else { "physical" };
            vec![i.name.clone(), i.mac.clone(), link.into(), speed, kind.into(), i.addresses.join(" ")]
        })
        .collect();
    table(&mut out, &["INTERFACE", "MAC", "LINK", "SPEED", "KIND", "ADDRESSES"], &interfaces);
    out
}

pub fn sample_table(sample: &HealthSample) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Taken     {}", rfc3339(sample.taken_at));
    let _ = writeln!(
        out,
        "CPU       {:.1} % of {} CPUs, load {:.2} {:.2} {:.2}",
        sample.cpu_percent, sample.logical_cpus, sample.load1, sample.load5, sample.load15
    );
    let _ = writeln!(
        out,
        "Memory    {} used, {} available of {}; swap {} of {}",
        human_bytes(sample.memory_used_bytes),
        human_bytes(sample.memory_available_bytes),
        human_bytes(sample.memory_total_bytes),
        human_bytes(sample.swap_used_bytes),
        human_bytes(sample.swap_total_bytes)
    );
    let _ = writeln!(out, "Uptime    {} s", sample.uptime_seconds);
    out.push('\n');
    let filesystems: Vec<Vec<String>> = sample
        .filesystems
        .iter()
        .map(|f| {
            let used = f.total_bytes.saturating_sub(f.available_bytes);
            let percent = if f.total_bytes == 0 { 0.0 } else { used as f64 * 100.0 / f.total_bytes as f64 };
            vec![
                f.mount_point.clone(),
                f.device.clone(),
                f.fs_type.clone(),
                human_bytes(f.total_bytes),
                format!("{percent:.1} %"),
            ]
        })
        .collect();
    table(&mut out, &["MOUNT", "DEVICE", "TYPE", "SIZE", "USED"], &filesystems);
    if !sample.temperatures.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> =
            sample.temperatures.iter().map(|t| vec![t.label.clone(), format!("{:.1} °C", t.celsius)]).collect();
        table(&mut out, &["SENSOR", "TEMPERATURE"], &rows);
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = sample
        .networks
        .iter()
        .map(|n| {
            vec![
                n.interface.clone(),
                format!("{:.0} B/s", n.rx_bytes_per_second),
                format!("{:.0} B/s", n.tx_bytes_per_second),
            ]
        })
        .collect();
    table(&mut out, &["INTERFACE", "RX", "TX"], &rows);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(274_877_906_944), "256.0 GiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn tables_align_columns() {
        let mut out = String::new();
        table(&mut out, &["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(out, "A     BB\nlong  x\n");
    }
}
