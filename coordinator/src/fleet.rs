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
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::HealthThresholds;
use crate::domain::{Enrollment, Event, Health, Inventory, Machine, MachineView, NewEvent, Sample, kinds};
use crate::health;
use crate::store::{SampleWrite, Store, StoreError};

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

struct Live {
    machine: Machine,
    latest: Option<Sample>,
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
    machines: Mutex<HashMap<String, Live>>,
    pending: Mutex<VecDeque<Pending>>,
    pending_ready: Notify,
    events: broadcast::Sender<Event>,
    writes: mpsc::Sender<Queued>,
    /// Bounds the samples waiting in the queue; permits go back once the writer committed them.
    sample_budget: Arc<Semaphore>,
    /// Signalled when a stored inventory changed, so verification runs again (`crate::verify::task`).
    inventory_changed: Notify,
}

/// A heartbeat waiting for the writer, holding its share of the sample budget.
struct Queued {
    write: SampleWrite,
    permit: Option<OwnedSemaphorePermit>,
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
            machines.insert(machine.id.clone(), Live { machine, latest, silent_since: now });
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
        });
        let handles = vec![
            tokio::spawn(writer_task(fleet.store.clone(), queue, stop.clone())),
            tokio::spawn(event_task(fleet.clone(), stop.clone())),
            tokio::spawn(evaluator_task(fleet.clone(), stop)),
        ];
        Ok((fleet, FleetTasks { handles }))
    }

    pub fn settings(&self) -> &FleetSettings {
        &self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.machines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn queue(&self, pending: Pending) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).push_back(pending);
        self.pending_ready.notify_one();
    }

    /// Creates or finds the machine of `enrollment.agent_id` and returns it with its interval.
    ///
    /// # Errors
    /// The store failed.
    pub async fn enroll(&self, enrollment: Enrollment) -> Result<Machine, FleetError> {
        let interval_ms = u32::try_from(self.settings.heartbeat_interval.as_millis()).unwrap_or(u32::MAX);
        let now = Utc::now();
        let enrolled = self.store.enroll(enrollment, interval_ms, now).await?;
        let machine = enrolled.machine;
        let mut machines = self.lock();
        let live = machines.entry(machine.id.clone()).or_insert_with(|| Live {
            machine: machine.clone(),
            latest: None,
            silent_since: Instant::now(),
        });
        live.machine.hostname = machine.hostname.clone();
        live.machine.mac_addresses = machine.mac_addresses.clone();
        live.machine.agent_version = machine.agent_version.clone();
        live.machine.heartbeat_interval_ms = interval_ms;
        live.silent_since = Instant::now();
        let message = if enrolled.created {
            format!("{} enrolled (agent {})", machine.hostname, machine.agent_id)
        } else {
            format!("{} enrolled again (agent {})", machine.hostname, machine.agent_id)
        };
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

    /// Records a heartbeat: liveness now, the samples, and the health they imply.
    ///
    /// Waits while the write queue is full: that is the backpressure an agent's stream feels.
    ///
    /// # Errors
    /// [`FleetError::NotEnrolled`] for an unknown machine; [`FleetError::ShuttingDown`] once the
    /// writer has stopped.
    pub async fn heartbeat(&self, mut heartbeat: Heartbeat) -> Result<(), FleetError> {
        let received_at = Utc::now();
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
        let budget = self.sample_budget.clone();
        let wanted = write.samples.len().min(self.settings.write_queue * SAMPLES_PER_QUEUE_SLOT);
        let permit = match wanted {
            0 => None,
            n => Some(budget.acquire_many_owned(n as u32).await.map_err(|_| FleetError::ShuttingDown)?),
        };
        self.writes.send(Queued { write, permit }).await.map_err(|_| FleetError::ShuttingDown)
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
    async fn flush_pending(&self) {
        loop {
            let next = self.pending.lock().unwrap_or_else(PoisonError::into_inner).pop_front();
            let Some(Pending { event, health }) = next else { return };
            if let Some((health, reasons)) = health
                && let Err(error) = self.store.set_health(&event.machine_id, health, reasons).await
            {
                tracing::warn!(%error, machine_id = %event.machine_id, "storing a health change failed");
            }
            if event.kind.is_empty() {
                continue;
            }
            match self.store.append_event(event).await {
                Ok(event) => {
                    tracing::info!(machine_id = %event.machine_id, kind = %event.kind, "{}", event.message);
                    // No subscribers is fine: the event is stored.
                    let _ = self.events.send(event);
                }
                Err(error) => tracing::warn!(%error, "storing an event failed"),
            }
        }
    }
}

/// Applies a new health to `live` and describes the change, or returns `None` when nothing changed.
fn transition(live: &mut Live, health: Health, reasons: Vec<String>, at: DateTime<Utc>) -> Option<Pending> {
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

async fn writer_task(store: Arc<dyn Store>, mut queue: mpsc::Receiver<Queued>, stop: CancellationToken) {
    let mut batch: Vec<Queued> = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            biased;
            received = queue.recv() => received,
            _ = stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        commit(store.as_ref(), &mut batch).await;
    }
    // Drain what was accepted before the stop, so no acknowledged heartbeat is lost.
    queue.close();
    while let Some(queued) = queue.recv().await {
        batch.push(queued);
        if batch.len() >= MAX_BATCH {
            commit(store.as_ref(), &mut batch).await;
        }
    }
    commit(store.as_ref(), &mut batch).await;
    tracing::debug!("heartbeat writer stopped");
}

/// Writes `batch` in one transaction, then releases its share of the sample budget.
async fn commit(store: &dyn Store, batch: &mut Vec<Queued>) {
    if batch.is_empty() {
        return;
    }
    let (writes, permits): (Vec<SampleWrite>, Vec<_>) = batch.drain(..).map(|q| (q.write, q.permit)).unzip();
    let count = writes.len();
    if let Err(error) = store.record_samples(writes).await {
        tracing::warn!(%error, heartbeats = count, "writing heartbeats failed; these samples are lost");
    }
    drop(permits);
}

async fn event_task(fleet: Arc<Fleet>, stop: CancellationToken) {
    loop {
        fleet.flush_pending().await;
        tokio::select! {
            _ = fleet.pending_ready.notified() => {}
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
        let id = fleet.enroll(enrollment("a")).await.unwrap().id;
        let heartbeat =
            Heartbeat { machine_id: id.clone(), samples: vec![sample(50)], interval_ms: 2000, dropped_samples: 0 };
        fleet.heartbeat(heartbeat).await.unwrap();
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
        fleet.heartbeat(heartbeat).await.unwrap();
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
        let id = fleet.enroll(enrollment("a")).await.unwrap().id;
        for available in [50, 5, 50] {
            let heartbeat = Heartbeat {
                machine_id: id.clone(),
                samples: vec![sample(available)],
                interval_ms: 0,
                dropped_samples: 0,
            };
            fleet.heartbeat(heartbeat).await.unwrap();
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
        let id = fleet.enroll(enrollment("a")).await.unwrap().id;
        // More samples than the whole sample budget (64 slots x 4) and the history (100).
        let samples: Vec<Sample> = (0..300).map(|i| Sample { cpu_percent: f64::from(i), ..sample(50) }).collect();
        let heartbeat = Heartbeat { machine_id: id.clone(), samples, interval_ms: 0, dropped_samples: 0 };
        timeout(Duration::from_secs(10), fleet.heartbeat(heartbeat)).await.expect("no deadlock on the budget").unwrap();
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
        assert!(matches!(fleet.heartbeat(heartbeat).await, Err(FleetError::NotEnrolled(id)) if id == "ghost"));
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
            let id = fleet.enroll(enrollment("a")).await.unwrap().id;
            let heartbeat =
                Heartbeat { machine_id: id.clone(), samples: vec![sample(50)], interval_ms: 1000, dropped_samples: 0 };
            fleet.heartbeat(heartbeat).await.unwrap();
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
