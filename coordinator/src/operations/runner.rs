//! Runs an operation: batch after batch, each machine through its steps; every step first reads the machine's
//! MAAS status and does only what is left, so resuming after a crash never repeats a deploy.

use chrono::Utc;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::{OpState, Operation, Operations, Step, StepRecord, Verification, user_data};
use crate::domain::Health;
use crate::maas::{self, NodeStatus};
use crate::verify::{MachineReport, Verdict};

/// How a step ended when it did not succeed.
enum Stop {
    Failed(Failure),
    Cancelled,
}

/// Why a step failed, with its cause kept; its words are what the operation records for the machine.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Maas(#[from] maas::Error),
    #[error(transparent)]
    Operations(#[from] super::OpError),
    #[error("{what}: {source}")]
    Store {
        what: &'static str,
        #[source]
        source: crate::store::StoreError,
    },
    #[error(transparent)]
    UserData(#[from] user_data::RenderError),
    /// The coordinator's own finding (a deadline passed, MAAS shows another status, a verdict), in words.
    #[error("{0}")]
    Said(String),
}

impl Stop {
    fn failed(cause: impl Into<Failure>) -> Stop {
        Stop::Failed(cause.into())
    }

    fn said(words: impl Into<String>) -> Stop {
        Stop::Failed(Failure::Said(words.into()))
    }
}

type Shared = std::sync::Arc<Mutex<Operation>>;

/// Drives `op` to its end (or until `cancel`); every change is persisted before the next MAAS call.
pub async fn run_operation(ops: Operations, op: Operation, cancel: CancellationToken) {
    let id = op.id.clone();
    let batches: std::collections::BTreeSet<u32> =
        op.machines.iter().filter(|m| !m.state.is_final()).map(|m| m.batch).collect();
    let shared: Shared = std::sync::Arc::new(Mutex::new(op));
    for batch in batches {
        if ops.inner.stop.is_cancelled() {
            // The coordinator is stopping: leave the record as it is, the next run resumes it.
            return;
        }
        let over_limit = {
            let op = shared.lock().await;
            op.failures() > op.max_failures
        };
        if over_limit || cancel.is_cancelled() {
            break;
        }
        let indexes: Vec<usize> = {
            let op = shared.lock().await;
            op.machines
                .iter()
                .enumerate()
                .filter(|(_, m)| m.batch == batch && !m.state.is_final())
                .map(|(i, _)| i)
                .collect()
        };
        let runs = indexes.into_iter().map(|index| run_machine(&ops, &shared, index, &cancel));
        futures::future::join_all(runs).await;
    }
    if ops.inner.stop.is_cancelled() && !cancel_requested(&ops, &cancel) {
        return;
    }
    let mut op = shared.lock().await;
    let cancelled = cancel.is_cancelled();
    let failures = op.failures();
    let stopped_early = failures > op.max_failures;
    for m in op.machines.iter_mut().filter(|m| !m.state.is_final()) {
        m.state = OpState::Cancelled;
        m.message = if cancelled {
            "cancelled by an operator before it started".into()
        } else {
            format!("not started: the rollout stopped after {failures} failed machine(s)")
        };
    }
    op.state = if cancelled {
        OpState::Cancelled
    } else if failures > 0 {
        OpState::Failed
    } else {
        OpState::Succeeded
    };
    op.message = match (cancelled, stopped_early) {
        (true, _) => "cancelled by an operator".into(),
        (false, true) => format!("stopped: {failures} machine(s) failed, more than --max-failures {}", op.max_failures),
        (false, false) if failures > 0 => format!("{failures} machine(s) failed"),
        _ => "every machine redeployed".into(),
    };
    op.finished_at = Some(Utc::now());
    if let Err(error) = ops.save(&mut op).await {
        tracing::error!(%error, operation = %id, "cannot record the end of an operation");
    }
    tracing::info!(operation = %id, state = op.state.as_str(), message = %op.message, "operation ended");
}

/// An operator's cancel (as opposed to the coordinator stopping, which also cancels the child token).
fn cancel_requested(ops: &Operations, cancel: &CancellationToken) -> bool {
    cancel.is_cancelled() && !ops.inner.stop.is_cancelled()
}

async fn run_machine(ops: &Operations, shared: &Shared, index: usize, cancel: &CancellationToken) {
    let start = {
        let mut op = shared.lock().await;
        let m = &mut op.machines[index];
        m.state = OpState::Running;
        // Resume at the step the record was in (its intent was persisted before MAAS was called).
        m.step().map(|s| if s.state.is_final() { next(s.step) } else { Some(s.step) }).unwrap_or(Some(Step::Release))
    };
    let mut step = start;
    while let Some(current) = step {
        if ops.inner.stop.is_cancelled() {
            return;
        }
        if cancel.is_cancelled() {
            finish_machine(ops, shared, index, OpState::Cancelled, "cancelled by an operator".into()).await;
            return;
        }
        begin(ops, shared, index, current).await;
        let outcome = run_step(ops, shared, index, current, cancel).await;
        match outcome {
            Ok((state, message)) => {
                end_step(ops, shared, index, state, message).await;
                step = next(current);
            }
            Err(Stop::Cancelled) if ops.inner.stop.is_cancelled() => return,
            Err(Stop::Cancelled) => {
                end_step(ops, shared, index, OpState::Cancelled, "cancelled by an operator".into()).await;
                finish_machine(ops, shared, index, OpState::Cancelled, "cancelled by an operator".into()).await;
                return;
            }
            Err(Stop::Failed(failure)) => {
                let message = failure.to_string();
                end_step(ops, shared, index, OpState::Failed, message.clone()).await;
                finish_machine(ops, shared, index, OpState::Failed, message).await;
                return;
            }
        }
    }
    finish_machine(ops, shared, index, OpState::Succeeded, "redeployed, enrolled, verified and healthy".into()).await;
}

fn next(step: Step) -> Option<Step> {
    Step::ALL.iter().position(|s| *s == step).and_then(|i| Step::ALL.get(i + 1).copied())
}

/// Records the step's start, unless the record already shows it running (a resume).
async fn begin(ops: &Operations, shared: &Shared, index: usize, step: Step) {
    let mut op = shared.lock().await;
    let m = &mut op.machines[index];
    if m.step().is_some_and(|s| s.step == step && !s.state.is_final()) {
        return;
    }
    m.steps.push(StepRecord {
        step,
        state: OpState::Running,
        started_at: Utc::now(),
        finished_at: None,
        message: String::new(),
    });
    persist(ops, &mut op).await;
}

async fn end_step(ops: &Operations, shared: &Shared, index: usize, state: OpState, message: String) {
    let mut op = shared.lock().await;
    if let Some(s) = op.machines[index].steps.last_mut() {
        s.state = state;
        s.finished_at = Some(Utc::now());
        s.message = message;
    }
    persist(ops, &mut op).await;
}

async fn finish_machine(ops: &Operations, shared: &Shared, index: usize, state: OpState, message: String) {
    let mut op = shared.lock().await;
    let m = &mut op.machines[index];
    m.state = state;
    m.message = message;
    tracing::info!(operation = %op.id, hostname = %op.machines[index].hostname, state = state.as_str(), "machine redeploy ended");
    persist(ops, &mut op).await;
}

async fn persist(ops: &Operations, op: &mut Operation) {
    if let Err(error) = ops.save(op).await {
        tracing::error!(%error, operation = %op.id, "cannot persist the operation; it may repeat a step after a restart");
    }
}

/// Waits `poll_interval`, or returns `Stop::Cancelled`.
async fn pause(ops: &Operations, cancel: &CancellationToken) -> Result<(), Stop> {
    tokio::select! {
        _ = cancel.cancelled() => Err(Stop::Cancelled),
        _ = tokio::time::sleep(ops.inner.config.poll_interval) => Ok(()),
    }
}

/// Reads the machine, retrying retryable failures until `deadline`.
async fn read(
    ops: &Operations,
    system_id: &str,
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
) -> Result<maas::Machine, Stop> {
    let maas = ops.maas().map_err(Stop::failed)?;
    loop {
        match maas.machine(system_id).await {
            Ok(machine) => return Ok(machine),
            Err(error) if error.is_retryable() && tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, system_id, "cannot read the machine from MAAS; retrying");
                pause(ops, cancel).await?;
            }
            Err(error) => return Err(Stop::failed(error)),
        }
    }
}

