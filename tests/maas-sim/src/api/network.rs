//! Subnets, fabrics, VLANs (DHCP), IP ranges, rack controllers and devices (maas-api.md section 4).

use std::net::{IpAddr, Ipv4Addr};

use serde_json::{Value, json};

use super::{Ctx, not_found, unsupported};
use crate::wire::{Reply, Resp, field_err};
use crate::world::{Device, Fabric, IpRange, Subnet, Vlan, World};

pub(super) fn dispatch(w: &mut World, handler: &str, action: &str, c: &Ctx) -> Reply {
    match (handler, action) {
        ("SubnetsHandler", "read") => Resp::ok(json!(w.subnets.iter().map(|s| w.subnet_json(s)).collect::<Vec<_>>())),
        ("SubnetsHandler", "create") => subnet_create(w, c),
        ("SubnetHandler", _) => subnet_action(w, c, action),
        ("FabricsHandler", "read") => Resp::ok(json!(w.fabrics.iter().map(|f| fabric_json(w, f)).collect::<Vec<_>>())),
        ("FabricsHandler", "create") => {
            c.admin()?;
            let id = w.fabrics.iter().map(|f| f.id).max().unwrap_or(0) + 1;
            let name = c.params.get("name").map(str::to_owned).unwrap_or_else(|| format!("fabric-{id}"));
            if w.fabrics.iter().any(|f| f.name == name) {
                return Err(field_err("name", "Fabric with this Name already exists."));
            }
            let vlan_id = w.vlans.iter().map(|v| v.id).max().unwrap_or(5000) + 1;
            w.fabrics.push(Fabric { id, name, class_type: c.params.get("class_type").map(str::to_owned) });
            w.vlans.push(new_vlan(vlan_id, 0, id, "untagged".into()));
            Resp::ok(fabric_json(w, w.fabrics.last().expect("just pushed")))
        }
        ("FabricHandler", "read") => {
            let f = fabric(w, c.path("id"))?;
            Resp::ok(fabric_json(w, f))
        }
        ("VlansHandler", "read") => {
            let f = fabric(w, c.path("fabric_id"))?;
            let v: Vec<Value> = w.vlans.iter().filter(|v| v.fabric_id == f.id).map(|v| w.vlan_json(v)).collect();
            Resp::ok(json!(v))
        }
        ("VlansHandler", "create") => vlan_create(w, c),
        ("VlanHandler", _) => vlan_action(w, c, action),
        ("IPRangesHandler", "read") => {
            Resp::ok(json!(w.ipranges.iter().map(|r| w.iprange_json(r)).collect::<Vec<_>>()))
        }
        ("IPRangesHandler", "create") => iprange_save(w, c, None),
        ("IPRangeHandler", _) => iprange_action(w, c, action),
        ("RackControllersHandler", "read") => Resp::ok(json!([w.rack_json()])),
        ("RackControllersHandler", "describe_power_types") => Resp::ok(json!(
            ["amt", "ipmi", "manual", "redfish", "virsh", "lxd", "webhook"]
                .map(|n| json!({"name": n, "description": n, "fields": []}))
        )),
        ("RackControllersHandler", "is_registered") => Resp::ok(json!(false)),
        ("RackControllersHandler" | "RackControllerHandler", "import_boot_images") => {
            c.admin()?;
            Ok(Resp::text(200, "Import of boot images started on all rack controllers"))
        }
        ("RackControllerHandler", _) => rack_action(w, c, action),
        ("DevicesHandler", "read") => {
            let p = c.params;
            let v: Vec<Value> = w
                .devices
                .iter()
                .filter(|d| p.list("hostname").is_empty() || p.list("hostname").contains(&d.hostname))
                .filter(|d| p.list("id").is_empty() || p.list("id").contains(&d.system_id))
                .filter(|d| {
                    let macs = p.list("mac_address");
                    macs.is_empty() || d.macs.iter().any(|m| macs.iter().any(|x| x.eq_ignore_ascii_case(m)))
                })
                .map(|d| device_json(w, d))
                .collect();
            Resp::ok(json!(v))
        }
        ("DevicesHandler", "create") => device_create(w, c),
        ("DeviceHandler", _) => {
            let sid = c.path("system_id").to_owned();
            let idx = w.devices.iter().position(|d| d.system_id == sid).ok_or_else(|| not_found("Device"))?;
            match action {
                "read" => Resp::ok(device_json(w, &w.devices[idx])),
                "delete" => {
                    if !c.caller.admin && w.devices[idx].owner != c.user() {
                        return Err(Resp::empty(403));
                    }
                    w.devices.remove(idx);
                    Ok(Resp::empty(204))
                }
                "update" => {
                    if let Some(h) = c.params.get("hostname") {
                        w.devices[idx].hostname = h.to_owned();
                    }
                    Resp::ok(device_json(w, &w.devices[idx]))
                }
                _ => unsupported(handler, action),
            }
        }
        _ => unsupported(handler, action),
    }
}

