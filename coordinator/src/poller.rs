//! The MAAS poller: keeps the store's view of every MAAS machine current, one `GET machines/` per poll.
//!
//! Each poll lists every machine in one call (never one read per machine), compares the list with the
//! machines it knows, writes only what changed plus the sync record in one transaction, and turns the
//! differences into events: `maas_status_changed` ("server2: Ready -> Deployed"), `maas_machine_added`,
//! `maas_machine_removed`. When a poll fails the stored view stays as it was, the sync record keeps the
//! error, and `maas_unreachable` is emitted once per outage; the next success emits `maas_reachable`.
//! A poll is bounded by [`Settings::poll_timeout`], so the client's retries cannot hold it forever, and the
//! poller keeps polling at its interval until its token is cancelled.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::domain::maas::{MaasDisk, MaasInterface, MaasMachine, MaasSyncStatus};
use crate::domain::{NewEvent, kinds};
use crate::fleet::Fleet;
use crate::maas::{self, MachineFilter, NodeStatus};
use crate::store::{MaasStore, StoreError};

/// The hostname recorded on events about MAAS itself (reachable, unreachable).
pub const MAAS_EVENT_HOST: &str = "maas";

/// How often to poll and how long one poll may take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub interval: Duration,
    /// The bound on one poll, retries included.
    pub poll_timeout: Duration,
}

impl Settings {
    /// The interval from `[maas] poll_interval`; a poll may take the longer of the interval and one request's
    /// timeout, so a slow MAAS still gets one full request and a dead one costs at most that.
    pub fn from_config(config: &maas::Config) -> Settings {
        Settings { interval: config.poll_interval, poll_timeout: config.poll_interval.max(config.request_timeout) }
    }
}

/// Where the poller's events go: the fleet, which stores them and streams them to WatchEvents.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: NewEvent);
}

impl EventSink for Fleet {
    fn emit(&self, event: NewEvent) {
        self.publish(event);
    }
}

/// Why one poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Maas(#[from] maas::Error),
    #[error("MAAS did not finish listing machines within {0:?}; check MAAS or raise `maas.request_timeout`")]
    TimedOut(Duration),
    #[error("cannot store the MAAS view")]
    Store(#[source] StoreError),
}

/// Why the poller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Maas(#[from] maas::Error),
    #[error("cannot read the stored MAAS view")]
    Store(#[from] StoreError),
}

/// What one successful poll did.
#[derive(Debug, Clone, PartialEq)]
pub struct PollReport {
    pub machines: usize,
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    /// List call plus store update.
    pub elapsed: Duration,
}

/// The poller's state between polls. Create it with [`Poller::new`], drive it with [`Poller::run`].
pub struct Poller {
    client: maas::Client,
    store: Arc<dyn MaasStore>,
    events: Arc<dyn EventSink>,
    settings: Settings,
    /// What the store holds, by system_id.
    known: HashMap<String, MaasMachine>,
    /// False between a failed poll and the next success (also across restarts, from the stored record).
    reachable: bool,
}

