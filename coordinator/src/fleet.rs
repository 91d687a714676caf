//! The live fleet: who is enrolled, when each was last heard, its health; the writer and evaluator tasks.
//!
//! The in-memory map is the source of truth for liveness and health while the coordinator runs;
//! the store follows it. Heartbeats go to the store through a bounded queue that one writer task
//! drains in batches (one transaction per batch), so 1,000 agents cost a few commits a second.
//! Health transitions are decided under the map's lock and queued in that order, and one event
//! task persists them and broadcasts them, so event ids follow the order of the decisions.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::domain::{Enrollment, Event, Health, Inventory, Machine, MachineView, NewEvent, Sample, kinds};
use crate::health;
use crate::health::HealthThresholds;
use crate::store::{SampleWrite, Store, StoreError, Takeover};

/// Heartbeats written per transaction at most.
const MAX_BATCH: usize = 1024;
/// Samples waiting to be written, per slot of the write queue: the queue is bounded in messages
/// and, through a semaphore, in samples (a reconnecting agent may flush many in one message).
const SAMPLES_PER_QUEUE_SLOT: usize = 4;
/// The range of agent-reported intervals the silence rule accepts.
const MIN_INTERVAL_MS: u32 = 100;
const MAX_INTERVAL_MS: u32 = 3_600_000;
/// Live events buffered per WatchEvents subscriber before it must catch up from the store.
const EVENT_BROADCAST: usize = 1024;
/// A failed commit is tried again after this, doubling up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often an idle writer checks that the store's file is still there.
const STORE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// A machine whose samples are refused gets an event at most this often (the first refusal at once).
const REFUSAL_EVENT_EVERY: Duration = Duration::from_secs(600);
/// A machine whose clock runs ahead gets an event at most this often.
const SKEW_EVENT_EVERY: Duration = Duration::from_secs(3600);

/// Where a heartbeat's acknowledgement goes once its samples are committed: the highest `seq` stored.
/// One per heartbeat stream; the writer only ever raises it.
pub type AckSink = Arc<watch::Sender<u64>>;

pub use crate::domain::CoordinatorStatus;

/// Why a fleet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("machine {0} is not enrolled; the agent must enroll again")]
    NotEnrolled(String),
    #[error("no machine is named {0:?}; use a machine id, hostname or MAAS system_id from `fleetctl machines list`")]
    NoSuchMachine(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the coordinator is shutting down; retry against the restarted coordinator")]
    ShuttingDown,
}

/// The settings the fleet needs from the config.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    pub thresholds: HealthThresholds,
    pub heartbeat_interval: Duration,
    pub write_queue: usize,
    pub evaluate_every: Duration,
    /// Samples kept per machine; a heartbeat carrying more keeps only the newest this many.
    pub history_samples: u32,
}

/// One heartbeat message, already converted.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub machine_id: String,
    pub samples: Vec<Sample>,
    /// 0 when the agent did not say.
    pub interval_ms: u32,
    pub dropped_samples: u64,
}

struct Tracked {
    machine: Machine,
    latest: Option<Sample>,
    /// Samples of this machine refused since the coordinator started, and when that was last an event.
    refused: u64,
    refusal_event_at: Option<Instant>,
    skew_event_at: Option<Instant>,
    /// Where the silence clock starts: the last heartbeat, or the coordinator's start for
    /// machines it has not heard from since, so a restart does not mark everyone unreachable.
    silent_since: Instant,
}

/// A health change decided under the lock, waiting for the event task.
struct Pending {
    event: NewEvent,
    health: Option<(Health, Vec<String>)>,
}

/// The fleet's shared state. Create it with [`Fleet::start`].
pub struct Fleet {
    store: Arc<dyn Store>,
    settings: FleetSettings,
    machines: Mutex<HashMap<String, Tracked>>,
    pending: Mutex<VecDeque<Pending>>,
    pending_ready: Notify,
    events: broadcast::Sender<Event>,
    writes: mpsc::Sender<Queued>,
    /// Bounds the samples waiting in the queue; permits go back once the writer committed them.
    sample_budget: Arc<Semaphore>,
    /// Signalled when a stored inventory changed, so verification runs again (`crate::verify::task`).
    inventory_changed: Notify,
    /// Whether the store writes; the writer sets it, the server mirrors it into the health service.
    status: watch::Sender<CoordinatorStatus>,
}

/// A heartbeat waiting for the writer, holding its share of the sample budget.
struct Queued {
    write: SampleWrite,
    permit: Option<OwnedSemaphorePermit>,
    /// Raised to `ack_seq` once the write committed.
    ack: Option<AckSink>,
    ack_seq: u64,
}

