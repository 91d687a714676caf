//! The schema: every table of `coordinator.db` and every migration, in one list ([`MIGRATIONS`]), and which
//! store writes each table and so how durable its commits are ([`TABLES`]).

/// The schema, one entry per version; `PRAGMA user_version` says how many have been applied.
/// Never edit an entry once released: append a new one.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: machines, inventories, samples, events.
    "CREATE TABLE machines (
        id TEXT PRIMARY KEY,
        agent_id TEXT NOT NULL UNIQUE,
        hostname TEXT NOT NULL,
        system_id TEXT,
        macs TEXT NOT NULL,
        agent_version TEXT NOT NULL,
        enrolled_at TEXT NOT NULL,
        last_seen TEXT,
        heartbeat_interval_ms INTEGER NOT NULL,
        health TEXT NOT NULL,
        health_reasons TEXT NOT NULL
    );
    CREATE INDEX machines_hostname ON machines(hostname);
    CREATE TABLE inventories (
        machine_id TEXT PRIMARY KEY REFERENCES machines(id) ON DELETE CASCADE,
        reported_at TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE latest_samples (
        machine_id TEXT PRIMARY KEY REFERENCES machines(id) ON DELETE CASCADE,
        received_at TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE samples (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        machine_id TEXT NOT NULL,
        taken_at TEXT,
        received_at TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX samples_machine ON samples(machine_id, id);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        machine_id TEXT NOT NULL,
        hostname TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        from_health TEXT,
        to_health TEXT
    );",
    // 2: security (issue 5): enrollment tokens (hashes only), agent certificates, operators, the audit log.
    "CREATE TABLE enroll_tokens (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        machine TEXT,
        uses_left INTEGER NOT NULL,
        expires_at TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE agent_certs (
        serial TEXT PRIMARY KEY,
        machine_id TEXT NOT NULL,
        issued_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE INDEX agent_certs_machine ON agent_certs(machine_id);
    CREATE TABLE operators (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        cert_serial TEXT,
        token_hash TEXT UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        operator TEXT NOT NULL,
        role TEXT NOT NULL,
        action TEXT NOT NULL,
        args TEXT NOT NULL,
        result TEXT NOT NULL
    );",
    // 3: the MAAS poller's view of every MAAS machine and the sync record (issue 3).
    "CREATE TABLE maas_machines (
        system_id TEXT PRIMARY KEY,
        hostname TEXT NOT NULL,
        status INTEGER NOT NULL,
        status_name TEXT NOT NULL,
        power_state TEXT NOT NULL,
        owner TEXT,
        ip_addresses TEXT NOT NULL,
        tags TEXT NOT NULL,
        zone TEXT NOT NULL,
        pool TEXT NOT NULL,
        cpu_count INTEGER NOT NULL,
        cpu_speed_mhz INTEGER NOT NULL,
        memory_mib INTEGER NOT NULL,
        storage_bytes INTEGER NOT NULL,
        disks TEXT NOT NULL,
        interfaces TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX maas_machines_hostname ON maas_machines(hostname);
    CREATE TABLE maas_sync (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        last_attempt_at TEXT,
        last_success_at TEXT,
        last_error TEXT
    );
    INSERT INTO maas_sync (id) VALUES (1);",
    // 4: spec verification (issue 7): expected profiles, commissioned baselines, last verdicts.
    "CREATE TABLE expected_profiles (
        hostname TEXT PRIMARY KEY,
        profile_name TEXT NOT NULL,
        body TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE spec_baselines (
        system_id TEXT PRIMARY KEY,
        hostname TEXT NOT NULL,
        source TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        recorded_by TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE spec_verdicts (
        key TEXT PRIMARY KEY,
        verdict TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );",
    // 5: redeploy operations and which token enrolled which machine (issue 7).
    "CREATE TABLE operations (
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
    );",
    // 6: hostile agents (issue 10): the highest sample seq stored per machine (acknowledgements and
    // duplicates), and the MAAS machine a redeploy token is bound to.
    "ALTER TABLE machines ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE enroll_tokens ADD COLUMN system_id TEXT;",
];

/// Which store writes a table, and so the durability of its commits ([`crate::db::Durability`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// [`crate::SqliteStore`]: the fleet, the MAAS view, verification. `synchronous = NORMAL`: a commit survives
    /// the coordinator being killed (WAL), and heartbeats, which commit all the time, do not each wait for a
    /// sync; a power loss may lose the last commits, which agents send again (they keep every unacknowledged
    /// sample).
    Fleet,
    /// [`crate::SecurityStore`] and [`crate::OperationsStore`]: tokens, certificates, operators, the audit log,
    /// operations. `synchronous = FULL`: rare writes that must survive a power loss (a redeemed token, a
    /// revocation, an operation's step).
    Records,
}

impl Writer {
    pub fn durability(self) -> crate::db::Durability {
        match self {
            Writer::Fleet => crate::db::Durability::Normal,
            Writer::Records => crate::db::Durability::Full,
        }
    }
}

/// One table of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    pub name: &'static str,
    pub writer: Writer,
    /// The migration that created it (1-based, `PRAGMA user_version`).
    pub since: u32,
}

const fn table(name: &'static str, writer: Writer, since: u32) -> Table {
    Table { name, writer, since }
}

/// Every table [`MIGRATIONS`] create, in their order (a test checks that the two agree).
pub const TABLES: &[Table] = &[
    table("machines", Writer::Fleet, 1),
    table("inventories", Writer::Fleet, 1),
    table("latest_samples", Writer::Fleet, 1),
    table("samples", Writer::Fleet, 1),
    table("events", Writer::Fleet, 1),
    table("enroll_tokens", Writer::Records, 2),
    table("agent_certs", Writer::Records, 2),
    table("operators", Writer::Records, 2),
    table("audit", Writer::Records, 2),
    table("maas_machines", Writer::Fleet, 3),
    table("maas_sync", Writer::Fleet, 3),
    table("expected_profiles", Writer::Fleet, 4),
    table("spec_baselines", Writer::Fleet, 4),
    table("spec_verdicts", Writer::Fleet, 4),
    table("operations", Writer::Records, 5),
    table("token_enrollments", Writer::Records, 5),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_lists_every_table_the_migrations_create() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut created = Vec::new();
        for (index, sql) in MIGRATIONS.iter().enumerate() {
            conn.execute_batch(sql).unwrap();
            let mut names: Vec<(String, u32)> = conn
                .prepare(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid",
                )
                .unwrap()
                .query_map([], |row| row.get::<_, String>(0))
                .unwrap()
                .map(|name| (name.unwrap(), index as u32 + 1))
                .collect();
            names.retain(|(name, _)| !created.iter().any(|(c, _): &(String, u32)| c == name));
            created.extend(names);
        }
        let listed: Vec<(String, u32)> = TABLES.iter().map(|t| (t.name.to_string(), t.since)).collect();
        assert_eq!(listed, created);
    }
}
