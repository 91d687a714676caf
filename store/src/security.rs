//! [`SecurityStore`]: the security tables: enrollment tokens (hashes only), agent certificates, operators and
//! the audit log, and the records the coordinator's security modules use.
//!
//! Kept apart from [`crate::Store`] so the fleet's interface stays about machines. It has its own connection
//! to `coordinator.db` ([`crate::db`]; durable at every commit), so `coordinator operators add` may write while
//! the server runs. Work runs in `spawn_blocking`, like the fleet store.

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use crate::db::{self, Shared, time_text};
use crate::schema::Writer;
use crate::{StateDir, StoreError};

/// A stored enrollment token (its hash stays in the store).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub id: String,
    pub machine: Option<String>,
    pub uses_left: u32,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked: bool,
}

/// Why a token was not accepted; the agent sees the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    Unknown,
    Expired,
    UsedUp,
    Revoked,
    OtherMachine,
}

/// A client certificate issued to an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentCertRecord {
    pub serial: String,
    pub machine_id: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
}

/// An operator and its credential.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorRecord {
    pub name: String,
    pub role: String,
    pub cert_serial: Option<String>,
}

/// One audit line.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub id: u64,
    pub at: DateTime<Utc>,
    pub operator: String,
    pub role: String,
    pub action: String,
    pub args: String,
    pub result: String,
}

/// The security tables. Cheap to clone.
#[derive(Clone)]
pub struct SecurityStore {
    conn: Shared,
}

