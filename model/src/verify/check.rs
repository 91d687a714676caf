//! The verification rules as one pure function: [`check`] compares expected, commissioned and live specs.
//!
//! Built-in tolerances instead of a rule language:
//! - memory: the OS sees a little less than is installed, so a value may be short of another by the larger of
//!   [`Tolerances::memory_percent`] (default 5 %) and [`Tolerances::memory_bytes`] (default 512 MiB);
//! - disk sizes: within [`DISK_SIZE_PERCENT`] (1 %);
//! - counts (logical CPUs, disks, NICs): exact.

use serde::{Deserialize, Serialize};

use crate::spec::{DiskKind, SpecProfile, format_size};

/// Disk sizes agree when they differ by at most this share of the larger one.
pub const DISK_SIZE_PERCENT: f64 = 1.0;

/// One field's or one machine's verdict. Ordered from best to worst, so the worst of several is their `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    /// No data yet; the reason says which.
    Unknown,
    /// Live differs from commissioned (a DIMM or disk gone, a NIC slower).
    Drift,
    /// Below expectation.
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Unknown => "unknown",
            Verdict::Drift => "drift",
            Verdict::Fail => "fail",
        }
    }

    /// Parses what [`Verdict::as_str`] wrote.
    pub fn parse(text: &str) -> Option<Verdict> {
        match text {
            "pass" => Some(Verdict::Pass),
            "unknown" => Some(Verdict::Unknown),
            "drift" => Some(Verdict::Drift),
            "fail" => Some(Verdict::Fail),
            _ => None,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much memory figures may differ. See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerances {
    #[serde(default = "default_memory_percent")]
    pub memory_percent: f64,
    #[serde(default = "default_memory_bytes", deserialize_with = "crate::verify::bytes")]
    pub memory_bytes: u64,
}

/// More slack than a tebibyte would pass any machine we could meet.
const MAX_MEMORY_SLACK: u64 = 1 << 40;

fn default_memory_percent() -> f64 {
    5.0
}
fn default_memory_bytes() -> u64 {
    512 << 20
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances { memory_percent: default_memory_percent(), memory_bytes: default_memory_bytes() }
    }
}

impl Tolerances {
    /// `[verify.tolerance]`: a share of memory within 0–100 %, an absolute slack of at most 1 TiB.
    pub fn validate(&self, problems: &mut metalfleet_common::config::bounds::Problems) {
        problems.number("memory_percent", self.memory_percent, 0.0..=100.0);
        problems.size("memory_bytes", self.memory_bytes, 0..=MAX_MEMORY_SLACK);
    }

    /// How far below `reference` a memory figure may be and still count as the same memory.
    pub fn memory_slack(&self, reference: u64) -> u64 {
        let share = (reference as f64 * self.memory_percent / 100.0) as u64;
        share.max(self.memory_bytes)
    }
}

/// A machine's hardware as one source saw it (MAAS commissioning, the agent, or an accepted baseline).
/// Kept as JSON in the store (the store's format, not an API).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Specs {
    pub logical_cpus: u32,
    pub memory_bytes: u64,
    /// Empty when the source does not say (MAAS does not report the model).
    #[serde(default)]
    pub cpu_model: String,
    pub disks: Vec<Disk>,
    /// Physical interfaces only.
    pub nics: Vec<Nic>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    pub name: String,
    pub size_bytes: u64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub serial: String,
    /// `None` when the source does not say (MAAS).
    #[serde(default)]
    pub rotational: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    pub mac: String,
    /// 0 when unknown.
    pub speed_mbps: u64,
}

/// What a field's figures are measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    Mbps,
    Text,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "count",
            Unit::Bytes => "bytes",
            Unit::Mbps => "mbps",
            Unit::Text => "text",
        }
    }
}

/// One source's figures for a field: numbers (a count, bytes, one size per disk...) or a text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    pub numbers: Vec<u64>,
    pub text: Option<String>,
}

impl Observed {
    fn one(n: u64) -> Observed {
        Observed { numbers: vec![n], text: None }
    }
    fn many(numbers: Vec<u64>) -> Observed {
        Observed { numbers, text: None }
    }
    fn text(text: &str) -> Observed {
        Observed { numbers: Vec::new(), text: Some(text.to_string()) }
    }
}