impl Poller {
    /// Loads the stored view, so a restart neither re-announces every machine nor a continuing outage.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn new(
        client: maas::Client,
        store: Arc<dyn MaasStore>,
        events: Arc<dyn EventSink>,
        settings: Settings,
    ) -> Result<Poller, StoreError> {
        let known = store.maas_machines().await?.into_iter().map(|m| (m.system_id.clone(), m)).collect();
        let reachable = store.maas_sync().await?.last_error.is_none();
        Ok(Poller { client, store, events, settings, known, reachable })
    }

    /// Lists every machine once, stores the differences and emits their events.
    ///
    /// # Errors
    /// The list failed or timed out (recorded in the sync record), or the store failed.
    ///
    /// # Cancel safety
    /// Dropping the future mid-poll loses nothing: `known` changes only after the store committed.
    pub async fn poll_once(&mut self) -> Result<PollReport, PollError> {
        let started = Instant::now();
        let now = Utc::now();
        let listed =
            match tokio::time::timeout(self.settings.poll_timeout, self.client.machines(&MachineFilter::default()))
                .await
            {
                Ok(Ok(listed)) => listed,
                Ok(Err(error)) => return Err(self.failed(now, PollError::Maas(error)).await),
                Err(_) => return Err(self.failed(now, PollError::TimedOut(self.settings.poll_timeout)).await),
            };
        let fresh: Vec<MaasMachine> = listed.iter().map(|m| from_maas(m, now)).collect();
        let diff = diff(&self.known, fresh);
        self.store
            .record_maas_poll(diff.upserts.clone(), diff.removed.iter().map(|m| m.system_id.clone()).collect(), now)
            .await
            .map_err(PollError::Store)?;

        if !self.reachable {
            self.reachable = true;
            tracing::info!("MAAS is reachable again");
            self.emit(now, "", MAAS_EVENT_HOST, kinds::MAAS_REACHABLE, "MAAS reachable again".to_string());
        }
        for (kind, machine, message) in &diff.events {
            self.emit(now, &machine.system_id, &machine.hostname, kind, message.clone());
        }
        let report = PollReport {
            machines: listed.len(),
            added: diff.added,
            changed: diff.upserts.len() - diff.added,
            removed: diff.removed.len(),
            elapsed: started.elapsed(),
        };
        for gone in diff.removed {
            self.known.remove(&gone.system_id);
        }
        for machine in diff.upserts {
            self.known.insert(machine.system_id.clone(), machine);
        }
        tracing::debug!(?report, "MAAS poll done");
        Ok(report)
    }

    /// Polls every interval until `stop` is cancelled. A failed poll is logged and the next tick tries again.
    pub async fn run(mut self, stop: CancellationToken) {
        tracing::info!(interval = ?self.settings.interval, url = %self.client.api_root(), "MAAS poller started");
        let mut tick = tokio::time::interval(self.settings.interval);
        // After a slow poll, wait a full interval rather than firing a burst at a struggling MAAS.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let was_reachable = self.reachable;
            let outcome = tokio::select! {
                _ = stop.cancelled() => break,
                outcome = self.poll_once() => outcome,
            };
            match outcome {
                Ok(_) => {}
                Err(error @ PollError::Store(_)) => {
                    tracing::error!(error = %error_text(&error), "MAAS poll not stored")
                }
                Err(error) if was_reachable => {
                    tracing::warn!(%error, "MAAS poll failed; keeping the last known state and polling on");
                }
                Err(error) => tracing::debug!(%error, "MAAS poll failed again"),
            }
        }
        tracing::info!("MAAS poller stopped");
    }

    async fn failed(&mut self, now: DateTime<Utc>, error: PollError) -> PollError {
        let text = error_text(&error);
        if let Err(store_error) = self.store.record_maas_failure(now, text.clone()).await {
            tracing::error!(error = %error_text(&store_error), "cannot record the failed MAAS poll");
        }
        if self.reachable {
            self.reachable = false;
            self.emit(now, "", MAAS_EVENT_HOST, kinds::MAAS_UNREACHABLE, format!("MAAS unreachable: {text}"));
        }
        error
    }

    fn emit(&self, at: DateTime<Utc>, machine_id: &str, hostname: &str, kind: &str, message: String) {
        self.events.emit(NewEvent {
            at,
            machine_id: machine_id.to_string(),
            hostname: hostname.to_string(),
            kind: kind.to_string(),
            message,
            from_health: None,
            to_health: None,
        });
    }
}

/// Builds the client from `config` (reading the API key file), loads the stored view and spawns the poller,
/// which stops when `stop` is cancelled.
///
/// # Errors
/// The key file is missing or not a key, or the store cannot be read.
pub async fn start(
    client: maas::Client,
    config: &maas::Config,
    store: Arc<dyn MaasStore>,
    events: Arc<dyn EventSink>,
    stop: CancellationToken,
) -> Result<(MaasView, JoinHandle<()>), StartError> {
    let settings = Settings::from_config(config);
    let poller = Poller::new(client, store.clone(), events, settings).await?;
    let handle = tokio::spawn(poller.run(stop));
    Ok((MaasView::new(store, settings.interval), handle))
}

/// The operators' read side of the MAAS view.
#[derive(Clone)]
pub struct MaasView {
    store: Arc<dyn MaasStore>,
    poll_interval: Duration,
}

impl MaasView {
    pub fn new(store: Arc<dyn MaasStore>, poll_interval: Duration) -> MaasView {
        MaasView { store, poll_interval }
    }

    /// Every stored MAAS machine (by hostname) and how fresh the view is at `now`.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn snapshot(&self, now: DateTime<Utc>) -> Result<(Vec<MaasMachine>, MaasSyncStatus), StoreError> {
        let machines = self.store.maas_machines().await?;
        let sync = self.store.maas_sync().await?;
        Ok((machines, sync.status(now, self.poll_interval)))
    }
}

/// The stored form of a listed machine; `now` becomes its `updated_at` if it is new or changed.
pub fn from_maas(m: &maas::Machine, now: DateTime<Utc>) -> MaasMachine {
    let hardware = m.hardware();
    let status_name = match m.status {
        NodeStatus::Unknown(_) if !m.status_name.is_empty() => m.status_name.clone(),
        status => status.label().to_string(),
    };
    MaasMachine {
        system_id: m.system_id.clone(),
        hostname: m.hostname.clone(),
        status: m.status.as_int(),
        status_name,
        power_state: m.power_state.as_str().to_string(),
        owner: m.owner.clone().filter(|o| !o.is_empty()),
        ip_addresses: m.ip_addresses.clone(),
        tags: m.tag_names.clone(),
        zone: m.zone.as_ref().map(|z| z.name.clone()).unwrap_or_default(),
        pool: m.pool.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
        cpu_count: m.cpu_count,
        cpu_speed_mhz: m.cpu_speed,
        memory_mib: m.memory,
        storage_bytes: hardware.storage_bytes,
        disks: hardware
            .disks
            .iter()
            .map(|d| MaasDisk {
                name: d.name.clone(),
                size_bytes: d.size,
                model: d.model.clone(),
                serial: d.serial.clone(),
            })
            .collect(),
        interfaces: m
            .interface_set
            .iter()
            .map(|i| MaasInterface {
                name: i.name.clone(),
                mac_address: i.mac_address.to_ascii_lowercase(),
                link_speed_mbps: i.link_speed,
            })
            .collect(),
        updated_at: now,
    }
}

