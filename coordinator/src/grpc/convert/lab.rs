//! Wire conversions of the lab plan (LabService).

use proto::v1 as pb;

pub use model::wire::lab::{change_from_wire, change_to_wire};

use crate::plan::PlanStep;
use crate::plan::apply::Progress;

/// A plan step on the wire (the op stays on the server).
pub fn step_to_wire(step: &PlanStep) -> pb::LabStep {
    change_to_wire(&step.change())
}

fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One progress message.
pub fn progress_to_wire(progress: &Progress) -> pb::LabProgress {
    let mut out = pb::LabProgress::default();
    match progress {
        Progress::Planned(plan) => {
            out.kind = "planned".into();
            out.steps = plan.steps.iter().map(step_to_wire).collect();
            out.changes = u32_of(plan.changes());
        }
        Progress::Started { index, total, step } => {
            out.kind = "started".into();
            out.index = u32_of(*index);
            out.total = u32_of(*total);
            out.step = Some(step_to_wire(step));
        }
        Progress::Working { index, current, goal, message } => {
            out.kind = "working".into();
            out.index = u32_of(*index);
            out.current = *current;
            out.goal = *goal;
            out.message = message.clone();
        }
        Progress::Done { index, step } => {
            out.kind = "done".into();
            out.index = u32_of(*index);
            out.step = Some(step_to_wire(step));
        }
        Progress::Failed { index, step, reason, left } => {
            out.kind = "failed".into();
            out.index = u32_of(*index);
            out.step = Some(step_to_wire(step));
            out.message = reason.clone();
            out.steps = left.iter().map(step_to_wire).collect();
        }
        Progress::Finished { changes } => {
            out.kind = "finished".into();
            out.changes = u32_of(*changes);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::plan::Action;

    #[test]
    fn steps_round_trip_without_their_op() {
        let step = PlanStep { action: Action::Create, kind: "ip_range".into(), summary: "create x".into(), op: None };
        assert_eq!(change_from_wire(step_to_wire(&step)), step.change());
        let odd = change_from_wire(pb::LabStep { action: "explode".into(), kind: "k".into(), summary: "s".into() });
        assert_eq!(odd.action, Action::Check);
    }

    #[test]
    fn failure_carries_reason_and_what_is_left() {
        let step = PlanStep { action: Action::Check, kind: "dhcp_probe".into(), summary: "prove".into(), op: None };
        let wire =
            progress_to_wire(&Progress::Failed { index: 1, step: step.clone(), reason: "r".into(), left: vec![step] });
        assert_eq!((wire.kind.as_str(), wire.message.as_str(), wire.steps.len()), ("failed", "r", 1));
    }
}
