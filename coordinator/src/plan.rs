//! The lab as code: `lab.toml` compared with live MAAS and the router, applied in a safe order, exported,
//! destroyed, reconciled, and reported on.
//!
//! Layout:
//! - [`file`]: the plan file's schema and its checks.
//! - [`live`]: one read of everything the plan talks about (MAAS and, through the shim, the router).
//! - [`diff`]: desired vs live as ordered [`PlanStep`]s, pure, so every rule is unit-tested without a MAAS.
//! - [`apply`]: runs the steps with progress, stops at the first failure and says what is left.
//! - [`export`], [`report`], [`reconcile`]: the live lab as a plan file, the evidence report, the background check.
//! - [`store`]: the last applied plan.
//!
//! Safety invariant: MAAS DHCP is never switched on by `apply` before the router's DHCP was switched off AND a
//! DHCP probe from MAIN's side of the segment saw nobody answer; [`diff::plan`] always puts that check before the
//! step, and [`apply`] stops at the check's failure.

pub mod apply;
pub mod destroy;
pub mod diff;
pub mod export;
pub mod live;
pub mod reconcile;
pub mod report;
pub mod store;

use std::fmt;
use std::time::Duration;

use metalfleet_common::config::bounds::{Problems, limits};
use serde::Deserialize;

pub use diff::{Op, plan};
pub use model::plan::{Action, Change, LabFile, file};

/// `[lab]` in the coordinator's config.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabConfig {
    /// How often the reconciliation task compares router and MAAS with the last applied plan.
    #[serde(with = "humantime_serde", default = "default_reconcile_interval")]
    pub reconcile_interval: Duration,
    /// How long `apply` waits for image imports and commissioning before it stops.
    #[serde(with = "humantime_serde", default = "default_wait_timeout")]
    pub wait_timeout: Duration,
    /// How often `apply` polls MAAS while it waits.
    #[serde(with = "humantime_serde", default = "default_wait_poll")]
    pub wait_poll: Duration,
}

fn default_reconcile_interval() -> Duration {
    Duration::from_secs(300)
}

fn default_wait_timeout() -> Duration {
    Duration::from_secs(3600)
}

fn default_wait_poll() -> Duration {
    Duration::from_secs(2)
}

impl LabConfig {
    /// `[lab]`: waits and intervals that neither spin against MAAS nor wait past a day.
    pub fn validate(&self, problems: &mut Problems) {
        problems.duration("reconcile_interval", self.reconcile_interval, MIN_RECONCILE_INTERVAL..=limits::DAY);
        problems.duration("wait_timeout", self.wait_timeout, Duration::from_secs(1)..=limits::DAY);
        problems.duration("wait_poll", self.wait_poll, limits::MIN_POLL..=Duration::from_secs(3600));
        if self.wait_poll > self.wait_timeout {
            problems.push("wait_poll", "is above `wait_timeout`; a wait would end before its first poll");
        }
    }
}

/// Reconciliation reads MAAS and the router each time; more often than this only loads them.
const MIN_RECONCILE_INTERVAL: Duration = Duration::from_secs(1);

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            reconcile_interval: default_reconcile_interval(),
            wait_timeout: default_wait_timeout(),
            wait_poll: default_wait_poll(),
        }
    }
}

/// One line of a plan: what, on which object, and the change in words.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanStep {
    pub action: Action,
    /// The object class: `router_dhcp`, `ip_range`, `maas_dhcp`, `upstream_dns`, `image`, `ssh_key`, ...
    pub kind: String,
    /// e.g. `create ip range 172.16.11.1-172.16.14.255 (dynamic)`.
    pub summary: String,
    /// What [`apply`] does for it; `None` for steps that only inform.
    pub op: Option<Op>,
}

impl PlanStep {
    /// The step as operators see it (without its op, which stays on the server).
    pub fn change(&self) -> Change {
        Change { action: self.action, kind: self.kind.clone(), summary: self.summary.clone() }
    }
}

impl fmt::Display for PlanStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action.symbol(), self.summary)
    }
}

/// A computed plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<PlanStep>,
}

impl Plan {
    /// The number of steps that change something.
    pub fn changes(&self) -> usize {
        self.steps.iter().filter(|s| s.action.is_change()).count()
    }
}

/// Why a plan could not be computed or applied.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    File(#[from] file::FileError),
    #[error("MAAS is not configured on this coordinator; add a [maas] table to its config")]
    NoMaas,
    /// MAAS failed, not the coordinator: the message names MAAS and its URL, whatever the cause.
    #[error("MAAS at {url} failed while reading {what}: {source}")]
    Maas {
        what: &'static str,
        /// The API root the coordinator talks to (`[maas] url`).
        url: String,
        /// Boxed so every `Result<_, PlanError>` stays small.
        #[source]
        source: Box<crate::maas::Error>,
    },
    #[error("the router shim at {address} is unreachable or failed: {message}")]
    Router { address: String, message: String },
    #[error("subnet {cidr} is not known to MAAS; MAAS creates subnets from the rack's interfaces, so check the cidr")]
    NoSubnet { cidr: String },
    #[error("no rack controller has an interface on the VLAN of {cidr}; MAAS DHCP needs one as primary rack")]
    NoRack { cidr: String },
    #[error("cannot store the applied plan in {path}: {source}; check the state directory")]
    Store {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The IPv4 `cidr` contains `ip`.
pub fn cidr_contains(cidr: &str, ip: &str) -> bool {
    let Some((net, bits)) = cidr.split_once('/') else { return false };
    let (Ok(net), Ok(bits), Ok(ip)) =
        (net.parse::<std::net::Ipv4Addr>(), bits.parse::<u32>(), ip.parse::<std::net::Ipv4Addr>())
    else {
        return false;
    };
    if bits > 32 {
        return false;
    }
    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
    u32::from(net) & mask == u32::from(ip) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_membership() {
        assert!(cidr_contains("172.16.0.0/20", "172.16.15.3"));
        assert!(!cidr_contains("172.16.0.0/20", "172.16.16.1"));
        assert!(cidr_contains("0.0.0.0/0", "8.8.8.8"));
        assert!(!cidr_contains("garbage", "1.2.3.4"));
    }

    #[test]
    fn actions_round_trip() {
        for a in [Action::Create, Action::Update, Action::Delete, Action::Check, Action::Unchanged] {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert!(Action::Create.is_change() && !Action::Check.is_change() && !Action::Unchanged.is_change());
    }
}