/// The verdict on one field of one machine.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldVerdict {
    /// `logical_cpus`, `memory`, `cpu_model`, `disk_count`, `disk_sizes`, `nic_count`, `nic_speeds`.
    pub field: String,
    pub unit: Unit,
    /// The rule, for people: `>= 4`, `>= 12884901888 bytes`...; `None` when the profile says nothing.
    pub expected: Option<String>,
    /// The minimum as a number, where the rule has one.
    pub expected_min: Option<u64>,
    pub commissioned: Option<Observed>,
    pub live: Option<Observed>,
    pub verdict: Verdict,
    /// Why it is not `pass`; empty when it is.
    pub reason: String,
}

/// The verdicts on every field: `expected` (the profile, if any) against `commissioned` (the baseline, if any)
/// and `live` (the agent's inventory, if any), one rule per field in [`FIELDS`]' order.
pub fn check(
    expected: Option<&SpecProfile>,
    commissioned: Option<&Specs>,
    live: Option<&Specs>,
    tolerances: &Tolerances,
) -> Vec<FieldVerdict> {
    let none = SpecProfile::default();
    let input = Inputs { profile: expected.unwrap_or(&none), commissioned, live, tolerances };
    let mut out = Vec::new();
    for rule in FIELDS {
        rule(&input, &mut out);
    }
    out
}

