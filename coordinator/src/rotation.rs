//! CA rotation without re-enrolling every agent; `coordinator backup` and `restore` (done by `store::backup`).
//!
//! Rotation has two steps, each taking effect at the coordinator's next start:
//! - `coordinator ca rotate` makes a new CA, `ca-next.pem`/`ca-next.key`. From then on client
//!   certificates are signed by it, both CAs are trusted for client certificates, and the bundle of
//!   both is handed to agents at every Enroll and Renew. The server certificate stays with the old CA
//!   (`ca.pem`), which every agent already trusts, so nobody is cut off. Agents store the bundle and,
//!   seeing it changed, renew onto the new CA at once.
//! - `coordinator ca retire-old` makes the new CA the only one (`ca.pem`) and has the server
//!   certificate and the local admin's certificate issued again by it.
//!
//! The CA is created with a path length of 0 (it signs only end-entity certificates), so a cross
//! certificate cannot bridge the two CAs; the order above is what keeps agents connected.

use std::path::{Path, PathBuf};

use ::store::StateDir;
use ::store::backup::{BackupError, Summary};

use crate::pki::{self, PkiError};

/// The file names; `store::StateDir` owns them.
pub use ::store::state_dir::names::{NEXT_CA_CERT, NEXT_CA_KEY};

/// Why a rotation, backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("no CA in {}; start `coordinator serve --state-dir {}` once first", .0.display(), .0.display())]
    NoCa(PathBuf),
    #[error("a rotation is under way (ca-next.pem exists); run `coordinator ca retire-old` once agents renewed")]
    InProgress,
    #[error("no rotation to finish: {} has no ca-next.pem; run `coordinator ca rotate` first", .0.display())]
    NothingToRetire(PathBuf),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Backup(#[from] BackupError),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RotationError + 'a {
    move |source| RotationError::Io { action, path: path.to_owned(), source }
}

fn read(path: &Path) -> Result<String, RotationError> {
    std::fs::read_to_string(path).map_err(io("read", path))
}

/// Starts a rotation (see the module docs).
///
/// # Errors
/// No CA yet, a rotation already under way, or a file cannot be written.
pub fn rotate(state_dir: &Path) -> Result<(), RotationError> {
    let state = StateDir::new(state_dir);
    if !state.ca_cert().exists() || !state.ca_key().exists() {
        return Err(RotationError::NoCa(state_dir.to_owned()));
    }
    if state.next_ca_cert().exists() {
        return Err(RotationError::InProgress);
    }
    // A fresh directory makes a fresh CA; take it from there.
    let scratch = state.rotate_scratch(std::process::id());
    std::fs::create_dir_all(&scratch).map_err(io("create", &scratch))?;
    let fresh = pki::ensure(&scratch, &[]);
    let key = read(&StateDir::new(&scratch).ca_key());
    let _ = std::fs::remove_dir_all(&scratch);
    let (fresh, key) = (fresh?, key?);
    pki::write_secret(&state.next_ca_key(), &key)?;
    std::fs::write(state.next_ca_cert(), &fresh.ca_pem).map_err(io("write", &state.next_ca_cert()))?;
    Ok(())
}

/// Ends a rotation: the new CA becomes the only one; the server certificate is issued again.
///
/// # Errors
/// No rotation under way, or a file cannot be written.
pub fn retire_old(state_dir: &Path) -> Result<(), RotationError> {
    let state = StateDir::new(state_dir);
    let (next, next_key) = (state.next_ca_cert(), state.next_ca_key());
    if !next.exists() {
        return Err(RotationError::NothingToRetire(state_dir.to_owned()));
    }
    pki::write_secret(&state.ca_key(), &read(&next_key)?)?;
    std::fs::write(state.ca_cert(), read(&next)?).map_err(io("write", &state.ca_cert()))?;
    for path in [next, next_key, state.server_cert(), state.server_key()] {
        std::fs::remove_file(&path).map_err(io("remove", &path))?;
    }
    Ok(())
}