fn new_vlan(id: u64, vid: u16, fabric_id: u64, name: String) -> Vlan {
    Vlan {
        id,
        vid,
        name,
        fabric_id,
        mtu: 1500,
        dhcp_on: false,
        external_dhcp: None,
        primary_rack: None,
        secondary_rack: None,
        relay_vlan: None,
        description: String::new(),
    }
}

fn fabric_json(w: &World, f: &Fabric) -> Value {
    let vlans: Vec<Value> = w.vlans.iter().filter(|v| v.fabric_id == f.id).map(|v| w.vlan_json(v)).collect();
    json!({"id": f.id, "name": f.name, "class_type": f.class_type, "vlans": vlans,
           "resource_uri": format!("/MAAS/api/2.0/fabrics/{}/", f.id)})
}

fn fabric<'w>(w: &'w World, key: &str) -> Result<&'w Fabric, Resp> {
    w.fabrics.iter().find(|f| f.id.to_string() == key || f.name == key).ok_or_else(|| not_found("Fabric"))
}

fn subnet_index(w: &World, key: &str) -> Result<usize, Resp> {
    w.subnets
        .iter()
        .position(|s| s.id.to_string() == key || s.cidr.to_string() == key || s.name == key)
        .ok_or_else(|| not_found("Subnet"))
}

fn subnet_create(w: &mut World, c: &Ctx) -> Reply {
    c.admin()?;
    let p = c.params;
    let Some(cidr) = p.get("cidr") else { return Err(field_err("cidr", "This field is required.")) };
    let net: ipnet::Ipv4Net = cidr.parse().map_err(|_| field_err("cidr", "Required format: <network>/<prefixlen>."))?;
    let net = net.trunc();
    if w.subnets.iter().any(|s| s.cidr == net) {
        return Err(field_err("cidr", "Subnet with this Cidr already exists."));
    }
    let vlan_id = match (p.get("vlan"), p.get("fabric"), p.get("vid")) {
        (Some(v), _, _) => w.vlans.iter().find(|x| x.id.to_string() == v).map(|x| x.id),
        (None, f, vid) => {
            let fid = match f {
                Some(f) => fabric(w, f).ok().map(|f| f.id),
                None => Some(0),
            };
            let vid: u16 = vid.and_then(|v| v.parse().ok()).unwrap_or(0);
            fid.and_then(|fid| w.vlans.iter().find(|x| x.fabric_id == fid && x.vid == vid)).map(|x| x.id)
        }
    }
    .ok_or_else(|| field_err("vlan", "Select a valid choice. That choice is not one of the available choices."))?;
    let gateway_ip = match p.get("gateway_ip").filter(|g| !g.is_empty()) {
        Some(g) => {
            Some(g.parse::<Ipv4Addr>().map_err(|_| field_err("gateway_ip", "Enter a valid IPv4 or IPv6 address."))?)
        }
        None => None,
    };
    let id = w.subnets.iter().map(|s| s.id).max().unwrap_or(0) + 1;
    w.subnets.push(Subnet {
        id,
        name: p.get("name").map(str::to_owned).unwrap_or_else(|| net.to_string()),
        cidr: net,
        vlan_id,
        gateway_ip,
        dns_servers: split_list(p.get("dns_servers").unwrap_or("")),
        description: p.get("description").unwrap_or("").to_owned(),
        managed: p.get("managed").is_none_or(|m| !m.eq_ignore_ascii_case("false")),
    });
    Resp::ok(w.subnet_json(w.subnets.last().expect("just pushed")))
}

