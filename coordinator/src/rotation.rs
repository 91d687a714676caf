//! CA rotation without re-enrolling every agent, and backup/restore of the state directory.
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

use crate::pki::{self, CA_CERT, CA_KEY, PkiError, SERVER_CERT, SERVER_KEY};

pub const NEXT_CA_CERT: &str = "ca-next.pem";
pub const NEXT_CA_KEY: &str = "ca-next.key";

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
    #[error("the store backup failed: {0}; check the destination's space and permissions")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{} is not empty; restore into a fresh state directory", .0.display())]
    NotEmpty(PathBuf),
    #[error("{} holds no coordinator.db; is it a backup made by `coordinator backup`?", .0.display())]
    NotABackup(PathBuf),
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
    if !state_dir.join(CA_CERT).exists() || !state_dir.join(CA_KEY).exists() {
        return Err(RotationError::NoCa(state_dir.to_owned()));
    }
    if state_dir.join(NEXT_CA_CERT).exists() {
        return Err(RotationError::InProgress);
    }
    // A fresh directory makes a fresh CA; take it from there.
    let scratch = state_dir.join(format!(".rotate-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(io("create", &scratch))?;
    let fresh = pki::ensure(&scratch, &[]);
    let key = read(&scratch.join(CA_KEY));
    let _ = std::fs::remove_dir_all(&scratch);
    let (fresh, key) = (fresh?, key?);
    pki::write_secret(&state_dir.join(NEXT_CA_KEY), &key)?;
    std::fs::write(state_dir.join(NEXT_CA_CERT), &fresh.ca_pem).map_err(io("write", &state_dir.join(NEXT_CA_CERT)))?;
    Ok(())
}

/// Ends a rotation: the new CA becomes the only one; the server certificate is issued again.
///
/// # Errors
/// No rotation under way, or a file cannot be written.
pub fn retire_old(state_dir: &Path) -> Result<(), RotationError> {
    let (next, next_key) = (state_dir.join(NEXT_CA_CERT), state_dir.join(NEXT_CA_KEY));
    if !next.exists() {
        return Err(RotationError::NothingToRetire(state_dir.to_owned()));
    }
    pki::write_secret(&state_dir.join(CA_KEY), &read(&next_key)?)?;
    std::fs::write(state_dir.join(CA_CERT), read(&next)?).map_err(io("write", &state_dir.join(CA_CERT)))?;
    for path in [next, next_key, state_dir.join(SERVER_CERT), state_dir.join(SERVER_KEY)] {
        std::fs::remove_file(&path).map_err(io("remove", &path))?;
    }
    Ok(())
}

/// The CA that signs client certificates: the new one during a rotation.
pub fn signing_ca_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    let next = state_dir.join(NEXT_CA_CERT);
    if next.exists() { (next, state_dir.join(NEXT_CA_KEY)) } else { (state_dir.join(CA_CERT), state_dir.join(CA_KEY)) }
}

/// Every CA to trust: the current one, and the new one during a rotation.
///
/// # Errors
/// The CA cannot be read.
pub fn trust_bundle(state_dir: &Path) -> Result<String, RotationError> {
    let mut bundle = read(&state_dir.join(CA_CERT))?;
    if let Ok(next) = std::fs::read_to_string(state_dir.join(NEXT_CA_CERT)) {
        bundle.push_str(&next);
    }
    Ok(bundle)
}

/// The files of a state directory a backup holds besides the store.
const STATE_FILES: &[&str] =
    &[CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, NEXT_CA_CERT, NEXT_CA_KEY, crate::client_config::FILE_NAME];

/// Copies the store (SQLite online backup: consistent while the server writes), the CA, the keys,
/// the certificates and the operators' credentials into `dest` (created, mode 0700).
///
/// # Errors
/// A file cannot be read or written, or the SQLite backup fails.
pub fn backup(state_dir: &Path, dest: &Path) -> Result<(), RotationError> {
    use std::os::unix::fs::PermissionsExt;
    let db = state_dir.join(crate::store::sqlite::FILE_NAME);
    if !db.exists() {
        return Err(RotationError::NotABackup(state_dir.to_owned()));
    }
    std::fs::create_dir_all(dest).map_err(io("create", dest))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700)).map_err(io("chmod", dest))?;
    let source = rusqlite::Connection::open(&db)?;
    source.busy_timeout(std::time::Duration::from_secs(5))?;
    source.backup(
        rusqlite::MAIN_DB,
        dest.join(crate::store::sqlite::FILE_NAME),
        None::<fn(rusqlite::backup::Progress)>,
    )?;
    copy_files(state_dir, dest)
}

