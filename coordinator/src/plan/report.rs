//! The evidence report: every claim read from live data at report time (MAAS, the router through its shim, the
//! DHCP probe from MAIN, the fleet's health and events), as JSON and as Markdown with a Mermaid diagram.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::live::Live;
use crate::domain::{Event, MachineView};

/// What the report is built from, all read just before.
pub struct Inputs<'a> {
    pub at: DateTime<Utc>,
    pub live: &'a Live,
    /// The lab's subnet (from the applied plan, else the one with DHCP on).
    pub cidr: Option<String>,
    /// The router's shim address, when the applied plan names one, and why it could not be read.
    pub router_shim: Option<String>,
    pub router_error: Option<String>,
    /// The probe's raw result (its JSON), or why it could not run.
    pub probe: Option<Result<Value, String>>,
    pub fleet: &'a [MachineView],
    pub events: &'a [Event],
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The report as JSON.
pub fn json(inputs: &Inputs<'_>) -> Value {
    let live = inputs.live;
    let subnet = inputs.cidr.as_deref().and_then(|c| live.subnet(c));
    let images: Vec<Value> = live
        .resources
        .iter()
        .map(|r| json!({"name": r.name, "architecture": r.architecture, "synced": r.is_synced(), "progress": r.progress()}))
        .collect();
    let subnet_json = subnet.map(|s| {
        let ranges: Vec<Value> = live
            .ip_ranges
            .iter()
            .filter(|r| r.subnet.as_ref().is_some_and(|x| x.id == s.id))
            .map(|r| json!({"type": r.range_type.as_str(), "start": r.start_ip, "end": r.end_ip, "comment": r.comment}))
            .collect();
        let vlan = s.vlan.as_ref();
        json!({
            "cidr": s.cidr,
            "gateway_ip": s.gateway_ip,
            "dns_servers": s.dns_servers,
            "ranges": ranges,
            "vlan": vlan.map(|v| format!("{}/{}", v.fabric, v.name)),
            "dhcp_on": vlan.is_some_and(|v| v.dhcp_on),
            "primary_rack": vlan.and_then(|v| v.primary_rack.clone()),
            "external_dhcp": vlan.and_then(|v| v.external_dhcp.clone()),
        })
    });
    let router = live.router.as_ref().map(|r| {
        json!({
            "backend": r.backend,
            "dhcp_enabled": r.dhcp_enabled,
            "dhcp_pool": r.dhcp_pool,
            "forwards": r.forwards.iter().map(|f| json!({
                "name": f.name, "proto": f.protocol.as_str(), "external_port": f.external_port,
                "to": f.target.to_string(), "protected": f.protected,
            })).collect::<Vec<_>>(),
            "remote_management": {"enabled": r.remote_management.enabled,
                "from": r.remote_management.allowed_from.iter().map(|n| n.to_string()).collect::<Vec<_>>()},
        })
    });
    let probe = match &inputs.probe {
        Some(Ok(raw)) => raw.clone(),
        Some(Err(reason)) => json!({"error": reason}),
        None => Value::Null,
    };
    let machines: Vec<Value> = live
        .machines
        .iter()
        .map(|m| {
            let hw = m.hardware();
            let agent = inputs.fleet.iter().find(|v| {
                v.machine.system_id.as_deref() == Some(m.system_id.as_str()) || v.machine.hostname == m.hostname
            });
            json!({
                "hostname": m.hostname, "system_id": m.system_id, "status": m.status_name,
                "power_type": m.power_type, "ip_addresses": m.ip_addresses,
                "cpu_count": hw.cpu_count, "memory_bytes": hw.memory_bytes, "storage_bytes": hw.storage_bytes,
                "disks": hw.disks.len(),
                "macs": m.interface_set.iter().map(|i| i.mac_address.to_ascii_lowercase()).collect::<Vec<_>>(),
                "health": agent.map(|a| a.machine.health.as_str()).unwrap_or("unknown"),
            })
        })
        .collect();
    let racks: Vec<Value> = live
        .racks
        .iter()
        .map(|r| json!({"hostname": r.hostname, "ip_addresses": r.ip_addresses,
            "services": r.service_set.iter().map(|s| json!({"name": s.name, "status": s.status.as_str()})).collect::<Vec<_>>()}))
        .collect();
    json!({
        "generated_at": rfc3339(inputs.at),
        "maas": {
            "upstream_dns": live.upstream_dns,
            "dnssec_validation": live.dnssec_validation,
            "kernel_opts": live.kernel_opts,
            "images": images,
            "importing": live.importing,
            "ssh_keys": live.ssh_keys.iter().map(|k| super::diff::key_identity(&k.key)).collect::<Vec<_>>(),
            "rack_controllers": racks,
        },
        "subnet": subnet_json,
        "router": {"shim": inputs.router_shim, "state": router, "error": inputs.router_error, "probe": probe},
        "machines": machines,
        "devices": live.devices.iter().map(|d| json!({"hostname": d.hostname,
            "macs": d.interface_set.iter().map(|i| i.mac_address.to_ascii_lowercase()).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "fleet": inputs.fleet.iter().map(|v| json!({"hostname": v.machine.hostname, "health": v.machine.health.as_str(),
            "reasons": v.machine.health_reasons})).collect::<Vec<_>>(),
        "events": inputs.events.iter().map(|e| json!({"at": rfc3339(e.at), "hostname": e.hostname, "kind": e.kind,
            "message": e.message})).collect::<Vec<_>>(),
    })
}

/// A value as Markdown text: a string from MAAS, the router or an agent can neither break a line or a table row
/// (control characters are shown escaped, `|` is escaped) nor reach a terminal raw.
fn s(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Null => return "-".to_string(),
        other => return other.to_string(),
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\|"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

fn list(v: &Value) -> String {
    v.as_array().map(|a| a.iter().map(s).collect::<Vec<_>>().join(", ")).filter(|t| !t.is_empty()).unwrap_or("-".into())
}

/// The report as Markdown, from its JSON (so both say the same).
pub fn markdown(r: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Lab report\n\nGenerated {} from live data.\n", s(&r["generated_at"]));
    let m = &r["maas"];
    let _ = writeln!(out, "## MAAS configuration\n");
    let _ = writeln!(out, "- DNS forwarder (upstream_dns): {}", list(&m["upstream_dns"]));
    let _ = writeln!(out, "- DNSSEC validation: {}", s(&m["dnssec_validation"]));
    let _ = writeln!(out, "- Kernel parameters: {}", s(&m["kernel_opts"]));
    let _ = writeln!(out, "\n### Images\n\n| image | architecture | synced |\n| --- | --- | --- |");
    for i in m["images"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "| {} | {} | {} |", s(&i["name"]), s(&i["architecture"]), s(&i["synced"]));
    }
    let _ = writeln!(out, "\n### SSH keys\n");
    for k in m["ssh_keys"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "- `{}`", s(k));
    }
    let _ = writeln!(out, "\n### Rack controllers\n");
    for rack in m["rack_controllers"].as_array().into_iter().flatten() {
        let services: Vec<String> = rack["services"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| format!("{} {}", s(&x["name"]), s(&x["status"])))
            .collect();
        let _ = writeln!(out, "- {} ({}): {}", s(&rack["hostname"]), list(&rack["ip_addresses"]), services.join(", "));
    }
    let _ = writeln!(out, "\n## Subnet\n");
    let sub = &r["subnet"];
    if sub.is_null() {
        let _ = writeln!(out, "No lab subnet found in MAAS.");
    } else {
        let _ =
            writeln!(out, "- CIDR: {} (VLAN {}, gateway {})", s(&sub["cidr"]), s(&sub["vlan"]), s(&sub["gateway_ip"]));
        let _ = writeln!(out, "- DNS servers: {}", list(&sub["dns_servers"]));
        let _ = writeln!(out, "- MAAS DHCP: {} (primary rack {})", onoff(&sub["dhcp_on"]), s(&sub["primary_rack"]));
        let _ = writeln!(out, "- Foreign DHCP seen by MAAS (external_dhcp): {}", s(&sub["external_dhcp"]));
        let _ = writeln!(out, "\n| type | start | end | comment |\n| --- | --- | --- | --- |");
        for range in sub["ranges"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                s(&range["type"]),
                s(&range["start"]),
                s(&range["end"]),
                s(&range["comment"])
            );
        }
    }
    let _ = writeln!(out, "\n## Router\n");
    let router = &r["router"];
    let _ = writeln!(out, "- Shim: {}", s(&router["shim"]));
    if !router["error"].is_null() {
        let _ = writeln!(out, "- Could not be read: {}", s(&router["error"]));
    }
    let state = &router["state"];
    if !state.is_null() {
        let _ = writeln!(out, "- Backend: {}", s(&state["backend"]));
        let _ = writeln!(out, "- Router DHCP: {}", onoff(&state["dhcp_enabled"]));
        let rm = &state["remote_management"];
        let _ = writeln!(out, "- Remote management: {} from {}", onoff(&rm["enabled"]), list(&rm["from"]));
        let _ =
            writeln!(out, "\n| forward | proto | external port | to | protected |\n| --- | --- | --- | --- | --- |");
        for f in state["forwards"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                s(&f["name"]),
                s(&f["proto"]),
                s(&f["external_port"]),
                s(&f["to"]),
                s(&f["protected"])
            );
        }
    }
    let _ = writeln!(
        out,
        "\n### DHCP probe from MAIN (raw)\n\n```json\n{}\n```",
        serde_json::to_string_pretty(&router["probe"]).unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "\n## Machines\n\n| hostname | status | CPUs | memory (bytes) | storage (bytes) | disks | IPs | health |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for x in r["machines"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            s(&x["hostname"]),
            s(&x["status"]),
            s(&x["cpu_count"]),
            s(&x["memory_bytes"]),
            s(&x["storage_bytes"]),
            s(&x["disks"]),
            list(&x["ip_addresses"]),
            s(&x["health"])
        );
    }
    let _ = writeln!(out, "\n## Fleet health\n");
    let fleet = r["fleet"].as_array().cloned().unwrap_or_default();
    if fleet.is_empty() {
        let _ = writeln!(out, "No agent enrolled yet.");
    }
    for f in &fleet {
        let _ = writeln!(out, "- {}: {} {}", s(&f["hostname"]), s(&f["health"]), list(&f["reasons"]));
    }
    let _ = writeln!(out, "\n## Last operations and events\n");
    for e in r["events"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "- {} {} {}: {}", s(&e["at"]), s(&e["hostname"]), s(&e["kind"]), s(&e["message"]));
    }
    let _ = writeln!(out, "\n## Architecture\n\n```mermaid\n{}```", mermaid(r));
    out
}