fn split_list(s: &str) -> Vec<String> {
    s.split([' ', ',']).filter(|x| !x.is_empty()).map(str::to_owned).collect()
}

fn hosts(net: &ipnet::Ipv4Net) -> (u32, u32) {
    (u32::from(net.network()) + 1, u32::from(net.broadcast()) - 1)
}

/// Used addresses of a subnet as (start, end, purpose) spans, sorted.
fn used_spans(w: &World, s: &Subnet) -> Vec<(u32, u32, String)> {
    let mut spans: Vec<(u32, u32, String)> = w
        .ipranges
        .iter()
        .filter(|r| r.subnet_id == s.id)
        .map(|r| (u32::from(r.start_ip), u32::from(r.end_ip), r.kind.clone()))
        .collect();
    if let Some(g) = s.gateway_ip {
        spans.push((u32::from(g), u32::from(g), "gateway-ip".into()));
    }
    if s.vlan_id == 5001 {
        let rack = u32::from(Ipv4Addr::new(172, 16, 0, 3));
        if s.cidr.contains(&Ipv4Addr::from(rack)) {
            spans.push((rack, rack, "rack-ip".into()));
        }
    }
    for m in &w.machines {
        for ip in m.ip_addresses.iter().filter_map(|i| i.parse::<Ipv4Addr>().ok()) {
            if s.cidr.contains(&ip) {
                spans.push((u32::from(ip), u32::from(ip), "assigned-ip".into()));
            }
        }
    }
    spans.sort();
    spans
}

fn unreserved(w: &World, s: &Subnet) -> Vec<(u32, u32)> {
    let (lo, hi) = hosts(&s.cidr);
    let mut out = Vec::new();
    let mut next = lo;
    for (a, b, _) in used_spans(w, s) {
        if a > next {
            out.push((next, a - 1));
        }
        next = next.max(b.saturating_add(1));
    }
    if next <= hi {
        out.push((next, hi));
    }
    out
}

fn ip(n: u32) -> String {
    Ipv4Addr::from(n).to_string()
}