/// MAAS's own words for a failed machine: its status, then the latest error event's description.
async fn maas_failure(ops: &Operations, machine: &maas::Machine) -> String {
    let mut text =
        format!("MAAS: {}", if machine.status_name.is_empty() { machine.status.label() } else { &machine.status_name });
    let mut detail = machine.error_description.clone();
    if detail.is_empty()
        && let Ok(maas) = ops.maas()
    {
        let query = maas::EventQuery { ids: vec![machine.system_id.clone()], limit: Some(20), ..Default::default() };
        if let Ok(page) = maas.events(&query).await
            && let Some(event) =
                page.events.iter().find(|e| e.level == maas::EventLevel::Error && !e.description.is_empty())
        {
            detail = event.description.clone();
        }
    }
    if detail.is_empty() {
        detail = machine.status_message.clone().unwrap_or_default();
    }
    if !detail.is_empty() {
        text.push_str(": ");
        text.push_str(&detail);
    }
    text
}

fn is_failed(status: NodeStatus) -> bool {
    matches!(
        status,
        NodeStatus::FailedDeployment
            | NodeStatus::FailedReleasing
            | NodeStatus::FailedDiskErasing
            | NodeStatus::Broken
            | NodeStatus::FailedCommissioning
    )
}

/// Runs one step of one machine's redeploy: the step's own function, with what every step reads.
async fn run_step(
    ops: &Operations,
    shared: &Shared,
    index: usize,
    step: Step,
    cancel: &CancellationToken,
) -> Result<(OpState, String), Stop> {
    let (system_id, hostname, distro, template, token_id, machine_id) = {
        let op = shared.lock().await;
        let m = &op.machines[index];
        (
            m.system_id.clone(),
            m.hostname.clone(),
            op.distro_series.clone(),
            op.user_data_template.clone(),
            m.token_id.clone(),
            m.machine_id.clone(),
        )
    };
    let maas = ops.maas().map_err(Stop::failed)?.clone();
    let context =
        StepContext { ops, shared, index, cancel, system_id, hostname, distro, template, token_id, machine_id, maas };
    match step {
        Step::Release => release(context).await,
        Step::WaitReady => wait_ready(context).await,
        Step::Allocate => allocate(context).await,
        Step::Deploy => deploy(context).await,
        Step::WaitDeployed => wait_deployed(context).await,
        Step::WaitEnrolled => wait_enrolled(context).await,
        Step::Verify => verify(context).await,
        Step::WaitHealthy => wait_healthy(context).await,
    }
}

