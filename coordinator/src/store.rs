//! The one interface to the coordinator's state, so another backend (PostgreSQL) can come later.
//!
//! Callers hold an `Arc<dyn Store>`. The SQLite implementation lives in [`sqlite`].

pub mod maas;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Enrollment, Event, Health, Inventory, Machine, NewEvent, Sample};

pub use maas::MaasStore;
pub use sqlite::SqliteStore;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}; check that the state directory exists and is writable")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store query failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored data is unreadable ({0}); the store may be corrupt or from a newer version")]
    Corrupt(String),
    #[error("machine {0} is not in the store")]
    NoSuchMachine(String),
    #[error("the store's worker stopped: {0}")]
    Worker(String),
}

/// One heartbeat's worth of writes: new samples plus the machine's liveness.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleWrite {
    pub machine_id: String,
    /// Oldest first.
    pub samples: Vec<Sample>,
    /// When the heartbeat arrived, on the coordinator's clock.
    pub received_at: DateTime<Utc>,
    pub interval_ms: u32,
}

/// The result of an enrollment.
#[derive(Debug, Clone, PartialEq)]
pub struct Enrolled {
    pub machine: Machine,
    /// False when the agent was already known and only its details were refreshed.
    pub created: bool,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Creates the machine for `enrollment.agent_id`, or finds it and refreshes hostname, MACs and version.
    async fn enroll(
        &self,
        enrollment: Enrollment,
        interval_ms: u32,
        now: DateTime<Utc>,
    ) -> Result<Enrolled, StoreError>;

    async fn machine(&self, machine_id: &str) -> Result<Option<Machine>, StoreError>;

    /// Every machine, ordered by hostname.
    async fn machines(&self) -> Result<Vec<Machine>, StoreError>;

    /// Stores the inventory; returns whether it differs from the one stored before.
    async fn put_inventory(&self, machine_id: &str, inventory: Inventory) -> Result<bool, StoreError>;

    async fn inventory(&self, machine_id: &str) -> Result<Option<Inventory>, StoreError>;

    /// Writes many heartbeats in one transaction: history, latest sample and liveness.
    async fn record_samples(&self, writes: Vec<SampleWrite>) -> Result<(), StoreError>;

    async fn latest_sample(&self, machine_id: &str) -> Result<Option<Sample>, StoreError>;

    /// The newest `limit` stored samples, oldest first.
    async fn history(&self, machine_id: &str, limit: u32) -> Result<Vec<Sample>, StoreError>;

    async fn set_health(&self, machine_id: &str, health: Health, reasons: Vec<String>) -> Result<(), StoreError>;

    async fn append_event(&self, event: NewEvent) -> Result<Event, StoreError>;

    /// Events with an id above `after_id`, oldest first; with `limit`, only the newest `limit` of them.
    async fn events(&self, after_id: u64, limit: Option<u32>) -> Result<Vec<Event>, StoreError>;
}
