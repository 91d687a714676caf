//! [`VerifyStore`] on SQLite: expected profiles, baselines and the last verdicts (migration 4).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, params};

use model::verify::check::Verdict;
use model::verify::{Baseline, BaselineSource, ExpectedProfile};

use super::SqliteStore;
use crate::db::{parse_json, parse_time, time_text, to_json};
use crate::{StoreError, VerifyStore};

fn conversion(column: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, message.into())
}

fn baseline_from_row(row: &Row<'_>) -> rusqlite::Result<Baseline> {
    let source: String = row.get(2)?;
    Ok(Baseline {
        system_id: row.get(0)?,
        hostname: row.get(1)?,
        source: BaselineSource::parse(&source).ok_or_else(|| conversion(2, format!("unknown source {source:?}")))?,
        recorded_at: parse_time(row, 3)?,
        recorded_by: row.get(4)?,
        specs: parse_json(row, 5)?,
    })
}

const INSERT_BASELINE: &str = "INSERT INTO spec_baselines (system_id, hostname, source, recorded_at, recorded_by, body)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

#[async_trait]
impl VerifyStore for SqliteStore {
    async fn set_expected_profiles(&self, profiles: Vec<ExpectedProfile>) -> Result<(), StoreError> {
        self.write(move |writer, _| {
            let tx = writer.conn.transaction()?;
            let now = time_text(Utc::now());
            for p in &profiles {
                tx.execute(
                    "INSERT INTO expected_profiles (hostname, profile_name, body, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(hostname) DO UPDATE SET profile_name = excluded.profile_name, body = excluded.body,
                        updated_at = excluded.updated_at",
                    params![p.hostname, p.profile_name, to_json(&p.profile)?, now],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn expected_profiles(&self) -> Result<Vec<ExpectedProfile>, StoreError> {
        self.read(|conn| {
            let mut statement =
                conn.prepare_cached("SELECT hostname, profile_name, body FROM expected_profiles ORDER BY hostname")?;
            let rows = statement
                .query_map([], |row| {
                    Ok(ExpectedProfile {
                        hostname: row.get(0)?,
                        profile_name: row.get(1)?,
                        profile: parse_json(row, 2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn record_first_baseline(&self, baseline: Baseline) -> Result<bool, StoreError> {
        self.write(move |writer, _| {
            let sql = format!("{INSERT_BASELINE} ON CONFLICT(system_id) DO NOTHING");
            let inserted = writer.conn.execute(
                &sql,
                params![
                    baseline.system_id,
                    baseline.hostname,
                    baseline.source.as_str(),
                    time_text(baseline.recorded_at),
                    baseline.recorded_by,
                    to_json(&baseline.specs)?
                ],
            )?;
            Ok(inserted > 0)
        })
        .await
    }

    async fn replace_baseline(&self, baseline: Baseline) -> Result<(), StoreError> {
        self.write(move |writer, _| {
            let sql = format!(
                "{INSERT_BASELINE} ON CONFLICT(system_id) DO UPDATE SET hostname = excluded.hostname,
                    source = excluded.source, recorded_at = excluded.recorded_at, recorded_by = excluded.recorded_by,
                    body = excluded.body"
            );
            writer.conn.execute(
                &sql,
                params![
                    baseline.system_id,
                    baseline.hostname,
                    baseline.source.as_str(),
                    time_text(baseline.recorded_at),
                    baseline.recorded_by,
                    to_json(&baseline.specs)?
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn baselines(&self) -> Result<Vec<Baseline>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT system_id, hostname, source, recorded_at, recorded_by, body FROM spec_baselines
                 ORDER BY hostname, system_id",
            )?;
            let rows = statement.query_map([], baseline_from_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn set_system_id(&self, machine_id: &str, system_id: Option<String>) -> Result<(), StoreError> {
        let machine_id = machine_id.to_string();
        self.write(move |writer, _| {
            let changed = writer
                .conn
                .execute("UPDATE machines SET system_id = ?2 WHERE id = ?1", params![machine_id, system_id])?;
            if changed == 0 {
                return Err(StoreError::NoSuchMachine(machine_id));
            }
            Ok(())
        })
        .await
    }

    async fn rename_machine(&self, machine_id: &str, hostname: &str) -> Result<bool, StoreError> {
        let (machine_id, hostname) = (machine_id.to_string(), hostname.to_string());
        self.write(move |writer, _| {
            let tx = writer.conn.transaction()?;
            let taken: Option<String> = tx
                .query_row(
                    "SELECT id FROM machines WHERE hostname = ?1 AND id != ?2",
                    params![hostname, machine_id],
                    |row| row.get(0),
                )
                .optional()?;
            if taken.is_some() {
                return Ok(false);
            }
            if tx.execute("UPDATE machines SET hostname = ?2 WHERE id = ?1", params![machine_id, hostname])? == 0 {
                return Err(StoreError::NoSuchMachine(machine_id));
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn last_verdicts(&self) -> Result<HashMap<String, Verdict>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached("SELECT key, verdict FROM spec_verdicts")?;
            let rows = statement
                .query_map([], |row| {
                    let text: String = row.get(1)?;
                    let verdict =
                        Verdict::parse(&text).ok_or_else(|| conversion(1, format!("unknown verdict {text:?}")))?;
                    Ok((row.get::<_, String>(0)?, verdict))
                })?
                .collect::<Result<HashMap<_, _>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn set_last_verdict(&self, key: &str, verdict: Verdict, at: DateTime<Utc>) -> Result<(), StoreError> {
        let key = key.to_string();
        self.write(move |writer, _| {
            writer.conn.execute(
                "INSERT INTO spec_verdicts (key, verdict, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET verdict = excluded.verdict, updated_at = excluded.updated_at",
                params![key, verdict.as_str(), time_text(at)],
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
    use model::domain::Enrollment;
    use model::spec::SpecProfile;
    use model::verify::Specs;

    use crate::Store;

    fn baseline(cpus: u32, source: BaselineSource, by: &str) -> Baseline {
        Baseline {
            system_id: "aaa".into(),
            hostname: "server1".into(),
            specs: Specs { logical_cpus: cpus, ..Default::default() },
            source,
            recorded_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            recorded_by: by.into(),
        }
    }

    #[tokio::test]
    async fn the_first_baseline_is_never_overwritten_but_accept_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 10).unwrap();
        assert!(store.record_first_baseline(baseline(4, BaselineSource::Commissioned, "poller")).await.unwrap());
        assert!(!store.record_first_baseline(baseline(2, BaselineSource::Commissioned, "poller")).await.unwrap());
        assert_eq!(store.baselines().await.unwrap()[0].specs.logical_cpus, 4);
        store.replace_baseline(baseline(2, BaselineSource::Live, "admin")).await.unwrap();
        let stored = store.baselines().await.unwrap();
        assert_eq!(stored, vec![baseline(2, BaselineSource::Live, "admin")]);
    }

    #[tokio::test]
    async fn profiles_verdicts_and_system_ids_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 10).unwrap();
        let profile = SpecProfile { min_logical_cpus: Some(4), min_memory: Some(12 << 30), ..Default::default() };
        let expected = |name: &str| ExpectedProfile {
            hostname: "server1".into(),
            profile_name: name.into(),
            profile: profile.clone(),
        };
        store.set_expected_profiles(vec![expected("small")]).await.unwrap();
        store.set_expected_profiles(vec![expected("big")]).await.unwrap();
        let stored = store.expected_profiles().await.unwrap();
        assert_eq!(stored, vec![ExpectedProfile { hostname: "server1".into(), profile_name: "big".into(), profile }]);

        let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        store.set_last_verdict("aaa", Verdict::Drift, at).await.unwrap();
        store.set_last_verdict("aaa", Verdict::Pass, at).await.unwrap();
        assert_eq!(store.last_verdicts().await.unwrap(), [("aaa".to_string(), Verdict::Pass)].into());

        let enrollment = Enrollment {
            agent_id: "a".into(),
            hostname: "server1".into(),
            mac_addresses: vec![],
            agent_version: "t".into(),
        };
        let id = store.enroll(enrollment, 1000, at, crate::Takeover::default()).await.unwrap().machine.id;
        store.set_system_id(&id, Some("aaa".into())).await.unwrap();
        assert_eq!(store.machine(&id).await.unwrap().unwrap().system_id.as_deref(), Some("aaa"));
        assert!(matches!(store.set_system_id("nope", None).await, Err(StoreError::NoSuchMachine(_))));
    }
}