/// The fleet's background tasks; await [`FleetTasks::join`] after cancelling to flush the queues.
pub struct FleetTasks {
    handles: Vec<JoinHandle<()>>,
}

impl FleetTasks {
    /// Waits for the writer, event and evaluator tasks to drain and stop.
    pub async fn join(self) {
        for handle in self.handles {
            if let Err(error) = handle.await {
                tracing::error!(%error, "a fleet task failed");
            }
        }
    }
}

impl Fleet {
    /// Loads the fleet from the store and starts the writer, event and evaluator tasks, which stop
    /// (after draining) when `stop` is cancelled.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn start(
        store: Arc<dyn Store>,
        settings: FleetSettings,
        stop: CancellationToken,
    ) -> Result<(Arc<Fleet>, FleetTasks), FleetError> {
        let now = Instant::now();
        let mut machines = HashMap::new();
        for machine in store.machines().await? {
            let latest = store.latest_sample(&machine.id).await?;
            machines.insert(machine.id.clone(), Tracked::new(machine, latest, now));
        }
        let (writes, queue) = mpsc::channel(settings.write_queue);
        let sample_budget = Arc::new(Semaphore::new(settings.write_queue * SAMPLES_PER_QUEUE_SLOT));
        let (events, _) = broadcast::channel(EVENT_BROADCAST);
        let fleet = Arc::new(Fleet {
            store,
            settings,
            machines: Mutex::new(machines),
            pending: Mutex::new(VecDeque::new()),
            pending_ready: Notify::new(),
            events,
            writes,
            sample_budget,
            inventory_changed: Notify::new(),
            status: watch::Sender::new(CoordinatorStatus::default()),
        });
        let handles = vec![
            tokio::spawn(writer_task(fleet.clone(), queue, stop.clone())),
            tokio::spawn(event_task(fleet.clone(), stop.clone())),
            tokio::spawn(evaluator_task(fleet.clone(), stop)),
        ];
        Ok((fleet, FleetTasks { handles }))
    }

    pub fn settings(&self) -> &FleetSettings {
        &self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tracked>> {
        self.machines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn queue(&self, pending: Pending) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).push_back(pending);
        self.pending_ready.notify_one();
    }

    /// Creates or finds the machine of `enrollment.agent_id` and returns it with its interval.
    /// `takeover` names the MAAS machine a redeploy token was bound to (see [`Store::enroll`]).
    ///
    /// # Errors
    /// The hostname belongs to another machine, or the store failed.
    pub async fn enroll(&self, enrollment: Enrollment, takeover: Takeover) -> Result<Machine, FleetError> {
        let interval_ms = u32::try_from(self.settings.heartbeat_interval.as_millis()).unwrap_or(u32::MAX);
        let now = Utc::now();
        let enrolled = self.store.enroll(enrollment, interval_ms, now, takeover).await?;
        let machine = enrolled.machine;
        let mut machines = self.lock();
        let live =
            machines.entry(machine.id.clone()).or_insert_with(|| Tracked::new(machine.clone(), None, Instant::now()));
        if enrolled.replaced_agent.is_some() {
            // A new agent on this machine: what the old one said is no longer the machine's state.
            *live = Tracked::new(machine.clone(), None, Instant::now());
        }
        live.machine.hostname = machine.hostname.clone();
        live.machine.mac_addresses = machine.mac_addresses.clone();
        live.machine.agent_version = machine.agent_version.clone();
        live.machine.heartbeat_interval_ms = interval_ms;
        live.silent_since = Instant::now();
        let mut message = match (&enrolled.replaced_agent, enrolled.created) {
            (Some(old), _) => format!(
                "{} enrolled with a new agent {} in place of {old} (redeploy token)",
                machine.hostname, machine.agent_id
            ),
            (None, true) => format!("{} enrolled (agent {})", machine.hostname, machine.agent_id),
            (None, false) => format!("{} enrolled again (agent {})", machine.hostname, machine.agent_id),
        };
        if let Some(reported) = &enrolled.ignored_hostname {
            message.push_str(&format!(
                "; it reported the hostname {reported:?}, but an agent never renames its machine (redeploy to change it)"
            ));
            tracing::warn!(machine_id = %machine.id, hostname = %machine.hostname, reported = %reported, "an enrolled agent reported another hostname; kept the machine's");
        }
        let event = NewEvent {
            at: now,
            machine_id: machine.id.clone(),
            hostname: machine.hostname.clone(),
            kind: kinds::ENROLLED.to_string(),
            message,
            from_health: None,
            to_health: None,
        };
        let result = live.machine.clone();
        self.queue(Pending { event, health: None });
        Ok(result)
    }

    /// Stores the machine's inventory; returns whether it changed.
    ///
    /// # Errors
    /// [`FleetError::NotEnrolled`] for an unknown machine, or a store failure.
    pub async fn report_inventory(&self, machine_id: &str, inventory: Inventory) -> Result<bool, FleetError> {
        if !self.lock().contains_key(machine_id) {
            return Err(FleetError::NotEnrolled(machine_id.to_string()));
        }
        match self.store.put_inventory(machine_id, inventory).await {
            Err(StoreError::NoSuchMachine(id)) => Err(FleetError::NotEnrolled(id)),
            other => {
                let changed = other?;
                if changed {
                    self.inventory_changed.notify_one();
                }
                Ok(changed)
            }
        }
    }

    /// Signalled (one stored permit) whenever a reported inventory differs from the stored one.
    pub fn inventory_changes(&self) -> &Notify {
        &self.inventory_changed
    }

    /// Notes the machine's MAAS match (already stored by the caller), so lookups by system_id find it.
    pub fn set_system_id(&self, machine_id: &str, system_id: Option<String>) {
        if let Some(live) = self.lock().get_mut(machine_id) {
            live.machine.system_id = system_id;
        }
    }

    /// Notes a machine's new name (already stored by the caller: MAAS's hostname after a match).
    pub fn set_hostname(&self, machine_id: &str, hostname: &str) {
        if let Some(live) = self.lock().get_mut(machine_id) {
            live.machine.hostname = hostname.to_string();
        }
    }

    /// Records a heartbeat: liveness now, the samples, and the health they imply. Once the samples are
    /// committed, `ack` is raised to the highest `seq` among them (never before: an acknowledged
    /// sample survives a crash right after).
    ///
    /// Waits while the write queue is full: that is the backpressure an agent's stream feels. While the
    /// store cannot write, it does not wait: liveness and health still follow the agent, and samples
    /// that find no room are simply not acknowledged (the agent keeps them and sends them again).
    ///
    /// # Errors
    /// [`FleetError::NotEnrolled`] for an unknown machine; [`FleetError::ShuttingDown`] once the
    /// writer has stopped.
    pub async fn heartbeat(&self, mut heartbeat: Heartbeat, ack: Option<AckSink>) -> Result<(), FleetError> {
        let received_at = Utc::now();
        let ack_seq = heartbeat.samples.iter().map(|s| s.seq).max().unwrap_or(0);
        // Older samples than the history keeps would be pruned at once; do not queue them.
        let keep = self.settings.history_samples.max(1) as usize;
        if heartbeat.samples.len() > keep {
            heartbeat.samples.drain(..heartbeat.samples.len() - keep);
        }
        let interval_ms = {
            let mut machines = self.lock();
            let live = machines
                .get_mut(&heartbeat.machine_id)
                .ok_or_else(|| FleetError::NotEnrolled(heartbeat.machine_id.clone()))?;
            live.silent_since = Instant::now();
            live.machine.last_seen = Some(received_at);
            if heartbeat.interval_ms > 0 {
                // A silly interval must not make the machine flap (too short) or never time out (too long).
                live.machine.heartbeat_interval_ms = heartbeat.interval_ms.clamp(MIN_INTERVAL_MS, MAX_INTERVAL_MS);
            }
            if let Some(last) = heartbeat.samples.last() {
                live.latest = Some(last.clone());
            }
            let (health, reasons) = match &live.latest {
                Some(sample) => health::evaluate_sample(sample, &self.settings.thresholds),
                None => (Health::Unknown, Vec::new()),
            };
            if let Some(pending) = transition(live, health, reasons, received_at) {
                self.queue(pending);
            }
            live.machine.heartbeat_interval_ms
        };
        if heartbeat.dropped_samples > 0 {
            tracing::debug!(machine_id = %heartbeat.machine_id, dropped = heartbeat.dropped_samples, "agent dropped samples");
        }
        let write =
            SampleWrite { machine_id: heartbeat.machine_id, samples: heartbeat.samples, received_at, interval_ms };
        let wanted = write.samples.len().min(self.settings.write_queue * SAMPLES_PER_QUEUE_SLOT);
        let ack = if ack_seq > 0 { ack } else { None };
        if self.status.borrow().degraded.is_some() {
            // No waiting on a store that cannot write: what finds no room stays unacknowledged.
            let permit = match wanted {
                0 => None,
                n => match self.sample_budget.clone().try_acquire_many_owned(n as u32) {
                    Ok(permit) => Some(permit),
                    Err(_) => return Ok(()),
                },
            };
            return match self.writes.try_send(Queued { write, permit, ack, ack_seq }) {
                Err(mpsc::error::TrySendError::Closed(_)) => Err(FleetError::ShuttingDown),
                _ => Ok(()),
            };
        }
        let permit = match wanted {
            0 => None,
            n => Some(
                self.sample_budget.clone().acquire_many_owned(n as u32).await.map_err(|_| FleetError::ShuttingDown)?,
            ),
        };
        self.writes.send(Queued { write, permit, ack, ack_seq }).await.map_err(|_| FleetError::ShuttingDown)
    }

    /// Notes samples refused at the edge (see `grpc::convert::agent`): counted per machine, an event at
    /// the first refusal and then at most every ten minutes, so a repeat offender is visible without
    /// flooding the event log. A clock running ahead is its own finding.
    pub fn note_refusals(&self, machine_id: &str, refused: &[(u64, String)], clock_ahead: Option<chrono::Duration>) {
        if refused.is_empty() && clock_ahead.is_none() {
            return;
        }
        let now = Instant::now();
        let mut machines = self.lock();
        let Some(live) = machines.get_mut(machine_id) else { return };
        let due = |last: Option<Instant>, every: Duration| last.is_none_or(|at| now.duration_since(at) >= every);
        if !refused.is_empty() {
            live.refused += refused.len() as u64;
            tracing::warn!(%machine_id, hostname = %live.machine.hostname, refused = refused.len(), first = %refused[0].1, "samples refused");
            if due(live.refusal_event_at, REFUSAL_EVENT_EVERY) {
                live.refusal_event_at = Some(now);
                let message = format!(
                    "{}: {} sample(s) refused ({} since the coordinator started), e.g. seq {}: {}",
                    live.machine.hostname,
                    refused.len(),
                    live.refused,
                    refused[0].0,
                    refused[0].1
                );
                let event = machine_event(&live.machine, kinds::SAMPLES_REFUSED, message);
                self.queue(Pending { event, health: None });
            }
        }
        if let Some(ahead) = clock_ahead
            && due(live.skew_event_at, SKEW_EVENT_EVERY)
        {
            live.skew_event_at = Some(now);
            let message = format!(
                "{}'s clock is {} ahead of the coordinator's; its samples from the future are refused: fix its time sync (NTP)",
                live.machine.hostname,
                humantime::format_duration(Duration::from_secs(ahead.num_seconds().max(0) as u64))
            );
            let event = machine_event(&live.machine, kinds::CLOCK_SKEW, message);
            self.queue(Pending { event, health: None });
        }
    }

    /// The coordinator's own condition (degraded while the store cannot write).
    pub fn status(&self) -> CoordinatorStatus {
        self.status.borrow().clone()
    }

    /// Follows [`Fleet::status`] (the server mirrors it into the gRPC health service).
    pub fn watch_status(&self) -> watch::Receiver<CoordinatorStatus> {
        self.status.subscribe()
    }

    /// The writer's verdict on the store after a commit or a check: degraded with why, or writing.
    fn set_store_result(&self, result: Result<(), &StoreError>) {
        let now = Utc::now();
        let changed = self.status.send_if_modified(|status| match (result, &status.degraded) {
            (Err(error), None) => {
                status.degraded = Some((now, error.to_string()));
                true
            }
            (Ok(()), Some(_)) => {
                status.degraded = None;
                true
            }
            _ => false,
        });
        if !changed {
            return;
        }
        let (kind, message) = match result {
            Err(error) => {
                tracing::error!(%error, "the store cannot write: the coordinator is degraded; samples are no longer acknowledged and agents keep them");
                (
                    kinds::STORE_DEGRADED,
                    format!("the store cannot write, so samples are not acknowledged (agents keep them): {error}"),
                )
            }
            Ok(()) => {
                tracing::info!("the store writes again; acknowledging samples");
                (
                    kinds::STORE_RECOVERED,
                    "the store writes again; agents' buffered samples are being stored".to_string(),
                )
            }
        };
        let event = NewEvent {
            at: now,
            machine_id: String::new(),
            hostname: String::new(),
            kind: kind.to_string(),
            message,
            from_health: None,
            to_health: None,
        };
        self.queue(Pending { event, health: None });
    }

    /// Notes that the agent was told to sample at `interval_ms`. Only lengthens the interval used
    /// for silence, because the agent may still be waiting out its old, longer interval.
    pub fn note_interval(&self, machine_id: &str, interval_ms: u32) {
        if let Some(live) = self.lock().get_mut(machine_id) {
            live.machine.heartbeat_interval_ms = live.machine.heartbeat_interval_ms.max(interval_ms);
        }
    }

    /// Shows the machine as revoked (its certificates were revoked), with an event.
    pub fn mark_revoked(&self, machine_id: &str) {
        let mut machines = self.lock();
        if let Some(live) = machines.get_mut(machine_id)
            && let Some(pending) =
                transition(live, Health::Revoked, vec!["agent certificate revoked".to_string()], Utc::now())
        {
            self.queue(pending);
        }
    }

    /// Heartbeats waiting to be written, and the queue's capacity.
    pub fn write_queue(&self) -> (usize, usize) {
        let capacity = self.writes.max_capacity();
        (capacity - self.writes.capacity(), capacity)
    }

    /// Marks every machine silent for longer than its limit as unreachable.
    pub fn evaluate_silence(&self, now: Instant) {
        let at = Utc::now();
        let mut machines = self.lock();
        for live in machines.values_mut() {
            if matches!(live.machine.health, Health::Unreachable | Health::Unknown | Health::Revoked) {
                continue;
            }
            let limit = health::silence_limit(live.machine.heartbeat_interval_ms, &self.settings.thresholds);
            let silent_for = now.saturating_duration_since(live.silent_since);
            if silent_for >= limit {
                let reason = health::unreachable_reason(
                    silent_for,
                    live.machine.heartbeat_interval_ms,
                    &self.settings.thresholds,
                );
                if let Some(pending) = transition(live, Health::Unreachable, vec![reason], at) {
                    self.queue(pending);
                }
            }
        }
    }

    /// Every machine with its latest sample, ordered by hostname.
    pub fn machines(&self) -> Vec<MachineView> {
        let mut list: Vec<MachineView> = self
            .lock()
            .values()
            .map(|live| MachineView {
                machine: live.machine.clone(),
                latest_sample: live.latest.clone(),
                inventory: None,
                history: Vec::new(),
            })
            .collect();
        list.sort_by(|a, b| (&a.machine.hostname, &a.machine.id).cmp(&(&b.machine.hostname, &b.machine.id)));
        list
    }

    /// One machine by id, hostname or MAAS system_id, with its inventory and `history` samples.
    ///
    /// # Errors
    /// [`FleetError::NoSuchMachine`], or a store failure.
    pub async fn machine(&self, name: &str, history: u32) -> Result<MachineView, FleetError> {
        let (machine, latest) = {
            let machines = self.lock();
            let found = machines.get(name).or_else(|| {
                machines.values().find(|l| l.machine.hostname == name || l.machine.system_id.as_deref() == Some(name))
            });
            let live = found.ok_or_else(|| FleetError::NoSuchMachine(name.to_string()))?;
            (live.machine.clone(), live.latest.clone())
        };
        let inventory = self.store.inventory(&machine.id).await?;
        let history = if history > 0 { self.store.history(&machine.id, history).await? } else { Vec::new() };
        Ok(MachineView { machine, latest_sample: latest, inventory, history })
    }

    /// Queues an event decided outside the fleet (the MAAS poller's): it is stored and broadcast in
    /// order with the fleet's own events.
    pub fn publish(&self, event: NewEvent) {
        self.queue(Pending { event, health: None });
    }

    /// Live events from now on. Subscribe before reading stored events so none fall in between.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Stored events after `after_id` (see [`Store::events`]).
    ///
    /// # Errors
    /// A store failure.
    pub async fn stored_events(&self, after_id: u64, limit: Option<u32>) -> Result<Vec<Event>, FleetError> {
        Ok(self.store.events(after_id, limit).await?)
    }

    /// Persists queued health changes and events in the order they were decided, and
    /// broadcasts the events. A change without a kind only updates the stored reasons.
    /// Returns false when the store failed: what is left stays queued, in order, for the next try.
    async fn flush_pending(&self) -> bool {
        loop {
            let next = self.pending.lock().unwrap_or_else(PoisonError::into_inner).pop_front();
            let Some(Pending { event, health }) = next else { return true };
            if let Some((health_now, reasons)) = &health {
                match self.store.set_health(&event.machine_id, *health_now, reasons.clone()).await {
                    Ok(()) | Err(StoreError::NoSuchMachine(_)) => {}
                    Err(error) => {
                        tracing::warn!(%error, machine_id = %event.machine_id, "storing a health change failed; will retry");
                        self.requeue_front(Pending { event, health });
                        return false;
                    }
                }
            }
            if event.kind.is_empty() {
                continue;
            }
            match self.store.append_event(event.clone()).await {
                Ok(event) => {
                    tracing::info!(machine_id = %event.machine_id, kind = %event.kind, "{}", event.message);
                    // No subscribers is fine: the event is stored.
                    let _ = self.events.send(event);
                }
                Err(error) => {
                    tracing::warn!(%error, kind = %event.kind, "storing an event failed; will retry");
                    self.requeue_front(Pending { event, health: None });
                    return false;
                }
            }
        }
    }

    fn requeue_front(&self, pending: Pending) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).push_front(pending);
    }
}

