//! Operations wire types ↔ [`crate::operations`] records.

use proto::v1 as pb;

use super::{WireError, time, timestamp};
use crate::operations::{MachineOp, OpState, Operation, Planned, PowerAction, RedeployRequest, Step, StepRecord};

/// The request as the engine takes it (user data must be UTF-8 text).
///
/// # Errors
/// [`WireError`] for user data that is not UTF-8.
pub fn redeploy_request(wire: pb::RedeployRequest) -> Result<RedeployRequest, WireError> {
    let pb::RedeployRequest {
        machines,
        tag,
        pool,
        all,
        distro_series,
        user_data_template,
        dry_run,
        max_unavailable,
        max_failures,
    } = wire;
    let template =
        if user_data_template.is_empty() {
            None
        } else {
            Some(String::from_utf8(user_data_template).map_err(|_| {
                WireError::new("user_data_template", "is not UTF-8 text; pass a cloud-init YAML template")
            })?)
        };
    let some = |s: String| (!s.trim().is_empty()).then(|| s.trim().to_string());
    Ok(RedeployRequest {
        machines: machines.into_iter().map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect(),
        tag: some(tag),
        pool: some(pool),
        all,
        distro_series: some(distro_series),
        user_data_template: template,
        dry_run,
        max_unavailable,
        max_failures,
    })
}

pub fn planned(p: &Planned) -> pb::PlannedMachine {
    pb::PlannedMachine {
        system_id: p.system_id.clone(),
        hostname: p.hostname.clone(),
        batch: p.batch,
        refused: p.refused.clone().unwrap_or_default(),
    }
}

pub fn operation(op: &Operation) -> pb::Operation {
    pb::Operation {
        id: op.id.clone(),
        kind: op.kind.clone(),
        state: op.state.as_str().to_string(),
        created_at: Some(timestamp(op.created_at)),
        updated_at: Some(timestamp(op.updated_at)),
        finished_at: op.finished_at.map(timestamp),
        message: op.message.clone(),
        max_unavailable: op.max_unavailable,
        max_failures: op.max_failures,
        distro_series: op.distro_series.clone(),
        machines: op.machines.iter().map(machine_op).collect(),
    }
}

fn machine_op(m: &MachineOp) -> pb::MachineOperation {
    pb::MachineOperation {
        system_id: m.system_id.clone(),
        hostname: m.hostname.clone(),
        batch: m.batch,
        state: m.state.as_str().to_string(),
        step: m.step().map(|s| s.step.as_str().to_string()).unwrap_or_default(),
        message: m.message.clone(),
        token_id: m.token_id.clone().unwrap_or_default(),
        machine_id: m.machine_id.clone().unwrap_or_default(),
        steps: m.steps.iter().map(step).collect(),
    }
}

fn step(s: &StepRecord) -> pb::OperationStep {
    pb::OperationStep {
        name: s.step.as_str().to_string(),
        state: s.state.as_str().to_string(),
        started_at: Some(timestamp(s.started_at)),
        finished_at: s.finished_at.map(timestamp),
        message: s.message.clone(),
    }
}

/// The wire operation back as a record, for fleetctl (unknown state or step names become errors).
///
/// # Errors
/// A state or step this build does not know.
pub fn operation_from_wire(wire: pb::Operation) -> Result<Operation, WireError> {
    let pb::Operation {
        id,
        kind,
        state,
        created_at,
        updated_at,
        finished_at,
        message,
        max_unavailable,
        max_failures,
        distro_series,
        machines,
    } = wire;
    let now = chrono::Utc::now();
    let mut out = Vec::with_capacity(machines.len());
    for m in machines {
        let pb::MachineOperation { system_id, hostname, batch, state, step: _, message, token_id, machine_id, steps } =
            m;
        let mut records = Vec::with_capacity(steps.len());
        for s in steps {
            let pb::OperationStep { name, state, started_at, finished_at, message } = s;
            records.push(StepRecord {
                step: step_from(&name)?,
                state: state_from(&state)?,
                started_at: time(started_at).unwrap_or(now),
                finished_at: time(finished_at),
                message,
            });
        }
        out.push(MachineOp {
            system_id,
            hostname,
            batch,
            state: state_from(&state)?,
            message,
            token_id: (!token_id.is_empty()).then_some(token_id),
            machine_id: (!machine_id.is_empty()).then_some(machine_id),
            steps: records,
        });
    }
    Ok(Operation {
        id,
        kind,
        state: state_from(&state)?,
        created_at: time(created_at).unwrap_or(now),
        updated_at: time(updated_at).unwrap_or(now),
        finished_at: time(finished_at),
        message,
        max_unavailable,
        max_failures,
        distro_series,
        user_data_template: None,
        machines: out,
    })
}

pub fn state_from(text: &str) -> Result<OpState, WireError> {
    [
        OpState::Pending,
        OpState::Running,
        OpState::Succeeded,
        OpState::Failed,
        OpState::Cancelled,
        OpState::Refused,
        OpState::Skipped,
    ]
    .into_iter()
    .find(|s| s.as_str() == text)
    .ok_or_else(|| WireError::new("state", format!("{text:?} is unknown; upgrade fleetctl")))
}

pub fn step_from(text: &str) -> Result<Step, WireError> {
    Step::ALL
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| WireError::new("step", format!("{text:?} is unknown; upgrade fleetctl")))
}

/// # Errors
/// `INVALID_ARGUMENT` when no action was given.
pub fn power_action(action: i32) -> Result<PowerAction, WireError> {
    match pb::PowerAction::try_from(action) {
        Ok(pb::PowerAction::On) => Ok(PowerAction::On),
        Ok(pb::PowerAction::Off) => Ok(PowerAction::Off),
        Ok(pb::PowerAction::Cycle) => Ok(PowerAction::Cycle),
        _ => Err(WireError::new("action", "say what to do: power on, off or cycle")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip_through_the_wire() {
        let mut op = Operation::new("redeploy", 2, 1, "focal".into(), None);
        let mut m = MachineOp::new("abc", "server1", 1);
        m.state = OpState::Failed;
        m.message = "MAAS: Failed deployment".into();
        m.token_id = Some("t1".into());
        m.steps.push(StepRecord {
            step: Step::WaitDeployed,
            state: OpState::Failed,
            started_at: op.created_at,
            finished_at: Some(op.created_at),
            message: "x".into(),
        });
        op.machines.push(m);
        let back = operation_from_wire(operation(&op)).unwrap();
        assert_eq!(back, op);
    }

    #[test]
    fn redeploy_request_trims_and_rejects_binary_user_data() {
        let wire = pb::RedeployRequest {
            machines: vec![" server1 ".into(), "".into()],
            tag: " ".into(),
            ..Default::default()
        };
        let request = redeploy_request(wire).unwrap();
        assert_eq!(request.machines, vec!["server1".to_string()]);
        assert_eq!(request.tag, None);
        let bad = pb::RedeployRequest { user_data_template: vec![0xff, 0xfe], ..Default::default() };
        assert_eq!(redeploy_request(bad).unwrap_err().field, "user_data_template");
        assert!(power_action(0).is_err());
        assert_eq!(power_action(3).unwrap(), PowerAction::Cycle);
    }
}
