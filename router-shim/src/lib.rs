//! The metalfleet router shim: one gRPC API over a router's DHCP server, port-forwards and remote
//! management, plus the DHCP probe that proves on the wire who serves DHCP on a segment.
//!
//! Layout:
//! - [`model`]: domain types and input validation.
//! - [`config`]: the TOML config.
//! - [`probe`]: the DHCP probe library (also used by the coordinator on MAIN).
//! - [`backend`]: the `Backend` trait and its implementations (linux, openwrt, routeros, manual).
//! - [`shim`]: validation, idempotency, read-back and commit-confirm over any backend.
//! - [`grpc`]: the `RouterShim` service; [`client`]: the coordinator's typed client.
//! - [`cli`]: the `router-shim` command line (the binary only parses and calls in here).
#![forbid(unsafe_code)]

pub mod backend;
pub mod cli;
pub mod client;
pub mod config;
pub mod grpc;
pub mod model;
pub mod probe;
pub mod shim;
