//! `coordinator backup` and `coordinator restore`, driven by [`crate::state_dir::ENTRIES`]: each entry is taken
//! as its [`Backup`] says (SQLite's online backup for the database, a copy keeping the mode for the rest), so a
//! file added to the state directory is backed up as soon as it is listed there, and a file that is not listed is
//! named in the [`Summary`] instead of being left out in silence.
//!
//! A backup directory has the layout of a state directory, so restoring is copying back.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::StateDir;
use crate::state_dir::{Backup, ENTRIES, Entry};
use crate::{StoreError, db};

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the store backup failed: {0}; check the destination's space and permissions")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{} is not empty; restore into a fresh state directory", .0.display())]
    NotEmpty(PathBuf),
    #[error("{} holds no coordinator.db; is it a backup made by `coordinator backup`?", .0.display())]
    NotABackup(PathBuf),
}

/// What a backup or restore did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The entries taken, by name.
    pub taken: Vec<&'static str>,
    /// What the source directory holds that no entry names: not taken.
    pub unknown: Vec<PathBuf>,
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BackupError + 'a {
    move |source| BackupError::Io { action, path: path.to_owned(), source }
}

/// Backs `state` up into `dest` (created, mode 0700): the store through SQLite's online backup (consistent
/// while the server writes), every other entry copied with its mode.
///
/// # Errors
/// `state` holds no store, a file cannot be read or written, or the SQLite backup fails.
pub fn backup(state: &StateDir, dest: &Path) -> Result<Summary, BackupError> {
    if !state.database().exists() {
        return Err(BackupError::NotABackup(state.root().to_owned()));
    }
    std::fs::create_dir_all(dest).map_err(io("create", dest))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700)).map_err(io("chmod", dest))?;
    let into = StateDir::new(dest);
    let mut summary = Summary::default();
    for entry in ENTRIES {
        let (from, to) = (state.path_of(entry), into.path_of(entry));
        let taken = match entry.backup {
            Backup::Database => {
                let source = db::connect(&from, db::Durability::Normal)?;
                source.backup(rusqlite::MAIN_DB, &to, None::<fn(rusqlite::backup::Progress)>)?;
                true
            }
            Backup::Copy { secret } => copy_file(&from, &to, secret)?,
            Backup::Tree => copy_tree(&from, &to)?,
            Backup::WithDatabase | Backup::Skip => false,
        };
        if taken {
            summary.taken.push(entry.name);
        }
    }
    summary.unknown = state.unknown().map_err(io("read", state.root()))?;
    Ok(summary)
}

/// Restores the backup in `from` into `state`, which must be empty or absent.
///
/// # Errors
/// `state` is not empty, `from` is not a backup, or a copy fails.
pub fn restore(from: &Path, state: &StateDir) -> Result<Summary, BackupError> {
    let backup = StateDir::new(from);
    if !backup.database().exists() {
        return Err(BackupError::NotABackup(from.to_owned()));
    }
    let root = state.root();
    if root.exists() && std::fs::read_dir(root).map_err(io("read", root))?.next().is_some() {
        return Err(BackupError::NotEmpty(root.to_owned()));
    }
    std::fs::create_dir_all(root).map_err(io("create", root))?;
    let mut summary = Summary::default();
    for entry in ENTRIES {
        let (source, target) = (backup.path_of(entry), state.path_of(entry));
        let taken = match entry.backup {
            // The online backup wrote one self-contained file (no WAL beside it).
            Backup::Database => copy_file(&source, &target, false)?,
            Backup::Copy { secret } => copy_file(&source, &target, secret)?,
            Backup::Tree => copy_tree(&source, &target)?,
            Backup::WithDatabase | Backup::Skip => false,
        };
        if taken {
            summary.taken.push(entry.name);
        }
    }
    summary.unknown = backup.unknown().map_err(io("read", from))?;
    Ok(summary)
}

