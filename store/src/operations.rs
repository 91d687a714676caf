//! [`OperationsStore`]: the operations tables: each redeploy operation as one JSON document, and which
//! enrollment token enrolled which machine.
//!
//! An operation is written whole after every step change, in one statement, so a coordinator killed at any
//! point finds either the state before the change or the state after it. Its connection is durable at every
//! commit ([`crate::schema::Writer::Records`]).

use std::path::Path;

use chrono::{DateTime, Utc};
use model::operations::Operation;
use rusqlite::{OptionalExtension, params};

use crate::db::{self, Shared, time_text};
use crate::schema::Writer;
use crate::{StateDir, StoreError};

/// The operations tables. Cheap to clone.
#[derive(Clone)]
pub struct OperationsStore {
    conn: Shared,
}

impl OperationsStore {
    /// Opens `<state_dir>/coordinator.db`, migrating it first.
    ///
    /// # Errors
    /// The file cannot be opened or migrated.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let conn = db::open(&StateDir::new(state_dir), Writer::Records.durability())?;
        Ok(OperationsStore { conn: Shared::new(conn) })
    }

    /// Inserts or replaces the operation.
    pub async fn put(&self, op: &Operation) -> Result<(), StoreError> {
        let body = serde_json::to_string(op).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let id = op.id.clone();
        let created = time_text(op.created_at);
        let finished = op.state.is_final();
        self.conn
            .with(move |conn| {
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
        self.conn
            .with(move |conn| {
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
        self.conn
            .with(move |conn| {
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
        self.conn
            .with(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT machine_id FROM token_enrollments WHERE token_id = ?1",
                        params![token_id],
                        |row| row.get(0),
                    )
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
        self.conn
            .with(move |conn| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use model::operations::{MachineOp, OpState};

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
