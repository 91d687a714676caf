//! The coordinator's verification loop, and the handle the VerifyService uses.
//!
//! One pass: match agents to MAAS machines (set `system_id`, report conflicts once), record first baselines,
//! verify every machine and turn verdict changes into events (`spec_failed`, `spec_drift`, `spec_ok`), then
//! re-evaluate the lost-node verdicts (probing only machines whose agent is silent). A pass runs every
//! `[verify] interval`, and at once when an inventory changes, an agent enrolls or the MAAS view changes.
//! Passes are serialised by a mutex, so an operator's Verify and the loop never interleave.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub use model::verify::{NodeVerdict, Rematched};

use super::{
    Baseline, BaselineSource, Inputs, MachineReport, Verdict, VerifyConfig, VerifySources, is_commissioned, kinds,
    reports, specs_from_inventory, specs_from_maas,
};
use crate::domain::NewEvent;
use crate::fleet::Fleet;
use crate::matching::{self, AgentFacts, MaasFacts, Outcome};
use crate::reachability::{self, MaasState, Reach};
use crate::store::StoreError;

/// Why an operator's verification call failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no machine is named {0:?}; use a hostname, machine id or system_id from `fleetctl verify`")]
    NoSuchMachine(String),
    #[error("{0} is not matched to a MAAS machine; baselines are kept per MAAS machine (see `fleetctl machines list`)")]
    NotMatched(String),
    #[error("{0}")]
    NoData(String),
}

/// Shared by the loop and the VerifyService. Cheap to clone.
#[derive(Clone)]
pub struct VerifyHandle {
    inner: Arc<Shared>,
}

struct Shared {
    fleet: Arc<Fleet>,
    store: Arc<dyn VerifySources>,
    config: VerifyConfig,
    /// Held for a whole pass; the state only passes need.
    pass: tokio::sync::Mutex<PassState>,
    nodes: Mutex<Vec<NodeVerdict>>,
}

#[derive(Default)]
struct PassState {
    /// The conflict last reported per agent machine id, so each is an event once.
    conflicts: HashMap<String, String>,
}

