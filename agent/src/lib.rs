//! The metalfleet agent: reads a server's inventory and health and streams them to the coordinator.
//!
//! Layout:
//! - [`inventory`]: the host's hardware and OS, read from sysinfo and a configurable `/sys`,`/proc` root.
//! - [`health`]: one [`health::Sampler`] kept between ticks produces [`health::HealthSample`]s.
//! - [`buffer`]: the bounded ring buffer of samples kept while the coordinator is unreachable.
//! - [`backoff`]: exponential reconnect backoff with full jitter.
//! - [`config`]: the agent's `Config`, from file < `METALFLEET_*` < flags.
//! - [`client`]: `agent run`: enroll, report inventory, stream heartbeats, obey directives, reconnect.
//! - [`identity`]: the agent's key (0600, never sent), its client certificate and the CA bundle.
//! - [`footprint`]: the agent watching its own memory (VmRSS) against a budget.
//! - [`grpc`]: the only place that knows the wire types (`grpc::convert`).
//! - [`output`]: tables for humans (JSON goes through serde).
//! - [`cli`]: the command line (`inventory`, `sample`, `run`), parsed by the thin `main.rs`.
//! - [`timefmt`]: RFC 3339 UTC times in JSON and tables.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod buffer;
pub mod cli;
pub mod client;
pub mod config;
pub mod footprint;
pub mod grpc;
pub mod health;
pub mod identity;
pub mod inventory;
pub mod output;
pub mod timefmt;
