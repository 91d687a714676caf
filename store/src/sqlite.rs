//! The SQLite store: the fleet's tables in `<state_dir>/coordinator.db` (opened by [`crate::db`]).
//!
//! Two connections: one for writes and one for reads (WAL lets readers run beside the writer).
//! Each is behind a `std::sync::Mutex` and only used inside `spawn_blocking`, so async tasks never
//! block on SQLite. Heartbeats arrive in batches ([`Store::record_samples`]) and are committed in
//! one transaction each.

mod maas;
mod verify;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use model::domain::{Enrollment, Event, Health, Inventory, Machine, NewEvent, Sample};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::db::{self, FileIdentity, conversion_error, parse_json, parse_time, time_text, to_json};
use crate::schema::Writer as TableWriter;
use crate::{Enrolled, SampleWrite, StateDir, Store, StoreError, Takeover};

const MACHINE_COLUMNS: &str = "id, agent_id, hostname, system_id, macs, agent_version, enrolled_at, last_seen, \
                               heartbeat_interval_ms, health, health_reasons";
const EVENT_COLUMNS: &str = "id, at, machine_id, hostname, kind, message, from_health, to_health";

/// The SQLite implementation of [`Store`]. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    write: Mutex<Writer>,
    read: Mutex<Connection>,
    history_samples: u32,
    /// The database file as opened; every write first checks the path still names it.
    file: FileIdentity,
}

struct Writer {
    conn: Connection,
    /// Samples inserted per machine since its history was last pruned; pruning runs once this
    /// reaches a tenth of the bound, so most inserts do not pay for a delete.
    since_prune: HashMap<String, u32>,
}

impl SqliteStore {
    /// Opens (creating if needed) `<state_dir>/coordinator.db` and migrates it to the newest schema.
    ///
    /// # Errors
    /// The file cannot be opened or a migration fails.
    pub fn open(state_dir: &Path, history_samples: u32) -> Result<Self, StoreError> {
        let state = StateDir::new(state_dir);
        let durability = TableWriter::Fleet.durability();
        let write = db::open(&state, durability)?;
        let read = db::connect(&state.database(), durability)?;
        let file = FileIdentity::of(&state.database())?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                write: Mutex::new(Writer { conn: write, since_prune: HashMap::new() }),
                read: Mutex::new(read),
                history_samples: history_samples.max(1),
                file,
            }),
        })
    }

    /// Whether `<state_dir>/coordinator.db` exists and holds a schema (a truncated or empty file does
    /// not): the server refuses to start over a missing store next to an existing CA.
    ///
    /// # Errors
    /// The file exists but cannot be opened or read (not a database, say).
    pub fn has_schema(state_dir: &Path) -> Result<bool, StoreError> {
        let path = StateDir::new(state_dir).database();
        if !path.exists() {
            return Ok(false);
        }
        let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|source| StoreError::Open { path: path.clone(), source })?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|source| StoreError::Open { path: path.clone(), source })?;
        Ok(version > 0)
    }

    /// The schema version of the open file.
    ///
    /// # Errors
    /// The pragma cannot be read.
    pub async fn schema_version(&self) -> Result<u32, StoreError> {
        self.read(|conn| Ok(conn.pragma_query_value(None, "user_version", |row| row.get::<_, u32>(0))?)).await
    }

    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer, u32) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut writer = inner.write.lock().unwrap_or_else(PoisonError::into_inner);
            inner.file.check()?;
            work(&mut writer, inner.history_samples)
        })
        .await
        .map_err(|error| StoreError::Worker(error.to_string()))?
    }

    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner.read.lock().unwrap_or_else(PoisonError::into_inner);
            work(&conn)
        })
        .await
        .map_err(|error| StoreError::Worker(error.to_string()))?
    }
}