impl Tracked {
    fn new(machine: Machine, latest: Option<Sample>, silent_since: Instant) -> Self {
        Tracked { machine, latest, refused: 0, refusal_event_at: None, skew_event_at: None, silent_since }
    }
}

fn machine_event(machine: &Machine, kind: &str, message: String) -> NewEvent {
    NewEvent {
        at: Utc::now(),
        machine_id: machine.id.clone(),
        hostname: machine.hostname.clone(),
        kind: kind.to_string(),
        message,
        from_health: None,
        to_health: None,
    }
}

/// Applies a new health to `live` and describes the change, or returns `None` when nothing changed.
fn transition(live: &mut Tracked, health: Health, reasons: Vec<String>, at: DateTime<Utc>) -> Option<Pending> {
    let from = live.machine.health;
    if from == health && live.machine.health_reasons == reasons {
        return None;
    }
    live.machine.health = health;
    live.machine.health_reasons = reasons.clone();
    let record = Some((health, reasons.clone()));
    if from == health {
        // Only the reasons changed: store them, but it is not an event.
        let event = NewEvent {
            at,
            machine_id: live.machine.id.clone(),
            hostname: live.machine.hostname.clone(),
            kind: String::new(),
            message: String::new(),
            from_health: Some(from),
            to_health: Some(health),
        };
        return Some(Pending { event, health: record });
    }
    let why = if reasons.is_empty() { String::new() } else { format!(": {}", reasons.join("; ")) };
    let event = NewEvent {
        at,
        machine_id: live.machine.id.clone(),
        hostname: live.machine.hostname.clone(),
        kind: kinds::HEALTH_CHANGED.to_string(),
        message: format!("{} is {health} (was {from}){why}", live.machine.hostname),
        from_health: Some(from),
        to_health: Some(health),
    };
    Some(Pending { event, health: record })
}