fn subnet_action(w: &mut World, c: &Ctx, action: &str) -> Reply {
    let idx = subnet_index(w, c.path("id"))?;
    let s = &w.subnets[idx];
    match action {
        "read" => Resp::ok(w.subnet_json(s)),
        "reserved_ip_ranges" => {
            let v: Vec<Value> = used_spans(w, s)
                .into_iter()
                .map(|(a, b, purpose)| json!({"start": ip(a), "end": ip(b), "num_addresses": b - a + 1, "purpose": [purpose]}))
                .collect();
            Resp::ok(json!(v))
        }
        "unreserved_ip_ranges" => {
            let v: Vec<Value> = unreserved(w, s)
                .into_iter()
                .map(|(a, b)| json!({"start": ip(a), "end": ip(b), "num_addresses": b - a + 1}))
                .collect();
            Resp::ok(json!(v))
        }
        "statistics" => {
            let (lo, hi) = hosts(&s.cidr);
            let total = u64::from(hi - lo + 1);
            let free = unreserved(w, s);
            let available: u64 = free.iter().map(|(a, b)| u64::from(b - a + 1)).sum();
            let largest: u64 = free.iter().map(|(a, b)| u64::from(b - a + 1)).max().unwrap_or(0);
            let unavailable = total - available;
            let usage = unavailable as f64 / total as f64;
            Resp::ok(json!({
                "num_available": available, "largest_available": largest, "num_unavailable": unavailable,
                "total_addresses": total, "usage": usage, "usage_string": format!("{:.0}%", usage * 100.0),
                "available_string": format!("{:.0}%", (1.0 - usage) * 100.0), "first_address": ip(lo),
                "last_address": ip(hi), "ip_version": 4,
            }))
        }
        "ip_addresses" => {
            let v: Vec<Value> = w
                .machines
                .iter()
                .flat_map(|m| m.ip_addresses.iter().map(move |a| (m, a)))
                .filter(|(_, a)| a.parse::<Ipv4Addr>().is_ok_and(|x| s.cidr.contains(&x)))
                .map(|(m, a)| json!({"ip": a, "alloc_type": 0, "alloc_type_name": "Automatic", "user": m.owner,
                                     "node_summary": {"system_id": m.system_id, "hostname": m.hostname, "node_type": 0}}))
                .collect();
            Resp::ok(json!(v))
        }
        "update" => {
            c.admin()?;
            let p = c.params;
            let gw = match p.get("gateway_ip") {
                Some("") => Some(None),
                Some(g) => Some(Some(
                    g.parse::<Ipv4Addr>()
                        .map_err(|_| field_err("gateway_ip", "Enter a valid IPv4 or IPv6 address."))?,
                )),
                None => None,
            };
            let s = &mut w.subnets[idx];
            if let Some(g) = gw {
                s.gateway_ip = g;
            }
            if let Some(d) = p.get("dns_servers") {
                s.dns_servers = split_list(d);
            }
            if let Some(n) = p.get("name") {
                s.name = n.to_owned();
            }
            if let Some(d) = p.get("description") {
                s.description = d.to_owned();
            }
            if let Some(m) = p.get("managed") {
                s.managed = !m.eq_ignore_ascii_case("false") && m != "0";
            }
            Resp::ok(w.subnet_json(&w.subnets[idx]))
        }
        "delete" => {
            c.admin()?;
            let id = w.subnets[idx].id;
            w.subnets.remove(idx);
            w.ipranges.retain(|r| r.subnet_id != id);
            Ok(Resp::empty(204))
        }
        _ => unsupported("SubnetHandler", action),
    }
}

fn vlan_create(w: &mut World, c: &Ctx) -> Reply {
    c.admin()?;
    let fid = fabric(w, c.path("fabric_id"))?.id;
    let Some(vid) = c.params.get("vid") else { return Err(field_err("vid", "This field is required.")) };
    let vid: u16 =
        vid.parse().ok().filter(|v| *v < 4095).ok_or_else(|| field_err("vid", "VID must be between 0 and 4094."))?;
    if w.vlans.iter().any(|v| v.fabric_id == fid && v.vid == vid) {
        return Err(field_err("__all__", "VLAN with this Fabric and Vid already exists."));
    }
    let id = w.vlans.iter().map(|v| v.id).max().unwrap_or(5000) + 1;
    let name = c.params.get("name").map(str::to_owned).unwrap_or_else(|| vid.to_string());
    let mut v = new_vlan(id, vid, fid, name);
    if let Some(m) = c.params.get("mtu").and_then(|m| m.parse().ok()) {
        v.mtu = m;
    }
    w.vlans.push(v);
    Resp::ok(w.vlan_json(w.vlans.last().expect("just pushed")))
}

fn vlan_index(w: &World, c: &Ctx) -> Result<usize, Resp> {
    if let Some(id) = c.path.get("vlan_id") {
        return w.vlans.iter().position(|v| &v.id.to_string() == id).ok_or_else(|| not_found("VLAN"));
    }
    let fid = fabric(w, c.path("fabric_id"))?.id;
    let vid = match c.path("vid") {
        "untagged" => 0,
        v => v.parse::<u16>().map_err(|_| not_found("VLAN"))?,
    };
    w.vlans.iter().position(|v| v.fabric_id == fid && v.vid == vid).ok_or_else(|| not_found("VLAN"))
}