/// What every step of one machine's redeploy reads.
struct StepContext<'a> {
    ops: &'a Operations,
    shared: &'a Shared,
    index: usize,
    cancel: &'a CancellationToken,
    system_id: String,
    hostname: String,
    distro: String,
    template: Option<String>,
    token_id: Option<String>,
    machine_id: Option<String>,
    maas: maas::Client,
}

async fn release(step: StepContext<'_>) -> Result<(OpState, String), Stop> {
    let StepContext { ops, cancel, system_id, maas, .. } = step;
    let config = &ops.inner.config;
    let now = tokio::time::Instant::now;
    let machine = read(ops, &system_id, now() + config.release_timeout, cancel).await?;
    if matches!(machine.status, NodeStatus::Ready | NodeStatus::Releasing | NodeStatus::DiskErasing) {
        return Ok((OpState::Skipped, format!("MAAS status {}; nothing to release", machine.status.label())));
    }
    let options = maas::ReleaseOptions { comment: Some("metalfleet: redeploy".into()), ..Default::default() };
    let released = maas.release(&system_id, &options).await.map_err(Stop::failed)?;
    Ok((OpState::Succeeded, format!("MAAS status {}", released.status.label())))
}

async fn wait_ready(step: StepContext<'_>) -> Result<(OpState, String), Stop> {
    let StepContext { ops, cancel, system_id, hostname, .. } = step;
    let config = &ops.inner.config;
    let now = tokio::time::Instant::now;
    let deadline = now() + config.release_timeout;
    loop {
        let machine = read(ops, &system_id, deadline, cancel).await?;
        if machine.status == NodeStatus::Ready {
            return Ok((OpState::Succeeded, "MAAS status Ready".into()));
        }
        if is_failed(machine.status) {
            return Err(Stop::said(maas_failure(ops, &machine).await));
        }
        if now() >= deadline {
            return Err(Stop::said(format!(
                "{hostname} is still {} after {:?}; check it in MAAS",
                machine.status.label(),
                config.release_timeout
            )));
        }
        pause(ops, cancel).await?;
    }
}

async fn allocate(step: StepContext<'_>) -> Result<(OpState, String), Stop> {
    let StepContext { ops, cancel, system_id, maas, .. } = step;
    let config = &ops.inner.config;
    let now = tokio::time::Instant::now;
    let deadline = now() + config.release_timeout;
    let me = maas.whoami().await.map(|u| u.username).ok();
    loop {
        let machine = read(ops, &system_id, deadline, cancel).await?;
        if matches!(machine.status, NodeStatus::Allocated | NodeStatus::Deploying | NodeStatus::Deployed)
            && machine.owner.is_some()
            && machine.owner == me
        {
            return Ok((OpState::Skipped, format!("already {} to us", machine.status.label())));
        }
        let request = maas::AllocateRequest {
            system_id: Some(system_id.clone()),
            comment: Some("metalfleet: redeploy".into()),
            ..Default::default()
        };
        // allocate is never retried by the client: re-read (above) before sending it again.
        match maas.allocate(&request).await {
            Ok(m) => return Ok((OpState::Succeeded, format!("MAAS status {}", m.status.label()))),
            Err(error) if error.is_retryable() && now() < deadline => {
                tracing::warn!(%error, system_id, "allocate failed; re-reading the machine before retrying");
                pause(ops, cancel).await?;
            }
            Err(error) => return Err(Stop::failed(error)),
        }
    }
}