/// Every table of the database at `path` with its rows (in rowid order, each row's values in column order), and the
/// schema version: what a backup must hold the same as its source, table by table.
///
/// # Errors
/// The file cannot be opened or read.
pub fn tables(path: &Path) -> Result<BTreeMap<String, Vec<String>>, BackupError> {
    let conn = db::connect(path, db::Durability::Normal)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let mut out = BTreeMap::from([("PRAGMA user_version".to_string(), vec![version.to_string()])]);
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for name in names {
        let mut statement = conn.prepare(&format!("SELECT * FROM \"{name}\" ORDER BY rowid"))?;
        let width = statement.column_count();
        let rows = statement
            .query_map([], |row| {
                let values =
                    (0..width).map(|i| row.get::<_, rusqlite::types::Value>(i)).collect::<Result<Vec<_>, _>>()?;
                Ok(format!("{values:?}"))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        out.insert(name, rows);
    }
    Ok(out)
}

/// Whether `entry` is in a backup's own bookkeeping: what [`backup`] writes for it.
pub fn is_backed_up(entry: &Entry) -> bool {
    matches!(entry.backup, Backup::Database | Backup::Copy { .. } | Backup::Tree)
}

/// Copies `from` (when it exists) keeping its mode; a secret ends 0600 whatever the source's mode.
fn copy_file(from: &Path, to: &Path, secret: bool) -> Result<bool, BackupError> {
    if !from.is_file() {
        return Ok(false);
    }
    // std::fs::copy copies the permission bits too, so keys stay 0600.
    std::fs::copy(from, to).map_err(io("copy", from))?;
    if secret {
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).map_err(io("chmod", to))?;
    }
    Ok(true)
}

/// Copies the folder `from` (when it exists) and everything beneath it, modes kept.
fn copy_tree(from: &Path, to: &Path) -> Result<bool, BackupError> {
    let entries = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(BackupError::Io { action: "read", path: from.to_owned(), source }),
    };
    std::fs::create_dir_all(to).map_err(io("create", to))?;
    let mode = std::fs::metadata(from).map_err(io("read", from))?.permissions();
    std::fs::set_permissions(to, mode).map_err(io("chmod", to))?;
    for found in entries {
        let found = found.map_err(io("read", from))?;
        let path = found.path();
        let target = to.join(found.file_name());
        if found.file_type().map_err(io("read", &path))?.is_dir() {
            copy_tree(&path, &target)?;
        } else {
            copy_file(&path, &target, false)?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn every_listed_file_is_taken_and_restored_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        std::fs::create_dir_all(state.root()).unwrap();
        drop(crate::SqliteStore::open(state.root(), 10).unwrap());
        for entry in ENTRIES.iter().filter(|e| matches!(e.backup, Backup::Copy { .. })) {
            std::fs::write(state.path_of(entry), entry.what).unwrap();
            let secret = entry.backup == (Backup::Copy { secret: true });
            std::fs::set_permissions(
                state.path_of(entry),
                std::fs::Permissions::from_mode(if secret { 0o600 } else { 0o644 }),
            )
            .unwrap();
        }
        std::fs::create_dir_all(state.operator("admin")).unwrap();
        std::fs::write(state.operator("admin").join("admin.key"), "k").unwrap();
        std::fs::set_permissions(state.operator("admin").join("admin.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::create_dir_all(state.router_client()).unwrap();
        std::fs::write(state.router_client_key(), "k").unwrap();
        std::fs::set_permissions(state.router_client_key(), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(state.root().join("stray.txt"), "").unwrap();

        let summary = backup(&state, &dir.path().join("backup")).unwrap();
        let listed: Vec<&str> = ENTRIES.iter().filter(|e| is_backed_up(e)).map(|e| e.name).collect();
        assert_eq!(summary.taken, listed, "every entry that is backed up was there, so each was taken");
        assert_eq!(summary.unknown, vec![state.root().join("stray.txt")]);
        assert_eq!(mode(&dir.path().join("backup")), 0o700);

        let restored = StateDir::new(dir.path().join("restored"));
        let summary = restore(&dir.path().join("backup"), &restored).unwrap();
        assert_eq!(summary.taken, listed);
        assert!(summary.unknown.is_empty(), "{:?}", summary.unknown);
        for entry in ENTRIES.iter().filter(|e| matches!(e.backup, Backup::Copy { .. })) {
            assert_eq!(std::fs::read(restored.path_of(entry)).unwrap(), entry.what.as_bytes(), "{}", entry.name);
            let secret = entry.backup == (Backup::Copy { secret: true });
            assert_eq!(mode(&restored.path_of(entry)), if secret { 0o600 } else { 0o644 }, "{}", entry.name);
        }
        assert_eq!(mode(&restored.operator("admin").join("admin.key")), 0o600);
        assert_eq!(mode(&restored.router_client_key()), 0o600);
        assert!(crate::SqliteStore::has_schema(restored.root()).unwrap());
        let tables = tables(&restored.database()).unwrap();
        assert_eq!(tables, super::tables(&state.database()).unwrap());
        assert_eq!(tables.len(), crate::schema::TABLES.len() + 2, "every table, sqlite_sequence and the version");
        assert!(matches!(restore(&dir.path().join("backup"), &restored), Err(BackupError::NotEmpty(_))));
        assert!(matches!(
            restore(&dir.path().join("nothing"), &StateDir::new(dir.path().join("x"))),
            Err(BackupError::NotABackup(_))
        ));
    }
}
