//! Redeploy operations: stored records that drive MAAS through release → deploy → enrollment → verify, one
//! machine or a rolling batch, and survive a coordinator restart.
//!
//! Layout:
//! - this file: the records ([`Operation`], [`MachineOp`], [`StepRecord`]), the `[operations]` config and
//!   [`Operations`], the engine the gRPC service calls (start, list, get, watch, cancel, power, forget).
//! - [`runner`]: one machine's steps, each deciding from MAAS's current status what is left to do.
//! - [`store`]: the operations tables and the token → machine enrollment record (in the `metalfleet-store` crate).
//! - [`user_data`]: the cloud-init user data that installs the agent.
//!
//! Invariants: an operation is persisted before every MAAS call that changes a machine (the step's intent), and
//! every step re-reads the machine first, so a resumed operation never deploys a machine twice. A machine is in
//! at most one unfinished operation.

pub mod runner;
pub mod user_data;

/// The operations tables live in the `metalfleet-store` crate.
pub use ::store::operations as store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use chrono::Utc;
use metalfleet_common::config::bounds::{Problems, limits};
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Security;
use crate::fleet::Fleet;
use crate::maas;
use crate::store::StoreError;
use crate::verify::{Tolerances, VerifySources};

pub use ::store::OperationsStore;
pub use model::operations::{MachineOp, OpState, Operation, Planned, PowerAction, RedeployRequest, Step, StepRecord};

/// The `[operations]` table of the coordinator's config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How often a waiting step re-reads MAAS (and the store, for enrollment and health).
    #[serde(with = "humantime_serde", default = "default_poll_interval")]
    pub poll_interval: Duration,
    /// How long release + wait Ready may take.
    #[serde(with = "humantime_serde", default = "default_release_timeout")]
    pub release_timeout: Duration,
    /// How long deploy + wait Deployed may take.
    #[serde(with = "humantime_serde", default = "default_deploy_timeout")]
    pub deploy_timeout: Duration,
    /// How long after Deployed the new agent may take to enroll.
    #[serde(with = "humantime_serde", default = "default_enroll_timeout")]
    pub enroll_timeout: Duration,
    /// How long after enrollment the machine may take to verify and turn healthy.
    #[serde(with = "humantime_serde", default = "default_healthy_timeout")]
    pub healthy_timeout: Duration,
    /// The address agents dial, written into the user data; default `https://` + the gRPC listener.
    #[serde(default)]
    pub coordinator_url: Option<String>,
    /// The address servers download the agent from; default `https://` + the artifacts listener.
    #[serde(default)]
    pub artifacts_url: Option<String>,
    /// The distro series used when a redeploy names none.
    #[serde(default = "default_distro")]
    pub default_distro: String,
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_release_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_deploy_timeout() -> Duration {
    Duration::from_secs(60 * 60)
}
fn default_enroll_timeout() -> Duration {
    Duration::from_secs(20 * 60)
}
fn default_healthy_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_distro() -> String {
    "jammy".to_string()
}

impl Config {
    /// `[operations]`: a poll that does not hammer MAAS, step timeouts between a second and a day, addresses
    /// and a distro that are not blank.
    pub fn validate(&self, problems: &mut Problems) {
        problems.duration("poll_interval", self.poll_interval, limits::MIN_POLL..=HOUR);
        for (key, value) in [
            ("release_timeout", self.release_timeout),
            ("deploy_timeout", self.deploy_timeout),
            ("enroll_timeout", self.enroll_timeout),
            ("healthy_timeout", self.healthy_timeout),
        ] {
            problems.duration(key, value, MIN_STEP_TIMEOUT..=limits::DAY);
        }
        for (key, value) in [("coordinator_url", &self.coordinator_url), ("artifacts_url", &self.artifacts_url)] {
            if let Some(url) = value
                && (url.trim().is_empty() || url.chars().any(char::is_whitespace))
            {
                problems.push(key, format!("{url:?} is not an address; give e.g. https://main.maas:7443"));
            }
        }
        if self.default_distro.trim().is_empty() || self.default_distro.chars().any(char::is_whitespace) {
            problems.push("default_distro", format!("{:?} is not a series name such as jammy", self.default_distro));
        }
    }
}

