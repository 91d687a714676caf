//! [`StoreError`]: why a store call failed, the one error of every store in this crate.

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
    #[error(
        "the store file {path} is gone from under the running coordinator ({why}); nothing more is written to it: restore it from a backup (`coordinator restore`) and restart"
    )]
    FileGone { path: std::path::PathBuf, why: String },
    #[error(
        "the hostname {hostname} is already enrolled as machine {machine_id}; host names are unique in the fleet: rename this host, or `fleetctl machines forget {hostname}` first, or redeploy it so its new agent takes the name over"
    )]
    HostnameTaken { hostname: String, machine_id: String },
    #[error("the store's worker stopped: {0}")]
    Worker(String),
}
