//! The health rules, as pure functions: a sample against thresholds, and silence against an interval.
//!
//! The fleet state ([`crate::fleet`]) applies them on each heartbeat and on a periodic tick. The thresholds
//! are `[health]` in the coordinator's config; this module owns that section and its `validate()`.

use std::time::Duration;

use metalfleet_common::config::bounds::Problems;
use serde::Deserialize;

use crate::domain::{Health, Sample};

/// When a machine counts as degraded.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthThresholds {
    /// A filesystem more used than this is a problem.
    #[serde(default = "default_disk_used_percent")]
    pub disk_used_percent: f64,
    /// Less available memory than this share of the total is a problem.
    #[serde(default = "default_memory_available_percent")]
    pub memory_available_percent: f64,
    /// A one-minute load per logical CPU above this is a problem.
    #[serde(default = "default_load_per_cpu")]
    pub load_per_cpu: f64,
    /// Missed intervals before a machine is unreachable.
    #[serde(default = "default_missed_heartbeats")]
    pub missed_heartbeats: u32,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        HealthThresholds {
            disk_used_percent: default_disk_used_percent(),
            memory_available_percent: default_memory_available_percent(),
            load_per_cpu: default_load_per_cpu(),
            missed_heartbeats: default_missed_heartbeats(),
        }
    }
}

impl HealthThresholds {
    /// `[health]`: percentages within 0–100, a positive finite load, at least one missed heartbeat.
    pub fn validate(&self, problems: &mut Problems) {
        problems.number("disk_used_percent", self.disk_used_percent, 0.0..=100.0);
        problems.number("memory_available_percent", self.memory_available_percent, 0.0..=100.0);
        problems.number("load_per_cpu", self.load_per_cpu, MIN_LOAD_PER_CPU..=MAX_LOAD_PER_CPU);
        problems.number("missed_heartbeats", self.missed_heartbeats, 1..=MAX_MISSED_HEARTBEATS);
    }
}

const MIN_LOAD_PER_CPU: f64 = 0.01;
const MAX_LOAD_PER_CPU: f64 = 100_000.0;
const MAX_MISSED_HEARTBEATS: u32 = 1000;

fn default_disk_used_percent() -> f64 {
    90.0
}
fn default_memory_available_percent() -> f64 {
    5.0
}
fn default_load_per_cpu() -> f64 {
    2.0
}
fn default_missed_heartbeats() -> u32 {
    3
}

/// What a sample says about a machine: healthy, or degraded with one reason per failing rule.
pub fn evaluate_sample(sample: &Sample, thresholds: &HealthThresholds) -> (Health, Vec<String>) {
    let mut reasons = Vec::new();
    for fs in &sample.filesystems {
        if let Some(used) = fs.used_percent()
            && used > thresholds.disk_used_percent
        {
            reasons.push(format!(
                "filesystem {} is {used:.1}% used (over {}%)",
                fs.mount_point, thresholds.disk_used_percent
            ));
        }
    }
    if sample.memory_total_bytes > 0 {
        let available = sample.memory_available_bytes as f64 * 100.0 / sample.memory_total_bytes as f64;
        if available < thresholds.memory_available_percent {
            reasons
                .push(format!("memory available is {available:.1}% (under {}%)", thresholds.memory_available_percent));
        }
    }
    if sample.logical_cpus > 0 {
        let per_cpu = sample.load1 / f64::from(sample.logical_cpus);
        if per_cpu > thresholds.load_per_cpu {
            reasons
                .push(format!("load1 {:.2} is {per_cpu:.2} per CPU (over {})", sample.load1, thresholds.load_per_cpu));
        }
    }
    if reasons.is_empty() { (Health::Healthy, reasons) } else { (Health::Degraded, reasons) }
}

/// How long a machine may stay silent before it is unreachable: `missed` of its intervals.
pub fn silence_limit(interval_ms: u32, thresholds: &HealthThresholds) -> Duration {
    Duration::from_millis(u64::from(interval_ms.max(1))) * thresholds.missed_heartbeats
}

/// The reason recorded when a machine goes silent.
pub fn unreachable_reason(silent_for: Duration, interval_ms: u32, thresholds: &HealthThresholds) -> String {
    format!(
        "no heartbeat for {:.1}s, over {} intervals of {:.1}s",
        silent_for.as_secs_f64(),
        thresholds.missed_heartbeats,
        f64::from(interval_ms) / 1000.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FilesystemUsage;

    const GIB: u64 = 1 << 30;

    fn check(sample: Sample, thresholds: HealthThresholds, expected: (Health, &[&str])) {
        let (health, reasons) = evaluate_sample(&sample, &thresholds);
        let reasons: Vec<&str> = reasons.iter().map(String::as_str).collect();
        assert_eq!((health, reasons.as_slice()), expected);
    }

    fn fine() -> Sample {
        Sample {
            load1: 0.5,
            logical_cpus: 4,
            memory_total_bytes: 16 * GIB,
            memory_available_bytes: 8 * GIB,
            filesystems: vec![FilesystemUsage {
                mount_point: "/".into(),
                total_bytes: 100 * GIB,
                available_bytes: 50 * GIB,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_quiet_machine_is_healthy() {
        check(fine(), HealthThresholds::default(), (Health::Healthy, &[]));
    }

    #[test]
    fn a_full_disk_degrades() {
        let mut sample = fine();
        sample.filesystems[0].available_bytes = 5 * GIB;
        check(sample, HealthThresholds::default(), (Health::Degraded, &["filesystem / is 95.0% used (over 90%)"]));
    }

    #[test]
    fn exactly_at_the_threshold_is_still_healthy() {
        let mut sample = fine();
        sample.filesystems[0].available_bytes = 10 * GIB;
        sample.load1 = 8.0;
        check(sample, HealthThresholds::default(), (Health::Healthy, &[]));
    }

    #[test]
    fn low_memory_and_high_load_give_two_reasons() {
        let mut sample = fine();
        sample.memory_available_bytes = GIB / 2;
        sample.load1 = 9.0;
        check(
            sample,
            HealthThresholds::default(),
            (Health::Degraded, &["memory available is 3.1% (under 5%)", "load1 9.00 is 2.25 per CPU (over 2)"]),
        );
    }

    #[test]
    fn thresholds_are_configurable() {
        let strict = HealthThresholds { disk_used_percent: 40.0, ..Default::default() };
        check(fine(), strict, (Health::Degraded, &["filesystem / is 50.0% used (over 40%)"]));
    }

    #[test]
    fn missing_figures_are_not_problems() {
        check(Sample::default(), HealthThresholds::default(), (Health::Healthy, &[]));
    }

    #[test]
    fn silence_limit_is_missed_intervals() {
        assert_eq!(silence_limit(5000, &HealthThresholds::default()), Duration::from_secs(15));
        let two = HealthThresholds { missed_heartbeats: 2, ..Default::default() };
        assert_eq!(silence_limit(250, &two), Duration::from_millis(500));
    }
}
