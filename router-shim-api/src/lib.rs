//! What the coordinator needs of the router, and no backend: the router shim's API as seen from its clients.
//!
//! Its rule: no backends and no shim core. It depends on `metalfleet-proto` (the client speaks the `RouterShim`
//! gRPC service) and nothing else of the workspace, so the coordinator links it instead of the whole shim;
//! `router-shim` depends on it and re-exports `model`, `probe` and `client` under their old paths.
//!
//! Layout:
//! - [`model`]: the router's state, forwards and remote management, and input validation.
//! - [`probe`]: the DHCP probe (a DHCPDISCOVER, and an `AF_PACKET` capture for each answer's source MAC).
//! - [`convert`]: the model's wire conversions, both directions.
//! - [`client`]: the typed gRPC client of a shim.
//! - [`dhcp_off`]: the one "switch DHCP off, then prove it from here" routine.
#![forbid(unsafe_code)]

pub mod client;
pub mod convert;
pub mod dhcp_off;
pub mod model;
pub mod probe;