/// The racks that may serve a VLAN: those with an interface on a VLAN with the same VID.
fn rack_choice(w: &World, vlan: &Vlan, value: &str) -> Result<Option<String>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    let is_rack = value == w.rack_system_id || value == "main";
    let rack_vid = w.vlan_by_id(5001).map(|v| v.vid);
    if is_rack && rack_vid == Some(vlan.vid) {
        Ok(Some(w.rack_system_id.clone()))
    } else {
        Err(format!("Select a valid choice. {value} is not one of the available choices."))
    }
}

fn vlan_action(w: &mut World, c: &Ctx, action: &str) -> Reply {
    let idx = vlan_index(w, c)?;
    match action {
        "read" => Resp::ok(w.vlan_json(&w.vlans[idx])),
        "delete" => {
            c.admin()?;
            if w.vlans[idx].vid == 0 {
                return Err(Resp::text(400, "This VLAN is the default VLAN in the fabric; it cannot be deleted."));
            }
            w.vlans.remove(idx);
            Ok(Resp::empty(204))
        }
        "update" => vlan_update(w, c, idx),
        _ => unsupported("VlanHandler", action),
    }
}

fn vlan_update(w: &mut World, c: &Ctx, idx: usize) -> Reply {
    c.admin()?;
    let p = c.params;
    let vlan = &w.vlans[idx];
    let mut errors: Vec<(&str, String)> = Vec::new();
    let mtu = match p.get("mtu") {
        Some(m) => match m.parse::<u32>() {
            Ok(v) if v >= 552 => Some(v),
            Ok(_) => {
                errors.push(("mtu", "Ensure this value is greater than or equal to 552.".into()));
                None
            }
            Err(_) => {
                errors.push(("mtu", "Enter a whole number.".into()));
                None
            }
        },
        None => None,
    };
    // Field cleaning, in the form's field order: dhcp_on, primary_rack, secondary_rack.
    let mut dhcp_on = match p.get("dhcp_on") {
        Some(v) => matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"),
        None => vlan.dhcp_on,
    };
    if dhcp_on {
        let has_dynamic = w
            .subnets
            .iter()
            .filter(|s| s.vlan_id == vlan.id)
            .any(|s| w.ipranges.iter().any(|r| r.subnet_id == s.id && r.kind == "dynamic"));
        if !has_dynamic {
            errors.push(("dhcp_on", "dhcp can only be turned on when a dynamic IP range is defined.".into()));
            // A field that fails cleaning is absent from cleaned_data, so clean() sees DHCP as off.
            dhcp_on = false;
        }
    }
    let mut primary = vlan.primary_rack.clone();
    if let Some(v) = p.get("primary_rack") {
        match rack_choice(w, vlan, v) {
            Ok(r) => primary = r,
            Err(e) => {
                errors.push(("primary_rack", e));
                primary = None;
            }
        }
    }
    let mut secondary = vlan.secondary_rack.clone();
    if let Some(v) = p.get("secondary_rack") {
        match rack_choice(w, vlan, v) {
            Ok(r) => secondary = r,
            Err(e) => {
                errors.push(("secondary_rack", e));
                secondary = None;
            }
        }
    }
    // VLANForm.clean(): promotions first, then the first failing rule stops it.
    if primary.is_none() && vlan.secondary_rack.is_some() {
        primary = vlan.secondary_rack.clone();
        secondary = None;
    }
    if primary.is_some() && primary == vlan.secondary_rack {
        secondary = None;
    }
    if let Some(s) = secondary.as_ref().filter(|s| Some(*s) == vlan.primary_rack.as_ref()) {
        errors.push(("__all__", format!("{s} is already set as the primary rack controller")));
    } else if primary.is_some() && secondary.is_some() && primary == secondary {
        errors.push(("__all__", "The primary and secondary rack must be different".into()));
    } else if dhcp_on && primary.is_none() && vlan.primary_rack.is_none() {
        errors.push(("__all__", "dhcp can only be turned on when a primary rack controller is set.".into()));
    }
    if !errors.is_empty() {
        let refs: Vec<(&str, &str)> = errors.iter().map(|(k, v)| (*k, v.as_str())).collect();
        return Err(Resp::fields(&refs));
    }
    let relay = match p.get("relay_vlan") {
        Some("") => Some(None),
        Some(r) => Some(Some(w.vlans.iter().find(|v| v.id.to_string() == r).map(|v| v.id).ok_or_else(|| {
            field_err("relay_vlan", "Select a valid choice. That choice is not one of the available choices.")
        })?)),
        None => None,
    };
    let was_on = w.vlans[idx].dhcp_on;
    let v = &mut w.vlans[idx];
    if let Some(m) = mtu {
        v.mtu = m;
    }
    if let Some(n) = p.get("name") {
        v.name = n.to_owned();
    }
    if let Some(d) = p.get("description") {
        v.description = d.to_owned();
    }
    v.primary_rack = primary;
    v.secondary_rack = secondary;
    v.dhcp_on = dhcp_on;
    if let Some(r) = relay {
        v.relay_vlan = r;
    }
    if dhcp_on {
        v.relay_vlan = None;
    }
    if dhcp_on != was_on {
        let msg = if dhcp_on { "Enabled DHCP" } else { "Disabled DHCP" };
        w.event(None, "AUDIT", "Settings", msg);
    }
    Resp::ok(w.vlan_json(&w.vlans[idx]))
}