impl VerifyHandle {
    pub fn new(fleet: Arc<Fleet>, store: Arc<dyn VerifySources>, config: VerifyConfig) -> VerifyHandle {
        VerifyHandle {
            inner: Arc::new(Shared {
                fleet,
                store,
                config,
                pass: tokio::sync::Mutex::new(PassState::default()),
                nodes: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn config(&self) -> &VerifyConfig {
        &self.inner.config
    }

    /// The lost-node verdicts of the last pass, by hostname.
    pub fn node_verdicts(&self) -> Vec<NodeVerdict> {
        self.inner.nodes.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Runs one pass now and returns every machine's verification.
    ///
    /// # Errors
    /// The store failed.
    pub async fn pass(&self) -> Result<Vec<MachineReport>, StoreError> {
        let mut state = self.inner.pass.lock().await;
        self.run_pass(&mut state).await
    }

    /// Records a new baseline for `name` from `source` (default: live when the agent reported, else MAAS's
    /// current commissioning data), with an event; returns the machine verified against it.
    ///
    /// # Errors
    /// No such machine, not matched to MAAS, no data from that source, or a store failure.
    pub async fn accept(
        &self,
        name: &str,
        source: Option<BaselineSource>,
        by: &str,
    ) -> Result<(MachineReport, BaselineSource), VerifyError> {
        let mut state = self.inner.pass.lock().await;
        let rows = self.run_pass(&mut state).await?;
        let row = rows.iter().find(|r| r.is_named(name)).ok_or_else(|| VerifyError::NoSuchMachine(name.into()))?;
        let system_id = row.system_id.clone().ok_or_else(|| VerifyError::NotMatched(row.hostname.clone()))?;
        let store = &self.inner.store;
        let inventory = match &row.machine_id {
            Some(id) => store.inventory(id).await?,
            None => None,
        };
        let source =
            source.unwrap_or(if inventory.is_some() { BaselineSource::Live } else { BaselineSource::Commissioned });
        let specs = match source {
            BaselineSource::Live => specs_from_inventory(&inventory.ok_or_else(|| {
                VerifyError::NoData(format!(
                    "{} has no agent inventory to accept; wait for its agent, or accept --from commissioned",
                    row.hostname
                ))
            })?),
            BaselineSource::Commissioned => {
                let maas = store.maas_machines().await?;
                let m =
                    maas.iter().find(|m| m.system_id == system_id).filter(|m| is_commissioned(m)).ok_or_else(|| {
                        VerifyError::NoData(format!(
                            "MAAS has no commissioning data for {}; commission it first",
                            row.hostname
                        ))
                    })?;
                specs_from_maas(m)
            }
        };
        let now = Utc::now();
        store
            .replace_baseline(Baseline {
                system_id: system_id.clone(),
                hostname: row.hostname.clone(),
                specs,
                source,
                recorded_at: now,
                recorded_by: by.to_string(),
            })
            .await?;
        self.emit(
            row.machine_id.as_deref().unwrap_or(&system_id),
            &row.hostname,
            kinds::BASELINE_ACCEPTED,
            format!("{}: new baseline from {} data, accepted by {by}", row.hostname, source.as_str()),
        );
        let rows = self.run_pass(&mut state).await?;
        let row = rows.into_iter().find(|r| r.system_id.as_deref() == Some(&system_id));
        Ok((row.ok_or_else(|| VerifyError::NoSuchMachine(name.into()))?, source))
    }

    /// Forgets `name`'s MAAS match and matches it again at once.
    ///
    /// # Errors
    /// No such enrolled machine, or a store failure.
    pub async fn rematch(&self, name: &str) -> Result<Rematched, VerifyError> {
        let view = self.inner.fleet.machine(name, 0).await.map_err(|_| VerifyError::NoSuchMachine(name.into()))?;
        let machine = view.machine;
        let mut state = self.inner.pass.lock().await;
        self.inner.store.set_system_id(&machine.id, None).await?;
        self.inner.fleet.set_system_id(&machine.id, None);
        state.conflicts.remove(&machine.id);
        self.run_pass(&mut state).await?;
        let now = self.inner.store.machine(&machine.id).await?.and_then(|m| m.system_id);
        let outcome = match (&machine.system_id, &now) {
            (_, None) => state
                .conflicts
                .get(&machine.id)
                .cloned()
                .unwrap_or_else(|| "no MAAS machine has its MACs or hostname".to_string()),
            (Some(before), Some(after)) if before == after => format!("matched to {after} again"),
            (Some(before), Some(after)) => format!("matched to {after} (was {before})"),
            (None, Some(after)) => format!("matched to {after}"),
        };
        Ok(Rematched { machine_id: machine.id, hostname: machine.hostname, system_id: now, outcome })
    }

    fn emit(&self, machine_id: &str, hostname: &str, kind: &str, message: String) {
        self.inner.fleet.publish(NewEvent {
            at: Utc::now(),
            machine_id: machine_id.to_string(),
            hostname: hostname.to_string(),
            kind: kind.to_string(),
            message,
            from_health: None,
            to_health: None,
        });
    }

    async fn run_pass(&self, state: &mut PassState) -> Result<Vec<MachineReport>, StoreError> {
        let store = &self.inner.store;
        let mut inputs = super::load_inputs(store.as_ref()).await?;
        self.match_agents(state, &mut inputs).await?;

        for m in inputs.maas.iter().filter(|m| is_commissioned(m)) {
            if inputs.baselines.iter().any(|b| b.system_id == m.system_id) {
                continue;
            }
            let baseline = Baseline {
                system_id: m.system_id.clone(),
                hostname: m.hostname.clone(),
                specs: specs_from_maas(m),
                source: BaselineSource::Commissioned,
                recorded_at: Utc::now(),
                recorded_by: "poller".to_string(),
            };
            if store.record_first_baseline(baseline.clone()).await? {
                tracing::info!(system_id = %m.system_id, hostname = %m.hostname, "commissioned baseline recorded");
            }
            inputs.baselines.push(baseline);
        }

        let rows = reports(&inputs, &self.inner.config.tolerance);
        let last = store.last_verdicts().await?;
        let now = Utc::now();
        for row in &rows {
            let key = row.key();
            let before = last.get(&key).copied();
            if before == Some(row.verdict) {
                continue;
            }
            store.set_last_verdict(&key, row.verdict, now).await?;
            let kind = match (before, row.verdict) {
                (_, Verdict::Fail) => Some(kinds::SPEC_FAILED),
                (_, Verdict::Drift) => Some(kinds::SPEC_DRIFT),
                (Some(Verdict::Fail | Verdict::Drift), Verdict::Pass) => Some(kinds::SPEC_OK),
                _ => None,
            };
            if let Some(kind) = kind {
                let why = if row.reason.is_empty() { String::new() } else { format!(": {}", row.reason) };
                let id = row.machine_id.clone().unwrap_or_else(|| key.clone());
                self.emit(&id, &row.hostname, kind, format!("{} spec {}{why}", row.hostname, row.verdict));
            }
        }

        self.evaluate_nodes(&inputs).await;
        Ok(rows)
    }

    async fn match_agents(&self, state: &mut PassState, inputs: &mut Inputs) -> Result<(), StoreError> {
        if inputs.maas.is_empty() {
            return Ok(());
        }
        let agents: Vec<AgentFacts> = inputs
            .agents
            .iter()
            .map(|a| AgentFacts {
                machine_id: a.id.clone(),
                hostname: a.hostname.clone(),
                macs: a.mac_addresses.clone(),
                system_id: a.system_id.clone(),
            })
            .collect();
        let maas: Vec<MaasFacts> = inputs
            .maas
            .iter()
            .map(|m| MaasFacts {
                system_id: m.system_id.clone(),
                hostname: m.hostname.clone(),
                macs: m.interfaces.iter().map(|i| i.mac_address.clone()).collect(),
            })
            .collect();
        for (index, outcome) in matching::match_agents(&agents, &maas).into_iter().enumerate() {
            let agent = &mut inputs.agents[index];
            match outcome {
                Outcome::Matched { system_id, by, .. } => {
                    state.conflicts.remove(&agent.id);
                    // Once matched, MAAS's hostname is the machine's name (an agent never renames it).
                    if let Some(maas) = inputs.maas.iter().find(|m| m.system_id == system_id)
                        && !maas.hostname.is_empty()
                        && maas.hostname != agent.hostname
                    {
                        let old = agent.hostname.clone();
                        if self.inner.store.rename_machine(&agent.id, &maas.hostname).await? {
                            self.inner.fleet.set_hostname(&agent.id, &maas.hostname);
                            agent.hostname = maas.hostname.clone();
                            let message =
                                format!("{old} is called {} in MAAS (machine {system_id}); renamed", maas.hostname);
                            tracing::info!(machine_id = %agent.id, "{message}");
                            self.emit(&agent.id, &agent.hostname, kinds::RENAMED, message);
                        } else if !state.conflicts.contains_key(&agent.id) {
                            let message = format!(
                                "{old} is called {} in MAAS (machine {system_id}), but another machine has that name; \
                                 `fleetctl machines forget` the stale one",
                                maas.hostname
                            );
                            tracing::warn!(machine_id = %agent.id, "{message}");
                            self.emit(&agent.id, &agent.hostname, kinds::MATCH_CONFLICT, message.clone());
                            state.conflicts.insert(agent.id.clone(), message);
                        }
                    }
                    if agent.system_id.as_deref() == Some(system_id.as_str()) {
                        continue;
                    }
                    self.inner.store.set_system_id(&agent.id, Some(system_id.clone())).await?;
                    self.inner.fleet.set_system_id(&agent.id, Some(system_id.clone()));
                    tracing::info!(machine_id = %agent.id, %system_id, by = by.as_str(), "agent matched to MAAS");
                    self.emit(
                        &agent.id,
                        &agent.hostname,
                        kinds::MATCHED,
                        format!("{} matched to MAAS machine {system_id} by {}", agent.hostname, by.as_str()),
                    );
                    agent.system_id = Some(system_id);
                }
                Outcome::Conflict { message, .. } => {
                    if state.conflicts.get(&agent.id) != Some(&message) {
                        tracing::warn!(machine_id = %agent.id, "{message}");
                        self.emit(&agent.id, &agent.hostname, kinds::MATCH_CONFLICT, message.clone());
                        state.conflicts.insert(agent.id.clone(), message);
                    }
                }
                Outcome::Unmatched { .. } => {}
            }
        }
        Ok(())
    }

    async fn evaluate_nodes(&self, inputs: &Inputs) {
        let reach_config = &self.inner.config.reachability;
        let views = self.inner.fleet.machines();
        let probes = views.iter().map(|view| {
            let machine = &view.machine;
            let maas = machine.system_id.as_ref().and_then(|sid| inputs.maas.iter().find(|m| &m.system_id == sid));
            let state =
                maas.map(|m| MaasState { status_name: m.status_name.clone(), power_state: m.power_state.clone() });
            let target = reach_config.target(
                maas.map(|m| m.hostname.as_str()).unwrap_or(&machine.hostname),
                maas.map(|m| m.ip_addresses.as_slice()).unwrap_or_default(),
            );
            let target = match (target, reach_config.targets.get(&machine.hostname)) {
                (Err(_), Some(addr)) => Ok(*addr),
                (target, _) => target,
            };
            let probe_needed = reachability::needs_probe(machine.health, state.as_ref());
            async move {
                let reach = if probe_needed {
                    reachability::probe(target, reach_config.timeout).await
                } else {
                    Reach::NotChecked
                };
                let verdict = reachability::lost_node(machine.health, state.as_ref(), &reach);
                NodeVerdict {
                    machine_id: machine.id.clone(),
                    hostname: machine.hostname.clone(),
                    system_id: machine.system_id.clone(),
                    verdict: verdict.verdict,
                    reason: verdict.reason,
                    health: machine.health,
                    maas_status: state.as_ref().map(|s| s.status_name.clone()).unwrap_or_default(),
                    power_state: state.as_ref().map(|s| s.power_state.clone()).unwrap_or_default(),
                    reachability: reach.as_str().to_string(),
                    evaluated_at: Utc::now(),
                }
            }
        });
        let fresh: Vec<NodeVerdict> = futures::future::join_all(probes).await;
        let before: HashMap<String, String> =
            self.node_verdicts().into_iter().map(|n| (n.machine_id, n.verdict)).collect();
        for node in &fresh {
            if let Some(old) = before.get(&node.machine_id)
                && old != &node.verdict
            {
                let why = if node.reason.is_empty() { String::new() } else { format!(" ({})", node.reason) };
                self.emit(
                    &node.machine_id,
                    &node.hostname,
                    kinds::NODE_VERDICT,
                    format!("{}: {} (was {old}){why}", node.hostname, node.verdict),
                );
            }
        }
        *self.inner.nodes.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
    }
}

/// Runs passes until `stop` is cancelled: every interval, and at once on the changes that matter.
pub fn spawn(handle: VerifyHandle, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let fleet = handle.inner.fleet.clone();
        let mut events = fleet.subscribe();
        let mut tick = tokio::time::interval(handle.inner.config.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tracing::info!(interval = ?handle.inner.config.interval, "verification started");
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
                _ = fleet.inventory_changes().notified() => {}
                received = events.recv() => match received {
                    Ok(event) if triggers_pass(&event.kind) => {}
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
            }
            let pass = tokio::select! {
                _ = stop.cancelled() => break,
                pass = handle.pass() => pass,
            };
            if let Err(error) = pass {
                tracing::warn!(%error, "verification pass failed; trying again on the next tick");
            }
        }
        tracing::info!("verification stopped");
    })
}

fn triggers_pass(kind: &str) -> bool {
    use crate::domain::kinds as core;
    [
        core::ENROLLED,
        core::HEALTH_CHANGED,
        core::MAAS_STATUS_CHANGED,
        core::MAAS_MACHINE_ADDED,
        core::MAAS_MACHINE_REMOVED,
        core::MAAS_REACHABLE,
    ]
    .contains(&kind)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::maas::{MaasInterface, MaasMachine};
    use crate::domain::{BlockDevice, Enrollment, Event, Inventory};
    use crate::fleet::FleetSettings;
    use crate::health::HealthThresholds;
    use crate::store::{MaasStore, SqliteStore, Store};
    use crate::verify::VerifyStore;

    fn maas_machine(sid: &str, hostname: &str, mac: &str) -> MaasMachine {
        MaasMachine {
            interfaces: vec![MaasInterface { name: "eno1".into(), mac_address: mac.into(), link_speed_mbps: 0 }],
            ..MaasMachine::deployed_for_tests(sid, hostname)
        }
    }

    fn inventory(disks: usize) -> Inventory {
        Inventory {
            logical_cpus: 4,
            memory_total_bytes: (16 << 30) - (300 << 20),
            disks: (0..disks)
                .map(|i| BlockDevice { name: format!("sd{i}"), size_bytes: 500_000_000_000, ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    async fn setup() -> (tempfile::TempDir, Arc<SqliteStore>, Arc<Fleet>, VerifyHandle, CancellationToken) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path(), 10).unwrap());
        let settings = FleetSettings {
            thresholds: HealthThresholds::default(),
            heartbeat_interval: Duration::from_secs(1),
            write_queue: 16,
            evaluate_every: Duration::from_secs(3600),
            history_samples: 10,
        };
        let stop = CancellationToken::new();
        let (fleet, _tasks) = Fleet::start(store.clone(), settings, stop.clone()).await.unwrap();
        let handle = VerifyHandle::new(fleet.clone(), store.clone(), VerifyConfig::default());
        (dir, store, fleet, handle, stop)
    }

    async fn enroll(fleet: &Fleet, agent: &str, hostname: &str, mac: &str) -> String {
        let enrollment = Enrollment {
            agent_id: agent.into(),
            hostname: hostname.into(),
            mac_addresses: vec![mac.into()],
            agent_version: "t".into(),
        };
        fleet.enroll(enrollment, crate::store::Takeover::default()).await.unwrap().id
    }

    /// The kinds of the next events on `events` until one of `last` kind arrives (with a deadline).
    async fn kinds_until(events: &mut tokio::sync::broadcast::Receiver<Event>, last: &str) -> Vec<String> {
        let mut kinds = Vec::new();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
            kinds.push(event.kind.clone());
            if event.kind == last {
                return kinds;
            }
        }
    }

    #[tokio::test]
    async fn a_pass_matches_records_the_baseline_and_reports_drift_then_accept_clears_it() {
        let (_dir, store, fleet, handle, stop) = setup().await;
        let mut events = fleet.subscribe();
        let now = Utc::now();
        store.record_maas_poll(vec![maas_machine("aaa", "server1", "52:54:00:00:00:01")], vec![], now).await.unwrap();
        let id = enroll(&fleet, "agent-1", "whatever", "52:54:00:00:00:01").await;
        fleet.report_inventory(&id, inventory(0)).await.unwrap();

        let rows = handle.pass().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].verdict, rows[0].machine_id.as_deref()), (Verdict::Drift, Some(id.as_str())));
        assert_eq!(store.machine(&id).await.unwrap().unwrap().system_id.as_deref(), Some("aaa"));
        assert_eq!(fleet.machine("aaa", 0).await.unwrap().machine.id, id, "the fleet finds it by system_id");
        let kinds = kinds_until(&mut events, kinds::SPEC_DRIFT).await;
        assert!(kinds.contains(&kinds::MATCHED.to_string()), "{kinds:?}");

        // A second pass with nothing new emits nothing new; the baseline stays the commissioned one.
        handle.pass().await.unwrap();
        let baselines = store.baselines().await.unwrap();
        assert_eq!((baselines.len(), baselines[0].source), (1, BaselineSource::Commissioned));

        let (row, source) = handle.accept("server1", None, "admin").await.unwrap();
        assert_eq!((row.verdict, source), (Verdict::Pass, BaselineSource::Live));
        let kinds = kinds_until(&mut events, kinds::SPEC_OK).await;
        assert_eq!(kinds, [kinds::BASELINE_ACCEPTED, kinds::SPEC_OK], "no repeated drift event");
        assert!(matches!(handle.accept("nope", None, "admin").await, Err(VerifyError::NoSuchMachine(_))));
        stop.cancel();
    }

