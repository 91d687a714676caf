//! The reconciliation task: every `[lab] reconcile_interval`, compares the router and MAAS with the last applied
//! plan. A forward that disappeared is re-applied or reported, as the plan says; a DHCP server other than MAAS's
//! own (seen by the probe from MAIN, or in MAAS's `external_dhcp` on the VLAN) raises an event at once.
//!
//! A condition that lasts is reported once, when it appears, and once more when it goes (`*_gone`, or
//! `forward_restored`): the task remembers the active [`Finding`]s between passes, and across restarts in
//! `<state_dir>/lab-reconcile.json`, so a rogue server that stays for a day is one event, not one per pass.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ::store::StateDir;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::diff::forward_of;
use super::file::ReconcileMode;
use super::{live, store};
use crate::domain::NewEvent;
use crate::maas;
use crate::poller::EventSink;

/// The hostname recorded on lab events.
pub const LAB_EVENT_HOST: &str = "lab";

/// What the task needs.
pub struct Reconciler {
    pub state_dir: PathBuf,
    pub maas: Option<maas::Client>,
    pub events: Arc<dyn EventSink>,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Which read a finding comes from. A pass that could not make a read (MAAS or the shim unreachable, the probe
/// failed) says nothing about that read's findings, so they stay as they were instead of being reported gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The DHCP probe from MAIN.
    Probe,
    /// MAAS's VLAN (`external_dhcp`).
    Maas,
    /// The router's state through the shim.
    Router,
}

/// One lasting condition, keyed so that the same cause is the same finding from pass to pass.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// The probe saw a DHCP server other than MAAS's own (per server identifier and MAC).
    Rogue { interface: String, server: String, mac: String },
    /// MAAS reports a foreign DHCP server on the plan's VLAN.
    Foreign { vlan: String, server: String },
    /// A planned forward is missing on the router and was not (or could not be) re-applied.
    ForwardMissing { name: String },
}

/// A finding that appeared or went since the previous pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Appeared(Finding),
    Gone(Finding),
}

/// What one pass observed: the sources it could read, and the findings among them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub sources: BTreeSet<Source>,
    pub findings: BTreeSet<Finding>,
}

/// What the task remembers between passes (and restarts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// The findings already reported as appeared and not yet as gone.
    pub active: BTreeSet<Finding>,
    /// MAAS's rack addresses on the plan's subnet, as last read: with MAAS unreachable for a pass, MAAS's own DHCP
    /// offers are still recognised as MAAS's.
    #[serde(default)]
    pub maas_ips: Vec<String>,
}

impl Finding {
    /// Where the finding comes from.
    pub fn source(&self) -> Source {
        match self {
            Finding::Rogue { .. } => Source::Probe,
            Finding::Foreign { .. } => Source::Maas,
            Finding::ForwardMissing { .. } => Source::Router,
        }
    }

    /// The event kind when it appears.
    pub fn appeared_kind(&self) -> &'static str {
        match self {
            Finding::Rogue { .. } => "dhcp_rogue",
            Finding::Foreign { .. } => "dhcp_foreign",
            Finding::ForwardMissing { .. } => "forward_missing",
        }
    }

    /// The event kind when it goes, and its message.
    pub fn gone(&self) -> (&'static str, String) {
        match self {
            Finding::Rogue { interface, server, mac } => {
                ("dhcp_rogue_gone", format!("the DHCP server {server} (mac {mac}) no longer answers on {interface}"))
            }
            Finding::Foreign { vlan, server } => {
                ("dhcp_foreign_gone", format!("MAAS no longer reports the foreign DHCP server {server} on VLAN {vlan}"))
            }
            Finding::ForwardMissing { name } => ("forward_restored", format!("forward {name} is on the router again")),
        }
    }
}

