//! The lab plan's files in the state directory: the last applied plan (`lab-applied.toml`), which
//! reconciliation, export and destroy read after a restart, and the reconciler's memory (`lab-reconcile.json`).
//! Both are written atomically (a temporary file renamed over the old one).

use std::path::PathBuf;

use model::plan::file::LabFile;

use crate::StateDir;

/// A lab file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}; check the state directory's permissions", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Stores `lab` as the last applied plan.
///
/// # Errors
/// The file cannot be written.
pub fn save_applied(state: &StateDir, lab: &LabFile) -> Result<(), WriteError> {
    let path = state.lab_applied();
    StateDir::write_atomically(&path, &lab.to_toml()).map_err(|source| WriteError { path, source })
}

/// The last applied plan, if any. A file that no longer parses is reported and treated as absent.
pub fn load_applied(state: &StateDir) -> Option<LabFile> {
    let path = state.lab_applied();
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
pub fn clear_applied(state: &StateDir) {
    let _ = std::fs::remove_file(state.lab_applied());
}

/// The reconciler's memory; the default when absent or unreadable (then every lasting condition is reported once
/// more, which is the safe side).
pub fn load_reconcile<T: serde::de::DeserializeOwned + Default>(state: &StateDir) -> T {
    let path = state.lab_reconcile();
    let Ok(text) = std::fs::read_to_string(&path) else { return T::default() };
    serde_json::from_str(&text).unwrap_or_else(|error| {
        tracing::warn!(%error, path = %path.display(), "the reconciler's memory does not parse; starting afresh");
        T::default()
    })
}

/// Stores the reconciler's memory; a failure is logged (the memory still holds for this run).
pub fn save_reconcile<T: serde::Serialize>(state: &StateDir, memory: &T) {
    let path = state.lab_reconcile();
    let written = serde_json::to_string_pretty(memory)
        .map_err(std::io::Error::other)
        .and_then(|text| StateDir::write_atomically(&path, &text));
    if let Err(error) = written {
        tracing::warn!(%error, path = %path.display(), "cannot store the reconciler's memory");
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn saves_and_loads_the_applied_plan() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert!(load_applied(&state).is_none());
        let lab = LabFile::parse(Path::new("x"), "[maas]\nkernel_opts = \"net.ifnames=0\"\n").unwrap();
        save_applied(&state, &lab).unwrap();
        assert_eq!(load_applied(&state), Some(lab));
        clear_applied(&state);
        assert!(load_applied(&state).is_none());
    }

    #[test]
    fn the_reconcile_memory_round_trips_and_a_bad_one_reads_as_default() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert_eq!(load_reconcile::<Vec<String>>(&state), Vec::<String>::new());
        save_reconcile(&state, &vec!["a".to_string()]);
        assert_eq!(load_reconcile::<Vec<String>>(&state), vec!["a".to_string()]);
        std::fs::write(state.lab_reconcile(), "not json").unwrap();
        assert_eq!(load_reconcile::<Vec<String>>(&state), Vec::<String>::new());
    }
}
