//! [`MaasStore`]: where the poller keeps its view of MAAS, apart from [`crate::Store`] so a store
//! without MAAS (a test double) need not implement it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use model::domain::maas::{MaasMachine, MaasSync};

use crate::StoreError;

#[async_trait]
pub trait MaasStore: Send + Sync {
    /// Every stored MAAS machine, ordered by hostname.
    async fn maas_machines(&self) -> Result<Vec<MaasMachine>, StoreError>;

    async fn maas_sync(&self) -> Result<MaasSync, StoreError>;

    /// Records one successful poll in one transaction: `upserts` (new or changed machines) are written,
    /// `removed` system_ids deleted, and the sync record marks `at` as both attempt and success.
    async fn record_maas_poll(
        &self,
        upserts: Vec<MaasMachine>,
        removed: Vec<String>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Records a failed poll; the stored machines stay as they were.
    async fn record_maas_failure(&self, at: DateTime<Utc>, error: String) -> Result<(), StoreError>;
}