/// The pure heart of the dedupe: the changes from `previous` to this pass, and what to remember next.
///
/// A finding of a source this pass read is active exactly when observed now; a finding of a source this pass
/// could not read stays as it was.
pub fn changes(previous: &BTreeSet<Finding>, observed: &Observed) -> (Vec<Change>, BTreeSet<Finding>) {
    let read = |f: &Finding| observed.sources.contains(&f.source());
    let mut next: BTreeSet<Finding> = previous.iter().filter(|f| !read(f)).cloned().collect();
    next.extend(observed.findings.iter().filter(|f| read(f)).cloned());
    let mut out: Vec<Change> = next.difference(previous).cloned().map(Change::Appeared).collect();
    out.extend(previous.difference(&next).cloned().map(Change::Gone));
    (out, next)
}

impl Memory {
    /// The memory stored in `state_dir`; empty when absent or unreadable (then every lasting condition is reported
    /// once more, which is the safe side).
    pub fn load(state_dir: &Path) -> Memory {
        ::store::lab::load_reconcile(&StateDir::new(state_dir))
    }

    /// Stores the memory atomically; a failure is logged (the memory still holds for this run).
    pub fn save(&self, state_dir: &Path) {
        ::store::lab::save_reconcile(&StateDir::new(state_dir), self);
    }
}

fn event(kind: &str, message: String) -> NewEvent {
    NewEvent {
        at: Utc::now(),
        machine_id: String::new(),
        hostname: LAB_EVENT_HOST.to_string(),
        kind: kind.to_string(),
        message,
        from_health: None,
        to_health: None,
    }
}

