//! The metalfleet router shim: one gRPC API over a router's DHCP server, port-forwards and remote
//! management, plus the DHCP probe that proves on the wire who serves DHCP on a segment.
//!
//! Layout:
//! - [`model`], [`probe`], [`client`]: re-exported from `router_shim_api`, the crate the coordinator links
//!   (the domain types, the DHCP probe, the typed client; "DHCP off, then prove it" is `router_shim_api::dhcp_off`).
//! - [`config`]: the TOML config.
//! - [`backend`]: the `Backend` trait and its implementations (linux, openwrt, routeros, manual).
//! - [`shim`]: validation, idempotency, read-back and commit-confirm over any backend.
//! - [`grpc`]: the `RouterShim` service and its server-side wire conversions.
//! - [`cli`]: the `router-shim` command line (the binary only parses and calls in here).
#![forbid(unsafe_code)]

pub mod backend;
pub mod cli;
pub mod config;
pub mod grpc;
pub mod shim;

pub use router_shim_api::{client, model, probe};
