//! Redeploy operations as records: an operation, its machines and their steps, in the order they run.
//!
//! The coordinator's `operations` module runs them; the store keeps them; fleetctl shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where an operation, a machine in it, or one step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Not started: locked, owned by another MAAS user, or busy in another operation.
    Refused,
    /// A step with nothing to do (e.g. release of a machine that is already Ready).
    Skipped,
}

impl OpState {
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Pending => "pending",
            OpState::Running => "running",
            OpState::Succeeded => "succeeded",
            OpState::Failed => "failed",
            OpState::Cancelled => "cancelled",
            OpState::Refused => "refused",
            OpState::Skipped => "skipped",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, OpState::Pending | OpState::Running)
    }
}

/// A machine redeploy's steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Release,
    WaitReady,
    Allocate,
    Deploy,
    WaitDeployed,
    WaitEnrolled,
    Verify,
    WaitHealthy,
}

impl Step {
    pub const ALL: [Step; 8] = [
        Step::Release,
        Step::WaitReady,
        Step::Allocate,
        Step::Deploy,
        Step::WaitDeployed,
        Step::WaitEnrolled,
        Step::Verify,
        Step::WaitHealthy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Release => "release",
            Step::WaitReady => "wait_ready",
            Step::Allocate => "allocate",
            Step::Deploy => "deploy",
            Step::WaitDeployed => "wait_deployed",
            Step::WaitEnrolled => "wait_enrolled",
            Step::Verify => "verify",
            Step::WaitHealthy => "wait_healthy",
        }
    }
}

/// One step as it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: Step,
    pub state: OpState,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What MAAS (or the coordinator) said.
    pub message: String,
}

/// One machine's redeploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineOp {
    pub system_id: String,
    pub hostname: String,
    /// Batches run one after another; machines of one batch run together.
    pub batch: u32,
    pub state: OpState,
    pub message: String,
    /// The enrollment token minted for the current deploy (its id; the secret is never stored).
    pub token_id: Option<String>,
    /// The coordinator's machine id of the agent that enrolled with that token.
    pub machine_id: Option<String>,
    pub steps: Vec<StepRecord>,
}

impl MachineOp {
    pub fn new(system_id: &str, hostname: &str, batch: u32) -> Self {
        MachineOp {
            system_id: system_id.to_string(),
            hostname: hostname.to_string(),
            batch,
            state: OpState::Pending,
            message: String::new(),
            token_id: None,
            machine_id: None,
            steps: Vec::new(),
        }
    }

    /// The current (last started) step.
    pub fn step(&self) -> Option<&StepRecord> {
        self.steps.last()
    }
}

/// A redeploy of one or more machines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: String,
    pub kind: String,
    pub state: OpState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub message: String,
    pub max_unavailable: u32,
    pub max_failures: u32,
    pub distro_series: String,
    /// The operator's own user-data template, when given.
    pub user_data_template: Option<String>,
    pub machines: Vec<MachineOp>,
}

impl Operation {
    pub fn new(
        kind: &str,
        max_unavailable: u32,
        max_failures: u32,
        distro_series: String,
        user_data_template: Option<String>,
    ) -> Self {
        let now = Utc::now();
        Operation {
            id: format!("op-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            kind: kind.to_string(),
            state: OpState::Pending,
            created_at: now,
            updated_at: now,
            finished_at: None,
            message: String::new(),
            max_unavailable: max_unavailable.max(1),
            max_failures,
            distro_series,
            user_data_template,
            machines: Vec::new(),
        }
    }

    pub fn failures(&self) -> u32 {
        self.machines.iter().filter(|m| m.state == OpState::Failed).count() as u32
    }
}

/// What a redeploy request asks for, after the wire.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedeployRequest {
    pub machines: Vec<String>,
    pub tag: Option<String>,
    pub pool: Option<String>,
    pub all: bool,
    pub distro_series: Option<String>,
    pub user_data_template: Option<String>,
    pub dry_run: bool,
    pub max_unavailable: u32,
    pub max_failures: u32,
}

/// One machine in a redeploy's plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub system_id: String,
    pub hostname: String,
    pub batch: u32,
    /// Why it is skipped, when it is.
    pub refused: Option<String>,
}

/// `fleetctl power` actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    On,
    Off,
    Cycle,
}