impl Reconciler {
    /// Runs until `stop` is cancelled. Cancel-safe: a pass in flight is dropped.
    pub async fn run(self, stop: CancellationToken) {
        let mut memory = Memory::load(&self.state_dir);
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.once(&mut memory).await,
            }
        }
    }

    /// One pass; the findings that appeared or went become events, and `memory` (also stored) moves on.
    pub async fn once(&self, memory: &mut Memory) {
        let Some(applied) = store::load(&self.state_dir) else {
            if *memory != Memory::default() {
                *memory = Memory::default();
                memory.save(&self.state_dir);
            }
            return;
        };
        let mut observed = Observed::default();
        // Messages for findings that appear now, with this pass's evidence.
        let mut details: BTreeMap<Finding, String> = BTreeMap::new();
        // Forwards re-applied this pass: their own event says it, so no `forward_restored` too.
        let mut reapplied: BTreeSet<String> = BTreeSet::new();
        let mut maas_ips = memory.maas_ips.clone();
        if let (Some(client), Some(subnet)) = (&self.maas, &applied.subnet) {
            match client.subnets().await {
                Ok(subnets) => {
                    if let Some(vlan) = subnets.iter().find(|s| s.cidr == subnet.cidr).and_then(|s| s.vlan.clone()) {
                        observed.sources.insert(Source::Maas);
                        let where_ = format!("{}/{}", vlan.fabric, vlan.name);
                        if let Some(external) = vlan.external_dhcp.filter(|e| !e.is_empty()) {
                            let finding = Finding::Foreign { vlan: where_.clone(), server: external.clone() };
                            let message = format!("MAAS reports a foreign DHCP server {external} on VLAN {where_}");
                            details.insert(finding.clone(), message);
                            observed.findings.insert(finding);
                        }
                        if let Ok(racks) = client.rack_controllers().await {
                            maas_ips = racks
                                .iter()
                                .flat_map(|r| r.ip_addresses.iter())
                                .filter(|ip| super::cidr_contains(&subnet.cidr, ip))
                                .cloned()
                                .collect();
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "reconcile: MAAS unreachable; trying again next pass"),
            }
        }
        if let Some(router) = &applied.router {
            match live::connect_router(router, &self.state_dir, self.timeout).await {
                Ok(mut shim) => match shim.state().await {
                    Ok(state) => {
                        observed.sources.insert(Source::Router);
                        for forward in &router.forwards {
                            let want = forward_of(forward);
                            if state.forward(&forward.name).is_some_and(|f| f.same_rule(&want)) {
                                continue;
                            }
                            let finding = Finding::ForwardMissing { name: forward.name.clone() };
                            let message = match forward.reconcile {
                                ReconcileMode::Reapply => {
                                    match shim.ensure_forwards(std::slice::from_ref(&want)).await {
                                        Ok(_) => {
                                            // An action taken, reported every time it is taken.
                                            self.events.emit(event(
                                                "forward_reapplied",
                                                format!(
                                                    "forward {} was missing on the router and was re-applied",
                                                    forward.name
                                                ),
                                            ));
                                            reapplied.insert(forward.name.clone());
                                            continue;
                                        }
                                        Err(error) => format!(
                                            "forward {} is missing and re-applying it failed: {error}",
                                            forward.name
                                        ),
                                    }
                                }
                                ReconcileMode::Report => {
                                    format!("forward {} is missing on the router (reconcile = report)", forward.name)
                                }
                            };
                            details.insert(finding.clone(), message);
                            observed.findings.insert(finding);
                        }
                    }
                    Err(error) => tracing::warn!(%error, "reconcile: cannot read the router"),
                },
                Err(error) => tracing::warn!(%error, "reconcile: router shim unreachable"),
            }
            let maas_dhcp = applied.subnet.as_ref().is_some_and(|s| s.dhcp);
            match &router.probe_interface {
                // MAAS serves DHCP but its address was never learnt: its own offers cannot be told apart yet.
                Some(_) if maas_dhcp && maas_ips.is_empty() => {
                    tracing::warn!("reconcile: MAAS's rack address is unknown; the DHCP probe waits for MAAS");
                }
                Some(interface) => match super::apply::probe_on(interface, router.probe_window).await {
                    Ok(report) => {
                        observed.sources.insert(Source::Probe);
                        for offer in super::apply::offers_not_from(&report.offers, &maas_ips) {
                            let finding = Finding::Rogue {
                                interface: interface.clone(),
                                server: offer.server_identifier.to_string(),
                                mac: if offer.source_mac.is_empty() {
                                    "unknown".into()
                                } else {
                                    offer.source_mac.clone()
                                },
                            };
                            let message = format!(
                                "a DHCP server other than MAAS answers on {interface}: {}",
                                super::apply::describe_offers(std::slice::from_ref(&offer))
                            );
                            details.insert(finding.clone(), message);
                            observed.findings.insert(finding);
                        }
                    }
                    Err(reason) => tracing::warn!(%reason, "reconcile: the DHCP probe could not run"),
                },
                None => {}
            }
        }
        let (found, next) = changes(&memory.active, &observed);
        for change in found {
            match change {
                Change::Appeared(finding) => {
                    let message = details.remove(&finding).unwrap_or_else(|| format!("{finding:?}"));
                    self.events.emit(event(finding.appeared_kind(), message));
                }
                Change::Gone(Finding::ForwardMissing { name }) if reapplied.contains(&name) => {}
                Change::Gone(finding) => {
                    let (kind, message) = finding.gone();
                    self.events.emit(event(kind, message));
                }
            }
        }
        let next = Memory { active: next, maas_ips };
        if next != *memory {
            *memory = next;
            memory.save(&self.state_dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rogue(server: &str, mac: &str) -> Finding {
        Finding::Rogue { interface: "lan0".into(), server: server.into(), mac: mac.into() }
    }

    fn foreign(server: &str) -> Finding {
        Finding::Foreign { vlan: "fabric-0/untagged".into(), server: server.into() }
    }

    fn missing(name: &str) -> Finding {
        Finding::ForwardMissing { name: name.into() }
    }

    fn observed(sources: &[Source], findings: &[Finding]) -> Observed {
        Observed { sources: sources.iter().copied().collect(), findings: findings.iter().cloned().collect() }
    }

    const ALL: &[Source] = &[Source::Probe, Source::Maas, Source::Router];

    /// Runs `passes` from an empty memory; returns every change, pass by pass.
    fn check(passes: &[Observed], expected: &[Vec<Change>]) {
        let mut active = BTreeSet::new();
        let mut got = Vec::new();
        for pass in passes {
            let (found, next) = changes(&active, pass);
            got.push(found);
            active = next;
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn a_lasting_rogue_is_reported_once_then_gone_once() {
        let r = rogue("172.16.0.60", "aa:bb:cc:dd:ee:60");
        let with = observed(ALL, std::slice::from_ref(&r));
        let without = observed(ALL, &[]);
        check(
            &[without.clone(), with.clone(), with.clone(), with, without.clone(), without],
            &[vec![], vec![Change::Appeared(r.clone())], vec![], vec![], vec![Change::Gone(r)], vec![]],
        );
    }

    #[test]
    fn each_distinct_server_is_its_own_finding() {
        let a = rogue("172.16.0.60", "aa:bb:cc:dd:ee:60");
        let b = rogue("172.16.0.61", "aa:bb:cc:dd:ee:61");
        let same_ip_other_mac = rogue("172.16.0.60", "aa:bb:cc:dd:ee:99");
        check(
            &[
                observed(ALL, std::slice::from_ref(&a)),
                observed(ALL, &[a.clone(), b.clone()]),
                observed(ALL, &[b.clone(), same_ip_other_mac.clone()]),
            ],
            &[
                vec![Change::Appeared(a.clone())],
                vec![Change::Appeared(b)],
                vec![Change::Appeared(same_ip_other_mac), Change::Gone(a)],
            ],
        );
    }

    #[test]
    fn a_source_not_read_this_pass_keeps_its_findings() {
        let r = rogue("172.16.0.60", "aa:bb:cc:dd:ee:60");
        let f = foreign("172.16.0.60");
        let m = missing("ssh-main");
        let everything = observed(ALL, &[r.clone(), f.clone(), m.clone()]);
        // MAAS and the router unreachable, the probe failed: nothing is reported gone, nothing again.
        let blind = observed(&[], &[]);
        let probe_only = observed(&[Source::Probe], &[]);
        check(
            &[everything.clone(), blind, everything, probe_only],
            &[
                vec![Change::Appeared(r.clone()), Change::Appeared(f), Change::Appeared(m)],
                vec![],
                vec![],
                vec![Change::Gone(r)],
            ],
        );
    }

    #[test]
    fn a_missing_forward_is_reported_once_until_it_is_back() {
        let m = missing("ssh-main");
        let gone = observed(&[Source::Router], std::slice::from_ref(&m));
        let back = observed(&[Source::Router], &[]);
        check(
            &[gone.clone(), gone.clone(), gone, back.clone(), back],
            &[vec![Change::Appeared(m.clone())], vec![], vec![], vec![Change::Gone(m)], vec![]],
        );
    }

    #[test]
    fn gone_events_have_their_own_kinds() {
        assert_eq!(rogue("172.16.0.60", "aa:bb:cc:dd:ee:60").gone().0, "dhcp_rogue_gone");
        assert_eq!(foreign("172.16.0.60").gone().0, "dhcp_foreign_gone");
        assert_eq!(missing("ssh-main").gone().0, "forward_restored");
        let (_, message) = rogue("172.16.0.60", "aa:bb:cc:dd:ee:60").gone();
        assert!(message.contains("172.16.0.60") && message.contains("aa:bb:cc:dd:ee:60"), "{message}");
    }

    #[test]
    fn memory_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Memory::load(dir.path()), Memory::default());
        let memory = Memory {
            active: [rogue("172.16.0.60", "aa:bb:cc:dd:ee:60"), foreign("172.16.0.9"), missing("ssh-main")]
                .into_iter()
                .collect(),
            maas_ips: vec!["172.16.0.3".into()],
        };
        memory.save(dir.path());
        assert_eq!(Memory::load(dir.path()), memory);
        std::fs::write(StateDir::new(dir.path()).lab_reconcile(), "not json").unwrap();
        assert_eq!(Memory::load(dir.path()), Memory::default());
    }
}