async fn writer_task(fleet: Arc<Fleet>, mut queue: mpsc::Receiver<Queued>, stop: CancellationToken) {
    let mut batch: Vec<Queued> = Vec::with_capacity(MAX_BATCH);
    let mut check = tokio::time::interval(STORE_CHECK_EVERY);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            biased;
            received = queue.recv() => received,
            _ = stop.cancelled() => None,
            _ = check.tick() => {
                // An idle writer still notices a store file deleted under it, at once.
                if let Err(error) = fleet.store.check() {
                    fleet.set_store_result(Err(&error));
                }
                continue;
            }
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        commit_until_stored(&fleet, &mut batch, &stop).await;
    }
    // Drain what was accepted before the stop, so no acknowledged heartbeat is lost. A store that
    // cannot write gets one try: what fails was never acknowledged, and the agents send it again.
    queue.close();
    while let Some(queued) = queue.recv().await {
        batch.push(queued);
        if batch.len() >= MAX_BATCH {
            commit(&fleet, &mut batch).await;
            batch.clear();
        }
    }
    commit(&fleet, &mut batch).await;
    tracing::debug!("heartbeat writer stopped");
}

/// Commits `batch`, and while the store fails keeps it and tries again with a growing pause (the
/// coordinator is degraded meanwhile), until it is stored or the coordinator stops.
async fn commit_until_stored(fleet: &Fleet, batch: &mut Vec<Queued>, stop: &CancellationToken) {
    let mut pause = RETRY_FIRST;
    while !commit(fleet, batch).await {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
    batch.clear();
}

/// Writes `batch` in one transaction; once committed, acknowledges it and releases its share of the
/// sample budget. Returns false (the batch kept) when the store failed.
async fn commit(fleet: &Fleet, batch: &mut [Queued]) -> bool {
    if batch.is_empty() {
        return true;
    }
    let writes: Vec<SampleWrite> = batch.iter().map(|q| q.write.clone()).collect();
    let count = writes.len();
    let result = fleet.store.record_samples(writes).await;
    fleet.set_store_result(result.as_ref().map(|_| ()));
    if let Err(error) = result {
        tracing::warn!(%error, heartbeats = count, "writing heartbeats failed; they stay unacknowledged and are retried");
        return false;
    }
    for queued in batch.iter_mut() {
        if let Some(ack) = queued.ack.take() {
            let seq = queued.ack_seq;
            ack.send_if_modified(|stored| {
                let raise = seq > *stored;
                if raise {
                    *stored = seq;
                }
                raise
            });
        }
        queued.permit.take();
    }
    true
}

async fn event_task(fleet: Arc<Fleet>, stop: CancellationToken) {
    loop {
        let flushed = fleet.flush_pending().await;
        tokio::select! {
            _ = fleet.pending_ready.notified() => {}
            // Events that could not be stored are tried again: they are stored once the store writes.
            _ = tokio::time::sleep(RETRY_MAX), if !flushed => {}
            _ = stop.cancelled() => break,
        }
    }
    fleet.flush_pending().await;
}

async fn evaluator_task(fleet: Arc<Fleet>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(fleet.settings.evaluate_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            now = tick.tick() => fleet.evaluate_silence(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::timeout;

    use super::*;
    use crate::domain::FilesystemUsage;
    use crate::store::SqliteStore;

    fn settings() -> FleetSettings {
        FleetSettings {
            thresholds: HealthThresholds::default(),
            heartbeat_interval: Duration::from_secs(1),
            write_queue: 64,
            evaluate_every: Duration::from_secs(3600),
            history_samples: 100,
        }
    }

    fn enrollment(agent_id: &str) -> Enrollment {
        Enrollment {
            agent_id: agent_id.to_string(),
            hostname: format!("host-{agent_id}"),
            mac_addresses: vec![],
            agent_version: "test".to_string(),
        }
    }

    fn sample(disk_available: u64) -> Sample {
        Sample {
            filesystems: vec![FilesystemUsage {
                mount_point: "/".into(),
                total_bytes: 100,
                available_bytes: disk_available,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    async fn next_health_change(events: &mut broadcast::Receiver<Event>) -> Event {
        let wait = async {
            loop {
                let event = events.recv().await.unwrap();
                if event.kind == kinds::HEALTH_CHANGED {
                    return event;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait).await.expect("a health change within the deadline")
    }

    #[tokio::test(start_paused = true)]
    async fn silence_makes_a_machine_unreachable_after_three_of_its_intervals() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 100).unwrap());
        let stop = CancellationToken::new();
        let (fleet, tasks) = Fleet::start(store, settings(), stop.clone()).await.unwrap();
        let mut events = fleet.subscribe();
        let id = fleet.enroll(enrollment("a"), Takeover::default()).await.unwrap().id;
        let heartbeat =
            Heartbeat { machine_id: id.clone(), samples: vec![sample(50)], interval_ms: 2000, dropped_samples: 0 };
        fleet.heartbeat(heartbeat, None).await.unwrap();
        let healthy = next_health_change(&mut events).await;
        assert_eq!((healthy.from_health, healthy.to_health), (Some(Health::Unknown), Some(Health::Healthy)));

        let start = Instant::now();
        fleet.evaluate_silence(start + Duration::from_millis(5999));
        assert_eq!(fleet.machine(&id, 0).await.unwrap().machine.health, Health::Healthy, "3 x 2s not yet over");
        tokio::time::advance(Duration::from_millis(6000)).await;
        fleet.evaluate_silence(Instant::now());
        let unreachable = next_health_change(&mut events).await;
        assert_eq!(unreachable.to_health, Some(Health::Unreachable));
        assert!(unreachable.message.contains("no heartbeat for 6.0s"), "{}", unreachable.message);

        let heartbeat = Heartbeat { machine_id: id.clone(), samples: vec![], interval_ms: 2000, dropped_samples: 0 };
        fleet.heartbeat(heartbeat, None).await.unwrap();
        let back = next_health_change(&mut events).await;
        assert_eq!((back.from_health, back.to_health), (Some(Health::Unreachable), Some(Health::Healthy)));
        stop.cancel();
        tasks.join().await;
    }

    #[tokio::test]
    async fn degraded_and_back_are_events_and_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path(), 100).unwrap());
        let stop = CancellationToken::new();
        let (fleet, tasks) = Fleet::start(store.clone(), settings(), stop.clone()).await.unwrap();
        let mut events = fleet.subscribe();
        let id = fleet.enroll(enrollment("a"), Takeover::default()).await.unwrap().id;
        for available in [50, 5, 50] {
            let heartbeat = Heartbeat {
                machine_id: id.clone(),
                samples: vec![sample(available)],
                interval_ms: 0,
                dropped_samples: 0,
            };
            fleet.heartbeat(heartbeat, None).await.unwrap();
        }
        let changes: Vec<(Option<Health>, Option<Health>)> = [
            next_health_change(&mut events).await,
            next_health_change(&mut events).await,
            next_health_change(&mut events).await,
        ]
        .iter()
        .map(|e| (e.from_health, e.to_health))
        .collect();
        assert_eq!(
            changes,
            vec![
                (Some(Health::Unknown), Some(Health::Healthy)),
                (Some(Health::Healthy), Some(Health::Degraded)),
                (Some(Health::Degraded), Some(Health::Healthy)),
            ]
        );
        stop.cancel();
        tasks.join().await;
        // The writer flushed on stop: every sample is stored, and so is the health.
        assert_eq!(store.history(&id, 10).await.unwrap().len(), 3);
        assert_eq!(store.machine(&id).await.unwrap().unwrap().health, Health::Healthy);
        let kinds: Vec<String> = store.events(0, None).await.unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec!["enrolled", "health_changed", "health_changed", "health_changed"]);
    }

    #[tokio::test]
    async fn a_flush_of_more_samples_than_the_history_keeps_only_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path(), 100).unwrap());
        let stop = CancellationToken::new();
        let (fleet, tasks) = Fleet::start(store.clone(), settings(), stop.clone()).await.unwrap();
        let id = fleet.enroll(enrollment("a"), Takeover::default()).await.unwrap().id;
        // More samples than the whole sample budget (64 slots x 4) and the history (100).
        let samples: Vec<Sample> = (0..300).map(|i| Sample { cpu_percent: f64::from(i), ..sample(50) }).collect();
        let heartbeat = Heartbeat { machine_id: id.clone(), samples, interval_ms: 0, dropped_samples: 0 };
        timeout(Duration::from_secs(10), fleet.heartbeat(heartbeat, None))
            .await
            .expect("no deadlock on the budget")
            .unwrap();
        stop.cancel();
        tasks.join().await;
        let history = store.history(&id, 1000).await.unwrap();
        assert_eq!(history.len(), 100);
        assert_eq!(history.first().unwrap().cpu_percent, 200.0);
        assert_eq!(history.last().unwrap().cpu_percent, 299.0);
    }

    #[tokio::test]
    async fn unknown_machine_is_not_enrolled() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 100).unwrap());
        let stop = CancellationToken::new();
        let (fleet, tasks) = Fleet::start(store, settings(), stop.clone()).await.unwrap();
        let heartbeat = Heartbeat { machine_id: "ghost".into(), samples: vec![], interval_ms: 0, dropped_samples: 0 };
        assert!(matches!(fleet.heartbeat(heartbeat, None).await, Err(FleetError::NotEnrolled(id)) if id == "ghost"));
        assert!(matches!(fleet.report_inventory("ghost", Inventory::default()).await, Err(FleetError::NotEnrolled(_))));
        stop.cancel();
        tasks.join().await;
    }

    #[tokio::test]
    async fn a_restart_keeps_machines_and_does_not_mark_them_unreachable_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 100).unwrap());
            let stop = CancellationToken::new();
            let (fleet, tasks) = Fleet::start(store, settings(), stop.clone()).await.unwrap();
            let id = fleet.enroll(enrollment("a"), Takeover::default()).await.unwrap().id;
            let heartbeat =
                Heartbeat { machine_id: id.clone(), samples: vec![sample(50)], interval_ms: 1000, dropped_samples: 0 };
            fleet.heartbeat(heartbeat, None).await.unwrap();
            stop.cancel();
            tasks.join().await;
            id
        };
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 100).unwrap());
        let stop = CancellationToken::new();
        let (fleet, tasks) = Fleet::start(store, settings(), stop.clone()).await.unwrap();
        fleet.evaluate_silence(Instant::now());
        let view = fleet.machine("host-a", 10).await.unwrap();
        assert_eq!(view.machine.id, id);
        assert_eq!(view.machine.health, Health::Healthy);
        assert_eq!(view.history.len(), 1);
        assert!(view.latest_sample.is_some());
        stop.cancel();
        tasks.join().await;
    }
}
