//! metalfleet's domain records: what the store keeps, the coordinator decides on and fleetctl shows.
//!
//! Its rule: plain data and pure functions over it. No tokio, rusqlite, reqwest or tonic: the store, the
//! coordinator and fleetctl all depend on this crate, and it depends on none of them. The conversions to
//! and from the `metalfleet.v1` wire types live behind the `wire` feature, with one error type.
//!
//! Layout:
//! - [`domain`]: machines, samples, inventories, events, health, and the MAAS view of a machine.
//! - [`operations`]: redeploy operations, their machines and steps.
//! - [`plan`]: the plan file `lab.toml` and the lines of a plan.
//! - [`wire`] (feature `wire`): the conversions to and from the `metalfleet.v1` wire types.
//! - [`spec`]: expected hardware profiles (`[profiles.NAME]` in lab.toml) and sizes for people.
//! - [`verify`]: spec verification's records and pure rules (expected vs commissioned vs live).
//! - [`client_config`]: `client.toml`, written by the coordinator and read by fleetctl.
#![forbid(unsafe_code)]

pub mod client_config;
pub mod domain;
pub mod operations;
pub mod plan;
pub mod spec;
pub mod verify;
#[cfg(feature = "wire")]
pub mod wire;