    #[tokio::test]
    async fn conflicts_are_reported_once_and_rematch_matches_again() {
        let (_dir, store, fleet, handle, stop) = setup().await;
        let mut events = fleet.subscribe();
        let machines = vec![
            maas_machine("aaa", "server1", "52:54:00:00:00:01"),
            maas_machine("bbb", "server2", "52:54:00:00:00:02"),
        ];
        store.record_maas_poll(machines, vec![], Utc::now()).await.unwrap();
        // MACs say server1, hostname says server2: never guessed.
        let id = enroll(&fleet, "agent-1", "server2", "52:54:00:00:00:01").await;
        handle.pass().await.unwrap();
        handle.pass().await.unwrap();
        assert_eq!(store.machine(&id).await.unwrap().unwrap().system_id, None);
        let kinds = kinds_until(&mut events, kinds::MATCH_CONFLICT).await;
        assert_eq!(kinds.iter().filter(|k| *k == kinds::MATCH_CONFLICT).count(), 1);

        // Enrolling again with the right hostname cannot rename it (an agent never renames its machine).
        let same = enroll(&fleet, "agent-1", "server1", "52:54:00:00:00:01").await;
        assert_eq!(same, id);
        assert_eq!(store.machine(&id).await.unwrap().unwrap().hostname, "server2");

        // Another agent, whose MACs and name agree, is matched; a rematch is not needed for a first match.
        store
            .record_maas_poll(
                vec![
                    maas_machine("aaa", "server1", "52:54:00:00:00:01"),
                    maas_machine("bbb", "server2", "52:54:00:00:00:02"),
                    maas_machine("ccc", "server3", "52:54:00:00:00:03"),
                ],
                vec![],
                Utc::now(),
            )
            .await
            .unwrap();
        let id = enroll(&fleet, "agent-3", "server3", "52:54:00:00:00:03").await;
        handle.pass().await.unwrap();
        assert_eq!(store.machine(&id).await.unwrap().unwrap().system_id.as_deref(), Some("ccc"));
        // Its NIC is replaced (a MAC MAAS does not know): the match stays until an explicit rematch.
        let id = enroll(&fleet, "agent-3", "server3", "52:54:00:00:99:99").await;
        handle.pass().await.unwrap();
        assert_eq!(store.machine(&id).await.unwrap().unwrap().system_id.as_deref(), Some("ccc"));
        let rematched = handle.rematch("server3").await.unwrap();
        assert_eq!(rematched.system_id.as_deref(), Some("ccc"));
        assert_eq!(rematched.outcome, "matched to ccc again");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_matched_machine_takes_its_maas_hostname_unless_another_machine_has_it() {
        let (_dir, store, fleet, handle, stop) = setup().await;
        let mut events = fleet.subscribe();
        let machines = vec![
            maas_machine("aaa", "server1", "52:54:00:00:00:01"),
            maas_machine("bbb", "server2", "52:54:00:00:00:02"),
        ];
        store.record_maas_poll(machines, vec![], Utc::now()).await.unwrap();
        // The agent reports its FQDN; MAAS calls the machine server1.
        let id = enroll(&fleet, "agent-1", "server1.lab.example", "52:54:00:00:00:01").await;
        handle.pass().await.unwrap();
        assert_eq!(store.machine(&id).await.unwrap().unwrap().hostname, "server1");
        assert_eq!(fleet.machine("server1", 0).await.unwrap().machine.id, id, "lookups by the new name work");
        kinds_until(&mut events, kinds::RENAMED).await;
        // A stale machine holds server2: the match is made, the name is not taken from it.
        let stale = enroll(&fleet, "agent-old", "server2", "52:54:00:00:00:99").await;
        let id2 = enroll(&fleet, "agent-2", "server2.lab.example", "52:54:00:00:00:02").await;
        handle.pass().await.unwrap();
        assert_eq!(store.machine(&id2).await.unwrap().unwrap().hostname, "server2.lab.example");
        assert_eq!(store.machine(&stale).await.unwrap().unwrap().hostname, "server2");
        stop.cancel();
    }
}
