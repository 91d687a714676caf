//! Wire conversions of the lab plan's lines (LabService).

use proto::v1 as pb;

use crate::plan::{Action, Change};

/// A plan line on the wire.
pub fn change_to_wire(change: &Change) -> pb::LabStep {
    pb::LabStep {
        action: change.action.as_str().to_string(),
        kind: change.kind.clone(),
        summary: change.summary.clone(),
    }
}

/// A plan line from the wire; an unknown action reads as a check, which changes nothing.
pub fn change_from_wire(step: pb::LabStep) -> Change {
    let pb::LabStep { action, kind, summary } = step;
    Change { action: Action::parse(&action).unwrap_or(Action::Check), kind, summary }
}
