//! Entry points into the RouterOS backend's REST reply reader for the fuzz targets and property tests; not an API.

use serde_json::Value;

use crate::model::PortForward;

/// What the backend reads from one RouterOS REST answer.
#[derive(Debug, Default)]
pub struct RestReadBack {
    /// For a list: each item read as a NAT rule (`None` where it is not one of the shim's).
    pub forwards: Vec<Option<PortForward>>,
    /// For a list: each item's `src-address` read as a management CIDR, where it is one.
    pub allowed_from: Vec<ipnet::Ipv4Net>,
    /// For a list: each item's `name`, `disabled`, `address-pool` and `.id`, as the DHCP server is read.
    pub servers: Vec<[String; 4]>,
    /// For an error body: the `message detail` text the backend reports.
    pub error_detail: String,
}

/// Reads `bytes` as the backend reads a REST answer; `None` when they are not JSON at all.
pub fn read_rest_reply(bytes: &[u8]) -> Option<RestReadBack> {
    let reply: Value = serde_json::from_slice(bytes).ok()?;
    let mut read = RestReadBack::default();
    let field = |k: &str| reply.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    read.error_detail = format!("{} {}", field("message"), field("detail")).trim().to_string();
    for item in reply.as_array().into_iter().flatten() {
        read.forwards.push(super::parse_nat(item));
        if let Ok(net) = crate::model::parse_cidr(&super::field(item, "src-address")) {
            read.allowed_from.push(net);
        }
        read.servers.push(["name", "disabled", "address-pool", ".id"].map(|k| super::field(item, k)));
    }
    Some(read)
}

/// Reads one `/ip/firewall/nat` item as a forward, as `state()` does.
pub fn parse_nat(item: &Value) -> Option<PortForward> {
    super::parse_nat(item)
}