/// Restores a backup into `state_dir`, which must be empty or absent.
///
/// # Errors
/// `state_dir` is not empty, `from` is not a backup, or a copy fails.
pub fn restore(from: &Path, state_dir: &Path) -> Result<(), RotationError> {
    if !from.join(crate::store::sqlite::FILE_NAME).exists() {
        return Err(RotationError::NotABackup(from.to_owned()));
    }
    if state_dir.exists() && std::fs::read_dir(state_dir).map_err(io("read", state_dir))?.next().is_some() {
        return Err(RotationError::NotEmpty(state_dir.to_owned()));
    }
    std::fs::create_dir_all(state_dir).map_err(io("create", state_dir))?;
    let db = from.join(crate::store::sqlite::FILE_NAME);
    let target = state_dir.join(crate::store::sqlite::FILE_NAME);
    std::fs::copy(&db, &target).map_err(io("copy", &db))?;
    copy_files(from, state_dir)
}

fn copy_files(from: &Path, to: &Path) -> Result<(), RotationError> {
    for name in STATE_FILES {
        let source = from.join(name);
        if source.exists() {
            copy_keeping_mode(&source, &to.join(name))?;
        }
    }
    let operators = from.join("operators");
    if let Ok(entries) = std::fs::read_dir(&operators) {
        for entry in entries.flatten() {
            let dir = entry.path();
            let target = to.join("operators").join(entry.file_name());
            std::fs::create_dir_all(&target).map_err(io("create", &target))?;
            for file in std::fs::read_dir(&dir).map_err(io("read", &dir))?.flatten() {
                copy_keeping_mode(&file.path(), &target.join(file.file_name()))?;
            }
        }
    }
    // The coordinator's client credential for router shims (`coordinator router-cert issue`).
    let router_client = from.join(crate::router_cert::CLIENT_DIR);
    if let Ok(entries) = std::fs::read_dir(&router_client) {
        let target = to.join(crate::router_cert::CLIENT_DIR);
        std::fs::create_dir_all(&target).map_err(io("create", &target))?;
        for file in entries.flatten() {
            copy_keeping_mode(&file.path(), &target.join(file.file_name()))?;
        }
    }
    Ok(())
}

fn copy_keeping_mode(from: &Path, to: &Path) -> Result<(), RotationError> {
    // std::fs::copy copies the permission bits too, so keys stay 0600.
    std::fs::copy(from, to).map_err(io("copy", from))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_signs_with_the_new_ca_trusts_both_then_retires_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let first = pki::ensure(dir.path(), &[]).unwrap();
        assert_eq!(signing_ca_paths(dir.path()).0, dir.path().join(CA_CERT));
        rotate(dir.path()).unwrap();
        assert!(matches!(rotate(dir.path()), Err(RotationError::InProgress)));
        assert_eq!(signing_ca_paths(dir.path()).0, dir.path().join(NEXT_CA_CERT));
        let bundle = trust_bundle(dir.path()).unwrap();
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(bundle.starts_with(&first.ca_pem), "the old CA is still trusted");
        let during = pki::ensure(dir.path(), &[]).unwrap();
        assert_eq!(during.cert_pem, first.cert_pem, "the server keeps its certificate during the rotation");
        let next = std::fs::read_to_string(dir.path().join(NEXT_CA_CERT)).unwrap();
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
        assert_eq!(std::fs::metadata(restored.join(CA_KEY)).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(restored.join(CA_CERT)).unwrap(), std::fs::read(state.join(CA_CERT)).unwrap());
        let router_key = restored.join(crate::router_cert::CLIENT_DIR).join(crate::router_cert::CLIENT_KEY);
        assert_eq!(std::fs::metadata(router_key).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(crate::router_cert::client_identity(&restored, None, None).unwrap().is_some());
        assert!(matches!(restore(&dir.path().join("backup"), &restored), Err(RotationError::NotEmpty(_))));
    }
}
