//! The last applied plan, kept as `<state_dir>/lab-applied.toml` (written atomically) so reconciliation, export and
//! destroy know what the lab is meant to be after a restart.

use std::path::{Path, PathBuf};

use super::PlanError;
use super::file::LabFile;

/// The file name inside the state directory.
pub const FILE_NAME: &str = "lab-applied.toml";

/// Where the applied plan lives.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// Stores `lab` as the last applied plan.
///
/// # Errors
/// [`PlanError::Store`] naming the file.
pub fn save(state_dir: &Path, lab: &LabFile) -> Result<(), PlanError> {
    let target = path(state_dir);
    let temp = state_dir.join(format!("{FILE_NAME}.tmp"));
    let write = std::fs::write(&temp, lab.to_toml()).and_then(|()| std::fs::rename(&temp, &target));
    write.map_err(|source| PlanError::Store { path: target, source })
}

/// The last applied plan, if any. A file that no longer parses is reported and treated as absent.
pub fn load(state_dir: &Path) -> Option<LabFile> {
    let path = path(state_dir);
    let text = std::fs::read_to_string(&path).ok()?;
    match LabFile::parse(&path, &text) {
        Ok(lab) => Some(lab),
        Err(error) => {
            tracing::warn!(%error, "the stored applied plan does not parse; ignoring it");
            None
        }
    }
}

/// Forgets the applied plan (after destroy).
pub fn clear(state_dir: &Path) {
    let _ = std::fs::remove_file(path(state_dir));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_the_applied_plan() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_none());
        let lab = LabFile::parse(Path::new("x"), "[maas]\nkernel_opts = \"net.ifnames=0\"\n").unwrap();
        save(dir.path(), &lab).unwrap();
        assert_eq!(load(dir.path()), Some(lab));
        clear(dir.path());
        assert!(load(dir.path()).is_none());
    }
}
