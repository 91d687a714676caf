//! The one place that opens `coordinator.db`: WAL, the busy timeout, foreign keys, each connection's durability
//! ([`Durability`], per table in [`crate::schema::TABLES`]), immediate transactions, and the migrations.
//!
//! Several connections write the same file (the fleet store's writer, the security and operations stores, and
//! `coordinator operators add` from another process); WAL lets them and the readers share it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, Row};

use crate::schema::MIGRATIONS;
use crate::{StateDir, StoreError};

/// How long a connection waits for another one's write lock before failing with SQLITE_BUSY.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How durable a connection's commits are (`PRAGMA synchronous`); see [`crate::schema::Writer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Survives the process being killed, not necessarily a power loss (WAL, `NORMAL`).
    Normal,
    /// Synced at every commit (`FULL`).
    Full,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

/// Opens the database of `state` with its pragmas and migrates it to the newest schema.
///
/// # Errors
/// The file cannot be opened, a pragma cannot be set, or a migration fails.
pub(crate) fn open(state: &StateDir, durability: Durability) -> Result<Connection, StoreError> {
    let mut conn = connect(&state.database(), durability)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Opens `path` with the pragmas every connection has, without migrating.
///
/// # Errors
/// The file cannot be opened or a pragma cannot be set.
pub(crate) fn connect(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path).map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", durability.pragma())?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Other connections write to the same file: a deferred transaction that read first could not take the
    // write lock later (SQLITE_BUSY without waiting); an immediate one takes it up front and waits up to the
    // busy timeout.
    conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
    Ok(conn)
}

/// Applies the migrations the file lacks, each in its own transaction with its version; the version is read
/// inside the transaction, so two processes opening the same new file migrate it once.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    loop {
        let tx = conn.transaction()?;
        let current: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let current = usize::try_from(current).unwrap_or(usize::MAX);
        if current > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "schema version {current} is newer than this coordinator knows ({})",
                MIGRATIONS.len()
            )));
        }
        let Some(sql) = MIGRATIONS.get(current) else { return Ok(()) };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (current + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = current + 1, "store migrated");
    }
}

/// One connection shared by a store's calls, each run in `spawn_blocking` so async tasks never block on SQLite.
#[derive(Clone)]
pub(crate) struct Shared {
    conn: Arc<Mutex<Connection>>,
}

impl Shared {
    pub(crate) fn new(conn: Connection) -> Self {
        Shared { conn: Arc::new(Mutex::new(conn)) }
    }

    pub(crate) async fn with<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut conn)
        })
        .await
        .map_err(|error| StoreError::Worker(error.to_string()))?
    }
}

/// The device and inode of the database file when it was opened. SQLite keeps writing into a file
/// that was deleted (or replaced) under it, and every such write would be lost at the next start:
/// a write is refused instead, so nothing is acknowledged that is not in the real file.
#[derive(Debug, Clone)]
pub(crate) struct FileIdentity {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    pub(crate) fn of(path: &Path) -> Result<Self, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|source| StoreError::FileGone {
            path: path.to_owned(),
            why: format!("cannot read its metadata: {source}"),
        })?;
        Ok(FileIdentity { path: path.to_owned(), dev: meta.dev(), ino: meta.ino() })
    }

    /// # Errors
    /// [`StoreError::FileGone`] when the path no longer names the file that was opened.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        use std::os::unix::fs::MetadataExt;
        let gone = |why: String| StoreError::FileGone { path: self.path.clone(), why };
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => Ok(()),
            Ok(_) => Err(gone("another file was put in its place".into())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(gone("it was deleted".into())),
            Err(error) => Err(gone(format!("cannot read its metadata: {error}"))),
        }
    }
}

/// How every table stores a time: RFC 3339 in UTC with microseconds.
pub(crate) fn time_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn conversion_error(
    column: usize,
    error: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(error))
}

/// The time in `column` (see [`time_text`]).
pub(crate) fn parse_time(row: &Row<'_>, column: usize) -> rusqlite::Result<DateTime<Utc>> {
    let text: String = row.get(column)?;
    DateTime::parse_from_rfc3339(&text).map(|t| t.with_timezone(&Utc)).map_err(|e| conversion_error(column, e))
}

/// The JSON document in `column`.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(row: &Row<'_>, column: usize) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text).map_err(|e| conversion_error(column, e))
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_is_wal_with_its_durability_and_the_schema_is_migrated_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let normal = open(&state, Durability::Normal).unwrap();
        let full = open(&state, Durability::Full).unwrap();
        let pragma = |conn: &Connection, name: &str| -> String {
            conn.pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
                .map(|v| match v {
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    other => format!("{other:?}"),
                })
                .unwrap()
        };
        assert_eq!(pragma(&normal, "journal_mode"), "wal");
        assert_eq!(pragma(&normal, "synchronous"), "1");
        assert_eq!(pragma(&full, "synchronous"), "2");
        assert_eq!(pragma(&full, "foreign_keys"), "1");
        assert_eq!(pragma(&full, "busy_timeout"), BUSY_TIMEOUT.as_millis().to_string());
        assert_eq!(pragma(&full, "user_version"), MIGRATIONS.len().to_string());
    }

    #[test]
    fn file_identity_notices_a_deleted_or_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "a").unwrap();
        let identity = FileIdentity::of(&path).unwrap();
        identity.check().unwrap();
        std::fs::write(dir.path().join("g"), "b").unwrap();
        std::fs::rename(dir.path().join("g"), &path).unwrap();
        assert!(matches!(identity.check(), Err(StoreError::FileGone { why, .. }) if why.contains("another file")));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(identity.check(), Err(StoreError::FileGone { why, .. }) if why.contains("deleted")));
    }
}
