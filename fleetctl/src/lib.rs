//! fleetctl, the operators' command line: where the coordinator is, how to reach it, and how machines, plans,
//! operations and events are shown.
//!
//! Its rule: it depends on `metalfleet-proto`, `metalfleet-common` and `metalfleet-model` (feature `wire`), never on
//! the coordinator or the store, so the CLI links neither SQLite nor the server (`scripts/test` checks this with
//! `cargo tree`). What both sides must agree on (the wire conversions, `client.toml`, the culprit metadata keys)
//! lives in `model`.
//!
//! Everything is in this library so it is tested without running the binary; `main.rs` only parses the flags,
//! starts the runtime and telemetry, and calls [`app::run`].
//!
//! Layout:
//! - [`app`]: the command line (clap) and what each command does.
//! - [`settings`]: the only place that decides the coordinator's address and credentials: client config file,
//!   then `METALFLEET_*`, then flags.
//! - [`client`]: the operators' gRPC client of the coordinator's services, returning `model` records.
//! - [`culprit`]: reading which service behind the coordinator (MAAS, the router) made a call fail.
//! - [`view`], [`lab`], [`maas`], [`operations`], [`security`], [`verify`]: tables and JSON per area.
//! - [`output`]: the one output type for tables and JSON; every external string escaped for the terminal.
#![forbid(unsafe_code)]

pub mod app;
pub mod client;
pub mod culprit;
pub mod lab;
pub mod maas;
pub mod operations;
pub mod output;
pub mod security;
pub mod settings;
pub mod verify;
pub mod view;

use metalfleet_common::exit;

use crate::client::ClientError;

pub use settings::{GlobalArgs, Target, client_settings, default_config_paths, resolve_target};

/// A fleetctl failure and the exit code it means.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Failed(String),
    /// Stdout was closed by its reader (`fleetctl status | head -0`): the command ends quietly with exit 0.
    #[error("the output was closed by its reader")]
    OutputClosed,
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Unreachable(_) => exit::UNAVAILABLE,
            CliError::Failed(_) => exit::CHECK_FAILED,
            CliError::OutputClosed => exit::OK,
        }
    }
}

impl From<output::Error> for CliError {
    fn from(error: output::Error) -> Self {
        match error {
            output::Error::Closed => CliError::OutputClosed,
            output::Error::Write(_) => CliError::Failed(error.to_string()),
        }
    }
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        match &error {
            ClientError::Unreachable { .. } => CliError::Unreachable(error.to_string()),
            ClientError::Usage(_) => CliError::Usage(error.to_string()),
            ClientError::Status(status) if status.code() == tonic::Code::NotFound => CliError::Usage(error.to_string()),
            ClientError::Status(_) => CliError::Failed(error.to_string()),
            // MAAS or the router, not the coordinator: 69 when it may answer later, 1 when it refused.
            ClientError::Upstream { code: tonic::Code::Unavailable, .. } => CliError::Unreachable(error.to_string()),
            ClientError::Upstream { .. } => CliError::Failed(error.to_string()),
        }
    }
}
