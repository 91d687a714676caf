//! Entry points into the Linux backend's readers for the fuzz targets and property tests; not an API.

use serde_json::Value;

use crate::model::{PortForward, RemoteManagement};

/// What the backend makes of `nft -j list table ...` output.
#[derive(Debug)]
pub struct NftReadBack {
    /// The shim's forwards and management rules, or why they cannot be read back.
    pub table: Result<(Vec<PortForward>, Option<RemoteManagement>), String>,
    /// Foreign forward-hook chains with policy drop, as `family table chain`.
    pub foreign_drops: Vec<String>,
}

/// Reads `bytes` as the backend reads nft's JSON; `None` when they are not JSON at all.
pub fn read_nft_json(bytes: &[u8]) -> Option<NftReadBack> {
    let json: Value = serde_json::from_slice(bytes).ok()?;
    let table = super::parse_table(&json).map(|state| (state.forwards, state.management)).map_err(|e| e.to_string());
    Some(NftReadBack { table, foreign_drops: super::foreign_forward_drops(&json, "metalfleet") })
}

/// Whether any `dhcp-range` in a dnsmasq config is active, and the first range's pool.
pub fn dnsmasq_ranges(text: &str) -> (bool, String) {
    super::dnsmasq_ranges(text)
}

/// The dnsmasq config with every `dhcp-range` switched off, as `set_dhcp(false)` writes it.
pub fn dhcp_off(text: &str) -> String {
    super::dhcp_off(text)
}

/// The dnsmasq config with the shim's switched-off ranges back on, as `set_dhcp(true)` writes it.
pub fn dhcp_on(text: &str) -> String {
    super::dhcp_on(text)
}
