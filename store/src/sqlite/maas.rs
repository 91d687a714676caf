//! [`MaasStore`] on SQLite: the `maas_machines` table and the one-row `maas_sync` record.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, params};

use model::domain::maas::{MaasMachine, MaasSync};

use super::SqliteStore;
use crate::db::{parse_json, parse_time, time_text, to_json};
use crate::{MaasStore, StoreError};

const COLUMNS: &str = "system_id, hostname, status, status_name, power_state, owner, ip_addresses, tags, zone, pool, \
                       cpu_count, cpu_speed_mhz, memory_mib, storage_bytes, disks, interfaces, updated_at";

fn machine_from_row(row: &Row<'_>) -> rusqlite::Result<MaasMachine> {
    Ok(MaasMachine {
        system_id: row.get(0)?,
        hostname: row.get(1)?,
        status: row.get(2)?,
        status_name: row.get(3)?,
        power_state: row.get(4)?,
        owner: row.get(5)?,
        ip_addresses: parse_json(row, 6)?,
        tags: parse_json(row, 7)?,
        zone: row.get(8)?,
        pool: row.get(9)?,
        cpu_count: row.get(10)?,
        cpu_speed_mhz: row.get::<_, i64>(11)? as u64,
        memory_mib: row.get::<_, i64>(12)? as u64,
        storage_bytes: row.get::<_, i64>(13)? as u64,
        disks: parse_json(row, 14)?,
        interfaces: parse_json(row, 15)?,
        updated_at: parse_time(row, 16)?,
    })
}

fn optional_time(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get::<_, Option<String>>(column)? {
        Some(_) => parse_time(row, column).map(Some),
        None => Ok(None),
    }
}

/// SQLite stores INTEGER as i64; sizes above i64::MAX do not exist in practice, so they saturate.
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[async_trait]
impl MaasStore for SqliteStore {
    async fn maas_machines(&self) -> Result<Vec<MaasMachine>, StoreError> {
        self.read(|conn| {
            let sql = format!("SELECT {COLUMNS} FROM maas_machines ORDER BY hostname, system_id");
            let mut statement = conn.prepare_cached(&sql)?;
            let machines = statement.query_map([], machine_from_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(machines)
        })
        .await
    }

    async fn maas_sync(&self) -> Result<MaasSync, StoreError> {
        self.read(|conn| {
            let sync = conn
                .query_row(
                    "SELECT last_attempt_at, last_success_at, last_error FROM maas_sync WHERE id = 1",
                    [],
                    |row| {
                        Ok(MaasSync {
                            last_attempt_at: optional_time(row, 0)?,
                            last_success_at: optional_time(row, 1)?,
                            last_error: row.get(2)?,
                        })
                    },
                )
                .optional()?;
            Ok(sync.unwrap_or_default())
        })
        .await
    }

    async fn record_maas_poll(
        &self,
        upserts: Vec<MaasMachine>,
        removed: Vec<String>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(move |writer, _| {
            let tx = writer.conn.transaction()?;
            {
                let mut upsert = tx.prepare_cached(&format!(
                    "INSERT OR REPLACE INTO maas_machines ({COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
                ))?;
                for m in &upserts {
                    upsert.execute(params![
                        m.system_id,
                        m.hostname,
                        m.status,
                        m.status_name,
                        m.power_state,
                        m.owner,
                        to_json(&m.ip_addresses)?,
                        to_json(&m.tags)?,
                        m.zone,
                        m.pool,
                        m.cpu_count,
                        int(m.cpu_speed_mhz),
                        int(m.memory_mib),
                        int(m.storage_bytes),
                        to_json(&m.disks)?,
                        to_json(&m.interfaces)?,
                        time_text(m.updated_at),
                    ])?;
                }
                let mut delete = tx.prepare_cached("DELETE FROM maas_machines WHERE system_id = ?1")?;
                for system_id in &removed {
                    delete.execute([system_id])?;
                }
                let at = time_text(at);
                tx.execute(
                    "INSERT INTO maas_sync (id, last_attempt_at, last_success_at, last_error) VALUES (1, ?1, ?1, NULL)
                     ON CONFLICT(id) DO UPDATE SET last_attempt_at = ?1, last_success_at = ?1, last_error = NULL",
                    [&at],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn record_maas_failure(&self, at: DateTime<Utc>, error: String) -> Result<(), StoreError> {
        self.write(move |writer, _| {
            writer.conn.execute(
                "INSERT INTO maas_sync (id, last_attempt_at, last_error) VALUES (1, ?1, ?2)
                 ON CONFLICT(id) DO UPDATE SET last_attempt_at = ?1, last_error = ?2",
                params![time_text(at), error],
            )?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use model::domain::maas::{MaasDisk, MaasInterface};

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
    }

    fn machine(system_id: &str, hostname: &str, status: i64) -> MaasMachine {
        MaasMachine {
            system_id: system_id.into(),
            hostname: hostname.into(),
            status,
            status_name: "Ready".into(),
            power_state: "off".into(),
            owner: Some("admin".into()),
            ip_addresses: vec!["172.16.11.5".into()],
            tags: vec!["gpu".into()],
            zone: "default".into(),
            pool: "default".into(),
            cpu_count: 4,
            cpu_speed_mhz: 3000,
            memory_mib: 16384,
            storage_bytes: 480_000_000_000,
            disks: vec![MaasDisk {
                name: "sda".into(),
                size_bytes: 240_057_409_536,
                model: "M".into(),
                serial: "S".into(),
            }],
            interfaces: vec![MaasInterface {
                name: "eno1".into(),
                mac_address: "52:54:00:00:00:01".into(),
                link_speed_mbps: 1000,
            }],
            updated_at: at(0),
        }
    }

    #[tokio::test]
    async fn polls_and_failures_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 10).unwrap();
        assert_eq!(store.maas_sync().await.unwrap(), MaasSync::default());
        assert!(store.maas_machines().await.unwrap().is_empty());

        let (a, b) = (machine("aaa", "server2", 4), machine("bbb", "server1", 4));
        store.record_maas_poll(vec![a.clone(), b.clone()], vec![], at(1)).await.unwrap();
        assert_eq!(store.maas_machines().await.unwrap(), vec![b.clone(), a.clone()]);
        let sync = store.maas_sync().await.unwrap();
        assert_eq!((sync.last_attempt_at, sync.last_success_at, sync.last_error), (Some(at(1)), Some(at(1)), None));

        store.record_maas_failure(at(2), "connection refused".into()).await.unwrap();
        let sync = store.maas_sync().await.unwrap();
        assert_eq!(sync.last_attempt_at, Some(at(2)));
        assert_eq!(sync.last_success_at, Some(at(1)));
        assert_eq!(sync.last_error.as_deref(), Some("connection refused"));
        assert_eq!(store.maas_machines().await.unwrap().len(), 2, "a failure keeps the last known state");

        let deployed = MaasMachine { status: 6, status_name: "Deployed".into(), updated_at: at(3), ..a };
        store.record_maas_poll(vec![deployed.clone()], vec!["bbb".into()], at(3)).await.unwrap();
        assert_eq!(store.maas_machines().await.unwrap(), vec![deployed]);
        assert_eq!(store.maas_sync().await.unwrap().last_error, None);
    }
}
