//! Entry points into the OpenWrt backend's ubus reply reader for the fuzz targets and property tests; not an API.

use serde_json::Value;

use crate::model::PortForward;

/// What the backend reads from one ubus JSON-RPC answer, taking its data as every kind of uci section.
#[derive(Debug)]
pub struct UbusReadBack {
    /// The ubus status code (`-1` when absent), or the JSON-RPC `error` member.
    pub status: Result<i64, String>,
    /// Each `values` entry read as a firewall redirect; `None` where it is not one the shim can read.
    pub forwards: Vec<Option<PortForward>>,
    /// Each `values` entry's `src_ip` read as management CIDRs.
    pub allowed_from: Vec<Vec<ipnet::Ipv4Net>>,
    /// The `values` read as the dnsmasq section: ignored, and `start .., limit ..`.
    pub dhcp_ignored: bool,
    pub dhcp_pool: Option<(String, String)>,
}

/// Reads `bytes` as the backend reads a ubus answer; `None` when they are not JSON at all.
pub fn read_ubus_reply(bytes: &[u8]) -> Option<UbusReadBack> {
    let reply: Value = serde_json::from_slice(bytes).ok()?;
    let mut read = UbusReadBack {
        status: Ok(-1),
        forwards: Vec::new(),
        allowed_from: Vec::new(),
        dhcp_ignored: false,
        dhcp_pool: None,
    };
    if let Some(error) = reply.get("error") {
        read.status = Err(error.to_string());
        return Some(read);
    }
    let result = reply.get("result").and_then(Value::as_array).cloned().unwrap_or_default();
    read.status = Ok(result.first().and_then(Value::as_i64).unwrap_or(-1));
    let data = result.get(1).cloned().unwrap_or(Value::Null);
    let values = data.get("values").cloned().unwrap_or(Value::Null);
    read.dhcp_ignored = super::text(&values, "ignore").is_some_and(|v| v == "1");
    read.dhcp_pool = super::text(&values, "start").zip(super::text(&values, "limit"));
    for section in values.as_object().map(|m| m.values().cloned().collect::<Vec<_>>()).unwrap_or_default() {
        read.forwards.push(super::parse_redirect(&section));
        read.allowed_from.push(
            super::text(&section, "src_ip")
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|c| crate::model::parse_cidr(c).ok())
                .collect(),
        );
    }
    Some(read)
}

/// Reads one uci `redirect` section's values as a forward, as `state()` does.
pub fn parse_redirect(values: &Value) -> Option<PortForward> {
    super::parse_redirect(values)
}
