//! Runs an operation: batch after batch, each machine through its steps; every step first reads the machine's
//! MAAS status and does only what is left, so resuming after a crash never repeats a deploy.

use chrono::Utc;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::{OpState, Operation, Operations, Step, StepRecord, user_data};
use crate::domain::Health;
use crate::maas::{self, NodeStatus};

/// How a step ended when it did not succeed.
enum Stop {
    Failed(String),
    Cancelled,
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
            Err(Stop::Failed(message)) => {
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
    let maas = ops.maas().map_err(|e| Stop::Failed(e.to_string()))?;
    loop {
        match maas.machine(system_id).await {
            Ok(machine) => return Ok(machine),
            Err(error) if error.is_retryable() && tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, system_id, "cannot read the machine from MAAS; retrying");
                pause(ops, cancel).await?;
            }
            Err(error) => return Err(Stop::Failed(error.to_string())),
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
    let config = &ops.inner.config;
    let maas = ops.maas().map_err(|e| Stop::Failed(e.to_string()))?.clone();
    let now = tokio::time::Instant::now;
    match step {
        Step::Release => {
            let machine = read(ops, &system_id, now() + config.release_timeout, cancel).await?;
            if matches!(machine.status, NodeStatus::Ready | NodeStatus::Releasing | NodeStatus::DiskErasing) {
                return Ok((OpState::Skipped, format!("MAAS status {}; nothing to release", machine.status.label())));
            }
            let options = maas::ReleaseOptions { comment: Some("metalfleet: redeploy".into()), ..Default::default() };
            let released = maas.release(&system_id, &options).await.map_err(|e| Stop::Failed(e.to_string()))?;
            Ok((OpState::Succeeded, format!("MAAS status {}", released.status.label())))
        }
        Step::WaitReady => {
            let deadline = now() + config.release_timeout;
            loop {
                let machine = read(ops, &system_id, deadline, cancel).await?;
                if machine.status == NodeStatus::Ready {
                    return Ok((OpState::Succeeded, "MAAS status Ready".into()));
                }
                if is_failed(machine.status) {
                    return Err(Stop::Failed(maas_failure(ops, &machine).await));
                }
                if now() >= deadline {
                    return Err(Stop::Failed(format!(
                        "{hostname} is still {} after {:?}; check it in MAAS",
                        machine.status.label(),
                        config.release_timeout
                    )));
                }
                pause(ops, cancel).await?;
            }
        }
        Step::Allocate => {
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
                    Err(error) => return Err(Stop::Failed(error.to_string())),
                }
            }
        }
        Step::Deploy => {
            let machine = read(ops, &system_id, now() + config.deploy_timeout, cancel).await?;
            if matches!(machine.status, NodeStatus::Deploying | NodeStatus::Deployed) {
                return Ok((
                    OpState::Skipped,
                    format!("MAAS status {} already; the deploy is not sent again", machine.status.label()),
                ));
            }
            let context = ops
                .inner
                .deploy
                .clone()
                .ok_or_else(|| Stop::Failed("this coordinator serves plaintext; deploys need TLS".into()))?;
            if let Some(old) = &token_id {
                // A deploy was intended but MAAS never took it: the old token is useless now.
                let _ = ops.inner.security.store.revoke_token(old.clone(), Utc::now()).await;
            }
            let (record, secret) = crate::enroll::mint_token_by(
                &ops.inner.security.store,
                Some(&hostname),
                context.token_ttl,
                1,
                "redeploy",
            )
            .await
            .map_err(|e| Stop::Failed(format!("cannot mint the enrollment token: {e}")))?;
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
            let text = user_data::render(template.as_deref().unwrap_or(user_data::TEMPLATE), &values)
                .map_err(|e| Stop::Failed(e.to_string()))?;
            let options = maas::DeployOptions {
                distro_series: Some(distro.clone()),
                user_data: Some(text.into_bytes()),
                comment: Some("metalfleet: redeploy".into()),
                ..Default::default()
            };
            let deployed = maas.deploy(&system_id, &options).await.map_err(|e| Stop::Failed(e.to_string()))?;
            Ok((OpState::Succeeded, format!("MAAS status {} ({distro}), token {}", deployed.status.label(), record.id)))
        }
        Step::WaitDeployed => {
            let deadline = now() + config.deploy_timeout;
            loop {
                let machine = read(ops, &system_id, deadline, cancel).await?;
                match machine.status {
                    NodeStatus::Deployed => return Ok((OpState::Succeeded, "MAAS status Deployed".into())),
                    status if is_failed(status) => return Err(Stop::Failed(maas_failure(ops, &machine).await)),
                    NodeStatus::Ready | NodeStatus::Allocated => {
                        return Err(Stop::Failed(format!(
                            "MAAS shows {hostname} {} while it should deploy; someone changed it in MAAS",
                            machine.status.label()
                        )));
                    }
                    _ => {}
                }
                if now() >= deadline {
                    return Err(Stop::Failed(format!("{hostname} did not deploy within {:?}", config.deploy_timeout)));
                }
                pause(ops, cancel).await?;
            }
        }
        Step::WaitEnrolled => {
            let token =
                token_id.ok_or_else(|| Stop::Failed("no enrollment token was recorded for this deploy".into()))?;
            let deadline = now() + config.enroll_timeout;
            loop {
                match ops.inner.store.token_enrollment(&token).await {
                    Ok(Some(machine_id)) => {
                        let mut op = shared.lock().await;
                        op.machines[index].machine_id = Some(machine_id.clone());
                        return Ok((
                            OpState::Succeeded,
                            format!("agent enrolled as machine {machine_id} with token {token}"),
                        ));
                    }
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "cannot read token enrollments; retrying"),
                }
                if now() >= deadline {
                    return Err(Stop::Failed(format!(
                        "no agent enrolled with this deploy's token within {:?}; check the machine's cloud-init log",
                        config.enroll_timeout
                    )));
                }
                pause(ops, cancel).await?;
            }
        }
        Step::Verify => {
            let machine_id = machine_id.ok_or_else(|| Stop::Failed("no enrolled machine to verify".into()))?;
            verify_step(ops, &machine_id, now() + config.healthy_timeout, cancel).await
        }
        Step::WaitHealthy => {
            let machine_id = machine_id.ok_or_else(|| Stop::Failed("no enrolled machine to check".into()))?;
            let deadline = now() + config.healthy_timeout;
            loop {
                let view = ops.inner.fleet.machines().into_iter().find(|v| v.machine.id == machine_id);
                match view.as_ref().map(|v| v.machine.health) {
                    Some(Health::Healthy) => return Ok((OpState::Succeeded, "healthy".into())),
                    health if now() >= deadline => {
                        return Err(Stop::Failed(format!(
                            "not healthy within {:?} (health {})",
                            config.healthy_timeout,
                            health.map(|h| h.as_str()).unwrap_or("unknown")
                        )));
                    }
                    _ => pause(ops, cancel).await?,
                }
            }
        }
    }
}

/// The verify step. Until the verification module offers `verify_machine`, it checks that the new agent sent
/// its inventory (the live half of verification).
async fn verify_step(
    ops: &Operations,
    machine_id: &str,
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
) -> Result<(OpState, String), Stop> {
    loop {
        let has_inventory = ops.inner.fleet.machine(machine_id, 0).await.is_ok_and(|v| v.inventory.is_some());
        if has_inventory {
            return Ok((OpState::Succeeded, "inventory received".into()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Stop::Failed("the agent sent no inventory in time; verification cannot run".into()));
        }
        pause(ops, cancel).await?;
    }
}
