//! [`Store`]: the fleet's tables (machines, inventories, samples, events) behind one interface, so another
//! backend (PostgreSQL) can come later. Callers hold an `Arc<dyn Store>`; [`crate::SqliteStore`] is the one there is.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use model::domain::{Enrollment, Event, Health, Inventory, Machine, NewEvent, Sample};

use crate::StoreError;

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
    /// The hostname the agent reported when the machine kept another one (an agent never renames its machine).
    pub ignored_hostname: Option<String>,
    /// The agent this one replaced on its machine (an enrollment with a redeploy token bound to it).
    pub replaced_agent: Option<String>,
}

/// Whose identity an enrollment may take over.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Takeover {
    /// The MAAS machine a redeploy token was minted for: the agent there is replaced by this one.
    pub system_id: Option<String>,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Creates the machine for `enrollment.agent_id`, or finds it and refreshes its MACs and version.
    ///
    /// Hostnames are unique: a new agent naming a machine that exists is refused
    /// ([`StoreError::HostnameTaken`]) unless `takeover` names that machine's MAAS system_id (a
    /// redeploy token), in which case the new agent takes the machine over (same machine id, its
    /// inventory and latest sample forgotten, health unknown). A known agent keeps its hostname.
    async fn enroll(
        &self,
        enrollment: Enrollment,
        interval_ms: u32,
        now: DateTime<Utc>,
        takeover: Takeover,
    ) -> Result<Enrolled, StoreError>;

    async fn machine(&self, machine_id: &str) -> Result<Option<Machine>, StoreError>;

    /// Every machine, ordered by hostname.
    async fn machines(&self) -> Result<Vec<Machine>, StoreError>;

    /// Stores the inventory; returns whether it differs from the one stored before.
    async fn put_inventory(&self, machine_id: &str, inventory: Inventory) -> Result<bool, StoreError>;

    async fn inventory(&self, machine_id: &str) -> Result<Option<Inventory>, StoreError>;

    /// Writes many heartbeats in one transaction: history, latest sample and liveness. Samples with a
    /// `seq` the machine already has stored (a resend after a lost acknowledgement) are skipped.
    async fn record_samples(&self, writes: Vec<SampleWrite>) -> Result<(), StoreError>;

    /// A cheap check that writes still reach the store's real file (see [`StoreError::FileGone`]).
    ///
    /// # Errors
    /// The reason writes would be lost.
    fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn latest_sample(&self, machine_id: &str) -> Result<Option<Sample>, StoreError>;

    /// The newest `limit` stored samples, oldest first.
    async fn history(&self, machine_id: &str, limit: u32) -> Result<Vec<Sample>, StoreError>;

    async fn set_health(&self, machine_id: &str, health: Health, reasons: Vec<String>) -> Result<(), StoreError>;

    async fn append_event(&self, event: NewEvent) -> Result<Event, StoreError>;

    /// Events with an id above `after_id`, oldest first; with `limit`, only the newest `limit` of them.
    async fn events(&self, after_id: u64, limit: Option<u32>) -> Result<Vec<Event>, StoreError>;
}