/// Bounds of `[operations]`, documented in `deploy/coordinator.example.toml`.
const HOUR: Duration = Duration::from_secs(3600);
const MIN_STEP_TIMEOUT: Duration = Duration::from_secs(1);

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("every [operations] key has a default")
    }
}

/// Why an operations call failed; [`crate::grpc::operations_service`] maps each to a gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("MAAS is not configured; add a [maas] table to the coordinator's config")]
    NoMaas,
    #[error(transparent)]
    Maas(#[from] maas::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the engine needs to write a deploy's user data.
#[derive(Debug, Clone)]
pub struct DeployContext {
    pub coordinator_url: String,
    pub artifacts_url: String,
    pub agent_sha256: String,
    pub ca_pem: String,
    /// Lifetime of the enrollment token minted for one deploy.
    pub token_ttl: Duration,
}

/// The operations engine. Cheap to clone.
#[derive(Clone)]
pub struct Operations {
    inner: Arc<Inner>,
}

struct Inner {
    store: OperationsStore,
    maas: Option<maas::Client>,
    security: Arc<Security>,
    fleet: Arc<Fleet>,
    config: Config,
    /// None when the coordinator serves plaintext: deploys need TLS for their tokens.
    deploy: Option<DeployContext>,
    /// The running operations' cancel tokens.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Serialises "check no machine is busy, then insert", so two redeploys cannot take one machine.
    admission: tokio::sync::Mutex<()>,
    /// Every persisted change (64: a watcher that falls behind re-reads the store).
    updates: broadcast::Sender<Operation>,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Spec verification for the verify step; set once, before any operation runs.
    verify: OnceLock<Verification>,
}

/// What the verify step needs to verify a machine the way `fleetctl verify` does.
#[derive(Clone)]
pub(crate) struct Verification {
    pub(crate) store: Arc<dyn VerifySources>,
    pub(crate) tolerances: Tolerances,
}

impl Operations {
    /// Builds the engine; call [`Operations::resume`] to pick up operations a previous run left unfinished.
    pub fn new(
        store: OperationsStore,
        maas: Option<maas::Client>,
        security: Arc<Security>,
        fleet: Arc<Fleet>,
        config: Config,
        deploy: Option<DeployContext>,
        stop: CancellationToken,
    ) -> Self {
        let (updates, _) = broadcast::channel(64);
        Operations {
            inner: Arc::new(Inner {
                store,
                maas,
                security,
                fleet,
                config,
                deploy,
                running: Mutex::new(HashMap::new()),
                admission: tokio::sync::Mutex::new(()),
                updates,
                stop,
                tasks: TaskTracker::new(),
                verify: OnceLock::new(),
            }),
        }
    }

    /// Gives the verify step the verification store and tolerances, so a redeployed machine is verified
    /// (expected profile, commissioned baseline, live inventory) before it counts as done. Call it before
    /// [`Operations::resume`]; a second call is ignored.
    #[must_use]
    pub fn with_verify(self, store: Arc<dyn VerifySources>, tolerances: Tolerances) -> Self {
        if self.inner.verify.set(Verification { store, tolerances }).is_err() {
            tracing::warn!("the operations engine already has its verification store; keeping the first");
        }
        self
    }

    fn verification(&self) -> Option<&Verification> {
        self.inner.verify.get()
    }

    pub fn store(&self) -> &OperationsStore {
        &self.inner.store
    }

    /// Restarts every unfinished operation from where its record says it was.
    ///
    /// # Errors
    /// The store failed.
    pub async fn resume(&self) -> Result<usize, StoreError> {
        let unfinished = self.inner.store.unfinished().await?;
        let count = unfinished.len();
        for op in unfinished {
            tracing::info!(operation = %op.id, "resuming an operation left unfinished by the previous run");
            self.spawn(op);
        }
        Ok(count)
    }

    /// Waits for the running operations to stop (after the stop token was cancelled).
    pub async fn join(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// Stops the engine for a coordinator shutdown: cancels its stop token (each runner finishes and records the
    /// MAAS call it is in, then leaves its record for the next run to resume) and waits up to `grace` for the
    /// runners. Returns false when they overran (a step may then be left as started; resuming re-reads MAAS).
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.inner.stop.cancel();
        let running = self.inner.running.lock().unwrap_or_else(PoisonError::into_inner).len();
        if running > 0 {
            tracing::info!(running, ?grace, "waiting for running operations to record their current step");
        }
        tokio::time::timeout(grace, self.join()).await.is_ok()
    }

    fn maas(&self) -> Result<&maas::Client, OpError> {
        self.inner.maas.as_ref().ok_or(OpError::NoMaas)
    }

    /// Plans a redeploy and, unless it is a dry run, stores and starts it.
    ///
    /// # Errors
    /// A bad request, an unknown or refused machine named explicitly, MAAS or the store failing.
    pub async fn redeploy(&self, request: RedeployRequest) -> Result<(Option<Operation>, Vec<Planned>), OpError> {
        let selectors =
            usize::from(request.tag.is_some()) + usize::from(request.pool.is_some()) + usize::from(request.all);
        if selectors > 1 || (selectors == 1 && !request.machines.is_empty()) {
            return Err(OpError::InvalidArgument(
                "name machines, or give one of --tag, --pool, --all, not several".into(),
            ));
        }
        if selectors == 0 && request.machines.is_empty() {
            return Err(OpError::InvalidArgument("name at least one machine, or use --tag, --pool or --all".into()));
        }
        let maas = self.maas()?.clone();
        if self.inner.deploy.is_none() && !request.dry_run {
            return Err(OpError::FailedPrecondition(
                "redeploy needs the coordinator to serve TLS (agents enroll with a one-time token); restart it without --insecure".into(),
            ));
        }
        let _admission = self.inner.admission.lock().await;
        let all = maas.machines(&maas::MachineFilter::default()).await?;
        let mut chosen: Vec<&maas::Machine> = if request.machines.is_empty() {
            all.iter()
                .filter(|m| request.all || request.tag.as_ref().is_some_and(|t| m.tag_names.contains(t)))
                .chain(all.iter().filter(|m| {
                    request.pool.as_ref().is_some_and(|p| m.pool.as_ref().is_some_and(|pool| &pool.name == p))
                }))
                .collect()
        } else {
            let mut found = Vec::new();
            for name in &request.machines {
                let machine = all.iter().find(|m| &m.hostname == name || &m.system_id == name || &m.fqdn == name);
                match machine {
                    Some(m) if !found.iter().any(|f: &&maas::Machine| f.system_id == m.system_id) => found.push(m),
                    Some(_) => {}
                    None => {
                        return Err(OpError::NotFound(format!(
                            "MAAS has no machine {name}; see `fleetctl machines list`"
                        )));
                    }
                }
            }
            found
        };
        if chosen.is_empty() {
            return Err(OpError::NotFound("no MAAS machine matches; check the tag or pool name".into()));
        }
        chosen.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        let me = maas.whoami().await?.username;
        let busy = self.busy_machines().await?;
        let max_unavailable = request.max_unavailable.max(1);
        let mut plan = Vec::new();
        let mut index = 0u32;
        for m in chosen {
            let refused = if m.locked {
                Some(format!("{} is locked in MAAS; unlock it there first", m.hostname))
            } else if let Some(owner) = m.owner.as_ref().filter(|o| !o.is_empty() && **o != me) {
                Some(format!("{} is owned by MAAS user {owner}, not {me}; ask them to release it", m.hostname))
            } else {
                busy.get(&m.system_id)
                    .map(|op| format!("{} is already in operation {op}; wait for it or cancel it", m.hostname))
            };
            let batch = if refused.is_some() { 0 } else { index / max_unavailable };
            if refused.is_none() {
                index += 1;
            }
            plan.push(Planned { system_id: m.system_id.clone(), hostname: m.hostname.clone(), batch, refused });
        }
        if !request.machines.is_empty() {
            let refusals: Vec<&str> = plan.iter().filter_map(|p| p.refused.as_deref()).collect();
            if !refusals.is_empty() {
                return Err(OpError::FailedPrecondition(refusals.join("; ")));
            }
        }
        if plan.iter().all(|p| p.refused.is_some()) {
            let reasons: Vec<&str> = plan.iter().filter_map(|p| p.refused.as_deref()).collect();
            return Err(OpError::FailedPrecondition(format!("every machine is refused: {}", reasons.join("; "))));
        }
        if request.dry_run {
            return Ok((None, plan));
        }
        let distro = request.distro_series.clone().unwrap_or_else(|| self.inner.config.default_distro.clone());
        let mut op =
            Operation::new("redeploy", max_unavailable, request.max_failures, distro, request.user_data_template);
        for p in &plan {
            let mut machine = MachineOp::new(&p.system_id, &p.hostname, p.batch);
            if let Some(reason) = &p.refused {
                machine.state = OpState::Refused;
                machine.message = reason.clone();
            }
            op.machines.push(machine);
        }
        op.state = OpState::Running;
        self.inner.store.put(&op).await?;
        tracing::info!(operation = %op.id, machines = op.machines.len(), max_unavailable, "redeploy started");
        self.spawn(op.clone());
        Ok((Some(op), plan))
    }

    /// system_id → operation id of every machine in an unfinished operation.
    async fn busy_machines(&self) -> Result<HashMap<String, String>, StoreError> {
        let mut busy = HashMap::new();
        for op in self.inner.store.unfinished().await? {
            for m in op.machines.iter().filter(|m| !m.state.is_final()) {
                busy.insert(m.system_id.clone(), op.id.clone());
            }
        }
        Ok(busy)
    }

    fn spawn(&self, op: Operation) {
        let cancel = self.inner.stop.child_token();
        self.inner.running.lock().unwrap_or_else(PoisonError::into_inner).insert(op.id.clone(), cancel.clone());
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let id = op.id.clone();
            runner::run_operation(this.clone(), op, cancel).await;
            this.inner.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        });
    }

    /// Persists `op` and tells the watchers.
    async fn save(&self, op: &mut Operation) -> Result<(), StoreError> {
        op.updated_at = Utc::now();
        self.inner.store.put(op).await?;
        let _ = self.inner.updates.send(op.clone());
        Ok(())
    }

    /// Newest first.
    ///
    /// # Errors
    /// The store failed.
    pub async fn list(&self, limit: u32) -> Result<Vec<Operation>, OpError> {
        Ok(self.inner.store.list(limit).await?)
    }

    /// # Errors
    /// [`OpError::NotFound`], or the store failed.
    pub async fn get(&self, id: &str) -> Result<Operation, OpError> {
        self.inner
            .store
            .get(id)
            .await?
            .ok_or_else(|| OpError::NotFound(format!("no operation {id}; see `fleetctl operations list`")))
    }

    /// Every persisted change of every operation.
    pub fn subscribe(&self) -> broadcast::Receiver<Operation> {
        self.inner.updates.subscribe()
    }

    /// Asks a running operation to stop before its next step.
    ///
    /// # Errors
    /// [`OpError::NotFound`], or [`OpError::FailedPrecondition`] when it already ended.
    pub async fn cancel(&self, id: &str) -> Result<Operation, OpError> {
        let op = self.get(id).await?;
        if op.state.is_final() {
            return Err(OpError::FailedPrecondition(format!("operation {id} already ended ({})", op.state.as_str())));
        }
        let token = self.inner.running.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned();
        match token {
            Some(token) => token.cancel(),
            None => return Err(OpError::FailedPrecondition(format!("operation {id} is not running here"))),
        }
        // The runner writes the cancelled state; wait for it (bounded), so the answer shows it.
        let mut updates = self.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let op = self.get(id).await?;
            if op.state.is_final() {
                return Ok(op);
            }
            match tokio::time::timeout_at(deadline, updates.recv()).await {
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                _ => return Ok(op),
            }
        }
    }

    /// Finds a MAAS machine by hostname, FQDN or system_id.
    async fn find_machine(&self, name: &str) -> Result<maas::Machine, OpError> {
        let maas = self.maas()?;
        let all = maas.machines(&maas::MachineFilter::default()).await?;
        all.into_iter()
            .find(|m| m.hostname == name || m.system_id == name || m.fqdn == name)
            .ok_or_else(|| OpError::NotFound(format!("MAAS has no machine {name}; see `fleetctl machines list`")))
    }

    /// Powers a machine on, off, or off then on, through MAAS.
    ///
    /// # Errors
    /// An unknown machine, or MAAS's refusal with its message.
    pub async fn power(&self, name: &str, action: PowerAction) -> Result<maas::Machine, OpError> {
        let machine = self.find_machine(name).await?;
        let maas = self.maas()?;
        let id = machine.system_id.as_str();
        let comment = Some("metalfleet: fleetctl power");
        match action {
            PowerAction::On => Ok(maas.power_on(id, comment).await?),
            PowerAction::Off => {
                maas.power_off(id, maas::StopMode::Hard, comment).await?;
                Ok(maas.machine(id).await?)
            }
            PowerAction::Cycle => {
                maas.power_off(id, maas::StopMode::Hard, comment).await?;
                let deadline =
                    tokio::time::Instant::now() + self.inner.config.release_timeout.min(Duration::from_secs(300));
                loop {
                    let now = maas.machine(id).await?;
                    if now.power_state == maas::PowerState::Off {
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(OpError::FailedPrecondition(format!(
                            "{} did not power off in time (MAAS says {:?}); try again",
                            machine.hostname, now.power_state
                        )));
                    }
                    tokio::time::sleep(self.inner.config.poll_interval).await;
                }
                Ok(maas.power_on(id, comment).await?)
            }
        }
    }

    /// Forgets a machine: releases it in MAAS when asked, revokes its agents' certificates, keeps its history.
    ///
    /// # Errors
    /// An unknown machine, MAAS's refusal, or the store failing.
    pub async fn forget(&self, name: &str, release: bool) -> Result<(maas::Machine, u32, bool), OpError> {
        let machine = self.find_machine(name).await?;
        let busy = self.busy_machines().await?;
        if let Some(op) = busy.get(&machine.system_id) {
            return Err(OpError::FailedPrecondition(format!(
                "{} is in operation {op}; cancel it first (`fleetctl operations cancel {op}`)",
                machine.hostname
            )));
        }
        let mut released = false;
        if release {
            let options = maas::ReleaseOptions {
                comment: Some("metalfleet: fleetctl machines forget".into()),
                ..Default::default()
            };
            self.maas()?.release(&machine.system_id, &options).await?;
            released = true;
        }
        let mut revoked = 0;
        for view in self.inner.fleet.machines() {
            let m = &view.machine;
            if m.system_id.as_deref() == Some(machine.system_id.as_str()) || m.hostname == machine.hostname {
                revoked += self.inner.security.revoke_machine(&m.id).await?;
                self.inner.fleet.mark_revoked(&m.id);
            }
        }
        tracing::info!(system_id = %machine.system_id, hostname = %machine.hostname, revoked, released, "machine forgotten");
        Ok((machine, revoked, released))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_keys() {
        let config = Config::default();
        assert_eq!(config.poll_interval, Duration::from_secs(2));
        assert_eq!(config.default_distro, "jammy");
        let config: Config =
            toml::from_str("poll_interval = \"100ms\"\ncoordinator_url = \"https://m:7443\"\n").unwrap();
        assert_eq!(config.poll_interval, Duration::from_millis(100));
        assert!(toml::from_str::<Config>("bogus = 1\n").unwrap_err().to_string().contains("bogus"));
    }

    #[test]
    fn states_say_when_they_are_final() {
        assert!(!OpState::Running.is_final());
        assert!(!OpState::Pending.is_final());
        for s in [OpState::Succeeded, OpState::Failed, OpState::Cancelled, OpState::Refused, OpState::Skipped] {
            assert!(s.is_final(), "{s:?}");
        }
        assert_eq!(Step::ALL.map(Step::as_str)[3], "deploy");
    }

    #[test]
    fn operation_ids_are_unique_and_counts_failures() {
        let mut a = Operation::new("redeploy", 0, 1, "jammy".into(), None);
        let b = Operation::new("redeploy", 2, 1, "jammy".into(), None);
        assert_ne!(a.id, b.id);
        assert_eq!(a.max_unavailable, 1, "0 means 1");
        a.machines.push(MachineOp::new("s1", "server1", 0));
        a.machines[0].state = OpState::Failed;
        assert_eq!(a.failures(), 1);
    }
}
