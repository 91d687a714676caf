//! The store lives in the `metalfleet-store` crate (lib `store`): the traits, SQLite, every table and migration,
//! and the state directory's files. `crate::store::...` keeps naming what the coordinator used from here.

pub use ::store::{Enrolled, MaasStore, SampleWrite, SqliteStore, Store, StoreError, Takeover};

/// The MAAS poller's store.
pub mod maas {
    pub use ::store::MaasStore;
}

/// The SQLite implementation.
pub mod sqlite {
    pub use ::store::SqliteStore;
}
