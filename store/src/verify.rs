//! [`VerifyStore`]: spec verification's own tables (expected profiles, commissioned baselines, the last verdicts),
//! and [`VerifySources`], every store verification reads from.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use model::verify::check::Verdict;
use model::verify::{Baseline, ExpectedProfile};

use crate::{MaasStore, Store, StoreError};

/// Verification's own tables.
#[async_trait]
pub trait VerifyStore: Send + Sync {
    /// Sets (or replaces) the profile of each named machine; machines not named keep theirs.
    async fn set_expected_profiles(&self, profiles: Vec<ExpectedProfile>) -> Result<(), StoreError>;
    async fn expected_profiles(&self) -> Result<Vec<ExpectedProfile>, StoreError>;
    /// Records `baseline` unless its system_id has one; returns whether it did.
    async fn record_first_baseline(&self, baseline: Baseline) -> Result<bool, StoreError>;
    /// Records `baseline` whether or not one exists (an operator's Accept).
    async fn replace_baseline(&self, baseline: Baseline) -> Result<(), StoreError>;
    async fn baselines(&self) -> Result<Vec<Baseline>, StoreError>;
    /// Sets `machines.system_id` (the agent-to-MAAS match); `None` clears it.
    async fn set_system_id(&self, machine_id: &str, system_id: Option<String>) -> Result<(), StoreError>;
    /// Renames a matched machine to its MAAS hostname (MAAS is authoritative once matched); false when
    /// another machine holds that name (hostnames stay unique), and nothing changes.
    async fn rename_machine(&self, machine_id: &str, hostname: &str) -> Result<bool, StoreError>;
    /// The last overall verdict per row key (see `model::verify::MachineReport::key`).
    async fn last_verdicts(&self) -> Result<HashMap<String, Verdict>, StoreError>;
    async fn set_last_verdict(&self, key: &str, verdict: Verdict, at: DateTime<Utc>) -> Result<(), StoreError>;
}

/// Every store verification reads from. The SQLite store is one.
pub trait VerifySources: Store + MaasStore + VerifyStore {}
impl<T: Store + MaasStore + VerifyStore> VerifySources for T {}