fn parse_time(text: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

impl SecurityStore {
    /// Opens `<state_dir>/coordinator.db`, migrating it first.
    ///
    /// # Errors
    /// The file cannot be opened or migrated.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let conn = db::open(&StateDir::new(state_dir), Writer::Records.durability())?;
        Ok(SecurityStore { conn: Shared::new(conn) })
    }

    // === tokens ===

    /// Binds the token `token_id` to the MAAS machine `system_id`: the agent that enrolls with it takes
    /// that machine's identity over (a redeploy; see [`crate::Store::enroll`]).
    pub async fn bind_token_to_system(&self, token_id: String, system_id: String) -> Result<(), StoreError> {
        self.conn
            .with(move |conn| {
                conn.execute("UPDATE enroll_tokens SET system_id = ?2 WHERE id = ?1", params![token_id, system_id])?;
                Ok(())
            })
            .await
    }

    /// The MAAS machine the token `token_id` is bound to, if any.
    pub async fn token_system(&self, token_id: String) -> Result<Option<String>, StoreError> {
        self.conn
            .with(move |conn| {
                Ok(conn
                    .query_row("SELECT system_id FROM enroll_tokens WHERE id = ?1", params![token_id], |row| row.get(0))
                    .optional()?
                    .flatten())
            })
            .await
    }

    /// Records which machine enrolled with the token `token_id` (the redeploy flow waits for it; see
    /// [`crate::OperationsStore`], which owns the table). The first record stays.
    pub async fn record_token_enrollment(
        &self,
        token_id: String,
        machine_id: String,
        agent_id: String,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
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

    pub async fn insert_token(&self, record: TokenRecord, hash: String) -> Result<(), StoreError> {
        self.conn
            .with(move |conn| {
                conn.execute(
                    "INSERT INTO enroll_tokens (id, hash, machine, uses_left, expires_at, created_at, created_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        record.id,
                        hash,
                        record.machine,
                        record.uses_left,
                        time_text(record.expires_at),
                        time_text(record.created_at),
                        record.created_by
                    ],
                )?;
                Ok(())
            })
            .await
    }

    /// Checks the token with this hash and, when it may be used, takes one use, in one transaction.
    /// `machine_names` are the names the enrolling agent goes by (hostname, system_id).
    pub async fn redeem_token(
        &self,
        hash: String,
        machine_names: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<Result<TokenRecord, TokenRefusal>, StoreError> {
        self.conn
            .with(move |conn| {
                let tx = conn.transaction()?;
                let found = tx
                    .query_row(
                        "SELECT id, machine, uses_left, expires_at, created_at, created_by, revoked_at
                     FROM enroll_tokens WHERE hash = ?1",
                        params![hash],
                        token_row,
                    )
                    .optional()?;
                let Some(record) = found else { return Ok(Err(TokenRefusal::Unknown)) };
                let refusal = if record.revoked {
                    Some(TokenRefusal::Revoked)
                } else if record.expires_at <= now {
                    Some(TokenRefusal::Expired)
                } else if record.uses_left == 0 {
                    Some(TokenRefusal::UsedUp)
                } else if record.machine.as_ref().is_some_and(|m| !machine_names.iter().any(|n| n == m)) {
                    Some(TokenRefusal::OtherMachine)
                } else {
                    None
                };
                if let Some(refusal) = refusal {
                    return Ok(Err(refusal));
                }
                tx.execute("UPDATE enroll_tokens SET uses_left = uses_left - 1 WHERE id = ?1", params![record.id])?;
                tx.commit()?;
                Ok(Ok(TokenRecord { uses_left: record.uses_left - 1, ..record }))
            })
            .await
    }

    /// Gives back the use taken by [`SecurityStore::redeem_token`] when the enrollment failed after it.
    pub async fn refund_token(&self, id: String) -> Result<(), StoreError> {
        self.conn
            .with(move |conn| {
                conn.execute("UPDATE enroll_tokens SET uses_left = uses_left + 1 WHERE id = ?1", params![id])?;
                Ok(())
            })
            .await
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.conn
            .with(|conn| {
                let mut statement = conn.prepare(
                    "SELECT id, machine, uses_left, expires_at, created_at, created_by, revoked_at
                 FROM enroll_tokens ORDER BY created_at",
                )?;
                let rows = statement.query_map([], token_row)?.collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
    }

    /// Returns false when no such token exists.
    pub async fn revoke_token(&self, id: String, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.conn
            .with(move |conn| {
                let changed = conn.execute(
                    "UPDATE enroll_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                    params![id, time_text(now)],
                )?;
                Ok(changed > 0)
            })
            .await
    }

    // === agent certificates ===

    pub async fn insert_agent_cert(&self, record: AgentCertRecord) -> Result<(), StoreError> {
        self.conn
            .with(move |conn| {
                conn.execute(
                    "INSERT INTO agent_certs (serial, machine_id, issued_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                    params![
                        record.serial,
                        record.machine_id,
                        time_text(record.issued_at),
                        time_text(record.expires_at)
                    ],
                )?;
                Ok(())
            })
            .await
    }

    pub async fn agent_cert(&self, serial: String) -> Result<Option<AgentCertRecord>, StoreError> {
        self.conn
            .with(move |conn| {
                Ok(conn
                .query_row(
                    "SELECT serial, machine_id, issued_at, expires_at, revoked_at FROM agent_certs WHERE serial = ?1",
                    params![serial],
                    cert_row,
                )
                .optional()?)
            })
            .await
    }

    pub async fn agent_certs(&self) -> Result<Vec<AgentCertRecord>, StoreError> {
        self.conn
            .with(|conn| {
                let mut statement = conn.prepare(
                    "SELECT serial, machine_id, issued_at, expires_at, revoked_at FROM agent_certs ORDER BY issued_at",
                )?;
                let rows = statement.query_map([], cert_row)?.collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
    }

    /// Revokes every certificate of the machine; returns how many were not revoked before.
    pub async fn revoke_agent(&self, machine_id: String, now: DateTime<Utc>) -> Result<u32, StoreError> {
        self.conn
            .with(move |conn| {
                let changed = conn.execute(
                    "UPDATE agent_certs SET revoked_at = ?2 WHERE machine_id = ?1 AND revoked_at IS NULL",
                    params![machine_id, time_text(now)],
                )?;
                Ok(u32::try_from(changed).unwrap_or(u32::MAX))
            })
            .await
    }

    /// Serials of every revoked certificate (loaded at start into the in-memory revocation set).
    pub async fn revoked_serials(&self) -> Result<Vec<String>, StoreError> {
        self.conn
            .with(|conn| {
                let mut statement = conn.prepare("SELECT serial FROM agent_certs WHERE revoked_at IS NOT NULL")?;
                let rows = statement.query_map([], |row| row.get(0))?.collect::<Result<Vec<String>, _>>()?;
                Ok(rows)
            })
            .await
    }

    /// Machines whose every certificate is revoked (shown as `revoked`).
    pub async fn revoked_machines(&self) -> Result<Vec<String>, StoreError> {
        self.conn
            .with(|conn| {
                let mut statement = conn.prepare(
                    "SELECT machine_id FROM agent_certs GROUP BY machine_id HAVING SUM(revoked_at IS NULL) = 0",
                )?;
                let rows = statement.query_map([], |row| row.get(0))?.collect::<Result<Vec<String>, _>>()?;
                Ok(rows)
            })
            .await
    }

    // === operators ===

    /// Creates or replaces the operator: its old certificate or bearer token stops working.
    pub async fn put_operator(
        &self,
        record: OperatorRecord,
        token_hash: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn
            .with(move |conn| {
                conn.execute(
                    "INSERT OR REPLACE INTO operators (name, role, cert_serial, token_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![record.name, record.role, record.cert_serial, token_hash, time_text(now)],
                )?;
                Ok(())
            })
            .await
    }

    pub async fn operator(&self, name: String) -> Result<Option<OperatorRecord>, StoreError> {
        self.conn
            .with(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT name, role, cert_serial FROM operators WHERE name = ?1",
                        params![name],
                        operator_row,
                    )
                    .optional()?)
            })
            .await
    }

    pub async fn operator_by_token(&self, token_hash: String) -> Result<Option<OperatorRecord>, StoreError> {
        self.conn
            .with(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT name, role, cert_serial FROM operators WHERE token_hash = ?1",
                        params![token_hash],
                        operator_row,
                    )
                    .optional()?)
            })
            .await
    }

    // === audit ===

    pub async fn append_audit(
        &self,
        operator: String,
        role: String,
        action: String,
        args: String,
        result: String,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn
            .with(move |conn| {
                conn.execute(
                    "INSERT INTO audit (at, operator, role, action, args, result) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![time_text(now), operator, role, action, args, result],
                )?;
                Ok(())
            })
            .await
    }

    /// The newest `limit` entries (all when `None`), oldest first.
    pub async fn audit(&self, limit: Option<u32>) -> Result<Vec<AuditRecord>, StoreError> {
        self.conn
            .with(move |conn| {
                let limit = limit.map_or(-1, i64::from);
                let mut statement = conn.prepare(
                    "SELECT id, at, operator, role, action, args, result FROM
                 (SELECT * FROM audit ORDER BY id DESC LIMIT ?1) ORDER BY id",
                )?;
                let rows = statement
                    .query_map(params![limit], |row| {
                        Ok(AuditRecord {
                            id: row.get::<_, i64>(0)? as u64,
                            at: parse_time(&row.get::<_, String>(1)?)?,
                            operator: row.get(2)?,
                            role: row.get(3)?,
                            action: row.get(4)?,
                            args: row.get(5)?,
                            result: row.get(6)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
    }
}

fn token_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: row.get(0)?,
        machine: row.get(1)?,
        uses_left: row.get(2)?,
        expires_at: parse_time(&row.get::<_, String>(3)?)?,
        created_at: parse_time(&row.get::<_, String>(4)?)?,
        created_by: row.get(5)?,
        revoked: row.get::<_, Option<String>>(6)?.is_some(),
    })
}

fn cert_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AgentCertRecord> {
    Ok(AgentCertRecord {
        serial: row.get(0)?,
        machine_id: row.get(1)?,
        issued_at: parse_time(&row.get::<_, String>(2)?)?,
        expires_at: parse_time(&row.get::<_, String>(3)?)?,
        revoked: row.get::<_, Option<String>>(4)?.is_some(),
    })
}

fn operator_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<OperatorRecord> {
    Ok(OperatorRecord { name: row.get(0)?, role: row.get(1)?, cert_serial: row.get(2)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn token(id: &str, machine: Option<&str>, uses: u32, expires_at: DateTime<Utc>) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            machine: machine.map(str::to_string),
            uses_left: uses,
            expires_at,
            created_at: Utc::now(),
            created_by: "admin".into(),
            revoked: false,
        }
    }

    #[tokio::test]
    async fn tokens_are_single_use_expire_and_bind_to_a_machine() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecurityStore::open(dir.path()).unwrap();
        let now = Utc::now();
        store.insert_token(token("t1", None, 1, now + Duration::hours(1)), "h1".into()).await.unwrap();
        store.insert_token(token("t2", None, 3, now - Duration::seconds(1)), "h2".into()).await.unwrap();
        store.insert_token(token("t3", Some("server1"), 1, now + Duration::hours(1)), "h3".into()).await.unwrap();

        assert_eq!(store.redeem_token("h1".into(), vec![], now).await.unwrap().unwrap().uses_left, 0);
        assert_eq!(store.redeem_token("h1".into(), vec![], now).await.unwrap(), Err(TokenRefusal::UsedUp));
        // An enrollment that failed after the redemption gives the use back.
        store.refund_token("t1".into()).await.unwrap();
        assert_eq!(store.redeem_token("h1".into(), vec![], now).await.unwrap().unwrap().uses_left, 0);
        assert_eq!(store.redeem_token("h2".into(), vec![], now).await.unwrap(), Err(TokenRefusal::Expired));
        assert_eq!(store.redeem_token("nope".into(), vec![], now).await.unwrap(), Err(TokenRefusal::Unknown));
        let other = store.redeem_token("h3".into(), vec!["server2".into()], now).await.unwrap();
        assert_eq!(other, Err(TokenRefusal::OtherMachine));
        assert!(store.revoke_token("t3".into(), now).await.unwrap());
        let revoked = store.redeem_token("h3".into(), vec!["server1".into()], now).await.unwrap();
        assert_eq!(revoked, Err(TokenRefusal::Revoked));
        assert_eq!(store.tokens().await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn revoking_a_machine_revokes_all_its_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecurityStore::open(dir.path()).unwrap();
        let now = Utc::now();
        for serial in ["01", "02"] {
            let record = AgentCertRecord {
                serial: serial.into(),
                machine_id: "m1".into(),
                issued_at: now,
                expires_at: now + Duration::days(30),
                revoked: false,
            };
            store.insert_agent_cert(record).await.unwrap();
        }
        assert_eq!(store.revoke_agent("m1".into(), now).await.unwrap(), 2);
        assert_eq!(store.revoked_serials().await.unwrap().len(), 2);
        assert_eq!(store.revoked_machines().await.unwrap(), vec!["m1".to_string()]);
        assert!(store.agent_cert("01".into()).await.unwrap().unwrap().revoked);
    }
}