fn parse_ip(value: Option<&str>) -> Result<Option<IpAddr>, &'static str> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => v.parse::<IpAddr>().map(Some).map_err(|_| "Enter a valid IPv4 or IPv6 address."),
    }
}

/// Creates (`existing` None) or updates an IP range with MAAS's validation messages.
fn iprange_save(w: &mut World, c: &Ctx, existing: Option<usize>) -> Reply {
    let p = c.params;
    let old = existing.map(|i| &w.ipranges[i]);
    let mut errors: Vec<(&str, String)> = Vec::new();
    let kind = p.get("type").map(str::to_owned).or_else(|| old.map(|r| r.kind.clone()));
    match kind.as_deref() {
        None => errors.push(("type", "This field is required.".into())),
        Some("dynamic" | "reserved") => {}
        Some(other) => {
            errors.push(("type", format!("Select a valid choice. {other} is not one of the available choices.")))
        }
    }
    let start = parse_ip(p.get("start_ip")).map(|v| v.or(old.map(|r| IpAddr::V4(r.start_ip))));
    let end = parse_ip(p.get("end_ip")).map(|v| v.or(old.map(|r| IpAddr::V4(r.end_ip))));
    for (field, value) in [("start_ip", &start), ("end_ip", &end)] {
        match value {
            Err(e) => errors.push((field, (*e).into())),
            Ok(None) => errors.push((field, "This field is required.".into())),
            Ok(Some(_)) => {}
        }
    }
    if !errors.is_empty() {
        let refs: Vec<(&str, &str)> = errors.iter().map(|(k, v)| (*k, v.as_str())).collect();
        return Err(Resp::fields(&refs));
    }
    let kind = kind.expect("checked");
    if kind == "dynamic" && !c.caller.admin {
        return Err(Resp::text(403, "Unable to create dynamic IP range. You don't have sufficient privileges."));
    }
    let (start, end) = (start.expect("checked").expect("checked"), end.expect("checked").expect("checked"));
    let (IpAddr::V4(start), IpAddr::V4(end)) = (start, end) else {
        if start.is_ipv4() != end.is_ipv4() {
            let m = "Start IP address and end IP address must be in the same address family.";
            return Err(Resp::fields(&[("start_ip", m), ("end_ip", m)]));
        }
        return Err(field_err("start_ip", "maas-sim only models IPv4 subnets."));
    };
    if end < start {
        return Err(field_err("end_ip", "End IP address must not be less than Start IP address."));
    }
    let subnet_id = match p.get("subnet") {
        Some(key) => {
            w.subnets[subnet_index(w, key).map_err(|_| {
                field_err("subnet", "Select a valid choice. That choice is not one of the available choices.")
            })?]
            .id
        }
        None => match old {
            Some(r) => r.subnet_id,
            None => w
                .subnets
                .iter()
                .find(|s| s.cidr.contains(&start))
                .map(|s| s.id)
                .ok_or_else(|| field_err("subnet", "This field is required."))?,
        },
    };
    let s = w.subnets.iter().find(|s| s.id == subnet_id).expect("subnet exists");
    let cidr = s.cidr;
    match (cidr.contains(&start), cidr.contains(&end)) {
        (true, true) => {}
        (false, false) => {
            let m = format!("IP addresses must be within subnet: {cidr}.");
            return Err(Resp::fields(&[("start_ip", &m), ("end_ip", &m)]));
        }
        (false, true) => {
            return Err(field_err("start_ip", &format!("Start IP address must be within subnet: {cidr}.")));
        }
        (true, false) => return Err(field_err("end_ip", &format!("End IP address must be within subnet: {cidr}."))),
    }
    if start == cidr.network() {
        return Err(field_err("start_ip", "Reserved network address cannot be included in IP range."));
    }
    if end == cidr.broadcast() {
        return Err(field_err("end_ip", "Broadcast address cannot be included in IP range."));
    }
    let (a, b) = (u32::from(start), u32::from(end));
    let self_id = old.map(|r| r.id);
    let overlaps = |x: u32, y: u32| a <= y && x <= b;
    let range_clash = w
        .ipranges
        .iter()
        .filter(|r| r.subnet_id == subnet_id && Some(r.id) != self_id)
        .any(|r| overlaps(u32::from(r.start_ip), u32::from(r.end_ip)));
    if kind == "dynamic" {
        let used_clash = used_spans(w, s)
            .iter()
            .filter(|(_, _, k)| k != "dynamic" && k != "reserved")
            .any(|(x, y, _)| overlaps(*x, *y));
        if range_clash || used_clash {
            let m = "Requested dynamic range conflicts with an existing IP address or range.";
            return Err(Resp::fields(&[("start_ip", m), ("end_ip", m)]));
        }
    } else if range_clash {
        let m = "Requested reserved range conflicts with an existing range.";
        return Err(Resp::fields(&[("start_ip", m), ("end_ip", m)]));
    }
    let comment = p.get("comment").map(str::to_owned);
    let id = match existing {
        Some(i) => {
            let r = &mut w.ipranges[i];
            r.kind = kind;
            r.start_ip = start;
            r.end_ip = end;
            r.subnet_id = subnet_id;
            if let Some(cm) = comment {
                r.comment = cm;
            }
            r.id
        }
        None => {
            let id = w.ipranges.iter().map(|r| r.id).max().unwrap_or(0) + 1;
            w.ipranges.push(IpRange {
                id,
                kind,
                start_ip: start,
                end_ip: end,
                subnet_id,
                comment: comment.unwrap_or_default(),
                user: c.user().to_owned(),
            });
            id
        }
    };
    let r = w.ipranges.iter().find(|r| r.id == id).expect("just saved");
    Resp::ok(w.iprange_json(r))
}