async fn deploy(step: StepContext<'_>) -> Result<(OpState, String), Stop> {
    let StepContext { ops, shared, index, cancel, system_id, hostname, distro, template, token_id, maas, .. } = step;
    let config = &ops.inner.config;
    let now = tokio::time::Instant::now;
    let machine = read(ops, &system_id, now() + config.deploy_timeout, cancel).await?;
    if matches!(machine.status, NodeStatus::Deploying | NodeStatus::Deployed) {
        return Ok((
            OpState::Skipped,
            format!("MAAS status {} already; the deploy is not sent again", machine.status.label()),
        ));
    }
    let context =
        ops.inner.deploy.clone().ok_or_else(|| Stop::said("this coordinator serves plaintext; deploys need TLS"))?;
    if let Some(old) = &token_id {
        // A deploy was intended but MAAS never took it: the old token is useless now.
        let _ = ops.inner.security.store.revoke_token(old.clone(), Utc::now()).await;
    }
    let (record, secret) =
        crate::enroll::mint_token_by(&ops.inner.security.store, Some(&hostname), context.token_ttl, 1, "redeploy")
            .await
            .map_err(|source| Stop::failed(Failure::Store { what: "cannot mint the enrollment token", source }))?;
    // The only way to replace this machine's identity: the agent enrolling with this token.
    ops.inner
        .security
        .store
        .bind_token_to_system(record.id.clone(), system_id.clone())
        .await
        .map_err(|source| Stop::failed(Failure::Store { what: "cannot bind the enrollment token", source }))?;
    {
        // The intent: which token this deploy carries, persisted before MAAS is asked.
        let mut op = shared.lock().await;
        op.machines[index].token_id = Some(record.id.clone());
        op.machines[index].machine_id = None;
        persist(ops, &mut op).await;
    }
    let values = user_data::Values {
        coordinator_url: &context.coordinator_url,
        artifacts_url: &context.artifacts_url,
        agent_sha256: &context.agent_sha256,
        ca_pem: &context.ca_pem,
        token: secret.expose(),
        hostname: &hostname,
    };
    let text = user_data::render(template.as_deref().unwrap_or(user_data::TEMPLATE), &values).map_err(Stop::failed)?;
    let options = maas::DeployOptions {
        distro_series: Some(distro.clone()),
        user_data: Some(text.into_bytes()),
        comment: Some("metalfleet: redeploy".into()),
        ..Default::default()
    };
    let deployed = maas.deploy(&system_id, &options).await.map_err(Stop::failed)?;
    Ok((OpState::Succeeded, format!("MAAS status {} ({distro}), token {}", deployed.status.label(), record.id)))
}

async fn wait_deployed(step: StepContext<'_>) -> Result<(OpState, String), Stop> {
    let StepContext { ops, cancel, system_id, hostname, .. } = step;
    let config = &ops.inner.config;
    let now = tokio::time::Instant::now;
    let deadline = now() + config.deploy_timeout;
    loop {
        let machine = read(ops, &system_id, deadline, cancel).await?;
        match machine.status {
            NodeStatus::Deployed => return Ok((OpState::Succeeded, "MAAS status Deployed".into())),
            status if is_failed(status) => return Err(Stop::said(maas_failure(ops, &machine).await)),
            NodeStatus::Ready | NodeStatus::Allocated => {
                return Err(Stop::said(format!(
                    "MAAS shows {hostname} {} while it should deploy; someone changed it in MAAS",
                    machine.status.label()
                )));
            }
            _ => {}
        }
        if now() >= deadline {
            return Err(Stop::said(format!("{hostname} did not deploy within {:?}", config.deploy_timeout)));
        }
        pause(ops, cancel).await?;
    }
}

async fn wait_enrolled(step: StepContext<'_>) -> Result<(OpState, String), Stop> {
    let StepContext { ops, shared, index, cancel, token_id, .. } = step;
    let config = &ops.inner.config;
    let now = tokio::time::Instant::now;
    let token = token_id.ok_or_else(|| Stop::said("no enrollment token was recorded for this deploy"))?;
    let deadline = now() + config.enroll_timeout;
    loop {
        match ops.inner.store.token_enrollment(&token).await {
            Ok(Some(machine_id)) => {
                let mut op = shared.lock().await;
                op.machines[index].machine_id = Some(machine_id.clone());
                return Ok((OpState::Succeeded, format!("agent enrolled as machine {machine_id} with token {token}")));
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "cannot read token enrollments; retrying"),
        }
        if now() >= deadline {
            return Err(Stop::said(format!(
                "no agent enrolled with this deploy's token within {:?}; check the machine's cloud-init log",
                config.enroll_timeout
            )));
        }
        pause(ops, cancel).await?;
    }
}