fn onoff(v: &Value) -> &'static str {
    if v.as_bool() == Some(true) { "on" } else { "off" }
}

fn ident(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

/// A Mermaid `architecture-beta` diagram: the router, MAIN (MAAS) and every machine on the LAN.
pub fn mermaid(r: &Value) -> String {
    let mut out = String::from("architecture-beta\n    group lab(cloud)[Lab]\n");
    let _ = writeln!(out, "    service router(internet)[Router] in lab");
    let main = r["maas"]["rack_controllers"][0]["hostname"]
        .as_str()
        .map(|_| s(&r["maas"]["rack_controllers"][0]["hostname"]))
        .unwrap_or_else(|| "main".to_string());
    let _ = writeln!(out, "    service main(server)[{} MAAS] in lab", main);
    let _ = writeln!(out, "    router:R -- L:main");
    for x in r["machines"].as_array().into_iter().flatten() {
        let host = s(&x["hostname"]);
        let _ = writeln!(out, "    service m_{}(server)[{} {}] in lab", ident(&host), host, s(&x["status"]));
        let _ = writeln!(out, "    main:R -- L:m_{}", ident(&host));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostname_can_neither_break_a_markdown_row_nor_reach_the_terminal_raw() {
        let report = json!({
            "machines": [{"hostname": "evil\n| forged | Deployed |\u{1b}[2J", "status": "Ready"}],
            "fleet": [{"hostname": "evil\r\nx", "health": "healthy", "reasons": []}],
        });
        let text = markdown(&report);
        assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("| forged") || l.starts_with('x')), "{text}");
        assert!(text.contains("evil\\n\\| forged \\| Deployed \\|\\u{1b}[2J"), "{text}");
    }
}
