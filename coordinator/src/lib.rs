//! The metalfleet coordinator: keeps the fleet's state, evaluates health, serves agents and operators.
//!
//! Layout:
//! - [`config`]: `coordinator serve`'s configuration (file, `METALFLEET_*`, flags).
//! - [`domain`]: the coordinator's own types (machines, samples, events, health).
//! - [`store`]: the `metalfleet-store` crate's traits and SQLite store, re-exported (that crate also owns the state
//!   directory's files, `::store::StateDir`, and backup/restore).
//! - [`health`]: the health rules as pure functions.
//! - [`fleet`]: the live fleet state, the batching writer, the event and evaluator tasks.
//! - [`grpc`]: the gRPC services (agents and operators) and `grpc::convert`, the coordinator's own edge of wire
//!   types (the conversions shared with fleetctl live in `model::wire`).
//! - [`maas`]: the `maas-client` crate (the typed MAAS 3.5 REST client, the only code that talks to MAAS),
//!   re-exported so `crate::maas::...` names it.
//! - [`pki`]: the private CA and the server certificate.
//! - [`poller`]: keeps the store's view of every MAAS machine current and turns MAAS changes into events.
//! - [`client_config`]: `client.toml`, written by the server and read by fleetctl.
//! - [`spec`]: expected hardware profiles (`[profiles.NAME]` in lab.toml).
//! - [`server`]: `coordinator serve` wired together, with graceful shutdown; [`listener`]: its accept loop,
//!   with the connection limits and TLS (`[limits]`).
//! - [`enroll`], [`auth`], [`secret`], [`security_store`]: enrollment tokens, agent and operator
//!   certificates, per-RPC checks, revocation, the audit log, and the redacting [`secret::Secret`].
//! - [`operations`]: redeploy operations (stored, resumable, rolling) and machine power/forget; [`artifacts`]
//!   serves the agent binary to deploying servers over HTTPS.
//! - [`verify`], [`matching`], [`reachability`]: spec verification (profile vs commissioned vs live), matching
//!   agents to MAAS machines, and lost-node verdicts.
#![forbid(unsafe_code)]

pub mod admin;
pub mod artifacts;
pub mod auth;
pub use model::client_config;
pub mod config;
pub use model::domain;
pub mod enroll;
pub mod fleet;
pub mod grpc;
pub mod health;
pub mod listener;
pub mod matching;
pub mod operations;
pub mod operators;
pub mod pki;
pub mod plan;
pub mod poller;
pub mod reachability;
pub mod rotation;
pub mod router_cert;
pub mod security_store;
pub mod server;
pub use model::spec;
pub mod store;
pub mod verify;

/// The MAAS client lives in the `maas-client` crate; `crate::maas` keeps naming it.
pub use maas_client as maas;
/// The redacting `Secret` and the secret-file checks live in `metalfleet-common`; `crate::secret` keeps naming them.
pub use metalfleet_common::secret;
pub use server::serve;