fn parse_health(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<Health>> {
    let text: Option<String> = row.get(column)?;
    text.map(|t| t.parse::<Health>().map_err(|e| conversion_error(column, e))).transpose()
}

fn machine_from_row(row: &Row<'_>) -> rusqlite::Result<Machine> {
    Ok(Machine {
        id: row.get(0)?,
        agent_id: row.get(1)?,
        hostname: row.get(2)?,
        system_id: row.get(3)?,
        mac_addresses: parse_json(row, 4)?,
        agent_version: row.get(5)?,
        enrolled_at: parse_time(row, 6)?,
        last_seen: match row.get::<_, Option<String>>(7)? {
            Some(_) => Some(parse_time(row, 7)?),
            None => None,
        },
        heartbeat_interval_ms: row.get(8)?,
        health: parse_health(row, 9)?.unwrap_or(Health::Unknown),
        health_reasons: parse_json(row, 10)?,
    })
}

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: row.get::<_, i64>(0)? as u64,
        at: parse_time(row, 1)?,
        machine_id: row.get(2)?,
        hostname: row.get(3)?,
        kind: row.get(4)?,
        message: row.get(5)?,
        from_health: parse_health(row, 6)?,
        to_health: parse_health(row, 7)?,
    })
}

/// Whether a row failed to decode (a bad value in it), as opposed to the database failing.
fn is_undecodable(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
    )
}