fn iprange_action(w: &mut World, c: &Ctx, action: &str) -> Reply {
    let idx = w.ipranges.iter().position(|r| r.id.to_string() == c.path("id")).ok_or_else(|| not_found("IPRange"))?;
    let owner_or_admin = c.caller.admin || w.ipranges[idx].user == c.user();
    match action {
        "read" => Resp::ok(w.iprange_json(&w.ipranges[idx])),
        "update" => {
            if !owner_or_admin {
                return Err(Resp::text(403, "Unable to modify IP range. You don't own the IP range."));
            }
            iprange_save(w, c, Some(idx))
        }
        "delete" => {
            if !owner_or_admin {
                return Err(Resp::text(403, "Unable to delete IP range. You don't own the IP range."));
            }
            w.ipranges.remove(idx);
            Ok(Resp::empty(204))
        }
        _ => unsupported("IPRangeHandler", action),
    }
}

fn rack_action(w: &mut World, c: &Ctx, action: &str) -> Reply {
    let sid = c.path("system_id");
    if sid != w.rack_system_id {
        return Err(not_found("RackController"));
    }
    match action {
        "read" => Resp::ok(w.rack_json()),
        "list_boot_images" => {
            c.admin()?;
            let images: Vec<Value> = w
                .boot_resources
                .iter()
                .filter(|r| r.complete)
                .map(|r| {
                    let (arch, sub) = r.architecture.split_once('/').unwrap_or((&r.architecture, "generic"));
                    json!({"name": r.name, "architecture": arch, "subarches": [sub]})
                })
                .collect();
            let wanted = w
                .selections
                .iter()
                .all(|s| w.boot_resources.iter().any(|r| r.name == format!("{}/{}", s.os, s.release) && r.complete));
            let status = if w.importing {
                "syncing"
            } else if wanted {
                "synced"
            } else {
                "out-of-sync"
            };
            Resp::ok(json!({"images": images, "connected": true, "status": status}))
        }
        "query_power_state" => Resp::ok(json!({"state": "unknown"})),
        "power_parameters" => {
            c.admin()?;
            Resp::ok(json!({}))
        }
        _ => unsupported("RackControllerHandler", action),
    }
}