/// The rules, in the order `fleetctl verify` shows their fields.
const FIELDS: &[fn(&Inputs<'_>, &mut Vec<FieldVerdict>)] =
    &[check_logical_cpus, check_memory, check_cpu_model, check_disks, check_nics];

/// What every rule reads.
#[derive(Clone, Copy)]
struct Inputs<'a> {
    profile: &'a SpecProfile,
    commissioned: Option<&'a Specs>,
    live: Option<&'a Specs>,
    tolerances: &'a Tolerances,
}

/// Logical CPUs: at least the minimum, and exactly as commissioned.
fn check_logical_cpus(input: &Inputs<'_>, out: &mut Vec<FieldVerdict>) {
    let Inputs { profile, commissioned, live, .. } = *input;
    let mut field =
        Field::new("logical_cpus", Unit::Count, commissioned, live, |s| Observed::one(s.logical_cpus.into()));
    if let Some(min) = profile.min_logical_cpus {
        field.expect(format!(">= {min}"), Some(min.into()));
        for (source, specs) in field.sources(commissioned, live) {
            if specs.logical_cpus < min {
                field.fail(format!(
                    "{source} has {} logical CPUs, the profile needs at least {min}",
                    specs.logical_cpus
                ));
            }
        }
    }
    if let (Some(c), Some(l)) = (commissioned, live)
        && c.logical_cpus != l.logical_cpus
    {
        field.drift(format!("live has {} logical CPUs, commissioned {}", l.logical_cpus, c.logical_cpus));
    }
    out.push(field.finish());
}

/// Memory: at least the minimum (less the OS's share), and no DIMM gone since commissioning.
fn check_memory(input: &Inputs<'_>, out: &mut Vec<FieldVerdict>) {
    let Inputs { profile, commissioned, live, tolerances } = *input;
    let mut field = Field::new("memory", Unit::Bytes, commissioned, live, |s| Observed::one(s.memory_bytes));
    if let Some(min) = profile.min_memory {
        field.expect(format!(">= {}", format_size(min)), Some(min));
        let floor = min.saturating_sub(tolerances.memory_slack(min));
        for (source, specs) in field.sources(commissioned, live) {
            if specs.memory_bytes < floor {
                field.fail(format!(
                    "{source} has {} of memory, below the profile's {} less the tolerance ({})",
                    format_size(specs.memory_bytes),
                    format_size(min),
                    format_size(floor)
                ));
            }
        }
    }
    if let (Some(c), Some(l)) = (commissioned, live) {
        let slack = tolerances.memory_slack(c.memory_bytes);
        if l.memory_bytes.abs_diff(c.memory_bytes) > slack {
            field.drift(format!(
                "live has {} of memory, commissioned {} (tolerance {})",
                format_size(l.memory_bytes),
                format_size(c.memory_bytes),
                format_size(slack)
            ));
        }
    }
    out.push(field.finish());
}

/// CPU model: only when the profile asks; MAAS does not report it, so a baseline without one is fine.
fn check_cpu_model(input: &Inputs<'_>, out: &mut Vec<FieldVerdict>) {
    let Inputs { profile, commissioned, live, .. } = *input;
    if let Some(model) = &profile.cpu_model {
        let mut field = Field::new("cpu_model", Unit::Text, commissioned, live, |s| Observed::text(&s.cpu_model));
        field.expect(format!("contains {model:?}"), None);
        let wanted = model.to_lowercase();
        for (source, specs) in field.sources(commissioned, live) {
            if !specs.cpu_model.is_empty() && !specs.cpu_model.to_lowercase().contains(&wanted) {
                field.fail(format!("{source} CPU is {:?}, the profile needs {model:?}", specs.cpu_model));
            }
        }
        if let (Some(c), Some(l)) = (commissioned, live)
            && !c.cpu_model.is_empty()
            && c.cpu_model != l.cpu_model
        {
            field.drift(format!("live CPU is {:?}, commissioned {:?}", l.cpu_model, c.cpu_model));
        }
        out.push(field.finish());
    }
}

/// Disks: how many, and their sizes (and kinds, where the source knows them).
fn check_disks(input: &Inputs<'_>, out: &mut Vec<FieldVerdict>) {
    let Inputs { profile, commissioned, live, .. } = *input;
    let needed: u32 = profile.disks.iter().map(|d| d.count).sum();
    let mut count = Field::new("disk_count", Unit::Count, commissioned, live, |s| Observed::one(s.disks.len() as u64));
    let mut sizes =
        Field::new("disk_sizes", Unit::Bytes, commissioned, live, |s| Observed::many(sorted_sizes(&s.disks)));
    if !profile.disks.is_empty() {
        count.expect(format!(">= {needed}"), Some(needed.into()));
        let rule: Vec<String> = profile
            .disks
            .iter()
            .map(|d| {
                let size = d.min_size.map(|s| format!(" of >= {}", format_size(s))).unwrap_or_default();
                let kind = match d.kind {
                    DiskKind::Any => "",
                    DiskKind::Ssd => " ssd",
                    DiskKind::Hdd => " hdd",
                };
                format!("{}{size}{kind}", d.count)
            })
            .collect();
        sizes.expect(rule.join(" + "), profile.disks.iter().filter_map(|d| d.min_size).min());
        for (source, specs) in count.sources(commissioned, live) {
            if (specs.disks.len() as u64) < u64::from(needed) {
                count.fail(format!("{source} has {} disks, the profile needs at least {needed}", specs.disks.len()));
            } else if let Some(missing) = unmet_disks(profile, &specs.disks) {
                sizes.fail(format!("{source} disks do not meet the profile: {missing}"));
            }
        }
    }
    if let (Some(c), Some(l)) = (commissioned, live) {
        if c.disks.len() != l.disks.len() {
            count.drift(format!("live has {} disks, commissioned {}", l.disks.len(), c.disks.len()));
        } else {
            let pairs = sorted_sizes(&c.disks).into_iter().zip(sorted_sizes(&l.disks));
            for (was, now) in pairs {
                if !same_size(was, now) {
                    sizes.drift(format!(
                        "a disk of {} ({was} bytes) at commissioning is {} ({now} bytes) live",
                        format_size(was),
                        format_size(now)
                    ));
                    break;
                }
            }
        }
    }
    out.push(count.finish());
    out.push(sizes.finish());
}

/// NICs: how many physical ones, and none slower than commissioned or than the profile wants.
fn check_nics(input: &Inputs<'_>, out: &mut Vec<FieldVerdict>) {
    let Inputs { profile, commissioned, live, .. } = *input;
    let mut count = Field::new("nic_count", Unit::Count, commissioned, live, |s| Observed::one(s.nics.len() as u64));
    let mut speeds =
        Field::new("nic_speeds", Unit::Mbps, commissioned, live, |s| Observed::many(sorted_speeds(&s.nics)));
    if let Some(nics) = &profile.nics {
        count.expect(format!(">= {}", nics.count), Some(nics.count.into()));
        if let Some(speed) = nics.min_speed_mbps {
            speeds.expect(format!("{} of >= {speed} Mbit/s", nics.count), Some(speed.into()));
        }
        for (source, specs) in count.sources(commissioned, live) {
            if (specs.nics.len() as u64) < u64::from(nics.count) {
                count.fail(format!(
                    "{source} has {} NICs, the profile needs at least {}",
                    specs.nics.len(),
                    nics.count
                ));
            }
            if let Some(speed) = nics.min_speed_mbps {
                let fast = specs.nics.iter().filter(|n| n.speed_mbps >= u64::from(speed)).count();
                if (fast as u64) < u64::from(nics.count) {
                    speeds.fail(format!(
                        "{source} has {fast} NICs of at least {speed} Mbit/s, the profile needs {}",
                        nics.count
                    ));
                }
            }
        }
    }
    if let (Some(c), Some(l)) = (commissioned, live) {
        if c.nics.len() != l.nics.len() {
            count.drift(format!("live has {} NICs, commissioned {}", l.nics.len(), c.nics.len()));
        }
        for (was, now) in sorted_speeds(&c.nics).into_iter().zip(sorted_speeds(&l.nics)) {
            // 0 means the kernel does not know; that is not a slower link.
            if now > 0 && now < was {
                speeds.drift(format!("a NIC at {was} Mbit/s when commissioned is at {now} Mbit/s live"));
                break;
            }
        }
    }
    out.push(count.finish());
    out.push(speeds.finish());
}

/// The worst verdict of `fields`; `Unknown` for none.
pub fn overall(fields: &[FieldVerdict]) -> Verdict {
    fields.iter().map(|f| f.verdict).max().unwrap_or(Verdict::Unknown)
}

/// Whether two disk sizes agree within [`DISK_SIZE_PERCENT`].
pub fn same_size(a: u64, b: u64) -> bool {
    let larger = a.max(b) as f64;
    (a.abs_diff(b) as f64) <= larger * DISK_SIZE_PERCENT / 100.0
}

fn sorted_sizes(disks: &[Disk]) -> Vec<u64> {
    let mut sizes: Vec<u64> = disks.iter().map(|d| d.size_bytes).collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes
}

fn sorted_speeds(nics: &[Nic]) -> Vec<u64> {
    let mut speeds: Vec<u64> = nics.iter().map(|n| n.speed_mbps).collect();
    speeds.sort_unstable_by(|a, b| b.cmp(a));
    speeds
}

/// Assigns disks to the profile's requirements, strictest first; says what is missing, if anything.
/// A disk of unknown kind (MAAS) satisfies any kind; the size allows [`DISK_SIZE_PERCENT`] below the minimum.
fn unmet_disks(profile: &SpecProfile, disks: &[Disk]) -> Option<String> {
    let mut free: Vec<&Disk> = disks.iter().collect();
    free.sort_by_key(|d| d.size_bytes);
    let mut requirements: Vec<_> = profile.disks.iter().collect();
    requirements.sort_by_key(|r| (r.kind == DiskKind::Any, std::cmp::Reverse(r.min_size)));
    let mut missing = Vec::new();
    for requirement in requirements {
        for _ in 0..requirement.count {
            let fits = |d: &&Disk| {
                let size_ok =
                    requirement.min_size.is_none_or(|min| d.size_bytes >= min || same_size(d.size_bytes, min));
                let kind_ok = match (requirement.kind, d.rotational) {
                    (DiskKind::Any, _) | (_, None) => true,
                    (DiskKind::Ssd, Some(rotational)) => !rotational,
                    (DiskKind::Hdd, Some(rotational)) => rotational,
                };
                size_ok && kind_ok
            };
            match free.iter().position(fits) {
                Some(index) => {
                    free.remove(index);
                }
                None => {
                    let size = requirement.min_size.map(|s| format!(" of >= {}", format_size(s))).unwrap_or_default();
                    missing.push(format!("a {:?} disk{size}", requirement.kind).to_lowercase());
                }
            }
        }
    }
    (!missing.is_empty()).then(|| format!("no {}", missing.join(", no ")))
}

/// One field's verdict while it is being decided.
struct Field {
    verdict: FieldVerdict,
    reasons: Vec<String>,
}

impl Field {
    fn new(
        name: &str,
        unit: Unit,
        commissioned: Option<&Specs>,
        live: Option<&Specs>,
        observe: impl Fn(&Specs) -> Observed,
    ) -> Field {
        let (verdict, reason) = match (commissioned, live) {
            (_, None) => (Verdict::Unknown, "the agent has not reported an inventory yet".to_string()),
            (None, Some(_)) => {
                (Verdict::Unknown, "no commissioned baseline: the machine is not matched to MAAS yet".to_string())
            }
            _ => (Verdict::Pass, String::new()),
        };
        Field {
            verdict: FieldVerdict {
                field: name.to_string(),
                unit,
                expected: None,
                expected_min: None,
                commissioned: commissioned.map(&observe),
                live: live.map(&observe),
                verdict,
                reason,
            },
            reasons: Vec::new(),
        }
    }

    fn expect(&mut self, rule: String, min: Option<u64>) {
        self.verdict.expected = Some(rule);
        self.verdict.expected_min = min;
    }

    fn sources<'a>(&self, commissioned: Option<&'a Specs>, live: Option<&'a Specs>) -> Vec<(&'static str, &'a Specs)> {
        let mut sources = Vec::new();
        if let Some(c) = commissioned {
            sources.push(("commissioned", c));
        }
        if let Some(l) = live {
            sources.push(("live", l));
        }
        sources
    }

    fn worsen(&mut self, verdict: Verdict, reason: String) {
        self.verdict.verdict = self.verdict.verdict.max(verdict);
        self.reasons.push(reason);
    }

    fn fail(&mut self, reason: String) {
        self.worsen(Verdict::Fail, reason);
    }

    fn drift(&mut self, reason: String) {
        self.worsen(Verdict::Drift, reason);
    }

    fn finish(mut self) -> FieldVerdict {
        if !self.reasons.is_empty() {
            self.verdict.reason = self.reasons.join("; ");
        }
        self.verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{DiskRequirement, NicRequirement};

    const GIB: u64 = 1 << 30;

    fn specs() -> Specs {
        Specs {
            logical_cpus: 4,
            memory_bytes: 16 * GIB,
            cpu_model: "Intel Xeon E3".into(),
            disks: vec![Disk {
                name: "sda".into(),
                size_bytes: 500_000_000_000,
                rotational: Some(false),
                ..Default::default()
            }],
            nics: vec![Nic { name: "eno1".into(), mac: "52:54:00:00:00:01".into(), speed_mbps: 1000 }],
        }
    }

    fn profile() -> SpecProfile {
        SpecProfile {
            min_logical_cpus: Some(4),
            min_memory: Some(16 * GIB),
            cpu_model: Some("xeon".into()),
            disks: vec![DiskRequirement { count: 1, min_size: Some(500_000_000_000), kind: DiskKind::Ssd }],
            nics: Some(NicRequirement { count: 1, min_speed_mbps: Some(1000) }),
        }
    }

    /// Checks the verdict of each named field; fields not named must pass.
    fn check_fields(
        expected: Option<&SpecProfile>,
        commissioned: Option<&Specs>,
        live: Option<&Specs>,
        want: &[(&str, Verdict)],
    ) -> Vec<FieldVerdict> {
        let fields = check(expected, commissioned, live, &Tolerances::default());
        for field in &fields {
            let wanted = want.iter().find(|(name, _)| *name == field.field).map(|(_, v)| *v).unwrap_or(Verdict::Pass);
            assert_eq!(field.verdict, wanted, "{}: {field:?}", field.field);
        }
        fields
    }

    #[test]
    fn everything_as_expected_passes() {
        let fields = check_fields(Some(&profile()), Some(&specs()), Some(&specs()), &[]);
        assert_eq!(overall(&fields), Verdict::Pass);
        assert_eq!(
            fields.iter().map(|f| f.field.as_str()).collect::<Vec<_>>(),
            ["logical_cpus", "memory", "cpu_model", "disk_count", "disk_sizes", "nic_count", "nic_speeds"]
        );
    }

    #[test]
    fn below_the_profile_fails() {
        let mut small = specs();
        small.logical_cpus = 2;
        small.memory_bytes = 8 * GIB;
        small.disks[0].size_bytes = 100_000_000_000;
        let fields = check_fields(
            Some(&profile()),
            Some(&small),
            Some(&small),
            &[("logical_cpus", Verdict::Fail), ("memory", Verdict::Fail), ("disk_sizes", Verdict::Fail)],
        );
        assert_eq!(overall(&fields), Verdict::Fail);
        assert!(fields[0].reason.contains("commissioned has 2 logical CPUs"), "{}", fields[0].reason);
    }

    #[test]
    fn memory_as_the_os_sees_it_is_within_tolerance() {
        let mut live = specs();
        live.memory_bytes = 16 * GIB - 700 * (1 << 20); // 4.3 % short: fine.
        check_fields(Some(&profile()), Some(&specs()), Some(&live), &[]);
        live.memory_bytes = 15 * GIB - GIB / 2; // 9 % short: a DIMM is gone, and it is below the profile.
        check_fields(Some(&profile()), Some(&specs()), Some(&live), &[("memory", Verdict::Fail)]);
        check_fields(None, Some(&specs()), Some(&live), &[("memory", Verdict::Drift)]);
        // A small machine gets the 512 MiB floor rather than 5 % of little.
        let tiny = Tolerances::default();
        assert_eq!(tiny.memory_slack(GIB), 512 << 20);
        assert_eq!(tiny.memory_slack(100 * GIB), 5 * GIB);
    }

    #[test]
    fn a_lost_disk_is_drift_not_fail_when_the_profile_still_holds() {
        let mut commissioned = specs();
        commissioned.disks.push(Disk { name: "sdb".into(), size_bytes: 500_000_000_000, ..Default::default() });
        let fields =
            check_fields(Some(&profile()), Some(&commissioned), Some(&specs()), &[("disk_count", Verdict::Drift)]);
        assert_eq!(overall(&fields), Verdict::Drift);
        assert_eq!(fields[3].reason, "live has 1 disks, commissioned 2");
    }

    #[test]
    fn disk_sizes_allow_one_percent() {
        let mut live = specs();
        live.disks[0].size_bytes = 496_000_000_000; // 0.8 % smaller
        check_fields(Some(&profile()), Some(&specs()), Some(&live), &[]);
        live.disks[0].size_bytes = 480_000_000_000; // 4 % smaller: another disk, and too small
        check_fields(Some(&profile()), Some(&specs()), Some(&live), &[("disk_sizes", Verdict::Fail)]);
        check_fields(None, Some(&specs()), Some(&live), &[("disk_sizes", Verdict::Drift)]);
    }

    #[test]
    fn disk_kind_is_checked_where_known() {
        let mut live = specs();
        live.disks[0].rotational = Some(true);
        check_fields(Some(&profile()), Some(&specs()), Some(&live), &[("disk_sizes", Verdict::Fail)]);
        let mut maas = specs();
        maas.disks[0].rotational = None;
        check_fields(Some(&profile()), Some(&maas), Some(&specs()), &[]);
    }

    #[test]
    fn a_slower_nic_is_drift_and_unknown_speed_is_not() {
        let mut live = specs();
        live.nics[0].speed_mbps = 100;
        check_fields(None, Some(&specs()), Some(&live), &[("nic_speeds", Verdict::Drift)]);
        check_fields(Some(&profile()), Some(&specs()), Some(&live), &[("nic_speeds", Verdict::Fail)]);
        live.nics[0].speed_mbps = 0;
        check_fields(None, Some(&specs()), Some(&live), &[]);
        live.nics.clear();
        check_fields(None, Some(&specs()), Some(&live), &[("nic_count", Verdict::Drift)]);
    }

    #[test]
    fn cpu_model_is_a_case_insensitive_substring() {
        let mut live = specs();
        live.cpu_model = "AMD EPYC".into();
        let mut maas = specs();
        maas.cpu_model = String::new();
        check_fields(Some(&profile()), Some(&maas), Some(&live), &[("cpu_model", Verdict::Fail)]);
        check_fields(Some(&profile()), Some(&maas), Some(&specs()), &[]);
    }

    #[test]
    fn missing_data_is_unknown_with_a_reason() {
        let fields = check(Some(&profile()), Some(&specs()), None, &Tolerances::default());
        assert!(fields.iter().all(|f| f.verdict == Verdict::Unknown), "{fields:?}");
        assert_eq!(fields[0].reason, "the agent has not reported an inventory yet");
        let fields = check(None, None, Some(&specs()), &Tolerances::default());
        assert_eq!(overall(&fields), Verdict::Unknown);
        assert!(fields[0].reason.contains("not matched to MAAS"));
        // A commissioned spec already below the profile fails even before the agent reports.
        let mut small = specs();
        small.logical_cpus = 1;
        let fields = check(Some(&profile()), Some(&small), None, &Tolerances::default());
        assert_eq!(overall(&fields), Verdict::Fail);
    }

    #[test]
    fn worst_verdict_wins() {
        assert!(
            Verdict::Fail > Verdict::Drift && Verdict::Drift > Verdict::Unknown && Verdict::Unknown > Verdict::Pass
        );
        assert_eq!(overall(&[]), Verdict::Unknown);
        for verdict in [Verdict::Pass, Verdict::Unknown, Verdict::Drift, Verdict::Fail] {
            assert_eq!(Verdict::parse(verdict.as_str()), Some(verdict));
        }
    }
}