/// Reading is total: a row that cannot be decoded is reported and skipped, never a reason to fail the
/// whole read (and with it the coordinator's start); the database failing is still an error.
fn readable<T>(rows: impl Iterator<Item = rusqlite::Result<T>>, table: &str) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for (index, row) in rows.enumerate() {
        match row {
            Ok(value) => out.push(value),
            Err(error) if is_undecodable(&error) => {
                tracing::error!(table, row = index, %error, "skipping a stored row that cannot be read");
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(out)
}

/// [`readable`] for one optional row: an undecodable one reads as absent (and is reported).
fn readable_one<T>(row: rusqlite::Result<Option<T>>, table: &str, key: &str) -> Result<Option<T>, StoreError> {
    match row {
        Ok(value) => Ok(value),
        Err(error) if is_undecodable(&error) => {
            tracing::error!(table, key, %error, "skipping a stored row that cannot be read");
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

fn machine_by_id(conn: &Connection, machine_id: &str) -> Result<Option<Machine>, StoreError> {
    let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE id = ?1");
    Ok(conn.query_row(&sql, [machine_id], machine_from_row).optional()?)
}

// === impl Store ===

#[async_trait]
impl Store for SqliteStore {
    async fn enroll(
        &self,
        enrollment: Enrollment,
        interval_ms: u32,
        now: DateTime<Utc>,
        takeover: Takeover,
    ) -> Result<Enrolled, StoreError> {
        self.write(move |writer, _| {
            let tx = writer.conn.transaction()?;
            let macs = to_json(&enrollment.mac_addresses)?;
            let existing: Option<(String, String)> = tx
                .query_row("SELECT id, hostname FROM machines WHERE agent_id = ?1", [&enrollment.agent_id], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            let mut ignored_hostname = None;
            let mut replaced_agent = None;
            let (id, created) = match existing {
                Some((id, hostname)) => {
                    // A known agent keeps its machine's name: an agent never renames a machine.
                    if hostname != enrollment.hostname {
                        ignored_hostname = Some(enrollment.hostname.clone());
                    }
                    tx.execute(
                        "UPDATE machines SET macs = ?2, agent_version = ?3, heartbeat_interval_ms = ?4 WHERE id = ?1",
                        params![id, macs, enrollment.agent_version, interval_ms],
                    )?;
                    (id, false)
                }
                None => {
                    // The machine this agent may take over: the one its redeploy token is bound to.
                    let bound: Option<(String, String)> = match &takeover.system_id {
                        Some(system_id) => tx
                            .query_row(
                                "SELECT id, agent_id FROM machines WHERE system_id = ?1 ORDER BY enrolled_at LIMIT 1",
                                [system_id],
                                |row| Ok((row.get(0)?, row.get(1)?)),
                            )
                            .optional()?,
                        None => None,
                    };
                    let holder: Option<String> = tx
                        .query_row("SELECT id FROM machines WHERE hostname = ?1 LIMIT 1", [&enrollment.hostname], |row| {
                            row.get(0)
                        })
                        .optional()?;
                    match (bound, holder) {
                        (Some((id, old_agent)), holder) if holder.as_ref().is_none_or(|h| *h == id) => {
                            tx.execute(
                                "UPDATE machines SET agent_id = ?2, hostname = ?3, macs = ?4, agent_version = ?5,
                                        heartbeat_interval_ms = ?6, health = ?7, health_reasons = '[]',
                                        last_seen = NULL, last_seq = 0
                                 WHERE id = ?1",
                                params![
                                    id,
                                    enrollment.agent_id,
                                    enrollment.hostname,
                                    macs,
                                    enrollment.agent_version,
                                    interval_ms,
                                    Health::Unknown.as_str()
                                ],
                            )?;
                            tx.execute("DELETE FROM inventories WHERE machine_id = ?1", [&id])?;
                            tx.execute("DELETE FROM latest_samples WHERE machine_id = ?1", [&id])?;
                            replaced_agent = Some(old_agent);
                            (id, false)
                        }
                        (_, Some(holder)) => {
                            return Err(StoreError::HostnameTaken {
                                hostname: enrollment.hostname.clone(),
                                machine_id: holder,
                            });
                        }
                        (_, None) => {
                            let id = uuid::Uuid::new_v4().to_string();
                            tx.execute(
                                "INSERT INTO machines (id, agent_id, hostname, system_id, macs, agent_version, enrolled_at,
                                                       last_seen, heartbeat_interval_ms, health, health_reasons)
                                 VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6, NULL, ?7, ?8, '[]')",
                                params![
                                    id,
                                    enrollment.agent_id,
                                    enrollment.hostname,
                                    macs,
                                    enrollment.agent_version,
                                    time_text(now),
                                    interval_ms,
                                    Health::Unknown.as_str()
                                ],
                            )?;
                            (id, true)
                        }
                    }
                }
            };
            let machine = machine_by_id(&tx, &id)?.ok_or_else(|| StoreError::NoSuchMachine(id.clone()))?;
            tx.commit()?;
            Ok(Enrolled { machine, created, ignored_hostname, replaced_agent })
        })
        .await
    }

    async fn machine(&self, machine_id: &str) -> Result<Option<Machine>, StoreError> {
        let machine_id = machine_id.to_string();
        self.read(move |conn| {
            let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE id = ?1");
            let found = conn.query_row(&sql, [&machine_id], machine_from_row).optional();
            readable_one(found, "machines", &machine_id)
        })
        .await
    }

    fn check(&self) -> Result<(), StoreError> {
        self.inner.file.check()
    }

    async fn machines(&self) -> Result<Vec<Machine>, StoreError> {
        self.read(|conn| {
            let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines ORDER BY hostname, id");
            let mut statement = conn.prepare(&sql)?;
            readable(statement.query_map([], machine_from_row)?, "machines")
        })
        .await
    }

    async fn put_inventory(&self, machine_id: &str, inventory: Inventory) -> Result<bool, StoreError> {
        let machine_id = machine_id.to_string();
        self.write(move |writer, _| {
            let body = to_json(&inventory)?;
            let tx = writer.conn.transaction()?;
            if machine_by_id(&tx, &machine_id)?.is_none() {
                return Err(StoreError::NoSuchMachine(machine_id));
            }
            let before: Option<String> = tx
                .query_row("SELECT body FROM inventories WHERE machine_id = ?1", [&machine_id], |row| row.get(0))
                .optional()?;
            // Compare without the collection time, which changes on every report.
            let comparable = |text: &str| {
                serde_json::from_str::<Inventory>(text).ok().map(|mut i| {
                    i.collected_at = None;
                    i
                })
            };
            let changed = before.as_deref().and_then(comparable) != comparable(&body);
            tx.execute(
                "INSERT INTO inventories (machine_id, reported_at, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT(machine_id) DO UPDATE SET reported_at = excluded.reported_at, body = excluded.body",
                params![machine_id, time_text(Utc::now()), body],
            )?;
            tx.commit()?;
            Ok(changed)
        })
        .await
    }

    async fn inventory(&self, machine_id: &str) -> Result<Option<Inventory>, StoreError> {
        let machine_id = machine_id.to_string();
        self.read(move |conn| {
            let found = conn
                .query_row("SELECT body FROM inventories WHERE machine_id = ?1", [&machine_id], |row| {
                    parse_json(row, 0)
                })
                .optional();
            readable_one(found, "inventories", &machine_id)
        })
        .await
    }

    async fn record_samples(&self, writes: Vec<SampleWrite>) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        self.write(move |writer, bound| {
            let tx = writer.conn.transaction()?;
            let mut inserted: HashMap<String, u32> = HashMap::new();
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO samples (machine_id, taken_at, received_at, body) VALUES (?1, ?2, ?3, ?4)",
                )?;
                let mut latest = tx.prepare_cached(
                    "INSERT INTO latest_samples (machine_id, received_at, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT(machine_id) DO UPDATE SET received_at = excluded.received_at, body = excluded.body",
                )?;
                let mut seen = tx.prepare_cached(
                    "UPDATE machines SET last_seen = ?2, heartbeat_interval_ms = ?3 WHERE id = ?1 RETURNING last_seq",
                )?;
                let mut advance = tx.prepare_cached("UPDATE machines SET last_seq = ?2 WHERE id = ?1")?;
                for write in &writes {
                    let received = time_text(write.received_at);
                    let last_seq: Option<i64> = seen
                        .query_row(params![write.machine_id, received, write.interval_ms], |row| row.get(0))
                        .optional()?;
                    // None: the machine is gone from the store; its samples have nowhere to belong.
                    let Some(last_seq) = last_seq else { continue };
                    let mut last_seq = u64::try_from(last_seq).unwrap_or(0);
                    let mut count = 0u32;
                    let mut newest = None;
                    for sample in &write.samples {
                        // A sample resent after its acknowledgement was lost is already here.
                        if sample.seq != 0 && sample.seq <= last_seq {
                            continue;
                        }
                        let taken = sample.taken_at.map(time_text);
                        insert.execute(params![write.machine_id, taken, received, to_json(sample)?])?;
                        last_seq = last_seq.max(sample.seq);
                        count += 1;
                        newest = Some(sample);
                    }
                    if let Some(last) = newest {
                        latest.execute(params![write.machine_id, received, to_json(last)?])?;
                        advance.execute(params![write.machine_id, i64::try_from(last_seq).unwrap_or(i64::MAX)])?;
                    }
                    *inserted.entry(write.machine_id.clone()).or_default() += count;
                }
                let slack = (bound / 10).max(1);
                let mut prune = tx.prepare_cached(
                    "DELETE FROM samples WHERE machine_id = ?1 AND id <
                        (SELECT id FROM samples WHERE machine_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                )?;
                for (machine_id, count) in inserted {
                    let pending = writer.since_prune.entry(machine_id.clone()).or_default();
                    *pending += count;
                    if *pending >= slack {
                        prune.execute(params![machine_id, bound - 1])?;
                        *pending = 0;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn latest_sample(&self, machine_id: &str) -> Result<Option<Sample>, StoreError> {
        let machine_id = machine_id.to_string();
        self.read(move |conn| {
            let found = conn
                .query_row("SELECT body FROM latest_samples WHERE machine_id = ?1", [&machine_id], |row| {
                    parse_json(row, 0)
                })
                .optional();
            readable_one(found, "latest_samples", &machine_id)
        })
        .await
    }

    async fn history(&self, machine_id: &str, limit: u32) -> Result<Vec<Sample>, StoreError> {
        let machine_id = machine_id.to_string();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT body FROM (SELECT id, body FROM samples WHERE machine_id = ?1 ORDER BY id DESC LIMIT ?2)
                 ORDER BY id ASC",
            )?;
            readable(statement.query_map(params![machine_id, limit], |row| parse_json::<Sample>(row, 0))?, "samples")
        })
        .await
    }

    async fn set_health(&self, machine_id: &str, health: Health, reasons: Vec<String>) -> Result<(), StoreError> {
        let machine_id = machine_id.to_string();
        self.write(move |writer, _| {
            let changed = writer.conn.execute(
                "UPDATE machines SET health = ?2, health_reasons = ?3 WHERE id = ?1",
                params![machine_id, health.as_str(), to_json(&reasons)?],
            )?;
            if changed == 0 {
                return Err(StoreError::NoSuchMachine(machine_id));
            }
            Ok(())
        })
        .await
    }

    async fn append_event(&self, event: NewEvent) -> Result<Event, StoreError> {
        self.write(move |writer, _| {
            writer.conn.execute(
                "INSERT INTO events (at, machine_id, hostname, kind, message, from_health, to_health)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    time_text(event.at),
                    event.machine_id,
                    event.hostname,
                    event.kind,
                    event.message,
                    event.from_health.map(Health::as_str),
                    event.to_health.map(Health::as_str)
                ],
            )?;
            let id = writer.conn.last_insert_rowid();
            Ok(Event::from_new(id as u64, event))
        })
        .await
    }

    async fn events(&self, after_id: u64, limit: Option<u32>) -> Result<Vec<Event>, StoreError> {
        self.read(move |conn| {
            let after = after_id.min(i64::MAX as u64) as i64;
            let events = match limit {
                Some(limit) => {
                    let sql = format!(
                        "SELECT {EVENT_COLUMNS} FROM (SELECT * FROM events WHERE id > ?1 ORDER BY id DESC LIMIT ?2)
                         ORDER BY id ASC"
                    );
                    let mut statement = conn.prepare_cached(&sql)?;
                    readable(statement.query_map(params![after, limit], event_from_row)?, "events")?
                }
                None => {
                    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id > ?1 ORDER BY id ASC");
                    let mut statement = conn.prepare_cached(&sql)?;
                    readable(statement.query_map(params![after], event_from_row)?, "events")?
                }
            };
            Ok(events)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use model::domain::kinds;

    fn enrollment(agent_id: &str, hostname: &str) -> Enrollment {
        Enrollment {
            agent_id: agent_id.to_string(),
            hostname: hostname.to_string(),
            mac_addresses: vec!["52:54:00:00:00:01".to_string()],
            agent_version: "0.1.0".to_string(),
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
    }

    fn sample(cpu: f64) -> Sample {
        Sample { cpu_percent: cpu, taken_at: Some(at(cpu as i64)), ..Default::default() }
    }

    fn write(machine_id: &str, samples: Vec<Sample>) -> SampleWrite {
        SampleWrite { machine_id: machine_id.to_string(), samples, received_at: at(100), interval_ms: 5000 }
    }

    #[tokio::test]
    async fn migrates_from_zero_and_reopens_with_data() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 1000).unwrap();
        assert_eq!(store.schema_version().await.unwrap(), crate::schema::MIGRATIONS.len() as u32);
        let enrolled = store.enroll(enrollment("agent-a", "server1"), 5000, at(0), Takeover::default()).await.unwrap();
        assert!(enrolled.created);
        store.record_samples(vec![write(&enrolled.machine.id, vec![sample(1.0), sample(2.0)])]).await.unwrap();
        drop(store);

        let reopened = SqliteStore::open(dir.path(), 1000).unwrap();
        assert_eq!(reopened.schema_version().await.unwrap(), crate::schema::MIGRATIONS.len() as u32);
        let machine = reopened.machine(&enrolled.machine.id).await.unwrap().unwrap();
        assert_eq!(machine.hostname, "server1");
        assert_eq!(machine.last_seen, Some(at(100)));
        assert_eq!(machine.health, Health::Unknown);
        assert_eq!(reopened.history(&machine.id, 10).await.unwrap(), vec![sample(1.0), sample(2.0)]);
        assert_eq!(reopened.latest_sample(&machine.id).await.unwrap(), Some(sample(2.0)));
    }

    #[tokio::test]
    async fn same_agent_gets_same_machine_and_keeps_its_hostname() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 1000).unwrap();
        let first = store.enroll(enrollment("agent-a", "old"), 5000, at(0), Takeover::default()).await.unwrap();
        let second = store.enroll(enrollment("agent-a", "new"), 5000, at(1), Takeover::default()).await.unwrap();
        let other = store.enroll(enrollment("agent-b", "b"), 5000, at(2), Takeover::default()).await.unwrap();
        assert!(!second.created);
        assert_eq!(first.machine.id, second.machine.id);
        assert_eq!(second.machine.hostname, "old", "an agent never renames its machine");
        assert_eq!(second.ignored_hostname.as_deref(), Some("new"));
        assert_eq!(second.machine.enrolled_at, at(0));
        assert_ne!(other.machine.id, first.machine.id);
        assert_eq!(store.machines().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn history_is_bounded_per_machine() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 10).unwrap();
        let a = store.enroll(enrollment("a", "a"), 5000, at(0), Takeover::default()).await.unwrap().machine.id;
        let b = store.enroll(enrollment("b", "b"), 5000, at(0), Takeover::default()).await.unwrap().machine.id;
        for batch in 0..5 {
            let samples: Vec<Sample> = (0..7).map(|i| sample(f64::from(batch * 7 + i))).collect();
            store.record_samples(vec![write(&a, samples), write(&b, vec![sample(0.0)])]).await.unwrap();
        }
        let history = store.history(&a, 1000).await.unwrap();
        let cpu: Vec<f64> = history.iter().map(|s| s.cpu_percent).collect();
        assert_eq!(cpu, (25..35).map(f64::from).collect::<Vec<_>>(), "the newest 10, oldest first");
        assert_eq!(store.history(&b, 1000).await.unwrap().len(), 5);
        assert_eq!(store.history(&a, 3).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn events_keep_order_and_limit_takes_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 10).unwrap();
        for n in 0..5 {
            let event = NewEvent {
                at: at(n),
                machine_id: "m".to_string(),
                hostname: "h".to_string(),
                kind: kinds::HEALTH_CHANGED.to_string(),
                message: format!("change {n}"),
                from_health: Some(Health::Healthy),
                to_health: (n % 2 == 0).then_some(Health::Unreachable),
            };
            let stored = store.append_event(event).await.unwrap();
            assert_eq!(stored.id, n as u64 + 1);
        }
        let all = store.events(0, None).await.unwrap();
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert_eq!(all[0].to_health, Some(Health::Unreachable));
        assert_eq!(all[1].to_health, None);
        assert_eq!(all[4].at, at(4));
        let newest = store.events(0, Some(2)).await.unwrap();
        assert_eq!(newest.iter().map(|e| e.id).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(store.events(3, None).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn inventory_change_ignores_collection_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 10).unwrap();
        let id = store.enroll(enrollment("a", "a"), 5000, at(0), Takeover::default()).await.unwrap().machine.id;
        let inventory =
            Inventory { cpu_model: "x".into(), logical_cpus: 4, collected_at: Some(at(1)), ..Default::default() };
        assert!(store.put_inventory(&id, inventory.clone()).await.unwrap());
        let again = Inventory { collected_at: Some(at(2)), ..inventory.clone() };
        assert!(!store.put_inventory(&id, again).await.unwrap());
        let more = Inventory { logical_cpus: 8, ..inventory };
        assert!(store.put_inventory(&id, more).await.unwrap());
        assert_eq!(store.inventory(&id).await.unwrap().unwrap().logical_cpus, 8);
        assert!(matches!(store.put_inventory("nope", Inventory::default()).await, Err(StoreError::NoSuchMachine(_))));
    }

    #[tokio::test]
    async fn health_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 10).unwrap();
        let id = store.enroll(enrollment("a", "a"), 5000, at(0), Takeover::default()).await.unwrap().machine.id;
        store.set_health(&id, Health::Degraded, vec!["disk / 95% used".into()]).await.unwrap();
        let machine = store.machine(&id).await.unwrap().unwrap();
        assert_eq!((machine.health, machine.health_reasons), (Health::Degraded, vec!["disk / 95% used".to_string()]));
    }
}