/// What one poll changes, in the order the events are emitted.
struct Diff {
    /// New and changed machines (with `updated_at` = now).
    upserts: Vec<MaasMachine>,
    added: usize,
    removed: Vec<MaasMachine>,
    events: Vec<(&'static str, MaasMachine, String)>,
}

fn diff(known: &HashMap<String, MaasMachine>, fresh: Vec<MaasMachine>) -> Diff {
    let mut out = Diff { upserts: Vec::new(), added: 0, removed: Vec::new(), events: Vec::new() };
    let listed: HashSet<&str> = fresh.iter().map(|m| m.system_id.as_str()).collect();
    let mut removed: Vec<&MaasMachine> = known.values().filter(|m| !listed.contains(m.system_id.as_str())).collect();
    removed.sort_by(|a, b| (&a.hostname, &a.system_id).cmp(&(&b.hostname, &b.system_id)));
    for machine in removed {
        let message = format!("{} ({}) is no longer in MAAS", machine.hostname, machine.system_id);
        out.events.push((kinds::MAAS_MACHINE_REMOVED, machine.clone(), message));
        out.removed.push(machine.clone());
    }
    for machine in fresh {
        match known.get(&machine.system_id) {
            None => {
                let message =
                    format!("{}: new in MAAS ({}), {}", machine.hostname, machine.system_id, machine.status_name);
                out.events.push((kinds::MAAS_MACHINE_ADDED, machine.clone(), message));
                out.added += 1;
                out.upserts.push(machine);
            }
            Some(old) if !old.same_as(&machine) => {
                if old.status != machine.status {
                    let message = format!("{}: {} -> {}", machine.hostname, old.status_name, machine.status_name);
                    out.events.push((kinds::MAAS_STATUS_CHANGED, machine.clone(), message));
                }
                out.upserts.push(machine);
            }
            Some(_) => {}
        }
    }
    out
}

/// The error with its causes, each once (`{:#}`-like), for the sync record and events.
fn error_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
    }

    fn machine(system_id: &str, hostname: &str, status: NodeStatus) -> MaasMachine {
        MaasMachine {
            system_id: system_id.into(),
            hostname: hostname.into(),
            status: status.as_int(),
            status_name: status.label().into(),
            power_state: "off".into(),
            owner: None,
            ip_addresses: vec![],
            tags: vec![],
            zone: "default".into(),
            pool: "default".into(),
            cpu_count: 4,
            cpu_speed_mhz: 3000,
            memory_mib: 1024,
            storage_bytes: 1,
            disks: vec![],
            interfaces: vec![],
            updated_at: at(0),
        }
    }

    fn check(known: &[MaasMachine], fresh: &[MaasMachine], expected_events: &[(&str, &str)], upserts: usize) {
        let known = known.iter().map(|m| (m.system_id.clone(), m.clone())).collect();
        let diff = diff(&known, fresh.to_vec());
        let events: Vec<(&str, &str)> = diff.events.iter().map(|(k, _, msg)| (*k, msg.as_str())).collect();
        assert_eq!(events, expected_events);
        assert_eq!(diff.upserts.len(), upserts);
    }

    #[test]
    fn a_steady_fleet_writes_nothing() {
        let a = machine("aaa", "server1", NodeStatus::Ready);
        let later = MaasMachine { updated_at: at(100), ..a.clone() };
        check(&[a], &[later], &[], 0);
    }

    #[test]
    fn status_changes_additions_and_removals_become_events() {
        let a = machine("aaa", "server1", NodeStatus::Ready);
        let b = machine("bbb", "server2", NodeStatus::Ready);
        let deployed = machine("bbb", "server2", NodeStatus::Deployed);
        let c = machine("ccc", "server3", NodeStatus::New);
        check(
            &[a.clone(), b],
            &[deployed, c],
            &[
                (kinds::MAAS_MACHINE_REMOVED, "server1 (aaa) is no longer in MAAS"),
                (kinds::MAAS_STATUS_CHANGED, "server2: Ready -> Deployed"),
                (kinds::MAAS_MACHINE_ADDED, "server3: new in MAAS (ccc), New"),
            ],
            2,
        );
        // A power change is stored but is not a status event.
        let on = MaasMachine { power_state: "on".into(), ..a.clone() };
        check(&[a], &[on], &[], 1);
    }

    #[test]
    fn poll_timeout_covers_at_least_one_request() {
        let mut config = maas::Config::new("http://127.0.0.1:5240/MAAS".parse().unwrap(), "/k".into());
        config.poll_interval = Duration::from_millis(200);
        config.request_timeout = Duration::from_secs(2);
        let settings = Settings::from_config(&config);
        assert_eq!(settings.interval, Duration::from_millis(200));
        assert_eq!(settings.poll_timeout, Duration::from_secs(2));
    }
}
