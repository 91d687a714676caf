//! The last applied plan, kept in the state directory (`store::lab`, written atomically) so reconciliation, export
//! and destroy know what the lab is meant to be after a restart.

use std::path::Path;

use ::store::{StateDir, lab};

use super::PlanError;
use super::file::LabFile;

/// Stores `lab` as the last applied plan.
///
/// # Errors
/// [`PlanError::Store`] naming the file.
pub fn save(state_dir: &Path, plan: &LabFile) -> Result<(), PlanError> {
    lab::save_applied(&StateDir::new(state_dir), plan)
        .map_err(|lab::WriteError { path, source }| PlanError::Store { path, source })
}

/// The last applied plan, if any. A file that no longer parses is reported and treated as absent.
pub fn load(state_dir: &Path) -> Option<LabFile> {
    lab::load_applied(&StateDir::new(state_dir))
}

/// Forgets the applied plan (after destroy).
pub fn clear(state_dir: &Path) {
    lab::clear_applied(&StateDir::new(state_dir));
}