/// The CA that signs client certificates: the new one during a rotation.
pub fn signing_ca_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    let state = StateDir::new(state_dir);
    let next = state.next_ca_cert();
    if next.exists() { (next, state.next_ca_key()) } else { (state.ca_cert(), state.ca_key()) }
}

/// Every CA to trust: the current one, and the new one during a rotation.
///
/// # Errors
/// The CA cannot be read.
pub fn trust_bundle(state_dir: &Path) -> Result<String, RotationError> {
    let state = StateDir::new(state_dir);
    let mut bundle = read(&state.ca_cert())?;
    if let Ok(next) = std::fs::read_to_string(state.next_ca_cert()) {
        bundle.push_str(&next);
    }
    Ok(bundle)
}

/// `coordinator backup`: every file `store::StateDir` lists, as it says (see `store::backup`).
///
/// # Errors
/// A file cannot be read or written, or the SQLite backup fails.
pub fn backup(state_dir: &Path, dest: &Path) -> Result<Summary, RotationError> {
    Ok(::store::backup::backup(&StateDir::new(state_dir), dest)?)
}

/// `coordinator restore`: a backup into `state_dir`, which must be empty or absent.
///
/// # Errors
/// `state_dir` is not empty, `from` is not a backup, or a copy fails.
pub fn restore(from: &Path, state_dir: &Path) -> Result<Summary, RotationError> {
    Ok(::store::backup::restore(from, &StateDir::new(state_dir))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_signs_with_the_new_ca_trusts_both_then_retires_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let first = pki::ensure(dir.path(), &[]).unwrap();
        let state = StateDir::new(dir.path());
        assert_eq!(signing_ca_paths(dir.path()).0, state.ca_cert());
        rotate(dir.path()).unwrap();
        assert!(matches!(rotate(dir.path()), Err(RotationError::InProgress)));
        assert_eq!(signing_ca_paths(dir.path()).0, state.next_ca_cert());
        let bundle = trust_bundle(dir.path()).unwrap();
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(bundle.starts_with(&first.ca_pem), "the old CA is still trusted");
        let during = pki::ensure(dir.path(), &[]).unwrap();
        assert_eq!(during.cert_pem, first.cert_pem, "the server keeps its certificate during the rotation");
        let next = std::fs::read_to_string(state.next_ca_cert()).unwrap();
        retire_old(dir.path()).unwrap();
        let after = pki::ensure(dir.path(), &[]).unwrap();
        assert_eq!(after.ca_pem, next);
        assert_ne!(after.cert_pem, first.cert_pem, "the server certificate was issued again by the new CA");
        assert_eq!(trust_bundle(dir.path()).unwrap(), next);
        assert!(matches!(retire_old(dir.path()), Err(RotationError::NothingToRetire(_))));
    }

    #[test]
    fn backup_and_restore_copy_the_store_and_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        pki::ensure(&state, &[]).unwrap();
        drop(crate::store::SqliteStore::open(&state, 10).unwrap());
        crate::router_cert::issue(&state, &dir.path().join("shim"), &["127.0.0.1".to_string()]).unwrap();
        backup(&state, &dir.path().join("backup")).unwrap();
        let restored = dir.path().join("restored");
        restore(&dir.path().join("backup"), &restored).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let (from, to) = (StateDir::new(&state), StateDir::new(&restored));
        assert_eq!(std::fs::metadata(to.ca_key()).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(to.ca_cert()).unwrap(), std::fs::read(from.ca_cert()).unwrap());
        let router_key = to.router_client_key();
        assert_eq!(std::fs::metadata(router_key).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(crate::router_cert::client_identity(&restored, None, None).unwrap().is_some());
        assert!(matches!(
            restore(&dir.path().join("backup"), &restored),
            Err(RotationError::Backup(BackupError::NotEmpty(_)))
        ));
    }
}