async fn verify(step: StepContext<'_>) -> Result<(OpState, String), Stop> {
    let StepContext { ops, cancel, system_id, machine_id, .. } = step;
    let config = &ops.inner.config;
    let now = tokio::time::Instant::now;
    let machine_id = machine_id.ok_or_else(|| Stop::said("no enrolled machine to verify"))?;
    verify_step(ops, &system_id, &machine_id, now() + config.healthy_timeout, cancel).await
}

async fn wait_healthy(step: StepContext<'_>) -> Result<(OpState, String), Stop> {
    let StepContext { ops, cancel, machine_id, .. } = step;
    let config = &ops.inner.config;
    let now = tokio::time::Instant::now;
    let machine_id = machine_id.ok_or_else(|| Stop::said("no enrolled machine to check"))?;
    let deadline = now() + config.healthy_timeout;
    loop {
        let view = ops.inner.fleet.machines().into_iter().find(|v| v.machine.id == machine_id);
        match view.as_ref().map(|v| v.machine.health) {
            Some(Health::Healthy) => return Ok((OpState::Succeeded, "healthy".into())),
            health if now() >= deadline => {
                return Err(Stop::said(format!(
                    "not healthy within {:?} (health {})",
                    config.healthy_timeout,
                    health.map(|h| h.as_str()).unwrap_or("unknown")
                )));
            }
            _ => pause(ops, cancel).await?,
        }
    }
}

/// What one look at a redeployed machine's verification says.
#[derive(Debug, PartialEq)]
enum Judged {
    /// The machine passes: the step succeeds with this message.
    Passed(String),
    /// Fail or drift: the machine's operation fails with the verdict summary.
    Failed(String),
    /// No verdict yet (no inventory, not matched yet): look again until the step's deadline; why.
    Waiting(String),
}

/// Judges `report` (the row of MAAS machine `system_id`) for the agent `machine_id` that enrolled with this
/// deploy's token. A row that still shows another agent, or none, is not this deploy's verdict yet.
fn judge(report: Option<&MachineReport>, system_id: &str, machine_id: &str) -> Judged {
    let Some(report) = report else {
        return Judged::Waiting(format!("the coordinator's MAAS view has no machine {system_id} yet"));
    };
    if report.machine_id.as_deref() != Some(machine_id) {
        return Judged::Waiting(format!("the new agent {machine_id} is not matched to {} yet", report.hostname));
    }
    let profile = report.profile.as_deref().map(|p| format!(" against profile {p}")).unwrap_or_default();
    match report.verdict {
        Verdict::Pass => Judged::Passed(format!("spec pass{profile} ({} fields checked)", report.fields.len())),
        Verdict::Fail | Verdict::Drift => Judged::Failed(format!(
            "spec {}{profile}: {}; see `fleetctl verify {}`",
            report.verdict, report.reason, report.hostname
        )),
        Verdict::Unknown => Judged::Waiting(report.reason.clone()),
    }
}

/// The verify step: the machine verified as `fleetctl verify` does (expected profile, commissioned baseline, live
/// inventory). Fail or drift fails the machine with the verdict summary; unknown (no data yet) waits for the
/// agent's inventory until `deadline`. Without a verification store it only waits for the inventory.
async fn verify_step(
    ops: &Operations,
    system_id: &str,
    machine_id: &str,
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
) -> Result<(OpState, String), Stop> {
    let Some(verification) = ops.verification().cloned() else {
        return inventory_only(ops, machine_id, deadline, cancel).await;
    };
    claim(ops, &verification, system_id, machine_id).await;
    loop {
        let judged =
            match crate::verify::verify_machine(verification.store.as_ref(), system_id, &verification.tolerances).await
            {
                Ok(report) => judge(report.as_ref(), system_id, machine_id),
                Err(error) => {
                    tracing::warn!(%error, system_id, "cannot read the verification inputs; retrying");
                    Judged::Waiting(format!("the store failed: {error}"))
                }
            };
        match judged {
            Judged::Passed(message) => return Ok((OpState::Succeeded, message)),
            Judged::Failed(message) => return Err(Stop::said(message)),
            Judged::Waiting(why) if tokio::time::Instant::now() >= deadline => {
                return Err(Stop::said(format!(
                    "spec unknown after {:?}: {why}; check the agent's log, then redeploy",
                    ops.inner.config.healthy_timeout
                )));
            }
            Judged::Waiting(_) => pause(ops, cancel).await?,
        }
    }
}

