//! The operations tables (migration 5 of [`crate::store::sqlite`]): each operation as one JSON document, and
//! which enrollment token enrolled which machine.
//!
//! An operation is written whole after every step change, in one statement, so a coordinator killed at any
//! point finds either the state before the change or the state after it. Like the security store, it keeps its
//! own connection to `coordinator.db` (WAL) and runs its work in `spawn_blocking`.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::Operation;
use crate::store::{SqliteStore, StoreError};

/// The schema step that adds the operations tables (appended to `MIGRATIONS`).
pub const MIGRATION: &str = "CREATE TABLE operations (
        id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        finished INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX operations_created ON operations(created_at);
    CREATE TABLE token_enrollments (
        token_id TEXT PRIMARY KEY,
        machine_id TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        enrolled_at TEXT NOT NULL
    );";

/// The operations tables. Cheap to clone.
#[derive(Clone)]
pub struct OperationsStore {
    conn: Arc<Mutex<Connection>>,
}

impl OperationsStore {
    /// Opens `<state_dir>/coordinator.db`, migrating it first.
    ///
    /// # Errors
    /// The file cannot be opened or migrated.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        drop(SqliteStore::open(state_dir, 1)?);
        let path = state_dir.join(crate::store::sqlite::FILE_NAME);
        let conn = Connection::open(&path).map_err(|source| StoreError::Open { path: path.clone(), source })?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(OperationsStore { conn: Arc::new(Mutex::new(conn)) })
    }

    async fn with<T, F>(&self, work: F) -> Result<T, StoreError>
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

    /// Inserts or replaces the operation.
    pub async fn put(&self, op: &Operation) -> Result<(), StoreError> {
        let body = serde_json::to_string(op).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let id = op.id.clone();
        let created = time_text(op.created_at);
        let finished = op.state.is_final();
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO operations (id, created_at, finished, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET finished = excluded.finished, body = excluded.body",
                params![id, created, finished, body],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn get(&self, id: &str) -> Result<Option<Operation>, StoreError> {
        let id = id.to_string();
        self.with(move |conn| {
            let body: Option<String> = conn
                .query_row("SELECT body FROM operations WHERE id = ?1", params![id], |row| row.get(0))
                .optional()?;
            body.map(|b| parse(&b)).transpose()
        })
        .await
    }

    /// Newest first; `limit` 0 means all.
    pub async fn list(&self, limit: u32) -> Result<Vec<Operation>, StoreError> {
        self.select("SELECT body FROM operations ORDER BY created_at DESC, id DESC", limit).await
    }

    /// Operations a restarted coordinator must resume, oldest first.
    pub async fn unfinished(&self) -> Result<Vec<Operation>, StoreError> {
        self.select("SELECT body FROM operations WHERE finished = 0 ORDER BY created_at", 0).await
    }

    async fn select(&self, sql: &'static str, limit: u32) -> Result<Vec<Operation>, StoreError> {
        self.with(move |conn| {
            let mut statement = conn.prepare(sql)?;
            let bodies = statement.query_map([], |row| row.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
            let take = if limit == 0 { usize::MAX } else { limit as usize };
            bodies.iter().take(take).map(|b| parse(b)).collect()
        })
        .await
    }

    /// The coordinator's machine id of the agent that enrolled with this token, if one did.
    pub async fn token_enrollment(&self, token_id: &str) -> Result<Option<String>, StoreError> {
        let token_id = token_id.to_string();
        self.with(move |conn| {
            Ok(conn
                .query_row("SELECT machine_id FROM token_enrollments WHERE token_id = ?1", params![token_id], |row| {
                    row.get(0)
                })
                .optional()?)
        })
        .await
    }

    /// Records that the agent `agent_id` enrolled as `machine_id` with the token `token_id` (tokens are
    /// single-use for deploys, so the first record stays).
    pub async fn record_token_enrollment(
        &self,
        token_id: &str,
        machine_id: &str,
        agent_id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (token_id, machine_id, agent_id) = (token_id.to_string(), machine_id.to_string(), agent_id.to_string());
        self.with(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO token_enrollments (token_id, machine_id, agent_id, enrolled_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![token_id, machine_id, agent_id, time_text(at)],
            )?;
            Ok(())
        })
        .await
    }
}

fn parse(body: &str) -> Result<Operation, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("operation record: {e}")))
}

fn time_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::{MachineOp, OpState};

    #[tokio::test]
    async fn operations_round_trip_and_unfinished_ones_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = OperationsStore::open(dir.path()).unwrap();
        let mut op = Operation::new("redeploy", 1, 0, "jammy".into(), None);
        op.machines.push(MachineOp::new("abc123", "server1", 0));
        store.put(&op).await.unwrap();
        assert_eq!(store.get(&op.id).await.unwrap().unwrap(), op);
        assert_eq!(store.unfinished().await.unwrap().len(), 1);
        op.state = OpState::Succeeded;
        store.put(&op).await.unwrap();
        assert!(store.unfinished().await.unwrap().is_empty());
        assert_eq!(store.list(0).await.unwrap().len(), 1);
        assert!(store.get("nope").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn token_enrollment_keeps_the_first_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = OperationsStore::open(dir.path()).unwrap();
        assert_eq!(store.token_enrollment("t1").await.unwrap(), None);
        store.record_token_enrollment("t1", "m1", "a1", Utc::now()).await.unwrap();
        store.record_token_enrollment("t1", "m2", "a2", Utc::now()).await.unwrap();
        assert_eq!(store.token_enrollment("t1").await.unwrap().as_deref(), Some("m1"));
    }
}