fn device_json(w: &World, d: &Device) -> Value {
    let ifaces: Vec<Value> = d
        .macs
        .iter()
        .enumerate()
        .map(|(i, m)| json!({"id": d.id * 10 + i as u64, "name": format!("eth{i}"), "type": "physical", "mac_address": m,
                            "vlan": null, "links": [], "enabled": true,
                            "resource_uri": format!("/MAAS/api/2.0/nodes/{}/interfaces/{}/", d.system_id, d.id * 10 + i as u64)}))
        .collect();
    json!({
        "system_id": d.system_id, "hostname": d.hostname, "fqdn": format!("{}.maas", d.hostname),
        "description": "", "owner": d.owner, "owner_data": {}, "parent": null, "ip_addresses": [],
        "interface_set": ifaces, "tag_names": [], "node_type": 1, "node_type_name": "Device", "address_ttl": null,
        "zone": World::named_json("zones", &w.zones[0]),
        "domain": {"id": 0, "name": "maas", "authoritative": true, "ttl": null, "is_default": true,
                   "resource_record_count": 0, "resource_uri": "/MAAS/api/2.0/domains/0/"},
        "resource_uri": format!("/MAAS/api/2.0/devices/{}/", d.system_id),
    })
}

fn device_create(w: &mut World, c: &Ctx) -> Reply {
    let macs = c.params.list("mac_addresses");
    if macs.is_empty() {
        return Err(field_err("mac_addresses", "This field is required."));
    }
    for mac in &macs {
        let parts: Vec<&str> = mac.split(':').collect();
        if parts.len() != 6 || !parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit())) {
            return Err(field_err("mac_addresses", &format!("'{mac}' is not a valid MAC address.")));
        }
        let taken = w.devices.iter().any(|d| d.macs.iter().any(|m| m.eq_ignore_ascii_case(mac)))
            || w.machines.iter().any(|m| m.interfaces.iter().any(|i| i.mac.eq_ignore_ascii_case(mac)));
        if taken {
            return Err(field_err("mac_addresses", &format!("This MAC address {mac} is already registered.")));
        }
    }
    let id = w.id();
    let system_id = format!("d{:05}", id);
    let hostname = c.params.get("hostname").map(str::to_owned).unwrap_or_else(|| format!("device-{id}"));
    if w.devices.iter().any(|d| d.hostname == hostname) {
        return Err(field_err("hostname", &format!("Node with hostname \"{hostname}\" already exists.")));
    }
    w.devices.push(Device {
        id,
        system_id,
        hostname,
        macs: macs.iter().map(|m| m.to_ascii_lowercase()).collect(),
        owner: c.user().to_owned(),
    });
    Resp::ok(device_json(w, w.devices.last().expect("just pushed")))
}