/// The deploy's token says which agent runs on `system_id` now: match that agent to the machine, and unmatch the
/// agent it had before the redeploy (which is gone; hostname matching would otherwise call the two a conflict
/// and keep the old one).
async fn claim(ops: &Operations, verification: &Verification, system_id: &str, machine_id: &str) {
    let store = &verification.store;
    let agents = match store.machines().await {
        Ok(agents) => agents,
        Err(error) => {
            tracing::warn!(%error, system_id, "cannot read the agents; leaving the match to the verification loop");
            return;
        }
    };
    for old in agents.iter().filter(|a| a.id != machine_id && a.system_id.as_deref() == Some(system_id)) {
        match store.set_system_id(&old.id, None).await {
            Ok(()) => {
                ops.inner.fleet.set_system_id(&old.id, None);
                tracing::info!(machine_id = %old.id, system_id, "the agent from before the redeploy is no longer matched");
            }
            Err(error) => tracing::warn!(%error, machine_id = %old.id, "cannot unmatch the previous agent"),
        }
    }
    let matched = agents.iter().any(|a| a.id == machine_id && a.system_id.as_deref() == Some(system_id));
    if !matched {
        match store.set_system_id(machine_id, Some(system_id.to_string())).await {
            Ok(()) => {
                ops.inner.fleet.set_system_id(machine_id, Some(system_id.to_string()));
                tracing::info!(machine_id, system_id, "agent matched to MAAS by its deploy token");
            }
            Err(error) => tracing::warn!(%error, machine_id, "cannot match the new agent"),
        }
    }
}

