//! Expected hardware profiles: what a machine must have, as the lab plan states it.
//!
//! A profile is written by people in `lab.toml` (`[profiles.NAME]`) and checked by verification
//! against what MAAS commissioned and what the agent sees. Sizes are typed: integers are bytes,
//! strings take units (`"12GiB"`, `"500GB"`, `"64 MiB"`).

use serde::{Deserialize, Deserializer, Serialize};

/// What one machine is expected to have. Every field is a minimum unless it says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpecProfile {
    /// At least this many logical CPUs.
    #[serde(default)]
    pub min_logical_cpus: Option<u32>,
    /// At least this much memory, as installed (the OS sees a little less; verification allows for it).
    #[serde(default, deserialize_with = "bytes_opt")]
    pub min_memory: Option<u64>,
    /// A substring the CPU model must contain (case-insensitive), e.g. `"Xeon"`.
    #[serde(default)]
    pub cpu_model: Option<String>,
    /// Disk requirements; each entry needs `count` disks of at least `min_size` of that kind.
    #[serde(default)]
    pub disks: Vec<DiskRequirement>,
    /// Network interface requirements.
    #[serde(default)]
    pub nics: Option<NicRequirement>,
}

/// `count` disks of at least `min_size` bytes, of `kind`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiskRequirement {
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default, deserialize_with = "bytes_opt")]
    pub min_size: Option<u64>,
    #[serde(default)]
    pub kind: DiskKind,
}

/// Whether a disk spins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskKind {
    #[default]
    Any,
    Ssd,
    Hdd,
}

/// At least `count` physical NICs, each at least `min_speed_mbps` when given.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NicRequirement {
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub min_speed_mbps: Option<u32>,
}

fn one() -> u32 {
    1
}

/// Parses a size: a number of bytes, or a number with a unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("{text:?} is not a size; write e.g. 16GiB or 500GB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?}; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ));
        }
    };
    let bytes = number * factor as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes.round() as u64)
}

/// Bytes in binary units with one decimal, for people: `15.6 GiB` (JSON keeps the exact integer).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

fn bytes_opt<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    match Option::<Raw>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Raw::Bytes(bytes)) => Ok(Some(bytes)),
        Some(Raw::Text(text)) => parse_size(&text).map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<u64, ()>) {
        assert_eq!(parse_size(text).map_err(|_| ()), expected, "{text}");
    }

    #[test]
    fn sizes_with_and_without_units() {
        check("1024", Ok(1024));
        check("12GiB", Ok(12 << 30));
        check("500 GB", Ok(500_000_000_000));
        check("1.5TiB", Ok(1_649_267_441_664));
        check("12 parsecs", Err(()));
        check("", Err(()));
    }

    #[test]
    fn profile_from_toml() {
        let profile: SpecProfile = toml::from_str(
            "min_logical_cpus = 4\nmin_memory = \"12GiB\"\n[[disks]]\ncount = 2\nmin_size = \"100GB\"\nkind = \"ssd\"\n[nics]\nmin_speed_mbps = 1000\n",
        )
        .unwrap();
        assert_eq!(profile.min_logical_cpus, Some(4));
        assert_eq!(profile.min_memory, Some(12 << 30));
        assert_eq!(
            profile.disks,
            vec![DiskRequirement { count: 2, min_size: Some(100_000_000_000), kind: DiskKind::Ssd }]
        );
        assert_eq!(profile.nics, Some(NicRequirement { count: 1, min_speed_mbps: Some(1000) }));
    }

    #[test]
    fn unknown_profile_keys_are_errors() {
        assert!(toml::from_str::<SpecProfile>("min_cpus = 4\n").is_err());
    }
}
