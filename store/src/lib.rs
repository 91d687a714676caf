//! metalfleet's state: the store traits, their SQLite implementation, and every file of the coordinator's state
//! directory.
//!
//! Its rule: the only crate that names rusqlite or a file of the state directory. It depends on the model
//! (`metalfleet-model`), never on the coordinator, tonic or maas-client (`scripts/test` checks this with
//! `cargo tree`), so the coordinator's modules ask it for their paths and rows and another backend can come later
//! behind the same traits.
//!
//! Layout:
//! - [`state_dir`]: [`StateDir`], every file of the state directory in one table with what it is and how a backup
//!   takes it; [`backup`]: `coordinator backup` and `restore`, driven by that table.
//! - [`db`]: the one place that opens `coordinator.db` (WAL, busy timeout, durability per connection, migrations);
//!   [`schema`]: every table and migration in one list, with the store that writes each table.
//! - [`Store`] (the fleet: machines, inventories, samples, events), [`MaasStore`] (the poller's view of MAAS),
//!   [`VerifyStore`] (spec verification): traits, all implemented by [`SqliteStore`].
//! - [`SecurityStore`] (tokens, certificates, operators, audit) and [`OperationsStore`] (redeploy operations):
//!   SQLite only, each with its own connection.
//! - [`lab`]: the lab plan's files (the applied plan, the reconciler's memory).
#![forbid(unsafe_code)]

pub mod backup;
pub mod db;
mod error;
mod fleet;
pub mod lab;
mod maas;
pub mod operations;
pub mod schema;
pub mod security;
pub mod sqlite;
pub mod state_dir;
mod verify;

pub use error::StoreError;
pub use fleet::{Enrolled, SampleWrite, Store, Takeover};
pub use maas::MaasStore;
pub use operations::OperationsStore;
pub use security::SecurityStore;
pub use sqlite::SqliteStore;
pub use state_dir::StateDir;
pub use verify::{VerifySources, VerifyStore};