/// The verify step without a verification store: the live half only (the agent sent its inventory).
async fn inventory_only(
    ops: &Operations,
    machine_id: &str,
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
) -> Result<(OpState, String), Stop> {
    loop {
        let has_inventory = ops.inner.fleet.machine(machine_id, 0).await.is_ok_and(|v| v.inventory.is_some());
        if has_inventory {
            return Ok((OpState::Succeeded, "inventory received (no verification store to verify it)".into()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Stop::said("the agent sent no inventory in time; verification cannot run"));
        }
        pause(ops, cancel).await?;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::auth::Security;
    use crate::domain::maas::MaasMachine;
    use crate::domain::{BlockDevice, Enrollment, Inventory};
    use crate::fleet::{Fleet, FleetSettings};
    use crate::health::HealthThresholds;
    use crate::operations::{Config, DeployContext, OperationsStore, RedeployRequest};
    use crate::store::{MaasStore, SqliteStore, Store, StoreError, Takeover};
    use crate::verify::{Tolerances, VerifyStore};

    /// The stores, the fleet and the security state one engine (or two, one after another) runs on.
    struct Rig {
        dir: tempfile::TempDir,
        store: Arc<SqliteStore>,
        fleet: Arc<Fleet>,
        security: Arc<Security>,
        _fleet_stop: tokio_util::sync::DropGuard,
    }

    async fn rig() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path(), 10).unwrap());
        let settings = FleetSettings {
            thresholds: HealthThresholds::default(),
            heartbeat_interval: Duration::from_secs(1),
            write_queue: 16,
            evaluate_every: Duration::from_secs(3600),
            history_samples: 10,
        };
        let fleet_stop = CancellationToken::new();
        let (fleet, _tasks) = Fleet::start(store.clone(), settings, fleet_stop.clone()).await.unwrap();
        let security_store = crate::security_store::SecurityStore::open(dir.path()).unwrap();
        let security =
            Security::load(security_store, Default::default(), true, dir.path().to_path_buf()).await.unwrap();
        Rig { dir, store, fleet, security, _fleet_stop: fleet_stop.drop_guard() }
    }

    fn engine(rig: &Rig, maas: Option<maas::Client>, stop: CancellationToken) -> Operations {
        let config = Config {
            poll_interval: Duration::from_millis(20),
            healthy_timeout: Duration::from_millis(300),
            ..Config::default()
        };
        let deploy = DeployContext {
            coordinator_url: "https://127.0.0.1:1".into(),
            artifacts_url: "https://127.0.0.1:2".into(),
            agent_sha256: "0".repeat(64),
            ca_pem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into(),
            token_ttl: Duration::from_secs(600),
        };
        let store = OperationsStore::open(rig.dir.path()).unwrap();
        Operations::new(store, maas, rig.security.clone(), rig.fleet.clone(), config, Some(deploy), stop)
            .with_verify(rig.store.clone(), Tolerances::default())
    }

    fn maas_machine(system_id: &str, hostname: &str) -> MaasMachine {
        MaasMachine::deployed_for_tests(system_id, hostname)
    }

    /// What a machine like [`maas_machine`] reports, with `disks` disks.
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

    fn enrollment(agent: &str, hostname: &str) -> Enrollment {
        Enrollment {
            agent_id: agent.into(),
            hostname: hostname.into(),
            mac_addresses: vec![],
            agent_version: "t".into(),
        }
    }

    async fn enroll(fleet: &Fleet, agent: &str, hostname: &str) -> String {
        fleet.enroll(enrollment(agent, hostname), Takeover::default()).await.unwrap().id
    }

    /// An agent enrolling with a redeploy token bound to `system_id`.
    async fn take_over(fleet: &Fleet, agent: &str, hostname: &str, system_id: &str) -> String {
        let takeover = Takeover { system_id: Some(system_id.into()) };
        fleet.enroll(enrollment(agent, hostname), takeover).await.unwrap().id
    }

    fn check(report: Option<&MachineReport>, machine_id: &str, expected: &Judged) {
        assert_eq!(&judge(report, "aaa", machine_id), expected, "{report:#?}");
    }

    fn report(machine_id: Option<&str>, verdict: Verdict, reason: &str) -> MachineReport {
        MachineReport {
            hostname: "server1".into(),
            system_id: Some("aaa".into()),
            machine_id: machine_id.map(str::to_string),
            profile: Some("db".into()),
            baseline: None,
            verdict,
            reason: reason.into(),
            fields: vec![],
        }
    }

    #[test]
    fn judge_waits_for_this_deploys_agent_and_fails_on_fail_or_drift() {
        check(None, "m2", &Judged::Waiting("the coordinator's MAAS view has no machine aaa yet".into()));
        let old = report(Some("m1"), Verdict::Pass, "");
        check(Some(&old), "m2", &Judged::Waiting("the new agent m2 is not matched to server1 yet".into()));
        let unknown = report(Some("m2"), Verdict::Unknown, "the agent has not reported an inventory yet");
        check(Some(&unknown), "m2", &Judged::Waiting("the agent has not reported an inventory yet".into()));
        check(
            Some(&report(Some("m2"), Verdict::Pass, "")),
            "m2",
            &Judged::Passed("spec pass against profile db (0 fields checked)".into()),
        );
        let drift = report(Some("m2"), Verdict::Drift, "disk_count: live has 0 disks, commissioned 1");
        check(
            Some(&drift),
            "m2",
            &Judged::Failed(
                "spec drift against profile db: disk_count: live has 0 disks, commissioned 1; see `fleetctl verify server1`"
                    .into(),
            ),
        );
        let fail = report(Some("m2"), Verdict::Fail, "logical_cpus: the profile needs at least 8");
        assert!(matches!(judge(Some(&fail), "aaa", "m2"), Judged::Failed(m) if m.starts_with("spec fail")));
    }

    #[tokio::test]
    async fn verify_step_claims_the_machine_for_the_new_agent_and_gives_the_real_verdict() {
        let rig = rig().await;
        let stop = CancellationToken::new();
        let ops = engine(&rig, None, stop.clone());
        rig.store.record_maas_poll(vec![maas_machine("aaa", "server1")], vec![], Utc::now()).await.unwrap();
        // The agent from before the redeploy holds the match and has reported.
        let old = enroll(&rig.fleet, "agent-old", "server1").await;
        rig.store.set_system_id(&old, Some("aaa".into())).await.unwrap();
        rig.fleet.report_inventory(&old, inventory(1)).await.unwrap();
        // Without the deploy's token, another agent cannot take the name.
        let refused = rig.fleet.enroll(enrollment("agent-intruder", "server1"), Takeover::default()).await;
        assert!(
            matches!(refused, Err(crate::fleet::FleetError::Store(StoreError::HostnameTaken { .. }))),
            "{refused:?}"
        );
        // With it, the new agent takes the machine over: same machine, the old agent's inventory forgotten.
        let new = take_over(&rig.fleet, "agent-new", "server1", "aaa").await;
        assert_eq!(new, old, "the machine keeps its identity across a redeploy");
        assert_eq!(rig.store.machine(&new).await.unwrap().unwrap().agent_id, "agent-new");
        let soon = || tokio::time::Instant::now() + Duration::from_millis(150);

        // No inventory yet: unknown, waited for until the deadline, then the machine fails with the reason.
        let Err(Stop::Failed(message)) = verify_step(&ops, "aaa", &new, soon(), &stop).await else {
            panic!("an agent without inventory cannot pass");
        };
        let message = message.to_string();
        assert!(message.starts_with("spec unknown") && message.contains("inventory"), "{message}");
        assert_eq!(rig.store.machine(&new).await.unwrap().unwrap().system_id.as_deref(), Some("aaa"));

        rig.fleet.report_inventory(&new, inventory(1)).await.unwrap();
        let passed = verify_step(&ops, "aaa", &new, soon(), &stop).await.ok().expect("the same specs pass");
        assert_eq!(passed.0, OpState::Succeeded);
        assert!(passed.1.starts_with("spec pass"), "{}", passed.1);

        // A later redeploy whose agent reports a disk fewer than commissioned drifts: the machine fails.
        let newer = take_over(&rig.fleet, "agent-newer", "server1", "aaa").await;
        rig.fleet.report_inventory(&newer, inventory(0)).await.unwrap();
        let Err(Stop::Failed(message)) = verify_step(&ops, "aaa", &newer, soon(), &stop).await else {
            panic!("a lost disk is drift");
        };
        let message = message.to_string();
        assert!(message.starts_with("spec drift") && message.contains("disk_count"), "{message}");
        stop.cancel();
    }

    /// A stopping coordinator leaves the running step recorded as started; the next run resumes it without
    /// deploying again, and its verify step gives the real verdict.
    #[tokio::test]
    async fn shutdown_joins_the_runners_and_the_next_run_resumes_and_verifies() {
        let mut sim_config = maas_sim::Config::for_tests();
        sim_config.enlisted = true;
        let sim = maas_sim::start(sim_config).await.unwrap();
        let rig = rig().await;
        let key_file = rig.dir.path().join("maas.key");
        std::fs::write(&key_file, sim.api_key()).unwrap();
        std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let mut maas_config = maas::Config::new(sim.base_url().parse().unwrap(), key_file);
        maas_config.retry_backoff = Duration::from_millis(10);
        let client = maas::Client::new(&maas_config).unwrap();

        let stop = CancellationToken::new();
        let ops = engine(&rig, Some(client.clone()), stop.clone());
        let mut updates = ops.subscribe();
        let request = RedeployRequest { machines: vec!["server1".into()], max_unavailable: 1, ..Default::default() };
        let (op, _) = ops.redeploy(request).await.unwrap();
        let id = op.unwrap().id;
        let in_step = |op: &Operation, step: Step| op.machines[0].step().is_some_and(|s| s.step == step);
        tokio::time::timeout(Duration::from_secs(30), async {
            while !updates.recv().await.is_ok_and(|op| in_step(&op, Step::WaitEnrolled)) {}
        })
        .await
        .expect("the machine deploys and waits for its agent");

        assert!(ops.shutdown(Duration::from_secs(5)).await, "the runners stop within the grace period");
        let stored = ops.store().get(&id).await.unwrap().unwrap();
        assert_eq!(stored.state, OpState::Running, "a shutdown is not an end: {stored:#?}");
        let step = stored.machines[0].step().unwrap();
        assert_eq!((step.step, step.state), (Step::WaitEnrolled, OpState::Running), "{stored:#?}");

        // The next run: the agent enrolls with the deploy's token; MAAS's view shows specs it matches.
        let stop = CancellationToken::new();
        let ops = engine(&rig, Some(client.clone()), stop.clone());
        let mut updates = ops.subscribe();
        assert_eq!(ops.resume().await.unwrap(), 1);
        let system_id = stored.machines[0].system_id.clone();
        rig.store.record_maas_poll(vec![maas_machine(&system_id, "server1")], vec![], Utc::now()).await.unwrap();
        let agent = enroll(&rig.fleet, "agent-1", "server1").await;
        rig.fleet.report_inventory(&agent, inventory(1)).await.unwrap();
        let token = stored.machines[0].token_id.clone().unwrap();
        ops.store().record_token_enrollment(&token, &agent, "agent-1", Utc::now()).await.unwrap();
        let verified = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Ok(op) = updates.recv().await
                    && let Some(s) = op.machines[0].steps.iter().find(|s| s.step == Step::Verify && s.state.is_final())
                {
                    return s.clone();
                }
            }
        })
        .await
        .expect("the resumed operation reaches its verify step");
        assert_eq!(verified.state, OpState::Succeeded, "{verified:#?}");
        assert!(verified.message.starts_with("spec pass"), "{verified:#?}");
        let deploys = sim.request_log().iter().filter(|r| r.op.as_deref() == Some("deploy") && r.status == 200).count();
        assert_eq!(deploys, 1, "resuming never deploys twice");

        stop.cancel();
        assert!(ops.shutdown(Duration::from_secs(5)).await);
        sim.shutdown().await;
    }
}
